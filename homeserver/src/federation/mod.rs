//! Talking to other homeservers: discovery, TLS, signed requests, remote signing keys
//! (`client`, `server_keys`), the durable per-destination queue of what this server
//! sends them (`queue`), and what other servers send it (`inbound`: the X-Matrix checks
//! of every request, and transactions).

mod client;
mod devices;
pub mod discovery;
mod edu;
pub mod history;
pub mod inbound;
mod queries;
pub mod queue;
mod server_keys;
pub mod tls;

pub use self::client::Federation;

/// How long a whole request may take, answer included.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
