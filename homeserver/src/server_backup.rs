//! `kairan-homeserver backup DIR` and `restore DIR`: a consistent online backup of the
//! database, the media store, the signing key and the configuration, and its restore on
//! another machine.
//!
//! Consistency rests on two facts:
//! - The database is copied by the engine itself, in one snapshot: SQLite's `VACUUM INTO`
//!   (a read transaction, so a running writer with WAL goes on; the copy is a complete,
//!   compacted database), PostgreSQL's `pg_dump` (one repeatable-read transaction).
//! - Media files are content-addressed (`store_dir/ab/cd/<sha256>`) and immutable: the
//!   media service writes and fsyncs a file, renames it into place, and only then inserts
//!   its row, and never deletes content. So copying the directory *after* the snapshot
//!   finds every file a snapshotted row names; files uploaded later are harmless extras.
//!
//! Backup does not go through [`crate::storage::Store`] on purpose: it must not run
//! migrations or otherwise write to the database it copies. Like `pg_dump`, it is a tool
//! on the database, not a part of the server.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use sqlx::{Connection as _, Executor as _};

use kairan_core::config::Config;

/// The manifest's file name inside a backup directory.
pub const MANIFEST: &str = "manifest.json";
const SQLITE_FILE: &str = "kairan.db";
const PG_DUMP_FILE: &str = "kairan.pgdump";
const MEDIA_DIR: &str = "media";
const KEY_FILE: &str = "signing.key";
const CONFIG_FILE: &str = "kairan.toml";
/// Bumped when the layout of a backup directory changes.
const FORMAT: u32 = 1;

/// What a backup holds, written last: a directory without it is an incomplete backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// Layout version of the backup directory.
    pub format: u32,
    /// The kairan-homeserver release that took it.
    pub kairan_version: String,
    /// The newest database migration applied (`_sqlx_migrations`).
    pub schema_version: i64,
    /// When the database snapshot was taken (milliseconds since the Unix epoch).
    pub created_ts: u64,
    pub server_name: String,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// The database file in the backup directory.
    pub database_file: String,
    pub media_files: u64,
    pub media_bytes: u64,
}

/// The backend of a database URL, or an error naming the option.
fn backend_of(url: &str) -> anyhow::Result<&'static str> {
    if url.starts_with("sqlite:") {
        Ok("sqlite")
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok("postgres")
    } else {
        bail!("database.url must start with sqlite:// or postgres://")
    }
}

/// The file of a `sqlite://PATH[?options]` URL.
fn sqlite_path(url: &str) -> anyhow::Result<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path.starts_with(":memory:") {
        bail!("database.url {url:?} names no SQLite file");
    }
    Ok(PathBuf::from(path))
}

/// A SQL string literal.
fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

async fn connect(url: &str) -> anyhow::Result<sqlx::AnyConnection> {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(url)
        .await
        .with_context(|| format!("cannot open database {}", crate::storage::redact_url(url)))
}

/// The newest migration applied to a database.
async fn schema_version(conn: &mut sqlx::AnyConnection) -> anyhow::Result<i64> {
    let v: Option<i64> = sqlx::query_scalar("SELECT CAST(MAX(version) AS BIGINT) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut *conn)
        .await
        .context("the database has no kairan schema (no _sqlx_migrations table)")?;
    v.context("the database has no kairan schema (no migration applied)")
}

/// Whether a program can be run (it is on PATH).
fn have(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success())
}

fn run(mut command: Command, what: &str) -> anyhow::Result<()> {
    let out = command.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!("{what} failed ({}): {}", out.status, stderr.trim());
    }
    Ok(())
}

/// Creates a private directory (0700): a backup holds the signing key.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).with_context(|| format!("cannot create {}", dir.display()))
}

/// Copies a file, making the copy readable by its owner only.
fn copy_private(from: &Path, to: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(to).with_context(|| format!("cannot write {}", to.display()))?;
    f.write_all(&bytes).and_then(|()| f.sync_all()).with_context(|| format!("cannot write {}", to.display()))
}

