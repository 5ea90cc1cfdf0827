//! The `events` function against the real PostgreSQL started by `quiver-local up`. Each test works
//! on its own user ids, so the tests can run in parallel on one table.

use std::sync::atomic::{AtomicI32, Ordering};

use axum::Router;
use http_body_util::BodyExt;
use quiver::pg::Pg;
use quiver::testing::service_config;
use serde_json::{json, Value};
use tower::ServiceExt;

fn app() -> Router {
    quiver::http::app(events::routes(events::Events::new(&service_config()).unwrap()))
}

/// A client on the test database, with the schema applied: a fresh database has no tables until
/// something migrates, and these tests may run before any handler has.
async fn pg() -> Pg {
    let pg = Pg::new(&service_config()).unwrap();
    quiver::migrate::run(&pg).await.unwrap();
    pg
}

/// A user id no other test (or earlier run) uses.
fn fresh_user() -> i32 {
    static NEXT: AtomicI32 = AtomicI32::new(0);
    let base =
        (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            % 900_000_000) as i32;
    1_000_000_000 + base + NEXT.fetch_add(1000, Ordering::Relaxed)
}

async fn count_user(user: i32) -> i64 {
    let pg = pg().await;
    let c = pg.client().await.unwrap();
    c.query_one("SELECT count(*) FROM user_events WHERE user_id = $1", &[&user])
        .await
        .unwrap()
        .get(0)
}

async fn send(app: &Router, req: http::Request<axum::body::Body>) -> (u16, http::HeaderMap, Value) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let v = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap() };
    (status, headers, v)
}

fn post(
    path: &str,
    ct: &str,
    body: impl Into<axum::body::Body>,
) -> http::Request<axum::body::Body> {
    http::Request::post(path).header("content-type", ct).body(body.into()).unwrap()
}

fn event(user: i32) -> Value {
    json!({"user_id": user, "event_type": "page_view", "page_url": "/pricing", "metadata": {"duration_ms": 1200}})
}

#[tokio::test]
async fn one_event_an_array_and_ndjson_are_written() {
    let app = app();
    let u = fresh_user();
    let (s, _, v) = send(&app, post("/events", "application/json", event(u).to_string())).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["inserted"], 1);
    assert_eq!(v["first_id"], v["last_id"]);
    let arr = json!([event(u), event(u), event(u)]);
    let (s, _, v) = send(&app, post("/events", "application/json", arr.to_string())).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["inserted"], 3);
    assert_eq!(v["last_id"].as_i64().unwrap() - v["first_id"].as_i64().unwrap(), 2);
    let nd = format!("{}\n{}\n", event(u), event(u));
    let (s, _, v) = send(&app, post("/events", "application/x-ndjson", nd)).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(count_user(u).await, 6);
}

#[tokio::test]
async fn every_validation_rule_is_a_4xx_naming_the_problem_and_writes_nothing() {
    let app = app();
    let u = fresh_user();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("application/json", "{not json".into(), 400, "not valid JSON"),
        ("application/json", json!([event(u), {"user_id": "one", "event_type": "click", "page_url": "/"}]).to_string(), 400, "[1].user_id"),
        ("application/json", json!([event(u), {"user_id": u, "page_url": "/"}]).to_string(), 400, "[1].event_type"),
        ("application/json", json!([event(u), {"user_id": u, "event_type": "hover", "page_url": "/"}]).to_string(), 400, "must be one of"),
        ("application/json", json!([event(u), {"user_id": u, "event_type": "click", "page_url": "/", "metadata": "x"}]).to_string(), 400, "[1].metadata"),
        ("application/x-ndjson", format!("{}\n{{\"user_id\":{u}}}\n", event(u)), 400, "line 2: event_type"),
        ("text/csv", "a,b".into(), 415, "content type"),
        ("application/json", format!("[{}]", vec![event(u).to_string(); quiver::events::MAX_EVENTS_PER_REQUEST + 1].join(",")), 413, "number of events"),
    ];
    for (ct, body, status, needle) in cases {
        let (s, h, v) = send(&app, post("/events", ct, body)).await;
        assert_eq!(s, status, "{needle}: {v}");
        assert_eq!(h["content-type"], "application/problem+json");
        assert!(v.to_string().contains(needle), "expected {needle:?} in {v}");
    }
    let huge = vec![b' '; quiver::http::MAX_BODY_BYTES + 1];
    let (s, _, v) = send(&app, post("/events", "application/json", huge)).await;
    assert_eq!(s, 413);
    assert_eq!(v["limit"], quiver::http::MAX_BODY_BYTES);
    assert_eq!(count_user(u).await, 0, "a rejected batch writes no row");
}

#[tokio::test]
async fn a_batch_the_database_rejects_writes_no_row() {
    // Valid JSON that passes validation but breaks a table constraint can only come from a race;
    // simulate it with a user id over the CHECK by writing directly through ingest.
    let pg = pg().await;
    let u = fresh_user();
    let mut batch: Vec<_> =
        (0..100).map(|_| quiver::events::validate("", event(u), 0).unwrap()).collect();
    batch[99].user_id = -1;
    assert!(quiver::ingest::insert(&pg, &batch, None).await.is_err());
    assert_eq!(count_user(u).await, 0);
}

