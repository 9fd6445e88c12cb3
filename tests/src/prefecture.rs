//! A whole prefecture on one machine (issue 13): the prefecture's server and N municipal
//! servers, each a real federating `kairan-homeserver` process on loopback (TLS with the
//! [test CA](crate::test_ca), SQLite), the governor on the prefecture's server and one
//! mayor on each municipal server, all in one encrypted room and one unencrypted room.
//!
//! Every server sends at once (bounded concurrency) while municipal servers are killed
//! with SIGKILL and restarted at random; afterwards [`Report`] says, per server, which
//! acknowledged messages it lacks, which sends it refused, whether its room state is the
//! prefecture's, how many forward extremities it kept, how long after the last
//! acknowledged send it had everything, and its resident memory.
//!
//! The encrypted room really is encrypted (`m.room.encryption` is in its state), but no
//! Olm/Megolm session is set up: its messages are `m.room.encrypted` events with
//! Megolm-shaped content (`algorithm`, `sender_key`, `session_id`, `device_id`, base64
//! `ciphertext`) sent over the raw client API. A homeserver never decrypts, so it stores,
//! authorises, federates and serves them exactly as it would real ciphertext; what is left
//! out is client-side crypto, which costs the servers nothing.
//!
//! Run it with `bash scripts/prefecture.sh` (the `prefecture` binary of this crate); a
//! small size runs in the suite (`e2e federation_prefecture`).

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use base64::Engine as _;
use futures::{StreamExt as _, TryStreamExt as _, stream};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use serde_json::{Value, json};
use tokio::{
    sync::{Semaphore, watch},
    task::JoinSet,
};

use crate::{Api, PASSWORD, ServerOptions, TestServer, enc};

/// How long a server may stay unreachable (down time plus restart) before whoever waits
/// on it gives up; a restart that fails ends the run before that.
const UP_TIMEOUT: Duration = Duration::from_secs(180);
/// How long, after the joins, every server may take to list every member of both rooms.
const MEMBERSHIP_DEADLINE: Duration = Duration::from_secs(120);
/// How long, once every server has every message, their room states may take to agree.
const STATE_DEADLINE: Duration = Duration::from_secs(30);
/// Servers started (or users created) at once during set-up.
const SETUP_CONCURRENCY: usize = 4;
/// The long-poll of the mayors' `/sync`: short, so that a tracker notices the end quickly.
const SYNC_TIMEOUT_MS: u64 = 2000;
/// How many refusals (or other notes) of one kind are quoted in the report.
const QUOTED: usize = 5;

/// The size of the scenario and the knobs of its traffic.
#[derive(Clone, Debug)]
pub struct Options {
    /// Servers in all: the prefecture and `servers - 1` municipalities.
    pub servers: usize,
    /// Messages sent in all, spread evenly over the servers, alternately into each room.
    pub messages: usize,
    /// Municipal servers killed (SIGKILL) and restarted during the traffic.
    pub kills: usize,
    /// Seeds which servers are killed, when, and for how long.
    pub seed: u64,
    /// Sends in flight at once, across all servers (each user sends one at a time).
    pub concurrency: usize,
    /// Messages per second across the room, paced evenly over the servers; `None` sends as
    /// fast as the servers acknowledge. Unpaced, the servers accept sends faster than they
    /// can federate them on an overloaded machine, and the backlog shows as convergence time.
    pub rate: Option<f64>,
    /// Mayors joining each room at the same moment. Above 1, joins race each other.
    pub join_concurrency: usize,
    /// How long a killed server stays down before it is started again, in milliseconds:
    /// uniform in `[down_ms.0, down_ms.1]`.
    pub down_ms: (u64, u64),
    /// How long every server may take, after the last acknowledged send, to have every
    /// acknowledged message.
    pub converge_timeout: Duration,
    /// Progress lines on stderr.
    pub progress: bool,
}

impl Default for Options {
    /// 41 servers (a prefecture and 40 municipalities), as issue 13 asks, at a pace the
    /// debug build keeps up with on 2 cores (about 8 minutes; docs/benchmarks.md).
    fn default() -> Self {
        Self {
            servers: 41,
            messages: 200,
            kills: 8,
            seed: 13,
            concurrency: 16,
            rate: Some(0.5),
            join_concurrency: 1,
            down_ms: (1000, 5000),
            converge_timeout: Duration::from_secs(600),
            progress: true,
        }
    }
}

/// What one server ended with.
#[derive(Clone, Debug)]
pub struct ServerReport {
    /// `prefecture` or `muni-NN`.
    pub label: String,
    pub server_name: String,
    /// The server's directory (config, database, logs); kept after the run only with
    /// `KAIRAN_TEST_KEEP_DIR` set.
    pub dir: String,
    /// Sends by this server's user that were acknowledged (200 with an event ID).
    pub acknowledged: usize,
    /// Sends this server refused while it was running: any answer but 200, or no answer.
    pub refused: usize,
    /// The first few refusals, quoted.
    pub refusals: Vec<String>,
    /// Sends that failed because this server was being killed, and were repeated (same
    /// transaction ID) once it was back.
    pub retried_after_kill: usize,
    /// How many times this server was killed.
    pub kills: usize,
    /// Acknowledged messages (of every server) missing from this server's rooms, counted
    /// in `/messages` once the run has converged or given up.
    pub missing: usize,
    /// A few of the missing event IDs.
    pub missing_sample: Vec<String>,
    /// Messages found more than once (by their tag) in this server's rooms.
    pub doubled: usize,
    /// Whether both rooms' current state (`/state`: type, state key, event ID) is the
    /// prefecture's; when not, what differs.
    pub state_difference: Option<String>,
    /// Forward extremities left in the encrypted and the unencrypted room.
    pub extremities: (usize, usize),
    /// Time from the last acknowledged send (of any server) until this server's mayor had
    /// every acknowledged message through `/sync`; `None` if that did not happen in time.
    pub converged: Option<Duration>,
    /// `VmRSS` and `VmHWM` (peak since the last restart) in KiB, at the end.
    pub rss_kib: Option<u64>,
    pub hwm_kib: Option<u64>,
    /// CPU time (user and system) the server's processes used from the start of the
    /// traffic until the end of the run, over all its restarts.
    pub cpu: Duration,
    /// `/sync` requests of the mayor that failed while the server was running.
    pub sync_errors: usize,
    /// Whether, after the joins, this server listed every member of both rooms (within
    /// [`MEMBERSHIP_DEADLINE`]) before the traffic began.
    pub members_at_start: bool,
    /// ERROR and WARN lines of the server's logs (count, and the last few).
    pub log_problems: (usize, Vec<String>),
}

