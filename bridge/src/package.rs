//! Records handed out of the archive (disclosure exports, transfer packages) in a form
//! anyone can check without the archive: each line carries the leaf, the payload with its
//! salt (unless masked), and the inclusion proof against a signed tree head that travels
//! with it.

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    archive::{Archive, Cosignature, TreeHead},
    keys,
    merkle::{self, Hash},
    record::{Record, payload_hash, sha256_hex},
};

/// One record as exported: what proves it, and the payload (absent when masked or disposed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProvenRecord {
    pub seq: i64,
    pub kind: String,
    pub room_id: Option<String>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub sender: Option<String>,
    pub origin_ts: Option<i64>,
    /// The leaf exactly as hashed (JSON text).
    pub leaf: String,
    pub leaf_hash: String,
    /// Inclusion proof (hex hashes) against the tree head of the package.
    pub proof: Vec<String>,
    /// The payload as UTF-8 text (the event JSON as received), if handed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The payload in base64, if it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
    /// The salt of the payload hash (hex), given only with the payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// Why the payload is not here: `masked` or `disposed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withheld: Option<String>,
    /// Masked places in this record (disclosure exports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masks: Vec<Value>,
    /// The content as disclosed (masked where masked), for readers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disclosed: Option<Value>,
}

impl ProvenRecord {
    /// A record with its proof; `with_payload` false withholds the payload and salt.
    pub fn new(record: &Record, tree: &merkle::Tree, size: usize, with_payload: bool) -> Self {
        let proof = tree.inclusion_proof(record.seq as usize, size).iter().map(merkle::to_hex).collect();
        let (payload, payload_base64, salt, withheld) = match (&record.payload, with_payload) {
            (Some(p), true) => match std::str::from_utf8(p) {
                Ok(s) => (Some(s.to_owned()), None, record.payload_salt.clone(), None),
                Err(_) => {
                    use base64::Engine as _;
                    (None, Some(base64::engine::general_purpose::STANDARD.encode(p)), record.payload_salt.clone(), None)
                }
            },
            (Some(_), false) => (None, None, None, Some("masked".to_owned())),
            (None, _) => (None, None, None, Some("disposed".to_owned())),
        };
        Self {
            seq: record.seq,
            kind: record.kind.clone(),
            room_id: record.room_id.clone(),
            event_id: record.event_id.clone(),
            event_type: record.event_type.clone(),
            sender: record.sender.clone(),
            origin_ts: record.origin_ts,
            leaf: String::from_utf8(record.leaf_bytes()).expect("a leaf is JSON text"),
            leaf_hash: record.leaf_hash.clone(),
            proof,
            payload,
            payload_base64,
            salt,
            withheld,
            masks: Vec::new(),
            disclosed: None,
        }
    }

    /// Checks the line on its own against a tree head: leaf hash, payload hash, inclusion.
    pub fn check(&self, head: &TreeHead) -> Result<(), String> {
        let leaf_hash = merkle::leaf_hash(self.leaf.as_bytes());
        if merkle::to_hex(&leaf_hash) != self.leaf_hash {
            return Err("the leaf does not hash to leaf_hash".into());
        }
        let leaf: Value = serde_json::from_str(&self.leaf).map_err(|e| format!("the leaf is not JSON: {e}"))?;
        if leaf["seq"].as_i64() != Some(self.seq) {
            return Err("the leaf is for another sequence number".into());
        }
        for (field, value) in [("event_id", &self.event_id), ("room_id", &self.room_id), ("sender", &self.sender)] {
            if leaf[field].as_str() != value.as_deref() {
                return Err(format!("{field} differs from the leaf"));
            }
        }
        let payload: Option<Vec<u8>> = match (&self.payload, &self.payload_base64) {
            (Some(p), _) => Some(p.as_bytes().to_vec()),
            (None, Some(b)) => {
                use base64::Engine as _;
                Some(base64::engine::general_purpose::STANDARD.decode(b).map_err(|e| e.to_string())?)
            }
            (None, None) => None,
        };
        if let Some(p) = payload {
            let salt = self.salt.as_deref().ok_or("a payload without its salt")?;
            if Some(payload_hash(salt, &p).as_str()) != leaf["payload_hash"].as_str() {
                return Err("the payload does not match the leaf's payload_hash".into());
            }
        }
        let proof: Vec<Hash> = self
            .proof
            .iter()
            .map(|h| merkle::from_hex(h).ok_or("a proof hash is not hex"))
            .collect::<Result<_, _>>()?;
        let root = merkle::from_hex(&head.root_hash).ok_or("the tree head's root is not hex")?;
        if !merkle::verify_inclusion(self.seq as u64, head.tree_size as u64, &leaf_hash, &proof, &root) {
            return Err(format!("the inclusion proof does not lead to the root of tree head #{}", head.id));
        }
        Ok(())
    }
}

