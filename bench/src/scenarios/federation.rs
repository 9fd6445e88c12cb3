//! Federation: one room shared by `servers` servers on loopback — kairan instances
//! (SQLite, TLS with the test CA) and, unless left out, one Synapse (kairan-tests'
//! interoperability Synapse) — with one long-polling user on each. Each round, the next
//! server's user sends; the clock runs until the users of all the other servers have it.

use std::time::Duration;

use kairan_tests::{ServerOptions, TestServer, synapse::SynapseServer};

use crate::{
    client::{Homeserver, User},
    report::{Metric, Outcome},
    scenarios::{fanout::Clients, progress},
    servers::REGISTRATION_TOKEN,
};

#[derive(Clone, Debug)]
pub struct Size {
    pub servers: usize,
    pub rounds: usize,
    pub with_synapse: bool,
}

pub async fn run(size: &Size) -> anyhow::Result<Outcome> {
    let kairans = size.servers - usize::from(size.with_synapse);
    anyhow::ensure!(kairans >= 1 && size.servers >= 2, "federation needs two servers, one of them kairan");
    let mut servers = Vec::new();
    for _ in 0..kairans {
        let options = ServerOptions::default().federation().registration_tokens([REGISTRATION_TOKEN]);
        servers.push(TestServer::start(options).await?);
    }
    let synapse = if size.with_synapse { Some(SynapseServer::start().await?) } else { None };
    progress(&format!("{kairans} kairan servers and {} Synapse started", usize::from(size.with_synapse)));

    let mut users: Vec<User> = Vec::new();
    for server in &servers {
        let hs = Homeserver::new(&server.url(), Homeserver::http_client(None)?);
        users.push(hs.register("member", REGISTRATION_TOKEN).await?);
    }
    if let Some(synapse) = &synapse {
        let hs = Homeserver::new(&synapse.url(), synapse.http_client()?);
        users.push(hs.register("member", REGISTRATION_TOKEN).await?);
    }
    let is_synapse = |i: usize| size.with_synapse && i == users.len() - 1;

    let room = users[0].create_public_room("prefecture and municipalities").await?;
    for user in &users[1..] {
        user.join(&room, Some(servers[0].server_name())).await?;
    }
    let mut clients = Clients::start(&users, &room).await?;
    progress(&format!("{} servers share the room", users.len()));

    let (mut from_kairan, mut from_synapse) = (Vec::new(), Vec::new());
    let (mut to_kairan, mut to_synapse) = (Vec::new(), Vec::new());
    for round in 0..size.rounds {
        let sender = round % users.len();
        let arrivals: Vec<(usize, Duration)> =
            clients.round(round, &users[sender]).await?.into_iter().filter(|&(c, _)| c != sender).collect();
        let all = arrivals.iter().map(|&(_, d)| d).max().unwrap_or_default();
        if is_synapse(sender) { &mut from_synapse } else { &mut from_kairan }.push(all);
        for (client, d) in arrivals {
            if is_synapse(client) { &mut to_synapse } else { &mut to_kairan }.push(d);
        }
    }

    let mut metrics = Metric::percentiles("to every other server, sent on kairan", &mut from_kairan);
    if size.with_synapse {
        metrics.extend(Metric::percentiles("to every other server, sent on Synapse", &mut from_synapse));
        metrics.extend(Metric::percentiles("to a Synapse user", &mut to_synapse));
    }
    metrics.extend(Metric::percentiles("to a kairan user", &mut to_kairan));
    let size = format!(
        "{kairans} kairan (SQLite){}, {} rounds (senders in turn)",
        if size.with_synapse { " + 1 Synapse (SQLite, kairan-tests' interop set-up)" } else { "" },
        size.rounds
    );
    Ok(Outcome::Ran { metrics, size })
}