/// One kill and restart.
#[derive(Clone, Debug)]
pub struct Kill {
    pub server: String,
    /// Acknowledged sends (of all servers) when it was killed.
    pub at_acknowledged: usize,
    pub down: Duration,
    /// How long the restart took until the server answered `/versions`.
    pub restart: Duration,
}

/// Everything the run measured.
#[derive(Clone, Debug)]
pub struct Report {
    pub options: Options,
    pub servers: Vec<ServerReport>,
    /// From the first process spawned until the traffic began.
    pub setup: Duration,
    /// The parts of `setup`: servers started, accounts and logins, rooms and joins,
    /// membership known everywhere.
    pub setup_parts: [Duration; 4],
    /// From the first send until the last acknowledged one.
    pub traffic: Duration,
    pub kills: Vec<Kill>,
    /// Send latency (request to acknowledgement) of acknowledged sends: p50, p99, max.
    pub latency: [Duration; 3],
    /// Time from the last acknowledged send until every server had every message.
    pub converged: Option<Duration>,
    /// Wall time of the whole run.
    pub total: Duration,
}

impl Report {
    pub fn acknowledged(&self) -> usize {
        self.servers.iter().map(|s| s.acknowledged).sum()
    }

    /// Every must-be that failed, one line each; empty when the run passed.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.servers {
            if s.missing > 0 {
                out.push(format!("{} ({}): {} acknowledged messages missing", s.label, s.server_name, s.missing));
            }
            if s.refused > 0 {
                out.push(format!("{} ({}): {} sends refused: {:?}", s.label, s.server_name, s.refused, s.refusals));
            }
            if let Some(diff) = &s.state_difference {
                out.push(format!("{} ({}): room state differs from the prefecture's: {diff}", s.label, s.server_name));
            }
            if s.doubled > 0 {
                out.push(format!("{} ({}): {} messages doubled", s.label, s.server_name, s.doubled));
            }
        }
        if self.converged.is_none() {
            out.push(format!(
                "not every server had every message within {:?} of the last send",
                self.options.converge_timeout
            ));
        }
        if self.kills.len() < self.options.kills {
            out.push(format!("only {} of {} kills happened during the traffic", self.kills.len(), self.options.kills));
        }
        out
    }

    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".to_owned(), |k| format!("{:.0}", k as f64 / 1024.0))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<11} {:<16} {:>5} {:>7} {:>7} {:>5} {:>7} {:>7} {:>5} {:>11} {:>9} {:>7} {:>7} {:>7}",
            "server",
            "name",
            "sent",
            "refused",
            "retried",
            "kills",
            "missing",
            "doubled",
            "state",
            "extremities",
            "converged",
            "rss MiB",
            "hwm MiB",
            "cpu s"
        )?;
        for s in &self.servers {
            writeln!(
                f,
                "{:<11} {:<16} {:>5} {:>7} {:>7} {:>5} {:>7} {:>7} {:>5} {:>11} {:>9} {:>7} {:>7} {:>7.0}",
                s.label,
                s.server_name,
                s.acknowledged,
                s.refused,
                s.retried_after_kill,
                s.kills,
                s.missing,
                s.doubled,
                if s.state_difference.is_none() { "same" } else { "DIFF" },
                format!("{}+{}", s.extremities.0, s.extremities.1),
                s.converged.map_or("never".to_owned(), secs),
                mib(s.rss_kib),
                mib(s.hwm_kib),
                s.cpu.as_secs_f64(),
            )?;
        }
        let acknowledged = self.acknowledged();
        let missing: usize = self.servers.iter().map(|s| s.missing).sum();
        let refused: usize = self.servers.iter().map(|s| s.refused).sum();
        let rss: u64 = self.servers.iter().filter_map(|s| s.rss_kib).sum();
        let max_rss = self.servers.iter().filter_map(|s| s.rss_kib).max();
        let extremities: Vec<usize> = self.servers.iter().map(|s| s.extremities.0 + s.extremities.1).collect();
        let [p50, p99, max] = self.latency;
        let [started, accounts, rooms, members] = self.setup_parts;
        let cpu: f64 = self.servers.iter().map(|s| s.cpu.as_secs_f64()).sum();
        let per_event = cpu * 1000.0 / (acknowledged.max(1) * self.servers.len()) as f64;
        writeln!(
            f,
            "total: {} servers; setup {} (servers {}, accounts {}, rooms and joins {}, membership {}); \
             {acknowledged} of {} messages sent in {} ({:.1}/s; latency p50 {}, p99 {}, max {}); \
             {} kills; {missing} missing; {refused} refused; {} of {} servers with the prefecture's state; \
             extremities {}–{} per server; converged {} after the last send; \
             memory {:.2} GiB in all (VmRSS; largest {} MiB); \
             server CPU {cpu:.0} s from the first send to the end ({per_event:.0} ms per message per server); run {}",
            self.servers.len(),
            secs(self.setup),
            secs(started),
            secs(accounts),
            secs(rooms),
            secs(members),
            self.options.messages,
            secs(self.traffic),
            acknowledged as f64 / self.traffic.as_secs_f64().max(0.001),
            secs(p50),
            secs(p99),
            secs(max),
            self.kills.len(),
            self.servers.iter().filter(|s| s.state_difference.is_none()).count(),
            self.servers.len(),
            extremities.iter().min().unwrap_or(&0),
            extremities.iter().max().unwrap_or(&0),
            self.converged.map_or("never".to_owned(), secs),
            rss as f64 / 1024.0 / 1024.0,
            mib(max_rss),
            secs(self.total),
        )?;
        for k in &self.kills {
            writeln!(
                f,
                "kill: {} at {} acknowledged, down {}, restarted in {}",
                k.server,
                k.at_acknowledged,
                secs(k.down),
                secs(k.restart)
            )?;
        }
        // Notes on the first few servers only: at 41 servers that fail alike, the rest is noise.
        let mut quoted = 0;
        for s in &self.servers {
            if !s.members_at_start {
                writeln!(f, "note: {} did not list every member of both rooms before the traffic", s.label)?;
            }
            if s.sync_errors > 0 {
                writeln!(f, "note: {}: {} /sync errors while running", s.label, s.sync_errors)?;
            }
            let failing = s.missing > 0 || s.refused > 0 || s.state_difference.is_some() || s.converged.is_none();
            if !failing || quoted >= QUOTED {
                continue;
            }
            quoted += 1;
            if !s.missing_sample.is_empty() {
                writeln!(f, "note: {} lacks e.g. {:?}", s.label, s.missing_sample)?;
            }
            if s.log_problems.0 > 0 {
                writeln!(
                    f,
                    "note: {} ({}) logged {} ERROR/WARN lines, most of all:",
                    s.label, s.dir, s.log_problems.0
                )?;
                for line in &s.log_problems.1 {
                    writeln!(f, "    {line}")?;
                }
            }
        }
        let failures = self.failures();
        if failures.is_empty() {
            write!(f, "PASS: nothing missing, nothing refused, every server with the prefecture's state")
        } else {
            for failure in &failures {
                writeln!(f, "FAIL: {failure}")?;
            }
            write!(f, "FAIL: {} must-be checks failed", failures.len())
        }
    }
}

