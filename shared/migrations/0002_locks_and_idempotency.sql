-- Transaction-level locks, and idempotency keys that expire and belong to a caller. Applied in
-- the same transaction as its record in quiver_migrations; every statement is safe to run twice.

-- The id block's lock is released with the transaction that took it, so a cancelled statement or
-- a dropped connection cannot leave it held. Callers run it on its own (autocommit), so the lock
-- lasts this one statement, not the whole write.
CREATE OR REPLACE FUNCTION quiver_reserve_event_ids(n bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    first_id bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(727001);
    first_id := nextval('user_events_id_seq');
    IF n > 1 THEN
        PERFORM setval('user_events_id_seq', first_id + n - 1);
    END IF;
    RETURN first_id;
END;
$$;

-- A key is scoped to its caller (the IAM principal on AWS; '' where there is none), and expires
-- QUIVER_IDEMPOTENCY_TTL_H after its first use: every keyed write deletes up to 100 expired keys.
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS caller text NOT NULL DEFAULT '';
ALTER TABLE idempotency_keys DROP CONSTRAINT IF EXISTS idempotency_keys_pkey;
ALTER TABLE idempotency_keys DROP CONSTRAINT IF EXISTS idempotency_keys_caller_key;
ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_caller_key PRIMARY KEY (caller, key);
CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_at);
