//! The `analytics` function against the real PostgreSQL, S3 and Valkey started by `quiver-local
//! up`. Each test writes its events in a time window of its own (far in the future), exports only
//! that window under an S3 prefix of its own, and follows that prefix, so tests run in parallel
//! with each other and with everyone else's tests on the shared table.

use std::sync::Arc;
use std::time::Duration;

use analytics::Analytics;
use chrono::{DateTime, Utc};
use quiver::generate::{Generator, Shape};
use quiver::pg::Pg;
use quiver::snapshot::{ExportReport, SnapshotMeta, SnapshotSettings, Window};
use quiver::storage::Storage;
use quiver::testing::{service_config, Reply, TestApp};
use quiver::testing::{unique_midnight_us as unique_midnight, DAY_US};

fn at(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap()
}

fn rfc(us: i64) -> String {
    at(us).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn pg() -> Pg {
    Pg::new(&service_config()).unwrap()
}

/// Events in one test's window, a snapshot of exactly that window under its own prefix, and an
/// `analytics` instance following it.
struct Fixture {
    from: i64,
    to: i64,
    settings: SnapshotSettings,
    state: Arc<Analytics>,
    app: TestApp,
}

impl Fixture {
    async fn new(tag: &str, days: u32, events: u64) -> Self {
        Self::with_config(tag, days, events, service_config()).await
    }

    async fn with_config(tag: &str, days: u32, events: u64, cfg: quiver::Config) -> Self {
        let to = unique_midnight();
        let from = to - days as i64 * DAY_US;
        let prefix = format!("test-analytics-{tag}-{}/snapshots/user_events", to / DAY_US);
        let mut settings = SnapshotSettings::from_env(&cfg).unwrap().with_prefix(&prefix);
        settings.check_every = Duration::from_secs(3600);
        let state = Analytics::with_settings(&cfg, settings.clone()).await.unwrap();
        let app = TestApp::new(analytics::routes(state.clone()));
        let f = Fixture { from, to, settings, state, app };
        f.add_events(events, 1).await;
        f.publish().await;
        f
    }

    async fn add_events(&self, n: u64, seed: u64) {
        let days = ((self.to - self.from) / DAY_US) as u32;
        let shape = Shape { end_us: self.to, window_days: days, ..Shape::default() };
        // Setup, not what is tested: a bulk load of a million rows beside the whole suite can
        // outlast the API's statement timeout.
        let cfg = quiver::Config { pg_timeout: Duration::from_secs(600), ..service_config() };
        let pg = Pg::new(&cfg).unwrap();
        quiver::ingest::bulk(&pg, &Generator::new(seed ^ self.to as u64, shape), 0, n, &|_| {})
            .await
            .unwrap();
    }

    async fn publish(&self) -> ExportReport {
        let cfg = service_config();
        let w = Window { from: Some(at(self.from)), to: Some(at(self.to)) };
        quiver::snapshot::export(&pg(), &Storage::new(&cfg).await.unwrap(), &self.settings, &w)
            .await
            .unwrap()
    }

    fn window(&self) -> String {
        format!("from={}&to={}", rfc(self.from), rfc(self.to))
    }

    async fn get(&self, uri: impl AsRef<str>) -> Reply {
        self.app.get(uri).await
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let prefix = self.settings.prefix.clone();
        // Best effort: the test prefix and its versions go away with the test.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(
                async move {
                    let s = Storage::new(&service_config()).await.unwrap();
                    quiver::testing::delete_prefix(&s, prefix.split('/').next().unwrap()).await;
                },
            )
        })
        .join();
    }
}

async fn manifest_version(f: &Fixture) -> String {
    let s = Storage::new(&service_config()).await.unwrap();
    quiver::artifact::fetch_manifest::<serde_json::Value>(&s, &f.settings.prefix, None)
        .await
        .unwrap()
        .unwrap()
        .0
        .version
}

