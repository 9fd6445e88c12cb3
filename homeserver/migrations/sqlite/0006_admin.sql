-- Administration (SQLite). The PostgreSQL twin is ../postgres/0006_admin.sql; the two
-- differ only in types (and in how the audit log refuses changes), never in tables or columns.

-- The department an account belongs to (CSV import, `users create`), and when it was
-- deactivated (the utilisation figures of past months need it; NULL for accounts
-- deactivated before this migration, which then count as gone since ever).
ALTER TABLE users ADD COLUMN department TEXT;
ALTER TABLE users ADD COLUMN deactivated_ts INTEGER;
CREATE INDEX users_department ON users (department);

-- Days on which a user synced, as local dates (YYYY-MM-DD in admin.utc_offset). The sync
-- handler writes at most one row per user per day (an in-memory cache skips the rest).
CREATE TABLE user_daily_activity (
    day TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (day, user_id)
);

-- The figures count the events of a month: a range scan by time.
CREATE INDEX events_origin_server_ts ON events (origin_server_ts);

-- The server-side policy of a room, also published into the room as the state event
-- jp.kairan.room.policy. retention: under1y, 1y, 3y, 5y, 10y, 30y or permanent;
-- on_expiry: transfer (to the archives) or dispose; encryption: required, forbidden or
-- NULL (no rule); allowed_servers: a JSON array (written as m.room.server_acl), NULL
-- when the policy does not manage it.
CREATE TABLE room_policies (
    room_id TEXT PRIMARY KEY,
    official INTEGER NOT NULL DEFAULT 0,
    retention TEXT,
    on_expiry TEXT,
    department TEXT,
    encryption TEXT,
    allowed_servers TEXT,
    updated_ts INTEGER NOT NULL,
    updated_by TEXT NOT NULL
);

-- Rooms shut down with blocking: nobody may join them any more.
CREATE TABLE blocked_rooms (
    room_id TEXT PRIMARY KEY,
    blocked_by TEXT NOT NULL,
    reason TEXT,
    blocked_ts INTEGER NOT NULL
);

-- Server policy changed at run time: name -> JSON value (federation_allowlist, media,
-- registration_mode). Loaded at start; a row overrides the configuration file.
CREATE TABLE server_policy (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_ts INTEGER NOT NULL,
    updated_by TEXT NOT NULL
);

-- Every call of the admin API: who, when, what, on what, with which parameters
-- (secrets removed) and how it ended. Append-only: the triggers refuse changes.
CREATE TABLE admin_audit (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    caller TEXT,
    action TEXT NOT NULL,
    target TEXT,
    params TEXT NOT NULL,
    status INTEGER NOT NULL,
    result TEXT NOT NULL,
    detail TEXT,
    client_ip TEXT
);
CREATE INDEX admin_audit_ts ON admin_audit (ts);
CREATE INDEX admin_audit_caller ON admin_audit (caller, ts);
CREATE INDEX admin_audit_target ON admin_audit (target, ts);

CREATE TRIGGER admin_audit_no_update BEFORE UPDATE ON admin_audit
BEGIN
    SELECT RAISE(ABORT, 'admin_audit is append-only');
END;
CREATE TRIGGER admin_audit_no_delete BEFORE DELETE ON admin_audit
BEGIN
    SELECT RAISE(ABORT, 'admin_audit is append-only');
END;
