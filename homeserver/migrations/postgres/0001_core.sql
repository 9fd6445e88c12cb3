-- kairan core schema (PostgreSQL). The SQLite twin is ../sqlite/0001_core.sql;
-- the two differ only in types, never in tables or columns.

-- Named counters. 'stream' orders every change a client can sync (events, account
-- data, receipts, to-device messages, presence): each change takes the next value
-- inside its own transaction, so the row lock makes commit order equal position order.
CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO counters (name, value) VALUES ('stream', 0), ('state_group', 0);

CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    password_hash TEXT,
    is_admin BIGINT NOT NULL DEFAULT 0,
    deactivated BIGINT NOT NULL DEFAULT 0,
    displayname TEXT,
    avatar_url TEXT,
    created_ts BIGINT NOT NULL
);

CREATE TABLE devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    last_seen_ts BIGINT,
    last_seen_ip TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- Tokens are stored as SHA-256 hashes: a copy of the database grants no sessions.
CREATE TABLE access_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT NOT NULL,
    is_public BIGINT NOT NULL DEFAULT 0,
    created_ts BIGINT NOT NULL
);

-- Every PDU as the canonical JSON that was signed, beside what kairan computes.
CREATE TABLE events (
    stream_ordering BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT,
    depth BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    pdu_json TEXT NOT NULL,
    state_group_before BIGINT NOT NULL,
    state_group BIGINT NOT NULL,
    replaces_state TEXT,
    redacted_by TEXT,
    rel_type TEXT,
    relates_to TEXT,
    txn_device TEXT,
    txn_id TEXT
);
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);
CREATE INDEX events_relates_to ON events (relates_to, rel_type);
CREATE INDEX events_member_changes ON events (state_key, event_type, stream_ordering);

-- Idempotency of PUT /send/{txnId}: the event a device's transaction produced.
CREATE TABLE transactions (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

CREATE TABLE event_edges (
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
);

CREATE TABLE forward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- The state after each event, as a chain of deltas. A group with no prev_group is a
-- full snapshot; chains are cut at a bounded length so reads stay cheap.
CREATE TABLE state_groups (
    id BIGINT PRIMARY KEY,
    room_id TEXT NOT NULL,
    prev_group BIGINT,
    chain_len BIGINT NOT NULL
);
CREATE TABLE state_group_entries (
    state_group BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (state_group, event_type, state_key)
);

CREATE TABLE current_state (
    room_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    membership TEXT,
    PRIMARY KEY (room_id, event_type, state_key)
);
CREATE INDEX current_state_members ON current_state (state_key, event_type, membership);

CREATE TABLE room_aliases (
    alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
);

CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    data_type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, data_type)
);
CREATE INDEX account_data_stream ON account_data (user_id, stream_pos);

CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    ts BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_stream ON receipts (room_id, stream_pos);

CREATE TABLE to_device (
    stream_pos BIGINT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    content TEXT NOT NULL
);
CREATE INDEX to_device_target ON to_device (user_id, device_id, stream_pos);

CREATE TABLE presence (
    user_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    status_msg TEXT,
    last_active_ts BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL
);

CREATE TABLE filters (
    user_id TEXT NOT NULL,
    filter_id BIGINT NOT NULL,
    filter_json TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

CREATE TABLE forgotten_rooms (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);

CREATE TABLE registration_tokens (
    token TEXT PRIMARY KEY,
    uses_allowed BIGINT,
    completed BIGINT NOT NULL DEFAULT 0,
    expiry_ts BIGINT
);
