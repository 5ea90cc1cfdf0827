//! Versioned artifacts in S3 (Parquet snapshots, index bundles): files go under
//! `<prefix>/<version>/`, then `<prefix>/manifest.json` is written last, so a half-published
//! version is never visible. Readers keep one loaded version per instance, check the manifest at
//! most every N seconds with a conditional GET (comparing the ETag too: some S3 servers ignore
//! `If-None-Match`), verify every file's size and checksum, and switch atomically. A broken new
//! version keeps the old one serving; with nothing loaded it is a 503 with the reason.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::storage::{s3_error, Storage, NAME};

/// Files of one version downloaded at once.
const PARALLEL_DOWNLOADS: usize = 16;

/// One published file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    /// The file's name inside the version, e.g. `dt=2026-10-01/part-0.parquet`.
    pub name: String,
    pub key: String,
    pub size: u64,
    /// xxh3-128 of the content, hex: fast enough to check every download.
    pub xxh3_128: String,
}

/// `<prefix>/manifest.json`: the newest complete version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub version: String,
    pub created_at: String,
    pub files: Vec<FileEntry>,
    /// What the artifact adds: row counts, schema, document counts.
    #[serde(default)]
    pub meta: serde_json::Value,
}

/// A sortable version name: the UTC time to the millisecond plus a random suffix.
pub fn new_version() -> String {
    let now = chrono::Utc::now();
    let salt = crate::generate::Rng::new(
        now.timestamp_nanos_opt().unwrap_or(0) as u64 ^ std::process::id() as u64,
    )
    .next_u64();
    format!("{}-{:04x}", now.format("%Y%m%dT%H%M%S%3fZ"), salt & 0xffff)
}

pub fn manifest_key(prefix: &str) -> String {
    format!("{prefix}/manifest.json")
}

