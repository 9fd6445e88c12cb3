//! Server discovery: where to connect for a server name, and under which name to check
//! its certificate, per the spec's "Resolving server names"
//! (<https://spec.matrix.org/v1.18/server-server-api/#resolving-server-names>):
//!
//! 0. `federation.host_overrides` (closed networks: a static map, before any lookup);
//! 1. an IP literal: that address, port 8448 unless given;
//! 2. a hostname with an explicit port: that host and port;
//! 3. `https://HOST/.well-known/matrix/server` delegating to another name, resolved by
//!    steps 1-2 or the SRV and 8448 steps below applied to the delegated name;
//! 4. SRV `_matrix-fed._tcp.HOST`, then the deprecated `_matrix._tcp.HOST`;
//! 5. HOST port 8448.
//!
//! In every case TLS verifies, and SNI and the `Host` header carry, the (delegated) server
//! name's host, never an SRV target: that is what the spec asks and what Synapse does.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use ruma::ServerName;
use serde::Deserialize;

use super::{Federation, tls::host_of};

/// The default federation port.
pub const DEFAULT_PORT: u16 = 8448;
/// How long a `.well-known` answer is trusted when it gives no `Cache-Control` max-age.
const WELL_KNOWN_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest a `.well-known` answer is trusted, whatever it says.
const WELL_KNOWN_MAX_TTL: Duration = Duration::from_secs(48 * 3600);
/// How long the absence of a `.well-known` (or a bad one) is remembered: short, so that a
/// server whose web front was down at our first try is found soon after.
const WELL_KNOWN_FAILURE_TTL: Duration = Duration::from_secs(300);
/// The `.well-known` lookup is one short HTTPS request; a silent host must not hold up
/// every request to it.
pub(super) const WELL_KNOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest `.well-known` body read.
const WELL_KNOWN_MAX_BYTES: usize = 64 * 1024;

/// Where and how to reach a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The name TLS verifies and SNI carries: a hostname or an IP literal, without port.
    pub tls_name: String,
    /// The `Host` header: the (delegated) server name, with its port when it has one.
    pub host_header: String,
    /// Where to open the TCP connection: a hostname (looked up with the system resolver
    /// at connect time) or an IP address.
    pub connect_host: String,
    pub connect_port: u16,
}

/// A server name split into host and optional port. IPv6 literals lose their brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: Option<u16>,
}

impl HostPort {
    /// Splits `host`, `host:port`, `[v6]` or `[v6]:port`; `None` when the port is not a number.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (v6, after) = rest.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p.parse().ok()?),
                None if after.is_empty() => None,
                None => return None,
            };
            (v6.to_owned(), port)
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port.parse().ok()?)),
                None => (text.to_owned(), None),
            }
        };
        (!host.is_empty()).then_some(Self { host, port })
    }

    fn is_ip(&self) -> bool {
        self.host.parse::<IpAddr>().is_ok()
    }
}

/// The `Host` header form of a host and optional port (`[::1]:8448`, `pref.example`).
fn authority(host: &str, port: Option<u16>) -> String {
    let host = if host.contains(':') { format!("[{host}]") } else { host.to_owned() };
    match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    }
}

/// Parses a `host_overrides` value: `host:port`, `ip:port`, `[v6]:port`, or a host alone
/// (port 8448).
pub fn parse_override(value: &str) -> Option<(String, u16)> {
    let hp = HostPort::parse(value)?;
    Some((hp.host, hp.port.unwrap_or(DEFAULT_PORT)))
}

/// The body of `/.well-known/matrix/server`.
#[derive(Deserialize)]
struct WellKnown {
    #[serde(rename = "m.server")]
    server: String,
}

impl Federation {
    /// The route to `server`, from the cache when it is still fresh.
    pub(super) async fn route(&self, server: &ServerName) -> Route {
        let key = server.as_str().to_ascii_lowercase();
        if let Some((route, until)) = self.routes.read().unwrap_or_else(|e| e.into_inner()).get(&key)
            && *until > Instant::now()
        {
            return route.clone();
        }
        let (route, ttl) = self.discover(server).await;
        tracing::debug!(%server, ?route, "resolved federation destination");
        self.routes.write().unwrap_or_else(|e| e.into_inner()).insert(key, (route.clone(), Instant::now() + ttl));
        route
    }

