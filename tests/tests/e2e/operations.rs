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
