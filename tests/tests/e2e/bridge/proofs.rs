//! An independent check of exported records, written from RFC 9162 and the package README
//! alone (it shares no code with the bridge): leaf hashes, payload hashes, inclusion proofs,
//! and the Ed25519 signature of the tree head.

use std::path::Path;

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

type Hash = [u8; 32];

fn sha(parts: &[&[u8]]) -> Hash {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn unhex(s: &str) -> anyhow::Result<Hash> {
    hex::decode(s)?.try_into().map_err(|_| anyhow::anyhow!("not 32 bytes: {s}"))
}

/// RFC 9162, 2.1.3.2: verifying an inclusion proof.
fn inclusion_root(index: u64, size: u64, leaf: Hash, proof: &[Hash]) -> Option<Hash> {
    if index >= size {
        return None;
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = leaf;
    for p in proof {
        if s_n == 0 {
            return None;
        }
        if f_n % 2 == 1 || f_n == s_n {
            r = sha(&[&[1], p, &r]);
            while f_n % 2 == 0 && f_n != 0 {
                f_n /= 2;
                s_n /= 2;
            }
        } else {
            r = sha(&[&[1], &r, p]);
        }
        f_n /= 2;
        s_n /= 2;
    }
    (s_n == 0).then_some(r)
}

/// What a checked package holds.
pub struct Checked {
    /// Every line of records.jsonl.
    pub lines: Vec<Value>,
    pub tree_size: u64,
}

/// Checks a package folder against the bridge's public key (given as the base64 text of
/// `bridge.key.pub`): signature of the head, and every line's leaf, payload and proof.
pub fn check_package(dir: &Path, public_key_b64: &str) -> anyhow::Result<Checked> {
    let head_file: Value = serde_json::from_slice(&std::fs::read(dir.join("tree-head.json"))?)?;
    let head = &head_file["tree_head"];
    let size = head["tree_size"].as_u64().context("tree_size")?;
    let root_hex = head["root_hash"].as_str().context("root_hash")?;
    let root = unhex(root_hex)?;
    let message = format!("kairan-bridge tree head v1\n{size}\n{root_hex}\n{}\n", head["created_ts"]);
    ensure!(head_file["signed_message"] == message.as_str(), "the signed message is not what the head says");
    let key_bytes: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(public_key_b64.trim())?
        .try_into()
        .map_err(|_| anyhow::anyhow!("public key length"))?;
    let key = VerifyingKey::from_bytes(&key_bytes)?;
    let sig_bytes =
        base64::engine::general_purpose::STANDARD.decode(head["signature"].as_str().context("signature")?)?;
    key.verify(message.as_bytes(), &Signature::from_slice(&sig_bytes)?)
        .context("the tree head's signature does not verify")?;

    let mut lines = Vec::new();
    for (i, line) in std::fs::read_to_string(dir.join("records.jsonl"))?.lines().enumerate() {
        let r: Value = serde_json::from_str(line)?;
        let leaf_text = r["leaf"].as_str().context("leaf")?;
        let leaf_hash = sha(&[&[0], leaf_text.as_bytes()]);
        ensure!(hex::encode(leaf_hash) == r["leaf_hash"].as_str().unwrap_or_default(), "line {i}: leaf hash");
        let leaf: Value = serde_json::from_str(leaf_text)?;
        ensure!(leaf["seq"] == r["seq"] && leaf["event_id"] == r["event_id"], "line {i}: leaf and line disagree");
        if let Some(payload) = r["payload"].as_str() {
            let salt = hex::decode(r["salt"].as_str().context("salt")?)?;
            let h = hex::encode(sha(&[&salt, payload.as_bytes()]));
            ensure!(leaf["payload_hash"] == h.as_str(), "line {i}: payload hash");
        }
        let proof: Vec<Hash> = r["proof"]
            .as_array()
            .context("proof")?
            .iter()
            .map(|h| unhex(h.as_str().unwrap_or_default()))
            .collect::<anyhow::Result<_>>()?;
        let index = r["seq"].as_u64().context("seq")?;
        match inclusion_root(index, size, leaf_hash, &proof) {
            Some(computed) if computed == root => {}
            _ => bail!("line {i} (record {index}): the inclusion proof does not lead to the signed root"),
        }
        lines.push(r);
    }
    Ok(Checked { lines, tree_size: size })
}
