use super::*;
use http::HeaderMap;

#[test]
fn params_parse_types_and_ranges() {
    let p = Params::parse(Some("limit=50&q=hello+world")).unwrap();
    assert_eq!(p.number::<u32>("limit", Some(10), 1..=100).unwrap(), 50);
    assert_eq!(p.number::<u32>("offset", Some(0), 0..=10).unwrap(), 0);
    assert_eq!(p.get("q"), Some("hello world"));
    assert_eq!(p.get("x"), None);
    let e = p.number::<u32>("limit", None, 1..=10).unwrap_err();
    assert!(e.to_string().contains("limit") && e.to_string().contains("between 1 and 10"));
    let e =
        Params::parse(Some("limit=abc")).unwrap().number::<u32>("limit", None, 1..=10).unwrap_err();
    assert_eq!(e.status(), 400);
    assert_eq!(Params::parse(Some("a=1&a=2")).unwrap_err().status(), 400);
    // An empty value is refused rather than read as absent: the document gives each parameter a
    // type, and "" is none of them.
    let e = Params::parse(Some("limit=50&to=")).unwrap_err();
    assert!(e.to_string().contains("to") && e.to_string().contains("empty"), "{e}");
    for raw in ["limit=+5", "limit= 5"] {
        let e = Params::parse(Some(raw)).unwrap().number::<u32>("limit", None, 1..=10);
        assert!(e.is_err(), "{raw} is not an integer");
    }
    assert_eq!(Params::parse(Some(&"a".repeat(MAX_QUERY_BYTES + 1))).unwrap_err().status(), 413);
    let many: Vec<String> = (0..40).map(|i| format!("p{i}=1")).collect();
    assert_eq!(Params::parse(Some(&many.join("&"))).unwrap_err().status(), 413);
}

#[test]
fn choice_lists_the_allowed_values() {
    let p = Params::parse(Some("source=mysql")).unwrap();
    let e = p.choice("source", &["duckdb", "postgres"], "duckdb").unwrap_err();
    assert!(e.to_string().contains("duckdb, postgres"));
}

#[test]
fn negotiation_honours_q_values_and_prefers_zstd() {
    assert_eq!(negotiate(None), Encoding::Identity);
    assert_eq!(negotiate(Some("gzip, deflate, br, zstd")), Encoding::Zstd);
    assert_eq!(negotiate(Some("gzip, br")), Encoding::Br);
    assert_eq!(negotiate(Some("gzip")), Encoding::Gzip);
    assert_eq!(negotiate(Some("zstd;q=0, gzip;q=0.5")), Encoding::Gzip);
    assert_eq!(negotiate(Some("br;q=0.2, gzip;q=0.9")), Encoding::Gzip);
    assert_eq!(negotiate(Some("identity")), Encoding::Identity);
    assert_eq!(negotiate(Some("*")), Encoding::Zstd);
    assert_eq!(negotiate(Some("*;q=0")), Encoding::Identity);
}

#[test]
fn every_encoding_round_trips() {
    use std::io::Read;
    let data = serde_json::to_vec(&vec!["quiver"; 1000]).unwrap();
    assert_eq!(zstd_decompress(&compress(Encoding::Zstd, &data), 1 << 20).unwrap(), data);
    let mut out = Vec::new();
    brotli::Decompressor::new(&compress(Encoding::Br, &data)[..], 4096)
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, data);
    out.clear();
    flate2::read::GzDecoder::new(&compress(Encoding::Gzip, &data)[..])
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, data);
}

#[test]
fn etags_are_strong_and_match_weakly() {
    let e = etag_for(b"hello");
    let e = e.to_str().unwrap();
    assert!(e.starts_with('"') && e.ends_with('"'));
    assert_eq!(e, etag_for(b"hello").to_str().unwrap());
    assert_ne!(e, etag_for(b"hellp").to_str().unwrap());
    assert!(etag_matches(e, e));
    assert!(etag_matches(&format!("W/{e}"), e));
    assert!(etag_matches(&format!("\"other\", {e}"), e));
    assert!(etag_matches("*", e));
    assert!(!etag_matches("\"other\"", e));
}

#[tokio::test]
async fn middleware_sets_etag_304_compression_timing_and_request_id() {
    use tower::ServiceExt;
    let big = "x".repeat(5000);
    let app =
        app(Router::new().route("/big", axum::routing::get(move || async move { big.clone() })));
    let res = app
        .clone()
        .oneshot(
            http::Request::get("/big")
                .header("accept-encoding", "gzip, zstd")
                .header(X_REQUEST_ID, "abc-123")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()[header::CONTENT_ENCODING], "zstd");
    assert_eq!(res.headers()[X_REQUEST_ID], "abc-123");
    assert!(res.headers()[SERVER_TIMING].to_str().unwrap().starts_with("total;dur="));
    let etag = res.headers()[header::ETAG].clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(zstd_decompress(&body, 1 << 20).unwrap(), "x".repeat(5000).into_bytes());

    let res = app
        .clone()
        .oneshot(
            http::Request::get("/big")
                .header(header::IF_NONE_MATCH, etag)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    assert!(res.headers().get(X_REQUEST_ID).unwrap().len() == 32);
    assert!(res.into_body().collect().await.unwrap().to_bytes().is_empty());

    let res = app
        .clone()
        .oneshot(http::Request::get("/nope").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/problem+json");
    let res = app.oneshot(http::Request::post("/big").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(res.status(), 405);
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let mut h = HeaderMap::new();
    let e = read_body(&h, Body::from(vec![0u8; 100]), 10).await.unwrap_err();
    assert_eq!(e.status(), 413);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("100000"));
    let e = read_body(&h, Body::empty(), 10).await.unwrap_err();
    assert_eq!(e.status(), 413);
}

/// Issue 17, item 7: a 503's body carries the dependency and a fixed reason, and the driver's
/// message is logged on a line with the response's `x-request-id`.
#[tokio::test(flavor = "current_thread")]
async fn a_503_logs_its_detail_under_the_request_id() {
    use tower::ServiceExt;
    let lines = crate::log_lines::LogLines::default();
    let _guard = tracing::subscriber::set_default(lines.subscriber());
    const SECRET: &str = "db.internal.example:5432: connection refused";
    let app = app(Router::new()
        .route("/down", axum::routing::get(|| async { Error::unavailable("postgres", SECRET) })));
    let req = Request::get("/down").body(Body::empty()).unwrap();
    let res = app.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 503);
    let id = res.headers()[X_REQUEST_ID].to_str().unwrap().to_string();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(!body.contains("5432") && body.contains("\"reason\":\"refused\""), "{body}");
    let log = lines.text();
    let line = log.lines().find(|l| l.contains(SECRET)).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains(&id), "the detail's line names the request id: {line}");
}
