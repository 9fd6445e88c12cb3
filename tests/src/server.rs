//! Starting, killing and restarting a real `kairan-homeserver` process.

use std::{
    fs::File,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use matrix_sdk::{Client, config::RequestConfig};
use tempfile::TempDir;

use crate::{Api, pg::TestDatabase};

/// How long a server may take to answer `/versions` after being spawned.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often readiness is polled while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The storage backend the server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: a SQLite file under the data directory.
    Sqlite,
    /// A fresh PostgreSQL database, created for this server and dropped with it.
    Postgres,
}

/// The `[registration]` section of the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Registration {
    /// Only the administrator creates accounts (the default).
    Closed,
    /// `/register` is open to holders of one of these registration tokens.
    Token(Vec<String>),
}

/// How to configure a [`TestServer`]. Defaults: SQLite, `localhost`, closed registration,
/// rate limits off (so that ordinary tests never trip them).
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub backend: Backend,
    pub server_name: String,
    pub registration: Registration,
    pub rate_limits: bool,
    /// `[media] max_upload_bytes`; `None` keeps the server's default.
    pub max_upload_bytes: Option<u64>,
    /// `[admin] archive_user`; `None` leaves it empty (no archive account).
    pub archive_user: Option<String>,
    /// `[push] gateways`: the push gateway origins HTTP pushers may use.
    pub push_gateways: Vec<String>,
    /// Run the federation TLS listener (see [`ServerOptions::federation`]).
    pub federation: bool,
    /// `[federation] allowlist`; `None` allows every server (`["*"]`).
    pub federation_allowlist: Option<Vec<String>>,
    /// `[federation] host_overrides`: server name → `host:port`.
    pub host_overrides: Vec<(String, String)>,
    /// Leave the TLS files out, so the server generates a self-signed certificate.
    pub self_signed_tls: bool,
    /// `[federation] verify_tls`.
    pub verify_tls: bool,
    /// `[federation] old_verify_keys`: `(key ID, base64 public key, expired_ts)`.
    pub old_verify_keys: Vec<(String, String, u64)>,
    /// `listen.metrics` on this loopback port (see [`ServerOptions::metrics`]); the port
    /// is chosen when the server starts.
    pub metrics_port: Option<u16>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            backend: Backend::Sqlite,
            server_name: "localhost".to_owned(),
            registration: Registration::Closed,
            rate_limits: false,
            max_upload_bytes: None,
            archive_user: None,
            push_gateways: Vec::new(),
            federation: false,
            federation_allowlist: None,
            host_overrides: Vec::new(),
            self_signed_tls: false,
            verify_tls: true,
            old_verify_keys: Vec::new(),
            metrics_port: None,
        }
    }
}

impl ServerOptions {
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    pub fn server_name(mut self, server_name: impl Into<String>) -> Self {
        self.server_name = server_name.into();
        self
    }

    pub fn registration_tokens<S: Into<String>>(mut self, tokens: impl IntoIterator<Item = S>) -> Self {
        self.registration = Registration::Token(tokens.into_iter().map(Into::into).collect());
        self
    }

    pub fn rate_limits(mut self, enabled: bool) -> Self {
        self.rate_limits = enabled;
        self
    }

    pub fn max_upload_bytes(mut self, bytes: u64) -> Self {
        self.max_upload_bytes = Some(bytes);
        self
    }

    /// The records bridge's account, invited to rooms marked official (`@archive:server`).
    /// A push gateway (an origin, `http://127.0.0.1:PORT`) pushers may be set for.
    pub fn push_gateway(mut self, origin: impl Into<String>) -> Self {
        self.push_gateways.push(origin.into());
        self
    }

    pub fn archive_user(mut self, user_id: impl Into<String>) -> Self {
        self.archive_user = Some(user_id.into());
        self
    }

    /// Federate: a TLS listener on a free port with the [test CA](crate::test_ca)'s leaf
    /// certificate, the test CA as `ca_bundle`, every server allowed (unless
    /// [`federation_allowlist`](Self::federation_allowlist) says otherwise), and retries
    /// at most 2 s apart. The server name becomes `localhost:PORT` unless the test chose
    /// one, so that other servers connect straight to that port.
    pub fn federation(mut self) -> Self {
        self.federation = true;
        self
    }