    /// Runs the spec's resolution; returns the route and how long it may be cached.
    async fn discover(&self, server: &ServerName) -> (Route, Duration) {
        let name = server.as_str();
        let forever = Duration::from_secs(365 * 24 * 3600);
        // 0. A static route from the configuration.
        if let Some((host, port)) = self.host_overrides.get(&name.to_ascii_lowercase()) {
            let route = Route {
                tls_name: host_of(name).to_owned(),
                host_header: name.to_owned(),
                connect_host: host.clone(),
                connect_port: *port,
            };
            return (route, forever);
        }
        let Some(hp) = HostPort::parse(name) else {
            // Server names were validated by ruma; this is only a fallback.
            return (direct(name, DEFAULT_PORT, name), forever);
        };
        // 1. IP literal; 2. explicit port.
        if hp.is_ip() || hp.port.is_some() {
            return (direct(&hp.host, hp.port.unwrap_or(DEFAULT_PORT), name), forever);
        }
        // 3. .well-known delegation.
        match self.well_known(&hp.host).await {
            Some((delegated, ttl)) => {
                let Some(d) = HostPort::parse(&delegated) else {
                    return (direct(&hp.host, DEFAULT_PORT, name), WELL_KNOWN_FAILURE_TTL);
                };
                let header = authority(&d.host, d.port);
                if d.is_ip() || d.port.is_some() {
                    return (direct(&d.host, d.port.unwrap_or(DEFAULT_PORT), &header), ttl);
                }
                let route = match self.srv(&d.host).await {
                    Some((target, port)) => Route {
                        tls_name: d.host.clone(),
                        host_header: header,
                        connect_host: target,
                        connect_port: port,
                    },
                    None => direct(&d.host, DEFAULT_PORT, &header),
                };
                (route, ttl)
            }
            None => {
                // 4. SRV; 5. the default port.
                let route = match self.srv(&hp.host).await {
                    Some((target, port)) => Route {
                        tls_name: hp.host.clone(),
                        host_header: name.to_owned(),
                        connect_host: target,
                        connect_port: port,
                    },
                    None => direct(&hp.host, DEFAULT_PORT, name),
                };
                // The .well-known is asked again soon: it may only have been down.
                (route, WELL_KNOWN_FAILURE_TTL)
            }
        }
    }

    /// `https://HOST/.well-known/matrix/server` → the delegated server name and how long
    /// to trust it. Any failure (no answer, not 200, not the expected JSON) is `None`.
    async fn well_known(&self, host: &str) -> Option<(String, Duration)> {
        let port = (self.well_known_port != 443).then_some(self.well_known_port);
        let uri = format!("https://{}/.well-known/matrix/server", authority(host, port));
        let request = http::Request::get(&uri).body(Vec::new()).ok()?;
        let response = match self.send_http(request, WELL_KNOWN_TIMEOUT, WELL_KNOWN_MAX_BYTES).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(host, error = %e, "no .well-known/matrix/server");
                return None;
            }
        };
        if response.status() != http::StatusCode::OK {
            tracing::debug!(host, status = %response.status(), "no .well-known/matrix/server");
            return None;
        }
        let ttl = max_age(response.headers()).unwrap_or(WELL_KNOWN_TTL).min(WELL_KNOWN_MAX_TTL);
        match serde_json::from_slice::<WellKnown>(response.body()) {
            Ok(w) if ServerName::parse(&w.server).is_ok() => Some((w.server, ttl)),
            _ => {
                tracing::warn!(host, "ignoring .well-known/matrix/server: not {{\"m.server\": \"<server name>\"}}");
                None
            }
        }
    }

    /// SRV `_matrix-fed._tcp.HOST`, then `_matrix._tcp.HOST`: the best target and port.
    async fn srv(&self, host: &str) -> Option<(String, u16)> {
        let dns = self.dns.as_ref()?;
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            let query = format!("{service}.{host}.");
            match dns.srv_lookup(query.as_str()).await {
                Ok(lookup) => {
                    let best = lookup
                        .answers()
                        .iter()
                        .filter_map(|record| match &record.data {
                            hickory_resolver::proto::rr::RData::SRV(srv) => Some(srv.clone()),
                            _ => None,
                        })
                        // A target of "." says the service is not offered there.
                        .filter(|srv| !srv.target.is_root())
                        // Lowest priority first; among equals, the heaviest.
                        .min_by_key(|srv| (srv.priority, std::cmp::Reverse(srv.weight)));
                    if let Some(srv) = best {
                        let target = srv.target.to_ascii();
                        return Some((target.trim_end_matches('.').to_owned(), srv.port));
                    }
                }
                Err(e) => tracing::debug!(query, error = %e, "no SRV record"),
            }
        }
        None
    }
}

