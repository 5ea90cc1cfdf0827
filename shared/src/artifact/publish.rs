use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::primitives::ByteStream;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    checksum_file, get_raw, manifest_key, version_time, FileEntry, Manifest, Meta, Raw, HISTORY,
};
use crate::config::ConfigError;
use crate::error::{Error, Result};
use crate::storage::{s3_error, Storage};

/// The slowest upload rate a file is given time for, on top of `QUIVER_S3_TIMEOUT_MS`: a 128 MB
/// part gets 32 s more than an empty one.
const MIN_UPLOAD_BYTES_PER_S: f64 = 4e6;

/// Which old versions stay in S3 after a publish.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retention {
    /// `QUIVER_KEEP_VERSIONS` (default 3): the published versions kept, the current one included.
    pub keep: usize,
    /// `QUIVER_RETAIN_GRACE_S` (default 3600): no version started less than this long ago is
    /// deleted, whatever `keep` says, so a run still uploading (or an instance still downloading)
    /// never loses its files. Longer than the longest publishing run.
    pub grace: Duration,
}

impl Retention {
    pub fn from_vars(vars: &HashMap<String, String>) -> std::result::Result<Self, ConfigError> {
        let num = |var, default, range| crate::config::setting_in(vars, var, default, range);
        Ok(Retention {
            keep: num("QUIVER_KEEP_VERSIONS", 3, 1..=1000)? as usize,
            grace: Duration::from_secs(num("QUIVER_RETAIN_GRACE_S", 3600, 0..=604_800)?),
        })
    }
}

fn precondition_failed<E>(e: &aws_sdk_s3::error::SdkError<E, HttpResponse>) -> bool {
    e.raw_response().is_some_and(|r| r.status().as_u16() == 412)
}

/// The right to publish under a prefix, held by one run at a time across every instance: the
/// object `<prefix>/publisher.lease`, created with a conditional PUT (`If-None-Match: *`) and
/// taken over only once it has expired (`If-Match` on its ETag). The holder gives it back when
/// done; one that dies leaves it to expire after `ttl`.
#[derive(Debug)]
pub struct Lease {
    storage: Storage,
    key: String,
    token: String,
    released: bool,
}

#[derive(Serialize, Deserialize)]
struct LeaseBody {
    /// What holds it (`snapshot export`): the only part a 409 shows.
    #[serde(default)]
    what: String,
    /// Where it runs (the Lambda log stream, or the process), for the log only.
    holder: String,
    token: String,
    expires_at: DateTime<Utc>,
}

impl Lease {
    pub fn key(prefix: &str) -> String {
        format!("{prefix}/publisher.lease")
    }

