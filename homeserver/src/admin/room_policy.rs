//! The room policy (official record, retention, encryption, servers), as administrators
//! set it.
//!
//! The policy is kept server-side (`room_policies`) and published into the room as the
//! state event `jp.kairan.room.policy` (state key ""), with the server ACL as
//! `m.room.server_acl` and required encryption as `m.room.encryption`.
//!
//! Who sends those events: always the server's policy account (`@_kairan_policy:server`,
//! [`Services::policy_account`]), never the administrator's own account, so that the
//! policy in a room is recognisably the administrators' word and no client can send it
//! (the room layer refuses `jp.kairan.room.policy` from any other sender). Events in a
//! room need a member with the power for them: if the policy account is not one yet, the
//! room's most powerful local member (the "steward") brings it in: invited if the room is
//! not public, joined, and raised to power level 100 (or the steward's own level, if lower
//! but enough); without such a member the change is refused with `M_FORBIDDEN`, nothing
//! having been sent. The calling administrator is named in the audit log.

use std::collections::BTreeSet;

use kairan_types::room_policy::{self, ON_EXPIRY, RETENTION_CLASSES, RoomPolicy};
use ruma::{
    OwnedRoomId, OwnedUserId, RoomId, ServerName, UserId,
    events::{
        StateEventType,
        room::{
            power_levels::{RoomPowerLevels, UserPowerLevel},
            server_acl::RoomServerAclEventContent,
        },
    },
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    rooms::{EventTemplate, MembershipAction, power_levels_from},
    services::Services,
    storage::RoomPolicyRow,
};
use kairan_core::{
    error::{Error, Result},
    time::{self, now_ms},
};

/// A change of a room's policy; absent fields keep their value.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoomPolicyUpdate {
    pub official: Option<bool>,
    pub retention: Option<String>,
    pub on_expiry: Option<String>,
    /// The owning department; `""` clears it.
    pub department: Option<String>,
    /// `required`, `forbidden` or `none`.
    pub encryption: Option<String>,
    /// Servers allowed in the room (`m.room.server_acl` allow list; `*` wildcards).
    /// This server is always added.
    pub allowed_servers: Option<Vec<String>>,
}

/// A policy as the `room_policies` table holds it.
fn policy_of_row(r: &RoomPolicyRow) -> RoomPolicy {
    RoomPolicy {
        official: r.official,
        retention: r.retention.clone(),
        on_expiry: r.on_expiry.clone(),
        department: r.department.clone(),
        encryption: r.encryption.clone(),
        allowed_servers: r.allowed_servers.as_deref().and_then(|s| serde_json::from_str(s).ok()),
    }
}

/// What a policy change did.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyOutcome {
    pub room_id: OwnedRoomId,
    pub policy: RoomPolicy,
    /// The events sent into the room, by type.
    pub events: Vec<(String, String)>,
    /// The local account that sent them.
    pub sender: Option<OwnedUserId>,
    /// Whether the archive account was invited now.
    pub archive_invited: bool,
}

/// A room's power levels (from the one reader, `rooms/power.rs`), with the power-levels
/// event's content as written, which a change to one user's level keeps whole.
pub(super) struct Power {
    levels: RoomPowerLevels,
    content: Option<Value>,
    /// Whether creators hold unlimited power (room v12 and later).
    privileged_creators: bool,
}

/// A level as a number, unlimited as the largest.
fn as_number(level: UserPowerLevel) -> i64 {
    match level {
        UserPowerLevel::Int(level) => level.into(),
        _ => i64::MAX,
    }
}

impl Power {
    fn user(&self, user: &UserId) -> i64 {
        as_number(self.levels.for_user(user))
    }

    fn state(&self, event_type: &str) -> i64 {
        self.levels.for_state(StateEventType::from(event_type)).into()
    }

    pub(super) fn invite(&self) -> i64 {
        self.levels.invite.into()
    }
}

