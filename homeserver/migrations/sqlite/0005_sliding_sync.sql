-- Simplified sliding sync (MSC4186). The PostgreSQL twin is ../postgres/0005_sliding_sync.sql.

-- What one connection (user, device, conn_id) has been sent: per room, the stream
-- position its data was sent up to, the membership it was sent as and the
-- required_state / timeline_limit it was sent with (rooms_json), and the room count of
-- each list (lists_json). A `pos` token names a snapshot plus the stream and typing
-- positions of the response; a snapshot is written only when a response changes it, and
-- using one drops the connection's others, so a connection keeps two or three rows.
CREATE TABLE sliding_sync_snapshots (
    id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    conn_id TEXT NOT NULL,
    rooms_json TEXT NOT NULL,
    lists_json TEXT NOT NULL,
    created_ts INTEGER NOT NULL
);
CREATE INDEX sliding_sync_snapshots_conn ON sliding_sync_snapshots (user_id, device_id, conn_id);

-- Snapshot IDs are never reused, so a stale pos can never name someone else's snapshot.
INSERT INTO counters (name, value) VALUES ('sliding_sync', 0);
