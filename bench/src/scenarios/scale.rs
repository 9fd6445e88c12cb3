//! Scale: the prefecture's month compressed in time. `users` accounts, `rooms` rooms of
//! realistic sizes (a few department-wide rooms, many small ones: room r has about
//! users/5/(r+1) members, at least 3), and `messages` messages sent by random members,
//! busier rooms getting more of them; then resident memory and database size.

use std::time::Instant;

use futures::{StreamExt as _, TryStreamExt as _};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};

use crate::{
    report::{Metric, Outcome},
    scenarios::{join_all, per_second, progress, register_users},
    servers::{MemorySampler, Target, proc_status_bytes},
};

#[derive(Clone, Debug)]
pub struct Size {
    pub users: usize,
    pub rooms: usize,
    pub messages: usize,
    /// Messages in flight at once (clients of the whole organisation).
    pub concurrency: usize,
}

/// The members of each room, as indexes into the user list.
fn room_members(users: usize, rooms: usize) -> Vec<Vec<usize>> {
    (0..rooms)
        .map(|r| {
            let size = (users / 5 / (r + 1)).clamp(3.min(users), users);
            let offset = (r * 7919) % users;
            (0..size).map(|i| (offset + i) % users).collect()
        })
        .collect()
}

pub async fn run(target: &Target, size: &Size) -> anyhow::Result<Outcome> {
    anyhow::ensure!(size.users >= 3 && size.rooms >= 1, "scale needs at least 3 users and a room");
    let users = register_users(&target.hs, "staff", size.users).await?;
    let members = room_members(size.users, size.rooms);
    let started = Instant::now();
    let rooms: Vec<String> = futures::stream::iter(members.iter().enumerate())
        .map(|(r, m)| {
            let creator = users[m[0]].clone();
            async move { creator.create_public_room(&format!("department {r}")).await }
        })
        .buffered(4)
        .try_collect()
        .await?;
    progress(&format!("{} rooms created in {:.1} s", size.rooms, started.elapsed().as_secs_f64()));
    let joins =
        members.iter().zip(&rooms).flat_map(|(m, room)| m[1..].iter().map(|&u| (users[u].clone(), room.clone())));
    join_all(joins.collect()).await?;

    // Which room and which member send each message: rooms weighted by their size.
    let mut rng = StdRng::seed_from_u64(7);
    let total: usize = members.iter().map(Vec::len).sum();
    let plan: Vec<(usize, usize)> = (0..size.messages)
        .map(|_| {
            let mut pick = rng.gen_range(0..total);
            let mut r = 0;
            while pick >= members[r].len() {
                pick -= members[r].len();
                r += 1;
            }
            (r, members[r][rng.gen_range(0..members[r].len())])
        })
        .collect();

    progress(&format!("sending {} messages, {} at a time", size.messages, size.concurrency));
    let memory = MemorySampler::start(target.pid());
    let started = Instant::now();
    let mut latencies = futures::stream::iter(plan.into_iter().enumerate())
        .map(|(n, (r, u))| {
            let (user, room) = (users[u].clone(), rooms[r].clone());
            async move {
                let t = Instant::now();
                user.send_text(&room, &format!("scale-{n}"), &format!("業務連絡 {n}: 会議は15時からです")).await?;
                anyhow::Ok(t.elapsed())
            }
        })
        .buffer_unordered(size.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    let elapsed = started.elapsed();
    let usage = memory.stop().await;
    let after = proc_status_bytes(target.pid(), "VmRSS:").unwrap_or(0);

    let mut metrics = vec![Metric::throughput("events sent", per_second(size.messages, elapsed))];
    metrics.extend(Metric::percentiles("send", &mut latencies));
    metrics.extend(Metric::usage(&usage));
    metrics.push(Metric::mib("RSS after", after));
    if let Some(bytes) = target.database_bytes()? {
        metrics.push(Metric::mib("database size", bytes));
    }
    let size = format!(
        "{} accounts, {} rooms ({total} memberships, largest {}), {} messages in {:.0} s",
        size.users,
        size.rooms,
        members[0].len(),
        size.messages,
        elapsed.as_secs_f64()
    );
    Ok(Outcome::Ran { metrics, size })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_have_a_long_tail_of_small_sizes() {
        let members = room_members(5400, 300);
        assert_eq!(members[0].len(), 1080);
        assert_eq!(members[1].len(), 540);
        assert_eq!(members[299].len(), 3);
        assert!(members.iter().all(|m| m.iter().all(|&u| u < 5400)));
    }
}