/// The signed tree head a package is proven against, with its co-signatures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeadFile {
    pub tree_head: TreeHead,
    /// The signed message, for tools that check Ed25519 signatures themselves.
    pub signed_message: String,
    pub cosignatures: Vec<Cosignature>,
    /// When the head is not co-signed itself: the newest earlier head that is, and the
    /// consistency proof from it, so the co-signing office can see that this head only
    /// extends what it signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<Extends>,
}

/// An earlier, co-signed head and the RFC 6962 consistency proof to the package's head.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Extends {
    pub tree_head: TreeHead,
    pub cosignatures: Vec<Cosignature>,
    pub consistency_proof: Vec<String>,
}

impl HeadFile {
    /// The head file for `head`, given the leaf hashes of (at least) its first `tree_size` records.
    pub async fn build(archive: &Archive, head: &TreeHead, tree: &merkle::Tree) -> anyhow::Result<Self> {
        let all = archive.cosignatures().await?;
        let cosignatures: Vec<Cosignature> = all.iter().filter(|c| c.head_id == head.id).cloned().collect();
        let mut extends = None;
        if cosignatures.is_empty()
            && let Some(earlier) = archive
                .heads()
                .await?
                .into_iter()
                .rfind(|h| h.id < head.id && h.tree_size <= head.tree_size && all.iter().any(|c| c.head_id == h.id))
        {
            let proof = tree.consistency_proof(earlier.tree_size as usize, head.tree_size as usize);
            extends = Some(Extends {
                cosignatures: all.iter().filter(|c| c.head_id == earlier.id).cloned().collect(),
                tree_head: earlier,
                consistency_proof: proof.iter().map(merkle::to_hex).collect(),
            });
        }
        Ok(Self { signed_message: head.message(), tree_head: head.clone(), cosignatures, extends })
    }
}

/// Writes `manifest.json`: the SHA-256 of every file in the folder (recursively).
pub fn write_manifest(dir: &Path) -> anyhow::Result<String> {
    let mut files = std::collections::BTreeMap::new();
    collect(dir, dir, &mut files)?;
    files.remove("manifest.json");
    let text = serde_json::to_string_pretty(&serde_json::json!({ "sha256": files }))?;
    std::fs::write(dir.join("manifest.json"), &text)?;
    Ok(sha256_hex(text.as_bytes()))
}

fn collect(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, String>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root)?.to_string_lossy().replace('\\', "/");
            out.insert(rel, sha256_hex(&std::fs::read(&path)?));
        }
    }
    Ok(())
}

