//! The migration step (issue 29, item 2) against the real PostgreSQL of `quiver-local up`, each
//! test in a scratch database of its own. A function never migrates: behind its schema it answers
//! 503 `schema`. Migration 3, which first rewrote `user_events` under an exclusive lock, runs
//! online: at 1M rows `GET /events/{user_id}` and `POST /events` keep answering within a 2 s
//! `QUIVER_PG_TIMEOUT_MS` while it runs, and it completes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver::log_lines::LogLines;
use quiver::migrate::{self, Limits};
use quiver::pg::Pg;
use quiver::testing::{service_config, unique_name, TestApp};
use quiver::Config;
use serde_json::json;

/// A database of its own on the test server, dropped by [`Scratch::drop`].
struct Scratch {
    cfg: Config,
    name: String,
}

impl Scratch {
    /// An empty database; its configuration has the API timeout `timeout_ms` and a pool of 4.
    async fn new(what: &str, timeout_ms: u64) -> Self {
        let base = service_config();
        let name = unique_name(what).replace('-', "_");
        let admin = Pg::new(&base).unwrap();
        admin
            .connection()
            .await
            .unwrap()
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let url = base.database_url.clone().unwrap();
        let (head, tail) = url.rsplit_once('/').unwrap();
        let query = tail.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
        let cfg = Config {
            database_url: Some(format!("{head}/{name}{query}")),
            pg_timeout: Duration::from_millis(timeout_ms),
            pg_pool_size: 4,
            ..base
        };
        Scratch { cfg, name }
    }

    fn app(&self) -> TestApp {
        TestApp::new(events::routes(events::Events::new(&self.cfg).unwrap()))
    }

    async fn drop(self) {
        let admin = Pg::new(&service_config()).unwrap();
        let sql = format!("DROP DATABASE {} WITH (FORCE)", self.name);
        admin.connection().await.unwrap().batch_execute(&sql).await.unwrap();
    }
}

/// `duration_ms` exactly as the first form of migration 3 computed it (a generated column): what
/// the column must hold for every row, however it got there.
const DURATION_MS_AS_GENERATED: &str = "CASE WHEN jsonb_typeof(metadata->'duration_ms') = 'number' THEN \
     CASE WHEN (metadata->'duration_ms')::numeric BETWEEN 0 AND 1e12 THEN (metadata->'duration_ms')::float8 END END";

/// The user the writes during the migration go to; the loaded rows use 1 to 50,000.
const WRITER: i32 = 2_000_000;

fn event(user: i32, duration_ms: i64) -> serde_json::Value {
    json!({"user_id": user, "event_type": "click", "page_url": "/during", "metadata": {"duration_ms": duration_ms}})
}

