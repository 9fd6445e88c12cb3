//! Canonical JSON as kairan uses it: PDUs and request bodies parsed into ruma's
//! `CanonicalJsonValue`, written back with its `Display` (the form events are stored and
//! hashed in), client content converted with `to_canonical_value`, and events redacted,
//! hashed, signed and verified under each supported room version.
//!
//! Properties: the canonical form parses back to the same value and is a fixed point; the
//! two ways into canonical JSON (from text, from a `serde_json::Value`) agree; redaction is
//! idempotent; an event kairan signs as `domain` verifies with `domain`'s key.
#![no_main]

use kairan_fuzz::{SERVER_NAME, spec_key_pair, spec_public_keys, supported_rules};
use libfuzzer_sys::fuzz_target;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue,
    canonical_json::{redact, to_canonical_value},
    signatures::{
        Ed25519KeyPair, PublicKeyMap, Verified, content_hash, hash_and_sign_event, reference_hash,
        required_server_signatures_to_verify_event, to_canonical_json_string_for_signing, verify_event,
    },
};
use std::sync::OnceLock;

fn keys() -> &'static (Ed25519KeyPair, PublicKeyMap) {
    static KEYS: OnceLock<(Ed25519KeyPair, PublicKeyMap)> = OnceLock::new();
    KEYS.get_or_init(|| (spec_key_pair(), spec_public_keys()))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };

    // Client content is parsed as serde_json first (rooms/append.rs `sign_pdu`).
    let via_value = serde_json::from_str::<serde_json::Value>(text).ok().map(to_canonical_value);

    let Ok(value) = serde_json::from_str::<CanonicalJsonValue>(text) else { return };
    let canonical = value.to_string();
    let reparsed: CanonicalJsonValue = serde_json::from_str(&canonical)
        .unwrap_or_else(|e| panic!("the canonical form does not parse back: {e}\n{canonical}"));
    assert_eq!(reparsed, value, "the canonical form parses back to another value");
    assert_eq!(reparsed.to_string(), canonical, "the canonical form is not a fixed point");
    if let Some(Ok(other)) = via_value {
        assert_eq!(other, value, "serde_json::Value and direct parsing disagree on {text}");
    }

    let CanonicalJsonValue::Object(obj) = value else { return };
    let _ = to_canonical_json_string_for_signing(&obj);
    let _ = content_hash(&obj);
    let (key_pair, public_keys) = keys();
    for rules in supported_rules() {
        let _ = reference_hash(&obj, &rules);
        if let Ok(redacted) = redact(obj.clone(), &rules.redaction, None) {
            let twice = redact(redacted.clone(), &rules.redaction, None).expect("a redacted event redacts again");
            assert_eq!(twice, redacted, "redaction is not idempotent");
        }
        let mut signed: CanonicalJsonObject = obj.clone();
        if hash_and_sign_event(SERVER_NAME, key_pair, &mut signed, &rules.redaction).is_err() {
            continue;
        }
        // Only an event whose required signers are all `domain` can verify with its key.
        let Ok(servers) = required_server_signatures_to_verify_event(&signed, &rules.signatures) else { continue };
        if servers.iter().all(|s| s.as_str() == SERVER_NAME) {
            match verify_event(public_keys, &signed, &rules) {
                Ok(Verified::All) => {}
                other => panic!(
                    "an event signed as {SERVER_NAME} does not verify: {other:?}\n{}",
                    CanonicalJsonValue::Object(signed)
                ),
            }
        }
    }
});