    /// `[federation] allowlist`: server names, `*`, or `*.suffix` (implies [`federation`](Self::federation)).
    pub fn federation_allowlist<S: Into<String>>(mut self, servers: impl IntoIterator<Item = S>) -> Self {
        self.federation = true;
        self.federation_allowlist = Some(servers.into_iter().map(Into::into).collect());
        self
    }

    /// A static route: requests for `server_name` go to `target` (`host:port`).
    pub fn host_override(mut self, server_name: impl Into<String>, target: impl Into<String>) -> Self {
        self.host_overrides.push((server_name.into(), target.into()));
        self
    }

    /// Serve a self-signed certificate generated by the server (no TLS files configured)
    /// instead of the test CA's leaf; other servers then refuse it unless they do not
    /// verify TLS.
    pub fn self_signed_tls(mut self) -> Self {
        self.self_signed_tls = true;
        self
    }

    /// `[federation] verify_tls`: whether other servers' certificates are verified.
    pub fn verify_tls(mut self, verify: bool) -> Self {
        self.verify_tls = verify;
        self
    }

    /// Serve Prometheus metrics (`listen.metrics`) on a free loopback port; see
    /// [`TestServer::metrics_url`].
    pub fn metrics(mut self) -> Self {
        self.metrics_port = Some(0);
        self
    }

    /// An old key of this server, published in `old_verify_keys`.
    pub fn old_verify_key(mut self, key_id: impl Into<String>, public_key: impl Into<String>, expired_ts: u64) -> Self {
        self.old_verify_keys.push((key_id.into(), public_key.into(), expired_ts));
        self
    }
}

/// A running (or killed) homeserver process with its own data directory and port.
///
/// Dropping it kills the process, drops its PostgreSQL database if any, and deletes the
/// directory. If the test is panicking, the server's logs are printed first, because the
/// directory holding them is about to disappear.
#[derive(Debug)]
pub struct TestServer {
    options: ServerOptions,
    binary: PathBuf,
    config_path: PathBuf,
    port: u16,
    /// The federation TLS port, when federating.
    federation_port: Option<u16>,
    child: Option<Child>,
    /// How many times the process has been spawned; each run logs to its own files.
    runs: u32,
    database: Option<TestDatabase>,
    // Declared last: dropped after everything that lives in it.
    dir: TempDir,
}

