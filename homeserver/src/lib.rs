//! kairan-homeserver: a Matrix homeserver for a prefecture and its municipalities.
//!
//! Requests flow one way: [`api`] (HTTP handlers) → services ([`rooms`], [`sync`],
//! [`accounts`]) → [`storage`] (SQL). See `docs/architecture.md` for a walk-through.

pub mod accounts;
pub mod admin;
pub mod api;
pub mod config_check;
pub mod e2ee;
pub mod federation;
pub mod media;
pub mod push;
pub mod rooms;
pub mod server_backup;
pub mod services;
pub mod storage;
pub mod sync;

use std::net::SocketAddr;

use kairan_core::config::Config;

pub use crate::services::Services;

/// Runs the client listener, the federation TLS listener when `listen.federation` is set
/// and the metrics listener when `listen.metrics` is set, until `shutdown` resolves. Both serve the same application (as Synapse's
/// federation port does), so peers reach keys, federation and client endpoints alike.
pub async fn serve(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use axum::serve::ListenerExt;

    let addr = config.listen.client;
    let federation_addr = config.listen.federation;
    let metrics_addr = config.listen.metrics;
    // Read the certificate before opening the database: a bad file stops the start at once.
    let tls = match federation_addr {
        Some(_) => Some(federation_tls(&config)?),
        None => None,
    };
    let services = Services::start(config).await?;
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let federation_listener = match (federation_addr, tls) {
        (Some(fed_addr), Some(tls)) => Some(federation::tls::TlsListener::bind(fed_addr, tls).await?),
        _ => None,
    };
    let metrics_listener = match metrics_addr {
        Some(m) => Some(
            tokio::net::TcpListener::bind(m)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {m} (listen.metrics): {e}"))?,
        ),
        None => None,
    };
    tracing::info!(%addr, server_name = %services.server_name(), "kairan is listening");
    if federation_listener.is_some() && services.federation_allowlist().is_empty() {
        tracing::warn!(
            "the federation allowlist is empty: every other server is refused and sent nothing. \
             Set federation.allowlist (or kairan-admin policy server set-federation)."
        );
    }
    let app = api::router(services.clone());
    // One shutdown signal for both listeners.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopping = services.clone();
    tokio::spawn(async move {
        shutdown.await;
        // In-flight requests finish; long polls answer at once rather than at their timeout.
        stopping.notifier.shut_down();
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // The metrics listener stops with the others: a scrape in flight still gets its answer.
    let metrics = {
        let (router, stop) = (api::metrics::router(services.clone()), stopped(stop_rx.clone()));
        async move {
            let Some(listener) = metrics_listener else { return Ok(()) };
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "the metrics listener is listening (GET /metrics)");
            }
            axum::serve(listener, router).with_graceful_shutdown(stop).await
        }
    };
    let client = axum::serve(listener, app.clone().into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(stopped(stop_rx.clone()));
    let api = async move {
        match federation_listener {
            Some(fed) => {
                if let Ok(addr) = axum::serve::Listener::local_addr(&fed) {
                    tracing::info!(%addr, "the federation TLS listener is listening");
                }
                // `tap_io` only makes axum's `ConnectInfo<SocketAddr>` available for this listener.
                let fed = axum::serve(fed.tap_io(|_| {}), app.into_make_service_with_connect_info::<SocketAddr>())
                    .with_graceful_shutdown(stopped(stop_rx));
                let (a, b) = tokio::join!(client.into_future(), fed.into_future());
                a?;
                b
            }
            None => client.await,
        }
    };
    let (a, b) = tokio::join!(api, metrics);
    a?;
    b?;
    services.store.close().await;
    Ok(())
}

/// The federation listener's TLS configuration: the configured certificate, or a
/// self-signed one for development.
fn federation_tls(config: &Config) -> anyhow::Result<std::sync::Arc<rustls::ServerConfig>> {
    let fed = &config.federation;
    if fed.tls_certificate.as_os_str().is_empty() && fed.tls_private_key.as_os_str().is_empty() {
        let (cert, key) = federation::tls::self_signed(&config.data_dir, &config.server_name)?;
        tracing::warn!(
            certificate = %cert.display(),
            "federation TLS uses a self-signed certificate, for development only: other servers refuse it unless \
             they turn verify_tls off. Set federation.tls_certificate and tls_private_key for real use."
        );
        return federation::tls::server_config(&cert, &key);
    }
    federation::tls::server_config(&fed.tls_certificate, &fed.tls_private_key)
}