#[tokio::test(flavor = "multi_thread")]
async fn a_miss_then_a_hit_with_identical_bodies() {
    let f = Fixture::new("hit", 3, 2000).await;
    for route in ["/analytics/summary", "/analytics/funnel"] {
        let miss = f.get(route).await;
        assert_eq!(miss.status, 200, "{miss}");
        assert_eq!(miss.header("x-cache"), Some("MISS"));
        let timing = miss.header_all("server-timing");
        assert!(
            timing.contains("cache;dur=")
                && timing.contains("duckdb;dur=")
                && timing.contains("total;dur="),
            "{timing}"
        );
        assert_eq!(miss.header("x-data-version"), Some(&*manifest_version(&f).await));
        let hit = f.get(route).await;
        assert_eq!(hit.header("x-cache"), Some("HIT"));
        assert!(!hit.header_all("server-timing").contains("duckdb"), "a HIT computes nothing");
        assert_eq!(hit.body, miss.body);
        assert_eq!(hit.header("etag"), miss.header("etag"));
    }
    let s = f.get("/analytics/summary").await.json();
    assert_eq!(s["total_events"], 2000);
    assert_eq!(f.get("/analytics/funnel").await.json().as_array().unwrap().len(), 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn duckdb_and_postgres_give_identical_answers() {
    let f = Fixture::new("equal", 4, 6000).await;
    let w = f.window();
    let sub = format!("from={}&to={}", rfc(f.from + DAY_US + 3_600_000_000), rfc(f.to - DAY_US));
    for q in [
        w.clone(),
        sub.clone(),
        format!("{w}&event_type=click"),
        format!("{sub}&event_type=purchase"),
        format!("{w}&event_type=signup"),
    ] {
        for route in ["/analytics/summary", "/analytics/funnel"] {
            let duck = f.get(format!("{route}?{q}")).await;
            let pg = f.get(format!("{route}?{q}&source=postgres")).await;
            assert_eq!((duck.status, pg.status), (200, 200), "{route}?{q}");
            assert_eq!(pg.header("x-data-version"), Some("live"));
            assert_eq!(duck.json(), pg.json(), "{route}?{q}");
            assert_eq!(duck.body, pg.body, "byte-identical JSON for {route}?{q}");
        }
    }
    // The whole snapshot (no filter at all) is the window in PostgreSQL.
    let duck = f.get("/analytics/summary").await.json();
    assert_eq!(duck, f.get(format!("/analytics/summary?{w}&source=postgres")).await.json());
    assert_eq!(duck["total_events"], 6000);
    assert!(duck["avg_duration_ms"].as_f64().unwrap() > 0.0);
    // A window that ends where it starts, or before, holds no event: an empty answer, the same
    // from both sources, not an error.
    let backwards = format!("from={}&to={}", rfc(f.to), rfc(f.from));
    for route in ["/analytics/summary", "/analytics/funnel"] {
        let duck = f.get(format!("{route}?{backwards}")).await;
        let pg = f.get(format!("{route}?{backwards}&source=postgres")).await;
        assert_eq!((duck.status, pg.status), (200, 200), "{route}: {duck}");
        assert_eq!(duck.body, pg.body, "{route}");
    }
    assert_eq!(f.get(format!("/analytics/summary?{backwards}")).await.json()["total_events"], 0);
}

/// Parquet files under `dir`, at any depth.
fn parquet_files(dir: &std::path::Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => parquet_files(&e.path()),
            _ => e.path().extension().is_some_and(|x| x == "parquet" || x == "part") as usize,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_snapshot_changes_the_key_and_the_answer() {
    let f = Fixture::new("version", 2, 1000).await;
    let first = f.get("/analytics/summary").await;
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert_eq!(f.get("/analytics/summary").await.header("x-cache"), Some("HIT"));
    let v1 = first.header("x-data-version").unwrap().to_string();
    assert_eq!(first.header("x-data-stale"), None);
    // The table is in DuckDB's memory: its Parquet files are not kept in /tmp.
    let unpacked =
        f.settings.tmp_dir.join("quiver-snapshots").join(f.settings.prefix.replace('/', "_"));
    assert_eq!(parquet_files(&unpacked), 0, "{}", unpacked.display());

    f.add_events(500, 2).await;
    let report = f.publish().await;
    f.state.refresh().await.unwrap();
    let second = f.get("/analytics/summary").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-data-version"), Some(report.version.as_str()));
    assert_ne!(second.header("x-data-version"), Some(v1.as_str()));
    assert_eq!(second.header("x-cache"), Some("MISS"), "a new version is a new key");
    assert_eq!(first.json()["total_events"], 1000);
    assert_eq!(second.json()["total_events"], 1500);
    assert_eq!(parquet_files(&unpacked), 0, "nor are the new version's");
}

#[tokio::test(flavor = "multi_thread")]
async fn zstd_pass_through_bytes_decode_to_the_same_json() {
    let f = Fixture::new("zstd", 2, 1000).await;
    let plain = f.get("/analytics/funnel").await;
    assert_eq!(plain.header("x-cache"), Some("MISS"));
    assert_eq!(plain.header("content-encoding"), None);
    let z = f.app.get_with("/analytics/funnel", &[("accept-encoding", "gzip, zstd")]).await;
    assert_eq!(z.header("x-cache"), Some("HIT"));
    assert_eq!(z.header("content-encoding"), Some("zstd"));
    assert_eq!(z.decoded(), plain.body);
    let again = f.get("/analytics/funnel").await;
    assert_eq!(
        (again.header("x-cache"), &again.body),
        (Some("HIT"), &plain.body),
        "decompressed for a client without zstd"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_matching_etag_is_304() {
    let f = Fixture::new("etag", 2, 500).await;
    let first = f.get("/analytics/summary").await;
    let etag = first.header("etag").unwrap().to_string();
    assert!(etag.starts_with('"'), "{etag}");
    for enc in ["", "zstd"] {
        let r = f
            .app
            .get_with("/analytics/summary", &[("if-none-match", &etag), ("accept-encoding", enc)])
            .await;
        assert_eq!(r.status, 304);
        assert!(r.body.is_empty());
    }
    let r = f.app.get_with("/analytics/summary", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_identical_misses_compute_once() {
    let f = Fixture::new("flight", 2, 3000).await;
    // Load the snapshot first, so that the 50 requests race on the cache and not on the load.
    assert_eq!(f.get("/analytics/funnel").await.status, 200);
    let uri = format!("/analytics/summary?{}&event_type=click", f.window());
    let before = f.state.computations();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (app, uri) = (f.app.clone(), uri.clone());
            tokio::spawn(async move { app.get(uri).await })
        })
        .collect();
    let replies: Vec<Reply> =
        futures::future::join_all(tasks).await.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(f.state.computations() - before, 1, "exactly one computation");
    for r in &replies {
        assert_eq!(r.status, 200);
        assert!([Some("MISS"), Some("HIT")].contains(&r.header("x-cache")));
        assert_eq!(r.body, replies[0].body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn compare_is_a_duckdb_miss_then_a_valkey_hit() {
    let f = Fixture::new("compare", 2, 1500).await;
    let uri = format!("/analytics/compare?{}", f.window());
    let miss = f.get(&uri).await;
    assert_eq!(miss.status, 200);
    assert_eq!(miss.header("x-cache"), Some("MISS"));
    assert!(miss.header_all("server-timing").contains("duckdb;dur="));
    let m = miss.json();
    assert_eq!((m["source"].as_str(), m["cache_hit"].as_bool()), (Some("duckdb"), Some(false)));
    assert!(
        m["processing_ms"].as_f64().unwrap() > 0.0
            && m["total_ms"].as_f64().unwrap() >= m["processing_ms"].as_f64().unwrap()
    );
    assert_eq!(m["data_version"], manifest_version(&f).await);
    assert_eq!(m["summary"]["total_events"], 1500);

    let hit = f.get(&uri).await;
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    let h = hit.json();
    assert_eq!((h["source"].as_str(), h["cache_hit"].as_bool()), (Some("valkey"), Some(true)));
    assert_eq!(h["processing_ms"], 0.0);
    assert!(h["cache_lookup_us"].as_u64().is_some());
    assert_eq!(h["summary"], m["summary"]);
    // compare and summary share one cache entry.
    let s = f.get(format!("/analytics/summary?{}", f.window())).await;
    assert_eq!(s.header("x-cache"), Some("HIT"));
    assert_eq!(s.json(), m["summary"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_file_keeps_the_old_version_serving_or_is_a_503() {
    let f = Fixture::new("corrupt", 2, 800).await;
    let v1 = f.get("/analytics/summary").await.header("x-data-version").unwrap().to_string();
    assert!(!v1.is_empty());

    // A new version whose part is damaged in S3 after publishing: its checksum no longer matches.
    let v2 = f.publish().await.version;
    let s = Storage::new(&service_config()).await.unwrap();
    let (m2, _) = quiver::artifact::fetch_manifest::<SnapshotMeta>(&s, &f.settings.prefix, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m2.version, v2);
    let key = &m2.files[0].key;
    s.client
        .put_object()
        .bucket(&s.bucket)
        .key(key)
        .body(b"not parquet".to_vec().into())
        .send()
        .await
        .unwrap();
    f.state.expire();
    let r = f.get("/analytics/funnel").await;
    assert_eq!(r.status, 200, "the loaded version keeps serving");
    assert_eq!(r.header("x-data-version"), Some(v1.as_str()));
    assert!(f.state.refresh().await.is_err(), "the damaged version does not load");
    let r = f.get("/analytics/funnel").await;
    assert_eq!(r.header("x-data-version"), Some(v1.as_str()));
    assert_eq!(r.header("x-data-stale"), Some("true"), "the answer says it is not the newest data");

    // A new instance has nothing older to fall back on: 503 with the reason.
    let fresh = |f: &Fixture| {
        let settings = SnapshotSettings {
            tmp_dir: std::env::temp_dir().join(format!("quiver-fresh-{}", f.to)),
            ..f.settings.clone()
        };
        async move {
            TestApp::new(analytics::routes(
                Analytics::with_settings(&service_config(), settings).await.unwrap(),
            ))
        }
    };
    let r = fresh(&f).await.get("/analytics/summary").await;
    assert_eq!(r.status, 503);
    let p = r.json();
    assert_eq!(p["dependency"], "s3", "{p}");
    assert!(p["detail"].as_str().unwrap().contains("corrupt"), "{p}");

    // A file whose checksum matches but which DuckDB cannot read: 503 from the loader, old version kept.
    let bad = std::env::temp_dir().join(format!("quiver-bad-{}.parquet", f.to));
    std::fs::write(&bad, b"PAR1 but not really").unwrap();
    let v3 = quiver::artifact::new_version();
    quiver::artifact::publish(
        &s,
        &f.settings.prefix,
        &v3,
        &[("part-00000.parquet".into(), bad)],
        SnapshotMeta { row_count: 1, ..m2.meta.clone() },
    )
    .await
    .unwrap();
    let r = fresh(&f).await.get("/analytics/summary").await;
    assert_eq!(r.status, 503);
    let p = r.json();
    assert_eq!(p["dependency"], "snapshot", "{p}");
    assert_eq!(p["reason"], "corrupt", "{p}");
    f.state.expire();
    assert_eq!(f.get("/analytics/summary").await.header("x-data-version"), Some(v1.as_str()));
}

/// Issue 29, item 5: at the smallest `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` a table over half of
/// DuckDB's share is published twice. A cold instance loads it; a warm one either switches or,
/// when the new version does not fit beside the serving one, keeps serving the old one with
/// `x-data-stale` and `memory` as the reason, and does not download that version again until the
/// manifest changes.
#[tokio::test(flavor = "multi_thread")]
async fn a_switch_at_a_small_memory_size_succeeds_or_reports_stale() {
    let cfg = quiver::Config { memory_mb: Some(128), ..service_config() };
    let f = Fixture::with_config("small-memory", 4, BIG_AT_128_MB, cfg).await;
    let limit_mb = f.settings.duck.memory_limit_mb;
    assert_eq!(limit_mb, 76, "DuckDB's share of 128 MB");
    let v1 = f.get("/analytics/summary").await;
    assert_eq!(v1.status, 200, "a cold instance loads it: {}", v1.text());
    let v1 = v1.header("x-data-version").unwrap().to_string();

    let v2 = f.publish().await.version;
    f.state.expire();
    let switched = f.state.refresh().await;
    let r = f.get("/analytics/funnel").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let stale =
        quiver::artifact::stale_artifacts().into_iter().find(|s| s.prefix == f.settings.prefix);
    match switched {
        Ok(()) => {
            assert_eq!(r.header("x-data-version"), Some(v2.as_str()));
            assert_eq!(r.header("x-data-stale"), None);
            assert!(stale.is_none(), "{stale:?}");
        }
        Err(e) => {
            assert_eq!(r.header("x-data-version"), Some(v1.as_str()), "the old version serves");
            assert_eq!(r.header("x-data-stale"), Some("true"));
            let stale = stale.expect("the instance names the version it could not load");
            assert_eq!(
                (stale.reason.as_str(), stale.newest.as_str()),
                ("memory", v2.as_str()),
                "{e}"
            );

            // Not downloaded again while the manifest is unchanged: with its files gone from S3,
            // another check still reports `memory`, not a failed download.
            let s = Storage::new(&service_config()).await.unwrap();
            let (m2, _) =
                quiver::artifact::fetch_manifest::<SnapshotMeta>(&s, &f.settings.prefix, None)
                    .await
                    .unwrap()
                    .unwrap();
            for file in &m2.files {
                s.client.delete_object().bucket(&s.bucket).key(&file.key).send().await.unwrap();
            }
            f.state.expire();
            let _ = f.state.refresh().await;
            let r = f.get("/analytics/funnel").await;
            assert_eq!(r.header("x-data-version"), Some(v1.as_str()));
            let again = quiver::artifact::stale_artifacts()
                .into_iter()
                .find(|s| s.prefix == f.settings.prefix)
                .unwrap();
            assert_eq!(again.reason, "memory", "{again:?}");
        }
    }
}

/// Events whose table takes over half of DuckDB's 76 MB at `AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128`
/// and still fits it alone (measured: the serving table uses 43 MB, leaving 33 MB beside it).
const BIG_AT_128_MB: u64 = 1_600_000;

#[tokio::test(flavor = "multi_thread")]
async fn no_snapshot_yet_is_a_503_naming_s3() {
    let cfg = service_config();
    let settings = SnapshotSettings::from_env(&cfg)
        .unwrap()
        .with_prefix(&format!("test-analytics-none-{}/snapshots/user_events", unique_midnight()));
    let app =
        TestApp::new(analytics::routes(Analytics::with_settings(&cfg, settings).await.unwrap()));
    for route in ["/analytics/summary", "/analytics/funnel", "/analytics/compare"] {
        let r = app.get(route).await;
        assert_eq!(r.status, 503, "{route}");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert!(r.json()["detail"] == "s3 is unavailable: unpublished", "{route}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_parameters_are_400s_naming_them() {
    let cfg = service_config();
    let settings = SnapshotSettings::from_env(&cfg)
        .unwrap()
        .with_prefix("test-analytics-params/snapshots/user_events");
    let app =
        TestApp::new(analytics::routes(Analytics::with_settings(&cfg, settings).await.unwrap()));
    for (uri, param) in [
        ("/analytics/summary?from=yesterday", "from"),
        ("/analytics/summary?to=2026-10-01", "to"),
        ("/analytics/funnel?to=", "to"),
        ("/analytics/summary?limit=5", "limit"),
        ("/analytics/funnel?event_type=hover", "event_type"),
        ("/analytics/summary?source=mysql", "source"),
        ("/analytics/summary?cache=maybe", "cache"),
        ("/analytics/compare?event_type=%27%3B%20DROP%20TABLE%20user_events%3B--", "event_type"),
        ("/analytics/summary?from=2026-10-01T00:00:00Z&from=2026-10-02T00:00:00Z", "from"),
    ] {
        let r = app.get(uri).await;
        assert_eq!(r.status, 400, "{uri}");
        assert_eq!(r.json()["param"], param, "{uri}");
    }
    let long = format!("/analytics/summary?from={}", "x".repeat(5000));
    assert_eq!(app.get(long).await.status, 413);
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_off_and_postgres_bypass_the_cache() {
    let f = Fixture::new("bypass", 2, 700).await;
    let before = f.state.computations();
    for _ in 0..3 {
        let r = f.get("/analytics/summary?cache=off").await;
        assert_eq!((r.status, r.header("x-cache")), (200, Some("BYPASS")));
        assert!(r.header_all("server-timing").contains("duckdb;dur="));
    }
    assert_eq!(f.state.computations() - before, 3, "cache=off computes every time");
    let r = f.get(format!("/analytics/funnel?source=postgres&{}", f.window())).await;
    assert_eq!((r.status, r.header("x-cache")), (200, Some("BYPASS")));
    assert!(r.header_all("server-timing").contains("postgres;dur="));
}

#[tokio::test(flavor = "multi_thread")]
async fn sample_events_are_answered() {
    let f = Fixture::new("sample", 2, 600).await;
    for (file, path) in [
        (include_str!("../../../events/analytics-summary.json"), "/analytics/summary"),
        (include_str!("../../../events/analytics-funnel.json"), "/analytics/funnel"),
        (include_str!("../../../events/analytics-compare.json"), "/analytics/compare"),
    ] {
        let req = lambda_http::request::from_str(file).unwrap();
        assert_eq!(req.uri().path(), path);
        assert_eq!(f.app.call(req).await.status, 200, "{path}");
    }
}
