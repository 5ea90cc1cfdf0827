//! Every workload in one place: what the report calls it, the reference (Python stack) figure it
//! is compared with, and Quiver's target. `{…}` in an id or a name is filled in when the row is
//! made ([`super::Row::fill`]): the number of events, the function, the decode approach.

/// One line of the report before it is measured.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub id: &'static str,
    pub name: &'static str,
    /// The reference's figure, quoted as its write-up gives it ("—" when it has none).
    pub reference: &'static str,
    /// The same figure in milliseconds, when it is a time the ratio column can compare with.
    pub reference_ms: Option<f64>,
    pub target: &'static str,
}

pub const CACHE_HIT: Workload = Workload {
    id: "cache-hit",
    name: "cache HIT, one request end to end",
    reference: "2.1 ms",
    reference_ms: Some(2.1),
    target: "p50 ≤ 50 µs pinned, p99 ≤ 200 µs; ≥ 40k req/s at 16+",
};

pub const CACHE_MISS: Workload = Workload {
    id: "cache-miss",
    name: "cache MISS: analytics summary (DuckDB), {events} events",
    reference: "294–517 ms",
    reference_ms: Some(294.0),
    target: "≤ 5 ms at 50k, ≤ 25 ms at 1M",
};

/// The reference's figure was over 7,206 events: other sizes are not compared with it.
pub const PG_SUMMARY: Workload = Workload {
    id: "pg-summary",
    name: "PostgreSQL analytics summary, {events} events",
    reference: "29.5 ms",
    reference_ms: Some(29.5),
    target: "≤ 5 ms at 7,206",
};

/// Server-side time alone: `EXPLAIN ANALYZE` of Quiver's summary query against the reference
/// stack's own query, on the same table, interleaved.
pub const PG_SUMMARY_EXPLAIN: Workload = Workload {
    id: "pg-summary-explain",
    name: "PostgreSQL summary query alone (EXPLAIN ANALYZE), {events} events",
    reference: "its own query, measured on the same table",
    reference_ms: None,
    target: "≤ 50% of the reference query's time",
};

pub const DUCKDB_7206: Workload = Workload {
    id: "duckdb-7206",
    name: "DuckDB over the snapshot, 7,206 events (uncached)",
    reference: "0.5–2 ms (claimed)",
    reference_ms: Some(0.5),
    target: "≤ 2 ms",
};

pub const PROCESS_50K: Workload = Workload {
    id: "process-50k",
    name: "process 50,000 generated records",
    reference: "294 ms (244 + 50)",
    reference_ms: Some(294.0),
    target: "≤ 5 ms total",
};

pub const PROCESS_1M: Workload = Workload {
    id: "process-1m",
    name: "process 1,000,000 records",
    reference: "—",
    reference_ms: None,
    target: "≤ 40 ms",
};

pub const PROCESS_POST_50K: Workload = Workload {
    id: "process-post-50k",
    name: "POST /process, 50,000-point body (parse + process)",
    reference: "—",
    reference_ms: None,
    target: "—",
};

pub const PROCESS_POST_50K_HIT: Workload = Workload {
    id: "process-post-50k-hit",
    name: "POST /process, the same 50,000-point body again (cache HIT)",
    reference: "—",
    reference_ms: None,
    target: "—",
};

pub const INDEX_10K: Workload = Workload {
    id: "index-10k",
    name: "Tantivy: index 10,000 reference documents, incl. commit",
    reference: "117 ms (Rust native: 95 ms)",
    reference_ms: Some(117.0),
    target: "≤ 45 ms",
};

pub const INDEX_REALISTIC_10K: Workload = Workload {
    id: "index-realistic-10k",
    name: "Tantivy: index 10,000 realistic documents",
    reference: "—",
    reference_ms: None,
    target: "≥ 100k docs/s",
};

pub const INDEX_REALISTIC_100K: Workload = Workload {
    id: "index-realistic-100k",
    name: "Tantivy: index 100,000 realistic documents",
    reference: "—",
    reference_ms: None,
    target: "≥ 100k docs/s",
};

pub const SEARCH: Workload = Workload {
    id: "search",
    name: "Tantivy: search over HTTP",
    reference: "p50 4.4 ms, p99 8.2 ms",
    reference_ms: Some(4.4),
    target: "p50 ≤ 150 µs, p99 ≤ 500 µs",
};

/// Each request a query not asked before: the search runs, and the cache misses.
pub const SEARCH_MISS: Workload = Workload {
    id: "search-miss",
    name: "Tantivy: search over HTTP, a query not in the cache, 10,000 reference documents",
    reference: "1.52 ms (Python stack measured on this VM, issue 19)",
    reference_ms: Some(1.52),
    target: "p50 ≤ 300 µs",
};

pub const PG_ENCODE_100: Workload = Workload {
    id: "pg-encode-100",
    name: "fetch and encode 100 events as JSON (typed)",
    reference: "msgspec 5.77 ms total",
    reference_ms: Some(5.77),
    target: "≤ 1 ms total",
};

