//! Synapse as a federation peer: a real Synapse process on a loopback port, for the
//! interoperability tests (tests/tests/e2e/federation_synapse.rs).
//!
//! Synapse comes from PyPI, pinned, in a virtual environment that `scripts/synapse-venv.sh`
//! creates (`target/synapse-venv`, or `KAIRAN_SYNAPSE_VENV`); `scripts/test.sh` runs that
//! script before the tests. The harness never installs anything itself: a missing venv is
//! an error that says which command to run, so an interop test can never pass silently
//! without Synapse.
//!
//! Each [`SynapseServer`] gets its own temporary directory (config, signing key, SQLite
//! database, media, log), a free port and the server name `localhost:{port}`. Peers
//! resolve a name with an explicit port straight to `https://localhost:{port}` (no
//! .well-known, no SRV), so that one TLS listener serves the client API, the federation
//! API and the key endpoints, with the test CA's `localhost` certificate
//! ([`crate::tls`]). Synapse trusts the same CA for its outbound federation, the way a
//! prefecture's private CA is meant to work, and is allowed to connect to loopback.
//! Clients of it (raw [`Api`] and matrix-sdk) trust the test CA as well.

use std::{
    fs::File,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use matrix_sdk::{Client, config::RequestConfig};
use ruma::serde::{Base64, base64::Standard};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::Api;

/// The Synapse version `scripts/synapse-venv.sh` installs; written in the tests' reports.
pub const SYNAPSE_VERSION: &str = "1.163.2";
/// How long Synapse may take to answer `/versions` after being spawned. It takes 2–3 s
/// on an idle machine, much longer when the other tests keep both cores busy.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(90);
/// How often readiness is polled while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A running Synapse homeserver, killed and deleted on drop (its log is printed first if
/// the test is panicking).
#[derive(Debug)]
pub struct SynapseServer {
    port: u16,
    server_name: String,
    child: Option<Child>,
    /// The test CA's certificate (PEM), which clients of this server must trust.
    ca_pem: Vec<u8>,
    // Declared last: dropped after the process that lives in it.
    dir: TempDir,
}

/// The TLS files Synapse is configured with.
struct TlsFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl SynapseServer {
    /// Writes a config and a signing key, spawns Synapse and waits until `/versions`
    /// answers 200 over TLS.
    pub async fn start() -> anyhow::Result<Self> {
        let python = synapse_python()?;
        let tls = tls_files();
        let ca_pem = std::fs::read(&tls.ca).with_context(|| format!("reading {}", tls.ca.display()))?;

        // A free port is found by binding port 0 and releasing it; another process can grab
        // it in between, so a start that fails on the port is retried on a new one.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let dir = tempfile::Builder::new().prefix("kairan-synapse-").tempdir()?;
            let port = free_port()?;
            let server_name = format!("localhost:{port}");
            std::fs::write(dir.path().join("homeserver.yaml"), render_config(&server_name, port, dir.path(), &tls))?;
            std::fs::write(dir.path().join("log.yaml"), render_log_config(dir.path()))?;
            std::fs::write(dir.path().join("signing.key"), signing_key())?;
            let mut server = Self { port, server_name, child: None, ca_pem: ca_pem.clone(), dir };
            match server.spawn_and_wait(&python).await {
                Ok(()) => return Ok(server),
                Err(e) => {
                    let logs = server.logs().to_lowercase();
                    if attempt < 3 && (logs.contains("address already in use") || logs.contains("couldn't listen")) {
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// `localhost:{port}`, the name in this server's user and room IDs.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// Base URL of its client API, `https://localhost:{port}`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// The fully qualified user ID of a local user, e.g. `@alice:localhost:8481`.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name)
    }

    /// The directory holding the config, database and log of this server.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An HTTP client that trusts the test CA, as every client of this server must.
    pub fn http_client(&self) -> anyhow::Result<reqwest::Client> {
        let ca = reqwest::Certificate::from_pem(&self.ca_pem).context("parsing the test CA certificate")?;
        Ok(reqwest::Client::builder()
            // Longer than any long-poll a test makes (30 s), so that only a hung server times out.
            .timeout(Duration::from_secs(60))
            .add_root_certificate(ca)
            .build()?)
    }

    /// A raw API client without an access token.
    pub fn anonymous(&self) -> anyhow::Result<Api> {
        Ok(Api::anonymous(&self.url()).with_http(self.http_client()?))
    }

    /// Registers `localpart` (open registration with the dummy stage, as Synapse allows
    /// when configured for tests) and returns a raw API client for the new device.
    pub async fn register(&self, localpart: &str, password: &str) -> anyhow::Result<Api> {
        let api = self.anonymous()?;
        let mut body = json!({
            "username": localpart,
            "password": password,
            "initial_device_display_name": "kairan-tests raw",
        });
        // The first request opens a user-interactive auth session; the second completes
        // its only stage, m.login.dummy.
        let first = api.post("/_matrix/client/v3/register", &body).await?;
        let done = if first.status == 401 {
            let session = first.body["session"].as_str().with_context(|| format!("no UIA session: {}", first.text))?;
            body["auth"] = json!({ "type": "m.login.dummy", "session": session });
            api.post("/_matrix/client/v3/register", &body).await?
        } else {
            first
        };
        let done = done.ok().with_context(|| format!("registering {localpart} on Synapse"))?;
        let token = done["access_token"].as_str().with_context(|| format!("no access_token: {done}"))?;
        let mut api = api.with_token(Some(token));
        api.user_id = done["user_id"].as_str().map(str::to_owned);
        api.device_id = done["device_id"].as_str().map(str::to_owned);
        ensure!(api.user_id.as_deref() == Some(self.user_id(localpart).as_str()), "registered as {done}");
        Ok(api)
    }

    /// Registers several users, all with `password`.
    pub async fn register_users(&self, localparts: &[&str], password: &str) -> anyhow::Result<()> {
        for localpart in localparts {
            self.register(localpart, password).await?;
        }
        Ok(())
    }

    /// A raw API client logged in as `name` (a new device, via `/login`).
    pub async fn api(&self, name: &str, password: &str) -> anyhow::Result<Api> {
        let api = self.anonymous()?;
        let body = api
            .post("/_matrix/client/v3/login", &crate::api::password_login(name, password))
            .await?
            .ok()
            .with_context(|| format!("logging in to Synapse as {name}"))?;
        let token = body["access_token"].as_str().context("login response without access_token")?;
        let mut api = api.with_token(Some(token));
        api.user_id = body["user_id"].as_str().map(str::to_owned);
        api.device_id = body["device_id"].as_str().map(str::to_owned);
        Ok(api)
    }

    /// A matrix-sdk client logged in as `name` with an in-memory store (a new device),
    /// trusting the test CA. Retries are disabled, as for [`crate::TestServer::client`].
    pub async fn client(&self, name: &str, password: &str) -> anyhow::Result<Client> {
        let ca = reqwest::Certificate::from_pem(&self.ca_pem).context("parsing the test CA certificate")?;
        let client = Client::builder()
            .homeserver_url(self.url())
            .add_root_certificates(vec![ca])
            .request_config(RequestConfig::new().disable_retry().timeout(Duration::from_secs(60)))
            .build()
            .await
            .context("building matrix-sdk client for Synapse")?;
        client
            .matrix_auth()
            .login_username(name, password)
            .initial_device_display_name("kairan-tests")
            .send()
            .await
            .with_context(|| format!("matrix-sdk login to Synapse as {name}"))?;
        Ok(client)
    }

    /// Everything Synapse has logged (its log file, then its stdout and stderr).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["homeserver.log", "stdout.log", "stderr.log"] {
            let path = self.dir.path().join(name);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            // Without the start-up's schema migrations and the sync cache's chatter, which
            // are most of the lines and never the reason a test failed.
            let text: Vec<&str> =
                text.lines().filter(|l| !l.contains("prepare_database") && !l.contains("response_cache")).collect();
            if !text.is_empty() {
                out.push_str(&format!("----- {} -----\n{}\n", path.display(), text.join("\n")));
            }
        }
        out
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    async fn spawn_and_wait(&mut self, python: &Path) -> anyhow::Result<()> {
        let dir = self.dir.path();
        let child = Command::new(python)
            .args(["-m", "synapse.app.homeserver", "--config-path"])
            .arg(dir.join("homeserver.yaml"))
            // Synapse appends the git state of its working directory to its version string;
            // run it in its own directory, not in this repository.
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(File::create(dir.join("stdout.log"))?)
            .stderr(File::create(dir.join("stderr.log"))?)
            .spawn()
            .with_context(|| format!("spawning {} -m synapse.app.homeserver", python.display()))?;
        self.child = Some(child);
        match self.wait_until_ready().await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.kill();
                Err(e.context(format!("Synapse did not become ready; its output:\n{}", self.logs())))
            }
        }
    }

    /// Polls `GET /_matrix/client/versions` over TLS until it answers 200, the process
    /// exits, or [`STARTUP_TIMEOUT`] passes.
    async fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let http = self.http_client()?;
        let url = format!("{}/_matrix/client/versions", self.url());
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!("Synapse exited during startup with {status}");
            }
            let last = match http.get(&url).timeout(Duration::from_secs(2)).send().await {
                Ok(resp) if resp.status() == reqwest::StatusCode::OK => return Ok(()),
                Ok(resp) => format!("status {}", resp.status()),
                Err(e) => format!("{e:?}"),
            };
            if Instant::now() >= deadline {
                bail!("no 200 from {url} within {STARTUP_TIMEOUT:?} (last: {last})");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for SynapseServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("===== Synapse logs ({}) =====\n{}", self.dir.path().display(), self.logs());
        }
        if std::env::var_os("KAIRAN_TEST_KEEP_DIR").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("kept Synapse directory {}", self.dir.path().display());
        }
    }
}

