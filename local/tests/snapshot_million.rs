//! A full-size export on a private PostgreSQL: 1,000,000 seeded events go to Parquet in S3, and the
//! manifest's row count, PostgreSQL's count and DuckDB's `count(*)` over the loaded snapshot agree;
//! so do the PostgreSQL and DuckDB summaries of all of it.

mod common;

use std::time::{Duration, Instant};

use common::PrivateStack;
use quiver::pg::Pg;
use quiver::snapshot::{SnapshotSettings, Snapshots, Window};
use quiver::storage::Storage;
use quiver::testing::TestApp;

const EVENTS: i64 = 1_000_000;

#[tokio::test(flavor = "multi_thread")]
async fn a_million_row_export_agrees_with_postgres_and_duckdb() {
    let stack = PrivateStack::new("snapshot-1m");
    stack.ok(&["up", "--only", "postgres"]);
    stack.ok(&["seed", "--events", &EVENTS.to_string()]);

    let mut cfg = quiver::testing::service_config();
    cfg.database_url = Some(stack.database_url());
    cfg.pg_timeout = Duration::from_secs(30);
    let prefix = format!("test-million-{}/snapshots/user_events", std::process::id());
    let settings = SnapshotSettings::from_env(&cfg).unwrap().with_prefix(&prefix);
    let pg = Pg::new(&cfg).unwrap();
    let storage = Storage::new(&cfg).await.unwrap();

    let started = Instant::now();
    let report =
        quiver::snapshot::export(&pg, &storage, &settings, &Window::default()).await.unwrap();
    eprintln!(
        "exported {} rows into {} files ({} bytes) in {:?}",
        report.rows,
        report.files,
        report.bytes,
        started.elapsed()
    );
    let (manifest, _) =
        quiver::artifact::fetch_manifest::<quiver::snapshot::SnapshotMeta>(&storage, &prefix, None)
            .await
            .unwrap()
            .unwrap();
    let pg_count = quiver::ingest::count(&pg).await.unwrap();
    let snapshots = Snapshots::new(storage.clone(), &settings);
    let duck_count = snapshots.current().await.unwrap().value.rows;
    assert_eq!(manifest.meta.row_count as i64, EVENTS);
    assert_eq!(pg_count, EVENTS);
    assert_eq!(duck_count, EVENTS);
    assert!(
        report.partitioned_by_day && report.files >= 30,
        "one or more parts per day: {}",
        report.files
    );

    let app = TestApp::new(analytics::routes(
        analytics::Analytics::with_settings(&cfg, settings).await.unwrap(),
    ));
    let r = app.get("/analytics/summary?cache=off").await;
    assert_eq!(r.status, 200);
    let duck = r.json();
    assert_eq!(duck["total_events"], EVENTS);
    let r = app.get("/analytics/summary?source=postgres").await;
    assert_eq!(r.status, 200);
    assert_eq!(duck, r.json(), "identical over all of it");

    quiver::testing::delete_prefix(&storage, &prefix).await;
}
