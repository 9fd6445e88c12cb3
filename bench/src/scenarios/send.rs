//! Send: `users` users spread over `rooms` rooms, each sending its next message as soon as
//! the server acknowledged the previous one, for `duration`.

use std::time::{Duration, Instant};

use crate::{
    report::{Metric, Outcome},
    scenarios::{join_all, per_second, progress, register_users},
    servers::{MemorySampler, Target},
};

#[derive(Clone, Debug)]
pub struct Size {
    pub users: usize,
    pub rooms: usize,
    pub duration: Duration,
}

pub async fn run(target: &Target, size: &Size) -> anyhow::Result<Outcome> {
    anyhow::ensure!(size.rooms >= 1 && size.users >= size.rooms, "send needs at least one user per room");
    let users = register_users(&target.hs, "sender", size.users).await?;
    let mut rooms = Vec::new();
    for (r, creator) in users.iter().take(size.rooms).enumerate() {
        rooms.push(creator.create_public_room(&format!("send {r}")).await?);
    }
    let joins = users.iter().enumerate().skip(size.rooms).map(|(i, u)| (u.clone(), rooms[i % size.rooms].clone()));
    join_all(joins.collect()).await?;

    progress(&format!("{} users sending for {:?}", size.users, size.duration));
    let memory = MemorySampler::start(target.pid());
    let started = Instant::now();
    let deadline = started + size.duration;
    let tasks: Vec<_> = users
        .into_iter()
        .enumerate()
        .map(|(i, user)| {
            let room = rooms[i % size.rooms].clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    user.send_text(&room, &format!("send-{i}-{n}"), &format!("message {n} from sender {i}")).await?;
                    latencies.push(sent.elapsed());
                    n += 1;
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    let usage = memory.stop().await;

    let mut metrics = vec![Metric::throughput("events sent", per_second(latencies.len(), elapsed))];
    metrics.extend(Metric::percentiles("send", &mut latencies));
    metrics.extend(Metric::usage(&usage));
    let size = format!("{} users, {} rooms, {:.0} s", size.users, size.rooms, elapsed.as_secs_f64());
    Ok(Outcome::Ran { metrics, size })
}
