//! The `process` function through its HTTP routes, with the real Valkey started by
//! `quiver-local up` (and, for BYPASS, a Valkey URL on a port where nothing listens).

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::Router;
use http_body_util::BodyExt;
use quiver::http::MAX_BODY_BYTES;
use quiver::process::{MAX_GENERATED, MAX_POINTS};
use quiver::testing::{free_port, service_config};
use quiver::Config;
use serde_json::{json, Value};
use tower::ServiceExt;

fn app_with(cfg: &Config) -> Router {
    quiver::http::app(process::routes(process::Process::new(cfg).unwrap()))
}

/// With the real Valkey, connected before the first request, as on a warm instance (Valkey
/// connects in the background; until then requests are served as BYPASS).
async fn app() -> Router {
    let state = process::Process::new(&service_config()).unwrap();
    for _ in 0..100 {
        if state.cache().get(&quiver::cache::Key::new("process-test", "warm", "", "")).await.is_ok()
        {
            return quiver::http::app(process::routes(state));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("Valkey at QUIVER_VALKEY_URL never connected");
}

/// The real configuration, but Valkey is a port that refuses connections.
fn app_without_valkey() -> Router {
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

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    raw: Vec<u8>,
    json: Value,
}

async fn send(app: &Router, req: http::Request<Body>) -> Answer {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let raw = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    let json = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Answer { status, headers, raw, json }
}

fn post(body: impl Into<Body>) -> http::Request<Body> {
    http::Request::post("/process")
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap()
}

fn get(query: &str) -> http::Request<Body> {
    http::Request::get(format!("/process?{query}")).body(Body::empty()).unwrap()
}

fn x_cache(a: &Answer) -> &str {
    a.headers.get("x-cache").map(|v| v.to_str().unwrap()).unwrap_or("")
}

#[tokio::test]
async fn a_batch_is_aggregated_and_the_same_body_twice_is_a_hit_with_an_identical_body() {
    let app = app().await;
    let body = batch(&fresh_id(), 1000).to_string();
    let first = send(&app, post(body.clone())).await;
    assert_eq!(first.status, 200, "{}", first.json);
    assert_eq!(x_cache(&first), "MISS");
    let v = &first.json;
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

    let second = send(&app, post(body)).await;
    assert_eq!(second.status, 200);
    assert_eq!(x_cache(&second), "HIT");
    assert_eq!(second.raw, first.raw, "a HIT returns the identical body, timings included");
    assert_eq!(second.headers["etag"], first.headers["etag"]);
}

#[tokio::test]
async fn valkey_down_means_bypass_not_an_error() {
    let app = app_without_valkey();
    let body = batch(&fresh_id(), 10).to_string();
    for _ in 0..2 {
        let a = send(&app, post(body.clone())).await;
        assert_eq!(a.status, 200, "{}", a.json);
        assert_eq!(x_cache(&a), "BYPASS");
        assert_eq!(a.json["total_records"], 10);
    }
    let a = send(&app, get("size=100&seed=1")).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(x_cache(&a), "BYPASS");
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
        (with("timestamp", json!(-1)), "data[1].timestamp"),
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
        let body = json!({"batch_id": fresh_id(), "data": [ok, bad]}).to_string();
        let a = send(&app, post(body)).await;
        assert_eq!(a.status, 400, "{at}: {}", a.json);
        assert_eq!(a.headers["content-type"], "application/problem+json");
        assert_eq!(a.json["param"], at, "{}", a.json);
        assert_eq!(a.json["errors"][0]["at"], at);
    }
    // Epoch seconds and RFC 3339 with an offset are both timestamps; 32 tags of 64 chars are fine.
    let fine = [
        with("timestamp", json!(1_790_856_000)),
        with("timestamp", json!("2026-10-01T14:00:00.5+02:00")),
        with("tags", json!((0..32).map(|i| format!("{i:0>64}")).collect::<Vec<_>>())),
    ];
    let a = send(&app, post(json!({"batch_id": fresh_id(), "data": fine}).to_string())).await;
    assert_eq!(a.status, 200, "{}", a.json);

    for (body, at) in [
        (json!({"data": [ok]}), "batch_id"),
        (json!({"batch_id": fresh_id()}), "data"),
        (json!({"batch_id": fresh_id(), "data": []}), "data"),
        (json!({"batch_id": fresh_id(), "data": {"id": 1}}), "data"),
    ] {
        let a = send(&app, post(body.to_string())).await;
        assert_eq!((a.status, a.json["param"].as_str()), (400, Some(at)), "{}", a.json);
    }
    let a = send(&app, post("{\"batch_id\": \"x\", \"data\": [")).await;
    assert_eq!(a.status, 400);
    assert!(a.json["detail"].as_str().unwrap().contains("not valid JSON"), "{}", a.json);
    let req = http::Request::post("/process")
        .header("content-type", "text/csv")
        .body(Body::from("a,b"))
        .unwrap();
    assert_eq!(send(&app, req).await.status, 415);
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
    let a = send(&app, post(body)).await;
    assert_eq!(a.status, 413, "{}", a.json);
    assert_eq!(a.json["limit"], MAX_POINTS);
    assert!(a.json["detail"].as_str().unwrap().contains("points"));

    let a = send(&app, post(vec![b' '; MAX_BODY_BYTES + 1])).await;
    assert_eq!(a.status, 413);
    assert_eq!(a.json["limit"], MAX_BODY_BYTES);
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
        let a = send(&app, get(q)).await;
        assert_eq!(a.status, 400, "{q}");
        assert_eq!(a.json["param"], param, "{q}: {}", a.json);
    }
}

