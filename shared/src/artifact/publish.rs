use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::primitives::ByteStream;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    checksum_file, get_raw, manifest_key, version_time, FileEntry, Manifest, Raw, HISTORY,
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
            Error::Conflict(format!(
                "{prefix} is being published by another run ({}) until {} at the latest; retry when it is done",
                held.holder,
                held.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ))
        };
        match put(Err("*".into())).await {
            Ok(_) => {}
            Err(e) if precondition_failed(&e) => {
                let (held, etag) = read_lease(s, &key).await?.ok_or_else(|| {
                    Error::Conflict(format!("{prefix} changed hands just now; retry"))
                })?;
                if held.expires_at > Utc::now() {
                    return Err(busy(&held));
                }
                tracing::warn!(prefix, holder = %held.holder, expired = %held.expires_at, "taking over an expired publisher lease");
                put(Ok(etag)).await.map_err(|e| match precondition_failed(&e) {
                    true => Error::Conflict(format!(
                        "{prefix} was taken by another run just now; retry"
                    )),
                    false => s3_error("PutObject", &key, e),
                })?;
            }
            Err(e) => return Err(s3_error("PutObject", &key, e)),
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
                holder: "an unreadable lease".into(),
                token: String::new(),
                expires_at: DateTime::<Utc>::MIN_UTC,
            }),
            etag,
        ))),
    }
}

/// Deletes the lease if it is still ours (within its lifetime nobody else can have taken it).
async fn release(s: &Storage, key: &str, token: &str) {
    match read_lease(s, key).await {
        Ok(Some((held, _))) if held.token == token => {
            if let Err(e) = s.client.delete_object().bucket(&s.bucket).key(key).send().await {
                tracing::warn!(key, error = %s3_error("DeleteObject", key, e), "releasing the publisher lease failed; it expires on its own");
            }
        }
        Ok(_) => tracing::warn!(key, "the publisher lease was no longer ours at release"),
        Err(e) => {
            tracing::warn!(key, error = %e, "releasing the publisher lease failed; it expires on its own")
        }
    }
}

/// Uploads `files` (name, local path) under `<prefix>/<version>/`, then writes the manifest,
/// last. The manifest only moves forward: if the one in S3 names `version` or a newer one, or
/// changes between reading and writing it (a conditional PUT on its ETag), nothing is published,
/// the uploaded files are deleted, and the answer is a 409. Hold a [`Lease`] around the run.
pub async fn publish<M: Serialize>(
    s: &Storage,
    prefix: &str,
    version: &str,
    files: &[(String, PathBuf)],
    meta: M,
) -> Result<Manifest<M>> {
    let uploaded = upload(s, prefix, version, files).await;
    let entries = match uploaded {
        Ok(entries) => entries,
        Err(e) => {
            discard(s, prefix, version).await;
            return Err(e);
        }
    };
    let key = manifest_key(prefix);
    let (previous, etag) = match get_raw(s, &key, None).await? {
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
                    let mut previous = vec![cur.version];
                    previous.extend(cur.previous);
                    previous.truncate(HISTORY);
                    (previous, Some(etag))
                }
                Err(e) => {
                    tracing::warn!(key, error = %e, "replacing a manifest that does not parse");
                    (Vec::new(), Some(etag))
                }
            }
        }
        Raw::Missing => (Vec::new(), None),
        Raw::Unchanged => unreachable!("no ETag was given"),
    };
    let manifest = Manifest {
        version: version.to_string(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        files: entries,
        previous,
        meta,
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
        let conflict = precondition_failed(&e);
        discard(s, prefix, version).await;
        return Err(match conflict {
            true => Error::Conflict(format!(
                "version {version} was not published: another run wrote {key} meanwhile"
            )),
            false => s3_error("PutObject", &key, e),
        });
    }
    tracing::info!(prefix, version, files = manifest.files.len(), "published");
    Ok(manifest)
}

async fn upload(
    s: &Storage,
    prefix: &str,
    version: &str,
    files: &[(String, PathBuf)],
) -> Result<Vec<FileEntry>> {
    let mut entries = Vec::with_capacity(files.len());
    for (name, path) in files {
        let (size, sum) = checksum_file(path).await?;
        let key = format!("{prefix}/{version}/{name}");
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| Error::Internal(format!("read {}: {e}", path.display())))?;
        // The per-operation limit is sized for small calls; a part gets time for its size too.
        let limit = s.timeout + Duration::from_secs_f64(size as f64 / MIN_UPLOAD_BYTES_PER_S);
        let timeouts =
            TimeoutConfig::builder().operation_timeout(limit).operation_attempt_timeout(limit);
        s.client
            .put_object()
            .bucket(&s.bucket)
            .key(&key)
            .body(body)
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::default().timeout_config(timeouts.build()),
            )
            .send()
            .await
            .map_err(|e| s3_error("PutObject", &key, e))?;
        entries.push(FileEntry { name: name.clone(), key, size, xxh3_128: sum });
    }
    Ok(entries)
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
/// every version older than it, except the newest `keep - 1` it lists as previous, that was
/// started more than `grace` ago. Orphans of failed runs go the same way. Names that are not
/// versions of ours are never touched. Returns what was deleted.
pub async fn retain<M>(
    s: &Storage,
    prefix: &str,
    retention: &Retention,
    manifest: &Manifest<M>,
) -> Result<Vec<String>> {
    let kept: Vec<&str> = std::iter::once(manifest.version.as_str())
        .chain(manifest.previous.iter().map(String::as_str))
        .take(retention.keep.max(1))
        .collect();
    let now = Utc::now();
    let mut deleted = Vec::new();
    for v in versions(s, prefix).await? {
        let old_enough = version_time(&v).is_some_and(|t| {
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
