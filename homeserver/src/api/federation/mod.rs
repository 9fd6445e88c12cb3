//! Server-Server API handlers. Every endpoint but the key and version ones takes a
//! `Ruma<T>` whose X-Matrix signature was verified before the handler runs.

mod devices;
mod events;
mod membership;
mod query;
mod send;
mod server_keys;

use axum::Router;

use crate::services::AppState;

pub fn routes() -> Router<AppState> {
    server_keys::routes()
        .merge(events::routes())
        .merge(devices::routes())
        .merge(query::routes())
        .merge(membership::routes())
        .merge(send::routes())
}
