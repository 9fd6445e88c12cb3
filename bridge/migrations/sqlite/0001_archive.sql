-- kairan-bridge archive schema (SQLite). The PostgreSQL twin is ../postgres/0001_archive.sql;
-- the two differ only in types, never in tables or columns.

-- The log: one row per record, seq = leaf index in the Merkle tree (0, 1, 2, ... no gaps).
-- Rows are only ever appended. The one sanctioned change is disposal (廃棄): the payload
-- (and its salt) is cleared and disposed_by names the disposal record; everything the leaf
-- hash covers stays, so the tree still verifies.
CREATE TABLE records (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    dedup_key TEXT UNIQUE,
    room_id TEXT,
    event_id TEXT,
    event_type TEXT,
    sender TEXT,
    origin_ts INTEGER,
    archived_ts INTEGER NOT NULL,
    retention TEXT,
    expires TEXT,
    on_expiry TEXT,
    payload BLOB,
    payload_salt TEXT,
    payload_hash TEXT NOT NULL,
    note TEXT,
    leaf_hash TEXT NOT NULL,
    signature TEXT NOT NULL,
    disposed_by INTEGER
);
CREATE INDEX records_room ON records (room_id, seq);
CREATE INDEX records_event ON records (event_id);

-- Serialises appends across processes (daemon and CLI): every append first updates this row.
CREATE TABLE log_state (id INTEGER PRIMARY KEY, size INTEGER NOT NULL);
INSERT INTO log_state (id, size) VALUES (1, 0);

-- Signed tree heads (checkpoints).
CREATE TABLE tree_heads (
    id INTEGER PRIMARY KEY,
    tree_size INTEGER NOT NULL,
    root_hash TEXT NOT NULL,
    created_ts INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    signature TEXT NOT NULL
);

-- Co-signatures of tree heads by other offices' keys.
CREATE TABLE cosignatures (
    head_id INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    signature TEXT NOT NULL,
    created_ts INTEGER NOT NULL,
    PRIMARY KEY (head_id, key_id)
);

-- Working state of the daemon (not part of the record): rooms, pagination cursors, and
-- work still to do (attachments to fetch, events to decrypt).
CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    policy TEXT,
    official INTEGER NOT NULL DEFAULT 0,
    cursor TEXT,
    updated_ts INTEGER NOT NULL
);

CREATE TABLE pending (
    dedup_key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    source_seq INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
