//! Starting, killing and restarting a real `kairan-bridge` process against a [`TestServer`],
//! and running its commands.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;
use tempfile::TempDir;

use crate::{TestServer, pg::TestDatabase};

/// How often the archive is polled while waiting.
const POLL: Duration = Duration::from_millis(200);

/// A `kairan-bridge run` process with its own data directory, archive database and key.
#[derive(Debug)]
pub struct TestBridge {
    binary: PathBuf,
    config_path: PathBuf,
    child: Option<Child>,
    runs: u32,
    database: Option<TestDatabase>,
    database_url: String,
    /// `metrics_listen` on this loopback port, when asked for.
    metrics_port: Option<u16>,
    dir: TempDir,
}

impl TestBridge {
    /// Writes a configuration (archive account `user` with `password` on `server`; the
    /// archive on SQLite, or on a fresh PostgreSQL database) and starts the daemon.
    pub async fn start(server: &TestServer, user: &str, password: &str, postgres: bool) -> anyhow::Result<Self> {
        Self::start_inner(server, user, password, postgres, false).await
    }

    /// Like [`start`](Self::start), with Prometheus metrics (`metrics_listen`) on a free
    /// loopback port; see [`metrics_url`](Self::metrics_url) and [`scrape`](Self::scrape).
    pub async fn start_with_metrics(
        server: &TestServer,
        user: &str,
        password: &str,
        postgres: bool,
    ) -> anyhow::Result<Self> {
        Self::start_inner(server, user, password, postgres, true).await
    }

