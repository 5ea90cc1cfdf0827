//! Oversized bodies, too many rows, deep JSON nesting and very long query strings, through every
//! function mounted in `quiver-local serve`: each is a 4xx that names the limit, answered quickly.

use std::time::{Duration, Instant};

use quiver::testing::TestApp;

#[tokio::test(flavor = "multi_thread")]
async fn every_limit_is_a_quick_4xx_that_names_it() {
    let app = TestApp::from_app(
        quiver_local::serve::router(quiver::testing::service_config()).await.unwrap(),
    );
    let seven_mb = vec![b' '; 7 << 20];
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    let deep_object = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000)).into_bytes();
    let rows = format!(
        "[{}]",
        vec![r#"{"user_id":1,"event_type":"click","page_url":"/x"}"#; 10_001].join(",")
    )
    .into_bytes();
    let long = "x".repeat(10_000);

    // (method, path, content type, body, status, the problem+json member that explains it)
    type Case<'a> = (&'a str, String, &'a str, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("POST", "/events".into(), "application/json", seven_mb.clone(), 413, "limit"),
        ("POST", "/process".into(), "application/json", seven_mb.clone(), 413, "limit"),
        ("POST", "/index".into(), "application/x-ndjson", seven_mb, 413, "limit"),
        ("POST", "/events".into(), "application/json", rows, 413, "limit"),
        ("POST", "/events".into(), "application/json", deep.clone(), 400, "detail"),
        ("POST", "/events".into(), "application/x-ndjson", deep_object.clone(), 400, "detail"),
        ("POST", "/process".into(), "application/json", deep, 400, "detail"),
        ("POST", "/process".into(), "application/json", deep_object, 400, "detail"),
        ("GET", format!("/search?q={long}"), "text/plain", vec![], 413, "limit"),
        ("GET", format!("/analytics/summary?from={long}"), "text/plain", vec![], 413, "limit"),
        ("GET", format!("/events/1?cursor={long}"), "text/plain", vec![], 413, "limit"),
        (
            "GET",
            format!("/process?size=1&{}", "a=1&".repeat(2_000)),
            "text/plain",
            vec![],
            413,
            "limit",
        ),
        ("GET", "/search?q=rust&limit=100000".into(), "text/plain", vec![], 400, "param"),
        ("GET", "/process?size=5000001".into(), "text/plain", vec![], 400, "param"),
        ("POST", "/events/bulk?count=1000001".into(), "text/plain", vec![], 400, "param"),
    ];
    for (method, uri, ct, body, want, names) in cases {
        let shown = &uri[..uri.len().min(60)];
        let t = Instant::now();
        let r = app.send(method, &uri, &[("content-type", ct)], body).await;
        let took = t.elapsed();
        assert_eq!(r.status, want, "{method} {shown}: {r}");
        let v = r.json();
        assert_eq!(v["status"], want, "{method} {shown}: a problem+json body: {v}");
        assert!(!v[names].is_null(), "{method} {shown}: the problem names its `{names}`: {v}");
        assert!(took < Duration::from_secs(2), "{method} {shown} took {took:?}");
    }
}
