use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{checksum_file, download, fetch_manifest, Manifest, PARALLEL_DOWNLOADS};
use crate::error::{Error, Result};
use crate::storage::{Storage, NAME};

/// What a manifest's `meta` tells a reader beyond its files.
pub trait Meta: DeserializeOwned + Clone + Send + Sync + 'static {
    /// Disk a loaded version takes besides its downloaded files (an unpacked index), so that the
    /// free-space check before a download counts it.
    fn unpacked_bytes(&self) -> u64 {
        0
    }
}

impl Meta for serde_json::Value {}

/// A version loaded by an instance: its manifest and whatever was opened from its files. Its
/// directory is deleted when the last request using it is done.
pub struct Loaded<T, M = serde_json::Value> {
    pub manifest: Manifest<M>,
    pub dir: PathBuf,
    pub value: T,
}

impl<T, M> Drop for Loaded<T, M> {
    fn drop(&mut self) {
        remove_dir(self.dir.clone());
    }
}

fn remove_dir(dir: PathBuf) {
    let remove = move || match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "removing an old version's files failed")
        }
    };
    crate::background::run(remove);
}

/// Removes what a failed load left, before the failure is reported.
async fn remove_now(dir: &Path) {
    if let Err(e) = tokio::fs::remove_dir_all(dir).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "removing a failed version's files failed");
        }
    }
}

/// Why an instance serves older data than the newest published version.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Stale {
    /// The S3 prefix of the artifact.
    pub prefix: String,
    /// The version being served, if any.
    pub serving: Option<String>,
    /// The newest published version, which could not be loaded.
    pub newest: String,
    /// Why, e.g. "needs 812 MB in /tmp, 300 MB free".
    pub reason: String,
}

/// Every tracker's staleness in this process, for `/health` (in `quiver-local serve` every
/// function shares the process; on Lambda, each function's responses carry `x-data-stale`).
static STALE: Mutex<BTreeMap<String, Stale>> = Mutex::new(BTreeMap::new());

/// The artifacts this process serves older than their newest version, and why.
pub fn stale_artifacts() -> Vec<Stale> {
    STALE.lock().expect("stale registry").values().cloned().collect()
}

/// The header a response carries when the data behind it is not the newest published version.
pub const X_DATA_STALE: &str = "x-data-stale";

struct CheckState {
    etag: Option<String>,
    /// The newest version that failed to load, so its error is logged once, not at every check.
    failed: Option<String>,
}

/// Keeps one loaded version of the artifact under `prefix` and follows the manifest. Requests
/// never wait for a switch: a check that is due starts in the background and requests go on
/// reading the loaded version until the new one is ready, then the next ones get it. Only an
/// instance with nothing loaded waits for its first load.
pub struct Tracker<T, M = serde_json::Value> {
    storage: Storage,
    prefix: String,
    dir: PathBuf,
    check_every: Duration,
    born: Instant,
    /// ms since `born` of the last manifest check; `u64::MAX` before the first.
    last_check_ms: AtomicU64,
    current: RwLock<Option<Arc<Loaded<T, M>>>>,
    check: Arc<tokio::sync::Mutex<CheckState>>,
    stale: Mutex<Option<Stale>>,
}

