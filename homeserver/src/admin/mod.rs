//! Administration: what the admin API (`api/admin`) calls. Accounts in bulk, room
//! policy (official records, retention, encryption, servers), shutting rooms down and
//! purging history, server policy changed at run time, utilisation figures, and the
//! audit log of every administrative call.
//!
//! Server policy lives in the `server_policy` table and in memory here: a change through
//! the API writes the table and the memory at once, so the next request sees it without
//! a restart; a start loads the table over the configuration file.

mod archive_guard;
pub mod audit;
pub mod figures;
pub mod room_policy;
pub mod rooms;
pub mod users;

use std::{
    collections::HashMap,
    sync::{Mutex, RwLock},
};

use ruma::{OwnedUserId, RoomId, ServerName, UserId};
use serde::{Deserialize, Serialize};

use crate::{media::MediaPolicy, services::Services};
use kairan_core::{
    config::RegistrationMode,
    error::{Error, Result},
    time::now_ms,
};

/// Names of the rows of `server_policy`.
pub const POLICY_FEDERATION: &str = "federation_allowlist";
pub const POLICY_MEDIA: &str = "media";
pub const POLICY_REGISTRATION: &str = "registration_mode";

/// Localparts of the server's own accounts begin with this; users cannot register them.
pub const RESERVED_LOCALPART_PREFIX: &str = "_kairan";

/// The account that sends every room policy event (`@_kairan_policy:server`): the
/// administrators' word in a room is this account's, which no client can log in as, and
/// the records bridge believes policy events from it alone.
pub const POLICY_LOCALPART: &str = "_kairan_policy";

/// The in-memory side of administration, held by [`Services`].
#[derive(Debug, Default)]
pub struct AdminState {
    /// The day (`YYYY-MM-DD`) each user's sync activity was last recorded for.
    activity_seen: Mutex<HashMap<OwnedUserId, String>>,
    /// Servers this one may federate with; `*` allows any. Empty: none.
    federation_allowlist: RwLock<Vec<String>>,
    /// The registration mode set at run time, over `registration.mode`.
    registration_mode: RwLock<Option<RegistrationMode>>,
}

/// The media policy as stored and shown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MediaPolicyJson {
    pub max_upload_bytes: u64,
    pub refused_types: Vec<String>,
    pub allowed_types: Vec<String>,
}

impl From<&MediaPolicy> for MediaPolicyJson {
    fn from(p: &MediaPolicy) -> Self {
        Self {
            max_upload_bytes: p.max_upload_bytes,
            refused_types: p.refused_types.clone(),
            allowed_types: p.allowed_types.clone(),
        }
    }
}

impl Services {
    /// Applies the server policy stored in the database (over the configuration file).
    /// Called once at start; a bad stored entry is logged and skipped, not fatal.
    pub async fn load_admin_policy(&self) -> anyhow::Result<()> {
        *self.admin.federation_allowlist.write().unwrap_or_else(|e| e.into_inner()) =
            self.config.federation.allowlist.clone();
        for (name, value) in self.store.server_policies().await? {
            if let Err(e) = self.apply_server_policy(&name, &value) {
                tracing::error!(name, error = %e.message, "ignoring a stored server policy entry");
            }
        }
        Ok(())
    }

    /// Puts one stored server policy entry into effect.
    fn apply_server_policy(&self, name: &str, value: &str) -> Result<()> {
        let bad = |e: serde_json::Error| Error::internal("stored server policy", e);
        match name {
            POLICY_FEDERATION => {
                let list: Vec<String> = serde_json::from_str(value).map_err(bad)?;
                *self.admin.federation_allowlist.write().unwrap_or_else(|e| e.into_inner()) = list;
            }
            POLICY_MEDIA => {
                let p: MediaPolicyJson = serde_json::from_str(value).map_err(bad)?;
                let policy = MediaPolicy::new(p.max_upload_bytes, &p.refused_types, &p.allowed_types)
                    .map_err(Error::invalid_param)?;
                self.media.set_policy(policy);
            }
            POLICY_REGISTRATION => {
                let mode: RegistrationMode = serde_json::from_str(value).map_err(bad)?;
                *self.admin.registration_mode.write().unwrap_or_else(|e| e.into_inner()) = Some(mode);
            }
            other => tracing::warn!(name = other, "unknown server policy entry"),
        }
        Ok(())
    }