/// Whether a server is up, and how many times it has been killed: a request that fails
/// after the epoch moved (or while down) failed because of the kill.
#[derive(Clone, Copy, Debug)]
struct Live {
    epoch: u64,
    up: bool,
}

/// What the senders and the trackers of one server share with the run.
struct Node {
    label: String,
    /// The governor (prefecture) or the mayor (municipality).
    api: Api,
    live: watch::Sender<Live>,
    /// Event IDs of both rooms the mayor's `/sync` has brought, with when.
    seen: Mutex<HashMap<String, Instant>>,
    sends: Mutex<Sends>,
    sync_errors: AtomicUsize,
    /// Clock ticks of CPU used since the traffic began: minus the reading at its start,
    /// plus each killed process's last reading, plus the final reading.
    cpu_ticks: AtomicI64,
}

#[derive(Default)]
struct Sends {
    /// Acknowledged event IDs, with when.
    acknowledged: Vec<(String, Instant)>,
    latencies: Vec<Duration>,
    refused: Vec<String>,
    retried_after_kill: usize,
}

impl Node {
    /// Waits until the server is up (it may be between a kill and its restart).
    async fn wait_up(&self) -> anyhow::Result<Live> {
        let mut rx = self.live.subscribe();
        let live = tokio::time::timeout(UP_TIMEOUT, rx.wait_for(|l| l.up))
            .await
            .with_context(|| format!("{} not back within {UP_TIMEOUT:?}", self.label))?
            .context("liveness channel closed")?;
        Ok(*live)
    }

    /// Whether the server was killed since `before` was read.
    fn killed_since(&self, before: Live) -> bool {
        let now = *self.live.borrow();
        now.epoch != before.epoch || !now.up
    }

    fn mark_seen(&self, events: &Value) {
        let now = Instant::now();
        let mut seen = self.seen.lock().expect("seen lock");
        for id in events.as_array().into_iter().flatten().filter_map(|e| e["event_id"].as_str()) {
            seen.entry(id.to_owned()).or_insert(now);
        }
    }
}

fn progress(options: &Options, line: &str) {
    if options.progress {
        eprintln!("prefecture: {line}");
    }
}

