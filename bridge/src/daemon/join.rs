//! Which rooms the daemon stays in: an invited or joined room's policy is read from its
//! current state; an official room is archived, any other left.

use anyhow::bail;
use kairan_types::room_policy::RoomPolicy;
use matrix_sdk::ruma::OwnedRoomId;
use serde_json::{Value, json};

use super::{Daemon, http::enc};
use crate::{metrics::Failure, policy};

impl Daemon {
    /// Joins, reads the policy, and stays only if the room is official.
    pub(super) async fn consider_invite(&self, room_id: OwnedRoomId) {
        let Some(room) = self.client.get_room(&room_id) else { return };
        if let Err(e) = room.join().await {
            self.metrics.failed(Failure::invite);
            tracing::warn!(room = %room_id, error = %e, "could not join an invited room");
            return;
        }
        if let Err(e) = self.check_joined_room(room_id.clone()).await {
            self.metrics.failed(Failure::invite);
            tracing::warn!(room = %room_id, error = format!("{e:#}"), "could not check the room's policy");
        }
    }

    /// Reads the policy of a joined room; official: archive it, else leave.
    pub(super) async fn check_joined_room(&self, room_id: OwnedRoomId) -> anyhow::Result<()> {
        let policy = self.current_policy(room_id.as_str()).await?;
        match policy {
            Some((policy, raw)) if policy.official => {
                tracing::info!(room = %room_id, retention = ?policy.retention, "archiving an official room");
                self.archive.upsert_room(room_id.as_str(), Some(&raw), true).await?;
            }
            other => {
                tracing::info!(room = %room_id, policy = ?other.map(|p| p.0), "not an official room; leaving");
                self.archive.upsert_room(room_id.as_str(), None, false).await?;
                if let Some(room) = self.client.get_room(&room_id) {
                    room.leave().await.ok();
                } else {
                    self.post_json(&format!("/_matrix/client/v3/rooms/{}/leave", enc(room_id.as_str())), &json!({}))
                        .await
                        .ok();
                }
            }
        }
        Ok(())
    }

    /// The room's policy from its current state, if set by a trusted sender.
    async fn current_policy(&self, room_id: &str) -> anyhow::Result<Option<(RoomPolicy, String)>> {
        let state: Value = self.get_json(&format!("/_matrix/client/v3/rooms/{}/state", enc(room_id))).await?;
        let Some(events) = state.as_array() else { bail!("GET /state did not return a list") };
        let Some(event) = policy::policy_event(events) else { return Ok(None) };
        let sender = event["sender"].as_str().unwrap_or_default();
        if !policy::is_policy_sender(&self.policy_servers, sender) {
            tracing::warn!(
                room = room_id,
                sender,
                "policy event not from the policy account of a server in policy_servers; ignored"
            );
            return Ok(None);
        }
        Ok(Some(policy::read_policy(event)))
    }
}
