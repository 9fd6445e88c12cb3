//! Device lists: whose devices a client should fetch again (`/sync`'s `device_lists`,
//! `/keys/changes`). Changes are rows on the `stream` counter (`device_list_changes`), read
//! like any other stream data.

use std::collections::BTreeSet;

use ruma::UserId;
use serde_json::Value;

use super::E2ee;
use kairan_core::error::Result;

/// `content.membership` of a stored member event.
fn membership_of(pdu_json: &str) -> Option<&'static str> {
    let v: Value = serde_json::from_str(pdu_json).ok()?;
    match v.get("content")?.get("membership")?.as_str()? {
        "join" => Some("join"),
        "invite" => Some("invite"),
        "leave" => Some("leave"),
        "ban" => Some("ban"),
        "knock" => Some("knock"),
        _ => None,
    }
}

impl E2ee<'_> {
    /// Removes the keys of deleted devices (all of the user's with `None`) and tells
    /// the users who share a room with them. Call it wherever devices are deleted.
    pub async fn forget_device_keys(&self, user: &UserId, device_ids: Option<&[String]>) -> Result<()> {
        // The devices that had keys, for the other servers' copies of the device list.
        let with_keys: Vec<String> = self
            .services
            .store
            .device_ids_with_keys(user.as_str())
            .await?
            .into_iter()
            .filter(|d| device_ids.is_none_or(|ids| ids.contains(d)))
            .collect();
        if let Some(pos) = self.services.store.delete_device_keys(user.as_str(), device_ids).await? {
            self.services.notifier.advance(pos, kairan_core::notifier::Audience::Everyone);
            for device in &with_keys {
                self.services.announce_device_update(user, device, pos, true).await;
            }
        }
        Ok(())
    }

    /// After a device's display name changed: users sharing a room with its owner, here
    /// and on other servers, hear of it (the name travels with the device's keys). A
    /// device without keys is nobody else's concern yet.
    pub async fn device_renamed(&self, user: &UserId, device_id: &str) -> Result<()> {
        if !self.services.store.device_ids_with_keys(user.as_str()).await?.iter().any(|d| d == device_id) {
            return Ok(());
        }
        let pos = self.services.store.record_device_list_change(user.as_str()).await?;
        self.services.notifier.advance(pos, kairan_core::notifier::Audience::Everyone);
        self.services.announce_device_update(user, device_id, pos, false).await;
        Ok(())
    }

    /// Users whose devices `user` should re-fetch, and users it no longer shares a room
    /// with, for changes in `(since, to]`: `(changed, left)`.
    pub async fn device_list_changes(&self, user: &UserId, since: i64, to: i64) -> Result<(Vec<String>, Vec<String>)> {
        let me = user.as_str();
        let sharing: BTreeSet<String> = self.services.store.users_sharing_rooms(me).await?.into_iter().collect();
        let mut changed = BTreeSet::new();
        let mut left = BTreeSet::new();
        for (other, only_for_me) in self.services.store.device_list_changes(me, since, to).await? {
            if only_for_me || other == me || sharing.contains(&other) {
                changed.insert(other);
            }
        }
        // Others joining and leaving the user's rooms.
        for (_, member, json, prev) in self.services.store.member_events_in_joined_rooms(me, since, to).await? {
            if member == me {
                continue;
            }
            let now_joined = membership_of(&json) == Some("join");
            let was_joined = prev.as_deref().and_then(membership_of) == Some("join");
            if now_joined && !was_joined && sharing.contains(&member) {
                changed.insert(member);
            } else if !now_joined && was_joined && !sharing.contains(&member) {
                left.insert(member);
            }
        }
        // The user's own joins and leaves.
        for row in self.services.store.membership_changes(me, since, to).await? {
            let membership = membership_of(&row.pdu_json);
            let was_joined = match &row.replaces_state {
                Some(prev) => {
                    self.services.store.event(prev).await?.is_some_and(|e| membership_of(&e.pdu_json) == Some("join"))
                }
                None => false,
            };
            for (member, m, _) in self.services.store.members(&row.room_id).await? {
                if m != "join" {
                    continue;
                }
                if membership == Some("join") && !was_joined && sharing.contains(&member) {
                    changed.insert(member);
                } else if membership != Some("join") && was_joined && !sharing.contains(&member) {
                    left.insert(member);
                }
            }
        }
        left.remove(me);
        changed.retain(|u| !left.contains(u));
        Ok((changed.into_iter().collect(), left.into_iter().collect()))
    }
}