impl<T: Send + Sync + 'static, M: Meta> Tracker<T, M> {
    /// `dir` is where versions are unpacked (under `/tmp` on Lambda).
    pub fn new(storage: Storage, prefix: &str, dir: PathBuf, check_every: Duration) -> Arc<Self> {
        Arc::new(Tracker {
            storage,
            prefix: prefix.to_string(),
            dir,
            check_every,
            born: Instant::now(),
            last_check_ms: AtomicU64::new(u64::MAX),
            current: RwLock::new(None),
            check: Arc::new(tokio::sync::Mutex::new(CheckState { etag: None, failed: None })),
            stale: Mutex::new(None),
        })
    }

    fn fresh(&self) -> bool {
        let last = self.last_check_ms.load(Ordering::Relaxed);
        last != u64::MAX
            && (self.born.elapsed().as_millis() as u64).saturating_sub(last)
                < self.check_every.as_millis() as u64
    }

    fn mark(&self) {
        self.last_check_ms.store(self.born.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// The version loaded now, without checking the manifest (a load while one is serving is a
    /// switch that runs beside requests).
    pub fn loaded(&self) -> Option<Arc<Loaded<T, M>>> {
        self.current.read().expect("tracker lock").clone()
    }

    /// Forgets when the manifest was last checked, so the next call starts a check.
    pub fn expire(&self) {
        self.last_check_ms.store(u64::MAX, Ordering::Relaxed);
    }

    /// Why this instance serves older data than the newest version, if it does.
    pub fn stale(&self) -> Option<Stale> {
        self.stale.lock().expect("stale lock").clone()
    }

    /// The loaded version. When the last check is older than the interval, a check starts in the
    /// background (one at a time) and this answers at once; with nothing loaded yet, it waits
    /// for the first load. `open` turns a verified download into `T` (an index reader, a DuckDB
    /// table).
    pub async fn current<F, Fut>(self: &Arc<Self>, open: F) -> Result<Arc<Loaded<T, M>>>
    where
        F: FnOnce(Manifest<M>, PathBuf) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        if let Some(cur) = self.loaded() {
            if !self.fresh() {
                if let Ok(mut st) = self.check.clone().try_lock_owned() {
                    let me = self.clone();
                    crate::background::spawn(async move {
                        // Errors are logged and kept in `stale` inside; the old version serves on.
                        let _ = me.check_now(&mut st, open).await;
                    });
                }
            }
            return Ok(cur);
        }
        let me = self.clone();
        crate::background::run_async(async move {
            let mut st = me.check.lock().await;
            match me.loaded() {
                Some(cur) => Ok(cur),
                None => me.check_now(&mut st, open).await,
            }
        })
        .await
    }

    /// Checks the manifest now and waits for a new version to load (at init, after a publish in
    /// tests); with a version loaded, an error keeps it serving and is returned.
    pub async fn refresh<F, Fut>(self: &Arc<Self>, open: F) -> Result<Arc<Loaded<T, M>>>
    where
        F: FnOnce(Manifest<M>, PathBuf) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let me = self.clone();
        crate::background::run_async(async move {
            let mut st = me.check.lock().await;
            me.check_now(&mut st, open).await
        })
        .await
    }

    async fn check_now<F, Fut>(&self, st: &mut CheckState, open: F) -> Result<Arc<Loaded<T, M>>>
    where
        F: FnOnce(Manifest<M>, PathBuf) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let cur = self.loaded();
        let known = if cur.is_some() { st.etag.clone() } else { None };
        let fetched = fetch_manifest::<M>(&self.storage, &self.prefix, known.as_deref()).await;
        self.mark();
        let (manifest, etag) = match (fetched, &cur) {
            (Ok(Some(found)), _) => found,
            (Ok(None), Some(cur)) => return Ok(cur.clone()),
            (Ok(None), None) => {
                return Err(Error::unavailable(
                    NAME,
                    "the manifest did not change and nothing is loaded",
                ))
            }
            (Err(e), Some(cur)) => {
                tracing::warn!(prefix = %self.prefix, error = %e, version = %cur.manifest.version, "manifest check failed; still serving the loaded version");
                return Err(e);
            }
            (Err(e), None) => return Err(e),
        };
        if let Some(cur) = cur.as_ref().filter(|c| c.manifest.version == manifest.version) {
            st.etag = Some(etag);
            return Ok(cur.clone());
        }
        let started = Instant::now();
        let version = manifest.version.clone();
        match self.load(manifest).await {
            Ok((manifest, dir)) => match open(manifest.clone(), dir.clone()).await {
                Ok(value) => {
                    let loaded = Arc::new(Loaded { manifest, dir, value });
                    let previous =
                        self.current.write().expect("tracker lock").replace(loaded.clone());
                    st.etag = Some(etag);
                    st.failed = None;
                    self.set_stale(None);
                    tracing::info!(prefix = %self.prefix, version = %version, ms = started.elapsed().as_millis() as u64, "switched to a new version");
                    self.clean_up(&loaded.dir, previous.as_ref().map(|p| p.dir.as_path())).await;
                    Ok(loaded)
                }
                Err(e) => {
                    remove_now(&dir).await;
                    Err(self.failed(st, cur.as_deref(), &version, e))
                }
            },
            Err(e) => Err(self.failed(st, cur.as_deref(), &version, e)),
        }
    }

    /// Records that `version` could not be loaded: an error log the first time, the stale state
    /// for `/health` and `x-data-stale`.
    fn failed(
        &self,
        st: &mut CheckState,
        cur: Option<&Loaded<T, M>>,
        version: &str,
        e: Error,
    ) -> Error {
        let serving = cur.map(|c| c.manifest.version.clone());
        if st.failed.as_deref() != Some(version) {
            match &serving {
                Some(s) => {
                    tracing::error!(prefix = %self.prefix, version, serving = %s, error = %e, "a new version could not be loaded; still serving the old one")
                }
                None => {
                    tracing::error!(prefix = %self.prefix, version, error = %e, "the published version could not be loaded")
                }
            }
            st.failed = Some(version.to_string());
        }
        self.set_stale(Some(Stale {
            prefix: self.prefix.clone(),
            serving,
            newest: version.to_string(),
            reason: e.to_string(),
        }));
        e
    }

    fn set_stale(&self, stale: Option<Stale>) {
        let mut registry = STALE.lock().expect("stale registry");
        match &stale {
            Some(s) => registry.insert(self.prefix.clone(), s.clone()),
            None => registry.remove(&self.prefix),
        };
        *self.stale.lock().expect("stale lock") = stale;
    }

    /// Downloads a version's files (after checking they fit), verifying each. On failure nothing
    /// of it stays on disk.
    async fn load(&self, manifest: Manifest<M>) -> Result<(Manifest<M>, PathBuf)> {
        let dir = self.dir.join(&manifest.version);
        let needed = manifest.bytes() + manifest.meta.unpacked_bytes();
        let free = free_bytes(&self.dir).await;
        if let Some(free) = free.filter(|&f| f < needed) {
            return Err(Error::unavailable(
                NAME,
                format!(
                    "version {} needs {} MB in {}, only {} MB are free",
                    manifest.version,
                    needed.div_ceil(1 << 20),
                    self.dir.display(),
                    free >> 20
                ),
            ));
        }
        // Files come down in parallel: a snapshot is one file per day, and each GET is a round
        // trip to S3 (tens of ms on AWS), which one after the other would dominate a cold start.
        let fetched = futures::stream::iter(manifest.files.clone())
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
            .await;
        match fetched {
            Ok(()) => Ok((manifest, dir)),
            Err(e) => {
                remove_now(&dir).await;
                Err(e)
            }
        }
    }

    /// Removes whatever else is in the tracker's directory (versions an earlier process left)
    /// but the current version and the previous one, which goes when its last request is done.
    async fn clean_up(&self, current: &Path, previous: Option<&Path>) {
        let Ok(mut rd) = tokio::fs::read_dir(&self.dir).await else { return };
        while let Ok(Some(e)) = rd.next_entry().await {
            let p = e.path();
            if p != current && Some(p.as_path()) != previous {
                remove_dir(p);
            }
        }
    }
}

/// Free bytes on the file system holding `dir` (or its nearest existing ancestor).
async fn free_bytes(dir: &Path) -> Option<u64> {
    let mut probe = dir.to_path_buf();
    tokio::task::spawn_blocking(move || loop {
        match fs4::available_space(&probe) {
            Ok(n) => return Some(n),
            Err(_) if probe.pop() => continue,
            Err(_) => return None,
        }
    })
    .await
    .ok()
    .flatten()
}
