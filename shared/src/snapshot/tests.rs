use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};

use super::*;
use crate::analytics::{Filters, FunnelRow};
use crate::events::EventType;

#[test]
fn duckdb_is_sized_from_the_lambda_memory() {
    let tmp = Path::new("/tmp");
    let s = DuckSettings::for_memory(Some(1024), tmp);
    assert_eq!((s.threads, s.memory_limit_mb), (1, 614));
    assert_eq!(DuckSettings::for_memory(Some(3538), tmp).threads, 2);
    assert_eq!(DuckSettings::for_memory(Some(10_240), tmp).threads, 6);
    assert_eq!(DuckSettings::for_memory(Some(128), tmp).memory_limit_mb, 76);
    assert!(s.temp_dir.starts_with("/tmp"));
}

#[test]
fn only_part_files_are_opened() {
    assert!(valid_part_name("part-00000.parquet"));
    assert!(valid_part_name("dt=2026-10-01/part-00012.parquet"));
    for bad in [
        "../etc/passwd",
        "dt=2026-10-01/../../x.parquet",
        "part-.parquet",
        "dt=yesterday/part-1.parquet",
        "/abs/part-1.parquet",
        "part-1.csv",
    ] {
        assert!(!valid_part_name(bad), "{bad}");
    }
}

#[test]
fn settings_name_the_bad_variable() {
    let cfg = Config::from_vars(&HashMap::new()).unwrap();
    let vars =
        |k: &str, v: &str| [(k.to_string(), v.to_string())].into_iter().collect::<HashMap<_, _>>();
    assert_eq!(
        SnapshotSettings::from_vars(&cfg, &vars("QUIVER_KEEP_VERSIONS", "0")).unwrap_err().var,
        "QUIVER_KEEP_VERSIONS"
    );
    assert_eq!(
        SnapshotSettings::from_vars(&cfg, &vars("QUIVER_SNAPSHOT_CHECK_S", "x")).unwrap_err().var,
        "QUIVER_SNAPSHOT_CHECK_S"
    );
    let s = SnapshotSettings::from_vars(&cfg, &HashMap::new()).unwrap();
    assert_eq!((s.check_every, s.prefix.as_str()), (Duration::from_secs(30), PREFIX));
    #[cfg(feature = "s3")]
    {
        let r = crate::artifact::Retention { keep: 3, grace: Duration::from_secs(3600) };
        assert_eq!(s.retention, r);
        let grace = vars("QUIVER_RETAIN_GRACE_S", "604801");
        let e = SnapshotSettings::from_vars(&cfg, &grace).unwrap_err();
        assert_eq!(e.var, "QUIVER_RETAIN_GRACE_S");
    }
}