    /// Takes the lease for `ttl`, or answers 409 naming who holds it and until when. `what`
    /// (e.g. "snapshot export") goes into the lease and the 409.
    pub async fn acquire(s: &Storage, prefix: &str, what: &str, ttl: Duration) -> Result<Lease> {
        let key = Self::key(prefix);
        let token = format!("{}-{}", super::new_version(), std::process::id());
        let here = std::env::var("AWS_LAMBDA_LOG_STREAM_NAME")
            .unwrap_or_else(|_| format!("pid {}", std::process::id()));
        let body = LeaseBody {
            what: what.to_string(),
            holder: format!("{what} on {here}"),
            token: token.clone(),
            expires_at: Utc::now() + ttl,
        };
        let body = serde_json::to_vec(&body).expect("a lease serializes");
        let put = |cond: Result<String, String>| {
            let req = s.client.put_object().bucket(&s.bucket).key(&key).body(body.clone().into());
            match cond {
                Ok(etag) => req.if_match(etag),
                Err(any) => req.if_none_match(any),
            }
            .send()
        };
        let busy = |held: &LeaseBody| {
            tracing::info!(prefix, holder = %held.holder, expires_at = %held.expires_at, "the publisher lease is held by another run");
            Error::Conflict(format!(
                "{prefix} is being published by another run ({}) until {} at the latest; retry when it is done",
                if held.what.is_empty() { "another publisher" } else { &held.what },
                held.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ))
        };
        if let Err(e) = put(Err("*".into())).await {
            // Any failure reads the lease: S3 may have applied the PUT and lost its reply (the
            // SDK's retry then meets 412, or the lost reply is the error); then it is ours.
            let held = read_lease(s, &key).await?;
            match held {
                Some((held, _)) if held.token == token => {}
                _ if !precondition_failed(&e) => return Err(s3_error("PutObject", &key, e)),
                None => {
                    return Err(Error::Conflict(format!("{prefix} changed hands just now; retry")))
                }
                Some((held, _)) if held.expires_at > Utc::now() => return Err(busy(&held)),
                Some((held, etag)) => {
                    tracing::warn!(prefix, holder = %held.holder, expired = %held.expires_at, "taking over an expired publisher lease");
                    match put(Ok(etag)).await {
                        // The read-back below says whose write it was.
                        Err(e) if !precondition_failed(&e) => {
                            return Err(s3_error("PutObject", &key, e))
                        }
                        _ => {}
                    }
                }
            }
        }
        // Read back: an S3 server whose conditional PUT is not atomic lets two runs through; the
        // one whose write landed last holds the lease.
        match read_lease(s, &key).await? {
            Some((held, _)) if held.token == token => {}
            Some((held, _)) => return Err(busy(&held)),
            None => return Err(Error::Conflict(format!("{prefix} changed hands just now; retry"))),
        }
        tracing::info!(prefix, what, ttl_s = ttl.as_secs(), "publisher lease taken");
        Ok(Lease { storage: s.clone(), key, token, released: false })
    }

    /// Gives the lease back (also done, in the background, when a `Lease` is dropped).
    pub async fn release(mut self) {
        self.released = true;
        release(&self.storage, &self.key, &self.token).await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (s, key, token) = (self.storage.clone(), self.key.clone(), self.token.clone());
            rt.spawn(async move { release(&s, &key, &token).await });
        }
    }
}

async fn read_lease(s: &Storage, key: &str) -> Result<Option<(LeaseBody, String)>> {
    match get_raw(s, key, None).await? {
        Raw::Missing => Ok(None),
        Raw::Unchanged => unreachable!("no ETag was given"),
        // An unreadable lease is treated as expired, so a bad write cannot block publishing.
        Raw::Found(body, etag) => Ok(Some((
            serde_json::from_slice(&body).unwrap_or(LeaseBody {
                what: String::new(),
                holder: "an unreadable lease".into(),
                token: String::new(),
                expires_at: DateTime::<Utc>::MIN_UTC,
            }),
            etag,
        ))),
    }
}

/// Deletes the lease if it is still ours: conditionally (`If-Match` on the ETag it was read
/// with), so a run that took it over between the read and the delete keeps it.
async fn release(s: &Storage, key: &str, token: &str) {
    match read_lease(s, key).await {
        Ok(Some((held, etag))) if held.token == token => {
            let deleted =
                s.client.delete_object().bucket(&s.bucket).key(key).if_match(etag).send().await;
            match deleted {
                Ok(_) => {}
                Err(e) if precondition_failed(&e) => {
                    tracing::warn!(key, "the publisher lease changed hands before its release; left to its new holder")
                }
                Err(e) => {
                    tracing::warn!(key, error = %s3_error("DeleteObject", key, e), "releasing the publisher lease failed; it expires on its own")
                }
            }
        }
        Ok(_) => tracing::warn!(key, "the publisher lease was no longer ours at release"),
        Err(e) => {
            tracing::warn!(key, error = %e, "releasing the publisher lease failed; it expires on its own")
        }
    }
}

