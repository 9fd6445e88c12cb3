//! A record of the archive: what one leaf of the Merkle log commits to.
//!
//! The leaf is a JSON object with a fixed field order (see [`Leaf`]). It covers every column
//! of the record except the payload itself, which it covers through
//! `payload_hash = SHA-256(salt || payload)`. So a disposal can delete the payload and keep
//! the leaf, and a disclosure export can publish a masked record's leaf without the salt,
//! which keeps a short masked text from being found by guessing.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::merkle::{Hash, leaf_hash};

/// Version of the leaf encoding.
pub const LEAF_VERSION: u32 = 1;

/// Kinds of records.
pub mod kind {
    /// A Matrix event exactly as the homeserver served it.
    pub const EVENT: &str = "event";
    /// The decrypted content of an `m.room.encrypted` event.
    pub const CLEARTEXT: &str = "cleartext";
    /// An attachment of an event: metadata; the bytes are in the attachment folder.
    pub const ATTACHMENT: &str = "attachment";
    /// Something the bridge could not do, recorded so that nothing disappears silently.
    pub const NOTE: &str = "note";
    /// A disposal (廃棄) decision carried out.
    pub const DISPOSAL: &str = "disposal";
    /// A transfer (移管) package written.
    pub const TRANSFER: &str = "transfer";
    /// A legal hold set.
    pub const HOLD: &str = "hold";
    /// A legal hold released.
    pub const HOLD_RELEASE: &str = "hold_release";
}

/// A record to append.
#[derive(Debug, Clone, Default)]
pub struct NewRecord {
    pub kind: String,
    /// Unique per record that must exist at most once (`event:$id`, `cleartext:$id`, ...).
    pub dedup_key: Option<String>,
    pub room_id: Option<String>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub sender: Option<String>,
    pub origin_ts: Option<i64>,
    pub retention: Option<String>,
    pub expires: Option<String>,
    pub on_expiry: Option<String>,
    pub payload: Vec<u8>,
    pub note: Option<String>,
}

/// A record as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub seq: i64,
    pub kind: String,
    pub dedup_key: Option<String>,
    pub room_id: Option<String>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub sender: Option<String>,
    pub origin_ts: Option<i64>,
    pub archived_ts: i64,
    pub retention: Option<String>,
    pub expires: Option<String>,
    pub on_expiry: Option<String>,
    /// `None` once disposed of.
    #[serde(skip)]
    pub payload: Option<Vec<u8>>,
    pub payload_salt: Option<String>,
    pub payload_hash: String,
    pub note: Option<String>,
    pub leaf_hash: String,
    pub signature: String,
    pub disposed_by: Option<i64>,
}

/// What the leaf hash covers, in this field order.
#[derive(Debug, Serialize)]
pub struct Leaf<'a> {
    pub v: u32,
    pub seq: i64,
    pub kind: &'a str,
    pub dedup_key: Option<&'a str>,
    pub room_id: Option<&'a str>,
    pub event_id: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub sender: Option<&'a str>,
    pub origin_ts: Option<i64>,
    pub archived_ts: i64,
    pub retention: Option<&'a str>,
    pub expires: Option<&'a str>,
    pub on_expiry: Option<&'a str>,
    pub payload_hash: &'a str,
    pub note: Option<&'a str>,
}

impl Record {
    /// The leaf this record is in the log.
    pub fn leaf(&self) -> Leaf<'_> {
        Leaf {
            v: LEAF_VERSION,
            seq: self.seq,
            kind: &self.kind,
            dedup_key: self.dedup_key.as_deref(),
            room_id: self.room_id.as_deref(),
            event_id: self.event_id.as_deref(),
            event_type: self.event_type.as_deref(),
            sender: self.sender.as_deref(),
            origin_ts: self.origin_ts,
            archived_ts: self.archived_ts,
            retention: self.retention.as_deref(),
            expires: self.expires.as_deref(),
            on_expiry: self.on_expiry.as_deref(),
            payload_hash: &self.payload_hash,
            note: self.note.as_deref(),
        }
    }

    /// The leaf's bytes: compact JSON in the field order of [`Leaf`].
    pub fn leaf_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.leaf()).expect("a leaf always serialises")
    }

    /// The leaf hash recomputed from the columns.
    pub fn compute_leaf_hash(&self) -> Hash {
        leaf_hash(&self.leaf_bytes())
    }

    /// A short name for reports: `record 12 (event $abc in !room)`.
    pub fn describe(&self) -> String {
        let mut s = format!("record {} ({}", self.seq, self.kind);
        if let Some(e) = &self.event_id {
            s.push_str(&format!(" {e}"));
        }
        if let Some(r) = &self.room_id {
            s.push_str(&format!(" in {r}"));
        }
        s.push(')');
        s
    }

    /// The payload as UTF-8 text, if present and valid.
    pub fn payload_text(&self) -> Option<&str> {
        self.payload.as_deref().and_then(|p| std::str::from_utf8(p).ok())
    }
}

/// `hex(SHA-256(salt || payload))`, the salt given in hex.
pub fn payload_hash(salt_hex: &str, payload: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(hex::decode(salt_hex).unwrap_or_default());
    h.update(payload);
    hex::encode(h.finalize())
}

/// A fresh random salt (16 bytes, hex).
pub fn new_salt() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// SHA-256 in hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}
