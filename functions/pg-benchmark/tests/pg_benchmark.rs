//! `pg-benchmark` against the real PostgreSQL started by `quiver-local up`. Each test writes its
//! own events for a user id no one else uses, so nothing depends on the seed.

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use pg_benchmark::{routes, PgBenchmark};
use quiver::events::{EventType, NewEvent};
use quiver::pg::Pg;
use quiver::pg_bench::{Approach, Session};
use quiver::testing::{free_port, service_config, TestApp};
use serde_json::Value;

fn pg() -> Pg {
    Pg::new(&service_config()).unwrap()
}

fn app() -> TestApp {
    TestApp::new(routes(PgBenchmark::new(&service_config()).unwrap()))
}

/// A user id no other test (or earlier run) uses.
fn fresh_user() -> i32 {
    static NEXT: AtomicI32 = AtomicI32::new(0);
    let base =
        (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            % 900_000_000) as i32;
    1_100_000_000 + base + NEXT.fetch_add(1000, Ordering::Relaxed)
}

/// Metadata that tempts the approaches to disagree: unicode, escapes, nesting, key order, and
/// numbers that PostgreSQL's numeric and serde_json's f64/i64 render differently.
const TRICKY: &[&str] = &[
    r#"{"big": 1e300, "neg_zero": -0.0, "scale": 1.10, "tiny": 5e-324, "small": 1e-7, "huge_int": 123456789012345678901234567890, "u64": 18446744073709551615, "i64": -9223372036854775808}"#,
    r#"{"text": "héllo wörld ✓ 日本語 😀 \u0645\u0631\u062d\u0628\u0627", "esc": "quote \" backslash \\ tab \t nl \n ctl \u0001 </script>", "é": 1}"#,
    r#"{"nested": {"b": [1, {"z": null, "a": [true, false, []]}, {}], "a": {"deep": {"deeper": {"deepest": 0.1}}}}, "bb": 2, "a": 1, "aaa": 3}"#,
    r#"{}"#,
    r#"{"duration_ms": 1200, "browser": "firefox", "list": [1.5, -2, 3e10, 0]}"#,
];

/// Writes `n` events for `user`, cycling through [`TRICKY`]; some share a timestamp so that the
/// `id` tie-break matters, and one is from before PostgreSQL's 2000-01-01 epoch.
async fn insert(pg: &Pg, user: i32, n: usize) {
    let batch: Vec<NewEvent> = (0..n)
        .map(|i| NewEvent {
            user_id: user,
            event_type: EventType::ALL[i % 5],
            page_url: format!("/p/{i}?q=ü&x=\"y\""),
            metadata: TRICKY[i % TRICKY.len()].to_string(),
            created_at_us: if i == 0 {
                946_684_799_999_999
            } else {
                1_764_000_000_000_000 + (i as i64 / 2) * 1_234_567
            },
        })
        .collect();
    quiver::ingest::insert(pg, &batch, None).await.unwrap();
}

