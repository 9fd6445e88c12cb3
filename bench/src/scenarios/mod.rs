//! The scenarios of issue 7. Each takes a freshly started server, builds its set-up
//! (accounts, rooms, history) untimed, then measures one load and returns its figures.

pub mod fanout;
pub mod federation;
pub mod history;
pub mod initial_sync;
pub mod scale;
pub mod send;

use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use serde_json::{Value, json};

use crate::{
    client::{Homeserver, User},
    servers::REGISTRATION_TOKEN,
};

/// How many set-up requests run at once (registration hashes a password on both servers,
/// so more than a few only queues on the server's 2 cores).
pub const SETUP_CONCURRENCY: usize = 8;

/// Registers `count` users named `{prefix}{run}.{i}` and returns them in order (`run` is
/// random, so that scenarios can share an external server).
pub async fn register_users(hs: &Homeserver, prefix: &str, count: usize) -> anyhow::Result<Vec<User>> {
    let started = std::time::Instant::now();
    let prefix = format!("{prefix}{:04x}.", rand::random::<u16>());
    let users: Vec<User> = futures::stream::iter(0..count)
        .map(|i| {
            let hs = hs.clone();
            let name = format!("{prefix}{i}");
            async move { hs.register(&name, REGISTRATION_TOKEN).await }
        })
        .buffered(SETUP_CONCURRENCY)
        .try_collect()
        .await?;
    progress(&format!("registered {count} users in {:.1} s", started.elapsed().as_secs_f64()));
    Ok(users)
}

/// Has each `(user, room)` pair join, `SETUP_CONCURRENCY` at a time.
pub async fn join_all(pairs: Vec<(User, String)>) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let count = pairs.len();
    futures::stream::iter(pairs)
        .map(|(user, room)| async move { user.join(&room, None).await })
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    progress(&format!("{count} joins in {:.1} s", started.elapsed().as_secs_f64()));
    Ok(())
}

/// Sends `count` messages into `room` from `user`, `concurrency` at a time (set-up of the
/// history and initial-sync scenarios).
pub async fn fill_room(user: &User, room: &str, count: usize, concurrency: usize) -> anyhow::Result<()> {
    let run = rand::random::<u32>();
    futures::stream::iter(0..count)
        .map(|i| async move { user.send_text(room, &format!("fill-{run}-{i}"), &format!("history message {i}")).await })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<String>>()
        .await?;
    Ok(())
}

/// A sync filter that keeps responses small and alike on both servers: no presence, a
/// short timeline. `salt` makes the filter differ between repetitions without changing
/// what it selects, so that no server can answer from a cache of an identical request
/// (Synapse caches /sync responses by request for a while).
pub fn lean_filter(salt: &str) -> Value {
    json!({
        "presence": { "not_types": ["*"] },
        "account_data": { "not_types": [format!("kairan.bench.{salt}")] },
        "room": { "timeline": { "limit": 10 }, "ephemeral": { "not_types": ["*"] } },
    })
}

/// Throughput of `count` operations over `elapsed`.
pub fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// A progress line on stderr (the table goes to stdout).
pub fn progress(msg: &str) {
    eprintln!("  · {msg}");
}
