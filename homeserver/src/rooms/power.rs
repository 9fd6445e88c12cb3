//! Power levels as the room version defines them: the one place that turns
//! `m.room.power_levels` and `m.room.create` into levels, on ruma's [`RoomPowerLevels`].
//!
//! Every question of "may this user do that" (redactions, directory changes, the policy
//! account, push conditions, restricted joins) is answered here, with the defaults the
//! authorisation rules use (ruma-state-res, as Synapse): without a power-levels event the
//! creators have 100, everyone else 0, and a state event needs 50.

use std::sync::Arc;

use kairan_core::error::{Error, Result};
use ruma::{
    OwnedUserId, RoomId,
    events::{
        StateEventType,
        room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource, UserPowerLevel},
    },
    room_version_rules::RoomVersionRules,
};

use super::{Pdu, StateMap};
use crate::services::Services;

/// The power levels given a room's power-levels and create events (either may be absent).
pub fn power_levels_from(
    power_levels: Option<&Pdu>,
    create: Option<&Pdu>,
    rules: &RoomVersionRules,
) -> RoomPowerLevels {
    let content = power_levels.and_then(|p| serde_json::from_str::<RoomPowerLevelsEventContent>(p.content.get()).ok());
    // The creators: privileged without limit from v12, and 100 before it when the room has
    // no power-levels event (ruma applies each as the version says).
    let mut creators = Vec::new();
    if let Some(create) = create {
        creators.push(create.sender.clone());
        if rules.authorization.additional_room_creators
            && let Some(extra) = create.content_value()["additional_creators"].as_array()
        {
            creators.extend(extra.iter().filter_map(|u| u.as_str()).filter_map(|u| OwnedUserId::try_from(u).ok()));
        }
    }
    RoomPowerLevels::new(RoomPowerLevelsSource::from(content), &rules.authorization, creators)
}

impl Services {
    /// The power levels in force in `state`.
    pub(crate) async fn power_levels_in(&self, state: &StateMap, rules: &RoomVersionRules) -> Result<RoomPowerLevels> {
        let get = |kind: &str| state.get(&(kind.to_owned(), String::new()));
        let power_levels = match get("m.room.power_levels") {
            Some(id) => self.pdu(id).await?,
            None => None,
        };
        let create = match get("m.room.create") {
            Some(id) => self.pdu(id).await?,
            None => None,
        };
        Ok(power_levels_from(power_levels.as_deref(), create.as_deref(), rules))
    }

    /// A room's rules and its current power-levels and create events, which decide its
    /// power levels.
    pub(crate) async fn current_power_events(
        &self,
        room_id: &RoomId,
    ) -> Result<(RoomVersionRules, Option<Arc<Pdu>>, Option<Arc<Pdu>>)> {
        let rules = self.rules_of(room_id).await?;
        let event = |kind: &'static str| async move {
            match self.store.current_state_event(room_id.as_str(), kind, "").await? {
                Some(id) => self.pdu(&id).await,
                None => Ok(None),
            }
        };
        let (power_levels, create) = (event("m.room.power_levels").await?, event("m.room.create").await?);
        Ok((rules, power_levels, create))
    }

    /// The power levels in force in a room now (its current state).
    pub(crate) async fn current_power_levels(&self, room_id: &RoomId) -> Result<RoomPowerLevels> {
        let (rules, power_levels, create) = self.current_power_events(room_id).await?;
        Ok(power_levels_from(power_levels.as_deref(), create.as_deref(), &rules))
    }

    /// Fails unless the user's power level reaches what sending a state event of
    /// `event_type` requires: the rule Synapse applies to directory changes.
    pub async fn require_power(&self, room_id: &RoomId, user: &ruma::UserId, event_type: &str) -> Result<()> {
        let levels = self.current_power_levels(room_id).await?;
        let kind = StateEventType::from(event_type);
        if levels.user_can_send_state(user, kind.clone()) {
            return Ok(());
        }
        let (mine, needed) = (describe_level(levels.for_user(user)), levels.for_state(kind));
        Err(Error::forbidden(format!("your power level {mine} is below the {needed} needed")))
    }
}

/// A level for a message: a number, or "unlimited" for a v12 creator.
pub fn describe_level(level: UserPowerLevel) -> String {
    match level {
        UserPowerLevel::Int(level) => level.to_string(),
        _ => "unlimited".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use ruma::{int, user_id};
    use serde_json::json;

    use super::*;
    use crate::rooms::version_rules;

    fn pdu(kind: &str, sender: &str, content: serde_json::Value) -> std::sync::Arc<Pdu> {
        let event = json!({
            "type": kind, "sender": sender, "state_key": "", "content": content, "room_id": "!r:pref.example",
            "origin_server_ts": 1, "depth": 1, "prev_events": [], "auth_events": [], "hashes": {"sha256": "x"},
            "signatures": {},
        });
        Pdu::from_stored("$e", "!r:pref.example", &event.to_string()).expect("a PDU")
    }

    /// The case two readers disagreed on: a room without a power-levels event. The
    /// authorisation rules (ruma-state-res, Synapse) need 50 for a state event there, and
    /// give the creator 100; one reader had 0 and 50, another 50 and 0 for the creator.
    #[test]
    fn without_a_power_levels_event_state_needs_50_and_the_creator_has_100() {
        let rules = version_rules("10").unwrap();
        let create = pdu("m.room.create", "@mayor:pref.example", json!({ "room_version": "10" }));
        let levels = power_levels_from(None, Some(&*create), &rules);
        assert_eq!(levels.for_state(StateEventType::from("m.room.topic")), int!(50));
        assert_eq!(levels.for_state(StateEventType::from("jp.kairan.room.policy")), int!(50));
        assert_eq!(levels.for_user(user_id!("@mayor:pref.example")), UserPowerLevel::Int(int!(100)));
        assert_eq!(levels.for_user(user_id!("@clerk:pref.example")), UserPowerLevel::Int(int!(0)));
        assert_eq!(levels.invite, int!(0));

        // From v12 the creator's power has no limit, with or without the event.
        let rules = version_rules("12").unwrap();
        let create = pdu("m.room.create", "@mayor:pref.example", json!({ "room_version": "12" }));
        let levels = power_levels_from(None, Some(&*create), &rules);
        assert_eq!(levels.for_user(user_id!("@mayor:pref.example")), UserPowerLevel::Infinite);
        assert_eq!(levels.for_state(StateEventType::from("m.room.topic")), int!(50));
    }

    #[test]
    fn the_power_levels_event_decides_when_there_is_one() {
        let rules = version_rules("10").unwrap();
        let create = pdu("m.room.create", "@mayor:pref.example", json!({ "room_version": "10" }));
        let pl = pdu(
            "m.room.power_levels",
            "@mayor:pref.example",
            json!({ "users": { "@clerk:pref.example": "30" }, "state_default": 20, "events": { "m.room.name": 40 } }),
        );
        let levels = power_levels_from(Some(&*pl), Some(&*create), &rules);
        // Old rooms may write levels as strings.
        assert_eq!(levels.for_user(user_id!("@clerk:pref.example")), UserPowerLevel::Int(int!(30)));
        assert_eq!(levels.for_user(user_id!("@mayor:pref.example")), UserPowerLevel::Int(int!(0)));
        assert_eq!(levels.for_state(StateEventType::from("m.room.topic")), int!(20));
        assert_eq!(levels.for_state(StateEventType::from("m.room.name")), int!(40));
    }
}
