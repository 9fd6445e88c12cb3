//! Media metadata: one row per media ID. The content itself is a file on disk, addressed
//! by its SHA-256, which the media service writes (and makes durable) before the row.

use sqlx::{Row, any::AnyRow};

use super::{Store, flag};

/// An uploaded media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRow {
    pub media_id: String,
    pub uploader: String,
    /// Hex SHA-256 of the content: the file's name on disk.
    pub sha256: String,
    pub size: i64,
    /// What the bytes were detected to be; what downloads are served as.
    pub content_type: String,
    /// What the uploader's `Content-Type` claimed.
    pub declared_type: Option<String>,
    pub upload_name: Option<String>,
    pub created_ts: i64,
    pub quarantined: bool,
}

const COLUMNS: &str =
    "media_id, uploader, sha256, size, content_type, declared_type, upload_name, created_ts, quarantined";

fn media_row(r: &AnyRow) -> sqlx::Result<MediaRow> {
    Ok(MediaRow {
        media_id: r.try_get(0)?,
        uploader: r.try_get(1)?,
        sha256: r.try_get(2)?,
        size: r.try_get(3)?,
        content_type: r.try_get(4)?,
        declared_type: r.try_get(5)?,
        upload_name: r.try_get(6)?,
        created_ts: r.try_get(7)?,
        quarantined: r.try_get::<i64, _>(8)? != 0,
    })
}

impl Store {
    /// Bytes of media content on disk: each distinct file (SHA-256) once, as uploads of
    /// the same bytes share one file. For metrics.
    pub async fn media_bytes_stored(&self) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM (SELECT MAX(size) AS size FROM media GROUP BY sha256) AS f",
        )
        .fetch_one(&mut *self.conn().await?)
        .await
    }

    /// Records a media. Fails if the media ID is taken.
    pub async fn insert_media(&self, m: &MediaRow) -> sqlx::Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO media ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        )))
        .bind(&m.media_id)
        .bind(&m.uploader)
        .bind(&m.sha256)
        .bind(m.size)
        .bind(&m.content_type)
        .bind(&m.declared_type)
        .bind(&m.upload_name)
        .bind(m.created_ts)
        .bind(flag(m.quarantined))
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(())
    }

    pub async fn media(&self, media_id: &str) -> sqlx::Result<Option<MediaRow>> {
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM media WHERE media_id = $1")))
            .bind(media_id)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            .as_ref()
            .map(media_row)
            .transpose()
    }

    /// Marks a media quarantined (or releases it). Whether the media exists.
    pub async fn set_media_quarantined(&self, media_id: &str, quarantined: bool) -> sqlx::Result<bool> {
        let done = sqlx::query("UPDATE media SET quarantined = $2 WHERE media_id = $1")
            .bind(media_id)
            .bind(flag(quarantined))
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// How many media IDs use the content with this hash (quarantined ones included).
    pub async fn media_count_by_hash(&self, sha256: &str) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM media WHERE sha256 = $1")
            .bind(sha256)
            .fetch_one(&mut *self.conn().await?)
            .await
    }
}
