-- Remote users' device and cross-signing keys, as their server last answered
-- user/keys/query (the whole answer for the user: devices, master, self-signing), and
-- the stream position read just before asking. An m.device_list_update or
-- m.signing_key_update about the user deletes the row; the copy is used only while a
-- local user has shared a room with them since cached_pos, for only then does their
-- server tell this one of changes.
CREATE TABLE remote_user_keys (
    user_id TEXT PRIMARY KEY,
    keys_json TEXT NOT NULL,
    cached_pos INTEGER NOT NULL
);
