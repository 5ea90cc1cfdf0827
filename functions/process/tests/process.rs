//! The `process` function through its HTTP routes, with the real Valkey started by
//! `quiver-local up` (and, for BYPASS, a Valkey URL on a port where nothing listens).

use std::sync::atomic::{AtomicU64, Ordering};

use quiver::http::MAX_BODY_BYTES;
use quiver::process::{MAX_GENERATED, MAX_POINTS};
use quiver::testing::{free_port, service_config, TestApp};
use quiver::Config;
use serde_json::{json, Value};

fn app_with(cfg: &Config) -> TestApp {
    TestApp::new(process::routes(process::Process::new(cfg).unwrap()))
}

/// With the real Valkey, connected before the first request, as on a warm instance (Valkey
/// connects in the background; until then requests are served as BYPASS).
async fn app() -> TestApp {
    let state = process::Process::new(&service_config()).unwrap();
    for _ in 0..100 {
        if state.cache().get(&quiver::cache::Key::new("process-test", "warm", "", "")).await.is_ok()
        {
            return TestApp::new(process::routes(state));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("Valkey at QUIVER_VALKEY_URL never connected");
}

/// The real configuration, but Valkey is a port that refuses connections.
fn app_without_valkey() -> TestApp {
    let mut cfg = service_config();
    cfg.valkey_url = Some(format!("redis://127.0.0.1:{}", free_port()));
    app_with(&cfg)
}

/// A batch id no earlier run used, so that its first POST is a MISS.
fn fresh_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("test-{nanos}-{}", N.fetch_add(1, Ordering::Relaxed))
}

fn point(i: usize) -> Value {
    let category = ["ALPHA", "BRAVO"][i % 2];
    json!({"id": i, "timestamp": "2026-10-01T12:00:00Z", "category": category, "value": (i % 1001) as f64, "tags": ["web", "api"]})
}

fn batch(id: &str, n: usize) -> Value {
    json!({"batch_id": id, "data": (0..n).map(point).collect::<Vec<_>>()})
}

#[tokio::test]
async fn a_batch_is_aggregated_and_the_same_body_twice_is_a_hit_with_an_identical_body() {
    let app = app().await;
    let body = batch(&fresh_id(), 1000);
    let first = app.post_json("/process", &body).await;
    assert_eq!(first.status, 200, "{first}");
    assert_eq!(first.header("x-cache"), Some("MISS"));
    let v = first.json();
    assert_eq!(v["total_records"], 1000);
    assert_eq!(v["min_value"], 0.0);
    assert_eq!(v["max_value"], 999.0);
    assert_eq!(v["mean_value"], 499.5);
    assert_eq!(v["p50_value"], 499.5);
    assert_eq!(
        v["by_category"][0],
        json!({"category": "ALPHA", "count": 500, "mean": 499.0, "min": 0.0, "max": 998.0})
    );
    assert_eq!(v["by_category"][1]["category"], "BRAVO");
    assert_eq!(v["by_tag"], json!([{"tag": "api", "count": 1000}, {"tag": "web", "count": 1000}]));
    for t in ["parse_ms", "process_ms", "total_ms"] {
        assert!(v["timings"][t].as_f64().unwrap() >= 0.0, "timings.{t}");
    }

    let second = app.post_json("/process", &body).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(second.body, first.body, "a HIT returns the identical body, timings included");
    assert_eq!(second.headers["etag"], first.headers["etag"]);
}

#[tokio::test]
async fn valkey_down_means_bypass_not_an_error() {
    let app = app_without_valkey();
    let body = batch(&fresh_id(), 10);
    for _ in 0..2 {
        let a = app.post_json("/process", &body).await;
        assert_eq!(a.status, 200, "{a}");
        assert_eq!(a.header("x-cache"), Some("BYPASS"));
        assert_eq!(a.json()["total_records"], 10);
    }
    let a = app.get("/process?size=100&seed=1").await;
    assert_eq!(a.status, 200, "{a}");
    assert_eq!(a.header("x-cache"), Some("BYPASS"));
}

#[tokio::test]
async fn every_validation_rule_is_a_4xx_naming_the_index_and_the_field() {
    let app = app().await;
    let ok = point(0);
    let with = |field: &str, v: Value| {
        let mut p = ok.clone();
        p[field] = v;
        p
    };
    let without = |field: &str| {
        let mut p = ok.clone();
        p.as_object_mut().unwrap().remove(field);
        p
    };
    let long_tag = "t".repeat(65);
    let cases = [
        (with("category", json!("alpha")), "data[1].category"),
        (with("category", json!("AB-C")), "data[1].category"),
        (with("category", json!("")), "data[1].category"),
        (with("category", json!(7)), "data[1].category"),
        (with("value", json!(1000.5)), "data[1].value"),
        (with("value", json!(-0.01)), "data[1].value"),
        (with("value", json!("12")), "data[1].value"),
        (with("timestamp", json!("2026-10-01 noon")), "data[1].timestamp"),
        (with("timestamp", json!(-62_167_219_201_i64)), "data[1].timestamp"),
        (with("timestamp", json!(true)), "data[1].timestamp"),
        (with("tags", json!((0..33).map(|i| format!("t{i}")).collect::<Vec<_>>())), "data[1].tags"),
        (with("tags", json!(["ok", long_tag])), "data[1].tags[1]"),
        (with("tags", json!("web")), "data[1].tags"),
        (with("id", json!("one")), "data[1].id"),
        (without("value"), "data[1].value"),
        (without("category"), "data[1].category"),
        (json!("not an object"), "data[1]"),
    ];
    for (bad, at) in cases {
        let a =
            app.post_json("/process", &json!({"batch_id": fresh_id(), "data": [ok, bad]})).await;
        assert_eq!(a.status, 400, "{at}: {a}");
        assert_eq!(a.header("content-type"), Some("application/problem+json"));
        let v = a.json();
        assert_eq!(v["param"], at, "{v}");
        assert_eq!(v["errors"][0]["at"], at);
    }
    // Epoch seconds and RFC 3339 with an offset are both timestamps; 32 tags of 64 chars are fine.
    let fine = [
        with("timestamp", json!(1_790_856_000)),
        with("timestamp", json!("2026-10-01T14:00:00.5+02:00")),
        with("tags", json!((0..32).map(|i| format!("{i:0>64}")).collect::<Vec<_>>())),
    ];
    let a = app.post_json("/process", &json!({"batch_id": fresh_id(), "data": fine})).await;
    assert_eq!(a.status, 200, "{a}");

    for (body, at) in [
        (json!({"data": [ok]}), "batch_id"),
        (json!({"batch_id": fresh_id()}), "data"),
        (json!({"batch_id": fresh_id(), "data": []}), "data"),
        (json!({"batch_id": fresh_id(), "data": {"id": 1}}), "data"),
    ] {
        let a = app.post_json("/process", &body).await;
        assert_eq!((a.status, a.json()["param"].as_str()), (400, Some(at)), "{a}");
    }
    let a = app.post("/process", "application/json", "{\"batch_id\": \"x\", \"data\": [").await;
    assert_eq!(a.status, 400);
    assert!(a.json()["detail"].as_str().unwrap().contains("not valid JSON"), "{a}");
    assert_eq!(app.post("/process", "text/csv", "a,b").await.status, 415);
}

#[tokio::test]
async fn too_many_points_or_too_many_bytes_is_413_naming_the_limit() {
    let app = app().await;
    let small = r#"{"id":1,"timestamp":0,"category":"A","value":1}"#;
    let body = format!(
        r#"{{"batch_id":"{}","data":[{}]}}"#,
        fresh_id(),
        vec![small; MAX_POINTS + 1].join(",")
    );
    assert!(body.len() < MAX_BODY_BYTES);
    let a = app.post("/process", "application/json", body).await;
    assert_eq!(a.status, 413, "{a}");
    let v = a.json();
    assert_eq!(v["limit"], MAX_POINTS);
    assert!(v["detail"].as_str().unwrap().contains("points"));

    let a = app.post("/process", "application/json", vec![b' '; MAX_BODY_BYTES + 1]).await;
    assert_eq!(a.status, 413);
    assert_eq!(a.json()["limit"], MAX_BODY_BYTES);
}

#[tokio::test]
async fn query_parameters_are_validated_and_named() {
    let app = app().await;
    let too_big = format!("size={}", MAX_GENERATED + 1);
    for (q, param) in [
        ("size=0", "size"),
        (too_big.as_str(), "size"),
        ("size=ten", "size"),
        ("seed=-1", "seed"),
        ("seed=x", "seed"),
    ] {
        let a = app.get(format!("/process?{q}")).await;
        assert_eq!(a.status, 400, "{q}");
        assert_eq!(a.json()["param"], param, "{q}: {a}");
    }
}

#[tokio::test]
async fn generated_batches_are_deterministic_cached_by_size_and_seed_and_report_both_timings() {
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            as u64;
    let uri = format!("/process?size=5000&seed={seed}");
    let bypass = app_without_valkey();
    let a = bypass.get(&uri).await;
    let b = bypass.get(&uri).await;
    assert_eq!(a.status, 200, "{a}");
    let strip = |mut v: Value| {
        v.as_object_mut().unwrap().remove("timings");
        v
    };
    let (a, b) = (a.json(), b.json());
    assert_eq!(strip(a.clone()), strip(b.clone()), "same size and seed, same statistics");
    assert_eq!(a["total_records"], 5000);
    assert_eq!(a["seed"], seed);
    assert_eq!(a["by_tag"].as_array().unwrap().len(), 10);
    for t in ["generation_ms", "process_ms", "total_ms"] {
        assert!(a["timings"][t].as_f64().unwrap() >= 0.0, "timings.{t}");
    }

    let app = app().await;
    let first = app.get(&uri).await;
    let second = app.get(&uri).await;
    assert_eq!((first.header("x-cache"), second.header("x-cache")), (Some("MISS"), Some("HIT")));
    assert_eq!(first.body, second.body);
    assert_eq!(strip(first.json()), strip(a));
}

#[tokio::test]
async fn posting_the_generated_body_gives_the_statistics_of_the_generated_batch() {
    let app = app_without_valkey();
    let seed = 20_261_001;
    let posted =
        app.post("/process", "application/json", quiver::process::batch_json(3000, seed)).await;
    let generated = app.get(format!("/process?size=3000&seed={seed}")).await;
    assert_eq!(posted.status, 200, "{posted}");
    let (posted, generated) = (posted.json(), generated.json());
    for field in [
        "total_records",
        "mean_value",
        "min_value",
        "max_value",
        "p50_value",
        "p95_value",
        "by_category",
        "by_tag",
    ] {
        assert_eq!(posted[field], generated[field], "{field}");
    }
}

#[tokio::test]
async fn without_a_seed_each_request_is_computed_and_says_which_seed_it_used() {
    let app = app().await;
    let a = app.get("/process?size=2000").await;
    assert_eq!(a.status, 200, "{a}");
    assert_eq!(a.header("x-cache"), None);
    let v = a.json();
    assert!(v["seed"].is_u64());
    assert_eq!(v["size"], 2000);
    let seed = v["seed"].as_u64().unwrap();
    // The reported seed reproduces the batch.
    let again = app_without_valkey().get(format!("/process?size=2000&seed={seed}")).await;
    assert_eq!(again.json()["by_category"], v["by_category"]);
    let default = app.get("/process?").await;
    assert_eq!(default.json()["total_records"], process::DEFAULT_SIZE);
}

#[tokio::test]
async fn the_sample_events_run_through_the_handler() {
    let req =
        lambda_http::request::from_str(include_str!("../../../events/process-get.json")).unwrap();
    assert_eq!(app().await.call(req).await.status, 200);
    let req =
        lambda_http::request::from_str(include_str!("../../../events/process-post.json")).unwrap();
    let r = app().await.call(req).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["batch_id"], "sample-1");
    assert_eq!(v["total_records"], 3);
    assert_eq!(v["by_tag"][0], json!({"tag": "web", "count": 2}));
}
