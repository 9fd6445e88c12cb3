-- Federation: the room side (PostgreSQL). The SQLite twin is ../sqlite/0009_federation.sql.

-- Events this server holds without them being in a room's timeline: the state and auth
-- chain a join brought, auth events fetched to check another event. They can be
-- looked up by ID like any event but are never synced or paginated.
CREATE TABLE outliers (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    pdu_json TEXT NOT NULL
);

-- Events received and refused: rejected by the authorisation rules, or soft-failed
-- against the current state. Kept for the record and so they are not fetched again.
CREATE TABLE rejected_events (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    pdu_json TEXT NOT NULL,
    reason TEXT NOT NULL,
    received_ts BIGINT NOT NULL
);

-- The durable outbound queue: one row per PDU or EDU per destination, written in the
-- transaction that persists the event, deleted when the destination acknowledged it.
CREATE TABLE federation_queue (
    id BIGSERIAL PRIMARY KEY,
    destination TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX federation_queue_destination ON federation_queue (destination, kind, id);

-- Transactions received, so a retried transaction is answered without processing it twice.
CREATE TABLE federation_received (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);

-- The stripped state another server sent with an invite to a room this server is not in.
CREATE TABLE invite_stripped_state (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    events TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

-- History fetched from other servers (backfill) takes positions below every other
-- event's, counting down from 0, so that it sorts before what this server already had
-- and never shows up as news in an incremental sync.
INSERT INTO counters (name, value) VALUES ('backfill', 0);
