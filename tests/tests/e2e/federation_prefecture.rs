//! The prefecture scenario of issue 13 ([`kairan_tests::prefecture`], which
//! `scripts/prefecture.sh` runs at 41 servers) at a small size: six federating servers, the
//! governor and five mayors in an encrypted and an unencrypted room, everyone sending at
//! once while two municipal servers are SIGKILLed and restarted. Every must-be holds:
//! nothing acknowledged missing anywhere, no send refused, every server with the
//! prefecture's room state.

use std::time::Duration;

use kairan_tests::prefecture::{Options, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_prefecture_loses_nothing_while_servers_are_killed() -> anyhow::Result<()> {
    let options = Options {
        servers: 6,
        messages: 120,
        kills: 2,
        seed: 13,
        concurrency: 6,
        join_concurrency: 1,
        down_ms: (500, 1500),
        converge_timeout: Duration::from_secs(60),
        progress: true,
        rate: None,
    };
    let report = run(&options).await?;
    eprintln!("{report}");
    assert!(report.passed(), "{report}");
    Ok(())
}
