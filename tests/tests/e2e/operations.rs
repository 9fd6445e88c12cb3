//! What an operator relies on: health endpoints and `check-config`.

use anyhow::ensure;
use kairan_tests::{PASSWORD, ServerOptions, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_check_config() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice"]).await?;
    let anon = server.api("alice", PASSWORD).await?.with_token(None);
    for path in ["/_kairan/health/live", "/_kairan/health/ready", "/health"] {
        let r = anon.get(path).await?;
        ensure!(r.status == 200 && r.text.contains("ok"), "{path}: {} {}", r.status, r.text);
    }

    // The server's own configuration checks out.
    let ok = server.cli(["check-config"]).await?;
    let stdout = String::from_utf8_lossy(&ok.stdout);
    ensure!(ok.status.success() && stdout.contains("configuration is valid"), "check-config: {ok:?}");

    // A wrong type and an unknown key are refused with their line, and a non-zero exit.
    let bad = server.dir().join("bad.toml");
    for (text, line, word) in [
        ("server_name = \"x\"\n\n[rate_limits]\nburst = \"many\"\n", "line 4", "burst"),
        ("[listen]\nclinet = \"127.0.0.1:1\"\n", "line 2", "clinet"),
    ] {
        std::fs::write(&bad, text)?;
        let out = tokio::process::Command::new(server.binary())
            .env_clear()
            .arg("--config")
            .arg(&bad)
            .arg("check-config")
            .output()
            .await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "a bad config passed: {text:?}");
        ensure!(stderr.contains(line) && stderr.contains(word), "message for {text:?}: {stderr}");
        ensure!(stderr.lines().filter(|l| !l.trim().is_empty()).count() <= 8, "not a short message: {stderr}");
    }
    Ok(())
}

/// `check-config` lists every problem of a configuration, each with its line (or its
/// variable), and `run` refuses to start with the same list: an operator fixes them all in
/// one round instead of one per attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_reports_every_problem() -> anyhow::Result<()> {
    // Only the binary and a directory are needed: nothing is started.
    let server = TestServer::prepare(ServerOptions::default()).await?;
    let bad = server.dir().join("bad.toml");
    std::fs::write(
        &bad,
        "server_name = \"pref.example\"\n\
         servername = \"x\"\n\
         \n\
         [listen]\n\
         clinet = \"127.0.0.1:1\"\n\
         \n\
         [rate_limits]\n\
         burst = \"many\"\n\
         \n\
         [admin]\n\
         utc_offset = \"JST\"\n",
    )?;
    let f = bad.display();
    let expected = [
        format!("{f}: line 2: servername: unknown field `servername`"),
        format!("{f}: line 5: listen.clinet: unknown field `clinet`"),
        format!("{f}: line 8: rate_limits.burst: invalid type: string \"many\""),
        format!("{f}: line 11: admin.utc_offset: \"JST\" is not an offset from UTC"),
        "KAIRAN_LOG__FORMAT: log.format: unknown variant `xml`".to_owned(),
    ];
    let summary = format!("kairan-homeserver: 5 problems in {f} and the KAIRAN_* variables");
    let mut outputs = Vec::new();
    for command in ["check-config", "run"] {
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            tokio::process::Command::new(server.binary())
                .env_clear()
                .env("KAIRAN_LOG__FORMAT", "xml")
                .arg("--config")
                .arg(&bad)
                .arg(command)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| anyhow::anyhow!("{command} started on a bad configuration"))??;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        ensure!(!out.status.success(), "{command} accepted a bad configuration: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        ensure!(lines.len() == expected.len() + 1, "{command}: not one line per problem:\n{stderr}");
        for (line, want) in lines.iter().zip(&expected) {
            ensure!(line.starts_with(want.as_str()), "{command}: {line:?} is not {want:?}:\n{stderr}");
        }
        ensure!(lines[expected.len()] == summary, "{command}: summary:\n{stderr}");
        outputs.push(stderr);
    }
    ensure!(outputs[0] == outputs[1], "run and check-config disagree:\n{}\n{}", outputs[0], outputs[1]);
    Ok(())
}