fn validate_policy(p: &RoomPolicy, server_name: &ServerName) -> Result<RoomPolicy> {
    let mut p = p.clone();
    if let Some(r) = &p.retention
        && !RETENTION_CLASSES.contains(&r.as_str())
    {
        return Err(Error::invalid_param(format!(
            "retention {r:?} is not a retention class; use one of {}",
            RETENTION_CLASSES.join(", ")
        )));
    }
    if let Some(e) = &p.on_expiry
        && !ON_EXPIRY.contains(&e.as_str())
    {
        return Err(Error::invalid_param(format!(
            "on_expiry {e:?} must be transfer (移管, to the archives) or dispose (廃棄)"
        )));
    }
    if let Some(e) = &p.encryption
        && e != "required"
        && e != "forbidden"
    {
        return Err(Error::invalid_param(format!("encryption {e:?} must be required, forbidden or none")));
    }
    if p.official {
        if p.retention.is_none() {
            return Err(Error::missing_param("an official room needs a retention class (retention)"));
        }
        if p.on_expiry.is_none() && p.retention.as_deref() != Some("permanent") {
            return Err(Error::missing_param("an official room needs what happens on expiry (on_expiry)"));
        }
        if p.department.is_none() {
            return Err(Error::missing_param("an official room needs its owning department (department)"));
        }
        if p.retention.as_deref() == Some("permanent") {
            p.on_expiry = None;
        }
    } else {
        p.retention = None;
        p.on_expiry = None;
    }
    if let Some(servers) = &mut p.allowed_servers {
        for s in servers.iter() {
            let ok = !s.is_empty()
                && s.len() <= 255
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:*?[]".contains(&b));
            if !ok {
                return Err(Error::invalid_param(format!("{s:?} is not a server name or pattern")));
            }
        }
        // This server stays in its own room: judged by ruma's matching, the one federation
        // applies (history.rs, ingest.rs).
        if !server_acl(servers).is_allowed(server_name) {
            servers.insert(0, server_name.to_string());
        }
        let mut seen = BTreeSet::new();
        servers.retain(|s| seen.insert(s.clone()));
    }
    Ok(p)
}

/// The ACL the policy writes (`allow_ip_literals` off, nothing denied), as federation applies it.
fn server_acl(allowed: &[String]) -> RoomServerAclEventContent {
    RoomServerAclEventContent::new(false, allowed.to_vec(), Vec::new())
}

pub(super) fn policy_json(p: &RoomPolicyRow, offset: i64) -> Value {
    let mut v = serde_json::to_value(policy_of_row(p)).unwrap_or_default();
    v["updated_ts"] = p.updated_ts.into();
    v["updated"] = time::format_ms(p.updated_ts, offset).into();
    v["updated_by"] = p.updated_by.clone().into();
    v
}

impl Services {
    /// The policy of a room: stored and published.
    pub async fn admin_room_policy(&self, room_id: &RoomId) -> Result<Value> {
        let policy = self.store.room_policy(room_id.as_str()).await?;
        let published = self.state_content(room_id, room_policy::EVENT_TYPE, "").await?;
        let offset = self.config.admin.utc_offset_seconds();
        Ok(json!({
            "room_id": room_id,
            "policy": policy.as_ref().map(|p| policy_json(p, offset)),
            "published": published,
            "server_acl": self.state_content(room_id, "m.room.server_acl", "").await?,
            "encrypted": self.state_content(room_id, "m.room.encryption", "").await?.is_some(),
            "blocked": self.store.is_room_blocked(room_id.as_str()).await?,
        }))
    }