/// Runs the scenario. An `Err` means the harness could not carry it out (a server that did
/// not start or restart, a join refused); what kairan got wrong during the traffic is in
/// the [`Report`]'s [`failures`](Report::failures).
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    ensure!(options.servers >= 2, "a prefecture needs at least one municipality (--servers 2 or more)");
    ensure!(options.concurrency >= 1 && options.join_concurrency >= 1, "concurrency must be at least 1");
    ensure!(options.down_ms.0 <= options.down_ms.1, "down time: the minimum is above the maximum");
    ensure!(options.rate.is_none_or(|r| r > 0.0), "the rate must be above 0");
    let run_started = Instant::now();
    let mut rng = StdRng::seed_from_u64(options.seed);

    // Set-up: the servers, the accounts, the two rooms and the joins.
    let mut servers: Vec<TestServer> = stream::iter(0..options.servers)
        .map(|_| TestServer::start(ServerOptions::default().federation()))
        .buffered(SETUP_CONCURRENCY)
        .try_collect()
        .await
        .context("starting the servers")?;
    let names: HashSet<&str> = servers.iter().map(TestServer::server_name).collect();
    ensure!(names.len() == servers.len(), "server names are not distinct");
    let started = run_started.elapsed();
    progress(options, &format!("{} servers started in {}", servers.len(), secs(started)));

    let apis: Vec<Api> = stream::iter(servers.iter().enumerate())
        .map(|(i, server)| async move {
            let user = if i == 0 { "governor" } else { "mayor" };
            server.create_user(user, PASSWORD, false).await?;
            server.api(user, PASSWORD).await
        })
        .buffered(SETUP_CONCURRENCY)
        .try_collect()
        .await
        .context("creating the governor and the mayors")?;
    let accounts = run_started.elapsed() - started;
    progress(options, &format!("governor and {} mayors logged in", apis.len() - 1));

    let rooms = create_rooms(&apis, servers[0].server_name(), options).await?;
    let joined = run_started.elapsed() - started - accounts;
    progress(options, &format!("{} mayors joined both rooms in {}", apis.len() - 1, secs(joined)));

    let members_at_start = wait_members(&apis, &rooms).await?;
    let members = run_started.elapsed() - started - accounts - joined;
    let missing_members = members_at_start.iter().filter(|ok| !**ok).count();
    progress(
        options,
        &format!(
            "membership: {} of {} servers list every member of both rooms ({})",
            apis.len() - missing_members,
            apis.len(),
            secs(members)
        ),
    );

    // Each mayor's sync position before the traffic: where its tracker starts and where
    // the final count of its rooms stops paging back.
    let filter = sync_filter(&rooms);
    let mut since = Vec::new();
    for api in &apis {
        let path = format!("/_matrix/client/v3/sync?timeout=0&filter={}", enc(&filter));
        let body = api.get(&path).await?.ok().with_context(|| format!("initial sync of {}", api.me()))?;
        since.push(body["next_batch"].as_str().context("sync without next_batch")?.to_owned());
    }
    let setup = run_started.elapsed();
    progress(options, &format!("set-up done in {}; traffic begins", secs(setup)));

    let nodes: Vec<Arc<Node>> = apis
        .iter()
        .enumerate()
        .map(|(i, api)| {
            Arc::new(Node {
                label: if i == 0 { "prefecture".to_owned() } else { format!("muni-{i:02}") },
                api: api.clone(),
                live: watch::Sender::new(Live { epoch: 0, up: true }),
                seen: Mutex::new(HashMap::new()),
                sends: Mutex::new(Sends::default()),
                sync_errors: AtomicUsize::new(0),
                cpu_ticks: AtomicI64::new(0),
            })
        })
        .collect();

    // The trackers: each mayor syncs throughout, as a client would, so that the moment
    // each server has each message is known.
    let stop = Arc::new(AtomicBool::new(false));
    let mut trackers = JoinSet::new();
    for (node, since) in nodes.iter().zip(&since) {
        trackers.spawn(track(node.clone(), rooms.clone(), since.clone(), filter.clone(), stop.clone()));
    }

    // The traffic: one sender per server, each sending its share one after the other.
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let permits = Arc::new(Semaphore::new(options.concurrency));
    let mut senders = JoinSet::new();
    let traffic_started = Instant::now();
    for (i, node) in nodes.iter().enumerate() {
        let share = options.messages / nodes.len() + usize::from(i < options.messages % nodes.len());
        // Paced, message `k` of server `i` is due at (k × servers + i) / rate.
        let pace = options.rate.map(|rate| Pace { start: traffic_started, rate, servers: nodes.len() });
        let (node, rooms, permits, acknowledged) = (node.clone(), rooms.clone(), permits.clone(), acknowledged.clone());
        senders.spawn(send_share(node, i, share, rooms, permits, acknowledged, pace));
    }
    // Kills at random points of the traffic (by acknowledged sends), one in each of
    // `kills` equal slots of its middle (5 % to 85 %), so that a killed server has traffic
    // to miss and to catch up on, and the kills do not pile up.
    let (lo, hi) = (options.messages / 20, options.messages.saturating_mul(17) / 20);
    let slot = (hi - lo) as f64 / options.kills.max(1) as f64;
    let thresholds: Vec<usize> =
        (0..options.kills).map(|k| lo + (slot * (k as f64 + rng.gen_range(0.0..1.0))) as usize).collect();

    for (server, node) in servers.iter().zip(&nodes) {
        node.cpu_ticks.fetch_sub(server.pid().map_or(0, cpu_ticks), Ordering::SeqCst);
    }
    let done = AtomicBool::new(false);
    let sending = async {
        while let Some(result) = senders.join_next().await {
            result.context("a sender panicked")??;
        }
        done.store(true, Ordering::SeqCst);
        anyhow::Ok(())
    };
    let killing = kill_during_traffic(&mut servers, &nodes, &thresholds, &mut rng, options, &acknowledged, &done);
    let reporting = async {
        let mut last = Instant::now();
        while !done.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if last.elapsed() >= Duration::from_secs(10) {
                last = Instant::now();
                let refused: usize = nodes.iter().map(|n| n.sends.lock().expect("sends").refused.len()).sum();
                let n = acknowledged.load(Ordering::SeqCst);
                let rate = n as f64 / traffic_started.elapsed().as_secs_f64();
                progress(options, &format!("{n}/{} acknowledged ({rate:.1}/s), {refused} refused", options.messages));
            }
        }
        anyhow::Ok(())
    };
    let ((), kills, ()) = tokio::try_join!(sending, killing, reporting)?;

    // The traffic is over: every acknowledged message must reach every server.
    let mut all_acknowledged: HashMap<String, Instant> = HashMap::new();
    let mut latencies = Vec::new();
    for node in &nodes {
        let sends = node.sends.lock().expect("sends");
        all_acknowledged.extend(sends.acknowledged.iter().cloned());
        latencies.extend(sends.latencies.iter().copied());
    }
    let last_send = all_acknowledged.values().copied().max().unwrap_or(traffic_started);
    let traffic = last_send.duration_since(traffic_started);
    progress(
        options,
        &format!(
            "{} sends acknowledged in {}; {} kills; converging",
            all_acknowledged.len(),
            secs(traffic),
            kills.len()
        ),
    );
    let converged = converge(&nodes, &all_acknowledged, last_send, options).await;
    stop.store(true, Ordering::SeqCst);
    while let Some(result) = trackers.join_next().await {
        result.context("a tracker panicked")?;
    }

    // The final count, through each mayor's /messages, and the state, the extremities and
    // the memory of each server.
    progress(options, "counting every server's rooms");
    let counts: Vec<(usize, Vec<String>, usize)> = stream::iter(nodes.iter().zip(&since))
        .map(|(node, since)| count_missing(&node.api, &rooms, since, &all_acknowledged))
        .buffered(SETUP_CONCURRENCY)
        .try_collect()
        .await?;
    let differences = compare_states(&apis, &rooms).await?;
    let mut reports = Vec::new();
    for (i, (server, node)) in servers.iter().zip(&nodes).enumerate() {
        let extremities = extremities(server, &rooms).await?;
        let sends = node.sends.lock().expect("sends");
        let (missing, missing_sample, doubled) = counts[i].clone();
        let (rss_kib, hwm_kib) = server.pid().map(memory).unwrap_or((None, None));
        let ticks = node.cpu_ticks.load(Ordering::SeqCst) + server.pid().map_or(0, cpu_ticks);
        let cpu = Duration::from_secs_f64(ticks.max(0) as f64 / CLOCK_TICKS_PER_SEC);
        reports.push(ServerReport {
            label: node.label.clone(),
            server_name: server.server_name().to_owned(),
            dir: server.dir().display().to_string(),
            acknowledged: sends.acknowledged.len(),
            refused: sends.refused.len(),
            refusals: sends.refused.iter().take(QUOTED).cloned().collect(),
            retried_after_kill: sends.retried_after_kill,
            kills: kills.iter().filter(|k| k.server == node.label).count(),
            missing,
            missing_sample,
            doubled,
            state_difference: differences[i].clone(),
            extremities,
            converged: converged[i],
            rss_kib,
            hwm_kib,
            cpu,
            sync_errors: node.sync_errors.load(Ordering::SeqCst),
            members_at_start: members_at_start[i],
            log_problems: log_problems(server),
        });
    }
    latencies.sort_unstable();
    let pick = |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)));
    let latency = [pick(0.5), pick(0.99), latencies.last()].map(|d| d.copied().unwrap_or_default());
    let all_converged =
        converged.iter().copied().collect::<Option<Vec<Duration>>>().map(|c| c.into_iter().max().unwrap_or_default());
    Ok(Report {
        options: options.clone(),
        servers: reports,
        setup,
        setup_parts: [started, accounts, joined, members],
        traffic,
        kills,
        latency,
        converged: all_converged,
        total: run_started.elapsed(),
    })
}

