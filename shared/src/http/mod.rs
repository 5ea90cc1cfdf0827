//! The HTTP plumbing every function shares: query and body parsing with limits, compression
//! negotiated from `Accept-Encoding`, strong ETags with `If-None-Match` → 304, `Server-Timing`,
//! and an `x-request-id` that is echoed or generated.

mod body;
mod caller;
mod encoding;
mod params;
#[cfg(test)]
mod tests;

pub use body::*;
pub use caller::*;
pub use encoding::*;
pub use params::*;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;

use crate::error::Error;

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

/// A response extension the cache sets when it sends its stored zstd bytes as they are (with
/// their `content-encoding` and the ETag of the plain body): [`finish`] then neither computes an
/// ETag over the encoded bytes nor compresses them again.
#[derive(Debug, Clone, Copy)]
pub struct AlreadyEncoded;

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
            tracing::error!(request_id = request_id.to_str().unwrap_or(""), error = %e, "reading the response body");
            return Error::Internal(format!("reading the response body: {e}")).into_response();
        }
    };

    let cacheable =
        parts.status == StatusCode::OK && (method == Method::GET || method == Method::HEAD);
    if cacheable {
        let already_encoded = parts.extensions.get::<AlreadyEncoded>().is_some();
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
        && parts.extensions.get::<AlreadyEncoded>().is_none()
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
    if let Some(l) = parts.extensions.get::<crate::error::LoggedDetail>() {
        let id = request_id.to_str().unwrap_or("");
        match l.dependency {
            Some(dependency) => {
                tracing::warn!(request_id = id, dependency, reason = %l.detail, "dependency unavailable")
            }
            None => tracing::error!(request_id = id, error = %l.detail, "internal error"),
        }
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