#[tokio::test]
async fn generated_batches_are_deterministic_cached_by_size_and_seed_and_report_both_timings() {
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            as u64;
    let bypass = app_without_valkey();
    let a = send(&bypass, get(&format!("size=5000&seed={seed}"))).await;
    let b = send(&bypass, get(&format!("size=5000&seed={seed}"))).await;
    assert_eq!(a.status, 200, "{}", a.json);
    let strip = |mut v: Value| {
        v.as_object_mut().unwrap().remove("timings");
        v
    };
    assert_eq!(strip(a.json.clone()), strip(b.json.clone()), "same size and seed, same statistics");
    assert_eq!(a.json["total_records"], 5000);
    assert_eq!(a.json["seed"], seed);
    assert_eq!(a.json["by_tag"].as_array().unwrap().len(), 10);
    for t in ["generation_ms", "process_ms", "total_ms"] {
        assert!(a.json["timings"][t].as_f64().unwrap() >= 0.0, "timings.{t}");
    }

    let app = app().await;
    let first = send(&app, get(&format!("size=5000&seed={seed}"))).await;
    let second = send(&app, get(&format!("size=5000&seed={seed}"))).await;
    assert_eq!((x_cache(&first), x_cache(&second)), ("MISS", "HIT"));
    assert_eq!(first.raw, second.raw);
    assert_eq!(strip(first.json), strip(a.json));
}

#[tokio::test]
async fn posting_the_generated_body_gives_the_statistics_of_the_generated_batch() {
    let app = app_without_valkey();
    let seed = 20_261_001;
    let posted = send(&app, post(quiver::process::batch_json(3000, seed))).await;
    let generated = send(&app, get(&format!("size=3000&seed={seed}"))).await;
    assert_eq!(posted.status, 200, "{}", posted.json);
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
        assert_eq!(posted.json[field], generated.json[field], "{field}");
    }
}

#[tokio::test]
async fn without_a_seed_each_request_is_computed_and_says_which_seed_it_used() {
    let app = app().await;
    let a = send(&app, get("size=2000")).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(x_cache(&a), "");
    assert!(a.json["seed"].is_u64());
    assert_eq!(a.json["size"], 2000);
    let seed = a.json["seed"].as_u64().unwrap();
    // The reported seed reproduces the batch.
    let again = send(&app_without_valkey(), get(&format!("size=2000&seed={seed}"))).await;
    assert_eq!(again.json["by_category"], a.json["by_category"]);
    let default = send(&app, get("")).await;
    assert_eq!(default.json["total_records"], process::DEFAULT_SIZE);
}

#[tokio::test]
async fn the_sample_events_run_through_the_handler() {
    let req =
        lambda_http::request::from_str(include_str!("../../../events/process-get.json")).unwrap();
    let res = app().await.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let req =
        lambda_http::request::from_str(include_str!("../../../events/process-post.json")).unwrap();
    let res = app().await.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let v: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["batch_id"], "sample-1");
    assert_eq!(v["total_records"], 3);
    assert_eq!(v["by_tag"][0], json!({"tag": "web", "count": 2}));
}