impl TestServer {
    /// Writes a config, spawns the server and waits until `/versions` answers 200.
    pub async fn start(options: ServerOptions) -> anyhow::Result<Self> {
        let binary = homeserver_binary()?;
        let database = match options.backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TestDatabase::create().await?),
        };

        // A free port is found by binding port 0 and releasing it; another process can
        // grab it in between, so a start that fails on the port is retried on a new one.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let dir = tempfile::Builder::new().prefix("kairan-e2e-").tempdir()?;
            let port = free_port()?;
            let mut options = options.clone();
            let federation_port = if options.federation { Some(free_port()?) } else { None };
            if options.metrics_port.is_some() {
                options.metrics_port = Some(free_port()?);
            }
            if let Some(fport) = federation_port
                && options.server_name == "localhost"
            {
                options.server_name = format!("localhost:{fport}");
            }
            let config_path = dir.path().join("kairan.toml");
            std::fs::write(
                &config_path,
                render_config(&options, dir.path(), port, federation_port, database.as_ref()),
            )?;
            let mut server = Self {
                options,
                binary: binary.clone(),
                config_path,
                port,
                federation_port,
                child: None,
                runs: 0,
                database: None,
                dir,
            };
            match server.spawn_and_wait().await {
                Ok(()) => {
                    server.database = database;
                    return Ok(server);
                }
                Err(e) => {
                    let stderr = server.last_stderr().to_lowercase();
                    if attempt < 3 && stderr.contains("address already in use") {
                        continue;
                    }
                    drop(server);
                    if let Some(db) = &database {
                        db.drop_database().await.ok();
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Like [`start`](Self::start) but without spawning the process: the directory, config
    /// and database exist, empty. Fill the data directory or database (a `restore`, an old
    /// schema), then [`launch`](Self::launch).
    pub async fn prepare(mut options: ServerOptions) -> anyhow::Result<Self> {
        let binary = homeserver_binary()?;
        if options.metrics_port.is_some() {
            options.metrics_port = Some(free_port()?);
        }
        let database = match options.backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TestDatabase::create().await?),
        };
        let dir = tempfile::Builder::new().prefix("kairan-e2e-").tempdir()?;
        let port = free_port()?;
        let config_path = dir.path().join("kairan.toml");
        std::fs::write(&config_path, render_config(&options, dir.path(), port, None, database.as_ref()))?;
        Ok(Self { options, binary, config_path, port, federation_port: None, child: None, runs: 0, database, dir })
    }

    /// Spawns a [`prepare`](Self::prepare)d server and waits until it answers.
    pub async fn launch(&mut self) -> anyhow::Result<()> {
        self.spawn_and_wait().await
    }

    /// The data directory (`DIR/data`): signing key, SQLite database, media.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The SQLite database file (when the backend is SQLite).
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir().join("kairan.db")
    }

    /// The PostgreSQL database URL (when the backend is PostgreSQL).
    pub fn postgres_url(&self) -> Option<&str> {
        self.database.as_ref().map(|db| db.url())
    }

    /// `http://127.0.0.1:PORT/metrics`.
    ///
    /// # Panics
    /// When the server was not started with [`ServerOptions::metrics`].
    pub fn metrics_url(&self) -> String {
        let port = self.options.metrics_port.expect("no metrics listener: use ServerOptions::metrics()");
        format!("http://127.0.0.1:{port}/metrics")
    }

    /// Base URL of the Client-Server API, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn server_name(&self) -> &str {
        &self.options.server_name
    }

    /// The port of the federation TLS listener.
    ///
    /// # Panics
    /// When the server was not started with [`ServerOptions::federation`].
    pub fn federation_port(&self) -> u16 {
        self.federation_port.expect("this server does not federate: start it with ServerOptions::federation()")
    }

    /// Base URL of the federation TLS listener, e.g. `https://localhost:41235` (the test
    /// CA's certificate is for `localhost`).
    pub fn federation_url(&self) -> String {
        format!("https://localhost:{}", self.federation_port())
    }

    /// The server's signing key file (`DATA_DIR/signing.key`, Synapse's format), for tests
    /// that sign federation requests in this server's name.
    pub fn signing_key_path(&self) -> PathBuf {
        self.dir.path().join("data").join("signing.key")
    }

    /// The configuration file the server runs with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn options(&self) -> &ServerOptions {
        &self.options
    }

    /// The fully qualified user ID of a local user, e.g. `@alice:localhost`.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.options.server_name)
    }

    /// The directory holding the config, data and logs of this server.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `kairan-homeserver` binary under test.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Runs the admin CLI on this server's config (`kairan-homeserver --config FILE ARGS…`),
    /// which opens the same database as the running server. Returns its output whatever
    /// the exit status.
    pub async fn cli<I, S>(&self, args: I) -> anyhow::Result<std::process::Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        tokio::process::Command::new(&self.binary)
            .env_clear()
            .envs(server_env())
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .output()
            .await
            .with_context(|| format!("running {}", self.binary.display()))
    }

    /// Like [`cli`](Self::cli), requiring exit status 0.
    pub async fn cli_ok<I, S>(&self, args: I) -> anyhow::Result<std::process::Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let output = self.cli(&args).await?;
        if !output.status.success() {
            bail!(
                "kairan-homeserver {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(output)
    }

    /// Creates an account with the admin CLI, which opens the same database as the running
    /// server (`kairan-homeserver --config FILE create-user NAME --password-file FILE`).
    pub async fn create_user(&self, name: &str, password: &str, admin: bool) -> anyhow::Result<()> {
        let password_file = self.dir.path().join(format!("password-{name}"));
        std::fs::write(&password_file, password)?;
        let mut args = vec![
            std::ffi::OsString::from("create-user"),
            name.into(),
            "--password-file".into(),
            password_file.into_os_string(),
        ];
        if admin {
            args.push("--admin".into());
        }
        self.cli_ok(args).await.with_context(|| format!("create-user {name}"))?;
        Ok(())
    }

    /// Quarantines a media with the admin CLI (`quarantine-media mxc://SERVER/ID`).
    pub async fn quarantine_media(&self, mxc_uri: &str) -> anyhow::Result<()> {
        self.cli_ok(["quarantine-media", mxc_uri]).await.with_context(|| format!("quarantine-media {mxc_uri}"))?;
        Ok(())
    }

    /// Creates several ordinary users, all with [`PASSWORD`](crate::PASSWORD).
    pub async fn create_users(&self, names: &[&str]) -> anyhow::Result<()> {
        for name in names {
            self.create_user(name, crate::PASSWORD, false).await?;
        }
        Ok(())
    }

    /// A matrix-sdk client logged in as `name`, with an in-memory store (every call is a new
    /// device). Retries are disabled so that a 5xx or a transport error fails the test
    /// at once instead of being retried forever, which is the SDK's default.
    pub async fn client(&self, name: &str, password: &str) -> anyhow::Result<Client> {
        let client = Client::builder()
            .homeserver_url(self.url())
            .request_config(RequestConfig::new().disable_retry().timeout(Duration::from_secs(60)))
            .build()
            .await
            .context("building matrix-sdk client")?;
        client
            .matrix_auth()
            .login_username(name, password)
            .initial_device_display_name("kairan-tests")
            .send()
            .await
            .with_context(|| format!("matrix-sdk login as {name}"))?;
        Ok(client)
    }

    /// A raw API client logged in as `name` (a new device, via `/login`).
    pub async fn api(&self, name: &str, password: &str) -> anyhow::Result<Api> {
        Api::login(&self.url(), name, password).await
    }

    /// A raw API client without an access token.
    pub fn anonymous(&self) -> Api {
        Api::anonymous(&self.url())
    }

    /// Kills the process with SIGKILL (no graceful shutdown) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` sends SIGKILL on Unix.
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Sends SIGTERM and waits up to `within` for the process to exit on its own.
    /// Returns how long it took, or an error if it was still running (then it is killed).
    pub async fn terminate(&mut self, within: Duration) -> anyhow::Result<Duration> {
        let Some(mut child) = self.child.take() else { bail!("the server is not running") };
        let started = Instant::now();
        let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status()?;
        if !status.success() {
            bail!("kill -TERM failed: {status}");
        }
        while started.elapsed() < within {
            if child.try_wait()?.is_some() {
                return Ok(started.elapsed());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        child.kill().ok();
        child.wait().ok();
        bail!("the server did not exit within {within:?} of SIGTERM")
    }

    /// The process ID of the running server (`None` after `kill`), e.g. to read its
    /// `/proc/PID/status`.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running (false after `kill` or a crash).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Starts the server again on the same data directory, database and port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn_and_wait().await
    }

    /// Everything the server has written to stdout and stderr, over all runs.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for run in 1..=self.runs {
            for stream in ["stdout", "stderr"] {
                let path = self.log_path(run, stream);
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                if !text.is_empty() {
                    out.push_str(&format!("----- run {run} {stream} ({}) -----\n{text}\n", path.display()));
                }
            }
        }
        out
    }

    fn log_path(&self, run: u32, stream: &str) -> PathBuf {
        self.dir.path().join(format!("server-{run}.{stream}.log"))
    }

    fn last_stderr(&self) -> String {
        std::fs::read_to_string(self.log_path(self.runs, "stderr")).unwrap_or_default()
    }

    async fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        self.runs += 1;
        let stdout = File::create(self.log_path(self.runs, "stdout"))?;
        let stderr = File::create(self.log_path(self.runs, "stderr"))?;
        let child = Command::new(&self.binary)
            .env_clear()
            .envs(server_env())
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        self.child = Some(child);

        match self.wait_until_ready().await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.kill();
                Err(e.context(format!("server did not become ready; its output:\n{}", self.logs())))
            }
        }
    }

    /// Polls `GET /_matrix/client/versions` until it answers 200, the process exits, or
    /// [`STARTUP_TIMEOUT`] passes.
    async fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let url = format!("{}/_matrix/client/versions", self.url());
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!("kairan-homeserver exited during startup with {status}");
            }
            let last = match http.get(&url).send().await {
                Ok(resp) if resp.status() == reqwest::StatusCode::OK => return Ok(()),
                Ok(resp) => format!("status {}", resp.status()),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                bail!("no 200 from {url} within {STARTUP_TIMEOUT:?} (last: {last})");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("===== kairan-homeserver logs ({}) =====\n{}", self.dir.path().display(), self.logs());
        }
        if let Some(db) = &self.database {
            db.drop_blocking();
        }
        if std::env::var_os("KAIRAN_TEST_KEEP_DIR").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("kept test server directory {}", self.dir.path().display());
        }
    }
}

