//! The `events` function against the real PostgreSQL started by `quiver-local up`. Each test works
//! on its own user ids, so the tests can run in parallel on one table.

use std::sync::atomic::{AtomicI32, Ordering};

use quiver::pg::Pg;
use quiver::testing::{service_config, TestApp};
use serde_json::{json, Value};

fn app() -> TestApp {
    TestApp::new(events::routes(events::Events::new(&service_config()).unwrap()))
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

fn event(user: i32) -> Value {
    json!({"user_id": user, "event_type": "page_view", "page_url": "/pricing", "metadata": {"duration_ms": 1200}})
}

#[tokio::test]
async fn one_event_an_array_and_ndjson_are_written() {
    let app = app();
    let u = fresh_user();
    let r = app.post_json("/events", &event(u)).await;
    assert_eq!(r.status, 201, "{r}");
    let v = r.json();
    assert_eq!(v["inserted"], 1);
    assert_eq!(v["first_id"], v["last_id"]);
    let r = app.post_json("/events", &json!([event(u), event(u), event(u)])).await;
    assert_eq!(r.status, 201, "{r}");
    let v = r.json();
    assert_eq!(v["inserted"], 3);
    assert_eq!(v["last_id"].as_i64().unwrap() - v["first_id"].as_i64().unwrap(), 2);
    let nd = format!("{}\n{}\n", event(u), event(u));
    let r = app.post("/events", "application/x-ndjson", nd).await;
    assert_eq!(r.status, 201, "{r}");
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
        // Issue 29, item 1: 10000-01-01 in UTC, whose day folder broke every later snapshot.
        ("application/json", json!([{"user_id": u, "event_type": "click", "page_url": "/x", "created_at": "9999-12-31T12:00:00-12:00"}]).to_string(), 400, "[0].created_at"),
        ("application/x-ndjson", format!("{}\n{{\"user_id\":{u}}}\n", event(u)), 400, "line 2: event_type"),
        ("text/csv", "a,b".into(), 415, "content type"),
        ("application/json", format!("[{}]", vec![event(u).to_string(); quiver::events::MAX_EVENTS_PER_REQUEST + 1].join(",")), 413, "number of events"),
    ];
    for (ct, body, status, needle) in cases {
        let r = app.post("/events", ct, body).await;
        assert_eq!(r.status, status, "{needle}: {r}");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        let v = r.json();
        assert!(v.to_string().contains(needle), "expected {needle:?} in {v}");
    }
    let huge = vec![b' '; quiver::http::MAX_BODY_BYTES + 1];
    let r = app.post("/events", "application/json", huge).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["limit"], quiver::http::MAX_BODY_BYTES);
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
    let headers = [("content-type", "application/json"), ("idempotency-key", key.as_str())];
    let first = app.send("POST", "/events", &headers, body.clone()).await;
    assert_eq!(first.status, 201, "{first}");
    let again = app.send("POST", "/events", &headers, body.clone()).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(first.json()["first_id"], again.json()["first_id"]);
    assert_eq!(count_user(u).await, 2);
    let other = app.send("POST", "/events", &headers, json!([event(u)]).to_string()).await;
    assert_eq!(other.status, 409, "{other}");
    assert_eq!(count_user(u).await, 2);

    // Concurrent retries of a new key: exactly one write.
    let key2 = format!("key2-{u}");
    let body2 = json!([event(u), event(u), event(u)]).to_string();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (app, key2, body2) = (app.clone(), key2.clone(), body2.clone());
            tokio::spawn(async move {
                let headers = [("content-type", "application/json"), ("idempotency-key", &*key2)];
                app.send("POST", "/events", &headers, body2).await
            })
        })
        .collect();
    let mut first_ids = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 201, "{r}");
        first_ids.insert(r.json()["first_id"].as_i64().unwrap());
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
    let r = app.post_json("/events", &Value::Array(batch)).await;
    assert_eq!(r.status, 201, "{r}");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/events/{u}?limit=37&cursor={c}"),
            None => format!("/events/{u}?limit=37"),
        };
        let r = app.get(q).await;
        assert_eq!(r.status, 200, "{r}");
        let v = r.json();
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
async fn pages_of_the_largest_events_stay_far_under_lambdas_6_mb() {
    let app = app();
    let u = fresh_user();
    // The largest event the API accepts, escaped as much as JSON can: a 2,048-character URL of
    // control characters (6 bytes each as JSON) and 8 KiB of metadata that is all quotes.
    let url = "\u{1}".repeat(2048);
    let metadata = json!({"k": "\"".repeat(4000)});
    assert!(metadata.to_string().len() <= quiver::events::MAX_METADATA_BYTES);
    for _ in 0..4 {
        let batch: Vec<Value> = (0..250)
            .map(|_| json!({"user_id": u, "event_type": "click", "page_url": url, "metadata": metadata}))
            .collect();
        let r = app.post_json("/events", &Value::Array(batch)).await;
        assert_eq!(r.status, 201, "{r}");
    }
    let (mut seen, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let q = match &cursor {
            Some(c) => format!("/events/{u}?limit=1000&cursor={c}"),
            None => format!("/events/{u}?limit=1000"),
        };
        let r = app.get(q).await;
        assert_eq!(r.status, 200, "{r}");
        assert!(r.body.len() < 3_000_000, "a page of {} bytes", r.body.len());
        let v = r.json();
        let events = v["events"].as_array().unwrap();
        assert_eq!(v["count"], events.len(), "count says how many the page holds");
        seen.extend(events.iter().map(|e| e["id"].as_i64().unwrap()));
        pages += 1;
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert!(pages > 1, "1,000 such events (about 20 MB) do not fit one page");
    assert_eq!(seen.len(), 1000);
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 1000, "every event once");
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
        // Issue 17, item 8: a forged far-future position (once a 500 from PostgreSQL) and a
        // made-up token of the documented shape are refused: cursors are signed.
        "/events/1?cursor=7fffffffffffffff000000000000000100000000000000000000000000000000",
        "/events/1?cursor=00000000000000000000000000000000000000000000000000000000000000ff",
    ] {
        let r = app.get(q).await;
        assert_eq!(r.status, 400, "{q}: {r}");
        assert!(r.json()["param"].is_string(), "{q}: {r}");
    }
    for q in ["/events/bulk?count=0", "/events/bulk?count=1000001", "/events/bulk?count=-5"] {
        let r = app.post(q, "application/json", "").await;
        assert_eq!(r.status, 400, "{q}: {r}");
        assert_eq!(r.json()["param"], "count");
    }
}