#[tokio::test]
async fn a_function_behind_its_schema_answers_503_schema_logs_what_to_run_and_migrates_nothing() {
    let db = Scratch::new("behind", 2000).await;
    let app = db.app();
    let lines = LogLines::default();
    let logged = tracing::subscriber::set_default(lines.subscriber());

    for r in [app.get("/events/42?limit=10").await, app.post_json("/events", &event(42, 5)).await] {
        assert_eq!(r.status, 503, "{r}");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        let body = r.json();
        assert_eq!(
            (&body["dependency"], &body["reason"]),
            (&json!("postgres"), &json!("schema")),
            "{r}"
        );
    }
    let log = lines.text();
    assert!(
        log.contains("schema is behind") && log.contains("quiver-local migrate"),
        "the log says what to run:\n{log}"
    );
    drop(logged);

    let pg = Pg::new(&db.cfg).unwrap();
    let c = pg.connection().await.unwrap();
    let created: i64 = c
        .query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(created, 0, "no request created a table");

    // Once the step has run, the same instance answers, without a restart.
    let report = migrate::run(&pg).await.unwrap();
    assert_eq!((report.from, report.to, report.done), (0, migrate::LATEST, true));
    tokio::time::sleep(migrate::check::RECHECK).await;
    let r = app.post_json("/events", &event(42, 5)).await;
    assert_eq!(r.status, 201, "{r}");
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_3_runs_online_at_a_million_rows_while_reads_and_writes_keep_answering() {
    let db = Scratch::new("online", 2000).await;
    let pg = Pg::new(&db.cfg).unwrap();
    let at_2 = migrate::run_with(&pg, &Limits { to: 2, ..Limits::default() }).await.unwrap();
    assert_eq!(at_2.to, 2);
    // 1M rows: six in ten with a duration, the rest absent, a string, past 1e12, or negative.
    let loader = pg.session().await.unwrap();
    let started = Instant::now();
    loader
        .batch_execute(
            "SET statement_timeout = 0;
             INSERT INTO user_events (user_id, event_type, page_url, metadata, created_at)
             SELECT 1 + i % 50000, (ARRAY['page_view','click','conversion','signup','purchase'])[1 + i % 5], '/p/' || i % 100,
                    CASE i % 10 WHEN 0 THEN '{}'::jsonb WHEN 1 THEN '{\"duration_ms\": \"slow\"}'
                                WHEN 2 THEN '{\"duration_ms\": 2e12}' WHEN 3 THEN '{\"duration_ms\": -5}'
                                ELSE jsonb_build_object('duration_ms', i % 60000, 'browser', 'firefox') END,
                    timestamptz '2026-01-01' + i * interval '1 second'
             FROM generate_series(1, 1000000) i;
             ANALYZE user_events;",
        )
        .await
        .unwrap();
    eprintln!("loaded 1M rows in {:?}", started.elapsed());
    let Err(e) = pg.client_at(migrate::DURATION_MS).await else {
        panic!("readers of duration_ms wait for version 4");
    };
    assert_eq!(e.outage(), Some("schema"), "{e}");

    // Traffic, as long as the migration runs: reads of a user's page, and writes.
    let app = db.app();
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = |write: bool| {
        let (app, stop) = (app.clone(), stop.clone());
        tokio::spawn(async move {
            let mut answers = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let t = Instant::now();
                let r = if write {
                    app.post_json("/events", &event(WRITER, i)).await
                } else {
                    app.get(format!("/events/{}?limit=10", 1 + i % 50000)).await
                };
                answers.push((r.status, t.elapsed(), r.to_string()));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answers
        })
    };
    let (reads, writes) = (traffic(false), traffic(true));

    // A long reader on the table, as an export is: the DDL cannot take its lock until it ends,
    // and must not make the requests queue behind it meanwhile.
    let export = pg.session().await.unwrap();
    export.batch_execute("BEGIN; SELECT count(*) FROM user_events").await.unwrap();
    let export = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        export.batch_execute("COMMIT").await.unwrap();
    });

    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = LogLines::default();
    let logged = tracing::subscriber::set_default(lines.subscriber());
    let started = Instant::now();
    let report = migrate::run(&pg).await.expect("the migration completes");
    let took = started.elapsed();
    drop(logged);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    export.await.unwrap();
    let (reads, writes) = (reads.await.unwrap(), writes.await.unwrap());
    eprintln!("migration {report:?} in {took:?}; {} reads, {} writes", reads.len(), writes.len());

    assert_eq!((report.applied.as_slice(), report.to, report.done), (&[3, 4][..], 4, true));
    // Six loaded rows in ten have a duration, and so do the writes that came before the trigger.
    let filled = report.backfilled as usize;
    assert!((600_000..=600_000 + writes.len()).contains(&filled), "backfilled {filled}");
    let log = lines.text();
    assert!(
        log.contains("a lock was busy"),
        "migration 3 gave way to the long reader, and tried again:\n{log}"
    );
    for (what, answers, ok) in
        [("GET /events/{user_id}", &reads, 200), ("POST /events", &writes, 201)]
    {
        assert!(
            answers.len() >= 10,
            "{what}: only {} requests ran during the migration",
            answers.len()
        );
        let failed: Vec<_> = answers.iter().filter(|(status, ..)| *status != ok).collect();
        assert!(
            failed.is_empty(),
            "{what}: {} of {} failed during the migration, e.g. {}",
            failed.len(),
            answers.len(),
            failed[0].2
        );
        let slowest = answers.iter().map(|(_, t, _)| *t).max().unwrap();
        assert!(slowest < Duration::from_secs(2), "{what}: the slowest took {slowest:?}");
    }

    // Every row, loaded before or written during the migration, holds what the generated column did.
    let c = pg.client_at(migrate::DURATION_MS).await.expect("readers of duration_ms go on");
    let differ = format!("SELECT count(*) FROM user_events WHERE duration_ms IS DISTINCT FROM ({DURATION_MS_AS_GENERATED})");
    assert_eq!(c.query_one(&differ, &[]).await.unwrap().get::<_, i64>(0), 0);
    let written: i64 = c
        .query_one(
            "SELECT count(*) FROM user_events WHERE user_id = $1 AND duration_ms IS NOT NULL",
            &[&WRITER],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(written, writes.len() as i64, "every write during the migration got its duration");
    db.drop().await;
}

#[tokio::test]
async fn a_database_with_the_generated_column_keeps_it_and_only_records_version_4() {
    let db = Scratch::new("generated", 5000).await;
    let pg = Pg::new(&db.cfg).unwrap();
    migrate::run_with(&pg, &Limits { to: 2, ..Limits::default() }).await.unwrap();
    // Migration 3 as it was first applied, and recorded.
    let old = pg.session().await.unwrap();
    old.batch_execute(&format!(
        "ALTER TABLE user_events ADD COLUMN duration_ms double precision GENERATED ALWAYS AS ({DURATION_MS_AS_GENERATED}) STORED;
         INSERT INTO quiver_migrations (version) VALUES (3);
         INSERT INTO user_events (user_id, event_type, page_url, metadata) VALUES (3, 'click', '/old', '{{\"duration_ms\": 40}}');"
    ))
    .await
    .unwrap();

    let report = migrate::run(&pg).await.unwrap();
    assert_eq!((report.applied.as_slice(), report.backfilled, report.done), (&[4][..], 0, true));
    let r = db.app().post_json("/events", &event(3, 1200)).await;
    assert_eq!(r.status, 201, "{r}");
    let c = pg.client_at(migrate::DURATION_MS).await.unwrap();
    let kind: String = c
        .query_one("SELECT attgenerated::text FROM pg_attribute WHERE attrelid = 'user_events'::regclass AND attname = 'duration_ms'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kind, "s", "still the generated column");
    let values: Vec<f64> = c
        .query("SELECT duration_ms FROM user_events WHERE user_id = 3 ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(values, [40.0, 1200.0]);
    db.drop().await;
}