    /// Changes a room's policy, publishes it into the room, and invites the archive
    /// account to official rooms.
    pub async fn admin_set_room_policy(
        &self,
        caller: &UserId,
        room_id: &RoomId,
        update: RoomPolicyUpdate,
    ) -> Result<PolicyOutcome> {
        let current = self.store.room_policy(room_id.as_str()).await?.map(|r| policy_of_row(&r)).unwrap_or_default();
        let mut next = current.clone();
        if let Some(o) = update.official {
            next.official = o;
        }
        if let Some(r) = update.retention {
            next.retention = Some(r.trim().to_lowercase()).filter(|r| !r.is_empty());
        }
        if let Some(e) = update.on_expiry {
            next.on_expiry = Some(e.trim().to_lowercase()).filter(|e| !e.is_empty());
        }
        if let Some(d) = update.department {
            next.department = Some(d.trim().to_owned()).filter(|d| !d.is_empty());
        }
        if let Some(e) = update.encryption {
            let e = e.trim().to_lowercase();
            next.encryption = (e != "none" && !e.is_empty()).then_some(e);
        }
        if let Some(s) = update.allowed_servers {
            next.allowed_servers = Some(s.into_iter().map(|s| s.trim().to_ascii_lowercase()).collect());
        }
        let next = validate_policy(&next, self.server_name())?;

        // What the room needs to show the policy.
        let encrypted = self.state_content(room_id, "m.room.encryption", "").await?.is_some();
        if next.encryption.as_deref() == Some("forbidden") && encrypted {
            return Err(Error::bad_state(
                "the room is already encrypted, and encryption cannot be turned off in a Matrix room",
            ));
        }
        let mut events: Vec<EventTemplate> = Vec::new();
        if let Some(servers) = &next.allowed_servers {
            let acl = serde_json::to_value(server_acl(servers)).map_err(|e| Error::internal("server ACL", e))?;
            if self.state_content(room_id, "m.room.server_acl", "").await?.as_ref() != Some(&acl) {
                events.push(EventTemplate::state("m.room.server_acl", "", acl));
            }
        }
        if next.encryption.as_deref() == Some("required") && !encrypted {
            events.push(EventTemplate::state("m.room.encryption", "", json!({ "algorithm": "m.megolm.v1.aes-sha2" })));
        }
        let content = next.to_content();
        if self.state_content(room_id, room_policy::EVENT_TYPE, "").await?.as_ref() != Some(&content) {
            events.push(EventTemplate::state(room_policy::EVENT_TYPE, "", content));
        }
        let archive = match self.config.admin.archive_user.as_str() {
            "" => None,
            a => Some(OwnedUserId::try_from(a).map_err(|e| Error::internal("admin.archive_user", e))?),
        };
        let invite_archive = match (&archive, next.official) {
            (Some(a), true) => {
                if self.is_local(a) && self.store.user(a.as_str()).await?.is_none() {
                    return Err(Error::not_found(format!(
                        "the archive account {a} (admin.archive_user) does not exist; create it first"
                    )));
                }
                match self.store.membership(room_id.as_str(), a.as_str()).await?.as_deref() {
                    Some("join" | "invite") => None,
                    Some("ban") => {
                        return Err(Error::forbidden(format!(
                            "the archive account {a} is banned from the room; unban it first"
                        )));
                    }
                    _ => Some(a.clone()),
                }
            }
            _ => None,
        };

        let mut outcome = PolicyOutcome {
            room_id: room_id.to_owned(),
            policy: next.clone(),
            events: Vec::new(),
            sender: None,
            archive_invited: false,
        };
        if !events.is_empty() || invite_archive.is_some() {
            let power = self.room_power(room_id).await?;
            let mut needed = events.iter().map(|t| power.state(&t.kind)).max().unwrap_or(0);
            if invite_archive.is_some() {
                needed = needed.max(power.invite());
            }
            let sender = self.policy_sender(room_id, needed).await?;
            for template in events {
                let kind = template.kind.clone();
                let pdu = self.append_event(room_id, &sender, template, None).await?;
                outcome.events.push((kind, pdu.event_id.to_string()));
            }
            if let Some(a) = &invite_archive {
                self.change_membership(room_id, &sender, a, MembershipAction::Invite, None, false).await?;
                outcome.archive_invited = true;
            }
            outcome.sender = Some(sender);
        }
        self.store
            .put_room_policy(&RoomPolicyRow {
                room_id: room_id.to_string(),
                official: next.official,
                retention: next.retention.clone(),
                on_expiry: next.on_expiry.clone(),
                department: next.department.clone(),
                encryption: next.encryption.clone(),
                allowed_servers: next.allowed_servers.as_ref().map(|s| json!(s).to_string()),
                updated_ts: now_ms(),
                updated_by: caller.to_string(),
            })
            .await?;
        tracing::info!(%room_id, by = %caller, official = next.official, "room policy changed");
        Ok(outcome)
    }

    pub(super) async fn room_power(&self, room_id: &RoomId) -> Result<Power> {
        let (rules, power_levels, create) = self.current_power_events(room_id).await?;
        Ok(Power {
            levels: power_levels_from(power_levels.as_deref(), create.as_deref(), &rules),
            content: power_levels.map(|p| p.content_value()),
            privileged_creators: rules.authorization.explicitly_privilege_room_creators,
        })
    }