/// The homeserver binary: `KAIRAN_HOMESERVER_BIN`, or `kairan-homeserver` next to the
/// `deps/` directory the test executable lives in (`target/debug/deps/e2e-…` →
/// `target/debug/kairan-homeserver`). The harness never runs cargo itself; the test
/// command builds the binary first.
fn homeserver_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("KAIRAN_HOMESERVER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let deps = exe.parent().context("test executable has no parent directory")?;
    let path = deps.join("..").join(format!("kairan-homeserver{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        bail!(
            "{} not found: build it first (cargo build -p kairan-homeserver) or set KAIRAN_HOMESERVER_BIN",
            path.display()
        );
    }
    Ok(path)
}

/// The admin CLI binary: `KAIRAN_ADMIN_BIN`, or `kairan-admin` beside the homeserver
/// binary (`target/debug/kairan-admin`); the test command builds every workspace binary.
pub fn admin_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("KAIRAN_ADMIN_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let deps = exe.parent().context("test executable has no parent directory")?;
    let path = deps.join("..").join(format!("kairan-admin{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        bail!("{} not found: build it first (cargo build -p kairan-admin) or set KAIRAN_ADMIN_BIN", path.display());
    }
    Ok(path)
}

/// The environment of server processes: the test's own, less every `KAIRAN_*` variable.
/// The server reads `KAIRAN_*` as configuration overrides and rejects unknown ones, and the
/// harness's own knobs (`KAIRAN_HOMESERVER_BIN`, `KAIRAN_TEST_PG_URL`, ...) share the prefix;
/// besides, a test server's configuration must come from its file alone.
fn server_env() -> impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)> {
    std::env::vars_os().filter(|(key, _)| !key.to_string_lossy().starts_with("KAIRAN_"))
}

