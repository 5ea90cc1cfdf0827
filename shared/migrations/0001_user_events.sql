-- Events, as the reference stack stores them. Applied by the migration step (`quiver::migrate`:
-- `quiver-local migrate`, or the deploy's); every statement is safe to run twice.
CREATE TABLE IF NOT EXISTS user_events (
    id          bigserial PRIMARY KEY,
    user_id     int         NOT NULL CHECK (user_id > 0),
    event_type  text        NOT NULL CHECK (event_type IN ('page_view', 'click', 'conversion', 'signup', 'purchase')),
    page_url    text        NOT NULL,
    metadata    jsonb       NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS user_events_user_recent ON user_events (user_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS user_events_type ON user_events (event_type);
CREATE INDEX IF NOT EXISTS user_events_created ON user_events (created_at);
CREATE INDEX IF NOT EXISTS user_events_metadata ON user_events USING gin (metadata jsonb_path_ops);

-- A retried POST /events with the same Idempotency-Key replays the stored response.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key         text PRIMARY KEY,
    body_hash   text        NOT NULL,
    status      int,
    response    jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Bulk writes name their ids, so that a batch can report first_id/last_id. A block of ids is
-- reserved atomically; the advisory lock is held only for the reservation, not the write.
CREATE OR REPLACE FUNCTION quiver_reserve_event_ids(n bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    first_id bigint;
BEGIN
    PERFORM pg_advisory_lock(727001);
    first_id := nextval('user_events_id_seq');
    IF n > 1 THEN
        PERFORM setval('user_events_id_seq', first_id + n - 1);
    END IF;
    PERFORM pg_advisory_unlock(727001);
    RETURN first_id;
END;
$$;
