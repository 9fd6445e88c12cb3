//! A throwaway PostgreSQL database per test server.
//!
//! Each PostgreSQL-backed [`TestServer`](crate::TestServer) gets its own database so that
//! tests can run in parallel and never see each other's rows. The database is created
//! through the administrative URL (env `KAIRAN_TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, the CI setup) and dropped again when the
//! server is dropped.

use anyhow::Context as _;
use sqlx::{AssertSqlSafe, Connection as _, PgConnection};

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database created for one test server.
#[derive(Debug)]
pub(crate) struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates `kairan_test_<random>` and returns a handle whose [`url`](Self::url) the
    /// homeserver can use.
    pub(crate) async fn create() -> anyhow::Result<Self> {
        let admin_url = std::env::var("KAIRAN_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        // Lower-case letters and digits only, so the name never needs quoting.
        let name = format!("kairan_test_{:016x}", rand::random::<u64>());

        let mut conn = PgConnection::connect(&admin_url)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {admin_url}"))?;
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating database {name}"))?;
        conn.close().await.ok();

        let url = replace_database(&admin_url, &name)?;
        Ok(Self { admin_url, name, url })
    }

    /// The connection URL of the test database.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Drops the database, forcibly closing connections a killed server may have left.
    pub(crate) async fn drop_database(&self) -> anyhow::Result<()> {
        let mut conn = PgConnection::connect(&self.admin_url).await?;
        sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)))
            .execute(&mut conn)
            .await?;
        conn.close().await.ok();
        Ok(())
    }

    /// Best-effort synchronous drop, usable from `Drop` even inside a tokio runtime:
    /// the work runs on a separate thread with its own runtime.
    pub(crate) fn drop_blocking(&self) {
        let this = Self { admin_url: self.admin_url.clone(), name: self.name.clone(), url: String::new() };
        let joined = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(this.drop_database())
        })
        .join();
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: could not drop test database {}: {e:#}", self.name),
            Err(_) => eprintln!("warning: panic while dropping test database {}", self.name),
        }
    }
}

/// Replaces the database name (the URL path) in a PostgreSQL URL, keeping any query.
fn replace_database(url: &str, database: &str) -> anyhow::Result<String> {
    let mut parsed = reqwest::Url::parse(url).with_context(|| format!("parsing {url}"))?;
    parsed.set_path(&format!("/{database}"));
    Ok(parsed.to_string())
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            replace_database("postgres://postgres@127.0.0.1:5432/postgres", "kairan_test_1").unwrap(),
            "postgres://postgres@127.0.0.1:5432/kairan_test_1"
        );
        assert_eq!(
            replace_database("postgres://u:p@db:5433/x?sslmode=disable", "t").unwrap(),
            "postgres://u:p@db:5433/t?sslmode=disable"
        );
    }
}
