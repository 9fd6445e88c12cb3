//! A PDU from another server, through the checks kairan runs on receipt before any
//! database lookup: canonical JSON, format, event ID from the reference hash, signatures,
//! content hash (a mismatch keeps the event redacted) and `Pdu` parsing
//! (`Services::verify_pdu_object`, as `verified_pdu` calls it once the room version is known).
//!
//! Input: one control byte, then the PDU's JSON. The control byte picks the room version
//! and whether the target signs the event first with `domain`'s key (then its signature
//! checks pass and what lies behind them is reached), and whether it then changes the
//! content (a content hash mismatch, so the redaction path).
//!
//! An accepted event must read back from its stored form with the same event ID, as
//! `Pdu::from_stored` does for every event read from the database.
#![no_main]

use kairan_fuzz::{SERVER_NAME, debug, harness, supported_rules};
use kairan_homeserver::rooms::Pdu;
use libfuzzer_sys::fuzz_target;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedRoomId, RoomId};
use serde_json::value::RawValue;

const SIGN: u8 = 0x10;
const TAMPER: u8 = 0x20;

fuzz_target!(|data: &[u8]| {
    let Some((&control, json)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(json) else { return };
    // A transaction's PDUs reach `ingest_pdu` as raw JSON values.
    let Ok(raw) = serde_json::from_str::<Box<RawValue>>(text) else { return };
    let all_rules = supported_rules();
    let rules = &all_rules[usize::from(control & 0x0f) % all_rules.len()];
    let h = harness();

    // What `verified_pdu` does before it asks the database for the room version.
    let Ok(mut obj) = serde_json::from_str::<CanonicalJsonObject>(raw.get()) else { return };
    // A v12 create event carries no room ID; it is then the one the caller expects.
    let fallback = <&RoomId>::try_from("!fuzz:domain").expect("valid room ID");
    let room_id = match obj.get("room_id").and_then(CanonicalJsonValue::as_str) {
        Some(r) => match OwnedRoomId::try_from(r) {
            Ok(r) => r,
            Err(_) => return,
        },
        None => fallback.to_owned(),
    };
    if control & SIGN != 0 {
        let _ = ruma::signatures::hash_and_sign_event(SERVER_NAME, &h.state.keys.key_pair, &mut obj, &rules.redaction);
        if control & TAMPER != 0
            && let Some(CanonicalJsonValue::Object(content)) = obj.get_mut("content")
        {
            content.insert("fuzz".to_owned(), CanonicalJsonValue::Bool(true));
        }
    }

    let pdu = match h.runtime.block_on(h.state.verify_pdu_object(obj, &room_id, rules)) {
        Ok(pdu) => pdu,
        Err(e) => {
            if debug() {
                eprintln!("pdu: refused: {}", e.message);
            }
            return;
        }
    };
    if debug() {
        eprintln!("pdu: accepted {}", pdu.event_id);
    }

    // What persisting and reading back does with an accepted event.
    let stored = pdu.json_string();
    let again = Pdu::from_stored(pdu.event_id.as_str(), pdu.room_id.as_str(), &stored)
        .unwrap_or_else(|e| panic!("an accepted event does not read back from its stored form: {e}\n{stored}"));
    assert_eq!(again.json, pdu.json, "the stored form reads back as another event");
    let hash = ruma::signatures::reference_hash(&again.json, rules).expect("the stored form hashes");
    assert_eq!(pdu.event_id.as_str(), format!("${hash}"), "the stored form has another event ID");
    // What the client format and relations read of it.
    let _ = pdu.with_ids();
    let _ = pdu.relation();
});
