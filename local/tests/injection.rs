//! Hostile strings in every parameter that reaches a query, through every function mounted in
//! `quiver-local serve`, against the real PostgreSQL, Valkey and S3: each answer is a 4xx or a
//! normal answer (or a 503 where nothing is published), never a 500, and the table is intact.
//! Stored strings come back byte for byte: they were data, not SQL.

use quiver::testing::TestApp;
use serde_json::{json, Value};

const PAYLOADS: &[&str] = &[
    "'; DROP TABLE user_events; --",
    "1 OR 1=1",
    "\"); DROP TABLE user_events; --",
    "' UNION SELECT usename, passwd FROM pg_shadow --",
    "$$; DROP TABLE user_events; $$",
    "1; COPY (SELECT 1) TO '/tmp/x'; --",
    "x' AND read_csv('/etc/passwd') --",
];

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_metacharacters_never_change_a_query() {
    let cfg = quiver::testing::service_config();
    let app = TestApp::from_app(quiver_local::serve::router(cfg.clone()).await.unwrap());
    let pg = quiver::pg::Pg::new(&cfg).unwrap();
    quiver::migrate::run(&pg).await.unwrap();

    for p in PAYLOADS {
        let e = enc(p);
        let uris = [
            format!("/events/{e}"),
            format!("/events/1?limit={e}"),
            format!("/events/1?cursor={e}"),
            format!("/analytics/summary?event_type={e}"),
            format!("/analytics/summary?source=postgres&event_type={e}"),
            format!("/analytics/summary?source=postgres&from={e}"),
            format!("/analytics/funnel?to={e}"),
            format!("/analytics/funnel?source={e}"),
            format!("/analytics/compare?event_type={e}"),
            format!("/search?q={e}"),
            format!("/search?q=performance&tag={e}"),
            format!("/search?q=performance&from={e}"),
            format!("/process?size={e}"),
            format!("/samples/pg/benchmark?user_id={e}"),
            format!("/samples/pg/benchmark-all?user_id=1&limit={e}"),
        ];
        for uri in &uris {
            let r = app.get(uri).await;
            let (status, text) = (r.status, r.text());
            assert!(status < 500 || status == 503, "{uri} answered {status}: {text}");
            assert!(
                !text.to_ascii_lowercase().contains("syntax error at or near"),
                "{uri} reached SQL: {text}"
            );
        }
    }

    // Written as values, they come back unchanged.
    let user = 1_500_000_000 + (std::process::id() % 100_000) as i32;
    let batch: Vec<Value> = PAYLOADS
        .iter()
        .map(|p| json!({"user_id": user, "event_type": "click", "page_url": p, "metadata": {"note": p}}))
        .collect();
    let r = app.post_json("/events", &Value::Array(batch)).await;
    assert_eq!(r.status, 201, "{r}");
    let r = app.get(format!("/events/{user}?limit=100")).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    let mut urls: Vec<String> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["page_url"].as_str().unwrap().to_string())
        .collect();
    let mut notes: Vec<String> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["metadata"]["note"].as_str().unwrap().to_string())
        .collect();
    let mut want: Vec<String> = PAYLOADS.iter().map(|s| s.to_string()).collect();
    urls.sort();
    notes.sort();
    want.sort();
    assert_eq!(urls, want);
    assert_eq!(notes, want);

    // The table is still there and still answers.
    let c = pg.client().await.unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM user_events WHERE user_id = $1", &[&user])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, PAYLOADS.len() as i64);
}
