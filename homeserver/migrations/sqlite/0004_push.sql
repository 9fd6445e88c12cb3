-- Push: the notifications each event produced for each local user, and pushers.

-- One row per (event, user) whose push rules said "notify"; counted for unread badges
-- and listed by /notifications. The event's stream position is read from events, so
-- these rows are written before the stream counter is taken. thread_id is 'main' or the thread root's event ID.
CREATE TABLE event_push_actions (
    event_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    highlight INTEGER NOT NULL,
    actions TEXT NOT NULL,
    PRIMARY KEY (event_id, user_id)
);
CREATE INDEX event_push_actions_user ON event_push_actions (user_id, room_id);

CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    kind TEXT NOT NULL,
    pusher_json TEXT NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_app_key ON pushers (app_id, pushkey);
