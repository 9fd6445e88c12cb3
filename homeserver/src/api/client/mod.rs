//! Client-Server API handlers, one module per spec module.

mod account;
mod account_data;
mod directory;
mod e2ee_keys;
mod events;
mod key_backup;
mod media;
mod membership;
mod profile;
mod push;
mod receipts;
mod room_create;
mod search;
mod session;
mod sliding_sync;
mod state;
mod sync;
mod threads;
mod to_device;
mod versions;

use axum::Router;

use crate::services::AppState;

pub fn routes() -> Router<AppState> {
    let r = Router::new();
    let r = versions::routes(r);
    let r = session::routes(r);
    let r = account::routes(r);
    let r = room_create::routes(r);
    let r = membership::routes(r);
    let r = state::routes(r);
    let r = events::routes(r);
    let r = directory::routes(r);
    let r = sync::routes(r);
    let r = sliding_sync::routes(r);
    let r = receipts::routes(r);
    let r = account_data::routes(r);
    let r = to_device::routes(r);
    let r = threads::routes(r);
    let r = media::routes(r);
    let r = push::routes(r);
    let r = search::routes(r);
    let r = e2ee_keys::routes(r);
    let r = key_backup::routes(r);
    profile::routes(r)
}
