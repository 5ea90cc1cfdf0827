use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{checksum_file, download, fetch_checked, Fetched, Manifest, PARALLEL_DOWNLOADS};
use crate::error::{Error, Result};
use crate::storage::{Storage, NAME};

/// What a manifest's `meta` tells a reader beyond its files.
pub trait Meta: DeserializeOwned + Clone + Send + Sync + 'static {
    /// Disk a loaded version takes besides its downloaded files (an unpacked index), so that the
    /// free-space check before a download counts it.
    fn unpacked_bytes(&self) -> u64 {
        0
    }

    /// What a reader of this artifact refuses in a manifest's files besides
    /// [`Manifest::validate`]'s checks (a name its loader would not open), as a short reason.
    fn check_files(&self, _files: &[super::FileEntry]) -> std::result::Result<(), String> {
        Ok(())
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
    /// The newest published version (`unknown` when its manifest names none).
    pub newest: String,
    /// Why, in one word: `switching` (still loading, for longer than the bound), `corrupt` (its
    /// manifest or files cannot be used, or it failed to load), `timeout`, `refused`,
    /// `unavailable` (no room in `/tmp`, S3 down) or `internal`. The full error is in the log.
    pub reason: String,
    /// Seconds since this instance first saw the newest version.
    pub waiting_s: u64,
}

/// Every tracker in this process, for `/health` (in `quiver-local serve` every function shares
/// the process; on Lambda, each function's responses carry `x-data-stale`).
static TRACKERS: Mutex<Vec<std::sync::Weak<dyn Staleness>>> = Mutex::new(Vec::new());

trait Staleness: Send + Sync {
    fn stale(&self) -> Option<Stale>;
}

/// The artifacts this process serves older than their newest version, and why.
pub fn stale_artifacts() -> Vec<Stale> {
    let mut trackers = TRACKERS.lock().expect("tracker registry");
    trackers.retain(|t| t.strong_count() > 0);
    trackers.iter().filter_map(|t| t.upgrade()?.stale()).collect()
}

/// The header a response carries when the data behind it is not the newest published version.
pub const X_DATA_STALE: &str = "x-data-stale";

/// A newer version not served after this long (or one check interval, if longer) makes answers
/// stale even while it is still loading: on Lambda a switch runs only while invocations do.
pub const SWITCH_WAIT: Duration = Duration::from_secs(10);

/// The newest version this instance knows of and does not serve yet.
struct Pending {
    version: String,
    since: Instant,
    /// Set once it failed to load (or its manifest cannot be used): the short reason.
    failed: Option<&'static str>,
}

struct CheckState {
    etag: Option<String>,
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
    pending: Mutex<Option<Pending>>,
    /// How long a newer version may wait to be served before answers say they are stale, in ms.
    stale_after_ms: AtomicU64,
}

impl<T: Send + Sync + 'static, M: Meta> Staleness for Tracker<T, M> {
    fn stale(&self) -> Option<Stale> {
        Tracker::stale(self)
    }
}