/// Copies the tree `from` into `to` (merging), skipping `tmp/` (uploads in progress) and
/// files already present (content-addressed: the same name is the same bytes).
/// Returns (files copied, bytes copied).
fn copy_media(from: &Path, to: &Path) -> anyhow::Result<(u64, u64)> {
    let (mut files, mut bytes) = (0, 0);
    if !from.exists() {
        return Ok((0, 0));
    }
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = from.join(&rel);
        std::fs::create_dir_all(to.join(&rel)).with_context(|| format!("cannot create {}", to.join(&rel).display()))?;
        for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
            let entry = entry?;
            let name = rel.join(entry.file_name());
            let kind = entry.file_type()?;
            if kind.is_dir() {
                if rel.as_os_str().is_empty() && entry.file_name() == "tmp" {
                    continue;
                }
                stack.push(name);
            } else if kind.is_file() {
                let target = to.join(&name);
                if target.exists() {
                    continue;
                }
                // Write beside and rename, so an interrupted copy leaves no half file.
                let partial = target.with_extension("partial");
                let n = std::fs::copy(entry.path(), &partial)
                    .with_context(|| format!("cannot copy {}", entry.path().display()))?;
                std::fs::rename(&partial, &target).with_context(|| format!("cannot write {}", target.display()))?;
                files += 1;
                bytes += n;
            }
        }
    }
    Ok((files, bytes))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Takes a backup into `dir`, which must not exist or be empty. `config_file` is the
/// configuration file the server runs with, copied for reference.
pub async fn backup(config: &Config, config_file: Option<&Path>, dir: &Path) -> anyhow::Result<Manifest> {
    if dir.exists()
        && std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?.next().is_some()
    {
        bail!("{} is not empty: back up into a new directory", dir.display());
    }
    let url = config.database_url();
    let backend = backend_of(&url)?;
    if backend == "sqlite" && !sqlite_path(&url)?.exists() {
        bail!("the database {} does not exist: nothing to back up", sqlite_path(&url)?.display());
    }
    create_private_dir(dir)?;

    // 1. The database, in one snapshot.
    let created_ts = now_ms();
    let (database_file, schema_version) = match backend {
        "sqlite" => {
            let source = sqlite_path(&url)?;
            let target = dir.join(SQLITE_FILE);
            let target_text = target.to_str().context("the backup directory's path is not UTF-8")?;
            let mut conn = connect(&format!("sqlite://{}", source.display())).await?;
            // A writer holds the lock for milliseconds at a time; wait for it, do not fail.
            conn.execute("PRAGMA busy_timeout = 30000").await?;
            conn.execute(sqlx::AssertSqlSafe(format!("VACUUM INTO {}", sql_literal(target_text))))
                .await
                .context("VACUUM INTO (the SQLite snapshot) failed")?;
            conn.close().await.ok();
            #[cfg(unix)]
            std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            // Read the version from the copy itself: it is what will be restored.
            let mut copy = connect(&format!("sqlite://{target_text}?mode=ro")).await?;
            let v = schema_version(&mut copy).await?;
            copy.close().await.ok();
            (SQLITE_FILE, v)
        }
        _ => {
            if !have("pg_dump") {
                bail!(
                    "pg_dump was not found on PATH: it is required to back up a PostgreSQL database \
                     (install the PostgreSQL client of the server's major version, e.g. postgresql-client)"
                );
            }
            let mut conn = connect(&url).await?;
            let v = schema_version(&mut conn).await?;
            conn.close().await.ok();
            let mut cmd = Command::new("pg_dump");
            cmd.arg("--format=custom").arg("--no-owner").arg("--file").arg(dir.join(PG_DUMP_FILE)).arg(&url);
            run(cmd, "pg_dump")?;
            (PG_DUMP_FILE, v)
        }
    };

    // 2. Media, after the snapshot (see the module documentation for why that is consistent).
    let media_dir = config.media.store_dir(&config.data_dir);
    let (media_files, media_bytes) = copy_media(&media_dir, &dir.join(MEDIA_DIR))?;

    // 3. The server's identity and its configuration.
    let key = config.data_dir.join(KEY_FILE);
    if !key.exists() {
        bail!("the signing key {} does not exist: is data_dir right?", key.display());
    }
    copy_private(&key, &dir.join(KEY_FILE))?;
    if let Some(file) = config_file {
        copy_private(file, &dir.join(CONFIG_FILE))?;
    }

    // 4. The manifest, last: its presence marks a complete backup.
    let manifest = Manifest {
        format: FORMAT,
        kairan_version: env!("CARGO_PKG_VERSION").to_owned(),
        schema_version,
        created_ts,
        server_name: config.server_name.clone(),
        backend: backend.to_owned(),
        database_file: database_file.to_owned(),
        media_files,
        media_bytes,
    };
    let json = serde_json::to_string_pretty(&manifest)?;
    std::fs::write(dir.join(MANIFEST), json + "\n").context("cannot write the manifest")?;
    Ok(manifest)
}

/// Reads and checks a backup directory's manifest.
pub fn read_manifest(dir: &Path) -> anyhow::Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{} is not a complete kairan backup (no readable {MANIFEST})", dir.display()))?;
    let manifest: Manifest =
        serde_json::from_str(&text).with_context(|| format!("{} is not a kairan backup manifest", path.display()))?;
    if manifest.format != FORMAT {
        bail!("{} has backup format {}, this release reads format {FORMAT}", path.display(), manifest.format);
    }
    Ok(manifest)
}

