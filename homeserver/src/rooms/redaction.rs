//! Who may redact what. Since room version 3 the authorisation rules let any member send
//! an `m.room.redaction`; whether it takes effect is left to each server, which applies it
//! only when the redactor has the room's `redact` level or, failing that, is on the same
//! server as the sender of the event redacted (for a local user: is that sender). A
//! redaction whose target is not yet held is withheld until the target arrives, and only
//! then judged. Every path an event enters by (a local send of any kind, a PDU from
//! another server, a backfilled event) goes through here.

use ruma::{EventId, OwnedEventId, UserId, room_version_rules::RoomVersionRules};

use super::{Pdu, StateMap};
use crate::{
    services::Services,
    storage::{NewEvent, PendingRedaction},
};
use kairan_core::error::{Error, Result};

/// State event types that no client may redact: the server ACL (as Synapse refuses) and
/// the administrators' room policy, which only the admin API changes.
const UNREDACTABLE: [&str; 2] = ["m.room.server_acl", kairan_types::room_policy::EVENT_TYPE];

/// What a redaction does to the event it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RedactionEffect {
    /// Redact the target now.
    Apply(String),
    /// The target is not held: remember the redaction, and judge it when the target arrives.
    Withheld(PendingRedaction),
    /// Not allowed: the redaction event stays in the room, the target stays whole.
    Ignored,
}

impl Services {
    /// Refuses a local user's redaction that the room does not allow: the target must be
    /// an event of this room that the user sent (with the power to redact their own
    /// events), or the user must have the `redact` level.
    pub(super) async fn check_local_redaction(
        &self,
        rules: &RoomVersionRules,
        sender: &UserId,
        room_id: &ruma::RoomId,
        target: &EventId,
        state_before: &StateMap,
    ) -> Result<()> {
        let levels = self.power_levels_in(state_before, rules).await?;
        let target = self.pdu(target.as_str()).await?;
        if let Some(t) = &target {
            if t.room_id != room_id {
                return Err(Error::invalid_param("the event to redact is in another room"));
            }
            if t.state_key.is_some() && UNREDACTABLE.contains(&t.kind.to_string().as_str()) {
                return Err(Error::forbidden(format!("{} events cannot be redacted", t.kind)));
            }
        }
        if levels.user_can_redact_event_of_other(sender) {
            return Ok(());
        }
        match target {
            None => Err(Error::not_found("the event to redact is not known here")),
            Some(t) if t.sender == sender && levels.user_can_redact_own_event(sender) => Ok(()),
            Some(_) => {
                let yours = super::power::describe_level(levels.for_user(sender));
                Err(Error::forbidden(format!(
                    "redacting other users' events needs power level {}; yours is {yours}",
                    levels.redact
                )))
            }
        }
    }

    /// What a redaction PDU (of any origin) does, judged against the state before it.
    pub(crate) async fn redaction_effect(
        &self,
        rules: &RoomVersionRules,
        pdu: &Pdu,
        state_before: &StateMap,
    ) -> Result<Option<RedactionEffect>> {
        let Some(target) = &pdu.redacts else { return Ok(None) };
        let powerful = self.power_levels_in(state_before, rules).await?.user_can_redact_event_of_other(&pdu.sender);
        let effect = match self.pdu(target.as_str()).await? {
            Some(t) if t.room_id != pdu.room_id => RedactionEffect::Ignored,
            Some(t) if powerful || t.sender.server_name() == pdu.sender.server_name() => {
                RedactionEffect::Apply(target.to_string())
            }
            Some(_) => RedactionEffect::Ignored,
            None => RedactionEffect::Withheld(PendingRedaction {
                target: target.to_string(),
                redaction: pdu.event_id.to_string(),
                only_server: (!powerful).then(|| pdu.sender.server_name().to_string()),
            }),
        };
        if effect == RedactionEffect::Ignored {
            tracing::info!(
                redaction = %pdu.event_id, %target, sender = %pdu.sender,
                "redaction not applied: the sender may not redact that event"
            );
        }
        Ok(Some(effect))
    }

    /// Fills in what a redaction does, and whether a redaction withheld earlier applies to
    /// this event now that it has arrived.
    pub(crate) async fn judge_redactions(&self, pdu: &Pdu, state_before: &StateMap, new: &mut NewEvent) -> Result<()> {
        if pdu.redacts.is_some() {
            let rules = self.rules_of(&pdu.room_id).await?;
            match self.redaction_effect(&rules, pdu, state_before).await? {
                Some(RedactionEffect::Apply(target)) => new.redacts = Some(target),
                Some(RedactionEffect::Withheld(pending)) => new.withheld_redaction = Some(pending),
                Some(RedactionEffect::Ignored) | None => {}
            }
        }
        // A local event is new: nothing can have named it before it was made.
        if self.is_local(&pdu.sender) {
            return Ok(());
        }
        let server = pdu.sender.server_name().as_str();
        new.redacted_by = self
            .store
            .withheld_redactions_of(pdu.event_id.as_str(), pdu.room_id.as_str())
            .await?
            .into_iter()
            .find(|p| p.only_server.as_deref().is_none_or(|s| s == server))
            .map(|p| p.redaction);
        Ok(())
    }
}

/// The event a redaction template names (top-level `redacts` or, since v11, in content).
pub(super) fn redaction_target(template: &super::EventTemplate) -> Result<Option<OwnedEventId>> {
    if template.kind != "m.room.redaction" {
        return Ok(None);
    }
    let named = template.redacts.clone().or_else(|| {
        template.content.get("redacts").and_then(|v| v.as_str()).and_then(|s| OwnedEventId::try_from(s).ok())
    });
    named.map(Some).ok_or_else(|| Error::bad_json("a redaction must name the event it redacts (redacts)"))
}
