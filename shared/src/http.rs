//! The HTTP plumbing every function shares: query and body parsing with limits, compression
//! negotiated from `Accept-Encoding`, strong ETags with `If-None-Match` → 304, `Server-Timing`,
//! and an `x-request-id` that is echoed or generated.

use std::cell::RefCell;
use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;

use crate::error::{Error, Result};

/// Lambda's synchronous payload limit; no body may be larger.
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;
/// A query string longer than this is rejected before it is parsed.
pub const MAX_QUERY_BYTES: usize = 4096;
/// More parameters than this is hostile, not a mistake.
pub const MAX_QUERY_PARAMS: usize = 32;
/// Bodies smaller than this are sent uncompressed: the headers would cost more than they save.
pub const MIN_COMPRESS_BYTES: usize = 1024;

pub const X_REQUEST_ID: &str = "x-request-id";
pub const X_CACHE: &str = "x-cache";
pub const SERVER_TIMING: &str = "server-timing";

/// Decoded query parameters, with typed getters whose errors name the parameter.
#[derive(Debug, Default, Clone)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses a raw query string (without `?`), enforcing length and count limits.
    pub fn parse(query: Option<&str>) -> Result<Self> {
        let q = query.unwrap_or("");
        if q.len() > MAX_QUERY_BYTES {
            return Err(Error::TooLarge { what: "query string", limit: MAX_QUERY_BYTES });
        }
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            if k.is_empty() {
                continue;
            }
            if pairs.len() == MAX_QUERY_PARAMS {
                return Err(Error::TooLarge {
                    what: "number of query parameters",
                    limit: MAX_QUERY_PARAMS,
                });
            }
            if pairs.iter().any(|(seen, _)| *seen == k) {
                return Err(Error::bad_param(&k, "is given more than once"));
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(Params { pairs })
    }

    pub fn from_uri(uri: &http::Uri) -> Result<Self> {
        Self::parse(uri.query())
    }

    /// The raw value, if present and non-empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// A string parameter of at most `max_len` characters.
    pub fn text(&self, name: &str, max_len: usize) -> Result<Option<&str>> {
        match self.get(name) {
            Some(v) if v.chars().count() > max_len => {
                Err(Error::bad_param(name, format!("must be at most {max_len} characters")))
            }
            other => Ok(other),
        }
    }

    /// A number within `range`; `default` when absent. Errors name the parameter and the range.
    pub fn number<T>(&self, name: &str, default: Option<T>, range: RangeInclusive<T>) -> Result<T>
    where
        T: FromStr + PartialOrd + Display + Copy,
    {
        match self.get(name) {
            None => default.ok_or_else(|| Error::bad_param(name, "is required")),
            Some(raw) => {
                let v: T = raw.trim().parse().map_err(|_| {
                    Error::bad_param(
                        name,
                        format!("must be a number between {} and {}", range.start(), range.end()),
                    )
                })?;
                if !range.contains(&v) {
                    return Err(Error::bad_param(
                        name,
                        format!("must be between {} and {}, got {v}", range.start(), range.end()),
                    ));
                }
                Ok(v)
            }
        }
    }

    /// An optional number within `range`.
    pub fn opt_number<T>(&self, name: &str, range: RangeInclusive<T>) -> Result<Option<T>>
    where
        T: FromStr + PartialOrd + Display + Copy,
    {
        match self.get(name) {
            None => Ok(None),
            Some(_) => self.number(name, None, range).map(Some),
        }
    }

    /// One of a fixed set of words.
    pub fn choice<'a>(&self, name: &str, allowed: &[&'a str], default: &'a str) -> Result<&'a str> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => allowed.iter().find(|a| **a == v).copied().ok_or_else(|| {
                Error::bad_param(name, format!("must be one of {}", allowed.join(", ")))
            }),
        }
    }
}

/// Reads a whole body, refusing anything larger than `limit` with a 413 that states the limit.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes> {
    if let Some(len) =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
    {
        if len > limit {
            return Err(Error::TooLarge { what: "request body", limit });
        }
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Error::TooLarge { what: "request body", limit })
        }
        Err(e) => Err(Error::invalid(format!("could not read the request body: {e}"), vec![])),
    }
}

/// Parses a JSON body; the error says where it broke (serde_json also caps nesting at 128).
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::invalid(
            "the request body is empty; a JSON document was expected",
            vec![],
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        Error::invalid(format!("the body is not valid JSON for this route: {e}"), vec![])
    })
}

