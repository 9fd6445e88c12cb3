-- Media repository (PostgreSQL). The SQLite twin is ../sqlite/0003_media.sql.

-- One row per uploaded media ID. The content lives on disk under media.store_dir,
-- addressed by its SHA-256 (several media IDs may share one file). content_type is
-- what the bytes were detected to be and is what downloads are served as;
-- declared_type is what the client claimed, kept for the record only.
CREATE TABLE media (
    media_id TEXT PRIMARY KEY,
    uploader TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    declared_type TEXT,
    upload_name TEXT,
    created_ts BIGINT NOT NULL,
    quarantined BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX media_sha256 ON media (sha256);
CREATE INDEX media_uploader ON media (uploader, created_ts);
