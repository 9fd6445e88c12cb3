//! Outbound federation requests: find the destination ([`resolve`](super::resolve)), sign
//! the request with X-Matrix, send it over verified TLS, parse the answer.
//!
//! Requests go through hyper-util's pooled client with a connector of our own: a URI
//! `matrix-federation://SERVER_NAME/path` is routed by server discovery (TCP to the
//! resolved address, TLS checked against the server's name), so one connection pool
//! serves every destination, keyed by server name, as Synapse's federation agent does.
//! Plain `https://host/...` URIs (the `.well-known` lookup) connect to the host itself.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Debug,
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex, RwLock},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::{
    client::legacy::{
        Client,
        connect::{Connected, Connection},
    },
    rt::{TokioExecutor, TokioIo},
};
use ruma::{
    ServerName,
    api::{
        IncomingResponse, OutgoingRequest,
        federation::authentication::{ServerSignatures, ServerSignaturesInput},
    },
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::{
    discovery::{DEFAULT_PORT, HostPort, Route, parse_override},
    tls,
};
use crate::services::Services;
use kairan_core::error::{Error, Result};

/// The URI scheme of requests routed by server discovery.
const SCHEME: &str = "matrix-federation";
/// How long opening a connection (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from another server (a room's state can be large).
const MAX_RESPONSE_BYTES: usize = 100 * 1024 * 1024;

/// Resolved routes by lowercased server name, with the instant they go stale.
type RouteTable = Arc<RwLock<HashMap<String, (Route, Instant)>>>;

/// The outbound HTTP client of federation and what it caches (resolved destinations).
pub struct Federation {
    client: Client<Connector, Full<Bytes>>,
    pub(super) routes: RouteTable,
    /// `federation.host_overrides`, by lowercased server name.
    pub(super) host_overrides: BTreeMap<String, (String, u16)>,
    /// SRV lookups; `None` when the system resolver configuration could not be read.
    pub(super) dns: Option<hickory_resolver::TokioResolver>,
    verify_tls: bool,
    /// The port of `.well-known` lookups: 443, but a test serves them elsewhere.
    pub(super) well_known_port: u16,
    /// Destinations already warned about while `verify_tls` is off.
    warned_unverified: Mutex<HashSet<String>>,
    /// Remote signing keys: the in-memory side of the cache (see `server_keys`).
    pub(super) keys: super::server_keys::KeyState,
}

impl Federation {
    pub fn new(config: &kairan_core::config::Config) -> anyhow::Result<Self> {
        let fed = &config.federation;
        if !fed.verify_tls {
            tracing::warn!(
                "federation.verify_tls is false: other servers' TLS certificates are NOT verified, so anyone on \
                 the network path can impersonate them. Use this only on a test bench; set ca_bundle instead."
            );
        }
        let tls = tls::client_config(&fed.ca_bundle, fed.verify_tls)?;
        let routes = RouteTable::default();
        let connector = Connector { routes: routes.clone(), tls: TlsConnector::from(tls) };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(8)
            .build(connector);
        let host_overrides = fed
            .host_overrides
            .iter()
            .filter_map(|(name, value)| Some((name.to_ascii_lowercase(), parse_override(value)?)))
            .collect();
        // Short DNS limits: in a closed network without a reachable DNS server, an SRV
        // lookup must fail in seconds, not hold every request to a destination.
        let dns = hickory_resolver::TokioResolver::builder_tokio().and_then(|mut b| {
            b.options_mut().timeout = Duration::from_secs(2);
            b.options_mut().attempts = 1;
            b.build()
        });
        let dns = match dns {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the system DNS configuration: SRV discovery is off");
                None
            }
        };
        Ok(Self {
            client,
            routes,
            host_overrides,
            dns,
            verify_tls: fed.verify_tls,
            well_known_port: 443,
            warned_unverified: Default::default(),
            keys: Default::default(),
        })
    }

    /// Sends a request whose URI is `matrix-federation://SERVER/...` (routed by discovery)
    /// or `https://HOST/...` (direct), and reads the whole answer. The error says what
    /// failed, for logs and for the `M_UNKNOWN` message a caller passes on.
    pub(super) async fn send_http(
        &self,
        request: http::Request<Vec<u8>>,
        timeout: Duration,
        max_bytes: usize,
    ) -> std::result::Result<http::Response<Bytes>, String> {
        let request = request.map(|b| Full::new(Bytes::from(b)));
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| error_chain(&e))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, max_bytes)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {}", error_chain(e.as_ref())))?
                .to_bytes();
            Ok(http::Response::from_parts(parts, body))
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| format!("no answer within {timeout:?}"))?
    }

    /// Sends a request to a server name through its resolved route, setting the `Host`
    /// header discovery calls for. Only the path and query of the request's URI are used.
    pub(super) async fn send_to(
        &self,
        destination: &ServerName,
        mut request: http::Request<Vec<u8>>,
        timeout: Duration,
    ) -> std::result::Result<http::Response<Bytes>, String> {
        let route = self.route(destination).await;
        if !self.verify_tls
            && self.warned_unverified.lock().unwrap_or_else(|e| e.into_inner()).insert(destination.to_string())
        {
            tracing::warn!(%destination, "federation.verify_tls is false: not verifying this server's certificate");
        }
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
        *request.uri_mut() = format!("{SCHEME}://{destination}{path}").parse().map_err(|e| format!("bad URI: {e}"))?;
        let host = http::HeaderValue::from_str(&route.host_header).map_err(|e| format!("bad Host header: {e}"))?;
        request.headers_mut().insert(http::header::HOST, host);
        let limit = response_limit(request.uri().path());
        self.send_http(request, timeout, limit)
            .await
            .map_err(|e| format!("{destination} (via {}:{}) unreachable: {e}", route.connect_host, route.connect_port))
    }
}

