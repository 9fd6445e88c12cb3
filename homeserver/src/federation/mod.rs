//! Talking to other homeservers: discovery, TLS, signed requests, remote signing keys
//! (`client`, `server_keys`), and the durable per-destination queue of what this server
//! sends them (`queue`).

mod client;
mod devices;
pub mod discovery;
mod edu;
pub mod history;
mod inbound;
mod queries;
pub mod queue;
mod server_keys;
pub mod tls;

pub use self::client::Federation;
