//! The `snapshot` function against the real PostgreSQL and S3 started by `quiver-local up`. Each
//! test writes its events in a time window of its own (far in the future, so no other test's or
//! seed's rows fall in it), exports only that window, and publishes under an S3 prefix of its own.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use quiver::artifact::{self, Manifest};
use quiver::events::{EventType, NewEvent};
use quiver::generate::{Generator, Shape};
use quiver::pg::Pg;
use quiver::snapshot::SnapshotMeta;
use quiver::storage::Storage;
use quiver::testing::{service_config, TestApp};
use quiver::testing::{unique_midnight_us as unique_midnight, DAY_US};
use serde_json::Value;
use snapshot::{Snapshot, SnapshotSettings, Window};

fn at(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap()
}

fn unique_prefix(tag: &str) -> String {
    format!("test-snapshot-{tag}-{}/snapshots/user_events", unique_midnight() / DAY_US)
}

async fn state(prefix: &str, keep: usize) -> Arc<Snapshot> {
    let cfg = service_config();
    let mut settings = SnapshotSettings::from_env(&cfg).unwrap().with_prefix(prefix);
    // Tests look at retention right after publishing: no grace period.
    settings.retention = artifact::Retention { keep, grace: std::time::Duration::ZERO };
    Snapshot::with_settings(&cfg, settings).await.unwrap()
}

fn pg() -> Pg {
    Pg::new(&service_config()).unwrap()
}

/// Writes `n` generated events over the `days` days before `end_us`.
async fn seed_window(end_us: i64, days: u32, n: u64) {
    let shape = Shape { end_us, window_days: days, ..Shape::default() };
    quiver::ingest::bulk(&pg(), &Generator::new(end_us as u64, shape), 0, n, &|_| {})
        .await
        .unwrap();
}

async fn count_window(from: i64, to: i64) -> i64 {
    let pg = pg();
    let c = pg.client().await.unwrap();
    c.query_one(
        "SELECT count(*) FROM user_events WHERE created_at >= $1 AND created_at < $2",
        &[&at(from), &at(to)],
    )
    .await
    .unwrap()
    .get(0)
}

fn window_query(from: i64, to: i64) -> String {
    let f = |us| at(us).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    format!("from={}&to={}", f(from), f(to))
}

async fn storage() -> Storage {
    Storage::new(&service_config()).await.unwrap()
}

async fn manifest(prefix: &str) -> Manifest<SnapshotMeta> {
    artifact::fetch_manifest(&storage().await, prefix, None).await.unwrap().unwrap().0
}

/// Downloads a version's files (checking their checksums) and opens them in DuckDB.
async fn open_parquet(m: &Manifest<SnapshotMeta>) -> (duckdb::Connection, String) {
    let s = storage().await;
    let dir = std::env::temp_dir().join(format!("quiver-snapshot-test-{}", m.version));
    let mut paths = Vec::new();
    for f in &m.files {
        let dest: PathBuf = dir.join(&f.name);
        artifact::download(&s, f, &dest).await.unwrap();
        paths.push(format!("'{}'", dest.display()));
    }
    let c = duckdb::Connection::open_in_memory().unwrap();
    (c, format!("read_parquet([{}], hive_partitioning = false)", paths.join(", ")))
}