/// A route that connects to the host itself.
fn direct(host: &str, port: u16, host_header: &str) -> Route {
    Route {
        tls_name: host.to_owned(),
        host_header: host_header.to_owned(),
        connect_host: host.to_owned(),
        connect_port: port,
    }
}

/// `Cache-Control: max-age=N` of a response.
fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::CACHE_CONTROL)?.to_str().ok()?;
    value.split(',').find_map(|part| {
        let secs = part.trim().strip_prefix("max-age=")?;
        secs.trim().parse().ok().map(Duration::from_secs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test CA and a leaf for `localhost`, as PEM files in `dir`: (ca, cert, key).
    fn test_pki(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&leaf_key, &issuer).unwrap();
        let paths = (dir.join("ca.pem"), dir.join("leaf.pem"), dir.join("leaf.key"));
        std::fs::write(&paths.0, ca_cert.pem()).unwrap();
        std::fs::write(&paths.1, leaf.pem()).unwrap();
        std::fs::write(&paths.2, leaf_key.serialize_pem()).unwrap();
        paths
    }

    /// Serves `/.well-known/matrix/server` over TLS on a free port; returns the port.
    async fn serve_well_known(cert: &std::path::Path, key: &std::path::Path, status: u16, body: &'static str) -> u16 {
        use axum::serve::ListenerExt;
        let tls = crate::federation::tls::server_config(cert, key).unwrap();
        let listener = crate::federation::tls::TlsListener::bind("127.0.0.1:0".parse().unwrap(), tls).await.unwrap();
        let port = axum::serve::Listener::local_addr(&listener).unwrap().port();
        let app = axum::Router::new().route(
            "/.well-known/matrix/server",
            axum::routing::get(move || async move {
                (http::StatusCode::from_u16(status).unwrap(), [(http::header::CACHE_CONTROL, "max-age=60")], body)
            }),
        );
        tokio::spawn(async move { axum::serve(listener.tap_io(|_| {}), app).await });
        port
    }

    fn federation(ca: &std::path::Path, well_known_port: u16) -> Federation {
        let mut config = kairan_core::config::Config::default();
        config.federation.ca_bundle = ca.to_owned();
        let mut fed = Federation::new(&config).unwrap();
        fed.well_known_port = well_known_port;
        // No SRV in unit tests: the outcome must not depend on the machine's DNS.
        fed.dns = None;
        fed
    }

    #[tokio::test]
    async fn well_known_delegation_over_verified_tls() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = test_pki(dir.path());
        let server = <&ServerName>::try_from("localhost").unwrap();

        // Delegation with a port: connect there, Host and TLS name from the delegated name.
        let port = serve_well_known(&cert, &key, 200, r#"{"m.server": "localhost:9999"}"#).await;
        let route = federation(&ca, port).route(server).await;
        let expected = Route {
            tls_name: "localhost".into(),
            host_header: "localhost:9999".into(),
            connect_host: "localhost".into(),
            connect_port: 9999,
        };
        assert_eq!(route, expected);

        // Delegation to a name without a port, and no SRV: that name on 8448.
        let port = serve_well_known(&cert, &key, 200, r#"{"m.server": "matrix.kairan.test"}"#).await;
        let route = federation(&ca, port).route(server).await;
        let name = "matrix.kairan.test".to_owned();
        let expected =
            Route { tls_name: name.clone(), host_header: name.clone(), connect_host: name, connect_port: 8448 };
        assert_eq!(route, expected);

        // No .well-known (404), a bad one, or one behind an untrusted certificate: 8448.
        let direct = Route {
            tls_name: "localhost".into(),
            host_header: "localhost".into(),
            connect_host: "localhost".into(),
            connect_port: 8448,
        };
        let port = serve_well_known(&cert, &key, 404, "{}").await;
        assert_eq!(federation(&ca, port).route(server).await, direct);
        let port = serve_well_known(&cert, &key, 200, r#"{"m.server": 7}"#).await;
        assert_eq!(federation(&ca, port).route(server).await, direct);
        let other = tempfile::tempdir().unwrap();
        let (other_ca, _, _) = test_pki(other.path());
        let port = serve_well_known(&cert, &key, 200, r#"{"m.server": "localhost:9999"}"#).await;
        assert_eq!(federation(&other_ca, port).route(server).await, direct);
    }

    #[tokio::test]
    async fn overrides_ip_literals_and_ports_need_no_lookup() {
        let mut config = kairan_core::config::Config::default();
        config.federation.host_overrides.insert("Pref.Example".into(), "10.0.0.5:8450".into());
        let mut fed = Federation::new(&config).unwrap();
        fed.dns = None;
        // Nothing listens on port 1: any .well-known attempt would fail, not hang.
        fed.well_known_port = 1;
        let route = |name: &'static str| {
            let fed = &fed;
            async move { fed.route(<&ServerName>::try_from(name).unwrap()).await }
        };
        let r = route("pref.example").await;
        assert_eq!(
            (r.connect_host.as_str(), r.connect_port, r.tls_name.as_str(), r.host_header.as_str()),
            ("10.0.0.5", 8450, "pref.example", "pref.example")
        );
        let r = route("10.1.2.3").await;
        assert_eq!((r.connect_host.as_str(), r.connect_port, r.tls_name.as_str()), ("10.1.2.3", 8448, "10.1.2.3"));
        let r = route("[::1]:8449").await;
        assert_eq!((r.connect_host.as_str(), r.connect_port, r.host_header.as_str()), ("::1", 8449, "[::1]:8449"));
        let r = route("city.example:8443").await;
        assert_eq!(
            (r.connect_host.as_str(), r.connect_port, r.tls_name.as_str()),
            ("city.example", 8443, "city.example")
        );
    }

    #[test]
    fn host_port_parsing() {
        let hp = |s: &str| HostPort::parse(s).map(|h| (h.host, h.port));
        assert_eq!(hp("pref.example"), Some(("pref.example".into(), None)));
        assert_eq!(hp("pref.example:8449"), Some(("pref.example".into(), Some(8449))));
        assert_eq!(hp("10.0.0.1"), Some(("10.0.0.1".into(), None)));
        assert_eq!(hp("[::1]:8448"), Some(("::1".into(), Some(8448))));
        assert_eq!(hp("[::1]"), Some(("::1".into(), None)));
        assert_eq!(hp("pref.example:http"), None);
        assert_eq!(hp(""), None);
        assert_eq!(parse_override("10.1.2.3"), Some(("10.1.2.3".into(), 8448)));
        assert_eq!(parse_override("matrix.pref.example:443"), Some(("matrix.pref.example".into(), 443)));
    }

    #[test]
    fn authorities_bracket_ipv6() {
        assert_eq!(authority("::1", Some(8448)), "[::1]:8448");
        assert_eq!(authority("pref.example", None), "pref.example");
    }

    #[test]
    fn cache_control_max_age() {
        let mut h = http::HeaderMap::new();
        assert_eq!(max_age(&h), None);
        h.insert(http::header::CACHE_CONTROL, "public, max-age=600".parse().unwrap());
        assert_eq!(max_age(&h), Some(Duration::from_secs(600)));
    }
}
