-- Other servers' signing keys (PostgreSQL). The SQLite twin is ../sqlite/0008_server_keys.sql;
-- the two differ only in types.

-- The verify keys each server published, current and old: what event and request
-- signatures are checked with. valid_until_ts: until when a current key may be used
-- without asking the server again (capped at a week from when it was fetched);
-- expired_ts: when an old key stopped being used (NULL for a current key).
CREATE TABLE server_signing_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    expired_ts BIGINT,
    PRIMARY KEY (server_name, key_id)
);

-- The last key document each server signed, exactly as it came, so that the key notary
-- (/_matrix/key/v2/query) can hand it on with the origin's own signature intact.
CREATE TABLE server_key_documents (
    server_name TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL
);