/// The one decode the reference measured; the other approaches and sizes are [`PG_DECODE`].
pub const PG_DECODE_100_TYPED: Workload = Workload {
    id: "pg-decode-100-typed",
    name: "fetch and decode 100 events: typed",
    reference: "msgspec 5.77 ms total, 0.23 ms parse",
    reference_ms: Some(5.77),
    target: "≤ 1 ms total",
};

pub const PG_DECODE: Workload = Workload {
    id: "pg-decode-{limit}-{approach}",
    name: "fetch and decode {limit} events: {approach}",
    reference: "—",
    reference_ms: None,
    target: "—",
};

pub const INSERT_1000: Workload = Workload {
    id: "insert-1000",
    name: "PostgreSQL: insert 1,000 events (POST /events, COPY BINARY)",
    reference: "37.8 ms (26,442 rows/s)",
    reference_ms: Some(37.8),
    target: "≤ 5 ms",
};

pub const INSERT_BULK: Workload = Workload {
    id: "insert-100k",
    name: "PostgreSQL: insert {count} events over HTTP (POST /events/bulk)",
    reference: "—",
    reference_ms: None,
    target: "≥ 500,000 rows/s",
};

/// [`INSERT_1000`] without HTTP: PostgreSQL's share of its figure.
pub const INSERT_1000_PG: Workload = Workload {
    id: "insert-1000-pg",
    name: "PostgreSQL alone: the same 1,000 events, COPY BINARY without HTTP",
    reference: "—",
    reference_ms: None,
    target: "—",
};

/// [`INSERT_BULK`] without HTTP.
pub const INSERT_BULK_PG: Workload = Workload {
    id: "insert-100k-pg",
    name: "PostgreSQL alone: {count} generated events, COPY BINARY without HTTP",
    reference: "—",
    reference_ms: None,
    target: "—",
};

pub const SWITCH_SUMMARY: Workload = Workload {
    id: "switch-summary",
    name: "analytics summary (uncached) while switching to a new {events}-event snapshot",
    reference: "—",
    reference_ms: None,
    target: "p99 during the switch ≤ 2× p99 without",
};

pub const SWITCH_SEARCH: Workload = Workload {
    id: "switch-search",
    name: "search misses while switching to a new {docs}-document index",
    reference: "—",
    reference_ms: None,
    target: "p99 during the switch ≤ 2× p99 without",
};

pub const SWITCH_TMP: Workload = Workload {
    id: "switch-tmp",
    name: "QUIVER_TMP_DIR after {rounds} switches of the snapshot and the index",
    reference: "—",
    reference_ms: None,
    target: "one version of each: the unpacked index; no snapshot files",
};

pub const SOAK: Workload = Workload {
    id: "soak",
    name: "load: cached + uncached analytics, search, POST /events",
    reference: "—",
    reference_ms: None,
    target: "0 errors; RSS within 10% of the warm-up's peak",
};

/// One per function; the target is the function's own (`cold_start` in [`FUNCTIONS`]).
pub const COLD_START: Workload = Workload {
    id: "cold-start-{function}",
    name: "cold start: {function} ({profile} binary)",
    reference: "Python 3.13 zip ≈ 80 ms",
    reference_ms: Some(80.0),
    target: "per function: FUNCTIONS",
};

/// One per function; the target is the function's own (`zipped` in [`FUNCTIONS`]).
pub const SIZE: Workload = Workload {
    id: "size-{function}",
    name: "binary size, zipped: {function} (arm64 release)",
    reference: "—",
    reference_ms: None,
    target: "per function: FUNCTIONS",
};

/// A function binary measured by [`COLD_START`] and [`SIZE`], with its targets for both.
#[derive(Debug, Clone, Copy)]
pub struct Function {
    pub name: &'static str,
    /// The sample event its cold start answers first.
    pub event: &'static str,
    pub cold_start: &'static str,
    /// For the arm64 release zip.
    pub zipped: &'static str,
}

#[rustfmt::skip]
pub const FUNCTIONS: &[Function] = &[
    Function { name: "health",       event: "events/health.json",            cold_start: "≤ 20 ms", zipped: "≤ 6 MB" },
    Function { name: "events",       event: "events/events-get.json",        cold_start: "≤ 40 ms", zipped: "≤ 5 MB" },
    Function { name: "analytics",    event: "events/analytics-summary.json", cold_start: "≤ 40 ms", zipped: "≤ 25 MB" },
    Function { name: "snapshot",     event: "events/snapshot-post.json",     cold_start: "≤ 40 ms", zipped: "≤ 25 MB" },
    Function { name: "process",      event: "events/process-get.json",       cold_start: "≤ 40 ms", zipped: "≤ 15 MB" },
    Function { name: "indexer",      event: "events/indexer-post.json",      cold_start: "≤ 40 ms", zipped: "≤ 10 MB" },
    Function { name: "search",       event: "events/search.json",            cold_start: "≤ 40 ms", zipped: "≤ 10 MB" },
    Function { name: "pg-benchmark", event: "events/pg-benchmark.json",      cold_start: "≤ 40 ms", zipped: "≤ 15 MB" },
];