/// The venv's Python, checked to hold Synapse. `KAIRAN_SYNAPSE_VENV` (relative paths from
/// the workspace root, as in the script) or `target/synapse-venv`.
fn synapse_python() -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = match std::env::var_os("KAIRAN_SYNAPSE_VENV") {
        Some(dir) => root.join(dir),
        None => root.join("target").join("synapse-venv"),
    };
    let python = venv.join("bin").join("python");
    let has_synapse = venv.join("bin").join("python").exists()
        && Command::new(&python)
            .args(["-c", "import synapse.app.homeserver"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !has_synapse {
        bail!(
            "Synapse is not installed in {}: run `bash scripts/synapse-venv.sh` (scripts/test.sh does) \
             to install matrix-synapse=={SYNAPSE_VERSION}; the interop tests cannot run without it",
            venv.display()
        );
    }
    Ok(python)
}

/// The test CA's certificate and the `localhost` leaf it issued (shared with kairan's
/// federation listener in the tests, so both servers trust each other through one CA).
fn tls_files() -> TlsFiles {
    let ca = crate::tls::test_ca();
    TlsFiles { ca: ca.ca_pem.clone(), cert: ca.cert_pem.clone(), key: ca.key_pem.clone() }
}

/// A fresh Ed25519 signing key in Synapse's file format: `ed25519 {version} {seed}`, the
/// 32-byte seed in unpadded standard base64. Written by the harness so that starting
/// Synapse needs no extra `--generate-keys` run (a second Python start-up).
fn signing_key() -> String {
    let seed: [u8; 32] = rand::random();
    let version: String = (0..4).map(|_| char::from(b'a' + rand::random::<u8>() % 26)).collect();
    format!("ed25519 a_{version} {}\n", Base64::<Standard, _>::new(seed).encode())
}

/// A YAML string literal (JSON strings are valid YAML flow scalars).
fn yaml(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

fn render_config(server_name: &str, port: u16, dir: &Path, tls: &TlsFiles) -> String {
    let path = |p: &Path| yaml(&p.to_string_lossy());
    // Rate limits far above anything a test does, so bursts never hit M_LIMIT_EXCEEDED.
    let unlimited = "{per_second: 10000, burst_count: 10000}";
    let secret: String = (0..32).map(|_| char::from(b'a' + rand::random::<u8>() % 26)).collect();
    format!(
        r#"# Generated by kairan-tests (tests/src/synapse.rs).
server_name: {server_name}
public_baseurl: {baseurl}
pid_file: {pid}
report_stats: false
signing_key_path: {signing_key}
log_config: {log_config}
media_store_path: {media}
database:
  name: sqlite3
  args:
    database: {db}

# One TLS listener on the port of the server name: the client API, the federation API and
# the key endpoints, as peers connect to https://localhost:{port} for this name.
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: true
    x_forwarded: false
    resources:
      - names: [client, federation, media]
        compress: false
tls_certificate_path: {cert}
tls_private_key_path: {key}

# Outbound federation: verify certificates against the test CA (a private CA, as in a
# closed network), allow loopback, and fetch keys from the origin servers themselves.
# federation_ip_range_blacklist must stay unset: when present, Synapse ignores
# ip_range_whitelist for federation.
federation_verify_certificates: true
federation_custom_ca_list: [{ca}]
ip_range_whitelist: ['127.0.0.0/8', '::1/128']
trusted_key_servers: []
suppress_key_server_warning: true

enable_registration: true
enable_registration_without_verification: true
registration_shared_secret: {secret_a}
macaroon_secret_key: {secret_b}
form_secret: {secret_c}
url_preview_enabled: false

rc_message: {unlimited}
rc_registration: {unlimited}
rc_login:
  address: {unlimited}
  account: {unlimited}
  failed_attempts: {unlimited}
rc_joins:
  local: {unlimited}
  remote: {unlimited}
rc_joins_per_room: {unlimited}
rc_invites:
  per_room: {unlimited}
  per_user: {unlimited}
  per_issuer: {unlimited}
rc_admin_redaction: {unlimited}
rc_key_requests: {unlimited}
rc_room_creation: {unlimited}
rc_profile: {unlimited}
rc_presence:
  per_user: {unlimited}
rc_federation:
  window_size: 1000
  sleep_limit: 10000
  sleep_delay: 1
  reject_limit: 10000
  concurrent: 100
"#,
        baseurl = yaml(&format!("https://localhost:{port}/")),
        server_name = yaml(server_name),
        pid = path(&dir.join("homeserver.pid")),
        signing_key = path(&dir.join("signing.key")),
        log_config = path(&dir.join("log.yaml")),
        media = path(&dir.join("media_store")),
        db = path(&dir.join("homeserver.db")),
        cert = path(&tls.cert),
        key = path(&tls.key),
        ca = path(&tls.ca),
        secret_a = yaml(&format!("{secret}-registration")),
        secret_b = yaml(&format!("{secret}-macaroon")),
        secret_c = yaml(&format!("{secret}-form")),
    )
}

/// Python logging: everything at INFO to `homeserver.log`, unbuffered, so that the log is
/// complete when a failing test prints it.
fn render_log_config(dir: &Path) -> String {
    format!(
        r#"version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: {file}
    encoding: utf8
loggers:
  synapse.storage.SQL:
    level: INFO
root:
  level: INFO
  handlers: [file]
disable_existing_loggers: false
"#,
        file = yaml(&dir.join("homeserver.log").to_string_lossy())
    )
}

/// Asks the OS for a free loopback port.
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_the_tls_files_and_the_loopback_whitelist() {
        let tls = TlsFiles { ca: "/ca/ca.pem".into(), cert: "/ca/leaf.pem".into(), key: "/ca/leaf.key".into() };
        let config = render_config("localhost:4242", 4242, Path::new("/tmp/s"), &tls);
        assert!(config.contains("server_name: \"localhost:4242\""), "{config}");
        assert!(config.contains("  - port: 4242\n"), "{config}");
        assert!(config.contains("tls: true"), "{config}");
        assert!(config.contains("tls_certificate_path: \"/ca/leaf.pem\""), "{config}");
        assert!(config.contains("federation_custom_ca_list: [\"/ca/ca.pem\"]"), "{config}");
        assert!(config.contains("ip_range_whitelist: ['127.0.0.0/8', '::1/128']"), "{config}");
        assert!(!config.contains("\nfederation_ip_range_blacklist"), "{config}");
        assert!(config.contains("database: \"/tmp/s/homeserver.db\""), "{config}");
    }

    #[test]
    fn signing_key_has_synapse_format() {
        let key = signing_key();
        let parts: Vec<&str> = key.trim_end().split(' ').collect();
        assert_eq!(parts.len(), 3, "{key}");
        assert_eq!(parts[0], "ed25519");
        assert!(parts[1].starts_with("a_") && parts[1].len() == 6, "{key}");
        let seed = Base64::<Standard>::parse(parts[2]).expect("base64 seed");
        assert_eq!(seed.as_bytes().len(), 32);
    }
}
