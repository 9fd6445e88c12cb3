//! `prefecture`: a whole prefecture on one machine (issue 13), run by `scripts/prefecture.sh`.
//! Prints the per-server report and exits 1 if a must-be check failed, 2 if the scenario
//! could not be carried out.

use std::{process::ExitCode, time::Duration};

use anyhow::{Context as _, bail};
use kairan_tests::prefecture::{Options, run};

const USAGE: &str = "\
usage: prefecture [--servers N] [--messages N] [--kills N] [--seed N] [--concurrency N]
                  [--rate R] [--join-concurrency N] [--down-ms MIN,MAX] [--converge-timeout SECS]
                  [--quiet]

  --servers N            servers in all: the prefecture and N-1 municipalities (default 41)
  --messages N           messages sent in all, from every server at once (default 200)
  --kills N              municipal servers SIGKILLed and restarted during the traffic (default 8)
  --seed N               which servers are killed, when and for how long (default 13)
  --concurrency N        sends in flight at once across all servers (default 16)
  --rate R               messages per second across the room, paced evenly over the servers
                         (default 0.5; 0 sends as fast as the servers acknowledge)
  --join-concurrency N   mayors joining each room at the same moment (default 1)
  --down-ms MIN,MAX      how long a killed server stays down (default 1000,5000)
  --converge-timeout S   how long every server may take to have every message (default 600)
  --quiet                no progress lines on stderr

Needs KAIRAN_HOMESERVER_BIN (scripts/prefecture.sh sets it to target/debug/kairan-homeserver).
With KAIRAN_TEST_KEEP_DIR=1 every server's directory (config, SQLite database, logs) is kept.";

fn parse_args(args: impl IntoIterator<Item = String>) -> anyhow::Result<Option<Options>> {
    let mut options = Options::default();
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        if flag == "--quiet" {
            options.progress = false;
            continue;
        }
        let value = args.next().with_context(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<u64>().with_context(|| format!("{flag} {value}: not a number"));
        match flag.as_str() {
            "--servers" => options.servers = number()? as usize,
            "--messages" => options.messages = number()? as usize,
            "--kills" => options.kills = number()? as usize,
            "--seed" => options.seed = number()?,
            "--concurrency" => options.concurrency = number()? as usize,
            "--join-concurrency" => options.join_concurrency = number()? as usize,
            "--rate" => {
                let rate: f64 = value.parse().with_context(|| format!("--rate {value}: not a number"))?;
                options.rate = (rate > 0.0).then_some(rate);
            }
            "--converge-timeout" => options.converge_timeout = Duration::from_secs(number()?),
            "--down-ms" => {
                let (min, max) = value.split_once(',').with_context(|| format!("--down-ms {value}: MIN,MAX"))?;
                options.down_ms = (min.trim().parse()?, max.trim().parse()?);
            }
            _ => bail!("unknown flag {flag}"),
        }
    }
    Ok(Some(options))
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("prefecture: {e:#}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // The harness finds the server beside a test executable in target/*/deps; this one
    // lives in target/*/, so it must be told.
    if std::env::var_os("KAIRAN_HOMESERVER_BIN").is_none() {
        eprintln!("prefecture: set KAIRAN_HOMESERVER_BIN to the kairan-homeserver binary (scripts/prefecture.sh does)");
        return ExitCode::from(2);
    }
    eprintln!("prefecture: {options:?}");
    match run(&options).await {
        Ok(report) => {
            println!("{report}");
            if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("prefecture: the scenario could not be carried out: {e:?}");
            ExitCode::from(2)
        }
    }
}
