//! The archive account's guard: removed from an official room by someone else, it is
//! logged as an error and counted, and after a kick the policy account invites it back.

use ruma::{OwnedUserId, RoomId, UserId};

use crate::{rooms::MembershipAction, services::Services};
use kairan_core::error::{Error, Result};

impl Services {
    /// Watches the archive account's membership: removed from an official room by someone
    /// else, it is logged as an error and counted, and after a kick (not a ban, which is a
    /// decision to be undone by a person) the policy account invites it back. Runs after
    /// the event is stored, outside the room's lock.
    pub(crate) fn guard_archive_membership(&self, pdu: &crate::rooms::Pdu) {
        let archive = self.config.admin.archive_user.as_str();
        if archive.is_empty() || pdu.state_key.as_deref() != Some(archive) || pdu.sender == archive {
            return;
        }
        if pdu.kind != ruma::events::TimelineEventType::RoomMember {
            return;
        }
        let membership = pdu.content_value()["membership"].as_str().unwrap_or_default().to_owned();
        if !matches!(membership.as_str(), "leave" | "ban") {
            return;
        }
        let Some(services) = self.handle() else { return };
        let (room_id, by) = (pdu.room_id.clone(), pdu.sender.clone());
        tokio::spawn(async move {
            if let Err(e) = services.archive_removed(&room_id, &by, &membership).await {
                tracing::error!(%room_id, error = %e, "could not invite the archive account back");
            }
        });
    }

    async fn archive_removed(&self, room_id: &RoomId, by: &UserId, membership: &str) -> Result<()> {
        if !self.store.room_policy(room_id.as_str()).await?.is_some_and(|p| p.official) {
            return Ok(());
        }
        let archive = OwnedUserId::try_from(self.config.admin.archive_user.as_str())
            .map_err(|e| Error::internal("admin.archive_user", e))?;
        kairan_core::metrics::metrics().archive_account_removed();
        tracing::error!(
            %room_id, %by, membership, archive = %archive,
            "the archive account was removed from an official room: its record has a gap until it is back"
        );
        if membership == "leave" {
            let needed = self.room_power(room_id).await?.invite();
            let sender = self.policy_sender(room_id, needed).await?;
            self.change_membership(room_id, &sender, &archive, MembershipAction::Invite, None, false).await?;
            tracing::warn!(%room_id, "the archive account was invited back into the official room");
        }
        Ok(())
    }
}
