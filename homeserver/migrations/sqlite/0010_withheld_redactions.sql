-- Redactions received before the event they redact. Since room v3 a redaction takes
-- effect only once its target is known and the redactor may redact it: the target is
-- judged when it arrives. `only_server` is the redactor's server when the redactor lacked
-- the room's redact level (the target must then come from that server), NULL otherwise.
CREATE TABLE withheld_redactions (
    target_id TEXT NOT NULL,
    redaction_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    only_server TEXT,
    PRIMARY KEY (target_id, redaction_id)
);
