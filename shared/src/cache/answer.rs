//! The one path for a cached, versioned answer. A handler names its key (which includes the data
//! version), says what it measured so far, and gives a computation that returns its body with its
//! own timings; [`Cache::answer`] looks the key up, computes on a miss, and collects
//! `Server-Timing` in order: the handler's parts, `cache`, then the computation's parts.

use std::future::Future;
use std::time::Duration;

use axum::response::Response;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

use super::{Cache, Entry, Key, Status};
use crate::error::{Result, ResultExt};
use crate::http::ServerTiming;

/// What a computation returns: its cache entry, and the `Server-Timing` parts it measured
/// (e.g. `duckdb`). A HIT carries no timings: nothing was computed.
#[derive(Debug, Clone)]
pub struct Computed {
    pub entry: Entry,
    pub timings: Vec<(&'static str, Duration)>,
}

impl Computed {
    /// An entry without timings of its own.
    pub fn new(entry: Entry) -> Self {
        Computed { entry, timings: Vec::new() }
    }

    /// `value` as a JSON entry (compressed here, on the computing thread).
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        let body = serde_json::to_vec(value).internal("serializing an answer")?;
        Ok(Computed::new(Entry::new(&body, "application/json")))
    }

    /// Adds a `Server-Timing` part.
    pub fn timed(mut self, name: &'static str, took: Duration) -> Self {
        self.timings.push((name, took));
        self
    }
}

/// A cached answer ready to send: the entry, whether it was a HIT, MISS or BYPASS, the lookup's
/// cost, and the headers it goes out with.
pub struct Answer {
    pub entry: Entry,
    pub status: Status,
    /// How long asking Valkey took (zero with the cache off).
    pub lookup: Duration,
    /// What the computation measured (empty on a HIT).
    pub timings: Vec<(&'static str, Duration)>,
    timing: ServerTiming,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Answer {
    /// Sends the answer with `name: value` too (e.g. the data version it came from).
    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((HeaderName::from_static(name), v));
        }
        self
    }

    /// A header set with [`Answer::with_header`].
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.to_str().ok())
    }

    /// The response for this request: zstd bytes as stored when the client accepts zstd.
    pub fn respond(self, request: &HeaderMap) -> Response {
        let mut res = self.entry.respond(self.status, request, self.timing);
        res.headers_mut().extend(self.headers);
        res
    }
}

impl Cache {
    /// The answer for `key`: from Valkey on a HIT, else `compute`'s (stored for next time). With
    /// `use_cache` false the cache is not asked at all (`x-cache: BYPASS`). `timing` holds what
    /// the handler measured before (e.g. `snapshot`).
    pub async fn answer<F, Fut>(
        &self,
        key: Key,
        use_cache: bool,
        timing: ServerTiming,
        compute: F,
    ) -> Result<Answer>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Computed>>,
    {
        let (computed, status, lookup, mut timing) = if use_cache {
            let (computed, status, lookup) = self.lookup_or_compute(key, compute).await?;
            (computed, status, lookup, timing.add("cache", lookup))
        } else {
            (compute().await?, Status::Bypass, Duration::ZERO, timing)
        };
        for (name, took) in &computed.timings {
            timing = timing.add(name, *took);
        }
        Ok(Answer {
            entry: computed.entry,
            status,
            lookup,
            timings: computed.timings,
            timing,
            headers: Vec::new(),
        })
    }
}
