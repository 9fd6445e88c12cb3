//! The servers under test: kairan on SQLite or PostgreSQL (started by kairan-tests'
//! [`TestServer`]) and Synapse on PostgreSQL, configured as its documentation recommends
//! for production; plus what the benchmark reads of a running server: its resident
//! memory and the size of its database.

use std::{
    fmt,
    fs::File,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use kairan_tests::{Backend, ServerOptions, TestServer};
use serde_json::Value;
use tempfile::TempDir;

use crate::client::Homeserver;

/// The registration token of kairan servers started by the benchmark.
pub const REGISTRATION_TOKEN: &str = "kairan-bench";

/// Which server a column of the table is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    KairanSqlite,
    KairanPostgres,
    Synapse,
    /// A server started by someone else: `BENCH_EXTERNAL_URL` (its client API) and
    /// `BENCH_EXTERNAL_PID` (the process to measure). It must accept registration with the
    /// token `kairan-bench` or with `m.login.dummy`, and have rate limits off. For
    /// experiments (another configuration, another homeserver); the same server serves
    /// every scenario.
    External,
}

impl Kind {
    pub fn is_kairan(self) -> bool {
        self != Kind::Synapse
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::KairanSqlite => "kairan (SQLite)",
            Kind::KairanPostgres => "kairan (PostgreSQL)",
            Kind::Synapse => "Synapse (PostgreSQL)",
            Kind::External => "external",
        })
    }
}

/// A running server of one [`Kind`], stopped (and its database dropped) on drop.
pub struct Target {
    pub hs: Homeserver,
    pid: u32,
    process: Process,
}

enum Process {
    Kairan(Box<TestServer>),
    Synapse(SynapseProcess),
    External,
}

impl Target {
    /// Starts a fresh server: a new data directory and a new, empty database.
    pub async fn start(kind: Kind) -> anyhow::Result<Self> {
        let http = Homeserver::http_client(None)?;
        match kind {
            Kind::KairanSqlite | Kind::KairanPostgres => {
                let backend = if kind == Kind::KairanSqlite { Backend::Sqlite } else { Backend::Postgres };
                let options = ServerOptions::default()
                    .backend(backend)
                    .registration_tokens([REGISTRATION_TOKEN])
                    .rate_limits(false);
                let server = TestServer::start(options).await?;
                let pid = pid_of_config(server.config_path())?;
                Ok(Self { hs: Homeserver::new(&server.url(), http), pid, process: Process::Kairan(Box::new(server)) })
            }
            Kind::External => {
                let url = std::env::var("BENCH_EXTERNAL_URL").context("BENCH_EXTERNAL_URL is not set")?;
                let pid = std::env::var("BENCH_EXTERNAL_PID").context("BENCH_EXTERNAL_PID is not set")?;
                let pid = pid.parse().context("BENCH_EXTERNAL_PID is not a process ID")?;
                Ok(Self { hs: Homeserver::new(&url, http), pid, process: Process::External })
            }
            Kind::Synapse => {
                let synapse = SynapseProcess::start().await?;
                let pid = synapse.child.as_ref().map(Child::id).context("Synapse is not running")?;
                let hs = Homeserver::new(&format!("http://127.0.0.1:{}", synapse.port), http);
                Ok(Self { hs, pid, process: Process::Synapse(synapse) })
            }
        }
    }

    /// The server's process ID (for Synapse, the Python process).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The size of the server's database in bytes: the SQLite file with its write-ahead
    /// log, or `pg_database_size` of its PostgreSQL database; `None` for an external server.
    pub fn database_bytes(&self) -> anyhow::Result<Option<u64>> {
        let bytes = match &self.process {
            Process::Kairan(server) => {
                let config = std::fs::read_to_string(server.config_path())?;
                let url = config
                    .lines()
                    .find_map(|l| l.strip_prefix("url = "))
                    .context("no database url in the kairan config")?
                    .trim_matches('"');
                if let Some(path) = url.strip_prefix("sqlite://") {
                    let mut total = 0;
                    for suffix in ["", "-wal", "-shm"] {
                        total += std::fs::metadata(format!("{path}{suffix}")).map(|m| m.len()).unwrap_or(0);
                    }
                    total
                } else {
                    let name = url.rsplit('/').next().unwrap_or_default().split('?').next().unwrap_or_default();
                    pg_database_size(name)?
                }
            }
            Process::Synapse(synapse) => pg_database_size(&synapse.database)?,
            Process::External => return Ok(None),
        };
        Ok(Some(bytes))
    }
}

/// Finds the kairan process started with `--config PATH` (kairan-tests keeps its child
/// private, and the benchmark needs the PID only to read `/proc/PID/status`).
fn pid_of_config(config: &Path) -> anyhow::Result<u32> {
    let wanted = config.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.windows(2).any(|w| w[0] == b"--config" && w[1] == wanted.as_bytes()) {
            return Ok(pid);
        }
    }
    bail!("no process runs with --config {wanted}")
}