async fn delete_prefix(prefix: &str) {
    quiver::testing::delete_prefix(&storage().await, prefix.split('/').next().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_export_of_a_window_by_day_publishes_a_manifest() {
    let end = unique_midnight();
    let (from, to) = (end - 3 * DAY_US, end);
    seed_window(end, 3, 3000).await;
    let prefix = unique_prefix("post");
    let s = state(&prefix, 3).await;
    let w = Window { from: Some(at(from)), to: Some(at(to)) };
    let report = serde_json::to_value(s.run(&w).await.unwrap()).unwrap();
    assert_eq!(report["rows"], 3000);
    assert_eq!(report["partitioned_by_day"], true);
    assert_eq!(report["files"], 3, "one part per day: {report}");

    let m = manifest(&prefix).await;
    assert_eq!(m.version, report["version"]);
    assert_eq!(m.meta.row_count, 3000);
    assert_eq!(count_window(from, to).await, 3000, "the manifest count is the PostgreSQL count");
    assert_eq!(m.meta.schema.len(), 12);
    assert_eq!(m.meta.min_created_at.as_deref(), report["min_created_at"].as_str());
    for (k, f) in m.files.iter().enumerate() {
        let day = at(from + k as i64 * DAY_US).format("%Y-%m-%d");
        assert_eq!(f.name, format!("dt={day}/part-00000.parquet"));
        assert_eq!(f.key, format!("{prefix}/{}/{}", m.version, f.name));
        assert!(f.size > 0 && f.xxh3_128.len() == 32);
    }

    // The files hold every row, the flattened columns agree with the raw JSON, and rows are in time order.
    let (c, src) = open_parquet(&m).await;
    let (n, with_duration, purchases_with_amount, purchases): (i64, i64, i64, i64) = c
        .query_row(
            &format!(
                "SELECT count(*), count(duration_ms), count(amount_cents) FILTER (WHERE event_type = 'purchase'), \
                 count(*) FILTER (WHERE event_type = 'purchase') FROM {src}"
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!((n, with_duration, purchases_with_amount), (3000, 3000, purchases));
    let (id, browser, raw): (i64, String, String) = c
        .query_row(&format!("SELECT id, browser, metadata FROM {src} LIMIT 1"), [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    let meta: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(meta["browser"], browser);
    let pgc = pg();
    let c2 = pgc.client().await.unwrap();
    let stored: Value = c2
        .query_one("SELECT metadata FROM user_events WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, meta, "the raw JSON is kept as it is stored");
    delete_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_is_flattened_exactly_as_postgres_reads_it() {
    let day = unique_midnight();
    let ev = |meta: &str, t: EventType, k: i64| NewEvent {
        user_id: 7,
        event_type: t,
        page_url: "/flat".into(),
        metadata: meta.into(),
        created_at_us: day + 3_600_000_000 + k,
    };
    let batch = vec![
        ev(
            r#"{"duration_ms": 1.5, "browser": "firefox", "amount_cents": 1999}"#,
            EventType::Purchase,
            0,
        ),
        ev(
            r#"{"duration_ms": "12", "browser": {"x": 1}, "amount_cents": 12.5}"#,
            EventType::Purchase,
            1,
        ),
        ev(r#"{"country": "NL", "referrer": null}"#, EventType::Click, 2),
    ];
    quiver::ingest::insert(&pg(), &batch, None).await.unwrap();
    let prefix = unique_prefix("flat");
    let report = state(&prefix, 3)
        .await
        .run(&Window { from: Some(at(day)), to: Some(at(day + DAY_US)) })
        .await
        .unwrap();
    assert_eq!((report.rows, report.files, report.partitioned_by_day), (3, 1, false));
    let m = manifest(&prefix).await;
    assert_eq!(m.files[0].name, "part-00000.parquet", "one day of data is not partitioned");
    let (c, src) = open_parquet(&m).await;
    let mut st = c.prepare(&format!("SELECT duration_ms, browser, country, referrer, amount_cents FROM {src} ORDER BY created_at")).unwrap();
    type Flat = (Option<f64>, Option<String>, Option<String>, Option<String>, Option<i64>);
    let rows: Vec<Flat> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows[0], (Some(1.5), Some("firefox".into()), None, None, Some(1999)));
    assert_eq!(
        rows[1],
        (None, Some(r#"{"x": 1}"#.into()), None, None, None),
        "a string duration is not a duration"
    );
    assert_eq!(rows[2], (None, None, Some("NL".into()), None, None));
    delete_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_keeps_the_newest_versions() {
    let day = unique_midnight();
    seed_window(day + DAY_US, 1, 50).await;
    let prefix = unique_prefix("retain");
    let s = state(&prefix, 2).await;
    let w = Window { from: Some(at(day)), to: Some(at(day + DAY_US)) };
    let mut made = Vec::new();
    for _ in 0..3 {
        made.push(s.run(&w).await.unwrap().version);
    }
    let kept = artifact::versions(&storage().await, &prefix).await.unwrap();
    assert_eq!(kept, made[1..].to_vec(), "the oldest version is deleted, the newest two stay");
    assert_eq!(manifest(&prefix).await.version, made[2]);
    delete_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_window_publishes_an_empty_snapshot_with_the_schema() {
    let day = unique_midnight();
    let prefix = unique_prefix("empty");
    let r = state(&prefix, 3)
        .await
        .run(&Window { from: Some(at(day)), to: Some(at(day + DAY_US)) })
        .await
        .unwrap();
    assert_eq!((r.rows, r.files), (0, 1));
    let (c, src) = open_parquet(&manifest(&prefix).await).await;
    let n: i64 = c.query_row(&format!("SELECT count(*) FROM {src}"), [], |r| r.get(0)).unwrap();
    assert_eq!(n, 0);
    delete_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_parameters_are_400s_naming_them_and_a_second_export_is_409() {
    let prefix = unique_prefix("bad");
    let s = state(&prefix, 3).await;
    let app = TestApp::new(snapshot::routes(s.clone()));
    for (q, param) in [
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("from=2026-10-02T00:00:00Z&to=2026-10-01T00:00:00Z", "from"),
        ("event_type=click", "event_type"),
    ] {
        let r = app.send("POST", format!("/snapshot?{q}"), &[], "").await;
        assert_eq!(r.status, 400, "{q}: {r}");
        assert_eq!(r.json()["param"], param, "{q}: {r}");
    }
    assert_eq!(app.get("/snapshot").await.status, 405);

    let day = unique_midnight();
    let w = Window { from: Some(at(day)), to: Some(at(day + DAY_US)) };
    let (a, b) = tokio::join!(s.run(&w), s.run(&w));
    assert!(a.is_ok());
    assert_eq!(b.unwrap_err().status(), 409, "one export at a time per instance");
    delete_prefix(&prefix).await;
}

/// Issue 16, item 1: `analytics` serves the newest version at the prefix, so a windowed export
/// through the API would replace the full snapshot (and retention would delete the full ones).
/// A window is refused with a 400 that says why, and nothing is published.
#[tokio::test(flavor = "multi_thread")]
async fn a_window_on_post_snapshot_is_refused_and_publishes_nothing() {
    let prefix = unique_prefix("window");
    let app = TestApp::new(snapshot::routes(state(&prefix, 3).await));
    for q in ["from=2099-01-01T00:00:00Z", "to=2099-01-01T00:00:00Z"] {
        let r = app.send("POST", format!("/snapshot?{q}"), &[], "").await;
        assert_eq!(r.status, 400, "{q}: {r}");
        assert!(r.json()["detail"].as_str().unwrap().contains("whole table"), "{r}");
    }
    assert!(artifact::versions(&storage().await, &prefix).await.unwrap().is_empty());
}

/// Issue 16, item 5: every statement of an export runs under the export's limit. With the API's
/// per-statement limit at 200 ms and the table locked for 800 ms by another session, the count
/// (once under the API limit: "export count timed out", 503) waits and the export succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn an_export_outlasts_the_api_statement_timeout() {
    let mut cfg = service_config();
    cfg.pg_timeout = std::time::Duration::from_millis(200);
    let prefix = unique_prefix("slow");
    let settings = SnapshotSettings::from_env(&cfg).unwrap().with_prefix(&prefix);
    let s = Snapshot::with_settings(&cfg, settings).await.unwrap();
    let day = unique_midnight();
    seed_window(day + DAY_US, 1, 10).await;
    let w = Window { from: Some(at(day)), to: Some(at(day + DAY_US)) };
    let locker = pg();
    let mut c = locker.client().await.unwrap();
    let tx = c.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE user_events IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let export = tokio::spawn(async move { s.run(&w).await });
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    tx.commit().await.unwrap();
    let report = export.await.unwrap().unwrap();
    assert_eq!(report.rows, 10);
    delete_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sample_events_are_routed_as_http_or_schedule() {
    let post_event = include_str!("../../../events/snapshot-post.json");
    let schedule_event = include_str!("../../../events/snapshot-schedule.json");
    let http: quiver::lambda::Invocation = serde_json::from_str(post_event).unwrap();
    assert!(matches!(http, quiver::lambda::Invocation::Http(_)), "{http:?}");
    let sched: quiver::lambda::Invocation = serde_json::from_str(schedule_event).unwrap();
    assert!(
        matches!(sched, quiver::lambda::Invocation::Schedule(ref v) if v["detail-type"] == "Scheduled Event")
    );

    // The HTTP sample reaches the handler as `cargo lambda invoke` sends it. It exports the whole
    // table (the deploy rehearsal runs it so); here a window added to it shows it was routed to
    // the handler, which refuses the window, without exporting the shared test table.
    let prefix = unique_prefix("sample");
    let app = TestApp::new(snapshot::routes(state(&prefix, 3).await));
    let mut req = lambda_http::request::from_str(post_event).unwrap();
    assert_eq!((req.method().as_str(), req.uri().path()), ("POST", "/snapshot"));
    let day = unique_midnight();
    *req.uri_mut() = format!("/snapshot?{}", window_query(day, day + DAY_US)).parse().unwrap();
    let r = app.call(req).await;
    assert_eq!(r.status, 400, "{r}");
    assert_eq!(r.json()["param"], "from");
}

/// Issue 29, item 1: an event past 9999-12-31 in UTC, stored before the API bounded `created_at`
/// in UTC, is left out of the export (its `dt=+10000-01-01` folder broke every later snapshot),
/// while the last microsecond of the range is exported and published.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_past_the_range_is_not_exported_and_the_snapshot_publishes() {
    let user_id = (unique_midnight() / DAY_US % 1_000_000) as i32 + 1_000_000_000;
    let c = pg().client().await.unwrap();
    let insert = "INSERT INTO user_events (user_id, event_type, page_url, metadata, created_at) \
                  VALUES ($1, 'click', '/x', '{}', $2::text::timestamptz)";
    for t in ["9999-12-31T23:59:59.999999Z", "10000-01-01T00:00:00Z"] {
        c.execute(insert, &[&user_id, &t]).await.unwrap();
    }
    let prefix = unique_prefix("range");
    let s = state(&prefix, 3).await;
    let w = Window { from: Some(at(253_402_214_400_000_000)), to: None };
    let exported = s.run(&w).await;
    c.execute("DELETE FROM user_events WHERE user_id = $1", &[&user_id]).await.unwrap();
    let report = serde_json::to_value(exported.unwrap()).unwrap();
    assert_eq!(report["rows"], 1, "{report}");
    let m = manifest(&prefix).await;
    assert_eq!(m.meta.max_created_at.as_deref(), Some("9999-12-31T23:59:59.999999Z"));
    assert_eq!(m.files[0].name, "part-00000.parquet");
    delete_prefix(&prefix).await;
}

/// Issue 29, item 4: 10,000 events on 10,000 different days (one POST's worth) used to make
/// 10,000 files and a 56 s export; sparse days now share files, and the export finishes well
/// inside a 20 s limit.
#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_days_make_a_bounded_number_of_files() {
    // 9900-01-01 onwards: past every other test's window (`unique_midnight` stays before 5800).
    let first_day_us = 250_246_627_200_000_000;
    let (from, to) = (first_day_us, first_day_us + 10_000 * DAY_US);
    let c = pg().client().await.unwrap();
    let window = "created_at >= $1 AND created_at < $2";
    c.execute(&format!("DELETE FROM user_events WHERE {window}"), &[&at(from), &at(to)])
        .await
        .unwrap();
    c.execute(
        "INSERT INTO user_events (user_id, event_type, page_url, metadata, created_at) \
         SELECT 7, 'click', '/x', '{}', $1::timestamptz + g * interval '1 day' FROM generate_series(0, 9999) g",
        &[&at(from)],
    )
    .await
    .unwrap();
    let prefix = unique_prefix("sparse");
    let cfg = service_config();
    let mut settings = SnapshotSettings::from_env(&cfg).unwrap().with_prefix(&prefix);
    settings.export_timeout = std::time::Duration::from_secs(20);
    let s = Snapshot::with_settings(&cfg, settings).await.unwrap();
    let exported = s.run(&Window { from: Some(at(from)), to: Some(at(to)) }).await;
    c.execute(&format!("DELETE FROM user_events WHERE {window}"), &[&at(from), &at(to)])
        .await
        .unwrap();
    let report = serde_json::to_value(exported.unwrap()).unwrap();
    assert_eq!(report["rows"], 10_000, "{report}");
    let files = report["files"].as_u64().unwrap() as usize;
    assert!(files <= 2 * quiver::snapshot::DAY_FILES_PER_PART + 1, "{files} files");
    let m = manifest(&prefix).await;
    let (c2, src) = open_parquet(&m).await;
    let n: i64 = c2.query_row(&format!("SELECT count(*) FROM {src}"), [], |r| r.get(0)).unwrap();
    assert_eq!(n, 10_000, "every event is in the files");
    delete_prefix(&prefix).await;
}

/// Issue 29, item 12: an export abandoned mid-way (its timeout here; a dropped request under
/// `quiver-local serve` is the same drop) leaves no local folder behind, and the Parquet writer,
/// which ran on, does not make one again.
#[tokio::test(flavor = "multi_thread")]
async fn an_abandoned_export_leaves_no_folder_behind() {
    let end = unique_midnight();
    seed_window(end, 8, 60_000).await;
    let prefix = unique_prefix("abandoned");
    let cfg = service_config();
    let tmp = std::env::temp_dir().join(quiver::testing::unique_name("abandoned-export"));
    std::fs::create_dir_all(&tmp).unwrap();
    for limit_ms in [1, 20, 50, 100, 200] {
        let mut settings = SnapshotSettings::from_env(&cfg).unwrap().with_prefix(&prefix);
        settings.export_timeout = std::time::Duration::from_millis(limit_ms);
        settings.tmp_dir = tmp.clone();
        let s = Snapshot::with_settings(&cfg, settings).await.unwrap();
        let _ = s.run(&Window { from: Some(at(end - 8 * DAY_US)), to: Some(at(end)) }).await;
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().map(|e| e.path()).collect();
        assert!(left.is_empty(), "after a {limit_ms} ms limit: {left:?}");
    }
    std::fs::remove_dir_all(&tmp).unwrap();
    delete_prefix(&prefix).await;
}