/// A JSON response with a known content type.
pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut res = (status, body).into_response();
            res.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            res
        }
        Err(e) => Error::Internal(format!("serializing a response: {e}")).into_response(),
    }
}

/// A response encoding the client accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Zstd,
    Br,
    Gzip,
    Identity,
}

impl Encoding {
    pub fn header_value(self) -> Option<HeaderValue> {
        match self {
            Encoding::Zstd => Some(HeaderValue::from_static("zstd")),
            Encoding::Br => Some(HeaderValue::from_static("br")),
            Encoding::Gzip => Some(HeaderValue::from_static("gzip")),
            Encoding::Identity => None,
        }
    }
}

/// Picks the best encoding from `Accept-Encoding`, honouring q-values; ties prefer zstd, br, gzip.
pub fn negotiate(accept: Option<&str>) -> Encoding {
    let Some(accept) = accept else { return Encoding::Identity };
    let q_of = |name: &str| -> Option<f32> {
        let mut star = None;
        for item in accept.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
                .find_map(|v| v.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if token.eq_ignore_ascii_case(name) {
                return Some(q);
            }
            if token == "*" {
                star = Some(q);
            }
        }
        star
    };
    let mut best = (Encoding::Identity, 0.0f32);
    for (enc, name) in [(Encoding::Zstd, "zstd"), (Encoding::Br, "br"), (Encoding::Gzip, "gzip")] {
        if let Some(q) = q_of(name) {
            if q > best.1 {
                best = (enc, q);
            }
        }
    }
    best.0
}

thread_local! {
    /// zstd contexts are reused per thread instead of being built per call.
    static ZSTD_C: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static ZSTD_D: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// zstd level for responses and cache values: fast, and still 5-10x on JSON.
pub const ZSTD_LEVEL: i32 = 3;

/// Compresses with a reused per-thread zstd context.
pub fn zstd_compress(data: &[u8]) -> Vec<u8> {
    ZSTD_C.with(|c| {
        let mut c = c.borrow_mut();
        let c =
            c.get_or_insert_with(|| zstd::bulk::Compressor::new(ZSTD_LEVEL).expect("zstd context"));
        c.compress(data).expect("zstd compression into a growable buffer cannot fail")
    })
}

/// Decompresses a zstd frame of at most `max` bytes with a reused per-thread context.
pub fn zstd_decompress(data: &[u8], max: usize) -> std::io::Result<Vec<u8>> {
    ZSTD_D.with(|d| {
        let mut d = d.borrow_mut();
        let d = d.get_or_insert_with(|| zstd::bulk::Decompressor::new().expect("zstd context"));
        d.decompress(data, max)
    })
}

/// Encodes `data` for the client.
pub fn compress(enc: Encoding, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match enc {
        Encoding::Zstd => zstd_compress(data),
        Encoding::Br => {
            let mut out = Vec::with_capacity(data.len() / 4);
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 4, 22);
                w.write_all(data).expect("writing to a Vec");
            }
            out
        }
        Encoding::Gzip => {
            let mut w = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 4),
                flate2::Compression::fast(),
            );
            w.write_all(data).expect("writing to a Vec");
            w.finish().expect("writing to a Vec")
        }
        Encoding::Identity => data.to_vec(),
    }
}

/// A strong ETag over the uncompressed body.
pub fn etag_for(body: &[u8]) -> HeaderValue {
    let h = xxhash_rust::xxh3::xxh3_128(body);
    HeaderValue::from_str(&format!("\"{h:032x}\"")).expect("hex is a valid header")
}

/// Whether `If-None-Match` matches `etag` (weak comparison, as RFC 9110 asks for this header).
pub fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let etag = strip(etag);
    if_none_match.split(',').any(|t| t.trim() == "*" || strip(t) == etag)
}

/// Collects `Server-Timing` entries; `total` is appended by the middleware.
#[derive(Debug, Default)]
pub struct ServerTiming(String);

impl ServerTiming {
    pub fn add(mut self, name: &str, dur: Duration) -> Self {
        if !self.0.is_empty() {
            self.0.push_str(", ");
        }
        self.0.push_str(&format!("{name};dur={:.3}", dur.as_secs_f64() * 1e3));
        self
    }

    pub fn apply(self, res: &mut Response) {
        if let Ok(v) = HeaderValue::from_str(&self.0) {
            res.headers_mut().append(SERVER_TIMING, v);
        }
    }
}

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(0);