/// `VmRSS` (current) or `VmHWM` (peak) of a process in bytes, from `/proc/PID/status`.
pub fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What one measured phase cost: the server's peak resident memory, and the CPU time of
/// the server and of the benchmark's own client (which shares the machine's cores).
pub struct Usage {
    pub peak_rss: u64,
    pub server_cpu: Duration,
    pub driver_cpu: Duration,
}

/// Samples a process's resident memory every 50 ms until stopped, keeping the maximum:
/// the peak over one measured phase, which `VmHWM` (the peak since the process started)
/// cannot give once the set-up phase has been heavier than the load. Also notes the CPU
/// time of the server and of this process at start and stop.
pub struct MemorySampler {
    pid: u32,
    cpu_at_start: (Duration, Duration),
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl MemorySampler {
    pub fn start(pid: u32) -> Self {
        let cpu_at_start = (cpu_time(pid), cpu_time(std::process::id()));
        let peak = Arc::new(AtomicU64::new(proc_status_bytes(pid, "VmRSS:").unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (peak, stop) = (peak.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = proc_status_bytes(pid, "VmRSS:") {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        Self { pid, cpu_at_start, peak, stop, task }
    }

    /// Stops sampling and returns the peak memory and the CPU time used since the start.
    pub async fn stop(self) -> Usage {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.ok();
        Usage {
            peak_rss: self.peak.load(Ordering::Relaxed),
            server_cpu: cpu_time(self.pid).saturating_sub(self.cpu_at_start.0),
            driver_cpu: cpu_time(std::process::id()).saturating_sub(self.cpu_at_start.1),
        }
    }
}

/// User plus system CPU time of a process (all its threads), from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return Duration::ZERO };
    // The command name (field 2) may hold spaces; the fields after its ')' are plain.
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; the
    // kernel reports them in USER_HZ, 100 on Linux.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Runs `psql` as the PostgreSQL superuser against the `postgres` database of the local
/// server (`BENCH_PG_HOST`, default 127.0.0.1, trust authentication) and returns its output.
fn psql(sql: &str) -> anyhow::Result<String> {
    let host = std::env::var("BENCH_PG_HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let out = Command::new("psql")
        .args(["-h", &host, "-U", "postgres", "-d", "postgres", "-tAc", sql])
        .output()
        .context("running psql (install the PostgreSQL client)")?;
    if !out.status.success() {
        bail!("psql -c {sql:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn pg_database_size(name: &str) -> anyhow::Result<u64> {
    psql(&format!("SELECT pg_database_size('{name}')"))?.parse().context("pg_database_size")
}

/// The Synapse of the benchmark: the venv of `scripts/synapse-venv.sh` (with its
/// `postgres` extra), a fresh PostgreSQL database, one plain-HTTP listener on loopback for
/// the client API (as kairan's), INFO logging to a file, and rate limits raised so the
/// load is never throttled. Unlike kairan-tests' Synapse (SQLite, TLS, a federation
/// peer), this is the production set-up of Synapse's documentation.
struct SynapseProcess {
    port: u16,
    database: String,
    child: Option<Child>,
    dir: TempDir,
}

/// How long Synapse may take to create its schema in a fresh database and answer.
const SYNAPSE_STARTUP: Duration = Duration::from_secs(180);

impl SynapseProcess {
    async fn start() -> anyhow::Result<Self> {
        let python = synapse_python()?;
        let dir = tempfile::Builder::new().prefix("kairan-bench-synapse-").tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let database = format!("kairan_bench_synapse_{:016x}", rand::random::<u64>());
        // Synapse refuses a database whose collation is not C (its docs give this command).
        psql(&format!("CREATE DATABASE {database} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"))?;
        let mut synapse = Self { port, database, child: None, dir };
        let config = synapse.dir.path().join("homeserver.yaml");
        std::fs::write(&config, synapse_config(port, &synapse.database, synapse.dir.path()))?;
        std::fs::write(synapse.dir.path().join("log.yaml"), synapse_log_config(synapse.dir.path()))?;
        let generated = Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "--generate-keys", "--config-path"])
            .arg(&config)
            .current_dir(synapse.dir.path())
            .output()?;
        if !generated.status.success() {
            bail!("synapse --generate-keys failed: {}", String::from_utf8_lossy(&generated.stderr));
        }
        let child = Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "--config-path"])
            .arg(&config)
            .current_dir(synapse.dir.path())
            .stdin(Stdio::null())
            .stdout(File::create(synapse.dir.path().join("stdout.log"))?)
            .stderr(File::create(synapse.dir.path().join("stderr.log"))?)
            .spawn()
            .context("spawning Synapse")?;
        synapse.child = Some(child);
        synapse.wait_until_ready().await?;
        Ok(synapse)
    }

    async fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let url = format!("http://127.0.0.1:{}/_matrix/client/versions", self.port);
        let deadline = Instant::now() + SYNAPSE_STARTUP;
        loop {
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                bail!("Synapse exited during start-up with {status}; see {}", self.dir.path().display());
            }
            if let Ok(resp) = http.get(&url).send().await
                && resp.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("Synapse did not answer {url} within {SYNAPSE_STARTUP:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for SynapseProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
        if let Err(e) = psql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database)) {
            eprintln!("warning: {e:#}");
        }
        if std::env::var_os("BENCH_KEEP_DIR").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("kept Synapse directory {}", self.dir.path().display());
        }
    }
}

/// The venv's Python: `KAIRAN_SYNAPSE_VENV` or `target/synapse-venv`, as scripts/synapse-venv.sh.
fn synapse_python() -> anyhow::Result<PathBuf> {
    let venv = std::env::var_os("KAIRAN_SYNAPSE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("synapse-venv"));
    let python = venv.join("bin").join("python");
    if !python.exists() {
        bail!("no Synapse venv at {}: run scripts/bench.sh, which installs it", venv.display());
    }
    Ok(python)
}

fn yaml(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

fn synapse_config(port: u16, database: &str, dir: &Path) -> String {
    let path = |name: &str| yaml(&dir.join(name).to_string_lossy());
    let secret = format!("{:032x}", rand::random::<u128>());
    format!(
        r#"# Generated by kairan-bench (bench/src/servers.rs).
server_name: "bench.local"
public_baseurl: "http://127.0.0.1:{port}/"
pid_file: {pid}
report_stats: false
signing_key_path: {key}
log_config: {log}
media_store_path: {media}
# PostgreSQL, as the documentation recommends for anything but a trial.
database:
  name: psycopg2
  args:
    user: postgres
    database: {database}
    host: 127.0.0.1
    port: 5432
    cp_min: 5
    cp_max: 10
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
# A closed network: no key servers, no federation in this set-up.
trusted_key_servers: []
suppress_key_server_warning: true
federation_domain_whitelist: []
enable_registration: true
enable_registration_without_verification: true
registration_shared_secret: "{secret}-r"
macaroon_secret_key: "{secret}-m"
form_secret: "{secret}-f"
url_preview_enabled: false
presence:
  enabled: true
# Rate limits raised far above the load, so that the benchmark measures work, not throttling.
{rate_limits}"#,
        rate_limits = unthrottled(),
        pid = path("homeserver.pid"),
        key = path("signing.key"),
        log = path("log.yaml"),
        media = path("media_store"),
    )
}

/// Synapse's rate limits that the benchmark's load can reach (`rc_*`, nested ones as
/// `section.key`), each set to 100,000 per second.
const RATE_LIMITS: &[&str] = &[
    "rc_message",
    "rc_registration",
    "rc_room_creation",
    "rc_joins_per_room",
    "rc_delayed_event_mgmt",
    "rc_login.address",
    "rc_login.account",
    "rc_login.failed_attempts",
    "rc_joins.local",
    "rc_joins.remote",
    "rc_invites.per_room",
    "rc_invites.per_user",
    "rc_invites.per_issuer",
    "rc_presence.per_user",
];

/// The YAML of [`RATE_LIMITS`].
fn unthrottled() -> String {
    let limit = "{per_second: 100000, burst_count: 100000}";
    let mut yaml = String::new();
    let mut section = "";
    for key in RATE_LIMITS {
        match key.split_once('.') {
            None => yaml.push_str(&format!("{key}: {limit}\n")),
            Some((outer, inner)) => {
                if outer != section {
                    yaml.push_str(&format!("{outer}:\n"));
                    section = outer;
                }
                yaml.push_str(&format!("  {inner}: {limit}\n"));
            }
        }
    }
    yaml
}

/// The log configuration Synapse generates for a production install
/// (`synapse/config/logger.py`): INFO, to a daily-rotated file through a memory buffer
/// that is flushed every 10 records or on a warning; no debug logging.
fn synapse_log_config(dir: &Path) -> String {
    format!(
        r#"version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
handlers:
  file:
    class: logging.handlers.TimedRotatingFileHandler
    formatter: precise
    filename: {file}
    when: midnight
    backupCount: 3
    encoding: utf8
  buffer:
    class: synapse.logging.handlers.PeriodicallyFlushingMemoryHandler
    target: file
    capacity: 10
    flushLevel: 30
    period: 5
loggers:
  synapse.storage.SQL:
    level: INFO
root:
  level: INFO
  handlers: [buffer]
disable_existing_loggers: false
"#,
        file = yaml(&dir.join("homeserver.log").to_string_lossy())
    )
}
