-- When each event was recorded, in unix milliseconds: a frame's delivery
-- latency is measured from it (`pushtoken_push_delivery_seconds`). Events
-- recorded before this column existed have 0 and are not measured.
ALTER TABLE events ADD COLUMN recorded_ms BIGINT NOT NULL DEFAULT 0;
