//! kairan-homeserver: a Matrix homeserver for a prefecture and its municipalities.
//!
//! Requests flow one way: [`api`] (HTTP handlers) → services ([`rooms`], [`sync`],
//! [`accounts`]) → [`storage`] (SQL). See `docs/architecture.md` for a walk-through.

pub mod accounts;
pub mod admin;
pub mod api;
pub mod config;
pub mod e2ee;
pub mod error;
pub mod keys;
pub mod media;
pub mod push;
pub mod ratelimit;
pub mod rooms;
pub mod services;
pub mod storage;
pub mod sync;

use std::net::SocketAddr;

pub use crate::{config::Config, services::Services};

/// Runs the client listener until `shutdown` resolves.
pub async fn serve(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = config.listen.client;
    let state = Services::start(config).await?;
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    tracing::info!(%addr, server_name = %state.server_name(), "kairan is listening");
    let app = api::router(state.clone());
    let stopping = state.clone();
    let shutdown = async move {
        shutdown.await;
        // In-flight requests finish; long polls answer at once rather than at their timeout.
        stopping.notifier.shut_down();
    };
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await?;
    state.store.close().await;
    Ok(())
}
