//! End-to-end test harness for kairan.
//!
//! The tests drive real `kairan-homeserver` processes over loopback HTTP, the way a
//! user's client would: with matrix-sdk for the flows a client performs, and with raw
//! HTTP ([`Api`]) where a test must see the exact status code and `errcode`, send
//! malformed input, or keep full control of transaction IDs and timing.
//!
//! - [`TestServer`] starts a homeserver on a free port in its own temporary directory,
//!   on SQLite or on a fresh PostgreSQL database, and can SIGKILL and restart it.
//! - [`Api`] is a minimal Client-Server API client over reqwest.
//! - [`test_ca`] is the process-wide test CA that federating servers (kairan and
//!   Synapse) serve and trust; [`ServerOptions::federation`] turns a server's federation on.
//! - [`synapse::SynapseServer`] starts Synapse (from the venv of `scripts/synapse-venv.sh`)
//!   as a federation peer for the interoperability tests.
//! - [`hostile::HostileServer`] is a fake homeserver the tests script to attack kairan
//!   over federation (forged events, endless auth chains, huge and malformed answers).
//! - [`prefecture::run`] is a whole prefecture on one machine: N+1 federating servers, two
//!   rooms, traffic from every server while municipal servers are killed (issue 13).
//! - [`assert_matrix_error`] / [`assert_sdk_error`] check a Matrix error response.

mod api;
pub mod hostile;
mod pg;
pub mod prefecture;
mod server;
mod signed;

// The records bridge (kairan-bridge) as a process.
mod bridge;
pub use bridge::{TestBridge, bridge_binary};
pub mod synapse;
mod tls;

pub use api::{Api, Response, assert_matrix_error, assert_matrix_error_in, assert_sdk_error, assert_sdk_error_in, enc};
pub use server::{Backend, Registration, ServerOptions, TestServer, admin_binary};
pub use signed::{federation_request, server_signing_key};
pub use tls::{TestCa, test_ca};

/// The password every test user gets unless a test chooses another one.
pub const PASSWORD: &str = "correct horse battery staple";

/// The value of the sample `series` (name and labels exactly as exposed) in a Prometheus
/// scrape; 0 when absent, as Prometheus treats a series not yet created.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .next()
        .unwrap_or(0.0)
}