impl<T: Send + Sync + 'static, M: Meta> Tracker<T, M> {
    /// `dir` is where versions are unpacked (under `/tmp` on Lambda).
    pub fn new(storage: Storage, prefix: &str, dir: PathBuf, check_every: Duration) -> Arc<Self> {
        let tracker = Arc::new(Tracker {
            storage,
            prefix: prefix.to_string(),
            dir,
            check_every,
            born: Instant::now(),
            last_check_ms: AtomicU64::new(u64::MAX),
            current: RwLock::new(None),
            check: Arc::new(tokio::sync::Mutex::new(CheckState { etag: None })),
            pending: Mutex::new(None),
            stale_after_ms: AtomicU64::new(SWITCH_WAIT.max(check_every).as_millis() as u64),
        });
        let weak: std::sync::Weak<dyn Staleness> = Arc::downgrade(&tracker) as _;
        TRACKERS.lock().expect("tracker registry").push(weak);
        tracker
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

    /// How long a newer version may wait to be served before [`Tracker::stale`] says so (by
    /// default [`SWITCH_WAIT`] or one check interval, whichever is longer).
    pub fn set_stale_after(&self, wait: Duration) {
        self.stale_after_ms.store(wait.as_millis() as u64, Ordering::Relaxed);
    }

    /// Why this instance serves older data than the newest version, if it does: that version
    /// failed to load, or has waited longer than the bound of [`Tracker::set_stale_after`].
    pub fn stale(&self) -> Option<Stale> {
        let pending = self.pending.lock().expect("pending lock");
        let p = pending.as_ref()?;
        let waited = p.since.elapsed();
        let reason = match p.failed {
            Some(reason) => reason,
            None if waited.as_millis() as u64 >= self.stale_after_ms.load(Ordering::Relaxed) => {
                "switching"
            }
            None => return None,
        };
        Some(Stale {
            prefix: self.prefix.clone(),
            serving: self.loaded().map(|l| l.manifest.version.clone()),
            newest: p.version.clone(),
            reason: reason.to_string(),
            waiting_s: waited.as_secs(),
        })
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
                        let _ = me.check_now(&mut st, open, false).await;
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
                None => me.check_now(&mut st, open, false).await,
            }
        })
        .await
    }

    /// Checks the manifest now and waits for a new version to load (at init, after a publish in
    /// tests), trying again a version that failed; with a version loaded, an error keeps it
    /// serving and is returned.
    pub async fn refresh<F, Fut>(self: &Arc<Self>, open: F) -> Result<Arc<Loaded<T, M>>>
    where
        F: FnOnce(Manifest<M>, PathBuf) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let me = self.clone();
        crate::background::run_async(async move {
            let mut st = me.check.lock().await;
            me.check_now(&mut st, open, true).await
        })
        .await
    }

    /// `again`: look at the manifest even if its ETag is one already seen (a version that failed
    /// is then tried again); a due check in the background does not.
    async fn check_now<F, Fut>(
        &self,
        st: &mut CheckState,
        open: F,
        again: bool,
    ) -> Result<Arc<Loaded<T, M>>>
    where
        F: FnOnce(Manifest<M>, PathBuf) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let cur = self.loaded();
        let known = if cur.is_some() && !again { st.etag.clone() } else { None };
        let fetched = fetch_checked::<M>(&self.storage, &self.prefix, known.as_deref()).await;
        self.mark();
        let (manifest, etag) = match (fetched, &cur) {
            (Ok(Fetched::Usable(m, etag)), _) => (m, etag),
            (Ok(Fetched::Unchanged), Some(cur)) => return Ok(cur.clone()),
            (Ok(Fetched::Unchanged), None) => {
                return Err(Error::unavailable(
                    NAME,
                    "the manifest did not change and nothing is loaded",
                ))
            }
            (Ok(Fetched::Unusable { version, etag, error }), _) => {
                // Remembered, so it is not fetched again until it changes; the loaded version
                // serves on, and says it is stale.
                let version = version.unwrap_or_else(|| "unknown".into());
                self.see(&version);
                if cur.is_some() {
                    st.etag = Some(etag);
                }
                return Err(self.failed(cur.as_deref(), &version, error));
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
        self.see(&manifest.version);
        let started = Instant::now();
        let version = manifest.version.clone();
        let opened = match self.load(manifest).await {
            Ok((manifest, dir)) => match open(manifest.clone(), dir.clone()).await {
                Ok(value) => Ok(Arc::new(Loaded { manifest, dir, value })),
                Err(e) => {
                    remove_now(&dir).await;
                    Err(e)
                }
            },
            Err(e) => Err(e),
        };
        match opened {
            Ok(loaded) => {
                let previous = self.current.write().expect("tracker lock").replace(loaded.clone());
                st.etag = Some(etag);
                self.pending.lock().expect("pending lock").take_if(|p| p.version == version);
                tracing::info!(prefix = %self.prefix, version = %version, ms = started.elapsed().as_millis() as u64, "switched to a new version");
                self.clean_up(&loaded.dir, previous.as_ref().map(|p| p.dir.as_path())).await;
                Ok(loaded)
            }
            Err(e) => {
                // A version that cannot load (corrupt, too large) is not downloaded again until
                // the manifest changes; one that met a passing fault is tried at the next check.
                if cur.is_some()
                    && !matches!(e.outage(), Some("timeout" | "refused" | "unavailable"))
                {
                    st.etag = Some(etag);
                }
                Err(self.failed(cur.as_deref(), &version, e))
            }
        }
    }

    /// Notes that `version` is the newest published one, from now if it is new to this instance.
    fn see(&self, version: &str) {
        let mut pending = self.pending.lock().expect("pending lock");
        if pending.as_ref().is_none_or(|p| p.version != version) {
            *pending =
                Some(Pending { version: version.to_string(), since: Instant::now(), failed: None });
        }
    }

    /// Records that `version` could not be loaded: an error log the first time, and the stale
    /// state for `/health` and `x-data-stale`.
    fn failed(&self, cur: Option<&Loaded<T, M>>, version: &str, e: Error) -> Error {
        let reason = e.outage().unwrap_or("internal");
        let mut pending = self.pending.lock().expect("pending lock");
        let first = match pending.as_mut().filter(|p| p.version == version) {
            Some(p) => p.failed.replace(reason).is_none(),
            None => {
                let since = Instant::now();
                *pending = Some(Pending { version: version.into(), since, failed: Some(reason) });
                true
            }
        };
        if first {
            match cur.map(|c| &c.manifest.version) {
                Some(s) => {
                    tracing::error!(prefix = %self.prefix, version, serving = %s, error = %e, "a new version could not be loaded; still serving the old one")
                }
                None => {
                    tracing::error!(prefix = %self.prefix, version, error = %e, "the published version could not be loaded")
                }
            }
        }
        e
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
