-- Which stored events name an event as a prev event: an event that arrives after its
-- children (through a gap) is not a forward extremity, and this finds them.
CREATE INDEX event_edges_by_prev ON event_edges (prev_event_id);