impl Services {
    /// Sends a request signed with X-Matrix to another server and parses its answer.
    /// Refused with `M_FORBIDDEN` (nothing sent) when the allowlist does not name the
    /// destination; a destination that cannot be reached gives an `M_UNKNOWN` 502-style error.
    pub async fn send_federation_request<R>(&self, destination: &ServerName, request: R) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequest<Authentication = ServerSignatures, PathBuilder = ruma::api::path_builder::SinglePath>
            + Debug
            + Send,
    {
        self.send_federation_request_with_timeout(destination, request, super::REQUEST_TIMEOUT).await
    }

    /// [`send_federation_request`](Self::send_federation_request) with another time limit,
    /// for requests known to be slow (a `send_join` to a large room).
    pub async fn send_federation_request_with_timeout<R>(
        &self,
        destination: &ServerName,
        request: R,
        timeout: Duration,
    ) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequest<Authentication = ServerSignatures, PathBuilder = ruma::api::path_builder::SinglePath>
            + Debug
            + Send,
    {
        if !self.federation_allowed(destination) {
            return Err(Error::forbidden(format!("federation with {destination} is not allowed")));
        }
        let input =
            ServerSignaturesInput::new(self.server_name().to_owned(), destination.to_owned(), &self.keys.key_pair);
        let base = format!("{SCHEME}://{destination}");
        let http_request: http::Request<Vec<u8>> =
            request.try_into_http_request(&base, input, ()).map_err(|e| Error::internal("federation request", e))?;
        let method = http_request.method().clone();
        let path = http_request.uri().path().to_owned();
        let response = self.federation.send_to(destination, http_request, timeout).await.map_err(|e| {
            tracing::info!(%destination, %method, path, error = %e, "federation request failed");
            Error::unavailable(e)
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(remote_error(destination, status, response.body()));
        }
        R::IncomingResponse::try_from_http_response(response).map_err(|e| {
            Error::unavailable(format!("{destination} answered {method} {path} with something unexpected: {e}"))
        })
    }
}

/// The most bytes read of an answer to a request for `path`. What carries one event (at
/// most 64 KiB) or a page of them is read only that far; another server cannot make this
/// one read 100 MiB to give it one event. Only the answers to what this server asks for
/// itself, to join a room (`send_join`), may be larger.
fn response_limit(path: &str) -> usize {
    const MIB: usize = 1024 * 1024;
    let Some(rest) = path.strip_prefix("/_matrix/federation/") else { return MAX_RESPONSE_BYTES };
    let endpoint = rest.split('/').nth(1).unwrap_or_default();
    match endpoint {
        "event" | "make_join" | "make_leave" | "make_knock" | "query" | "user" => MIB,
        // A room's state at one event: 16 MiB is some 15,000 members, more than any room
        // of a prefecture; a larger answer is refused rather than read without end.
        "get_missing_events" | "backfill" | "state" | "state_ids" | "event_auth" => 16 * MIB,
        _ => MAX_RESPONSE_BYTES,
    }
}

/// An error answer of another server as an error of ours: its 4xx status and errcode
/// pass through (a remote `M_NOT_FOUND` is still one), anything else is a 502.
fn remote_error(destination: &ServerName, status: http::StatusCode, body: &[u8]) -> Error {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let errcode = json["errcode"].as_str().unwrap_or("M_UNKNOWN");
    let message = json["error"].as_str().unwrap_or("");
    let message = format!("{destination} answered {status}: {errcode} {message}");
    // Only errcodes we know by name keep their identity; `errcode` is a static string.
    const KNOWN: &[&str] = &[
        "M_FORBIDDEN",
        "M_NOT_FOUND",
        "M_UNAUTHORIZED",
        "M_BAD_JSON",
        "M_NOT_JSON",
        "M_INVALID_PARAM",
        "M_MISSING_PARAM",
        "M_UNRECOGNIZED",
        "M_INCOMPATIBLE_ROOM_VERSION",
        "M_UNSUPPORTED_ROOM_VERSION",
        "M_LIMIT_EXCEEDED",
        "M_TOO_LARGE",
        "M_USER_DEACTIVATED",
        "M_BAD_STATE",
        // A resident server that cannot vouch for a restricted join: the client may try
        // another server, or tell the user why.
        "M_UNABLE_TO_AUTHORISE_JOIN",
        "M_UNABLE_TO_GRANT_JOIN",
    ];
    match KNOWN.iter().find(|k| **k == errcode) {
        Some(code) if status.is_client_error() => Error::new(status, code, message),
        _ => Error::unavailable(message),
    }
}

/// An error and its sources on one line: hyper's outer errors ("client error (Connect)")
/// say little without them.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = e.source();
    }
    text
}

