-- `metadata.duration_ms` as a number, computed once when a row is written instead of parsing the
-- jsonb on every analytics query (issue 19). NULL where it is absent, not a JSON number, or
-- outside 0 to 1e12 ms: `POST /events` refuses those (events::MAX_DURATION_MS), and rows written
-- before that bound (1e200 overflowed float8 `avg`, issue 17) are left out of the average instead
-- of breaking it. The snapshot exports this column, so DuckDB and PostgreSQL average the same values.
-- The nested CASE fixes the order: a string is never cast.
--
-- Online (issue 29). This migration was first a `GENERATED ALWAYS AS (...) STORED` column, which
-- rewrites the table and its indexes under an exclusive lock (7.5 s at 1M rows on the 2-core VM):
-- on a large table it could not finish within any request's timeout and blocked every query while
-- it tried. Now it only changes the catalog: a nullable column without a default (no rewrite), and
-- a trigger that fills it for every row written from now on. Migration 4 (`migrate::backfill`)
-- fills the older rows in small batches; readers of the column wait for version 4. A database that
-- applied the first form keeps its generated column: same values, and version 3 is not run again.
CREATE OR REPLACE FUNCTION quiver_duration_ms(metadata jsonb) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_typeof(metadata->'duration_ms') = 'number' THEN
        CASE WHEN (metadata->'duration_ms')::numeric BETWEEN 0 AND 1e12 THEN (metadata->'duration_ms')::float8 END
    END
$$;

ALTER TABLE user_events ADD COLUMN IF NOT EXISTS duration_ms double precision;

CREATE OR REPLACE FUNCTION quiver_set_duration_ms() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.duration_ms := quiver_duration_ms(NEW.metadata);
    RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS user_events_duration_ms ON user_events;
CREATE TRIGGER user_events_duration_ms BEFORE INSERT OR UPDATE OF metadata, duration_ms ON user_events
    FOR EACH ROW EXECUTE FUNCTION quiver_set_duration_ms();

-- Index upkeep was most of an ingest's cost (issue 19, part 2). No query reads these two: the
-- GIN on `metadata` served ad-hoc JSONB queries in the reference stack, which Quiver answers from
-- the snapshot, and an index on five event types is never chosen over a scan. Measured with
-- `\copy` of 1,000 events into a copy of the 7,206-row table (median of 40 each, interleaved):
-- 12.0 ms with both, 10.5 ms without the GIN, 9.5 ms without either, 5.9 ms with the primary key
-- alone; the GIN's default `fastupdate` already defers its work, and a 64 MB pending list (11.9 ms)
-- did not help. README, "Ingest and the indexes", has the figures.
DROP INDEX IF EXISTS user_events_metadata;
DROP INDEX IF EXISTS user_events_type;
