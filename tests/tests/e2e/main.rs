//! End-to-end tests of kairan-homeserver: real server processes on loopback ports, driven by
//! matrix-sdk and by raw HTTP.
//!
//! All scenarios live in this one test binary, because every integration-test binary links
//! matrix-sdk and that link is slow. Each test starts its own server (own port, own data
//! directory, own PostgreSQL database), so tests can run in parallel.
//!
//! Run with: `cargo build -p kairan-homeserver && cargo nextest run -p kairan-tests`.
//! PostgreSQL tests expect `postgres://postgres@127.0.0.1:5432` (override with
//! `KAIRAN_TEST_PG_URL`).

/// Instantiates a scenario `async fn(Backend) -> anyhow::Result<()>` as two tests,
/// `sqlite` and `postgres`, in the module where it is invoked.
macro_rules! both_backends {
    ($scenario:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn sqlite() -> anyhow::Result<()> {
            $scenario(kairan_tests::Backend::Sqlite).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn postgres() -> anyhow::Result<()> {
            $scenario(kairan_tests::Backend::Postgres).await
        }
    };
}

mod accounts;
mod admin;
mod authorisation;
mod backup;
mod bad_input;
mod bridge;
mod chat;
mod crash;
mod encryption;
mod ephemeral;
mod federation;
mod federation_devices;
mod federation_joins;
mod federation_js_sdk;
mod federation_keys;
mod federation_membership;
mod federation_prefecture;
mod federation_synapse;
mod federation_transport;
mod hostile;
mod media;
mod metrics;
mod operations;
mod pagination;
mod profile;
mod push;
mod relations;
mod room_versions;
mod rooms;
mod search;
mod shutdown;
mod sliding_sync;
mod support;
mod sync;
mod transactions;
mod upgrade;
