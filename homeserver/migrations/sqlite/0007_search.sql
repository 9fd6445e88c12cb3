-- Message search: the searchable text of each event (a message's body, a room's name or
-- topic), lower-cased at write time so both engines can match it with LIKE.
ALTER TABLE events ADD COLUMN search_text TEXT;
CREATE INDEX events_search_room ON events (room_id, stream_ordering) WHERE search_text IS NOT NULL;
