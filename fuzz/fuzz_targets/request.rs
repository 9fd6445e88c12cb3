//! The request extractor (`Ruma<T>`, api/ruma_io.rs) of client and federation endpoints:
//! path parameters, access token, X-Matrix header and signature, body limit, and ruma's
//! parsing of path, query, headers and body. The routes are registered with kairan's
//! `RouterExt::ruma` (the same paths, legacy paths and empty state keys as the server's)
//! on handlers that do nothing, so only the extractor runs and no input changes the
//! database.
//!
//! Input, as text:
//!
//! ```text
//! PUT /_matrix/client/v3/rooms/!r:domain/send/m.room.message/t1
//! x-fuzz-auth: token
//! content-type: application/json
//!
//! {"msgtype":"m.text","body":"hi"}
//! ```
//!
//! `x-fuzz-auth: token` becomes a valid access token of `@fuzz:domain`; `x-fuzz-auth:
//! sign` becomes an X-Matrix header of `domain` that signs the request (so the body of a
//! federation endpoint is parsed); other headers are sent as they are.
//!
//! Property: no input makes the extractor fail with a server error (5xx) or panic
//! outside the parsing that kairan guards with `catch_unwind`.
#![no_main]

use std::sync::OnceLock;

use axum::{Router, body::Body};
use http::{HeaderName, HeaderValue, StatusCode};
use kairan_fuzz::{SERVER_NAME, debug, harness};
use kairan_core::error::Result;
use kairan_homeserver::{
    api::{RouterExt, Ruma},
    services::AppState,
};
use libfuzzer_sys::fuzz_target;
use ruma::api::{
    client,
    federation::{self, authentication::ServerSignaturesInput, authentication::XMatrix},
};
use tower::ServiceExt;

/// A handler that accepts whatever the extractor let through.
async fn accept<T>(_: AppState, _: Ruma<T>) -> Result<StatusCode> {
    Ok(StatusCode::OK)
}

fn router() -> &'static Router {
    static ROUTER: OnceLock<Router> = OnceLock::new();
    ROUTER.get_or_init(|| {
        Router::<AppState>::new()
            // Client-Server API: no authentication, UIA bodies, a token, path parameters,
            // state keys that may be empty, query strings.
            .ruma(accept::<client::session::login::v3::Request>)
            .ruma(accept::<client::account::register::v3::Request>)
            .ruma(accept::<client::account::change_password::v3::Request>)
            .ruma(accept::<client::message::send_message_event::v3::Request>)
            .ruma(accept::<client::state::send_state_event::v3::Request>)
            .ruma(accept::<client::state::get_state_event_for_key::v3::Request>)
            .ruma(accept::<client::redact::redact_event::v3::Request>)
            .ruma(accept::<client::room::create_room::v3::Request>)
            .ruma(accept::<client::membership::join_room_by_id_or_alias::v3::Request>)
            .ruma(accept::<client::filter::create_filter::v3::Request>)
            .ruma(accept::<client::sync::sync_events::v3::Request>)
            .ruma(accept::<client::keys::upload_keys::v3::Request>)
            .ruma(accept::<client::keys::claim_keys::v3::Request>)
            .ruma(accept::<client::to_device::send_event_to_device::v3::Request>)
            .ruma(accept::<client::push::set_pusher::v3::Request>)
            .ruma(accept::<client::push::set_pushrule::v3::Request>)
            .ruma(accept::<client::message::get_message_events::v3::Request>)
            // Server-Server API: X-Matrix, then the body.
            .ruma(accept::<federation::transactions::send_transaction_message::v1::Request>)
            .ruma(accept::<federation::membership::prepare_join_event::v1::Request>)
            .ruma(accept::<federation::membership::create_join_event::v2::Request>)
            .ruma(accept::<federation::membership::create_invite::v2::Request>)
            .ruma(accept::<federation::event::get_missing_events::v1::Request>)
            .ruma(accept::<federation::query::get_profile_information::v1::Request>)
            .ruma(accept::<federation::keys::claim_keys::v1::Request>)
            .with_state(harness().state.clone())
    })
}

/// libFuzzer aborts on every panic, caught or not, and so a panic kairan catches as a last
/// resort (`Ruma::from_request`) is a crash too: it is still a defect to fix or report.
/// With `KAIRAN_FUZZ_LENIENT_PANICS` set (to look past a known one during a long run), this
/// hook only reports each place that panicked, once (scripts/fuzz.sh repeats those lines);
/// a panic that is not caught still ends in libFuzzer's abort.
fn report_panics() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var_os("KAIRAN_FUZZ_LENIENT_PANICS").is_none() {
            return;
        }
        let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
        std::panic::set_hook(Box::new(move |info| {
            let place = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
            if seen.lock().unwrap_or_else(|e| e.into_inner()).insert(place.clone()) {
                eprintln!("request: panic at {place}: {}", panic_message(info));
            }
        }));
    });
}

fn panic_message(info: &std::panic::PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

fuzz_target!(|data: &[u8]| {
    report_panics();
    let h = harness();
    let router = router();

    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let Some(Ok(request_line)) = lines.next().map(std::str::from_utf8) else { return };
    let (method, uri) = request_line.split_once(' ').unwrap_or(("GET", request_line));
    let mut builder = http::Request::builder().method(method).uri(uri);
    let mut sign = false;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"x-fuzz-auth") {
            match value {
                b"token" => builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {}", h.token)),
                b"sign" => sign = true,
                _ => {}
            }
            continue;
        }
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) else { continue };
        builder = builder.header(name, value);
    }
    let Ok(mut request) = builder.body(body.to_vec()) else { return };
    if request.uri().path_and_query().is_none() {
        return;
    }
    if sign {
        let server = <&ruma::ServerName>::try_from(SERVER_NAME).expect("valid server name");
        let input = ServerSignaturesInput::new(server.to_owned(), server.to_owned(), &h.state.keys.key_pair);
        // Only JSON bodies can be signed; others go unsigned.
        if let Ok(x) = XMatrix::try_from_http_request(&request, input) {
            request.headers_mut().insert(http::header::AUTHORIZATION, HeaderValue::from(&x));
        }
    }

    let response = h.runtime.block_on(router.clone().oneshot(request.map(Body::from))).expect("infallible");
    let status = response.status();
    if debug() {
        let body = h.runtime.block_on(axum::body::to_bytes(response.into_body(), 64 * 1024)).unwrap_or_default();
        eprintln!("request: {status} {}", String::from_utf8_lossy(&body));
        assert!(!status.is_server_error(), "the extractor answered {status}");
        return;
    }
    if status.is_server_error() {
        let body = h.runtime.block_on(axum::body::to_bytes(response.into_body(), 64 * 1024)).unwrap_or_default();
        panic!("the extractor answered {status}: {}", String::from_utf8_lossy(&body));
    }
});