/// xxh3-128 and size of a local file, read in chunks.
pub async fn checksum_file(path: &Path) -> Result<(u64, String)> {
    use tokio::io::AsyncReadExt;
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::Internal(format!("open {}: {e}", path.display())))?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .await
            .map_err(|e| Error::Internal(format!("read {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, format!("{:032x}", h.digest128())))
}

/// Uploads `files` (name, local path) under `<prefix>/<version>/`, then the manifest, last.
pub async fn publish(
    s: &Storage,
    prefix: &str,
    version: &str,
    files: &[(String, PathBuf)],
    meta: serde_json::Value,
) -> Result<Manifest> {
    let mut entries = Vec::with_capacity(files.len());
    for (name, path) in files {
        let (size, sum) = checksum_file(path).await?;
        let key = format!("{prefix}/{version}/{name}");
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| Error::Internal(format!("read {}: {e}", path.display())))?;
        s.client
            .put_object()
            .bucket(&s.bucket)
            .key(&key)
            .body(body)
            .send()
            .await
            .map_err(|e| s3_error("PutObject", &key, e))?;
        entries.push(FileEntry { name: name.clone(), key, size, xxh3_128: sum });
    }
    let manifest = Manifest {
        version: version.to_string(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        files: entries,
        meta,
    };
    let key = manifest_key(prefix);
    let body = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
    s.client
        .put_object()
        .bucket(&s.bucket)
        .key(&key)
        .content_type("application/json")
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(|e| s3_error("PutObject", &key, e))?;
    tracing::info!(prefix, version, files = manifest.files.len(), "published");
    Ok(manifest)
}

/// The versions under `prefix`, oldest first.
pub async fn versions(s: &Storage, prefix: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = s
            .client
            .list_objects_v2()
            .bucket(&s.bucket)
            .prefix(format!("{prefix}/"))
            .delimiter("/")
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| s3_error("ListObjectsV2", prefix, e))?;
        for p in page.common_prefixes() {
            if let Some(v) = p.prefix().and_then(|p| p.strip_prefix(&format!("{prefix}/"))) {
                out.push(v.trim_end_matches('/').to_string());
            }
        }
        match page.next_continuation_token() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    out.sort();
    Ok(out)
}

/// Deletes every version but the newest `keep` (and never `current`). Returns what was deleted.
pub async fn retain(s: &Storage, prefix: &str, keep: usize, current: &str) -> Result<Vec<String>> {
    let all = versions(s, prefix).await?;
    let cut = all.len().saturating_sub(keep.max(1));
    let mut deleted = Vec::new();
    for v in all.into_iter().take(cut).filter(|v| v != current) {
        let listed = s
            .client
            .list_objects_v2()
            .bucket(&s.bucket)
            .prefix(format!("{prefix}/{v}/"))
            .send()
            .await
            .map_err(|e| s3_error("ListObjectsV2", &v, e))?;
        for o in listed.contents() {
            if let Some(k) = o.key() {
                s.client
                    .delete_object()
                    .bucket(&s.bucket)
                    .key(k)
                    .send()
                    .await
                    .map_err(|e| s3_error("DeleteObject", k, e))?;
            }
        }
        tracing::info!(prefix, version = %v, "deleted old version");
        deleted.push(v);
    }
    Ok(deleted)
}

/// The manifest, unless its ETag is still `known`. `Ok(None)` means unchanged.
pub async fn fetch_manifest(
    s: &Storage,
    prefix: &str,
    known: Option<&str>,
) -> Result<Option<(Manifest, String)>> {
    let key = manifest_key(prefix);
    let res = s
        .client
        .get_object()
        .bucket(&s.bucket)
        .key(&key)
        .set_if_none_match(known.map(str::to_string))
        .send()
        .await;
    let out = match res {
        Ok(o) => o,
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            if status == Some(304) {
                return Ok(None);
            }
            if status == Some(404) {
                return Err(Error::unavailable(
                    NAME,
                    format!("nothing has been published yet: {key} does not exist"),
                ));
            }
            return Err(s3_error("GetObject", &key, e));
        }
    };
    let etag = out.e_tag().unwrap_or_default().to_string();
    // Some S3 servers ignore If-None-Match and answer 200; the ETag says whether anything changed.
    if known.is_some_and(|k| k == etag) {
        return Ok(None);
    }
    let body = out.body.collect().await.map_err(|e| s3_error("GetObject", &key, e))?.into_bytes();
    let m: Manifest = serde_json::from_slice(&body)
        .map_err(|e| Error::unavailable(NAME, format!("{key} is not a valid manifest: {e}")))?;
    Ok(Some((m, etag)))
}

/// Downloads `file` to `dest`, checking its size and checksum; a mismatch is a 503 naming the key.
pub async fn download(s: &Storage, file: &FileEntry, dest: &Path) -> Result<()> {
    let io = |e: std::io::Error| Error::Internal(format!("write {}: {e}", dest.display()));
    if let Some(dir) = dest.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
    }
    let mut o = s
        .client
        .get_object()
        .bucket(&s.bucket)
        .key(&file.key)
        .send()
        .await
        .map_err(|e| s3_error("GetObject", &file.key, e))?;
    let part = dest.with_extension("part");
    let mut f = tokio::fs::File::create(&part).await.map_err(io)?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut size = 0u64;
    while let Some(chunk) =
        o.body.try_next().await.map_err(|e| s3_error("GetObject", &file.key, e))?
    {
        h.update(&chunk);
        size += chunk.len() as u64;
        f.write_all(&chunk).await.map_err(io)?;
    }
    f.flush().await.map_err(io)?;
    drop(f);
    let sum = format!("{:032x}", h.digest128());
    if size != file.size || sum != file.xxh3_128 {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(Error::unavailable(
            NAME,
            format!("{} is corrupt: {size} bytes with checksum {sum}, the manifest says {} bytes with {}", file.key, file.size, file.xxh3_128),
        ));
    }
    tokio::fs::rename(&part, dest).await.map_err(io)?;
    Ok(())
}

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
