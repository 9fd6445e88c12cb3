//! The audit log (`audit_log`) has an insert and a query here and nothing else: it is
//! append-only, and the database refuses updates and deletes of it too (triggers in
//! `0006_admin.sql`).

use sqlx::{AssertSqlSafe, Row};

use super::Store;

use super::conditions::Conditions;

/// One call of the admin API, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub ts: i64,
    /// `None` when the request carried no valid access token.
    pub caller: Option<String>,
    pub action: String,
    pub target: Option<String>,
    /// JSON, without secrets.
    pub params: String,
    pub status: i64,
    /// `ok` or the errcode.
    pub result: String,
    pub detail: Option<String>,
    pub client_ip: Option<String>,
}

/// Which audit entries to read; newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since_ts: Option<i64>,
    pub until_ts: Option<i64>,
    pub caller: Option<String>,
    pub target: Option<String>,
    /// Only entries with a smaller ID (the next page).
    pub before_id: Option<i64>,
    pub limit: i64,
}

impl Store {
    /// Appends an entry to the audit log and returns its ID.
    pub async fn append_audit(&self, e: &AuditRow) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO admin_audit (ts, caller, action, target, params, status, result, detail, client_ip) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(e.ts)
        .bind(&e.caller)
        .bind(&e.action)
        .bind(&e.target)
        .bind(&e.params)
        .bind(e.status)
        .bind(&e.result)
        .bind(&e.detail)
        .bind(&e.client_ip)
        .fetch_one(&mut *self.conn().await?)
        .await
    }

    /// Audit entries matching `f`, newest first.
    pub async fn audit_entries(&self, f: &AuditFilter) -> sqlx::Result<Vec<AuditRow>> {
        let mut c = Conditions::default();
        if let Some(t) = f.since_ts {
            c.int("ts >= $?", t);
        }
        if let Some(t) = f.until_ts {
            c.int("ts < $?", t);
        }
        if let Some(u) = &f.caller {
            c.text("caller = $?", u.clone());
        }
        if let Some(t) = &f.target {
            c.text("target = $?", t.clone());
        }
        if let Some(id) = f.before_id {
            c.int("id < $?", id);
        }
        let n = c.next();
        let sql = format!(
            "SELECT id, ts, caller, action, target, params, status, result, detail, client_ip FROM admin_audit {} \
             ORDER BY id DESC LIMIT ${n}",
            c.where_clause()
        );
        let rows = c.bind(sqlx::query(AssertSqlSafe(sql))).bind(f.limit).fetch_all(&mut *self.conn().await?).await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRow {
                    id: r.try_get(0)?,
                    ts: r.try_get(1)?,
                    caller: r.try_get(2)?,
                    action: r.try_get(3)?,
                    target: r.try_get(4)?,
                    params: r.try_get(5)?,
                    status: r.try_get(6)?,
                    result: r.try_get(7)?,
                    detail: r.try_get(8)?,
                    client_ip: r.try_get(9)?,
                })
            })
            .collect()
    }
}
