//! Profiles: a local user's (display name, avatar) from the database, a remote user's from
//! their server; and the rule that a local change reaches every room the user is joined to:
//! each one's member event is sent again with the new value, as clients show names from
//! member events. Client API and admin API alike change it here.

use ruma::{OwnedRoomId, UserId, api::federation::query::get_profile_information, profile::ProfileFieldName};
use serde_json::{Map, Value};

use crate::{rooms::EventTemplate, services::Services};
use kairan_core::error::{Error, Result};

impl Services {
    /// The public profile of a local user (`displayname`, `avatar_url`), or only `field`
    /// of it. `M_NOT_FOUND` for a user this server does not have.
    pub async fn local_profile(&self, user: &UserId, field: Option<&str>) -> Result<Map<String, Value>> {
        let u = match self.is_local(user) {
            true => self.store.user(user.as_str()).await?,
            false => None,
        };
        let u = u.ok_or_else(|| Error::not_found(format!("user {user} not found")))?;
        let mut out = Map::new();
        for (name, value) in [("displayname", u.displayname), ("avatar_url", u.avatar_url)] {
            if let Some(v) = value
                && field.is_none_or(|f| f == name)
            {
                out.insert(name.to_owned(), v.into());
            }
        }
        Ok(out)
    }

    /// The profile of any user: local from the database, remote from `query/profile`
    /// on their server.
    pub async fn profile(&self, user: &UserId, field: Option<&str>) -> Result<Map<String, Value>> {
        if self.is_local(user) {
            return self.local_profile(user, field).await;
        }
        let server = user.server_name();
        let mut request = get_profile_information::v1::Request::new(user.to_owned());
        request.field = field.map(ProfileFieldName::from);
        let res = self.send_federation_request(server, request).await?;
        Ok(res.into_iter().filter(|(name, _)| field.is_none_or(|f| f == name)).collect())
    }

    /// Sets (or with `None` removes) one profile field and sends the member event of every
    /// joined room again with it. A room that refuses the event keeps the old one; the
    /// change itself stands.
    pub async fn set_profile_field(&self, user: &UserId, field: &str, value: Option<String>) -> Result<()> {
        match field {
            "displayname" => self.store.set_profile_field(user.as_str(), Some(value.as_deref()), None).await?,
            "avatar_url" => self.store.set_profile_field(user.as_str(), None, Some(value.as_deref())).await?,
            other => return Err(Error::bad_json(format!("profile field {other:?} is not supported"))),
        }
        for room in self.store.rooms_with_membership(user.as_str(), "join").await? {
            let Ok(room_id) = OwnedRoomId::try_from(room) else { continue };
            let Some(id) = self.store.current_state_event(room_id.as_str(), "m.room.member", user.as_str()).await?
            else {
                continue;
            };
            let Some(pdu) = self.pdu(&id).await? else { continue };
            let mut content = pdu.content_value();
            match &value {
                Some(v) => content[field] = v.clone().into(),
                None => {
                    if let Some(o) = content.as_object_mut() {
                        o.remove(field);
                    }
                }
            }
            let template = EventTemplate::state("m.room.member", user.as_str(), content);
            if let Err(e) = self.append_event(&room_id, user, template, None).await {
                tracing::warn!(%room_id, error = %e, "could not update member event after profile change");
            }
        }
        Ok(())
    }
}