/// The governor creates both rooms inviting every mayor (invites go to each municipal
/// server over federation before `createRoom` answers); the mayors join through the
/// prefecture's server, `options.join_concurrency` at a time per room, both rooms at once.
async fn create_rooms(apis: &[Api], prefecture: &str, options: &Options) -> anyhow::Result<[String; 2]> {
    let governor = &apis[0];
    let invite: Vec<&str> = apis[1..].iter().map(Api::me).collect();
    let encrypted = governor
        .create_room(&json!({
            "preset": "private_chat",
            "name": "Disaster response (governor and mayors, encrypted)",
            "invite": invite,
            "initial_state": [{
                "type": "m.room.encryption",
                "state_key": "",
                "content": { "algorithm": "m.megolm.v1.aes-sha2" },
            }],
        }))
        .await
        .context("the governor creates the encrypted room")?;
    let plain = governor
        .create_room(&json!({
            "preset": "private_chat",
            "name": "Prefectural bulletin (governor and mayors)",
            "invite": invite,
        }))
        .await
        .context("the governor creates the unencrypted room")?;
    let join_all = |room: String| async move {
        stream::iter(&apis[1..])
            .map(|mayor| {
                let room = room.clone();
                async move {
                    let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(&room), enc(prefecture));
                    let response = mayor.post(&path, &json!({})).await?;
                    ensure!(
                        response.status == 200,
                        "{} joining {room}: {} {}",
                        mayor.me(),
                        response.status,
                        response.text
                    );
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(options.join_concurrency)
            .try_collect::<Vec<()>>()
            .await
    };
    tokio::try_join!(join_all(encrypted.clone()), join_all(plain.clone()))?;
    Ok([encrypted, plain])
}

/// Waits (at most [`MEMBERSHIP_DEADLINE`]) until every server lists every user as a member
/// of both rooms; returns, per server, whether it did. A server that does not is noted in
/// the report, and the traffic goes ahead: later events carry the joins it lacks.
async fn wait_members(apis: &[Api], rooms: &[String; 2]) -> anyhow::Result<Vec<bool>> {
    let everyone: Vec<String> = {
        let mut users: Vec<String> = apis.iter().map(|a| a.me().to_owned()).collect();
        users.sort();
        users
    };
    let mut complete = vec![false; apis.len()];
    let until = Instant::now() + MEMBERSHIP_DEADLINE;
    loop {
        for (i, api) in apis.iter().enumerate() {
            if complete[i] {
                continue;
            }
            let mut all = true;
            for room in rooms {
                // A server that does not (yet) count its own user as joined answers 403.
                let path = format!("/_matrix/client/v3/rooms/{}/joined_members", enc(room));
                let response = api.get(&path).await?;
                let mut members: Vec<&String> =
                    response.body["joined"].as_object().map(|j| j.keys().collect()).unwrap_or_default();
                members.sort();
                all &= response.status == 200 && members.iter().copied().eq(everyone.iter());
            }
            complete[i] = all;
        }
        if complete.iter().all(|c| *c) || Instant::now() >= until {
            return Ok(complete);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The mayors' sync filter: the two rooms, long timelines (so that a sync is rarely cut
/// short), nothing else.
fn sync_filter(rooms: &[String; 2]) -> String {
    json!({
        "presence": { "not_types": ["*"] },
        "account_data": { "not_types": ["*"] },
        "room": {
            "rooms": rooms,
            "timeline": { "limit": 1000 },
            "state": { "lazy_load_members": true },
            "ephemeral": { "not_types": ["*"] },
            "account_data": { "not_types": ["*"] },
        },
    })
    .to_string()
}

/// The content of message `i` of server `index` (its tag: `p{index}-{i}`): even messages of
/// even servers, and odd ones of odd servers, go to the encrypted room.
fn message(index: usize, i: usize, rooms: &[String; 2], device_id: &str) -> (String, String, Value) {
    let tag = format!("p{index}-{i}");
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
    if (index + i).is_multiple_of(2) {
        // Opaque to the server, like real ciphertext; the tag sits in front of random
        // padding so that the final count can tell messages apart.
        let mut plaintext = tag.clone().into_bytes();
        plaintext.push(0);
        plaintext.extend(rand::random::<[u8; 32]>());
        plaintext.extend(rand::random::<[u8; 32]>());
        let content = json!({
            "algorithm": "m.megolm.v1.aes-sha2",
            "sender_key": b64(&rand::random::<[u8; 32]>()),
            "session_id": b64(&[index as u8; 32]),
            "device_id": device_id,
            "ciphertext": b64(&plaintext),
        });
        (rooms[0].clone(), "m.room.encrypted".to_owned(), content)
    } else {
        let content = json!({ "msgtype": "m.text", "body": format!("{tag}: situation report, all clear") });
        (rooms[1].clone(), "m.room.message".to_owned(), content)
    }
}

/// The tag of a message [`message`] made, from the event as a server serves it.
fn tag_of(event: &Value) -> Option<String> {
    let content = &event["content"];
    match event["type"].as_str()? {
        "m.room.message" => Some(content["body"].as_str()?.split_once(':')?.0.to_owned()),
        "m.room.encrypted" => {
            let bytes =
                base64::engine::general_purpose::STANDARD_NO_PAD.decode(content["ciphertext"].as_str()?).ok()?;
            let end = bytes.iter().position(|b| *b == 0)?;
            String::from_utf8(bytes[..end].to_vec()).ok()
        }
        _ => None,
    }
}

/// When paced sends are due.
struct Pace {
    start: Instant,
    rate: f64,
    servers: usize,
}

/// One server's user sends its `share` of messages, one at a time (as a client does),
/// holding one of the run's `permits` while a request is in flight. A send that fails
/// because the server is being killed is repeated with the same transaction ID once the
/// server is back (the server's transaction cache makes that idempotent); any other
/// failure is a refusal, and the user goes on with the next message.
async fn send_share(
    node: Arc<Node>,
    index: usize,
    share: usize,
    rooms: [String; 2],
    permits: Arc<Semaphore>,
    acknowledged: Arc<AtomicUsize>,
    pace: Option<Pace>,
) -> anyhow::Result<()> {
    let device_id = node.api.device_id.clone().unwrap_or_default();
    for i in 0..share {
        if let Some(pace) = &pace {
            let due = (i * pace.servers + index) as f64 / pace.rate;
            tokio::time::sleep_until((pace.start + Duration::from_secs_f64(due)).into()).await;
        }
        let (room, event_type, content) = message(index, i, &rooms, &device_id);
        let path = format!("/_matrix/client/v3/rooms/{}/send/{event_type}/prefecture-{index}-{i}", enc(&room));
        loop {
            let live = node.wait_up().await?;
            let permit = permits.acquire().await?;
            let sent_at = Instant::now();
            let result = node.api.put(&path, &content).await;
            let answered_at = Instant::now();
            drop(permit);
            let killed = node.killed_since(live);
            let mut sends = node.sends.lock().expect("sends");
            match result {
                Ok(r) if r.status == 200 && r.body["event_id"].is_string() => {
                    let id = r.body["event_id"].as_str().unwrap_or_default().to_owned();
                    sends.acknowledged.push((id, answered_at));
                    sends.latencies.push(answered_at - sent_at);
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                }
                Ok(r) if killed && r.status >= 500 => {
                    sends.retried_after_kill += 1;
                    continue;
                }
                Err(_) if killed => {
                    sends.retried_after_kill += 1;
                    continue;
                }
                Ok(r) => {
                    let text: String = r.text.chars().take(300).collect();
                    sends.refused.push(format!("message {i}: {} {text}", r.status));
                }
                Err(e) => sends.refused.push(format!("message {i}: no answer: {e:#}")),
            }
            break;
        }
    }
    Ok(())
}

/// A mayor's (or the governor's) client: incremental `/sync` on both rooms until `stop`,
/// marking when each event arrived. A timeline cut short (`limited`) is filled from
/// `/messages` back to the previous position, as a client fills a gap. While the server is
/// down the tracker waits for it; errors of a running server are counted.
async fn track(node: Arc<Node>, rooms: [String; 2], mut since: String, filter: String, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        let Ok(live) = node.wait_up().await else { continue };
        let path =
            format!("/_matrix/client/v3/sync?timeout={SYNC_TIMEOUT_MS}&filter={}&since={}", enc(&filter), enc(&since));
        let result = async {
            let body = node.api.get(&path).await?.ok()?;
            for room in &rooms {
                let timeline = &body["rooms"]["join"][room]["timeline"];
                node.mark_seen(&timeline["events"]);
                if timeline["limited"] == true {
                    let from = timeline["prev_batch"].as_str().context("a limited timeline without prev_batch")?;
                    for event in page_back(&node.api, room, Some(from), &since).await? {
                        node.mark_seen(&json!([event]));
                    }
                }
            }
            anyhow::Ok(body["next_batch"].as_str().context("sync without next_batch")?.to_owned())
        }
        .await;
        match result {
            Ok(next) => since = next,
            Err(_) if node.killed_since(live) => {}
            Err(_) => {
                node.sync_errors.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// The events of `room` from `from` (or from the end) back to `to`, newest first, through
/// `/messages`. With a `to`, the server pages only what it holds: it backfills from other
/// servers only when paging past the start without one.
async fn page_back(api: &Api, room: &str, from: Option<&str>, to: &str) -> anyhow::Result<Vec<Value>> {
    let mut events = Vec::new();
    let mut from = from.map(str::to_owned);
    loop {
        let mut path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000&to={}", enc(room), enc(to));
        if let Some(from) = &from {
            path.push_str(&format!("&from={}", enc(from)));
        }
        let body = api.get(&path).await?.ok().with_context(|| format!("GET {path}"))?;
        let chunk = body["chunk"].as_array().with_context(|| format!("/messages without chunk: {body}"))?;
        events.extend(chunk.iter().cloned());
        // A page may be empty after visibility filtering and still have an `end`; only
        // no `end` (or no progress) is the end.
        match body["end"].as_str() {
            Some(end) if from.as_deref() != Some(end) => from = Some(end.to_owned()),
            _ => return Ok(events),
        }
    }
}

/// Kills municipal servers at random (seeded) when the acknowledged sends pass each
/// threshold, and starts each again after a random down time; stops early if the traffic
/// ends first. One server is down at a time.
async fn kill_during_traffic(
    servers: &mut [TestServer],
    nodes: &[Arc<Node>],
    thresholds: &[usize],
    rng: &mut StdRng,
    options: &Options,
    acknowledged: &AtomicUsize,
    done: &AtomicBool,
) -> anyhow::Result<Vec<Kill>> {
    let mut kills: Vec<Kill> = Vec::new();
    let mut last_victim = None;
    for &threshold in thresholds {
        while acknowledged.load(Ordering::SeqCst) < threshold {
            if done.load(Ordering::SeqCst) {
                return Ok(kills);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Never the same server twice in a row (when there is a choice), so that a small
        // run's kills still hit different servers.
        let victim = loop {
            let victim = rng.gen_range(1..servers.len());
            if servers.len() <= 2 || last_victim != Some(victim) {
                break victim;
            }
        };
        last_victim = Some(victim);
        let down = Duration::from_millis(rng.gen_range(options.down_ms.0..=options.down_ms.1));
        let at_acknowledged = acknowledged.load(Ordering::SeqCst);
        // Down first, then the kill: a request that fails from here on failed because of it.
        nodes[victim].live.send_modify(|l| {
            l.epoch += 1;
            l.up = false;
        });
        let ticks = servers[victim].pid().map_or(0, cpu_ticks);
        servers[victim].kill();
        nodes[victim].cpu_ticks.fetch_add(ticks, Ordering::SeqCst);
        progress(
            options,
            &format!("killed {} at {at_acknowledged} acknowledged, down for {}", nodes[victim].label, secs(down)),
        );
        tokio::time::sleep(down).await;
        let restarting = Instant::now();
        servers[victim].restart().await.with_context(|| format!("restarting {}", nodes[victim].label))?;
        let restart = restarting.elapsed();
        nodes[victim].live.send_modify(|l| l.up = true);
        kills.push(Kill { server: nodes[victim].label.clone(), at_acknowledged, down, restart });
    }
    Ok(kills)
}

/// Waits until every node's tracker has seen every acknowledged event, or the timeout;
/// returns per node the time from the last send until it had the last of them.
async fn converge(
    nodes: &[Arc<Node>],
    acknowledged: &HashMap<String, Instant>,
    last_send: Instant,
    options: &Options,
) -> Vec<Option<Duration>> {
    let mut converged: Vec<Option<Duration>> = vec![None; nodes.len()];
    let until = Instant::now() + options.converge_timeout;
    let mut last_progress = Instant::now();
    loop {
        let mut lacking = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            if converged[i].is_some() {
                continue;
            }
            let seen = node.seen.lock().expect("seen lock");
            let missing = acknowledged.keys().filter(|id| !seen.contains_key(*id)).count();
            if missing == 0 {
                let last = acknowledged.keys().filter_map(|id| seen.get(id)).max().copied().unwrap_or(last_send);
                converged[i] = Some(last.saturating_duration_since(last_send));
            } else {
                lacking.push(format!("{} lacks {missing}", node.label));
            }
        }
        if lacking.is_empty() || Instant::now() >= until {
            return converged;
        }
        if last_progress.elapsed() >= Duration::from_secs(10) {
            last_progress = Instant::now();
            let shown: Vec<&String> = lacking.iter().take(8).collect();
            progress(options, &format!("{} servers still lacking messages: {shown:?}", lacking.len()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Acknowledged messages missing from a mayor's two rooms (with a few of their IDs), and
/// messages present more than once, paging `/messages` from the end back to where the
/// traffic began.
async fn count_missing(
    api: &Api,
    rooms: &[String; 2],
    since: &str,
    acknowledged: &HashMap<String, Instant>,
) -> anyhow::Result<(usize, Vec<String>, usize)> {
    let mut present = HashSet::new();
    let mut tags: HashMap<String, usize> = HashMap::new();
    for room in rooms {
        for event in page_back(api, room, None, since).await? {
            if let Some(tag) = tag_of(&event) {
                *tags.entry(tag).or_default() += 1;
            }
            if let Some(id) = event["event_id"].as_str() {
                present.insert(id.to_owned());
            }
        }
    }
    let mut missing: Vec<String> = acknowledged.keys().filter(|id| !present.contains(*id)).cloned().collect();
    missing.sort();
    let doubled = tags.values().filter(|n| **n > 1).count();
    Ok((missing.len(), missing.into_iter().take(QUOTED).collect(), doubled))
}

/// Per server, how both rooms' state differs from the prefecture's (`None`: identical),
/// polled for at most [`STATE_DEADLINE`] so that a server finishing a resolution is not
/// caught in the middle.
async fn compare_states(apis: &[Api], rooms: &[String; 2]) -> anyhow::Result<Vec<Option<String>>> {
    let until = Instant::now() + STATE_DEADLINE;
    let mut differences: Vec<Option<String>> = vec![Some("not compared".to_owned()); apis.len()];
    loop {
        let mut reference = Vec::new();
        for room in rooms {
            reference.push(apis[0].state_set(room).await?);
        }
        for (i, api) in apis.iter().enumerate() {
            let mut diffs = Vec::new();
            for (room, theirs) in rooms.iter().zip(&reference) {
                let ours = api.state_set(room).await?;
                if ours != *theirs {
                    let only_here: Vec<_> = ours.difference(theirs).take(QUOTED).collect();
                    let only_there: Vec<_> = theirs.difference(&ours).take(QUOTED).collect();
                    diffs.push(format!(
                        "{room}: {} entries only here (e.g. {only_here:?}), {} only at the prefecture (e.g. {only_there:?})",
                        ours.difference(theirs).count(),
                        theirs.difference(&ours).count()
                    ));
                }
            }
            differences[i] = if diffs.is_empty() { None } else { Some(diffs.join("; ")) };
        }
        if differences.iter().all(Option::is_none) || Instant::now() >= until {
            return Ok(differences);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The forward extremities of both rooms, read from the server's SQLite database
/// (read-only, beside the running process, as WAL allows).
async fn extremities(server: &TestServer, rooms: &[String; 2]) -> anyhow::Result<(usize, usize)> {
    use sqlx::Connection as _;
    let path = server.sqlite_path();
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).read_only(true);
    let mut conn =
        sqlx::SqliteConnection::connect_with(&options).await.with_context(|| format!("opening {}", path.display()))?;
    let mut counts = [0usize; 2];
    for (count, room) in counts.iter_mut().zip(rooms) {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM forward_extremities WHERE room_id = $1")
            .bind(room)
            .fetch_one(&mut conn)
            .await
            .context("reading forward_extremities")?;
        *count = usize::try_from(n).unwrap_or_default();
    }
    conn.close().await.ok();
    Ok((counts[0], counts[1]))
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn memory(pid: u32) -> (Option<u64>, Option<u64>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// `sysconf(_SC_CLK_TCK)`, which is 100 on every Linux this runs on; the tests crate
/// has no libc binding to ask.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// User plus system CPU time of a process, in clock ticks (`/proc/PID/stat` fields 14 and
/// 15, counted after the parenthesised command name, which may hold spaces).
fn cpu_ticks(pid: u32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name, field 3 (state) is at index 0, so utime (14) and stime (15) at 11, 12.
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// How many ERROR and WARN lines the server logged over all its runs, and the commonest
/// kinds of them (ERRORs first), each with its count: a line's message with the
/// timestamp, the request span and every number taken out.
fn log_problems(server: &TestServer) -> (usize, Vec<String>) {
    let logs = server.logs();
    let mut kinds: HashMap<String, usize> = HashMap::new();
    let mut total = 0;
    for line in logs.lines() {
        let Some(at) = line.find(" ERROR ").or_else(|| line.find(" WARN ")) else { continue };
        total += 1;
        let mut message = line[at + 1..].to_owned();
        if let (Some(open), Some(close)) = (message.find("request{"), message.find("}: ")) {
            message.replace_range(open..close + 3, "");
        }
        let mut kind = String::new();
        for c in message.chars().take(160) {
            if !c.is_ascii_digit() {
                kind.push(c);
            } else if !kind.ends_with('N') {
                kind.push('N');
            }
        }
        *kinds.entry(kind).or_default() += 1;
    }
    let mut kinds: Vec<(String, usize)> = kinds.into_iter().collect();
    kinds.sort_by_key(|(kind, n)| (!kind.starts_with("ERROR"), std::cmp::Reverse(*n)));
    (total, kinds.into_iter().take(QUOTED).map(|(kind, n)| format!("{n} × {kind}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_survive_both_kinds_of_message() {
        let rooms = ["!enc:x".to_owned(), "!plain:x".to_owned()];
        for (index, i) in [(0, 0), (0, 1), (3, 5), (40, 72)] {
            let (room, event_type, content) = message(index, i, &rooms, "DEVICE");
            assert_eq!(room == rooms[0], event_type == "m.room.encrypted");
            let event = json!({ "type": event_type, "content": content });
            assert_eq!(tag_of(&event), Some(format!("p{index}-{i}")), "{event}");
        }
        assert_eq!(tag_of(&json!({ "type": "m.room.member", "content": {} })), None);
    }

    #[test]
    fn must_be_failures_are_listed() {
        let server = ServerReport {
            label: "muni-01".into(),
            server_name: "localhost:1".into(),
            dir: String::new(),
            acknowledged: 3,
            refused: 0,
            refusals: vec![],
            retried_after_kill: 0,
            kills: 0,
            missing: 0,
            missing_sample: vec![],
            doubled: 0,
            state_difference: None,
            extremities: (1, 1),
            converged: Some(Duration::ZERO),
            rss_kib: Some(1024),
            hwm_kib: Some(2048),
            cpu: Duration::from_secs(1),
            sync_errors: 0,
            members_at_start: true,
            log_problems: (0, vec![]),
        };
        let mut report = Report {
            options: Options { kills: 0, ..Options::default() },
            servers: vec![server.clone()],
            setup: Duration::ZERO,
            setup_parts: [Duration::ZERO; 4],
            traffic: Duration::from_secs(1),
            kills: vec![],
            latency: [Duration::ZERO; 3],
            converged: Some(Duration::ZERO),
            total: Duration::ZERO,
        };
        assert!(report.passed(), "{report}");
        report.servers.push(ServerReport { missing: 2, refused: 1, state_difference: Some("x".into()), ..server });
        assert_eq!(report.failures().len(), 3, "{report}");
        assert!(report.to_string().contains("FAIL"), "{report}");
    }
}
