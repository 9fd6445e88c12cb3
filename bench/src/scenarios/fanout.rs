//! Fan-out: `users` users in one room, each with a long-polling /sync; one of them sends a
//! message, and the clock runs until every client's /sync has returned it. Repeated
//! `rounds` times. [`Clients`] is shared with the federation scenario.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use serde_json::Value;
use tokio::{sync::mpsc, task::JoinHandle};

use crate::{
    client::{User, timeline_bodies},
    report::{Metric, Outcome},
    scenarios::{SETUP_CONCURRENCY, join_all, lean_filter, progress, register_users},
    servers::{MemorySampler, Target},
};

#[derive(Clone, Debug)]
pub struct Size {
    pub users: usize,
    pub rounds: usize,
}

/// How long every client may take to see one message before the round fails.
const ROUND_DEADLINE: Duration = Duration::from_secs(60);
/// How long to wait for every client to be back in a long-poll between rounds.
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);
/// How long a long-poll waits for new events.
const LONG_POLL_MS: u64 = 30_000;
const MARKER: &str = "fanout-round-";

pub async fn run(target: &Target, size: &Size) -> anyhow::Result<Outcome> {
    anyhow::ensure!(size.users >= 1, "fan-out needs a user");
    let users = register_users(&target.hs, "syncer", size.users).await?;
    let room = users[0].create_public_room("fan-out").await?;
    join_all(users.iter().skip(1).map(|u| (u.clone(), room.clone())).collect()).await?;
    let mut clients = Clients::start(&users, &room).await?;
    progress(&format!("{} clients long-polling", size.users));

    let memory = MemorySampler::start(target.pid());
    let mut deliveries = Vec::new();
    let mut everyone = Vec::new();
    let result: anyhow::Result<()> = async {
        for round in 0..size.rounds {
            let arrivals = clients.round(round, &users[0]).await?;
            everyone.push(arrivals.iter().map(|&(_, d)| d).max().unwrap_or_default());
            deliveries.extend(arrivals.into_iter().map(|(_, d)| d));
        }
        Ok(())
    }
    .await;
    let usage = memory.stop().await;
    result?;

    let mut metrics = Metric::percentiles("to one client", &mut deliveries);
    metrics.extend(Metric::percentiles("to every client", &mut everyone));
    metrics.extend(Metric::usage(&usage));
    Ok(Outcome::Ran { metrics, size: format!("{} clients, {} rounds", size.users, size.rounds) })
}

/// Users in one room, each long-polling /sync in its own task; stopped on drop.
pub struct Clients {
    room: String,
    count: usize,
    /// How many clients have a /sync request under way.
    polling: Arc<AtomicUsize>,
    arrivals: mpsc::UnboundedReceiver<Arrival>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

/// A round's message reaching one client.
struct Arrival {
    round: usize,
    client: usize,
    at: Instant,
}

impl Clients {
    /// Initial syncs (untimed), then one long-polling task per user, so that the
    /// long-polls wait for new events only.
    pub async fn start(users: &[User], room: &str) -> anyhow::Result<Self> {
        let filter = lean_filter("fanout");
        let since: Vec<String> = futures::stream::iter(users)
            .map(|u| {
                let filter = &filter;
                async move {
                    let s = u.sync(None, 0, filter).await?;
                    anyhow::Ok(s["next_batch"].as_str().context("no next_batch")?.to_owned())
                }
            })
            .buffered(SETUP_CONCURRENCY)
            .try_collect()
            .await?;
        let polling = Arc::new(AtomicUsize::new(0));
        let (tx, arrivals) = mpsc::unbounded_channel();
        let tasks = users
            .iter()
            .zip(since)
            .enumerate()
            .map(|(client, (user, since))| {
                let (user, room, filter, polling, tx) =
                    (user.clone(), room.to_owned(), filter.clone(), polling.clone(), tx.clone());
                tokio::spawn(poll(client, user, room, since, filter, polling, tx))
            })
            .collect();
        Ok(Self { room: room.to_owned(), count: users.len(), polling, arrivals, tasks })
    }

    /// Waits until every client is in a long-poll, has `sender` send round `round`'s
    /// message, and returns when each client got it: `(client index, time since the send
    /// began)`, the sender's own client included.
    pub async fn round(&mut self, round: usize, sender: &User) -> anyhow::Result<Vec<(usize, Duration)>> {
        // The count rises just before each request is sent; a moment more lets the last
        // requests reach the server.
        let settle = Instant::now() + SETTLE_DEADLINE;
        while self.polling.load(Ordering::SeqCst) < self.count {
            if Instant::now() > settle {
                bail!("only {} of {} clients are polling", self.polling.load(Ordering::SeqCst), self.count);
            }
            if let Some(failed) = self.tasks.iter_mut().find(|t| t.is_finished()) {
                bail!("a client's /sync failed: {:?}", failed.await);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;

        let sent = Instant::now();
        sender.send_text(&self.room, &format!("fanout-{round}"), &format!("{MARKER}{round}")).await?;
        let mut got = Vec::with_capacity(self.count);
        while got.len() < self.count {
            let arrival = tokio::time::timeout_at((sent + ROUND_DEADLINE).into(), self.arrivals.recv())
                .await
                .with_context(|| {
                    format!("round {round}: only {} of {} clients got the message", got.len(), self.count)
                })?
                .context("the clients stopped")?;
            if arrival.round == round {
                got.push((arrival.client, arrival.at - sent));
            }
        }
        Ok(got)
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Long-polls /sync for ever, reporting each round's message as it arrives.
async fn poll(
    client: usize,
    user: User,
    room: String,
    mut since: String,
    filter: Value,
    polling: Arc<AtomicUsize>,
    tx: mpsc::UnboundedSender<Arrival>,
) -> anyhow::Result<()> {
    loop {
        polling.fetch_add(1, Ordering::SeqCst);
        let resp = user.sync(Some(&since), LONG_POLL_MS, &filter).await;
        let at = Instant::now();
        polling.fetch_sub(1, Ordering::SeqCst);
        let resp = resp?;
        for body in timeline_bodies(&resp, &room) {
            if let Some(round) = body.strip_prefix(MARKER).and_then(|r| r.parse().ok()) {
                tx.send(Arrival { round, client, at }).ok();
            }
        }
        since = resp["next_batch"].as_str().context("no next_batch")?.to_owned();
    }
}
