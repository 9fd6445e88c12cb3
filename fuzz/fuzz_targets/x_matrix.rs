//! The `Authorization: X-Matrix ...` header of federation requests, through the checks
//! `Ruma<T>` runs on it (`Services::check_x_matrix_header`, then `verify_x_matrix`).
//!
//! Input: the header value, a newline, `METHOD URI`, a newline, the body. A header of
//! just `sign` is replaced by a real signature of `domain` over that request, which must
//! then verify, whatever the method, URI and body.
//!
//! Properties: a header that parses is written back (ruma's `Display`, which kairan's
//! outbound requests use) to one that parses to the same values; a request this server
//! signed for itself verifies.
#![no_main]

use http::HeaderValue;
use kairan_fuzz::{SERVER_NAME, harness};
use libfuzzer_sys::fuzz_target;
use ruma::api::federation::authentication::{ServerSignaturesInput, XMatrix};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let header = parts.next().unwrap_or_default();
    let request_line = parts.next().unwrap_or(b"GET /_matrix/federation/v1/version");
    let body = parts.next().unwrap_or_default().to_vec();
    let Ok(request_line) = std::str::from_utf8(request_line) else { return };
    let (method, uri) = request_line.split_once(' ').unwrap_or(("GET", request_line));
    let Ok(request) = http::Request::builder().method(method).uri(uri).body(body) else { return };
    // `Ruma<T>` verifies over the path and query, as the router saw them.
    if request.uri().path_and_query().is_none() {
        return;
    }
    let h = harness();

    let signed_here = header == b"sign";
    let value = if signed_here {
        let server = <&ruma::ServerName>::try_from(SERVER_NAME).expect("valid server name");
        let input = ServerSignaturesInput::new(server.to_owned(), server.to_owned(), &h.state.keys.key_pair);
        // Fails only when the body is not JSON, which a signer cannot sign.
        let Ok(x) = XMatrix::try_from_http_request(&request, input) else { return };
        HeaderValue::from(&x)
    } else {
        let Ok(value) = HeaderValue::from_bytes(header) else { return };
        value
    };

    if let Ok(x) = XMatrix::try_from(&value) {
        let written = HeaderValue::from(&x);
        let again = XMatrix::try_from(&written)
            .unwrap_or_else(|e| panic!("{value:?} parses, but its written form {written:?} does not: {e}"));
        assert_eq!(
            (&again.origin, &again.destination, &again.key, again.sig.as_bytes()),
            (&x.origin, &x.destination, &x.key, x.sig.as_bytes()),
            "{value:?} is written as {written:?}, which parses to other values"
        );
    }

    let Ok(x) = h.state.check_x_matrix_header(Some(&value)) else {
        assert!(!signed_here, "this server's own signed header is refused: {value:?}");
        return;
    };
    let request = request.map(bytes_of);
    let verified = h.runtime.block_on(h.state.verify_x_matrix(&x, &request));
    if signed_here {
        verified.unwrap_or_else(|e| panic!("a request signed here does not verify: {}", e.message));
    }
});

fn bytes_of(body: Vec<u8>) -> axum::body::Bytes {
    axum::body::Bytes::from(body)
}
