-- End-to-end encryption (SQLite). The PostgreSQL twin is ../postgres/0002_e2ee.sql;
-- the two differ only in types, never in tables or columns. The server stores keys
-- as the JSON the client signed and never looks inside more than the rules need.

-- Identity keys of a device, as uploaded (without `unsigned`).
CREATE TABLE e2e_device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- One-time keys: claiming one deletes it. Handed out oldest first.
CREATE TABLE e2e_one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    ts_added_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);

-- At most one fallback key per device and algorithm; claiming marks it used and
-- keeps it until the device uploads another.
CREATE TABLE e2e_fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- Cross-signing keys: key_type is master, self_signing or user_signing; public_key is
-- the unpadded base64 ed25519 key (the name signatures refer to).
CREATE TABLE e2e_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    public_key TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded through /keys/signatures/upload, merged into the signed key
-- when it is queried. target_key is a device ID or a cross-signing public key.
CREATE TABLE e2e_signatures (
    target_user_id TEXT NOT NULL,
    target_key TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key, signer_user_id, signer_key_id)
);

-- The device list stream: a row per user whose devices or cross-signing keys changed,
-- at a position of the 'stream' counter. visible_to restricts the change to one user
-- (a signature made with that user's user-signing key); NULL means everyone who
-- shares a room with user_id.
CREATE TABLE device_list_changes (
    stream_pos INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    visible_to TEXT,
    PRIMARY KEY (stream_pos, user_id)
);

-- Server-side room key backups. Versions count up per user and are never reused;
-- a deleted version keeps its row (deleted = 1) and loses its keys.
CREATE TABLE e2e_backup_versions (
    user_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, version)
);

-- One backed-up session key; the three ranking columns decide whether an upload
-- replaces it, session_json is the KeyBackupData as uploaded.
CREATE TABLE e2e_backup_keys (
    user_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index INTEGER NOT NULL,
    forwarded_count INTEGER NOT NULL,
    is_verified INTEGER NOT NULL,
    session_json TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);
