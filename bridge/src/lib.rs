//! kairan-bridge: the records bridge. Official rooms archived as public records
//! (公文書): complete, tamper-evident, kept for their retention class, disposed of only by
//! a recorded decision, and exported for disclosure requests with the non-disclosable
//! parts masked.
//!
//! - [`daemon`]: the Matrix client that archives (`kairan-bridge run`); [`policy`]: which
//!   room policy events it trusts; [`attachments`]: the folder of attached files;
//! - [`archive`]: the append-only store (SQLite or PostgreSQL) and its signed tree heads;
//! - [`merkle`]: RFC 6962 hashing and proofs; [`record`]: what a leaf commits to;
//! - [`verify`]: recomputes everything; [`office`]: holds, disposal, transfer;
//! - [`export`]: disclosure exports with masking; [`package`]: self-verifying output;
//! - [`metrics`]: what `run` serves to Prometheus on `metrics_listen`.

pub mod archive;
pub mod attachments;
pub mod config;
pub mod daemon;
pub mod export;
pub mod keys;
pub mod merkle;
pub mod metrics;
pub mod office;
pub mod package;
pub mod policy;
pub mod record;
pub mod retention;
pub mod verify;

#[cfg(test)]
mod tests;
