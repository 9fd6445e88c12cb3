//! Initial sync: one user in `rooms` rooms holding `events` messages each; the time of an
//! initial /sync and of sliding sync's (MSC4186) first response, each measured cold (the
//! first request after the history was written) and as the median of `repeat` more.

use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use serde_json::json;

use crate::{
    report::{Metric, Outcome, percentile},
    scenarios::{lean_filter, progress, register_users},
    servers::{MemorySampler, Target},
};

#[derive(Clone, Debug)]
pub struct Size {
    pub rooms: usize,
    pub events: usize,
    pub repeat: usize,
}

const SLIDING_SYNC: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

pub async fn run(target: &Target, size: &Size) -> anyhow::Result<Outcome> {
    let user = register_users(&target.hs, "reader", 1).await?.remove(0);
    let started = Instant::now();
    let rooms: Vec<String> = futures::stream::iter(0..size.rooms)
        .map(|r| {
            let user = user.clone();
            async move { user.create_public_room(&format!("room {r}")).await }
        })
        .buffered(4)
        .try_collect()
        .await?;
    progress(&format!("{} rooms created in {:.1} s", size.rooms, started.elapsed().as_secs_f64()));
    let started = Instant::now();
    let sends = rooms.iter().flat_map(|room| (0..size.events).map(move |i| (room.clone(), i)));
    futures::stream::iter(sends)
        .map(|(room, i)| {
            let user = user.clone();
            async move { user.send_text(&room, &format!("fill-{i}"), &format!("message {i}")).await }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<String>>()
        .await?;
    progress(&format!("{} messages sent in {:.1} s", size.rooms * size.events, started.elapsed().as_secs_f64()));

    let memory = MemorySampler::start(target.pid());
    let mut syncs = Vec::new();
    let mut slidings = Vec::new();
    for rep in 0..=size.repeat {
        let t = Instant::now();
        let resp = user.sync(None, 0, &lean_filter(&format!("initial-{rep}"))).await?;
        syncs.push(t.elapsed());
        let joined = resp["rooms"]["join"].as_object().map_or(0, |j| j.len());
        anyhow::ensure!(joined == size.rooms, "initial sync returned {joined} of {} rooms", size.rooms);

        let body = json!({
            "conn_id": format!("bench-{rep}"),
            "lists": { "all": {
                "ranges": [[0, 19]],
                "timeline_limit": 10,
                "required_state": [["m.room.create", ""], ["m.room.name", ""], ["m.room.member", "$LAZY"]],
            }},
        });
        let t = Instant::now();
        let resp = user.post(&format!("{SLIDING_SYNC}?timeout=0"), &body).await?;
        slidings.push(t.elapsed());
        let listed = resp["rooms"].as_object().map_or(0, |r| r.len());
        anyhow::ensure!(listed == size.rooms.min(20), "sliding sync returned {listed} rooms: {resp}");
    }
    let usage = memory.stop().await;

    let median = |samples: &mut [Duration]| {
        let mut warm = samples[1..].to_vec();
        if warm.is_empty() { samples[0] } else { percentile(&mut warm, 50.0) }
    };
    let mut metrics = vec![
        Metric::millis("initial /sync, cold", syncs[0]),
        Metric::millis("initial /sync, median", median(&mut syncs)),
        Metric::millis("sliding sync first response, cold", slidings[0]),
        Metric::millis("sliding sync first response, median", median(&mut slidings)),
    ];
    metrics.extend(Metric::usage(&usage));
    let size = format!("{} rooms × {} messages, {} repetitions", size.rooms, size.events, size.repeat);
    Ok(Outcome::Ran { metrics, size })
}