/// Asks the OS for a free loopback port.
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A TOML string literal. JSON string escapes are a subset of TOML basic-string escapes.
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serialises")
}

fn render_config(
    options: &ServerOptions,
    dir: &Path,
    port: u16,
    federation_port: Option<u16>,
    database: Option<&TestDatabase>,
) -> String {
    let data_dir = dir.join("data");
    let mut config = String::new();
    let mut line = |s: String| {
        config.push_str(&s);
        config.push('\n');
    };
    line(format!("server_name = {}", toml_string(&options.server_name)));
    line(format!("data_dir = {}", toml_string(&data_dir.to_string_lossy())));
    line(String::new());
    line("[listen]".into());
    line(format!("client = {}", toml_string(&format!("127.0.0.1:{port}"))));
    if let Some(fport) = federation_port {
        line(format!("federation = {}", toml_string(&format!("127.0.0.1:{fport}"))));
    }
    if let Some(mport) = options.metrics_port {
        line(format!("metrics = {}", toml_string(&format!("127.0.0.1:{mport}"))));
    }
    line(String::new());
    line("[database]".into());
    let url = match database {
        Some(db) => db.url().to_owned(),
        None => format!("sqlite://{}", data_dir.join("kairan.db").to_string_lossy()),
    };
    line(format!("url = {}", toml_string(&url)));
    line(String::new());
    line("[registration]".into());
    match &options.registration {
        Registration::Closed => line("mode = \"closed\"".into()),
        Registration::Token(tokens) => {
            line("mode = \"token\"".into());
            let list: Vec<String> = tokens.iter().map(|t| toml_string(t)).collect();
            line(format!("tokens = [{}]", list.join(", ")));
        }
    }
    line(String::new());
    line("[rate_limits]".into());
    line(format!("enabled = {}", options.rate_limits));
    if let Some(max) = options.max_upload_bytes {
        line(String::new());
        line("[media]".into());
        line(format!("max_upload_bytes = {max}"));
    }
    if !options.push_gateways.is_empty() {
        let list: Vec<String> = options.push_gateways.iter().map(|g| toml_string(g)).collect();
        line(String::new());
        line("[push]".into());
        line(format!("gateways = [{}]", list.join(", ")));
    }
    if let Some(archive) = &options.archive_user {
        line(String::new());
        line("[admin]".into());
        line(format!("archive_user = {}", toml_string(archive)));
    }
    if federation_port.is_some() {
        let ca = crate::tls::test_ca();
        let path = |p: &Path| toml_string(&p.to_string_lossy());
        line(String::new());
        line("[federation]".into());
        if !options.self_signed_tls {
            line(format!("tls_certificate = {}", path(&ca.cert_pem)));
            line(format!("tls_private_key = {}", path(&ca.key_pem)));
        }
        line(format!("ca_bundle = {}", path(&ca.ca_pem)));
        line(format!("verify_tls = {}", options.verify_tls));
        let allow = options.federation_allowlist.clone().unwrap_or_else(|| vec!["*".to_owned()]);
        let allow: Vec<String> = allow.iter().map(|s| toml_string(s)).collect();
        line(format!("allowlist = [{}]", allow.join(", ")));
        line("max_retry_interval_secs = 2".into());
        if !options.host_overrides.is_empty() {
            line(String::new());
            line("[federation.host_overrides]".into());
            for (name, target) in &options.host_overrides {
                line(format!("{} = {}", toml_string(name), toml_string(target)));
            }
        }
        if !options.old_verify_keys.is_empty() {
            line(String::new());
            line("[federation.old_verify_keys]".into());
            for (id, key, expired) in &options.old_verify_keys {
                line(format!("{} = {{ key = {}, expired_ts = {expired} }}", toml_string(id), toml_string(key)));
            }
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_renders_every_section() {
        let options = ServerOptions::default().registration_tokens(["secret-token"]).rate_limits(true);
        let config = render_config(&options, Path::new("/tmp/x"), 4242, None, None);
        assert!(config.contains("server_name = \"localhost\""), "{config}");
        assert!(config.contains("data_dir = \"/tmp/x/data\""), "{config}");
        assert!(config.contains("[listen]\nclient = \"127.0.0.1:4242\""), "{config}");
        assert!(config.contains("url = \"sqlite:///tmp/x/data/kairan.db\""), "{config}");
        assert!(config.contains("mode = \"token\"\ntokens = [\"secret-token\"]"), "{config}");
        assert!(config.contains("[rate_limits]\nenabled = true"), "{config}");
        assert!(!config.contains("[media]"), "{config}");
        let config = render_config(&options.clone().max_upload_bytes(4096), Path::new("/tmp/x"), 4242, None, None);
        assert!(config.contains("[media]\nmax_upload_bytes = 4096"), "{config}");
        assert!(!config.contains("[federation]"), "{config}");
        let config = render_config(
            &options.federation_allowlist(["localhost:1"]).host_override("pref.example", "127.0.0.1:2"),
            Path::new("/tmp/x"),
            4242,
            Some(4343),
            None,
        );
        assert!(config.contains("client = \"127.0.0.1:4242\"\nfederation = \"127.0.0.1:4343\""), "{config}");
        assert!(config.contains("allowlist = [\"localhost:1\"]"), "{config}");
        assert!(config.contains("max_retry_interval_secs = 2"), "{config}");
        assert!(config.contains("[federation.host_overrides]\n\"pref.example\" = \"127.0.0.1:2\""), "{config}");
    }
}
