//! The response cache in Valkey. Keys are `xxh3_128` over the function, the route, the normalized
//! parameters and the data version, so a new snapshot or index never serves an old answer and
//! nothing needs flushing. Values are the zstd-compressed body with its ETag and content type; a
//! client that accepts zstd gets those bytes as they are. N concurrent misses for one key compute
//! once (in-process coalescing plus a short Valkey lock). A Valkey that is down or slow is bypassed:
//! the answer is computed and served with `x-cache: BYPASS`, never a 5xx.

mod answer;
mod entry;
#[cfg(test)]
mod tests;

pub use answer::*;
pub use entry::*;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use tokio::sync::OnceCell;

use crate::error::{Error, Result};
use crate::valkey::Valkey;

/// How long a MISS waits for another instance that holds the compute lock before computing itself.
const LOCK_WAIT: Duration = Duration::from_millis(2_000);
/// The lock's lifetime in Valkey, so a crashed holder cannot block a key for long.
const LOCK_TTL_MS: u64 = 10_000;

/// A token no other lock holder has: this process's random id and a counter.
fn lock_token() -> String {
    static PROCESS: LazyLock<u128> =
        LazyLock::new(|| u128::from_le_bytes(crate::tls::random_bytes()));
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:032x}-{n}", *PROCESS)
}

/// The shared cache; `None` inside means no Valkey is configured and every answer is a BYPASS.
pub struct Cache {
    valkey: Option<Arc<Valkey>>,
    ttl: Duration,
    inflight: Mutex<HashMap<Key, Arc<OnceCell<Computed>>>>,
    /// Whether a miss takes the Valkey lock (see [`Cache::without_lock`]).
    lock: bool,
}

/// What a lookup found, with how long the lookup took.
pub struct Lookup {
    pub entry: Entry,
    pub status: Status,
    pub lookup: Duration,
}

impl Cache {
    pub fn new(valkey: Option<Arc<Valkey>>, ttl: Duration) -> Self {
        Cache { valkey, ttl, inflight: Mutex::new(HashMap::new()), lock: true }
    }

    /// For answers that cost less to compute than the lock's three extra round trips (`SET NX`,
    /// `GET`, `DEL`), e.g. a search: a miss is then `GET`, compute, `SET`. Concurrent misses in
    /// one process still compute once; two instances may both compute the same answer.
    pub fn without_lock(mut self) -> Self {
        self.lock = false;
        self
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
    /// the others wait for the first one's answer. Handlers use [`Cache::answer`], which also
    /// carries the computation's own timings; this is the same path for a bare [`Entry`].
    pub async fn get_or_compute<F, Fut>(&self, key: Key, compute: F) -> Result<Lookup>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Entry>>,
    {
        let (computed, status, lookup) =
            self.lookup_or_compute(key, || async { Ok(Computed::new(compute().await?)) }).await?;
        Ok(Lookup { entry: computed.entry, status, lookup })
    }

    /// The core of both: the answer, whether it was a HIT, MISS or BYPASS, and how long the
    /// lookup took. On a HIT, or when another instance computed it, `timings` is empty.
    pub(crate) async fn lookup_or_compute<F, Fut>(
        &self,
        key: Key,
        compute: F,
    ) -> Result<(Computed, Status, Duration)>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Computed>>,
    {
        let started = Instant::now();
        let status = match self.get(&key).await {
            Ok(Some(entry)) => {
                return Ok((Computed::new(entry), Status::Hit, started.elapsed()));
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
        Ok((result?, status, lookup))
    }

    async fn compute_once_across_instances<F, Fut>(&self, key: Key, compute: F) -> Result<Computed>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Computed>>,
    {
        // The lock's key and token are built only when a miss takes the lock.
        let (lock_key, token) = match self.lock {
            true => (format!("{}:lock", key.redis_key()), lock_token()),
            false => (String::new(), String::new()),
        };
        let locked = if self.lock { self.try_lock(&lock_key, &token).await } else { None };
        if locked == Some(true) {
            // Double-checked: a leader that just finished (and released the lock) has stored its
            // answer, and a caller that missed before that store must not compute it again.
            if let Ok(Some(entry)) = self.get(&key).await {
                self.unlock(&lock_key, &token).await;
                return Ok(Computed::new(entry));
            }
        }
        if locked == Some(false) {
            // Another instance is computing: wait for its answer, bounded.
            let deadline = Instant::now() + LOCK_WAIT;
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
                match self.get(&key).await {
                    Ok(Some(entry)) => return Ok(Computed::new(entry)),
                    Ok(None) => continue,
                    Err(_) => break,
                }
            }
        }
        let computed = compute().await?;
        if let Err(e) = self.put(&key, &computed.entry).await {
            tracing::warn!(error = %e, "cache store failed; served without caching");
        }
        if locked == Some(true) {
            self.unlock(&lock_key, &token).await;
        }
        Ok(computed)
    }

    /// Releases the lock only if it is still ours: when it expired while we computed and another
    /// instance took it, that instance's lock stays.
    async fn unlock(&self, lock_key: &str, token: &str) {
        const UNLOCK: &str =
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
        if let Some(v) = &self.valkey {
            if let Ok(mut c) = v.connection() {
                let eval =
                    redis::cmd("EVAL").arg(UNLOCK).arg(1).arg(lock_key).arg(token).to_owned();
                let _ = v.run("unlock", eval.query_async::<i64>(&mut c)).await;
            }
        }
    }

    /// `Some(true)` when we hold the lock (under `token`), `Some(false)` when another does, `None`
    /// when Valkey failed.
    async fn try_lock(&self, lock_key: &str, token: &str) -> Option<bool> {
        let v = self.valkey.as_ref()?;
        let mut c = v.connection().ok()?;
        let set: Option<String> = v
            .run(
                "SET NX",
                redis::cmd("SET")
                    .arg(lock_key)
                    .arg(token)
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