#[tokio::test]
async fn every_approach_writes_byte_identical_json_equal_to_the_events_api() {
    let pg = pg();
    let user = fresh_user();
    insert(&pg, user, 23).await;
    for limit in [1i64, 7, 23, 100] {
        let s = Session::open(&pg, user, limit).await.unwrap();
        let typed = s.run(Approach::Typed).await.unwrap();
        // The reference body is what `GET /events/{user_id}` puts in its `events` array.
        let (events, _) = quiver::ingest::list(&pg, user, limit, None).await.unwrap();
        assert_eq!(
            typed.body,
            serde_json::to_vec(&events).unwrap(),
            "typed = the events API (limit {limit})"
        );
        assert_eq!(typed.count, (limit as usize).min(23));
        for a in Approach::ALL {
            let o = s.run(a).await.unwrap();
            assert_eq!(o.count, typed.count, "{} count", a.name());
            assert!(
                o.body == typed.body,
                "{} differs from typed at limit {limit}:\n{}\n{}",
                a.name(),
                String::from_utf8_lossy(&o.body),
                String::from_utf8_lossy(&typed.body)
            );
        }
    }
    let s = Session::open(&pg, user, 100).await.unwrap();
    let body = String::from_utf8(s.run(Approach::CopyBinary).await.unwrap().body).unwrap();
    // The canonical rendering: serde_json's numbers, unicode kept, only what JSON requires escaped.
    for needle in [
        r#""big":1e+300"#,
        r#""neg_zero":0.0"#,
        r#""scale":1.1"#,
        r#""huge_int":1.2345678901234568e+29"#,
        r#""u64":18446744073709551615"#,
        r#""i64":-9223372036854775808"#,
        "日本語 😀",
        r#"quote \" backslash \\ tab \t nl \n ctl \u0001 </script>"#,
        r#""created_at":"1999-12-31T23:59:59.999999Z""#,
        r#""page_url":"/p/0?q=ü&x=\"y\"""#,
    ] {
        assert!(body.contains(needle), "expected {needle} in {body}");
    }
    let v: Vec<Value> = serde_json::from_str(&body).unwrap();
    let keys: Vec<&str> = v[0].as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(v.len(), 23);
    assert!(body.starts_with(r#"[{"id":"#), "fields keep the order of Event: {body}");
    assert!(keys.contains(&"metadata") && keys.contains(&"created_at"));
}

#[tokio::test]
async fn a_user_without_events_gives_empty_arrays() {
    let pg = pg();
    let s = Session::open(&pg, fresh_user(), 10).await.unwrap();
    for a in Approach::ALL {
        let o = s.run(a).await.unwrap();
        assert_eq!((o.count, o.body.as_slice()), (0, &b"[]"[..]), "{}", a.name());
    }
}

fn spread_ok(v: &Value, what: &str) {
    let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{what}.{k} missing in {v}"));
    assert!(
        f("min") <= f("p50")
            && f("p50") <= f("max")
            && f("min") <= f("avg")
            && f("avg") <= f("max"),
        "{what}: {v}"
    );
    assert!(f("min") >= 0.0);
}

#[tokio::test]
async fn benchmark_reports_every_approach_after_a_warm_up() {
    let pg = pg();
    let user = fresh_user();
    insert(&pg, user, 40).await;
    let r = app().get(format!("/samples/pg/benchmark?user_id={user}&limit=30&runs=3")).await;
    assert_eq!(r.status, 200, "{r}");
    let v = r.json();
    assert_eq!(v["dataset_size"], 30);
    assert_eq!(v["runs"], 3);
    assert_eq!(v["identical_json"], true, "{v}");
    let names: Vec<&str> =
        v["approaches"].as_object().unwrap().keys().map(|k| k.as_str()).collect();
    let mut expected = vec!["dynamic", "typed", "polars", "copy_binary"];
    let mut sorted = names.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected);
    for name in &names {
        let a = &v["approaches"][name];
        for m in ["query_ms", "decode_ms", "total_ms"] {
            spread_ok(&a[m], &format!("{name}.{m}"));
        }
        assert_eq!(a["samples"], 3, "the warm-up round is not counted: {a}");
        assert_eq!(a["count"], 30);
        assert!(a["bytes"].as_u64().unwrap() > 30 * 100);
    }
    assert!(names.contains(&v["comparison"]["fastest"].as_str().unwrap()));
    assert_eq!(v["comparison"]["speedup_vs_dynamic"]["dynamic"], 1.0);
    assert_eq!(v["comparison"]["speedup_vs_dynamic"].as_object().unwrap().len(), 4);
    let note = v["note"].as_str().unwrap();
    assert!(note.contains("warm-up") && note.contains("rotating"), "{note}");
}

#[tokio::test]
async fn benchmark_all_has_the_reference_shape() {
    let pg = pg();
    let user = fresh_user();
    insert(&pg, user, 12).await;
    let r = app().get(format!("/samples/pg/benchmark-all?user_id={user}&limit=100")).await;
    assert_eq!(r.status, 200, "{r}");
    let v = r.json();
    assert_eq!(v["dataset_size"], 12);
    assert_eq!(v["identical_json"], true);
    for name in ["dynamic", "typed", "polars", "copy_binary"] {
        let a = &v["approaches"][name];
        let f = |k: &str| a[k].as_f64().unwrap_or_else(|| panic!("{name}.{k} missing in {a}"));
        assert!(f("query_time_ms") > 0.0 && f("parse_time_ms") > 0.0, "{a}");
        assert!(
            // Each is rounded to the µs on its own: the sum may be off by two half-µs.
            (f("total_time_ms") - f("query_time_ms") - f("parse_time_ms")).abs() < 0.0015,
            "{a}"
        );
        assert_eq!(a["count"], 12);
    }
    assert!(v["comparison"]["fastest"].is_string());
    assert!(v["note"].as_str().unwrap().contains("warm-up"));
}

#[tokio::test]
async fn out_of_range_parameters_are_400_naming_them() {
    let app = app();
    let cases = [
        ("benchmark?limit=0", "limit"),
        ("benchmark?limit=10001", "limit"),
        ("benchmark?limit=ten", "limit"),
        ("benchmark?runs=0", "runs"),
        ("benchmark?runs=101", "runs"),
        ("benchmark?user_id=0", "user_id"),
        ("benchmark?user_id=2147483648", "user_id"),
        ("benchmark?limit=5&limit=6", "limit"),
        ("benchmark-all?limit=0", "limit"),
        ("benchmark-all?limit=10001", "limit"),
        ("benchmark-all?user_id=-1", "user_id"),
    ];
    for (q, param) in cases {
        let r = app.get(format!("/samples/pg/{q}")).await;
        assert_eq!(r.status, 400, "{q}: {r}");
        assert_eq!(r.json()["param"], param, "{q}: {r}");
    }
    let r = app.get("/samples/pg/benchmark?unrelated=1").await;
    assert_eq!((r.status, &r.json()["param"]), (400, &serde_json::json!("unrelated")), "{r}");
    let edge = format!("/samples/pg/benchmark?user_id={}&limit=10000&runs=100", fresh_user());
    let r = app.get(edge).await;
    assert_eq!(r.status, 200, "the limits themselves are accepted: {r}");
}

#[tokio::test]
async fn a_database_that_is_down_is_503_naming_it() {
    let url = format!("postgres://quiver:quiver@127.0.0.1:{}/quiver", free_port());
    let pg = Pg::connect_lazy(&url, 1, Duration::from_millis(500)).unwrap();
    let app = TestApp::new(routes(PgBenchmark::with_pg(pg)));
    for route in ["benchmark", "benchmark-all"] {
        let started = Instant::now();
        let r = app.get(format!("/samples/pg/{route}?limit=10")).await;
        assert_eq!(r.status, 503, "{r}");
        assert_eq!(r.json()["dependency"], "postgres");
        assert!(started.elapsed() < Duration::from_secs(3), "answered within the timeout");
    }
}

#[tokio::test]
async fn the_sample_event_runs_through_the_handler() {
    let req =
        lambda_http::request::from_str(include_str!("../../../events/pg-benchmark.json")).unwrap();
    let r = app().call(req).await;
    assert_eq!(r.status, 200, "{r}");
    let v = r.json();
    assert_eq!(v["runs"], 5);
    assert_eq!(v["limit"], 100);
}
