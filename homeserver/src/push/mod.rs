//! Push rules: each user's ruleset, its evaluation for every event, and delivery of
//! notifications to on-premises push gateways.
//!
//! Rules are stored as the user's `m.push_rules` account data (so clients receive
//! changes through `/sync`); evaluation uses ruma's implementation of the spec's
//! conditions. Each event's notifications are written in the same transaction as the
//! event, so unread counts never lag behind the timeline.

mod gateway;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{
    OwnedUserId, UInt, UserId,
    events::push_rules::PushRulesEventContent,
    push::{Action, PushConditionRoomCtx, Ruleset},
    room_version_rules::RoomVersionRules,
    serde::Raw,
};
use serde_json::Value;

use crate::{
    rooms::{Pdu, StateMap},
    services::Services,
    storage::PushAction,
};
use kairan_core::error::{Error, Result};

/// Rulesets in memory, by user; replaced whenever a user changes a rule.
#[derive(Default)]
pub struct PushRuleCache {
    rulesets: Mutex<HashMap<OwnedUserId, Arc<Ruleset>>>,
}

impl Services {
    /// The user's ruleset: what they saved, or the spec's defaults.
    pub async fn push_ruleset(&self, user: &UserId) -> Result<Arc<Ruleset>> {
        if let Some(r) = self.push.rulesets.lock().unwrap_or_else(|e| e.into_inner()).get(user) {
            return Ok(r.clone());
        }
        let ruleset = match self.store.account_data(user.as_str(), "", "m.push_rules").await? {
            Some(json) => serde_json::from_str::<PushRulesEventContent>(&json)
                .map(|c| c.global)
                .unwrap_or_else(|_| Ruleset::server_default(user)),
            None => Ruleset::server_default(user),
        };
        let ruleset = Arc::new(ruleset);
        self.push.rulesets.lock().unwrap_or_else(|e| e.into_inner()).insert(user.to_owned(), ruleset.clone());
        Ok(ruleset)
    }

    /// Saves a changed ruleset and tells the user's clients through `/sync`.
    pub async fn save_push_ruleset(&self, user: &UserId, ruleset: Ruleset) -> Result<()> {
        let content = PushRulesEventContent::new(ruleset.clone());
        let json = serde_json::to_string(&content).map_err(|e| Error::internal("push rules", e))?;
        let pos = self.store.put_account_data(user.as_str(), "", "m.push_rules", &json).await?;
        self.push.rulesets.lock().unwrap_or_else(|e| e.into_inner()).insert(user.to_owned(), Arc::new(ruleset));
        self.notifier.advance(pos, kairan_core::notifier::Audience::user(user.as_str()));
        Ok(())
    }

    /// The notifications `pdu` produces for the room's local members, by their rules,
    /// given the state before it.
    pub(crate) async fn push_actions_for(
        &self,
        pdu: &Pdu,
        state: &StateMap,
        rules: &RoomVersionRules,
    ) -> Result<Vec<PushAction>> {
        let mut members: Vec<(OwnedUserId, String)> = Vec::new();
        for ((t, key), id) in state.iter() {
            if t != "m.room.member" {
                continue;
            }
            let Ok(user) = OwnedUserId::try_from(key.as_str()) else { continue };
            if user == pdu.sender || !self.is_local(&user) {
                continue;
            }
            let Some(member) = self.pdu(id).await? else { continue };
            let content = member.content_value();
            if content["membership"] == "join" {
                let name = content["displayname"].as_str().unwrap_or(user.localpart()).to_owned();
                members.push((user, name));
            }
        }
        // An invitation notifies the invitee, who is not a member yet.
        if pdu.kind.to_string() == "m.room.member"
            && let Some(target) = pdu.state_key.as_deref().and_then(|k| OwnedUserId::try_from(k).ok())
            && self.is_local(&target)
            && target != pdu.sender
            && pdu.content_value()["membership"] == "invite"
        {
            let name = target.localpart().to_owned();
            members.push((target, name));
        }
        if members.is_empty() {
            return Ok(vec![]);
        }
        let joined = state.keys().filter(|(t, _)| t == "m.room.member").count();
        let member_count = UInt::try_from(joined as u64).unwrap_or_default();
        let power_levels = self.power_levels_ctx(state, rules).await?;
        let event = Raw::<Value>::from_json(
            serde_json::value::to_raw_value(&pdu.with_ids()).map_err(|e| Error::internal("push", e))?,
        );
        let thread_id = match pdu.relation() {
            Some((rel, root)) if rel == "m.thread" => root,
            _ => "main".to_owned(),
        };
        let mut out = Vec::new();
        for (user, display_name) in members {
            let ruleset = self.push_ruleset(&user).await?;
            let mut ctx = PushConditionRoomCtx::new(pdu.room_id.clone(), member_count, user.clone(), display_name);
            ctx.power_levels = power_levels.clone();
            let actions = ruleset.get_actions(&event, &ctx).await;
            if actions.iter().any(Action::should_notify) {
                out.push(PushAction {
                    user_id: user.to_string(),
                    thread_id: thread_id.clone(),
                    highlight: actions.iter().any(Action::is_highlight),
                    actions: serde_json::to_string(actions).unwrap_or_else(|_| "[]".to_owned()),
                });
            }
        }
        Ok(out)
    }

    async fn power_levels_ctx(
        &self,
        state: &StateMap,
        rules: &RoomVersionRules,
    ) -> Result<Option<ruma::push::PushConditionPowerLevelsCtx>> {
        let levels = self.power_levels_in(state, rules).await?;
        Ok(Some(levels.into()))
    }
}

pub use self::gateway::{deliver, gateway_allowed, gateway_client, gateway_origin};
