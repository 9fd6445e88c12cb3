//! Account data: what clients store per user, globally or per room (read back through
//! `/sync`). Types the server manages through endpoints of their own are refused here.

use ruma::UserId;
use serde_json::{Value, value::RawValue};

use crate::services::Services;
use kairan_core::{
    error::{Error, Result},
    notifier::Audience,
};

/// Types written through their own endpoints (read markers, push rules), never directly.
const SERVER_MANAGED: [&str; 2] = ["m.fully_read", "m.push_rules"];

impl Services {
    /// Stores account data of `kind` (`room` empty for global data) and wakes the user's syncs.
    pub async fn set_account_data(&self, user: &UserId, room: &str, kind: &str, content: &RawValue) -> Result<()> {
        let v: Value = serde_json::from_str(content.get()).map_err(|e| Error::bad_json(e.to_string()))?;
        if !v.is_object() {
            return Err(Error::bad_json("account data must be a JSON object"));
        }
        if SERVER_MANAGED.contains(&kind) {
            // The spec's status for server-managed types is 405.
            let mut e = Error::bad_json(format!("{kind} is managed by the server; use its own endpoint"));
            e.status = http::StatusCode::METHOD_NOT_ALLOWED;
            return Err(e);
        }
        let pos = self.store.put_account_data(user.as_str(), room, kind, &v.to_string()).await?;
        self.notifier.advance(pos, Audience::user(user.as_str()));
        Ok(())
    }

    /// The account data of `kind`, as stored; `M_NOT_FOUND` when there is none.
    pub async fn account_data(&self, user: &UserId, room: &str, kind: &str) -> Result<Box<RawValue>> {
        let data = self
            .store
            .account_data(user.as_str(), room, kind)
            .await?
            .ok_or_else(|| Error::not_found("no account data of that type"))?;
        RawValue::from_string(data).map_err(|e| Error::internal("stored account data", e))
    }
}
