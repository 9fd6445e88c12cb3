//! Power levels as the room version defines them, read from a state map: the one place
//! that turns `m.room.power_levels` (and, in v12 rooms, the creators) into levels.

use ruma::{
    OwnedUserId,
    events::room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource},
    room_version_rules::RoomVersionRules,
};

use super::StateMap;
use crate::{error::Result, services::Services};

impl Services {
    /// The power levels in force in `state` (defaults when the room has none; v12
    /// creators privileged as their version says).
    pub(crate) async fn power_levels_in(&self, state: &StateMap, rules: &RoomVersionRules) -> Result<RoomPowerLevels> {
        let content = match state.get(&("m.room.power_levels".to_owned(), String::new())) {
            Some(id) => self
                .pdu(id)
                .await?
                .and_then(|p| serde_json::from_str::<RoomPowerLevelsEventContent>(p.content.get()).ok()),
            None => None,
        };
        let mut creators = Vec::new();
        if rules.authorization.explicitly_privilege_room_creators
            && let Some(id) = state.get(&("m.room.create".to_owned(), String::new()))
            && let Some(create) = self.pdu(id).await?
        {
            creators.push(create.sender.clone());
            if let Some(extra) = create.content_value()["additional_creators"].as_array() {
                creators.extend(extra.iter().filter_map(|u| u.as_str()).filter_map(|u| OwnedUserId::try_from(u).ok()));
            }
        }
        Ok(RoomPowerLevels::new(RoomPowerLevelsSource::from(content), &rules.authorization, creators))
    }
}