/// The connector of the federation client: resolves, connects, and does the TLS handshake.
#[derive(Clone)]
struct Connector {
    routes: RouteTable,
    tls: TlsConnector,
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<FederationStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let route = this.route_for(&uri)?;
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, this.connect(&route))
                .await
                .map_err(|_| io_error(format!("connecting took longer than {CONNECT_TIMEOUT:?}")))??;
            Ok(TokioIo::new(FederationStream(stream)))
        })
    }
}

impl Connector {
    fn route_for(&self, uri: &http::Uri) -> std::io::Result<Route> {
        let authority = uri.authority().ok_or_else(|| io_error("a URI without a host".to_owned()))?.as_str();
        if uri.scheme_str() == Some(SCHEME) {
            let cached = self
                .routes
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&authority.to_ascii_lowercase())
                .map(|r| r.0.clone());
            if let Some(route) = cached {
                return Ok(route);
            }
            // Requests always resolve first; this is only a fallback.
            let hp = HostPort::parse(authority).ok_or_else(|| io_error(format!("{authority} is not a server name")))?;
            return Ok(Route {
                tls_name: hp.host.clone(),
                host_header: authority.to_owned(),
                connect_host: hp.host,
                connect_port: hp.port.unwrap_or(DEFAULT_PORT),
            });
        }
        let hp = HostPort::parse(authority).ok_or_else(|| io_error(format!("{authority} is not a host")))?;
        Ok(Route {
            tls_name: hp.host.clone(),
            host_header: authority.to_owned(),
            connect_host: hp.host,
            connect_port: hp.port.unwrap_or(443),
        })
    }

    async fn connect(&self, route: &Route) -> std::io::Result<TlsStream<TcpStream>> {
        let addrs: Vec<SocketAddr> = match route.connect_host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, route.connect_port)],
            Err(_) => tokio::net::lookup_host((route.connect_host.as_str(), route.connect_port))
                .await
                .map_err(|e| io_error(format!("cannot look up {}: {e}", route.connect_host)))?
                .collect(),
        };
        let mut last = io_error(format!("{} has no address", route.connect_host));
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    tcp.set_nodelay(true).ok();
                    let name = rustls::pki_types::ServerName::try_from(route.tls_name.clone())
                        .map_err(|e| io_error(format!("{:?} is not a TLS server name: {e}", route.tls_name)))?;
                    return self.tls.connect(name, tcp).await.map_err(|e| {
                        io_error(format!("TLS with {} at {addr} failed: {}", route.tls_name, error_chain(&e)))
                    });
                }
                Err(e) => last = io_error(format!("cannot connect to {addr}: {e}")),
            }
        }
        Err(last)
    }
}

fn io_error(message: String) -> std::io::Error {
    std::io::Error::other(message)
}

/// A TLS connection to another server, as hyper-util's client wants it.
struct FederationStream(TlsStream<TcpStream>);

impl Connection for FederationStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for FederationStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for FederationStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_errors_keep_4xx_codes_only() {
        let dest = <&ServerName>::try_from("remote.example").unwrap();
        let e = remote_error(dest, http::StatusCode::FORBIDDEN, br#"{"errcode":"M_FORBIDDEN","error":"no"}"#);
        assert_eq!((e.status, e.errcode), (http::StatusCode::FORBIDDEN, "M_FORBIDDEN"));
        assert!(e.message.contains("remote.example"), "{}", e.message);
        let e = remote_error(dest, http::StatusCode::INTERNAL_SERVER_ERROR, b"oops");
        assert_eq!((e.status, e.errcode), (http::StatusCode::BAD_GATEWAY, "M_UNKNOWN"));
        let e = remote_error(dest, http::StatusCode::BAD_REQUEST, br#"{"errcode":"M_UNABLE_TO_GRANT_JOIN"}"#);
        assert_eq!((e.status, e.errcode), (http::StatusCode::BAD_REQUEST, "M_UNABLE_TO_GRANT_JOIN"));
        let e = remote_error(dest, http::StatusCode::BAD_REQUEST, br#"{"errcode":"X_WHATEVER"}"#);
        assert_eq!(e.status, http::StatusCode::BAD_GATEWAY);
    }
}

#[cfg(test)]
mod limit_tests {
    #[test]
    fn answers_carrying_one_event_are_read_only_so_far() {
        assert_eq!(super::response_limit("/_matrix/federation/v1/event/$abc"), 1024 * 1024);
        assert_eq!(super::response_limit("/_matrix/federation/v1/get_missing_events/!r"), 16 * 1024 * 1024);
        assert_eq!(super::response_limit("/_matrix/federation/v2/send_join/!r/$e"), super::MAX_RESPONSE_BYTES);
        assert_eq!(super::response_limit("/_matrix/federation/v1/state/!r"), 16 * 1024 * 1024);
    }
}
