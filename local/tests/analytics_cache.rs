//! The analytics cache with its Valkey stopped mid-test, on a private Valkey: answers keep coming
//! as `x-cache: BYPASS` (never a 5xx), and once Valkey is back the same instance caches again.

mod common;

use std::time::{Duration, Instant};

use chrono::DateTime;
use common::PrivateStack;
use quiver::generate::{Generator, Shape};
use quiver::snapshot::{SnapshotSettings, Window};
use quiver::testing::{TestApp, DAY_US};

#[tokio::test(flavor = "multi_thread")]
async fn valkey_stopped_mid_test_bypasses_then_hits_again() {
    let stack = PrivateStack::new("analytics-valkey");
    stack.ok(&["up", "--only", "valkey"]);
    let mut cfg = quiver::testing::service_config();
    cfg.valkey_url = Some(format!("redis://127.0.0.1:{}", stack.valkey));

    // Events of our own, one day in the year ~5000, exported under a prefix of our own.
    let day = quiver::testing::unique_midnight_us();
    let pg = quiver::pg::Pg::new(&cfg).unwrap();
    let shape = Shape { end_us: day + DAY_US, window_days: 1, ..Shape::default() };
    quiver::ingest::bulk(&pg, &Generator::new(day as u64, shape), 0, 500, &|_| {}).await.unwrap();
    let prefix = format!("test-valkey-{}/snapshots/user_events", std::process::id());
    let settings = SnapshotSettings::from_env(&cfg).unwrap().with_prefix(&prefix);
    let storage = quiver::storage::Storage::new(&cfg).await.unwrap();
    let window = Window {
        from: DateTime::from_timestamp_micros(day),
        to: DateTime::from_timestamp_micros(day + DAY_US),
    };
    quiver::snapshot::export(&pg, &storage, &settings, &window).await.unwrap();
    let app = TestApp::new(analytics::routes(
        analytics::Analytics::with_settings(&cfg, settings).await.unwrap(),
    ));

    // The first call connects in the background and bypasses; then MISS, then HIT.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = app.get("/analytics/summary").await;
        assert_eq!(r.status, 200);
        if r.header("x-cache") == Some("HIT") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no HIT with Valkey up (last: {:?})",
            r.header("x-cache")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    stack.ok(&["down", "--only", "valkey"]);
    for _ in 0..5 {
        let t = Instant::now();
        let r = app.get("/analytics/summary").await;
        assert_eq!((r.status, r.header("x-cache")), (200, Some("BYPASS")));
        assert!(t.elapsed() < Duration::from_secs(1), "a bypass is fast: {:?}", t.elapsed());
    }

    stack.ok(&["up", "--only", "valkey"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = app.get("/analytics/summary").await;
        assert_eq!(r.status, 200, "never a 5xx");
        if r.header("x-cache") == Some("HIT") {
            break;
        }
        let last = r.header("x-cache");
        assert!(
            Instant::now() < deadline,
            "caching did not resume without a restart (last: {last:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    quiver::testing::delete_prefix(&storage, &prefix).await;
}
