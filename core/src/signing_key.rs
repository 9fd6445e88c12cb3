//! The server's ed25519 signing key: created on first start, then reused.
//!
//! The file uses Synapse's format (`ed25519 <version> <unpadded base64 seed>`), so an
//! operator can move a key between the two servers.

use std::path::Path;

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use ed25519_dalek::{SigningKey, pkcs8::EncodePrivateKey};
use ruma::signatures::Ed25519KeyPair;

/// The signing key of this server.
pub struct ServerKeys {
    pub key_pair: Ed25519KeyPair,
    /// `ed25519:<version>`
    pub key_id: String,
    /// Unpadded base64 of the public key, as `/_matrix/key/v2/server` publishes it.
    pub public_key_b64: String,
}

impl ServerKeys {
    /// Loads `DIR/signing.key`, creating it (mode 0600) if it does not exist. A file that
    /// exists but cannot be read is an error: the key is never silently replaced.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join("signing.key");
        let (version, seed) = if path.exists() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read signing key {}: {e}", path.display()))?;
            parse_key_file(&text).ok_or_else(|| {
                anyhow::anyhow!(
                    "signing key {} is not in the form `ed25519 <version> <base64 seed>`; \
                     restore it from backup rather than deleting it",
                    path.display()
                )
            })?
        } else {
            std::fs::create_dir_all(data_dir)
                .map_err(|e| anyhow::anyhow!("cannot create data directory {}: {e}", data_dir.display()))?;
            let seed: [u8; 32] = rand::random();
            let version = format!("a_{}", &STANDARD_NO_PAD.encode(rand::random::<[u8; 3]>()).replace(['+', '/'], "x"));
            let line = format!("ed25519 {version} {}\n", STANDARD_NO_PAD.encode(seed));
            write_private(&path, &line)?;
            tracing::info!(path = %path.display(), "generated a new signing key");
            (version, seed)
        };
        let signing = SigningKey::from_bytes(&seed);
        let der = signing.to_pkcs8_der().map_err(|e| anyhow::anyhow!("encoding signing key: {e}"))?;
        let key_pair = Ed25519KeyPair::from_der(der.as_bytes(), version.clone())
            .map_err(|e| anyhow::anyhow!("loading signing key: {e}"))?;
        Ok(Self {
            key_id: format!("ed25519:{version}"),
            public_key_b64: STANDARD_NO_PAD.encode(signing.verifying_key().as_bytes()),
            key_pair,
        })
    }
}

fn parse_key_file(text: &str) -> Option<(String, [u8; 32])> {
    let mut parts = text.split_whitespace();
    (parts.next()? == "ed25519").then_some(())?;
    let version = parts.next()?.to_owned();
    // Lenient about trailing bits, as Synapse's decoder is: the spec's own test seed
    // has them set.
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let seed = lenient.decode(parts.next()?).ok()?;
    Some((version, seed.try_into().ok()?))
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file =
        options.open(path).map_err(|e| anyhow::anyhow!("cannot create signing key {}: {e}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = ServerKeys::load_or_create(dir.path()).unwrap();
        let b = ServerKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(a.public_key_b64, b.public_key_b64);
        assert_eq!(a.key_id, b.key_id);
    }

    /// The spec's cryptographic test vectors (appendix "Signing JSON" / "Cryptographic
    /// test vectors"), through our key file format and the signing path kairan uses.
    #[test]
    fn spec_signing_test_vectors() {
        use ruma::{CanonicalJsonObject, room_version_rules::RoomVersionRules, signatures};
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("signing.key"), "ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1\n")
            .unwrap();
        let keys = ServerKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(keys.key_id, "ed25519:1");
        let signed = |json: &str| {
            let mut obj: CanonicalJsonObject = serde_json::from_str(json).unwrap();
            signatures::sign_json("domain", &keys.key_pair, &mut obj).unwrap();
            serde_json::to_value(&obj).unwrap()["signatures"]["domain"]["ed25519:1"].as_str().unwrap().to_owned()
        };
        assert_eq!(
            signed("{}"),
            "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
        );
        assert_eq!(
            signed(r#"{"one": 1, "two": "Two"}"#),
            "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
        );
        let mut event: CanonicalJsonObject = serde_json::from_str(
            r#"{"room_id": "!x:domain", "sender": "@a:domain", "origin": "domain", "origin_server_ts": 1000000,
                "signatures": {}, "hashes": {}, "type": "X", "content": {}, "prev_events": [], "auth_events": [],
                "depth": 3, "unsigned": {"age_ts": 1000000}}"#,
        )
        .unwrap();
        signatures::hash_and_sign_event("domain", &keys.key_pair, &mut event, &RoomVersionRules::V1.redaction).unwrap();
        let v = serde_json::to_value(&event).unwrap();
        assert_eq!(v["hashes"]["sha256"], "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos");
        assert_eq!(
            v["signatures"]["domain"]["ed25519:1"],
            "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
        );
    }

    #[test]
    fn a_damaged_key_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("signing.key"), "garbage").unwrap();
        assert!(ServerKeys::load_or_create(dir.path()).is_err());
    }
}