/// Checks a package folder (export or transfer): the manifest, the tree head's signature,
/// and every line of every `*.jsonl` file with a proof. Returns the number of records checked.
pub fn verify_package(dir: &Path, public_key: Option<&ed25519_dalek::VerifyingKey>) -> anyhow::Result<usize> {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).context("reading manifest.json")?)?;
    let listed = manifest["sha256"].as_object().context("manifest.json without sha256")?;
    for (name, sha) in listed {
        let bytes =
            std::fs::read(dir.join(name)).with_context(|| format!("{name}: listed in the manifest but missing"))?;
        anyhow::ensure!(
            Some(sha256_hex(&bytes).as_str()) == sha.as_str(),
            "{name}: changed since the package was written"
        );
    }
    let head: HeadFile =
        serde_json::from_slice(&std::fs::read(dir.join("tree-head.json")).context("reading tree-head.json")?)?;
    let key = match public_key {
        Some(k) => *k,
        None => keys::parse_public_key(&head.tree_head.public_key)?,
    };
    anyhow::ensure!(
        keys::verify(&key, head.tree_head.message().as_bytes(), &head.tree_head.signature),
        "tree-head.json: the signature does not verify"
    );
    for c in &head.cosignatures {
        let k = keys::parse_public_key(&c.public_key)?;
        anyhow::ensure!(
            keys::verify(&k, head.tree_head.message().as_bytes(), &c.signature),
            "co-signature {} does not verify",
            c.key_id
        );
    }
    if let Some(e) = &head.extends {
        let earlier = &e.tree_head;
        let message = earlier.message();
        anyhow::ensure!(
            keys::verify(&key, message.as_bytes(), &earlier.signature),
            "the earlier head's signature does not verify"
        );
        for c in &e.cosignatures {
            let k = keys::parse_public_key(&c.public_key)?;
            anyhow::ensure!(
                keys::verify(&k, message.as_bytes(), &c.signature),
                "co-signature {} of head #{} does not verify",
                c.key_id,
                earlier.id
            );
        }
        let proof = e
            .consistency_proof
            .iter()
            .map(|h| merkle::from_hex(h).context("a proof hash is not hex"))
            .collect::<anyhow::Result<Vec<Hash>>>()?;
        let r1 = merkle::from_hex(&earlier.root_hash).context("the earlier root is not hex")?;
        let r2 = merkle::from_hex(&head.tree_head.root_hash).context("the root is not hex")?;
        anyhow::ensure!(
            merkle::verify_consistency(earlier.tree_size as u64, head.tree_head.tree_size as u64, &r1, &r2, &proof),
            "the tree head is not consistent with the earlier co-signed head #{}",
            earlier.id
        );
    }
    let mut n = 0;
    for name in listed.keys().filter(|n| n.ends_with(".jsonl")) {
        let text = std::fs::read_to_string(dir.join(name))?;
        for (i, line) in text.lines().enumerate() {
            let r: ProvenRecord = serde_json::from_str(line).with_context(|| format!("{name} line {}", i + 1))?;
            r.check(&head.tree_head).map_err(|e| anyhow::anyhow!("{name} line {} (record {}): {e}", i + 1, r.seq))?;
            n += 1;
        }
    }
    Ok(n)
}

/// How to check a package, for whoever receives it.
pub const PACKAGE_README: &str = "\
kairan-bridge package / 記録パッケージ

Files:
  records.jsonl   one record per line: the leaf (JSON text), leaf_hash, the payload with its
                  salt (unless withheld), and an inclusion proof
  tree-head.json  the signed tree head the proofs lead to (Ed25519), with co-signatures
  attachments/    attachment files, named by their SHA-256
  manifest.json   SHA-256 of every file

To check (any RFC 6962 implementation will do):
  1. each file's SHA-256 equals manifest.json;
  2. leaf_hash = SHA-256(0x00 || leaf);
  3. with a payload: SHA-256(hex-decoded salt || payload bytes) = the leaf's payload_hash;
  4. the inclusion proof of leaf_hash at index seq in a tree of tree_size leaves leads to
     root_hash (node = SHA-256(0x01 || left || right));
  5. the signature in tree-head.json verifies over signed_message with the bridge's public
     key (obtained from the records office, not from this package).
Or run: kairan-bridge verify-package DIR --public-key bridge.key.pub
";

/// The README of a disclosure export.
pub const PACKAGE_README_EXPORT: &str = "\
kairan-bridge disclosure export / 開示用エクスポート

index.html shows the records for reading; 不開示 marks what is not disclosed, with the
reason (the article of the ordinance); masked-places.json / .csv list every masked place.
Masked records in records.jsonl carry their leaf and proof but not their payload.
The checks below prove that every record here is in the archive as it was recorded.

";
