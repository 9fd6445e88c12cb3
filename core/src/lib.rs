//! kairan-core: the floor under the homeserver's domains.
//!
//! Everything here is needed by many domains and needs none of them: configuration (types,
//! loading, the checks that need no domain), the error type, time and IDs, the notifier
//! that wakes waiting syncs, the metrics registry, rate limits and this server's signing
//! key. The compiler keeps the direction: this crate cannot name the homeserver's modules.

pub mod config;
pub mod error;
pub mod ids;
pub mod metrics;
pub mod notifier;
pub mod ratelimit;
pub mod signing_key;
pub mod time;
