//! History: one room with `events` messages; /messages backwards from the newest event
//! to the room's creation, `page` events per request.

use std::time::Instant;

use anyhow::Context as _;

use crate::{
    client::enc,
    report::{Metric, Outcome},
    scenarios::{fill_room, lean_filter, per_second, progress, register_users},
    servers::{MemorySampler, Target},
};

#[derive(Clone, Debug)]
pub struct Size {
    pub events: usize,
    pub page: usize,
}

pub async fn run(target: &Target, size: &Size) -> anyhow::Result<Outcome> {
    let user = register_users(&target.hs, "historian", 1).await?.remove(0);
    let room = user.create_public_room("history").await?;
    let started = Instant::now();
    fill_room(&user, &room, size.events, 16).await?;
    progress(&format!("{} messages sent in {:.1} s", size.events, started.elapsed().as_secs_f64()));
    let sync = user.sync(None, 0, &lean_filter("history")).await?;
    let timeline = &sync["rooms"]["join"][&room]["timeline"];
    // The newest events came with the sync; /messages reads back from before them.
    let newest = timeline["events"].as_array().map_or(0, Vec::len);
    let mut from = timeline["prev_batch"].as_str().context("no prev_batch in the room's timeline")?.to_owned();

    let memory = MemorySampler::start(target.pid());
    let mut pages = Vec::new();
    let mut read = newest;
    let started = Instant::now();
    loop {
        let path =
            format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit={}&from={}", enc(&room), size.page, enc(&from));
        let t = Instant::now();
        let resp = user.get(&path).await?;
        pages.push(t.elapsed());
        let chunk = resp["chunk"].as_array().map_or(0, Vec::len);
        read += chunk;
        match resp["end"].as_str() {
            Some(end) if chunk > 0 => from = end.to_owned(),
            _ => break,
        }
        anyhow::ensure!(pages.len() <= size.events + 100, "/messages does not reach the start of the room");
    }
    let elapsed = started.elapsed();
    let usage = memory.stop().await;
    anyhow::ensure!(read >= size.events, "/messages returned {read} events, fewer than the {} sent", size.events);

    let mut metrics =
        vec![Metric::throughput("events read", per_second(read, elapsed)), Metric::millis("whole history", elapsed)];
    metrics.extend(Metric::percentiles("page", &mut pages));
    metrics.extend(Metric::usage(&usage));
    let size = format!("{read} events, {} pages of {}", pages.len(), size.page);
    Ok(Outcome::Ran { metrics, size })
}