    /// The policy account, a member of the room with power `needed` (see the module
    /// documentation for how it is brought in).
    pub(super) async fn policy_sender(&self, room_id: &RoomId, needed: i64) -> Result<OwnedUserId> {
        let account = self.policy_account();
        let power = self.room_power(room_id).await?;
        let members = self.store.members(room_id.as_str()).await?;
        let joined_local: Vec<OwnedUserId> = members
            .iter()
            .filter(|(_, m, _)| m == "join")
            .filter_map(|(u, _, _)| OwnedUserId::try_from(u.as_str()).ok())
            .filter(|u| self.is_local(u))
            .collect();
        let joined = joined_local.contains(&account);
        let level = power.user(&account);
        if joined && level >= needed {
            return Ok(account);
        }
        let pl_needed = power.state("m.room.power_levels");
        let steward = joined_local
            .iter()
            .filter(|u| **u != account)
            .max_by_key(|u| power.user(u))
            .filter(|u| {
                let l = power.user(u);
                l >= pl_needed && l > level && l >= needed
            })
            .cloned()
            .ok_or_else(|| {
                Error::forbidden(format!(
                    "no local member of {room_id} has the power (level {needed}) to bring in {account}, which \
                     publishes the policy; ask a room administrator to raise a local member's power level"
                ))
            })?;
        let steward_level = power.user(&steward);
        let new_level = steward_level.min(100.max(needed));
        if !joined {
            let public =
                self.state_content(room_id, "m.room.join_rules", "").await?.is_some_and(|c| c["join_rule"] == "public");
            let invited = self.store.membership(room_id.as_str(), account.as_str()).await?.as_deref() == Some("invite");
            if !public && !invited {
                if steward_level < power.invite() {
                    return Err(Error::forbidden(format!("no local member of {room_id} can invite {account}")));
                }
                self.change_membership(room_id, &steward, &account, MembershipAction::Invite, None, false).await?;
            }
            self.join_room(room_id, &account, Some("joined by the server to apply the room policy".into())).await?;
        }
        if level < needed {
            let mut content = match &power.content {
                Some(content) => content.clone(),
                None if !power.privileged_creators => json!({ "users": { steward.as_str(): 100 } }),
                None => json!({ "users": {} }),
            };
            if !content["users"].is_object() {
                content["users"] = json!({});
            }
            content["users"][account.as_str()] = new_level.into();
            self.append_event(room_id, &steward, EventTemplate::state("m.room.power_levels", "", content), None)
                .await?;
            tracing::info!(%room_id, %steward, new_level, "policy account given power to apply the room policy");
        }
        Ok(account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_server_is_kept_in_the_acl_as_federation_matches_it() {
        let own = ruma::server_name!("pref.example");
        let with = |allowed: &[&str]| {
            let p = RoomPolicy {
                allowed_servers: Some(allowed.iter().map(|s| (*s).to_owned()).collect()),
                ..Default::default()
            };
            validate_policy(&p, own).unwrap().allowed_servers.unwrap()
        };
        assert_eq!(with(&["*"]), ["*"]);
        assert_eq!(with(&["*.example"]), ["*.example"]);
        assert_eq!(with(&["pref.examp?e"]), ["pref.examp?e"]);
        assert_eq!(with(&["city.example"]), ["pref.example", "city.example"]);
        // Server names compare without case, as federation compares them.
        assert_eq!(with(&["Pref.Example"]), ["Pref.Example"]);
        assert_eq!(with(&["*.city.example", "town.example"]), ["pref.example", "*.city.example", "town.example"]);
    }

    #[test]
    fn policies_are_validated() {
        let official = RoomPolicy {
            official: true,
            retention: Some("5y".into()),
            on_expiry: Some("transfer".into()),
            department: Some("総務課".into()),
            encryption: None,
            allowed_servers: Some(vec!["city.example".into()]),
        };
        let p = validate_policy(&official, ruma::server_name!("pref.example")).unwrap();
        assert_eq!(p.allowed_servers.unwrap(), ["pref.example", "city.example"], "own server added");
        let mut no_dept = official.clone();
        no_dept.department = None;
        assert_eq!(validate_policy(&no_dept, ruma::server_name!("x")).unwrap_err().errcode, "M_MISSING_PARAM");
        let mut bad = official.clone();
        bad.retention = Some("7y".into());
        assert!(validate_policy(&bad, ruma::server_name!("x")).unwrap_err().message.contains("under1y"));
        let mut permanent = official.clone();
        permanent.retention = Some("permanent".into());
        permanent.on_expiry = None;
        assert!(validate_policy(&permanent, ruma::server_name!("x")).is_ok());
        let not_official = RoomPolicy { official: false, ..official.clone() };
        let p = validate_policy(&not_official, ruma::server_name!("x")).unwrap();
        assert_eq!((p.retention, p.on_expiry), (None, None));
        let mut wild = official;
        wild.allowed_servers = Some(vec!["*".into()]);
        assert_eq!(validate_policy(&wild, ruma::server_name!("pref.example")).unwrap().allowed_servers.unwrap(), ["*"]);
    }
}