#[test]
fn duckdb_loads_parquet_and_runs_the_queries() {
    let dir = std::env::temp_dir().join(format!("quiver-snapshot-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let duck = Duck::open(&DuckSettings::for_memory(Some(1024), Path::new("/tmp"))).unwrap();
    let part = dir.join("part-00000.parquet");
    duck.with_conn(|c| {
        c.execute_batch(&format!(
            "COPY (SELECT * FROM (VALUES
               (TIMESTAMPTZ '2026-10-01 10:00:00+00', 1, 'page_view', '/b', 100.0),
               (TIMESTAMPTZ '2026-10-01 11:00:00+00', 2, 'click', '/b', NULL),
               (TIMESTAMPTZ '2026-10-01 11:30:00+00', 2, 'page_view', '/a', NULL),
               (TIMESTAMPTZ '2026-10-02 12:00:00+00', 1, 'conversion', '/c', 201.0))
               t(created_at, user_id, event_type, page_url, duration_ms)) TO {} (FORMAT parquet)",
            sql_string(&part)
        ))
    })
    .unwrap();
    assert!(
        duck.load("v0", &["part-00000.parquet"], &dir, Some(5)).is_err(),
        "a row count unlike the manifest's"
    );
    let t = duck.load("v1", &["part-00000.parquet"], &dir, Some(4)).unwrap();
    let s = t.summary(&Filters::default()).unwrap();
    assert_eq!((s.total_events, s.unique_users, s.avg_duration_ms), (4, 2, Some(150.5)));
    assert_eq!(s.first_event_at.as_deref(), Some("2026-10-01T10:00:00.000000Z"));
    assert_eq!(s.last_event_at.as_deref(), Some("2026-10-02T12:00:00.000000Z"));
    assert_eq!(
        (s.events_by_type["click"], s.events_by_type["page_view"], s.events_by_type["purchase"]),
        (1, 2, 0)
    );
    let from = DateTime::parse_from_rfc3339("2026-10-01T10:30:00Z").unwrap().with_timezone(&Utc);
    assert_eq!(
        t.summary(&Filters { from: Some(from), ..Default::default() }).unwrap().total_events,
        3
    );
    let s =
        t.summary(&Filters { event_type: Some(EventType::Click), ..Default::default() }).unwrap();
    assert_eq!((s.total_events, s.unique_users, s.avg_duration_ms), (1, 1, None));
    let s =
        t.summary(&Filters { event_type: Some(EventType::Signup), ..Default::default() }).unwrap();
    assert_eq!(
        (s.total_events, s.unique_users, s.avg_duration_ms, s.first_event_at),
        (0, 0, None, None)
    );
    // Ties on views are broken by URL.
    let funnel = t.funnel(&Filters::default()).unwrap();
    assert_eq!(funnel[0], FunnelRow::new("/a".into(), 1, 0, 0));
    assert_eq!(funnel[1], FunnelRow::new("/b".into(), 1, 1, 0));
    assert_eq!(funnel[2], FunnelRow::new("/c".into(), 0, 0, 1));
    let name = t.name().to_string();
    drop(t);
    // The table goes on the background thread after its last user.
    let gone = (0..500).any(|_| {
        let count = duck.with_conn(|c| {
            c.query_row(&format!("SELECT count(*) FROM {name}"), [], |r| r.get::<_, i64>(0))
        });
        count.is_err() || {
            std::thread::sleep(std::time::Duration::from_millis(10));
            false
        }
    });
    assert!(gone, "the table is dropped after its last user");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A database opened on the background thread works there on one thread, its own (so a switch's
/// load stays at idle priority), and gets its worker threads from the first caller elsewhere.
#[test]
fn a_database_opened_in_the_background_gets_its_threads_from_its_first_request() {
    let settings =
        DuckSettings { threads: 3, ..DuckSettings::for_memory(Some(1024), Path::new("/tmp")) };
    let threads = |duck: &Duck| {
        duck.with_conn(|c| {
            c.query_row("SELECT current_setting('threads')", [], |r| r.get::<_, i64>(0))
        })
        .unwrap()
    };
    let (tx, rx) = std::sync::mpsc::channel();
    crate::background::run(move || {
        let duck = Duck::open(&settings).unwrap();
        let there = threads(&duck);
        tx.send((duck, there)).unwrap();
    });
    let (duck, there) = rx.recv().unwrap();
    assert_eq!(there, 1, "on the background thread");
    assert_eq!(threads(&duck), 3, "from the first request");
}

/// Issue 16, item 7: a manifest's meta is typed, so a snapshot manifest whose row count is missing
/// or renamed is refused when it is read, instead of loading without the row check.
#[cfg(feature = "s3")]
#[test]
fn a_snapshot_manifest_reads_its_meta_by_type() {
    let manifest = |meta: serde_json::Value| {
        let m = serde_json::json!({"version": "v", "created_at": "", "files": [], "meta": meta});
        serde_json::from_value::<crate::artifact::Manifest<SnapshotMeta>>(m)
    };
    let meta = serde_json::json!({
        "table": "user_events", "row_count": 3, "min_created_at": null, "max_created_at": null,
        "partitioned_by": null, "schema": [{"name": "id", "type": "BIGINT"}],
    });
    let m = manifest(meta.clone()).unwrap();
    assert_eq!((m.meta.row_count, m.meta.schema[0].ty.as_str()), (3, "BIGINT"));
    assert!(
        m.previous.is_empty() && m.meta.window == WindowMeta::default(),
        "older manifests still read"
    );
    let mut renamed = meta;
    let rows = renamed.as_object_mut().unwrap().remove("row_count").unwrap();
    renamed["rows"] = rows;
    assert!(manifest(renamed).is_err(), "a renamed field is an error, not a missing check");
}