/// Uploads `files` (name, local path) under `<prefix>/<version>/`, then writes the manifest,
/// last. The manifest is checked with the readers' own check ([`Manifest::check_usable`]) before
/// anything is uploaded: one that readers would refuse is a 500 and publishes nothing. The
/// manifest only moves forward: if the one in S3 names `version` or a newer one, or changes
/// between reading and writing it (a conditional PUT on its ETag), nothing is published, the
/// uploaded files are deleted, and the answer is a 409. Hold a [`Lease`] around the run.
pub async fn publish<M: Meta + Serialize>(
    s: &Storage,
    prefix: &str,
    version: &str,
    files: &[(String, PathBuf)],
    meta: M,
) -> Result<Manifest<M>> {
    let mut manifest = Manifest {
        version: version.to_string(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        files: entries(prefix, version, files).await?,
        previous: Vec::new(),
        replaced_at: Vec::new(),
        meta,
    };
    manifest.check_usable(prefix).map_err(|e| {
        Error::Internal(format!("refusing to publish {prefix} version {version}: {e}"))
    })?;
    if let Err(e) = upload(s, &manifest.files, files).await {
        discard(s, prefix, version).await;
        return Err(e);
    }
    let key = manifest_key(prefix);
    let etag = match get_raw(s, &key, None).await? {
        Raw::Found(body, etag) => {
            match serde_json::from_slice::<Manifest<serde::de::IgnoredAny>>(&body) {
                Ok(cur) if cur.version.as_str() >= version => {
                    discard(s, prefix, version).await;
                    return Err(Error::Conflict(format!(
                        "version {version} was not published: {key} already names {}, which is newer",
                        cur.version
                    )));
                }
                Ok(cur) => {
                    manifest.previous = std::iter::once(cur.version).chain(cur.previous).collect();
                    manifest.previous.truncate(HISTORY);
                    manifest.replaced_at = std::iter::once(manifest.created_at.clone())
                        .chain(cur.replaced_at)
                        .take(manifest.previous.len())
                        .collect();
                    Some(etag)
                }
                Err(e) => {
                    tracing::warn!(key, error = %e, "replacing a manifest that does not parse");
                    Some(etag)
                }
            }
        }
        Raw::Missing => None,
        Raw::Unchanged => unreachable!("no ETag was given"),
    };
    let body = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
    let put = s
        .client
        .put_object()
        .bucket(&s.bucket)
        .key(&key)
        .content_type("application/json")
        .body(ByteStream::from(body));
    let put = match etag {
        Some(etag) => put.if_match(etag),
        None => put.if_none_match("*"),
    };
    if let Err(e) = put.send().await {
        // S3 may have applied the PUT and lost its reply (the SDK's retry then meets 412, or the
        // lost reply is the error): the manifest says whether this version is published.
        let conflict = precondition_failed(&e);
        match manifest_names(s, &key, version).await {
            Some(true) => {
                tracing::warn!(prefix, version, error = %s3_error("PutObject", &key, e), "the manifest PUT failed, but the manifest names this version: published")
            }
            Some(false) => {
                discard(s, prefix, version).await;
                return Err(match conflict {
                    true => Error::Conflict(format!(
                        "version {version} was not published: another run wrote {key} meanwhile"
                    )),
                    false => s3_error("PutObject", &key, e),
                });
            }
            // Unknown: its files stay (retention removes them if it was not published).
            None => return Err(s3_error("PutObject", &key, e)),
        }
    }
    tracing::info!(prefix, version, files = manifest.files.len(), "published");
    Ok(manifest)
}

/// Whether the manifest at `key` names `version` now; `None` when it cannot be read.
async fn manifest_names(s: &Storage, key: &str, version: &str) -> Option<bool> {
    match get_raw(s, key, None).await {
        Ok(Raw::Found(body, _)) => Some(
            serde_json::from_slice::<Manifest<serde::de::IgnoredAny>>(&body)
                .is_ok_and(|m| m.version == version),
        ),
        Ok(_) => Some(false),
        Err(_) => None,
    }
}

/// The manifest entries of `files` (name, local path) as `version` under `prefix`: key, size and
/// checksum of each.
async fn entries(
    prefix: &str,
    version: &str,
    files: &[(String, PathBuf)],
) -> Result<Vec<FileEntry>> {
    let mut entries = Vec::with_capacity(files.len());
    for (name, path) in files {
        let (size, sum) = checksum_file(path).await?;
        let key = format!("{prefix}/{version}/{name}");
        entries.push(FileEntry { name: name.clone(), key, size, xxh3_128: sum });
    }
    Ok(entries)
}

/// Uploads each local file of `files` to its entry's key.
async fn upload(s: &Storage, entries: &[FileEntry], files: &[(String, PathBuf)]) -> Result<()> {
    for (entry, (_, path)) in entries.iter().zip(files) {
        let key = &entry.key;
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| Error::Internal(format!("read {}: {e}", path.display())))?;
        // The per-operation limit is sized for small calls; a part gets time for its size too.
        let limit = s.timeout + Duration::from_secs_f64(entry.size as f64 / MIN_UPLOAD_BYTES_PER_S);
        let timeouts =
            TimeoutConfig::builder().operation_timeout(limit).operation_attempt_timeout(limit);
        s.client
            .put_object()
            .bucket(&s.bucket)
            .key(key)
            .body(body)
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::default().timeout_config(timeouts.build()),
            )
            .send()
            .await
            .map_err(|e| s3_error("PutObject", key, e))?;
    }
    Ok(())
}

