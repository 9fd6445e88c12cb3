//! Ed25519 keys: the bridge's own signing key (records and tree heads) and the co-signing
//! keys of other offices (the records office, the archives).
//!
//! Secret keys are PKCS#8 PEM files (mode 0600); public keys are the 32 raw bytes in base64,
//! one line, which is what `keygen` prints and `verify --public-key` reads.

use std::path::Path;

use anyhow::{Context as _, bail};
use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use ed25519_dalek::{
    Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey,
    pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, spki::der::pem::LineEnding},
};
use sha2::{Digest, Sha256};

use crate::merkle::{Hash, to_hex};

/// Domain separation of the signature over one record's leaf hash.
const RECORD_CONTEXT: &[u8] = b"kairan-bridge record v1\n";

/// Loads a PKCS#8 PEM secret key.
pub fn load_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let pem = std::fs::read_to_string(path).with_context(|| format!("reading the signing key {}", path.display()))?;
    SigningKey::from_pkcs8_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{} is not an Ed25519 PKCS#8 PEM key: {e}", path.display()))
}

/// Loads the key, or creates it (and its `.pub` beside it) if the file does not exist.
pub fn load_or_create_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    if path.exists() {
        return load_signing_key(path);
    }
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    write_signing_key(path, &key)?;
    tracing::info!(path = %path.display(), key_id = %key_id(&key.verifying_key()), "created a new signing key");
    Ok(key)
}

/// Writes a new secret key file (refusing to overwrite one) and `<path>.pub`.
pub fn write_signing_key(path: &Path, key: &SigningKey) -> anyhow::Result<()> {
    if path.exists() {
        bail!("{} already exists; refusing to overwrite a key", path.display());
    }
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| anyhow::anyhow!("encoding the key: {e}"))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write as _;
    options
        .open(path)
        .and_then(|mut f| f.write_all(pem.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))?;
    let public = format!("{}\n", public_key_b64(&key.verifying_key()));
    std::fs::write(public_path(path), public).with_context(|| format!("writing {}.pub", path.display()))?;
    Ok(())
}

/// `<key path>.pub`.
pub fn public_path(path: &Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    p.into()
}

/// The public key as base64 of its 32 bytes.
pub fn public_key_b64(key: &VerifyingKey) -> String {
    B64.encode(key.as_bytes())
}

/// Parses a base64 public key.
pub fn parse_public_key(s: &str) -> anyhow::Result<VerifyingKey> {
    let bytes = B64.decode(s.trim()).context("a public key is 32 bytes in base64")?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| anyhow::anyhow!("a public key is 32 bytes in base64"))?;
    VerifyingKey::from_bytes(&bytes).context("not a valid Ed25519 public key")
}

/// Reads a public key file (base64, one line) or, for convenience, a secret key PEM.
pub fn load_public_key(path: &Path) -> anyhow::Result<VerifyingKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if text.contains("PRIVATE KEY") {
        return Ok(load_signing_key(path)?.verifying_key());
    }
    parse_public_key(&text).with_context(|| format!("{}", path.display()))
}

/// A short identifier: the first 8 bytes of SHA-256 of the public key, in hex.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// The message a tree head signature covers (a checkpoint in the style of transparency logs).
pub fn head_message(tree_size: u64, root: &Hash, timestamp_ms: i64) -> String {
    format!("kairan-bridge tree head v1\n{tree_size}\n{}\n{timestamp_ms}\n", to_hex(root))
}

/// Signs a message; the signature in base64.
pub fn sign(key: &SigningKey, message: &[u8]) -> String {
    B64.encode(key.sign(message).to_bytes())
}

/// Checks a base64 signature.
pub fn verify(key: &VerifyingKey, message: &[u8], signature_b64: &str) -> bool {
    let Ok(bytes) = B64.decode(signature_b64) else { return false };
    let Ok(sig) = Signature::from_slice(&bytes) else { return false };
    key.verify(message, &sig).is_ok()
}

/// The message a record signature covers: the leaf hash (the leaf includes the sequence number).
pub fn record_message(leaf: &Hash) -> Vec<u8> {
    let mut m = RECORD_CONTEXT.to_vec();
    m.extend_from_slice(to_hex(leaf).as_bytes());
    m
}
