use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};

use crate::error::{Error, Result};
use crate::http::{
    etag_for, negotiate, zstd_compress, zstd_decompress, AlreadyEncoded, Encoding, ServerTiming,
    MAX_BODY_BYTES, X_CACHE,
};

#[allow(unused_imports)]
use super::*;

/// What every Valkey key starts with: a schema version (`s2`; bump it when the stored entry's
/// format or an answer's shape changes without a new package version) and the package version of
/// the code that wrote it.
pub const KEY_PREFIX: &str = concat!("quiver:s2:v", env!("CARGO_PKG_VERSION"), ":");

/// A cache key: xxh3_128 over every input that can change the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub u128);

impl Key {
    /// `function`, `route`, normalized `params` and `data_version`, separated so that no two
    /// different inputs can run together into the same bytes.
    pub fn new(function: &str, route: &str, params: &str, data_version: &str) -> Self {
        Self::of_parts(&[
            function.as_bytes(),
            route.as_bytes(),
            params.as_bytes(),
            data_version.as_bytes(),
        ])
    }

    /// For bodies as parameters (e.g. `POST /process`): the raw bytes are hashed as they came.
    pub fn of_parts(parts: &[&[u8]]) -> Self {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for p in parts {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        Key(h.digest128())
    }

    /// The Valkey key: the key's hash under [`KEY_PREFIX`], so that during a deploy the old and
    /// the new code never serve each other's bodies.
    pub fn redis_key(&self) -> String {
        format!("{KEY_PREFIX}{:032x}", self.0)
    }
}

/// Whether an answer came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Hit,
    Miss,
    Bypass,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Hit => "HIT",
            Status::Miss => "MISS",
            Status::Bypass => "BYPASS",
        }
    }
}

/// A cached answer: the zstd-compressed body, its ETag (over the uncompressed body) and content type.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub zstd: Bytes,
    pub etag: String,
    pub content_type: String,
}

pub(super) const FORMAT: u8 = 1;

impl Entry {
    /// Compresses a freshly computed body.
    pub fn new(body: &[u8], content_type: &str) -> Self {
        Entry {
            zstd: Bytes::from(zstd_compress(body)),
            etag: etag_for(body).to_str().expect("hex etag").to_string(),
            content_type: content_type.to_string(),
        }
    }

    /// The uncompressed body.
    pub fn body(&self) -> Result<Vec<u8>> {
        zstd_decompress(&self.zstd, MAX_BODY_BYTES)
            .map_err(|e| Error::Internal(format!("cached body does not decompress: {e}")))
    }

    /// `[format][etag len][etag][content-type len][content type][zstd body]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut v =
            Vec::with_capacity(3 + self.etag.len() + self.content_type.len() + self.zstd.len());
        v.push(FORMAT);
        v.push(self.etag.len() as u8);
        v.extend_from_slice(self.etag.as_bytes());
        v.push(self.content_type.len() as u8);
        v.extend_from_slice(self.content_type.as_bytes());
        v.extend_from_slice(&self.zstd);
        v
    }

    pub fn decode(raw: Vec<u8>) -> Option<Self> {
        let raw = Bytes::from(raw);
        if raw.first() != Some(&FORMAT) {
            return None;
        }
        let el = *raw.get(1)? as usize;
        let etag = std::str::from_utf8(raw.get(2..2 + el)?).ok()?.to_string();
        let cl = *raw.get(2 + el)? as usize;
        let start = 3 + el;
        let content_type = std::str::from_utf8(raw.get(start..start + cl)?).ok()?.to_string();
        Some(Entry { zstd: raw.slice(start + cl..), etag, content_type })
    }

    /// The response for a client: zstd bytes as they are when it accepts zstd, otherwise the
    /// plain body (the HTTP middleware then compresses it as the client asks).
    pub fn respond(&self, status: Status, request: &HeaderMap, timing: ServerTiming) -> Response {
        let accepts = negotiate(request.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()));
        let mut res = if accepts == Encoding::Zstd {
            let mut r = (StatusCode::OK, self.zstd.clone()).into_response();
            r.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
            r.extensions_mut().insert(AlreadyEncoded);
            r
        } else {
            match self.body() {
                Ok(b) => (StatusCode::OK, b).into_response(),
                Err(e) => return e.into_response(),
            }
        };
        let h = res.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&self.content_type) {
            h.insert(header::CONTENT_TYPE, v);
        }
        if let Ok(v) = HeaderValue::from_str(&self.etag) {
            h.insert(header::ETAG, v);
        }
        h.insert(X_CACHE, HeaderValue::from_static(status.as_str()));
        timing.apply(&mut res);
        res
    }
}