    /// Stores a server policy entry and puts it into effect for the next request.
    pub async fn set_server_policy(&self, name: &str, value: &serde_json::Value, by: &UserId) -> Result<()> {
        let text = value.to_string();
        // Check it applies before storing it, so that the table only holds good entries.
        self.apply_server_policy(name, &text)?;
        self.store.put_server_policy(name, &text, by.as_str(), now_ms()).await?;
        tracing::info!(name, value = %text, by = %by, "server policy changed");
        Ok(())
    }

    /// Who may register through the client API now: the run-time setting, else the file's.
    pub fn registration_mode(&self) -> RegistrationMode {
        self.admin.registration_mode.read().unwrap_or_else(|e| e.into_inner()).unwrap_or(self.config.registration.mode)
    }

    /// The federation allowlist: server names, or `*` for any. Federation itself is not
    /// built yet; its code is to ask [`Services::federation_allowed`] before talking to,
    /// or accepting a request from, another server.
    pub fn federation_allowlist(&self) -> Vec<String> {
        self.admin.federation_allowlist.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether this server may federate with `server`. Closed by default: an empty list
    /// allows no one; `*` allows everyone; `*.example` allows the subdomains of example.
    pub fn federation_allowed(&self, server: &ServerName) -> bool {
        let name = server.as_str().to_ascii_lowercase();
        self.admin.federation_allowlist.read().unwrap_or_else(|e| e.into_inner()).iter().any(|entry| {
            let entry = entry.to_ascii_lowercase();
            entry == "*"
                || entry == name
                || entry.strip_prefix("*.").is_some_and(|suffix| name.ends_with(&format!(".{suffix}")))
        })
    }

    /// Records that a user is active today (called from the sync handlers). At most one
    /// database write per user per day; failures are logged, never the client's problem.
    pub async fn note_sync_activity(&self, user: &UserId) {
        let day = kairan_core::time::day_of_ms(now_ms(), self.config.admin.utc_offset_seconds());
        {
            let mut seen = self.admin.activity_seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.get(user) == Some(&day) {
                return;
            }
            seen.insert(user.to_owned(), day.clone());
        }
        if let Err(e) = self.store.record_daily_activity(user.as_str(), &day).await {
            tracing::warn!(%user, error = %e, "cannot record sync activity");
            self.admin.activity_seen.lock().unwrap_or_else(|e| e.into_inner()).remove(user);
        }
    }

    /// Refuses joins to a room an administrator shut down with blocking.
    pub async fn check_room_not_blocked(&self, room_id: &RoomId) -> Result<()> {
        if self.store.is_room_blocked(room_id.as_str()).await? {
            return Err(Error::forbidden(format!("room {room_id} has been shut down by an administrator")));
        }
        Ok(())
    }

    /// The room policy's rules for a new event: in a room whose policy forbids
    /// encryption, `m.room.encryption` is refused. Cheap for every other event type.
    /// The server's policy account.
    pub fn policy_account(&self) -> OwnedUserId {
        // The server name was validated at load and the localpart is a constant.
        OwnedUserId::try_from(format!("@{POLICY_LOCALPART}:{}", self.server_name())).expect("valid policy account id")
    }

    /// Creates the policy account on first start: no password (no one logs in as it),
    /// not an administrator of the server; it acts only through the admin API.
    pub async fn ensure_policy_account(&self) -> Result<()> {
        let id = self.policy_account();
        if self.store.user(id.as_str()).await?.is_none() {
            self.store.create_user(id.as_str(), None, false, POLICY_LOCALPART, now_ms()).await?;
            tracing::info!(user_id = %id, "created the account that sends room policy events");
        }
        Ok(())
    }

    /// Refuses a room policy event from anyone but the policy account: the event is the
    /// administrators' word, given through the admin API only.
    pub fn check_policy_sender(&self, event_type: &str, sender: &ruma::UserId) -> Result<()> {
        if event_type == kairan_types::room_policy::EVENT_TYPE && sender != self.policy_account() {
            return Err(Error::forbidden(format!(
                "{} is set by the server's administrators (kairan-admin policy room set), not by clients",
                kairan_types::room_policy::EVENT_TYPE
            )));
        }
        Ok(())
    }

    pub async fn check_event_policy(&self, room_id: &RoomId, event_type: &str) -> Result<()> {
        if event_type != "m.room.encryption" {
            return Ok(());
        }
        if let Some(p) = self.store.room_policy(room_id.as_str()).await?
            && p.encryption.as_deref() == Some("forbidden")
        {
            return Err(Error::forbidden("the room policy forbids encryption in this room"));
        }
        Ok(())
    }
}
