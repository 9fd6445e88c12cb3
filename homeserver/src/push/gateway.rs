//! Delivery to push gateways (the Push Gateway API), for pushers of kind `http`.
//!
//! In a closed network the gateway is an on-premises service; kairan never contacts a
//! public push provider itself. Delivery is best effort: one attempt per notification,
//! failures logged with the gateway's address (never the pushkey).

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};

use crate::{
    rooms::Pdu,
    storage::{PushAction, Store},
};

/// Sends the notifications of one event to the pushers of the users it notified.
/// Runs in the background; the caller does not wait.
pub fn deliver(store: Store, http: reqwest::Client, pdu: Arc<Pdu>, actions: Vec<PushAction>) {
    if actions.is_empty() {
        return;
    }
    tokio::spawn(async move {
        for action in actions {
            if let Err(e) = deliver_one(&store, &http, &pdu, &action).await {
                tracing::warn!(user = %action.user_id, error = %e, "push delivery failed");
            }
        }
    });
}

async fn deliver_one(store: &Store, http: &reqwest::Client, pdu: &Pdu, action: &PushAction) -> anyhow::Result<()> {
    let pushers = store.pushers(&action.user_id).await?;
    if pushers.is_empty() {
        return Ok(());
    }
    let actions: Vec<Value> = serde_json::from_str(&action.actions).unwrap_or_default();
    let tweaks: serde_json::Map<String, Value> = actions
        .iter()
        .filter_map(|a| {
            a.get("set_tweak")
                .and_then(Value::as_str)
                .map(|t| (t.to_owned(), a.get("value").cloned().unwrap_or(Value::Bool(true))))
        })
        .collect();
    for pusher_json in pushers {
        let pusher: Value = serde_json::from_str(&pusher_json)?;
        if pusher["kind"] != "http" {
            continue;
        }
        let Some(url) = pusher["data"]["url"].as_str() else { continue };
        let event_id_only = pusher["data"]["format"] == "event_id_only";
        let mut notification = json!({
            "event_id": pdu.event_id,
            "room_id": pdu.room_id,
            "prio": if action.highlight { "high" } else { "low" },
            "counts": { "unread": 1 },
            "devices": [{
                "app_id": pusher["app_id"],
                "pushkey": pusher["pushkey"],
                "data": pusher["data"],
                "tweaks": tweaks,
            }],
        });
        if !event_id_only {
            notification["type"] = pdu.kind.to_string().into();
            notification["sender"] = pdu.sender.as_str().into();
            notification["content"] = pdu.content_value();
        }
        let response =
            http.post(url).timeout(Duration::from_secs(10)).json(&json!({ "notification": notification })).send().await;
        match response {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!(gateway = url, status = %r.status(), "push gateway refused a notification"),
            Err(e) => tracing::warn!(gateway = url, error = %e, "push gateway unreachable"),
        }
    }
    Ok(())
}
