//! kairan-bench: the scenarios of issue 7 against kairan (SQLite, PostgreSQL) and Synapse,
//! one server after the other with the same load, through the Client-Server API.
//!
//! Run it with `scripts/bench.sh`, which builds release binaries, installs Synapse and
//! raises the open-file limit; docs/benchmarks.md has the results and how to read them.

mod client;
mod report;
mod scenarios;
mod servers;

use std::{path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

use crate::{
    report::{Outcome, Table},
    scenarios::{fanout, federation, history, initial_sync, scale, send},
    servers::{Kind, Target},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Send,
    Fanout,
    InitialSync,
    History,
    Federation,
    Scale,
}

/// Benchmarks kairan against Synapse. Every size defaults to issue 7's (or to the small
/// `--quick` profile); any of them can be set on its own.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Small sizes that finish in a few minutes (for checking the harness).
    #[arg(long)]
    quick: bool,
    /// Servers to run, in this order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "kairan-sqlite,kairan-postgres,synapse")]
    targets: Vec<Kind>,
    /// Scenarios to run, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "send,fanout,initial-sync,history,federation,scale"
    )]
    scenarios: Vec<Scenario>,
    /// Also write the table (markdown) to this file.
    #[arg(long)]
    out: Option<PathBuf>,

    /// Send: users sending at once [200; quick 20].
    #[arg(long)]
    send_users: Option<usize>,
    /// Send: rooms they are spread over [20; quick 4].
    #[arg(long)]
    send_rooms: Option<usize>,
    /// Send: seconds of sending [30; quick 5].
    #[arg(long)]
    send_secs: Option<u64>,
    /// Fan-out: users in the room, each long-polling /sync [1000; quick 50].
    #[arg(long)]
    fanout_users: Option<usize>,
    /// Fan-out: messages, one after the other [10; quick 3].
    #[arg(long)]
    fanout_rounds: Option<usize>,
    /// Initial sync: rooms of the user [500; quick 20].
    #[arg(long)]
    sync_rooms: Option<usize>,
    /// Initial sync: messages per room [100; quick 10].
    #[arg(long)]
    sync_events: Option<usize>,
    /// Initial sync: repetitions after the cold one [4; quick 2].
    #[arg(long)]
    sync_repeat: Option<usize>,
    /// History: messages in the room [10000; quick 500].
    #[arg(long)]
    history_events: Option<usize>,
    /// History: events per /messages request [100].
    #[arg(long)]
    history_page: Option<usize>,
    /// Federation: servers sharing the room, Synapse included [10; quick 3].
    #[arg(long)]
    federation_servers: Option<usize>,
    /// Federation: messages, sent by each server in turn [20; quick 3].
    #[arg(long)]
    federation_rounds: Option<usize>,
    /// Federation: kairan servers only.
    #[arg(long)]
    federation_without_synapse: bool,
    /// Scale: accounts [5400; quick 100].
    #[arg(long)]
    scale_users: Option<usize>,
    /// Scale: rooms [300; quick 10].
    #[arg(long)]
    scale_rooms: Option<usize>,
    /// Scale: messages [300000; quick 2000].
    #[arg(long)]
    scale_messages: Option<usize>,
    /// Scale: messages in flight at once [32].
    #[arg(long)]
    scale_concurrency: Option<usize>,
}

impl Args {
    /// `full` or `quick` unless the option was given.
    fn size<T>(&self, given: Option<T>, full: T, quick: T) -> T {
        given.unwrap_or(if self.quick { quick } else { full })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let send = send::Size {
        users: args.size(args.send_users, 200, 20),
        rooms: args.size(args.send_rooms, 20, 4),
        duration: Duration::from_secs(args.size(args.send_secs, 30, 5)),
    };
    let fanout =
        fanout::Size { users: args.size(args.fanout_users, 1000, 50), rounds: args.size(args.fanout_rounds, 10, 3) };
    let initial_sync = initial_sync::Size {
        rooms: args.size(args.sync_rooms, 500, 20),
        events: args.size(args.sync_events, 100, 10),
        repeat: args.size(args.sync_repeat, 4, 2),
    };
    let history =
        history::Size { events: args.size(args.history_events, 10_000, 500), page: args.history_page.unwrap_or(100) };
    let federation = federation::Size {
        servers: args.size(args.federation_servers, 10, 3),
        rounds: args.size(args.federation_rounds, 20, 3),
        with_synapse: !args.federation_without_synapse,
    };
    let scale = scale::Size {
        users: args.size(args.scale_users, 5400, 100),
        rooms: args.size(args.scale_rooms, 300, 10),
        messages: args.size(args.scale_messages, 300_000, 2000),
        concurrency: args.scale_concurrency.unwrap_or(32),
    };

    let mut table = Table::default();
    let started = std::time::Instant::now();
    for &scenario in &args.scenarios {
        let name = scenario.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default();
        if scenario == Scenario::Federation {
            eprintln!("== federation");
            let outcome = federation::run(&federation).await.unwrap_or_else(failed);
            table.extra.push(("federation (servers of both kinds in one room)".to_owned(), outcome));
            continue;
        }
        for &kind in &args.targets {
            eprintln!("== {name} on {kind}");
            // A fresh server and database per scenario, so that each one's memory and
            // database are its own.
            let outcome = match Target::start(kind).await {
                Ok(target) => {
                    let outcome = match scenario {
                        Scenario::Send => send::run(&target, &send).await,
                        Scenario::Fanout => fanout::run(&target, &fanout).await,
                        Scenario::InitialSync => initial_sync::run(&target, &initial_sync).await,
                        Scenario::History => history::run(&target, &history).await,
                        Scenario::Scale => scale::run(&target, &scale).await,
                        Scenario::Federation => unreachable!("handled above"),
                    };
                    outcome.unwrap_or_else(failed)
                }
                Err(e) => failed(e.context(format!("starting {kind}"))),
            };
            if let Outcome::Ran { metrics, .. } = &outcome {
                for m in metrics {
                    eprintln!("  {:<45} {:>10.2} {}", m.name, m.value, m.unit);
                }
            }
            table.rows.push((name.clone(), kind, outcome));
        }
    }

    let markdown = table.markdown(&args.targets);
    println!("{markdown}");
    eprintln!("finished in {:.0} s", started.elapsed().as_secs_f64());
    if let Some(path) = &args.out {
        std::fs::write(path, &markdown)?;
        eprintln!("table written to {}", path.display());
    }
    Ok(())
}

fn failed(e: anyhow::Error) -> Outcome {
    eprintln!("  failed: {e:#}");
    let mut why = format!("{e:#}");
    why.truncate(300);
    Outcome::Failed(why)
}
