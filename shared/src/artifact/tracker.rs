use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};

use super::{checksum_file, download, fetch_manifest, Manifest, PARALLEL_DOWNLOADS};
use crate::error::{Error, Result};
use crate::storage::{Storage, NAME};

/// A version loaded by an instance: its manifest and whatever was opened from its files.
pub struct Loaded<T> {
    pub manifest: Manifest,
    pub dir: PathBuf,
    pub value: T,
}

struct CheckState {
    etag: Option<String>,
}

/// Keeps one loaded version of the artifact under `prefix` and follows the manifest.
pub struct Tracker<T> {
    storage: Storage,
    prefix: String,
    dir: PathBuf,
    check_every: Duration,
    born: Instant,
    /// ms since `born` of the last manifest check; `u64::MAX` before the first.
    last_check_ms: AtomicU64,
    current: RwLock<Option<Arc<Loaded<T>>>>,
    check: tokio::sync::Mutex<CheckState>,
}

impl<T: Send + Sync + 'static> Tracker<T> {
    /// `dir` is where versions are unpacked (under `/tmp` on Lambda).
    pub fn new(storage: Storage, prefix: &str, dir: PathBuf, check_every: Duration) -> Self {
        Tracker {
            storage,
            prefix: prefix.to_string(),
            dir,
            check_every,
            born: Instant::now(),
            last_check_ms: AtomicU64::new(u64::MAX),
            current: RwLock::new(None),
            check: tokio::sync::Mutex::new(CheckState { etag: None }),
        }
    }

    fn fresh(&self) -> bool {
        let last = self.last_check_ms.load(Ordering::Relaxed);
        last != u64::MAX
            && (self.born.elapsed().as_millis() as u64).saturating_sub(last)
                < self.check_every.as_millis() as u64
    }

    fn loaded(&self) -> Option<Arc<Loaded<T>>> {
        self.current.read().expect("tracker lock").clone()
    }

    /// Forgets when the manifest was last checked, so the next call checks it (tests, `POST` hooks).
    pub fn expire(&self) {
        self.last_check_ms.store(u64::MAX, Ordering::Relaxed);
    }

    /// The loaded version, checking the manifest first when the last check is older than the
    /// interval. `open` turns a verified download into `T` (an index reader, a DuckDB view).
    pub async fn current<F, Fut>(&self, open: F) -> Result<Arc<Loaded<T>>>
    where
        F: FnOnce(Manifest, PathBuf) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        if self.fresh() {
            if let Some(cur) = self.loaded() {
                return Ok(cur);
            }
        }
        let mut st = self.check.lock().await;
        if self.fresh() {
            if let Some(cur) = self.loaded() {
                return Ok(cur);
            }
        }
        let cur = self.loaded();
        let known = if cur.is_some() { st.etag.clone() } else { None };
        let mark = |t: &Self| {
            t.last_check_ms.store(t.born.elapsed().as_millis() as u64, Ordering::Relaxed)
        };
        let (manifest, etag) = match fetch_manifest(&self.storage, &self.prefix, known.as_deref())
            .await
        {
            Ok(None) => {
                mark(self);
                return cur.ok_or_else(|| {
                    Error::unavailable(NAME, "the manifest did not change and nothing is loaded")
                });
            }
            Ok(Some(found)) => found,
            Err(e) => {
                return match cur {
                    Some(cur) => {
                        tracing::warn!(prefix = %self.prefix, error = %e, version = %cur.manifest.version, "manifest check failed; still serving the loaded version");
                        mark(self);
                        Ok(cur)
                    }
                    None => Err(e),
                };
            }
        };
        if cur.as_ref().is_some_and(|c| c.manifest.version == manifest.version) {
            st.etag = Some(etag);
            mark(self);
            return Ok(cur.expect("checked above"));
        }
        let started = Instant::now();
        match self.load(manifest, open).await {
            Ok(loaded) => {
                let loaded = Arc::new(loaded);
                let previous = self.current.write().expect("tracker lock").replace(loaded.clone());
                st.etag = Some(etag);
                mark(self);
                tracing::info!(prefix = %self.prefix, version = %loaded.manifest.version, ms = started.elapsed().as_millis() as u64, "switched to a new version");
                self.clean_up(&loaded, previous.as_deref()).await;
                Ok(loaded)
            }
            Err(e) => match cur {
                Some(cur) => {
                    tracing::warn!(prefix = %self.prefix, error = %e, version = %cur.manifest.version, "new version failed to load; still serving the old one");
                    mark(self);
                    Ok(cur)
                }
                None => Err(e),
            },
        }
    }

    async fn load<F, Fut>(&self, manifest: Manifest, open: F) -> Result<Loaded<T>>
    where
        F: FnOnce(Manifest, PathBuf) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let dir = self.dir.join(&manifest.version);
        // Files come down in parallel: a snapshot is one file per day, and each GET is a round
        // trip to S3 (tens of ms on AWS), which one after the other would dominate a cold start.
        futures::stream::iter(manifest.files.clone())
            .map(|f| {
                let (dest, storage) = (dir.join(&f.name), self.storage.clone());
                async move {
                    let ok = match tokio::fs::metadata(&dest).await {
                        Ok(m) if m.len() == f.size => checksum_file(&dest)
                            .await
                            .map(|(_, s)| s == f.xxh3_128)
                            .unwrap_or(false),
                        _ => false,
                    };
                    if ok {
                        Ok(())
                    } else {
                        download(&storage, &f, &dest).await
                    }
                }
            })
            .buffer_unordered(PARALLEL_DOWNLOADS)
            .try_collect::<()>()
            .await?;
        let value = open(manifest.clone(), dir.clone()).await?;
        Ok(Loaded { manifest, dir, value })
    }

    /// Removes unpacked versions other than the current and the previous one (which in-flight
    /// requests may still read).
    async fn clean_up(&self, current: &Loaded<T>, previous: Option<&Loaded<T>>) {
        let Ok(mut rd) = tokio::fs::read_dir(&self.dir).await else { return };
        while let Ok(Some(e)) = rd.next_entry().await {
            let p = e.path();
            if p != current.dir && previous.is_none_or(|prev| p != prev.dir) {
                let _ = tokio::fs::remove_dir_all(&p).await;
            }
        }
    }
}
