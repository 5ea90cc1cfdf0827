//! Nothing lost, end to end, through the handlers `quiver-local serve` mounts and the real
//! services: concurrent ingest with retried batches, then PostgreSQL, the snapshot manifest, DuckDB
//! and the cache must all agree on the count, and a new snapshot must change the cached answer.
//! The test writes into one day of its own (far in the future) and exports under its own prefix.

use chrono::{DateTime, Utc};
use quiver::testing::{TestApp, DAY_US};
use serde_json::{json, Value};

const TASKS: usize = 8;
const BATCHES: usize = 10;
const PER_BATCH: usize = 50;

fn rfc(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// `POST /events` of a JSON batch under an `Idempotency-Key`.
async fn post_batch(app: &TestApp, body: &[u8], key: &str) -> quiver::testing::Reply {
    let headers = [("content-type", "application/json"), ("idempotency-key", key)];
    app.send("POST", "/events", &headers, body.to_vec()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_events_reach_postgres_the_snapshot_duckdb_and_the_cache() {
    let cfg = quiver::testing::service_config();
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            as i64;
    let day = quiver::testing::unique_midnight_us();
    let run = format!("{}-{}", std::process::id(), nanos % 1_000_000_000);
    let events_app = TestApp::new(events::routes(events::Events::new(&cfg).unwrap()));

    // 1. Concurrent batches; every third one is sent twice with the same Idempotency-Key.
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (app, run) = (events_app.clone(), run.clone());
            tokio::spawn(async move {
                let mut acknowledged = 0u64;
                for b in 0..BATCHES {
                    let batch: Vec<Value> = (0..PER_BATCH)
                        .map(|i| {
                            let n = (t * BATCHES + b) * PER_BATCH + i;
                            let kind = ["page_view", "click", "conversion"][n % 3];
                            json!({"user_id": 1 + n % 97, "event_type": kind, "page_url": format!("/p/{}", n % 7),
                                   "metadata": {"duration_ms": n % 1000}, "created_at": rfc(day + n as i64 * 1_000_000)})
                        })
                        .collect();
                    let body = serde_json::to_vec(&batch).unwrap();
                    let key = format!("integrity-{run}-{t}-{b}");
                    let r = post_batch(&app, &body, &key).await;
                    assert_eq!(r.status, 201, "{r}");
                    let first = r.json();
                    if b % 3 == 0 {
                        let r = post_batch(&app, &body, &key).await;
                        assert_eq!(r.status, 201, "{r}");
                        let again = r.json();
                        for f in ["inserted", "first_id", "last_id"] {
                            assert_eq!(again[f], first[f], "a retry replays the first answer: {again} vs {first}");
                        }
                    }
                    acknowledged += first["inserted"].as_u64().unwrap();
                }
                acknowledged
            })
        })
        .collect();
    let mut acknowledged = 0;
    for t in tasks {
        acknowledged += t.await.unwrap();
    }
    let n = (TASKS * BATCHES * PER_BATCH) as u64;
    assert_eq!(acknowledged, n);

    // 2. PostgreSQL holds exactly the acknowledged events.
    let pg = quiver::pg::Pg::new(&cfg).unwrap();
    let (from, to) = (
        DateTime::from_timestamp_micros(day).unwrap(),
        DateTime::from_timestamp_micros(day + DAY_US).unwrap(),
    );
    let count = |pg: quiver::pg::Pg| async move {
        let c = pg.client().await.unwrap();
        c.query_one(
            "SELECT count(*) FROM user_events WHERE created_at >= $1 AND created_at < $2",
            &[&from, &to],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };
    assert_eq!(count(pg.clone()).await, n as i64);

    // 3. A snapshot of the day: manifest count = DuckDB count = N.
    let prefix = format!("test-integrity-{run}/snapshots/user_events");
    let mut settings =
        quiver::snapshot::SnapshotSettings::from_env(&cfg).unwrap().with_prefix(&prefix);
    settings.check_every = std::time::Duration::from_secs(3600);
    let storage = quiver::storage::Storage::new(&cfg).await.unwrap();
    let window = quiver::snapshot::Window { from: Some(from), to: Some(to) };
    let report = quiver::snapshot::export(&pg, &storage, &settings, &window).await.unwrap();
    assert_eq!(report.rows, n);
    let (manifest, _) =
        quiver::artifact::fetch_manifest::<quiver::snapshot::SnapshotMeta>(&storage, &prefix, None)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(manifest.meta.row_count, n);
    let state = analytics::Analytics::with_settings(&cfg, settings).await.unwrap();
    let app = TestApp::new(analytics::routes(state.clone()));
    let filter = format!(
        "from={}&to={}",
        url::form_urlencoded::byte_serialize(rfc(day).as_bytes()).collect::<String>(),
        url::form_urlencoded::byte_serialize(rfc(day + DAY_US).as_bytes()).collect::<String>()
    );
    let r = app.get(format!("/analytics/summary?{filter}")).await;
    assert_eq!(r.status, 200, "{r}");
    let duck = r.json();
    assert_eq!(duck["total_events"].as_u64(), Some(n));

    // 4. The same summary from PostgreSQL is identical.
    let r = app.get(format!("/analytics/summary?source=postgres&{filter}")).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json(), duck);

    // 5. Cached, then a new snapshot with one more batch changes the answer.
    let r = app.get(format!("/analytics/summary?{filter}")).await;
    assert_eq!(r.header("x-cache"), Some("HIT"));
    let extra: Vec<Value> = (0..10).map(|i| json!({"user_id": 500, "event_type": "signup", "page_url": "/join", "created_at": rfc(day + DAY_US - 1_000_000 - i)})).collect();
    let extra = serde_json::to_vec(&extra).unwrap();
    let r = post_batch(&events_app, &extra, &format!("integrity-{run}-extra")).await;
    assert_eq!(r.status, 201, "{r}");
    quiver::snapshot::export(
        &pg,
        &storage,
        &quiver::snapshot::SnapshotSettings::from_env(&cfg).unwrap().with_prefix(&prefix),
        &window,
    )
    .await
    .unwrap();
    state.refresh().await.unwrap();
    let r = app.get(format!("/analytics/summary?{filter}")).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.header("x-cache"), Some("MISS"));
    assert_eq!(r.json()["total_events"].as_u64(), Some(n + 10));
    assert_eq!(count(pg).await, (n + 10) as i64);

    // The test's prefix goes away with it.
    quiver::testing::delete_prefix(&storage, &format!("test-integrity-{run}")).await;
}