fn new_request_id() -> String {
    let seq = REQUEST_SEQ.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut seed = [0u8; 28];
    seed[..16].copy_from_slice(&nanos.to_le_bytes());
    seed[16..24].copy_from_slice(&seq.to_le_bytes());
    seed[24..].copy_from_slice(&std::process::id().to_le_bytes());
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&seed))
}

fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
}

/// Wraps a function's routes: problem+json for unknown routes and methods, then the finishing
/// middleware. Use once per server; `quiver-local serve` merges routes first, then calls this.
pub fn app(routes: Router) -> Router {
    routes
        .fallback(|| async { Error::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(axum::middleware::from_fn(finish))
}

/// Request id, ETag/304, compression, `Server-Timing` and one log line per request.
pub async fn finish(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let request_id = match req.headers().get(X_REQUEST_ID) {
        Some(v) if valid_request_id(v) => v.clone(),
        _ => HeaderValue::from_str(&new_request_id()).expect("hex is a valid header"),
    };
    let accept =
        negotiate(req.headers().get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()));
    let if_none_match =
        req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).map(str::to_string);

    let res = next.run(req).await;
    let (mut parts, body) = res.into_parts();
    let mut bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            return Error::Internal(format!("reading the response body: {e}")).into_response()
        }
    };

    let cacheable =
        parts.status == StatusCode::OK && (method == Method::GET || method == Method::HEAD);
    if cacheable {
        let already_encoded = parts.headers.contains_key(header::CONTENT_ENCODING);
        if !parts.headers.contains_key(header::ETAG) && !already_encoded {
            parts.headers.insert(header::ETAG, etag_for(&bytes));
        }
        let etag =
            parts.headers.get(header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_string);
        if let (Some(inm), Some(etag)) = (&if_none_match, &etag) {
            if etag_matches(inm, etag) {
                parts.status = StatusCode::NOT_MODIFIED;
                parts.headers.remove(header::CONTENT_TYPE);
                parts.headers.remove(header::CONTENT_ENCODING);
                parts.headers.remove(header::CONTENT_LENGTH);
                bytes = Bytes::new();
            }
        }
    }
    if parts.status != StatusCode::NOT_MODIFIED
        && !parts.headers.contains_key(header::CONTENT_ENCODING)
        && bytes.len() >= MIN_COMPRESS_BYTES
        && accept != Encoding::Identity
    {
        bytes = Bytes::from(compress(accept, &bytes));
        if let Some(v) = accept.header_value() {
            parts.headers.insert(header::CONTENT_ENCODING, v);
        }
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    parts.headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    let elapsed = started.elapsed();
    if let Ok(v) = HeaderValue::from_str(&format!("total;dur={:.3}", elapsed.as_secs_f64() * 1e3)) {
        parts.headers.append(SERVER_TIMING, v);
    }
    tracing::info!(
        request_id = request_id.to_str().unwrap_or(""),
        method = %method,
        path = %path,
        status = parts.status.as_u16(),
        us = elapsed.as_micros() as u64,
        "request"
    );
    parts.headers.insert(X_REQUEST_ID, request_id);
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse_types_and_ranges() {
        let p = Params::parse(Some("limit=50&q=hello+world&x=")).unwrap();
        assert_eq!(p.number::<u32>("limit", Some(10), 1..=100).unwrap(), 50);
        assert_eq!(p.number::<u32>("offset", Some(0), 0..=10).unwrap(), 0);
        assert_eq!(p.get("q"), Some("hello world"));
        assert_eq!(p.get("x"), None);
        let e = p.number::<u32>("limit", None, 1..=10).unwrap_err();
        assert!(e.to_string().contains("limit") && e.to_string().contains("between 1 and 10"));
        let e = Params::parse(Some("limit=abc"))
            .unwrap()
            .number::<u32>("limit", None, 1..=10)
            .unwrap_err();
        assert_eq!(e.status(), 400);
        assert_eq!(Params::parse(Some("a=1&a=2")).unwrap_err().status(), 400);
        assert_eq!(
            Params::parse(Some(&"a".repeat(MAX_QUERY_BYTES + 1))).unwrap_err().status(),
            413
        );
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
        let app = app(
            Router::new().route("/big", axum::routing::get(move || async move { big.clone() }))
        );
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
        let res =
            app.oneshot(http::Request::post("/big").body(Body::empty()).unwrap()).await.unwrap();
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
}
