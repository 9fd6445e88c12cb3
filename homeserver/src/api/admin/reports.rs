//! Utilisation figures and the audit log.

use axum::{
    extract::State,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;

use super::{AdminPath, AdminQuery, AuditDetail, answer, page_limit};
use crate::{admin::figures::figures_csv, services::AppState, storage::AuditFilter};
use kairan_core::{
    error::{Error, Result},
    time::{DayEdge, Month, parse_instant},
};

#[derive(Deserialize)]
pub struct FiguresQuery {
    format: Option<String>,
}

/// GET /figures/{month}?format=json|csv
pub async fn figures(
    State(services): State<AppState>,
    AdminPath(month): AdminPath<String>,
    AdminQuery(q): AdminQuery<FiguresQuery>,
) -> Result<Response> {
    let m = Month::parse(&month).ok_or_else(|| Error::invalid_param(format!("{month:?} is not a month (YYYY-MM)")))?;
    let report = services.figures_report(m).await?;
    match q.format.as_deref().unwrap_or("json") {
        "json" => Ok(answer(report, "")),
        "csv" => {
            let mut r =
                ([(http::header::CONTENT_TYPE, "text/csv; charset=utf-8")], figures_csv(&report)).into_response();
            r.extensions_mut().insert(AuditDetail("csv".into()));
            Ok(r)
        }
        other => Err(Error::invalid_param(format!("format {other:?} must be json or csv"))),
    }
}

#[derive(Deserialize)]
pub struct AuditQuery {
    since: Option<String>,
    until: Option<String>,
    caller: Option<String>,
    target: Option<String>,
    /// Entries older than this ID (the `next` of the previous page).
    from: Option<i64>,
    limit: Option<i64>,
}

/// GET /audit: newest first.
pub async fn audit(State(services): State<AppState>, AdminQuery(q): AdminQuery<AuditQuery>) -> Result<Response> {
    let offset = services.config.admin.utc_offset_seconds();
    let instant = |name: &str, v: &Option<String>, edge| -> Result<Option<i64>> {
        v.as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| {
                parse_instant(s, offset, edge)
                    .ok_or_else(|| Error::invalid_param(format!("{name} {s:?} is not a date (YYYY-MM-DD) or time")))
            })
            .transpose()
    };
    let normal_user = |u: Option<String>| -> Option<String> {
        u.filter(|s| !s.is_empty()).map(|s| services.user_id_from(&s).map(|u| u.to_string()).unwrap_or(s))
    };
    let limit = page_limit(q.limit)?;
    let filter = AuditFilter {
        since_ts: instant("since", &q.since, DayEdge::Start)?,
        until_ts: instant("until", &q.until, DayEdge::End)?,
        caller: normal_user(q.caller),
        // A bare name is taken as a localpart of this server; anything else as given.
        target: q.target.filter(|s| !s.is_empty()).map(|t| {
            if crate::accounts::validate_localpart(&t).is_ok() && Month::parse(&t).is_none() {
                services.user_id_from(&t).map(|u| u.to_string()).unwrap_or(t)
            } else {
                t
            }
        }),
        before_id: q.from,
        limit,
    };
    let entries = services.audit_entries(&filter).await?;
    let next = (entries.len() as i64 == limit).then(|| entries.last().and_then(|e| e["id"].as_i64())).flatten();
    let n = entries.len();
    Ok(answer(json!({ "entries": entries, "next": next }), format!("{n} listed")))
}