/// Deletes what a run that did not publish uploaded; what this misses, retention removes later.
async fn discard(s: &Storage, prefix: &str, version: &str) {
    if let Err(e) = delete_version(s, prefix, version).await {
        tracing::warn!(prefix, version, error = %e, "removing an unpublished version failed; retention removes it later");
    }
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

async fn delete_version(s: &Storage, prefix: &str, version: &str) -> Result<()> {
    let mut token = None;
    loop {
        let listed = s
            .client
            .list_objects_v2()
            .bucket(&s.bucket)
            .prefix(format!("{prefix}/{version}/"))
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| s3_error("ListObjectsV2", version, e))?;
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
        match listed.next_continuation_token() {
            Some(t) => token = Some(t.to_string()),
            None => return Ok(()),
        }
    }
}

/// Deletes the versions under `prefix` that `manifest` (the one just published) no longer needs:
/// every version older than it, except the newest `keep - 1` it lists as previous, that stopped
/// being current more than `grace` ago (a reader may still be downloading it until then). Orphans
/// of failed runs, never current, count from when they were started. Names that are not
/// versions of ours are never touched. Returns what was deleted.
pub async fn retain<M>(
    s: &Storage,
    prefix: &str,
    retention: &Retention,
    manifest: &Manifest<M>,
) -> Result<Vec<String>> {
    // Never delete on the word of a manifest that readers would refuse.
    manifest.validate(prefix)?;
    let kept: Vec<&str> = std::iter::once(manifest.version.as_str())
        .chain(manifest.previous.iter().map(String::as_str))
        .take(retention.keep.max(1))
        .collect();
    let now = Utc::now();
    let mut deleted = Vec::new();
    for v in versions(s, prefix).await? {
        let since = match manifest.previous.iter().position(|p| *p == v) {
            Some(i) => replaced_at(manifest, i),
            None => version_time(&v),
        };
        let old_enough = since.is_some_and(|t| {
            now.signed_duration_since(t).to_std().is_ok_and(|age| age >= retention.grace)
        });
        if kept.contains(&v.as_str()) || v >= manifest.version || !old_enough {
            continue;
        }
        delete_version(s, prefix, &v).await?;
        tracing::info!(prefix, version = %v, "deleted old version");
        deleted.push(v);
    }
    Ok(deleted)
}

/// When `manifest.previous[i]` stopped being current, at the latest. Where the manifest does not
/// record it (written before `replaced_at`), it was replaced when its successor was published
/// (for the newest, this manifest's `created_at`),
/// which was before the run after that successor started (one run at a time holds the lease):
/// the start of the version two places newer, or `None` (never old enough) when there is none.
fn replaced_at<M>(manifest: &Manifest<M>, i: usize) -> Option<DateTime<Utc>> {
    let parse = |at: &str| DateTime::parse_from_rfc3339(at).ok().map(|t| t.with_timezone(&Utc));
    if let Some(at) = manifest.replaced_at.get(i) {
        return parse(at);
    }
    match i {
        0 => parse(&manifest.created_at),
        1 => version_time(&manifest.version),
        _ => version_time(&manifest.previous[i - 2]),
    }
}