    async fn start_inner(
        server: &TestServer,
        user: &str,
        password: &str,
        postgres: bool,
        metrics: bool,
    ) -> anyhow::Result<Self> {
        let binary = bridge_binary()?;
        let dir = tempfile::Builder::new().prefix("kairan-bridge-e2e-").tempdir()?;
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, password)?;
        let database = if postgres { Some(TestDatabase::create().await?) } else { None };
        let database_url = match &database {
            Some(db) => db.url().to_owned(),
            None => format!("sqlite://{}", dir.path().join("data").join("archive.db").to_string_lossy()),
        };
        let mut config = format!(
            "homeserver = {}\nuser = {}\npassword_file = {}\ndata_dir = {}\ndatabase = {}\n\
             checkpoint_interval_secs = 2\nsweep_interval_secs = 2\n",
            toml_string(&server.url()),
            toml_string(user),
            toml_string(&password_file.to_string_lossy()),
            toml_string(&dir.path().join("data").to_string_lossy()),
            toml_string(&database_url),
        );
        let metrics_port = if metrics { Some(free_port()?) } else { None };
        if let Some(port) = metrics_port {
            config.push_str(&format!("metrics_listen = \"127.0.0.1:{port}\"\n"));
        }
        let config_path = dir.path().join("bridge.toml");
        std::fs::write(&config_path, config)?;
        let mut bridge = Self { binary, config_path, child: None, runs: 0, database, database_url, metrics_port, dir };
        bridge.spawn()?;
        Ok(bridge)
    }

    /// Spawns `kairan-bridge run` (again).
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.runs += 1;
        let stdout = File::create(self.log_path(self.runs, "stdout"))?;
        let stderr = File::create(self.log_path(self.runs, "stderr"))?;
        let child = Command::new(&self.binary)
            .env_remove("KAIRAN_BRIDGE_CONFIG")
            .env("RUST_LOG", "info,matrix_sdk=warn,matrix_sdk_crypto=warn,matrix_sdk_base=warn")
            .arg("--config")
            .arg(&self.config_path)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// SIGTERM, and wait for a clean exit.
    pub async fn terminate(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        Command::new("kill").arg("-TERM").arg(child.id().to_string()).status()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("kairan-bridge exited with {status}:\n{}", self.logs());
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        child.kill().ok();
        child.wait().ok();
        bail!("kairan-bridge did not stop within 20 s of SIGTERM")
    }

    /// Fails if the daemon has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(child) = &mut self.child
            && let Some(status) = child.try_wait()?
        {
            self.child = None;
            bail!("kairan-bridge exited with {status}:\n{}", self.logs());
        }
        Ok(())
    }

    /// Runs a command on this bridge's configuration; returns the output whatever the status.
    pub async fn cli<I, S>(&self, args: I) -> anyhow::Result<std::process::Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        tokio::process::Command::new(&self.binary)
            .env_remove("KAIRAN_BRIDGE_CONFIG")
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .output()
            .await
            .context("running kairan-bridge")
    }

    /// Runs a command with `--json`, requiring success; returns the parsed output.
    pub async fn json<I, S>(&self, args: I) -> anyhow::Result<Value>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let output = self.cli(args.iter().cloned().chain([std::ffi::OsString::from("--json")])).await?;
        if !output.status.success() {
            bail!(
                "kairan-bridge {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        serde_json::from_slice(&output.stdout).with_context(|| format!("output of {args:?} is not JSON"))
    }

    /// The archive's records of a room (`records --room R`), with payloads.
    pub async fn records(&self, room_id: &str) -> anyhow::Result<Vec<Value>> {
        let v = self.json(["records", "--room", room_id, "--payloads"]).await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// Polls the records of a room until `done` holds, or fails after `within`.
    pub async fn wait_records(
        &mut self,
        room_id: &str,
        what: &str,
        within: Duration,
        mut done: impl FnMut(&[Value]) -> bool,
    ) -> anyhow::Result<Vec<Value>> {
        let deadline = Instant::now() + within;
        loop {
            self.ensure_running()?;
            let records = self.records(room_id).await?;
            if done(&records) {
                return Ok(records);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{what}: not in the archive within {within:?} ({} records of {room_id})\n{}",
                    records.len(),
                    self.logs()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls `status` until `done` holds.
    pub async fn wait_status(
        &mut self,
        what: &str,
        within: Duration,
        mut done: impl FnMut(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            self.ensure_running()?;
            let status = self.json(["status"]).await?;
            if done(&status) {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{what}: not seen within {within:?}; status {status}\n{}", self.logs());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `http://127.0.0.1:PORT/metrics`.
    ///
    /// # Panics
    /// When the bridge was not started with [`start_with_metrics`](Self::start_with_metrics).
    pub fn metrics_url(&self) -> String {
        let port = self.metrics_port.expect("no metrics listener: use TestBridge::start_with_metrics");
        format!("http://127.0.0.1:{port}/metrics")
    }

    /// `GET /metrics`, polled until the daemon answers (it listens once it has logged in)
    /// or `within` passes; the exposition text.
    pub async fn scrape(&mut self, within: Duration) -> anyhow::Result<String> {
        let url = self.metrics_url();
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        let deadline = Instant::now() + within;
        loop {
            self.ensure_running()?;
            let error = match client.get(&url).send().await {
                Ok(response) if response.status().is_success() => return Ok(response.text().await?),
                Ok(response) => format!("answered {}", response.status()),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                bail!("GET {url}: {error} (for {within:?})\n{}", self.logs());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The archive database URL.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// The bridge's data directory (archive.db, attachments/, bridge.key, bridge.key.pub).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The bridge's public key file.
    pub fn public_key_path(&self) -> PathBuf {
        self.data_dir().join("bridge.key.pub")
    }

    /// A scratch directory that goes away with the bridge.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the daemon wrote, over all runs.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for run in 1..=self.runs {
            for stream in ["stdout", "stderr"] {
                let text = std::fs::read_to_string(self.log_path(run, stream)).unwrap_or_default();
                if !text.is_empty() {
                    let tail: String = text
                        .lines()
                        .rev()
                        .take(60)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n");
                    out.push_str(&format!("----- bridge run {run} {stream} (last lines) -----\n{tail}\n"));
                }
            }
        }
        out
    }

    fn log_path(&self, run: u32, stream: &str) -> PathBuf {
        self.dir.path().join(format!("bridge-{run}.{stream}.log"))
    }
}

impl Drop for TestBridge {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("===== kairan-bridge logs =====\n{}", self.logs());
        }
        if let Some(db) = &self.database {
            db.drop_blocking();
        }
        if std::env::var_os("KAIRAN_TEST_KEEP_DIR").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("kept bridge directory {}", self.dir.path().display());
        }
    }
}

/// The bridge binary: `KAIRAN_BRIDGE_BIN`, or `kairan-bridge` beside the homeserver binary.
pub fn bridge_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("KAIRAN_BRIDGE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let deps = exe.parent().context("test executable has no parent directory")?;
    let path = deps.join("..").join(format!("kairan-bridge{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        bail!("{} not found: build it first (cargo build -p kairan-bridge) or set KAIRAN_BRIDGE_BIN", path.display());
    }
    Ok(path)
}

/// A loopback port free right now (the daemon binds it a moment later).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A TOML string literal (JSON string escapes are a subset of TOML's).
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serialises")
}
