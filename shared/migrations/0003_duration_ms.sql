-- `metadata.duration_ms` as a number, computed once when a row is written instead of parsing the
-- jsonb on every analytics query (issue 19). NULL where it is absent, not a JSON number, or
-- outside 0 to 1e12 ms: `POST /events` refuses those (events::MAX_DURATION_MS), and rows written
-- before that bound (1e200 overflowed float8 `avg`, issue 17) are left out of the average instead
-- of breaking it. The snapshot exports this column, so DuckDB and PostgreSQL average the same values.
-- The nested CASE fixes the order: a string is never cast.
-- Adding it rewrites the table under an exclusive lock: about 6 s per million rows on the 2-core VM.
ALTER TABLE user_events ADD COLUMN IF NOT EXISTS duration_ms double precision GENERATED ALWAYS AS (
    CASE WHEN jsonb_typeof(metadata->'duration_ms') = 'number' THEN
        CASE WHEN (metadata->'duration_ms')::numeric BETWEEN 0 AND 1e12 THEN (metadata->'duration_ms')::float8 END
    END
) STORED;
