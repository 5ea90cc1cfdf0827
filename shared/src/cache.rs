//! The response cache in Valkey. Keys are `xxh3_128` over the function, the route, the normalized
//! parameters and the data version, so a new snapshot or index never serves an old answer and
//! nothing needs flushing. Values are the zstd-compressed body with its ETag and content type; a
//! client that accepts zstd gets those bytes as they are. N concurrent misses for one key compute
//! once (in-process coalescing plus a short Valkey lock). A Valkey that is down or slow is bypassed:
//! the answer is computed and served with `x-cache: BYPASS`, never a 5xx.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use redis::AsyncCommands;
use tokio::sync::OnceCell;

use crate::error::{Error, Result};
use crate::http::{
    etag_for, negotiate, zstd_compress, zstd_decompress, Encoding, ServerTiming, MAX_BODY_BYTES,
    X_CACHE,
};
use crate::valkey::Valkey;

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

    pub fn redis_key(&self) -> String {
        format!("quiver:v1:{:032x}", self.0)
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

const FORMAT: u8 = 1;

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

/// How long a MISS waits for another instance that holds the compute lock before computing itself.
const LOCK_WAIT: Duration = Duration::from_millis(2_000);
/// The lock's lifetime in Valkey, so a crashed holder cannot block a key for long.
const LOCK_TTL_MS: u64 = 10_000;

/// The shared cache; `None` inside means no Valkey is configured and every answer is a BYPASS.
pub struct Cache {
    valkey: Option<Arc<Valkey>>,
    ttl: Duration,
    inflight: Mutex<HashMap<Key, Arc<OnceCell<Entry>>>>,
}

/// What a lookup found, with how long the lookup took.
pub struct Lookup {
    pub entry: Entry,
    pub status: Status,
    pub lookup: Duration,
}

impl Cache {
    pub fn new(valkey: Option<Arc<Valkey>>, ttl: Duration) -> Self {
        Cache { valkey, ttl, inflight: Mutex::new(HashMap::new()) }
    }

    /// From the configuration: Valkey when `QUIVER_VALKEY_URL` is set, else always BYPASS.
    pub fn from_config(
        cfg: &crate::Config,
    ) -> std::result::Result<Self, crate::config::ConfigError> {
        let valkey = match cfg.valkey_url {
            Some(_) => Some(Arc::new(Valkey::new(cfg)?)),
            None => None,
        };
        Ok(Self::new(valkey, cfg.cache_ttl))
    }

    /// Connects to Valkey now, waiting at most the connect timeout, so that the first request of a
    /// new instance can already be a HIT instead of a BYPASS. A failure is logged and harmless: the
    /// cache keeps reconnecting in the background.
    pub async fn connect(&self) {
        if let Some(v) = &self.valkey {
            if let Err(e) = v.connection_wait().await {
                tracing::warn!(error = %e, "valkey is not answering at init; the cache is bypassed until it does");
            }
        }
    }

    /// Reads `key`. `Err` means Valkey is unavailable (the caller bypasses), `Ok(None)` a miss.
    pub async fn get(&self, key: &Key) -> Result<Option<Entry>> {
        let v = self
            .valkey
            .as_ref()
            .ok_or_else(|| Error::unavailable(crate::valkey::NAME, "not configured"))?;
        let mut c = v.connection()?;
        let raw: Option<Vec<u8>> = v.run("GET", c.get(key.redis_key())).await?;
        Ok(raw.and_then(Entry::decode))
    }

    /// Stores `entry` under `key` for the configured TTL.
    pub async fn put(&self, key: &Key, entry: &Entry) -> Result<()> {
        let v = self
            .valkey
            .as_ref()
            .ok_or_else(|| Error::unavailable(crate::valkey::NAME, "not configured"))?;
        let mut c = v.connection()?;
        let ttl = self.ttl.as_millis() as u64;
        v.run("SET", c.pset_ex::<_, _, ()>(key.redis_key(), entry.encode(), ttl)).await
    }

    /// The cached answer for `key`, or `compute`'s, stored for next time. Concurrent misses for
    /// one key in this process share one computation; across instances a short Valkey lock makes
    /// the others wait for the first one's answer.
    pub async fn get_or_compute<F, Fut>(&self, key: Key, compute: F) -> Result<Lookup>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Entry>>,
    {
        let started = Instant::now();
        let status = match self.get(&key).await {
            Ok(Some(entry)) => {
                return Ok(Lookup { entry, status: Status::Hit, lookup: started.elapsed() })
            }
            Ok(None) => Status::Miss,
            Err(e) => {
                tracing::debug!(error = %e, "cache bypassed");
                Status::Bypass
            }
        };
        let lookup = started.elapsed();
        // Concurrent callers in this process share one computation, whether Valkey answered or not.
        let cell = {
            let mut map = self.inflight.lock().expect("inflight lock");
            map.entry(key).or_insert_with(|| Arc::new(OnceCell::new())).clone()
        };
        let mut computed_here = false;
        let result = cell
            .get_or_try_init(|| {
                computed_here = true;
                async move {
                    match status {
                        Status::Bypass => compute().await,
                        _ => self.compute_once_across_instances(key, compute).await,
                    }
                }
            })
            .await
            .cloned();
        if computed_here {
            self.inflight.lock().expect("inflight lock").remove(&key);
        }
        // Followers in this process got the leader's answer without touching Valkey again.
        Ok(Lookup { entry: result?, status, lookup })
    }

    async fn compute_once_across_instances<F, Fut>(&self, key: Key, compute: F) -> Result<Entry>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Entry>>,
    {
        let lock_key = format!("{}:lock", key.redis_key());
        let locked = self.try_lock(&lock_key).await;
        if locked == Some(true) {
            // Double-checked: a leader that just finished (and released the lock) has stored its
            // answer, and a caller that missed before that store must not compute it again.
            if let Ok(Some(entry)) = self.get(&key).await {
                self.unlock(&lock_key).await;
                return Ok(entry);
            }
        }
        if locked == Some(false) {
            // Another instance is computing: wait for its answer, bounded.
            let deadline = Instant::now() + LOCK_WAIT;
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
                match self.get(&key).await {
                    Ok(Some(entry)) => return Ok(entry),
                    Ok(None) => continue,
                    Err(_) => break,
                }
            }
        }
        let entry = compute().await?;
        if let Err(e) = self.put(&key, &entry).await {
            tracing::warn!(error = %e, "cache store failed; served without caching");
        }
        if locked == Some(true) {
            self.unlock(&lock_key).await;
        }
        Ok(entry)
    }

    async fn unlock(&self, lock_key: &str) {
        if let Some(v) = &self.valkey {
            if let Ok(mut c) = v.connection() {
                let _ = v.run("DEL", c.del::<_, ()>(lock_key)).await;
            }
        }
    }

    /// `Some(true)` when we hold the lock, `Some(false)` when another does, `None` when Valkey failed.
    async fn try_lock(&self, lock_key: &str) -> Option<bool> {
        let v = self.valkey.as_ref()?;
        let mut c = v.connection().ok()?;
        let set: Option<String> = v
            .run(
                "SET NX",
                redis::cmd("SET")
                    .arg(lock_key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(LOCK_TTL_MS)
                    .query_async(&mut c),
            )
            .await
            .ok()?;
        Some(set.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_their_parts() {
        assert_ne!(Key::new("a", "bc", "", "v1"), Key::new("ab", "c", "", "v1"));
        assert_ne!(Key::new("f", "/r", "x=1", "v1"), Key::new("f", "/r", "x=1", "v2"));
        assert_eq!(Key::new("f", "/r", "x=1", "v1"), Key::new("f", "/r", "x=1", "v1"));
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
}
