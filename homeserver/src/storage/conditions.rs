//! Statements built from optional conditions (the admin API's filters), with their
//! parameters numbered in order.

/// Builds a statement from conditions whose parameters are numbered in order.
#[derive(Default)]
pub(super) struct Conditions {
    pub(super) sql: Vec<String>,
    pub(super) texts: Vec<Param>,
}

pub(super) enum Param {
    Text(String),
    Int(i64),
}

impl Conditions {
    pub(super) fn next(&self) -> usize {
        self.texts.len() + 1
    }
    pub(super) fn text(&mut self, template: &str, value: String) {
        let n = self.next();
        self.sql.push(template.replace("$?", &format!("${n}")));
        self.texts.push(Param::Text(value));
    }
    pub(super) fn int(&mut self, template: &str, value: i64) {
        let n = self.next();
        self.sql.push(template.replace("$?", &format!("${n}")));
        self.texts.push(Param::Int(value));
    }
    pub(super) fn plain(&mut self, sql: &str) {
        self.sql.push(sql.to_owned());
    }
    pub(super) fn where_clause(&self) -> String {
        if self.sql.is_empty() { String::new() } else { format!("WHERE {}", self.sql.join(" AND ")) }
    }
    pub(super) fn bind<'q>(
        &'q self,
        mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        for p in &self.texts {
            q = match p {
                Param::Text(s) => q.bind(s.as_str()),
                Param::Int(i) => q.bind(*i),
            };
        }
        q
    }
}

/// `%text%` for LIKE, with the pattern characters escaped (`ESCAPE '\'`).
pub(super) fn like_pattern(text: &str) -> String {
    let escaped = text.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}
