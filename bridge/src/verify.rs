//! `kairan-bridge verify`: recomputes everything and names the first record or head that
//! does not match.
//!
//! For every record, in order: its sequence number is the next one (a gap is a deleted
//! row), its leaf hash recomputes from its columns (a changed byte), its signature by the
//! bridge's key holds (an inserted or forged row), its payload hashes to the committed
//! hash or was disposed of by a disposal record that lists it, and an attachment's file
//! still has the SHA-256 recorded. Then every signed tree head: its signature, its root
//! recomputed over the first `tree_size` leaves (hence consistent with every head before), and
//! the co-signatures.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use ed25519_dalek::VerifyingKey;
use serde::Serialize;
use serde_json::Value;

use crate::{
    archive::{Archive, TreeHead},
    keys,
    merkle::{self, Hash, Peaks},
    record::{Record, kind, payload_hash},
};

/// One thing that does not match.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// The record concerned, if one.
    pub seq: Option<i64>,
    /// The tree head concerned, if one.
    pub head: Option<i64>,
    pub event_id: Option<String>,
    pub room_id: Option<String>,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(seq) = self.seq {
            write!(f, "record {seq}")?;
            if let Some(e) = &self.event_id {
                write!(f, " (event {e})")?;
            }
            if let Some(h) = self.head {
                write!(f, ", tree head #{h}")?;
            }
        } else if let Some(h) = self.head {
            write!(f, "tree head #{h}")?;
        } else {
            write!(f, "archive")?;
        }
        write!(f, ": {}", self.what)
    }
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub records: i64,
    pub disposed: i64,
    pub attachments: i64,
    pub heads: usize,
    pub cosigned_heads: usize,
    /// The newest head that verified: size and root.
    pub latest_head: Option<TreeHead>,
    pub first_problem: Option<Problem>,
    pub problems: Vec<Problem>,
}

/// What to check the signatures against.
pub struct Keys {
    pub bridge: VerifyingKey,
    /// Co-signers that must have signed the newest head (empty: co-signatures present are
    /// checked against the key they name).
    pub cosigners: Vec<VerifyingKey>,
}

struct Collector {
    problems: Vec<Problem>,
}

impl Collector {
    fn record(&mut self, r: &Record, what: String) {
        self.problems.push(Problem {
            seq: Some(r.seq),
            head: None,
            event_id: r.event_id.clone(),
            room_id: r.room_id.clone(),
            what,
        });
    }

    fn at(&mut self, seq: Option<i64>, head: Option<i64>, what: String) {
        self.problems.push(Problem { seq, head, event_id: None, room_id: None, what });
    }
}

