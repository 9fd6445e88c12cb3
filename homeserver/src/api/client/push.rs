//! Push rules, pushers and the notifications list.

use axum::{Json, Router};
use ruma::api::client::push::{
    delete_pushrule, get_notifications, get_pushers, get_pushrule, get_pushrule_actions, get_pushrule_enabled,
    get_pushrules_all, get_pushrules_global_scope, set_pusher, set_pushrule, set_pushrule_actions,
    set_pushrule_enabled,
};
use serde_json::{Value, json};

use crate::{
    api::{Ruma, ruma_io::RouterExt},
    rooms::ClientEventOptions,
    services::{AppState, Services},
    sync::parse_token,
};
use kairan_core::error::{Error, Result};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma(all)
        .ruma(global)
        .ruma(get_rule)
        .ruma(set_rule)
        .ruma(delete_rule)
        .ruma(get_enabled)
        .ruma(set_enabled)
        .ruma(get_actions)
        .ruma(set_actions)
        .ruma(pushers)
        .ruma(set_pusher)
        .ruma(notifications)
}

/// The JSON of one rule of the user's ruleset.
async fn rule_json(services: &Services, user: &ruma::UserId, kind: &str, rule_id: &str) -> Result<Value> {
    let ruleset = services.push_ruleset(user).await?;
    let value = serde_json::to_value(&*ruleset).map_err(|e| Error::internal("push rules", e))?;
    value[kind]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["rule_id"] == rule_id))
        .cloned()
        .ok_or_else(|| Error::not_found(format!("no {kind} push rule {rule_id:?}")))
}

/// GET /_matrix/client/v3/pushrules/
async fn all(services: AppState, req: Ruma<get_pushrules_all::v3::Request>) -> Result<Json<Value>> {
    let ruleset = services.push_ruleset(req.user()?).await?;
    Ok(Json(json!({ "global": &*ruleset })))
}

/// GET /_matrix/client/v3/pushrules/global/
async fn global(services: AppState, req: Ruma<get_pushrules_global_scope::v3::Request>) -> Result<Json<Value>> {
    let ruleset = services.push_ruleset(req.user()?).await?;
    Ok(Json(serde_json::to_value(&*ruleset).map_err(|e| Error::internal("push rules", e))?))
}

/// GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}
async fn get_rule(services: AppState, req: Ruma<get_pushrule::v3::Request>) -> Result<Json<Value>> {
    Ok(Json(rule_json(&services, req.user()?, req.body.kind.as_str(), &req.body.rule_id).await?))
}

/// PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}
async fn set_rule(services: AppState, req: Ruma<set_pushrule::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    let b = req.body.clone();
    let mut ruleset = (*services.push_ruleset(user).await?).clone();
    ruleset
        .insert(b.rule, b.after.as_deref(), b.before.as_deref())
        .map_err(|e| Error::bad_json(format!("cannot add push rule: {e}")))?;
    services.save_push_ruleset(user, ruleset).await?;
    Ok(Json(json!({})))
}

/// DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}
async fn delete_rule(services: AppState, req: Ruma<delete_pushrule::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    let mut ruleset = (*services.push_ruleset(user).await?).clone();
    ruleset.remove(req.body.kind.clone(), &req.body.rule_id).map_err(|e| match e {
        ruma::push::RemovePushRuleError::NotFound => Error::not_found("no such push rule"),
        e => Error::bad_json(format!("cannot delete push rule: {e}")),
    })?;
    services.save_push_ruleset(user, ruleset).await?;
    Ok(Json(json!({})))
}

/// GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled
async fn get_enabled(services: AppState, req: Ruma<get_pushrule_enabled::v3::Request>) -> Result<Json<Value>> {
    let rule = rule_json(&services, req.user()?, req.body.kind.as_str(), &req.body.rule_id).await?;
    Ok(Json(json!({ "enabled": rule["enabled"] })))
}

/// PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled
async fn set_enabled(services: AppState, req: Ruma<set_pushrule_enabled::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    let mut ruleset = (*services.push_ruleset(user).await?).clone();
    ruleset
        .set_enabled(req.body.kind.clone(), &req.body.rule_id, req.body.enabled)
        .map_err(|_| Error::not_found("no such push rule"))?;
    services.save_push_ruleset(user, ruleset).await?;
    Ok(Json(json!({})))
}

/// GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions
async fn get_actions(services: AppState, req: Ruma<get_pushrule_actions::v3::Request>) -> Result<Json<Value>> {
    let rule = rule_json(&services, req.user()?, req.body.kind.as_str(), &req.body.rule_id).await?;
    Ok(Json(json!({ "actions": rule["actions"] })))
}

/// PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions
async fn set_actions(services: AppState, req: Ruma<set_pushrule_actions::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    let mut ruleset = (*services.push_ruleset(user).await?).clone();
    ruleset
        .set_actions(req.body.kind.clone(), &req.body.rule_id, req.body.actions.clone())
        .map_err(|_| Error::not_found("no such push rule"))?;
    services.save_push_ruleset(user, ruleset).await?;
    Ok(Json(json!({})))
}

/// GET /_matrix/client/v3/pushers
async fn pushers(services: AppState, req: Ruma<get_pushers::v3::Request>) -> Result<Json<Value>> {
    let list: Vec<Value> = services
        .store
        .pushers(req.user()?.as_str())
        .await?
        .iter()
        .filter_map(|j| serde_json::from_str(j).ok())
        .collect();
    Ok(Json(json!({ "pushers": list })))
}

/// POST /_matrix/client/v3/pushers/set
async fn set_pusher(services: AppState, req: Ruma<set_pusher::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    match &req.body.action {
        set_pusher::v3::PusherAction::Post(data) => {
            let json = serde_json::to_value(&data.pusher).map_err(|e| Error::bad_json(e.to_string()))?;
            let kind = json["kind"].as_str().unwrap_or("http");
            if kind == "http" {
                let url = json["data"]["url"]
                    .as_str()
                    .ok_or_else(|| Error::missing_param("data.url is required for http pushers"))?;
                crate::push::gateway_allowed(&services.config.push.gateways, url).map_err(Error::invalid_param)?;
            }
            let app_id = json["app_id"].as_str().unwrap_or_default();
            let pushkey = json["pushkey"].as_str().unwrap_or_default();
            services.store.put_pusher(user.as_str(), app_id, pushkey, kind, &json.to_string(), data.append).await?;
        }
        set_pusher::v3::PusherAction::Delete(ids) => {
            services.store.delete_pusher(user.as_str(), &ids.app_id, &ids.pushkey).await?;
        }
        _ => return Err(Error::bad_json("unknown pusher action")),
    }
    Ok(Json(json!({})))
}

/// GET /_matrix/client/v3/notifications
async fn notifications(services: AppState, req: Ruma<get_notifications::v3::Request>) -> Result<Json<Value>> {
    let auth = req.auth()?;
    let b = &req.body;
    let before = match &b.from {
        Some(t) => parse_token(t)?.stream,
        None => i64::MAX,
    };
    let limit = b.limit.map_or(50, u64::from).clamp(1, 100) as i64;
    let highlights_only = b.only.as_deref() == Some("highlight");
    let rows = services.store.notifications(auth.user.as_str(), before, limit, highlights_only).await?;
    let opts = ClientEventOptions { viewer: &auth.user, device_id: Some(&auth.device), bundle_relations: false };
    let mut out = Vec::new();
    let mut read_cache: Vec<(String, Vec<(String, i64)>)> = Vec::new();
    for row in &rows {
        let Some(event) = services.store.event(&row.event_id).await? else { continue };
        let positions = match read_cache.iter().find(|(r, _)| *r == row.room_id) {
            Some((_, p)) => p.clone(),
            None => {
                let p = services.store.read_positions(&row.room_id, auth.user.as_str()).await?;
                read_cache.push((row.room_id.clone(), p.clone()));
                p
            }
        };
        let read = positions.iter().any(|(_, pos)| *pos >= row.stream_ordering);
        out.push(json!({
            "actions": serde_json::from_str::<Value>(&row.actions).unwrap_or_default(),
            "event": services.client_event(&event, opts).await?,
            "read": read,
            "room_id": row.room_id,
            "ts": serde_json::from_str::<Value>(&event.pdu_json).ok().and_then(|v| v["origin_server_ts"].as_i64()).unwrap_or(0),
        }));
    }
    let mut response = json!({ "notifications": out });
    if rows.len() as i64 == limit
        && let Some(last) = rows.last()
    {
        response["next_token"] = format!("s{}", last.stream_ordering).into();
    }
    Ok(Json(response))
}
