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

/// The path every pusher URL has (Push Gateway API).
const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

/// The origin (`scheme://host:port`) of a gateway named in `push.gateways`.
pub fn gateway_origin(gateway: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(gateway).map_err(|e| format!("{gateway:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{gateway:?} is not an http(s) origin such as \"https://push.pref.example\""));
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.path() != "/" {
        return Err(format!("{gateway:?} must be an origin only (scheme, host and port), without a path"));
    }
    Ok(url.origin().ascii_serialization())
}

/// Whether `url` is the notify endpoint of one of the operator's gateways: the path is
/// exactly the Push Gateway API's, the origin one that `push.gateways` names.
pub fn gateway_allowed(gateways: &[String], url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("data.url is not a URL: {e}"))?;
    if parsed.path() != NOTIFY_PATH || !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!("data.url must be a push gateway's {NOTIFY_PATH}"));
    }
    let origin = parsed.origin().ascii_serialization();
    if !gateways.iter().filter_map(|g| gateway_origin(g).ok()).any(|g| g == origin) {
        return Err(format!("{origin} is not a push gateway of this server (push.gateways)"));
    }
    Ok(())
}

/// The client for push gateways: redirects are not followed, so an allowed gateway
/// cannot send the server on to an address the allowlist does not name.
pub fn gateway_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}

/// Sends the notifications of one event to the pushers of the users it notified.
/// Runs in the background; the caller does not wait.
pub fn deliver(
    store: Store,
    http: reqwest::Client,
    gateways: Arc<Vec<String>>,
    pdu: Arc<Pdu>,
    actions: Vec<PushAction>,
) {
    if actions.is_empty() {
        return;
    }
    tokio::spawn(async move {
        for action in actions {
            if let Err(e) = deliver_one(&store, &http, &gateways, &pdu, &action).await {
                tracing::warn!(user = %action.user_id, error = %e, "push delivery failed");
            }
        }
    });
}

async fn deliver_one(
    store: &Store,
    http: &reqwest::Client,
    gateways: &[String],
    pdu: &Pdu,
    action: &PushAction,
) -> anyhow::Result<()> {
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
        // Checked again at delivery: the allowlist may have shrunk since the pusher was set.
        if let Err(why) = gateway_allowed(gateways, url) {
            tracing::warn!(user = %action.user_id, %why, "not delivering to a pusher outside push.gateways");
            continue;
        }
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
        let response = http.post(url).json(&json!({ "notification": notification })).send().await;
        match response {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!(gateway = url, status = %r.status(), "push gateway refused a notification"),
            Err(e) => tracing::warn!(gateway = url, error = %e, "push gateway unreachable"),
        }
    }
    Ok(())
}