/// Verifies the whole archive.
pub async fn verify(archive: &Archive, attachments: &Path, keys: &Keys) -> anyhow::Result<Report> {
    let mut c = Collector { problems: Vec::new() };
    let logged_size = archive.size().await?;
    let heads = archive.heads().await?;
    let head_sizes: BTreeSet<i64> = heads.iter().map(|h| h.tree_size).collect();

    // Disposal records say which payloads they removed.
    let mut disposed_by: BTreeMap<i64, i64> = BTreeMap::new();
    for d in archive.records_of_kind(kind::DISPOSAL).await? {
        let listed: Vec<i64> = d
            .payload
            .as_deref()
            .and_then(|p| serde_json::from_slice::<Value>(p).ok())
            .and_then(|v| v["disposed_seqs"].as_array().map(|a| a.iter().filter_map(Value::as_i64).collect()))
            .unwrap_or_default();
        for s in listed {
            disposed_by.insert(s, d.seq);
        }
    }

    let mut peaks = Peaks::default();
    let mut roots: BTreeMap<i64, Hash> = BTreeMap::new();
    roots.insert(0, merkle::empty_root());
    let mut expected = 0i64;
    let (mut disposed, mut attachments_checked) = (0i64, 0i64);
    const BATCH: i64 = 2000;
    let max_seq: i64 = sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(seq) FROM records")
        .fetch_one(archive.pool())
        .await?
        .unwrap_or(-1);
    let mut from = 0i64;
    while from <= max_seq {
        let batch = archive.records_range(from, from + BATCH).await?;
        from += BATCH;
        for r in batch {
            while r.seq > expected {
                c.at(Some(expected), None, "missing: the row was deleted from the log".into());
                // Keep the tree shape for what follows: the missing leaf is unknown.
                let unknown = [0u8; 32];
                peaks.push(unknown);
                expected += 1;
                if head_sizes.contains(&expected) {
                    roots.insert(expected, peaks.root());
                }
            }
            let computed = r.compute_leaf_hash();
            if merkle::to_hex(&computed) != r.leaf_hash {
                c.record(
                    &r,
                    format!(
                        "changed: its columns hash to {} but the log holds {}",
                        merkle::to_hex(&computed),
                        r.leaf_hash
                    ),
                );
            } else if !keys::verify(&keys.bridge, &keys::record_message(&computed), &r.signature) {
                c.record(&r, "not signed by the bridge's key: an inserted or forged row".into());
            }
            if r.seq >= logged_size {
                c.record(&r, format!("beyond the log's recorded size {logged_size}: an inserted row"));
            }
            match (&r.payload, &r.payload_salt) {
                (Some(p), Some(salt)) => {
                    if payload_hash(salt, p) != r.payload_hash {
                        c.record(&r, "changed: its payload does not match the hash in its leaf".into());
                    } else if r.kind == kind::ATTACHMENT {
                        attachments_checked += 1;
                        check_attachment(&mut c, &r, p, attachments);
                    }
                }
                (None, _) => match (r.disposed_by, disposed_by.get(&r.seq)) {
                    (Some(d), Some(listed)) if d == *listed => disposed += 1,
                    _ => c.record(&r, "payload deleted without a disposal record listing it".into()),
                },
                (Some(_), None) => c.record(&r, "payload without its salt".into()),
            }
            peaks.push(computed);
            expected += 1;
            if head_sizes.contains(&expected) {
                roots.insert(expected, peaks.root());
            }
        }
    }
    if expected < logged_size {
        c.at(
            Some(expected),
            None,
            format!("missing: the log had {logged_size} records, {expected} remain (rows deleted at the end)"),
        );
    }

    // Tree heads.
    let cosignatures = archive.cosignatures().await?;
    let bridge_id = keys::key_id(&keys.bridge);
    let mut previous: Option<&TreeHead> = None;
    let mut latest_ok = None;
    for h in &heads {
        let root = merkle::from_hex(&h.root_hash);
        let mut ok = true;
        if h.key_id != bridge_id || !keys::verify(&keys.bridge, h.message().as_bytes(), &h.signature) {
            c.at(None, Some(h.id), "its signature does not verify with the bridge's public key".into());
            ok = false;
        }
        match (roots.get(&h.tree_size), root) {
            (Some(computed), Some(root)) if *computed == root => {}
            (Some(_), _) => {
                c.at(None, Some(h.id), format!("its root does not match the first {} records", h.tree_size));
                ok = false;
            }
            (None, _) => {
                c.at(None, Some(h.id), format!("it covers {} records but the log has only {expected}", h.tree_size));
                ok = false;
            }
        }
        // Both roots are recomputed from the one sequence of leaves above, so two heads that
        // match their records are consistent with each other by construction; a consistency
        // proof would only restate that (packages carry one, see `package`).
        if let Some(p) = previous
            && (h.tree_size < p.tree_size || h.created_ts < p.created_ts)
        {
            c.at(None, Some(h.id), format!("it goes back in size or time from head #{}", p.id));
            ok = false;
        }
        for cs in cosignatures.iter().filter(|cs| cs.head_id == h.id) {
            let key = keys::parse_public_key(&cs.public_key).ok();
            let trusted = keys.cosigners.is_empty() || key.is_some_and(|k| keys.cosigners.contains(&k));
            let valid = key.is_some_and(|k| keys::verify(&k, h.message().as_bytes(), &cs.signature));
            if !valid || !trusted {
                c.at(None, Some(h.id), format!("the co-signature by key {} does not verify", cs.key_id));
                ok = false;
            }
        }
        if ok {
            latest_ok = Some(h.clone());
        }
        previous = Some(h);
    }
    let cosigned_heads = heads.iter().filter(|h| cosignatures.iter().any(|c| c.head_id == h.id)).count();
    if !keys.cosigners.is_empty() {
        match heads.last() {
            None => c.at(None, None, "no tree head to check co-signatures on".into()),
            Some(last) => {
                for k in &keys.cosigners {
                    let id = keys::key_id(k);
                    if !cosignatures.iter().any(|cs| cs.head_id == last.id && cs.key_id == id) {
                        c.at(None, Some(last.id), format!("not co-signed by key {id}"));
                    }
                }
            }
        }
    }
    // Records after the newest head are not a fault: each is covered by its own signature.
    c.problems.sort_by_key(|p| (p.seq.is_none(), p.seq, p.head));
    Ok(Report {
        ok: c.problems.is_empty(),
        records: expected,
        disposed,
        attachments: attachments_checked,
        heads: heads.len(),
        cosigned_heads,
        latest_head: latest_ok,
        first_problem: c.problems.first().cloned(),
        problems: c.problems,
    })
}

fn check_attachment(c: &mut Collector, r: &Record, payload: &[u8], dir: &Path) {
    let meta: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
    let Some(sha) = meta["sha256"].as_str() else {
        c.record(r, "attachment record without sha256".into());
        return;
    };
    let path = crate::attachments::attachment_path(dir, sha);
    match std::fs::read(&path) {
        Ok(bytes) => {
            if crate::record::sha256_hex(&bytes) != sha {
                c.record(r, format!("its attachment file {} was replaced (SHA-256 differs)", path.display()));
            }
        }
        Err(e) => c.record(r, format!("its attachment file {} is missing ({e})", path.display())),
    }
}
