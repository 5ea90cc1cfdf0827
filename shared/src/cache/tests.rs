use http::HeaderMap;

use super::*;
use crate::http::{zstd_decompress, ServerTiming, X_CACHE};

#[test]
fn keys_separate_their_parts() {
    assert_ne!(Key::new("a", "bc", "", "v1"), Key::new("ab", "c", "", "v1"));
    assert_ne!(Key::new("f", "/r", "x=1", "v1"), Key::new("f", "/r", "x=1", "v2"));
    assert_eq!(Key::new("f", "/r", "x=1", "v1"), Key::new("f", "/r", "x=1", "v1"));
}

/// Issue 17, item 9: during a deploy the old and the new code must not serve each other's bodies.
#[test]
fn keys_carry_the_schema_and_the_package_version() {
    let k = Key::new("f", "/r", "x=1", "v1").redis_key();
    assert!(k.starts_with(&format!("quiver:s2:v{}:", env!("CARGO_PKG_VERSION"))), "{k}");
    assert_eq!(k.len(), KEY_PREFIX.len() + 32);
}

#[test]
fn entries_round_trip_and_reject_garbage() {
    let e = Entry::new(br#"{"a":1}"#, "application/json");
    let d = Entry::decode(e.encode()).unwrap();
    assert_eq!(d, e);
    assert_eq!(d.body().unwrap(), br#"{"a":1}"#);
    assert!(Entry::decode(vec![9, 9, 9]).is_none());
    assert!(Entry::decode(vec![FORMAT, 200]).is_none());
}

#[tokio::test]
async fn hits_pass_zstd_through_and_honour_etags() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let json = format!("{{\"rows\":\"{}\"}}", "r".repeat(5000));
    let entry = Entry::new(json.as_bytes(), "application/json");
    let e2 = entry.clone();
    let app = crate::http::app(axum::Router::new().route(
        "/c",
        axum::routing::get(move |h: HeaderMap| {
            let e = e2.clone();
            async move { e.respond(Status::Hit, &h, ServerTiming::default()) }
        }),
    ));
    let get = |ae: Option<&str>, inm: Option<&str>| {
        let mut r = http::Request::get("/c");
        if let Some(v) = ae {
            r = r.header("accept-encoding", v);
        }
        if let Some(v) = inm {
            r = r.header("if-none-match", v);
        }
        r.body(axum::body::Body::empty()).unwrap()
    };
    let res = app.clone().oneshot(get(Some("gzip, zstd"), None)).await.unwrap();
    assert_eq!(res.headers()["content-encoding"], "zstd");
    assert_eq!(res.headers()[X_CACHE], "HIT");
    assert_eq!(res.headers()["etag"], entry.etag.as_str());
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(bytes, entry.zstd, "the stored bytes, not a re-encoding");
    assert_eq!(zstd_decompress(&bytes, 1 << 20).unwrap(), json.as_bytes());

    let res = app.clone().oneshot(get(None, None)).await.unwrap();
    assert!(res.headers().get("content-encoding").is_none());
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), json.as_bytes());

    let res = app.clone().oneshot(get(Some("gzip"), None)).await.unwrap();
    assert_eq!(res.headers()["content-encoding"], "gzip");

    let res = app.oneshot(get(Some("zstd"), Some(&entry.etag))).await.unwrap();
    assert_eq!(res.status(), 304);
}
