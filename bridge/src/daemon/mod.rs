//! `kairan-bridge run`: the archiving daemon. A matrix-sdk client logged in as the archive
//! account joins official rooms, reads them into the archive and works off what that queues.

mod catch_up;
mod http;
mod inspect;
mod join;
mod pending;
mod session;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use ed25519_dalek::SigningKey;
use matrix_sdk::{
    Client, RoomState,
    config::SyncSettings,
    ruma::{OwnedRoomId, RoomId},
};
use tokio::sync::watch;

use crate::{
    archive::{AppendTx, Archive},
    config::Config,
    keys,
    metrics::{Failure, Metrics, Source},
};

/// The running daemon.
pub struct Daemon {
    config: Config,
    archive: Archive,
    key: Arc<SigningKey>,
    client: Client,
    http: reqwest::Client,
    homeserver: String,
    policy_servers: Vec<String>,
    metrics: Arc<Metrics>,
}

impl Daemon {
    /// Opens the archive, loads (or creates) the signing key, and logs in or restores the session.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let (homeserver, user, password) = config.daemon()?;
        let archive = Archive::open(&config.database_url()).await?;
        let key = Arc::new(keys::load_or_create_signing_key(&config.signing_key_path())?);
        std::fs::create_dir_all(config.attachments())
            .with_context(|| format!("creating {}", config.attachments().display()))?;
        let client = session::login(&config, &homeserver, &user, &password).await?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(90)).build()?;
        let policy_servers = config.policy_servers();
        Ok(Self {
            config,
            archive,
            key,
            client,
            http,
            homeserver: homeserver.trim_end_matches('/').to_owned(),
            policy_servers,
            metrics: Arc::new(Metrics::new()),
        })
    }

    /// What the metrics listener reads: this daemon's counters, its archive and attachments.
    pub fn metrics_source(&self) -> Source {
        Source { metrics: self.metrics.clone(), archive: self.archive.clone(), attachments: self.config.attachments() }
    }

    /// Commits an appending transaction and counts what it made durable.
    async fn commit(&self, tx: AppendTx) -> anyhow::Result<()> {
        let kinds = tx.commit_appended().await?;
        self.metrics.archived(&kinds);
        Ok(())
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let checkpoint_every = Duration::from_secs(self.config.checkpoint_interval_secs.max(1));
        let sweep_every = Duration::from_secs(self.config.sweep_interval_secs.max(1));
        let mut last_checkpoint = Instant::now();
        let mut last_sweep: Option<Instant> = None;
        let mut failures = 0u32;
        tracing::info!(user = ?self.client.user_id(), "kairan-bridge running");
        loop {
            if *shutdown.borrow() {
                break;
            }
            // Sync only for what only sync brings (invites, room keys as to-device messages)
            // and as a wake-up: the rooms themselves are read with `/messages` (`catch_up`).
            let settings =
                SyncSettings::default().timeout(Duration::from_secs(if last_sweep.is_none() { 0 } else { 5 }));
            let sync = tokio::select! {
                r = self.client.sync_once(settings) => r,
                _ = shutdown.changed() => break,
            };
            let active: Vec<OwnedRoomId> = match sync {
                Ok(response) => {
                    failures = 0;
                    response.rooms.joined.keys().cloned().collect()
                }
                Err(e) => {
                    failures += 1;
                    self.metrics.failed(Failure::sync);
                    let wait = Duration::from_millis(500 * u64::from(failures.min(20)));
                    tracing::warn!(error = %e, ?wait, "sync failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => break,
                    }
                    continue;
                }
            };
            if let Err(e) = self.pass(&active, &mut last_sweep, sweep_every).await {
                self.metrics.failed(Failure::pass);
                tracing::warn!(error = format!("{e:#}"), "archiving pass failed; will retry");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => break,
                }
            }
            if last_checkpoint.elapsed() >= checkpoint_every {
                match self.archive.sign_head(&self.key, true).await {
                    Ok(Some(h)) => tracing::info!(size = h.tree_size, root = %h.root_hash, "signed a tree head"),
                    Ok(None) => {}
                    Err(e) => {
                        self.metrics.failed(Failure::checkpoint);
                        tracing::warn!(error = format!("{e:#}"), "signing a tree head failed");
                    }
                }
                last_checkpoint = Instant::now();
            }
        }
        // A last head on the way out, so a clean stop leaves everything signed.
        if let Err(e) = self.archive.sign_head(&self.key, true).await {
            self.metrics.failed(Failure::checkpoint);
            tracing::warn!(error = format!("{e:#}"), "signing the final tree head failed");
        }
        self.archive.close().await;
        tracing::info!("kairan-bridge stopped");
        Ok(())
    }

    /// Invites, then the rooms that need reading, then pending work.
    async fn pass(
        &self,
        active: &[OwnedRoomId],
        last_sweep: &mut Option<Instant>,
        sweep_every: Duration,
    ) -> anyhow::Result<()> {
        for room in self.client.invited_rooms() {
            self.consider_invite(room.room_id().to_owned()).await;
        }
        let known = self.archive.rooms().await?;
        // Rooms the client is in but the archive does not know (a lost database, an old join).
        for room in self.client.joined_rooms() {
            if !known.iter().any(|r| r.room_id == room.room_id().as_str()) {
                self.check_joined_room(room.room_id().to_owned()).await?;
            }
        }
        let sweep = last_sweep.is_none_or(|t| t.elapsed() >= sweep_every);
        for row in self.archive.rooms().await? {
            if !row.official {
                continue;
            }
            // Kicked or banned from an official room: the record has a gap until the account
            // is back (the homeserver invites it back after a kick). An alert, every sweep.
            if sweep
                && let Some(room) = RoomId::parse(&row.room_id).ok().and_then(|id| self.client.get_room(&id))
                && matches!(room.state(), RoomState::Left | RoomState::Banned)
            {
                self.metrics.failed(Failure::removed);
                tracing::error!(room = %row.room_id, state = ?room.state(), "the archive account is not in an official room");
                continue;
            }
            if (sweep || active.iter().any(|r| r.as_str() == row.room_id))
                && let Err(e) = self.catch_up(&row.room_id).await
            {
                // One room that cannot be read (the account was removed, the room shut
                // down) must not stop the others.
                self.metrics.failed(Failure::read);
                tracing::warn!(room = %row.room_id, error = format!("{e:#}"), "could not read the room; will retry");
            }
        }
        if sweep {
            *last_sweep = Some(Instant::now());
        }
        self.work_pending().await
    }
}