/// Restores the backup in `dir` into the configured database, data directory and media
/// store. A database that already holds data, or a different signing key, is kept unless
/// `force`.
pub async fn restore(config: &Config, dir: &Path, force: bool) -> anyhow::Result<Manifest> {
    let manifest = read_manifest(dir)?;
    let url = config.database_url();
    let backend = backend_of(&url)?;
    if manifest.server_name != config.server_name {
        bail!(
            "the backup is of server {:?} but the configuration says server_name = {:?}: a server's name \
             cannot change, fix server_name",
            manifest.server_name,
            config.server_name
        );
    }
    if manifest.backend != backend {
        bail!(
            "the backup holds a {} database but database.url is {backend}: restore into the same engine",
            manifest.backend
        );
    }
    let key_backup = dir.join(KEY_FILE);
    let key_target = config.data_dir.join(KEY_FILE);
    let key_bytes = std::fs::read(&key_backup).with_context(|| format!("cannot read {}", key_backup.display()))?;
    if !force && key_target.exists() && std::fs::read(&key_target).ok().as_deref() != Some(key_bytes.as_slice()) {
        bail!(
            "{} already holds a different signing key: restore into a new data_dir, or add --force to replace it",
            key_target.display()
        );
    }
    create_private_dir(&config.data_dir)?;

    match backend {
        "sqlite" => {
            let target = sqlite_path(&url)?;
            let non_empty = std::fs::metadata(&target).is_ok_and(|m| m.len() > 0);
            if non_empty && !force {
                bail!("the database {} is not empty: stop the server and add --force to replace it", target.display());
            }
            if let Some(parent) = target.parent() {
                create_private_dir(parent)?;
            }
            let partial = target.with_extension("restoring");
            copy_private(&dir.join(&manifest.database_file), &partial)?;
            // The old database's WAL must not be replayed onto the restored file.
            for suffix in ["-wal", "-shm"] {
                let mut side = target.clone().into_os_string();
                side.push(suffix);
                let _ = std::fs::remove_file(PathBuf::from(side));
            }
            std::fs::rename(&partial, &target).with_context(|| format!("cannot write {}", target.display()))?;
        }
        _ => {
            if !have("pg_restore") {
                bail!(
                    "pg_restore was not found on PATH: it is required to restore a PostgreSQL database \
                     (install the PostgreSQL client of the server's major version, e.g. postgresql-client)"
                );
            }
            let mut conn = connect(&url).await?;
            let tables: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()",
            )
            .fetch_one(&mut conn)
            .await?;
            conn.close().await.ok();
            if tables > 0 && !force {
                bail!(
                    "the database {} is not empty ({tables} tables): stop the server and add --force to replace it",
                    crate::storage::redact_url(&url)
                );
            }
            let mut cmd = Command::new("pg_restore");
            cmd.arg("--no-owner").arg("--exit-on-error").arg("--single-transaction");
            if tables > 0 {
                cmd.arg("--clean").arg("--if-exists");
            }
            cmd.arg("--dbname").arg(&url).arg(dir.join(&manifest.database_file));
            run(cmd, "pg_restore")?;
        }
    }

    copy_media(&dir.join(MEDIA_DIR), &config.media.store_dir(&config.data_dir))?;
    copy_private(&key_backup, &key_target)?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths_and_literals() {
        assert_eq!(
            sqlite_path("sqlite:///var/lib/kairan/kairan.db").unwrap(),
            PathBuf::from("/var/lib/kairan/kairan.db")
        );
        assert_eq!(sqlite_path("sqlite://./data/k.db?mode=rwc").unwrap(), PathBuf::from("./data/k.db"));
        assert_eq!(sqlite_path("sqlite:k.db").unwrap(), PathBuf::from("k.db"));
        assert!(sqlite_path("sqlite::memory:").is_err());
        assert_eq!(sql_literal("/tmp/o'clock"), "'/tmp/o''clock'");
    }

    #[test]
    fn media_copy_skips_uploads_in_progress() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(from.path().join("ab/cd")).unwrap();
        std::fs::create_dir_all(from.path().join("tmp")).unwrap();
        std::fs::write(from.path().join("ab/cd/abcd01"), b"12345").unwrap();
        std::fs::write(from.path().join("tmp/upload"), b"partial").unwrap();
        assert_eq!(copy_media(from.path(), to.path()).unwrap(), (1, 5));
        assert_eq!(std::fs::read(to.path().join("ab/cd/abcd01")).unwrap(), b"12345");
        assert!(!to.path().join("tmp").exists());
        // Again: present files are left alone.
        assert_eq!(copy_media(from.path(), to.path()).unwrap(), (0, 0));
    }
}
