//! Dependencies that go away and come back, on a private stack: requests get a 503 that names the
//! dependency, nothing is half-written, and the same state recovers without a restart.

mod common;

use std::time::{Duration, Instant};

use common::PrivateStack;
use quiver::testing::TestApp;
use serde_json::{json, Value};

/// `n` events of user 7, as one JSON array.
fn batch(n: usize) -> Value {
    (0..n).map(|_| json!({"user_id": 7, "event_type": "click", "page_url": "/x"})).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_stopped_gives_503_then_recovers_without_restart() {
    let stack = PrivateStack::new("pg-fault");
    stack.ok(&["up", "--only", "postgres"]);
    let mut cfg = quiver::testing::service_config();
    cfg.database_url = Some(stack.database_url());
    cfg.pg_timeout = Duration::from_secs(2);
    let app = TestApp::new(events::routes(events::Events::new(&cfg).unwrap()));

    let mut acknowledged = 0;
    let r = app.post_json("/events", &batch(100)).await;
    assert_eq!(r.status, 201, "{r}");
    acknowledged += 100;

    stack.ok(&["down", "--only", "postgres"]);
    for _ in 0..3 {
        let t = Instant::now();
        let r = app.post_json("/events", &batch(50)).await;
        assert_eq!(r.status, 503, "{r}");
        assert_eq!(r.json()["dependency"], "postgres", "{r}");
        assert!(t.elapsed() < Duration::from_secs(5), "503 took {:?}", t.elapsed());
        let r = app.get("/events/7").await;
        assert_eq!(r.status, 503, "{r}");
    }

    stack.ok(&["up", "--only", "postgres"]);
    let r = app.post_json("/events", &batch(25)).await;
    assert_eq!(r.status, 201, "recovers without a restart: {r}");
    acknowledged += 25;

    let pg =
        quiver::pg::Pg::connect_lazy(&stack.database_url(), 1, Duration::from_secs(5)).unwrap();
    assert_eq!(
        quiver::ingest::count(&pg).await.unwrap(),
        acknowledged,
        "exactly the acknowledged rows"
    );
}
