//! Dependencies that go away and come back, on a private stack: requests get a 503 that names the
//! dependency, nothing is half-written, and the same state recovers without a restart.

mod common;

use std::time::{Duration, Instant};

use common::PrivateStack;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

async fn send(app: &axum::Router, req: http::Request<axum::body::Body>) -> (u16, Value) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn batch(n: usize) -> http::Request<axum::body::Body> {
    let events: Vec<Value> =
        (0..n).map(|_| json!({"user_id": 7, "event_type": "click", "page_url": "/x"})).collect();
    http::Request::post("/events")
        .header("content-type", "application/json")
        .body(Value::Array(events).to_string().into())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_stopped_gives_503_then_recovers_without_restart() {
    let stack = PrivateStack::new("pg-fault");
    stack.ok(&["up", "--only", "postgres"]);
    let mut cfg = quiver::testing::service_config();
    cfg.database_url = Some(stack.database_url());
    cfg.pg_timeout = Duration::from_secs(2);
    let app = quiver::http::app(events::routes(events::Events::new(&cfg).unwrap()));

    let mut acknowledged = 0;
    let (s, v) = send(&app, batch(100)).await;
    assert_eq!(s, 201, "{v}");
    acknowledged += 100;

    stack.ok(&["down", "--only", "postgres"]);
    for _ in 0..3 {
        let t = Instant::now();
        let (s, v) = send(&app, batch(50)).await;
        assert_eq!(s, 503, "{v}");
        assert_eq!(v["dependency"], "postgres", "{v}");
        assert!(t.elapsed() < Duration::from_secs(5), "503 took {:?}", t.elapsed());
        let (s, v) =
            send(&app, http::Request::get("/events/7").body(Default::default()).unwrap()).await;
        assert_eq!(s, 503, "{v}");
    }

    stack.ok(&["up", "--only", "postgres"]);
    let (s, v) = send(&app, batch(25)).await;
    assert_eq!(s, 201, "recovers without a restart: {v}");
    acknowledged += 25;

    let pg =
        quiver::pg::Pg::connect_lazy(&stack.database_url(), 1, Duration::from_secs(5)).unwrap();
    assert_eq!(
        quiver::ingest::count(&pg).await.unwrap(),
        acknowledged,
        "exactly the acknowledged rows"
    );
}
