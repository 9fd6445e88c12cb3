//! End-to-end encryption, the server's part: it stores and hands out public keys,
//! checks the signatures that tie cross-signing keys together, tells clients whose
//! devices changed, and keeps encrypted room key backups. It never sees a secret.
//!
//! Reached through [`Services::e2ee`], so that every call names the domain it enters:
//! `services.e2ee().upload_keys(..)`.

mod cross_signing;
mod device_keys;
mod device_lists;
mod key_backup;
mod signatures;

use serde_json::{Value, json, value::RawValue};

pub use self::{
    cross_signing::CrossSigningUpload,
    device_keys::UserKeys,
    key_backup::{BackupInfo, KeyCount},
};
use crate::services::Services;
use kairan_core::error::{Error, Result};

/// End-to-end encryption, for one call: `services.e2ee()`.
pub struct E2ee<'a> {
    services: &'a Services,
}

impl Services {
    pub fn e2ee(&self) -> E2ee<'_> {
        E2ee { services: self }
    }
}

fn parse_stored(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or_else(|_| json!({}))
}

fn parse_raw(raw: &RawValue, what: &str) -> Result<Value> {
    serde_json::from_str(raw.get()).map_err(|e| Error::bad_json(format!("invalid {what}: {e}")))
}
