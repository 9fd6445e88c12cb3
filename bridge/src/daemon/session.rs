//! The archive account's Matrix session: logging in once, then restoring the same device
//! and crypto store on every start.

use std::{path::Path, time::Duration};

use anyhow::Context as _;
use matrix_sdk::{Client, authentication::matrix::MatrixSession, config::RequestConfig, store::RoomLoadSettings};

use crate::config::Config;

/// Logs in, or restores the saved session with the same device and crypto store.
pub(super) async fn login(config: &Config, homeserver: &str, user: &str, password: &str) -> anyhow::Result<Client> {
    let store = config.data_dir.join("matrix-store");
    let session_file = config.data_dir.join("session.json");
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
    let passphrase = match &config.store_passphrase_file {
        Some(f) => {
            Some(std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?.trim().to_owned())
        }
        None => None,
    };
    let saved: Option<MatrixSession> = match std::fs::read_to_string(&session_file) {
        Ok(text) => Some(
            serde_json::from_str(&text).context("session.json is damaged; remove it and the matrix-store folder")?,
        ),
        Err(_) => None,
    };
    if saved.is_none() && store.exists() {
        // A store without its session (a crash right after login): start the device afresh.
        std::fs::remove_dir_all(&store).ok();
    }
    let client = Client::builder()
        .homeserver_url(homeserver)
        .sqlite_store(&store, passphrase.as_deref())
        .request_config(RequestConfig::new().timeout(Duration::from_secs(60)).retry_limit(3))
        .build()
        .await
        .context("building the Matrix client")?;
    match saved {
        Some(session) => {
            client
                .matrix_auth()
                .restore_session(session, RoomLoadSettings::default())
                .await
                .context("restoring the saved session")?;
        }
        None => {
            let localpart = user.trim_start_matches('@').split(':').next().unwrap_or(user);
            client
                .matrix_auth()
                .login_username(localpart, password)
                .initial_device_display_name("kairan-bridge")
                .send()
                .await
                .with_context(|| format!("logging in as {user}"))?;
            let session = client.matrix_auth().session().context("no session after login")?;
            write_private(&session_file, serde_json::to_string(&session)?.as_bytes())?;
        }
    }
    client.encryption().wait_for_e2ee_initialization_tasks().await;
    Ok(client)
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write as _;
    let mut f = options.open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