#[tokio::test]
async fn eight_concurrent_writers_of_ten_thousand_leave_exactly_eighty_thousand() {
    let app = app();
    let u = fresh_user();
    let body = format!("[{}]", vec![event(u).to_string(); 10_000].join(","));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (app, body) = (app.clone(), body.clone());
            tokio::spawn(async move { app.post("/events", "application/json", body).await })
        })
        .collect();
    for t in futures::future::join_all(tasks).await {
        let r = t.unwrap();
        assert_eq!(r.status, 201, "{r}");
        assert_eq!(r.json()["inserted"], 10_000);
    }
    assert_eq!(count_user(u).await, 80_000);
}

#[tokio::test]
async fn bulk_inserts_the_requested_count() {
    let app = app();
    let before = quiver::ingest::count(&pg().await).await.unwrap();
    let r = app.post("/events/bulk?count=5000&seed=7", "application/json", "").await;
    assert_eq!(r.status, 201, "{r}");
    let v = r.json();
    assert_eq!(v["inserted"], 5000);
    assert_eq!(v["last_id"].as_i64().unwrap() - v["first_id"].as_i64().unwrap(), 4999);
    assert!(v["rows_per_s"].as_u64().unwrap() > 0);
    assert!(quiver::ingest::count(&pg().await).await.unwrap() >= before + 5000);
}

/// The sample Function URL event, signed by `arn` (the request context AWS_IAM auth fills in),
/// carrying `body` under `Idempotency-Key: key`.
fn signed_post(arn: &str, key: &str, body: &str) -> lambda_http::Request {
    let mut event: Value =
        serde_json::from_str(include_str!("../../../events/events-post.json")).unwrap();
    event["requestContext"]["authorizer"] =
        json!({"iam": {"userArn": arn, "accountId": "123456789012", "callerId": "AIDAEXAMPLE"}});
    event["headers"]["idempotency-key"] = json!(key);
    event["body"] = json!(body);
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

/// Issue 17, item 3: an Idempotency-Key belongs to the IAM principal that sent it. Another
/// principal with the same key and body writes its own batch instead of receiving the first
/// one's ids; each principal's retry replays its own answer.
#[tokio::test]
async fn idempotency_keys_are_scoped_to_the_signing_principal() {
    let app = app();
    let u = fresh_user();
    let key = format!("shared-key-{u}");
    let body = json!([event(u), event(u)]).to_string();
    let alice = "arn:aws:iam::123456789012:user/alice";
    let bob = "arn:aws:sts::123456789012:assumed-role/ingest/bob";
    let a = app.call(signed_post(alice, &key, &body)).await;
    assert_eq!(a.status, 201, "{a}");
    let b = app.call(signed_post(bob, &key, &body)).await;
    assert_eq!(b.status, 201, "{b}");
    assert_eq!(b.header("idempotent-replayed"), None, "another principal's key is its own");
    assert_ne!(a.json()["first_id"], b.json()["first_id"]);
    assert_eq!(count_user(u).await, 4);
    for (arn, first) in [(alice, &a), (bob, &b)] {
        let again = app.call(signed_post(arn, &key, &body)).await;
        assert_eq!(again.header("idempotent-replayed"), Some("true"), "{again}");
        assert_eq!(again.json()["first_id"], first.json()["first_id"]);
    }
    assert_eq!(count_user(u).await, 4);
}

#[tokio::test]
async fn the_sample_event_runs_through_the_handler() {
    let req =
        lambda_http::request::from_str(include_str!("../../../events/events-post.json")).unwrap();
    assert_eq!(app().call(req).await.status, 201);
}
