//! matrix-js-sdk with its Rust crypto (the SDK under Element Web) as a third-party client on
//! both sides of a federation: an encrypted conversation between alice (resident side, she
//! creates the room) and bob (joiner), for each pair of servers a prefecture and a
//! municipality may run. The conversation itself is `tests/js/conversation.mjs`: room
//! creation, invite, join, five messages each way decrypted, cross-signing and SAS
//! verification, key backup, and a second device of bob that restores the backup and reads
//! the history and a new message.
//!
//! The SDK comes from the npm registry (`tests/js/package-lock.json`), installed by
//! `scripts/js-sdk.sh`, which `scripts/test.sh` runs. matrix-js-sdk 43 declares Node 22; the
//! machines have Node 20, and the driver shims the one missing feature
//! (`Promise.withResolvers`). Node missing or the packages not installed is a failure that
//! names the script, never a skip.
//!
//! The clients talk plain HTTP to kairan's client port and HTTPS to Synapse's one listener,
//! whose certificate the test CA issued: node trusts that CA through `NODE_EXTRA_CA_CERTS`,
//! so TLS stays verified.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use kairan_tests::{PASSWORD, TestServer, synapse::SynapseServer, test_ca};
use serde_json::{Value, json};

use crate::federation::{federating_server, or_panic};

/// The whole conversation usually takes 15–40 s; each wait inside the driver is bounded by
/// [`STEP_TIMEOUT`]. Below nextest's limit (5 × 60 s), so that this test's own message,
/// with node's output and the servers' logs, is what a hang produces.
const NODE_DEADLINE: Duration = Duration::from_secs(240);
/// The bound on each wait of the driver (an event to decrypt, a verification to complete).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// One side of the conversation: a client API base URL and an account on it.
struct Side {
    base_url: String,
    user: &'static str,
}

impl Side {
    fn kairan(server: &TestServer, user: &'static str) -> Self {
        Self { base_url: server.url(), user }
    }

    fn synapse(server: &SynapseServer, user: &'static str) -> Self {
        Self { base_url: server.url(), user }
    }

    fn json(&self) -> Value {
        json!({ "baseUrl": self.base_url, "user": self.user, "password": PASSWORD })
    }
}

/// `tests/js`, where `scripts/js-sdk.sh` installs the SDK.
fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// Runs the driver for `alice` (resident) and `bob` (joiner) and returns its summary.
/// Fails with node's whole output (steps done, the failing step and what it saw, the SDK's
/// log) when the conversation fails or does not end within [`NODE_DEADLINE`].
async fn conversation(alice: Side, bob: Side) -> anyhow::Result<Value> {
    let dir = js_dir();
    for package in ["matrix-js-sdk", "@matrix-org/matrix-sdk-crypto-wasm"] {
        ensure!(
            dir.join("node_modules").join(package).join("package.json").exists(),
            "{package} is not installed in {}: run `bash scripts/js-sdk.sh` (scripts/test.sh does) to install \
             the pinned matrix-js-sdk from tests/js/package-lock.json; these tests cannot run without it",
            dir.display()
        );
    }
    let input = json!({ "alice": alice.json(), "bob": bob.json(), "timeoutMs": STEP_TIMEOUT.as_millis() as u64 });
    // Both streams into one file, in the order node wrote them, and readable after a kill.
    let out_dir = tempfile::Builder::new().prefix("kairan-js-sdk-").tempdir()?;
    let out_path = out_dir.path().join("node.log");
    let out = std::fs::File::create(&out_path)?;
    let started = Instant::now();
    let mut child = tokio::process::Command::new("node")
        .arg(dir.join("conversation.mjs"))
        .arg(input.to_string())
        .current_dir(&dir)
        .env("NODE_EXTRA_CA_CERTS", &test_ca().ca_pem)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .context("spawning node (Node.js 20 or later must be on PATH; scripts/js-sdk.sh checks it)")?;
    let status = tokio::time::timeout(NODE_DEADLINE, child.wait()).await;
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    let status = match status {
        Ok(status) => status.context("waiting for node")?,
        Err(_) => {
            child.kill().await.ok();
            bail!("the js-sdk conversation did not end within {NODE_DEADLINE:?}; node's output:\n{output}");
        }
    };
    let failed = output.lines().find(|l| l.starts_with("FAILED at step")).unwrap_or("no FAILED line");
    ensure!(
        status.success(),
        "the js-sdk conversation failed ({status}) after {:?}: {failed}\n----- node's output -----\n{output}",
        started.elapsed()
    );
    let summary = output
        .lines()
        .find_map(|l| l.strip_prefix("SUMMARY "))
        .with_context(|| format!("node exited 0 without a SUMMARY line; its output:\n{output}"))?;
    let summary: Value = serde_json::from_str(summary).with_context(|| format!("the summary: {summary}"))?;
    ensure!(summary["messages"] == 10, "the summary counts {} messages, not 10: {summary}", summary["messages"]);
    eprintln!("js-sdk conversation done in {:?}: {summary}", started.elapsed());
    Ok(summary)
}

/// Two kairan servers: alice's prefecture, bob's municipality.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kairan_to_kairan() -> anyhow::Result<()> {
    let (resident, joiner) = tokio::try_join!(federating_server(), federating_server())?;
    resident.create_user("alice", PASSWORD, false).await?;
    joiner.create_user("bob", PASSWORD, false).await?;
    or_panic(conversation(Side::kairan(&resident, "alice"), Side::kairan(&joiner, "bob")).await);
    Ok(())
}

/// alice on kairan creates the room; bob on Synapse joins it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kairan_resident_synapse_joiner() -> anyhow::Result<()> {
    let (resident, joiner) = tokio::try_join!(federating_server(), SynapseServer::start())?;
    resident.create_user("alice", PASSWORD, false).await?;
    joiner.register("bob", PASSWORD).await?;
    or_panic(conversation(Side::kairan(&resident, "alice"), Side::synapse(&joiner, "bob")).await);
    Ok(())
}

/// alice on Synapse creates the room; bob on kairan joins it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_resident_kairan_joiner() -> anyhow::Result<()> {
    let (resident, joiner) = tokio::try_join!(SynapseServer::start(), federating_server())?;
    resident.register("alice", PASSWORD).await?;
    joiner.create_user("bob", PASSWORD, false).await?;
    or_panic(conversation(Side::synapse(&resident, "alice"), Side::kairan(&joiner, "bob")).await);
    Ok(())
}