#[tokio::test]
async fn retries_with_the_same_key_write_once() {
    let app = app();
    let u = fresh_user();
    let body = json!([event(u), event(u)]).to_string();
    let key = format!("key-{u}");
    let req = |b: String| {
        http::Request::post("/events")
            .header("content-type", "application/json")
            .header("idempotency-key", &key)
            .body(b.into())
            .unwrap()
    };
    let (s1, _, v1) = send(&app, req(body.clone())).await;
    assert_eq!(s1, 201, "{v1}");
    let (s2, h2, v2) = send(&app, req(body.clone())).await;
    assert_eq!(s2, 201);
    assert_eq!(h2["idempotent-replayed"], "true");
    assert_eq!(v1["first_id"], v2["first_id"]);
    assert_eq!(count_user(u).await, 2);
    let (s3, _, v3) = send(&app, req(json!([event(u)]).to_string())).await;
    assert_eq!(s3, 409, "{v3}");
    assert_eq!(count_user(u).await, 2);

    // Concurrent retries of a new key: exactly one write.
    let key2 = format!("key2-{u}");
    let body2 = json!([event(u), event(u), event(u)]).to_string();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let app = app.clone();
            let req = http::Request::post("/events")
                .header("content-type", "application/json")
                .header("idempotency-key", &key2)
                .body(body2.clone().into())
                .unwrap();
            tokio::spawn(async move { send(&app, req).await })
        })
        .collect();
    let mut first_ids = std::collections::HashSet::new();
    for t in tasks {
        let (s, _, v) = t.await.unwrap();
        assert_eq!(s, 201, "{v}");
        first_ids.insert(v["first_id"].as_i64().unwrap());
    }
    assert_eq!(first_ids.len(), 1, "every retry sees the same write");
    assert_eq!(count_user(u).await, 5);
}

#[tokio::test]
async fn walking_all_pages_returns_every_event_once() {
    let app = app();
    let u = fresh_user();
    // 250 events, many sharing a timestamp, so the id tie-breaker matters.
    let batch: Vec<Value> = (0..250)
        .map(|i| json!({"user_id": u, "event_type": "click", "page_url": format!("/p{i}"), "created_at": format!("2026-10-01T00:00:{:02}Z", i % 7)}))
        .collect();
    let (s, _, v) =
        send(&app, post("/events", "application/json", Value::Array(batch).to_string())).await;
    assert_eq!(s, 201, "{v}");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/events/{u}?limit=37&cursor={c}"),
            None => format!("/events/{u}?limit=37"),
        };
        let (s, _, v) = send(&app, http::Request::get(q).body(Default::default()).unwrap()).await;
        assert_eq!(s, 200, "{v}");
        for e in v["events"].as_array().unwrap() {
            seen.push((e["created_at"].as_str().unwrap().to_string(), e["id"].as_i64().unwrap()));
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 250);
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first, ties by id");
    sorted.dedup();
    assert_eq!(sorted.len(), 250, "no event twice");
}

#[tokio::test]
async fn bad_read_parameters_are_400() {
    let app = app();
    for q in [
        "/events/0",
        "/events/abc",
        "/events/1?limit=0",
        "/events/1?limit=1001",
        "/events/1?cursor=garbage",
        "/events/1?limit=x",
    ] {
        let (s, _, v) = send(&app, http::Request::get(q).body(Default::default()).unwrap()).await;
        assert_eq!(s, 400, "{q}: {v}");
        assert!(v["param"].is_string(), "{q}: {v}");
    }
    for q in ["/events/bulk?count=0", "/events/bulk?count=1000001", "/events/bulk?count=-5"] {
        let (s, _, v) = send(&app, post(q, "application/json", "")).await;
        assert_eq!(s, 400, "{q}: {v}");
        assert_eq!(v["param"], "count");
    }
}

#[tokio::test]
async fn eight_concurrent_writers_of_ten_thousand_leave_exactly_eighty_thousand() {
    let app = app();
    let u = fresh_user();
    let body = format!("[{}]", vec![event(u).to_string(); 10_000].join(","));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let app = app.clone();
            let body = body.clone();
            tokio::spawn(async move { send(&app, post("/events", "application/json", body)).await })
        })
        .collect();
    for t in futures::future::join_all(tasks).await {
        let (s, _, v) = t.unwrap();
        assert_eq!(s, 201, "{v}");
        assert_eq!(v["inserted"], 10_000);
    }
    assert_eq!(count_user(u).await, 80_000);
}

#[tokio::test]
async fn bulk_inserts_the_requested_count() {
    let app = app();
    let before = quiver::ingest::count(&pg().await).await.unwrap();
    let (s, _, v) =
        send(&app, post("/events/bulk?count=5000&seed=7", "application/json", "")).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["inserted"], 5000);
    assert_eq!(v["last_id"].as_i64().unwrap() - v["first_id"].as_i64().unwrap(), 4999);
    assert!(v["rows_per_s"].as_u64().unwrap() > 0);
    assert!(quiver::ingest::count(&pg().await).await.unwrap() >= before + 5000);
}

#[tokio::test]
async fn the_sample_event_runs_through_the_handler() {
    let req =
        lambda_http::request::from_str(include_str!("../../../events/events-post.json")).unwrap();
    let res = app().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 201);
}
