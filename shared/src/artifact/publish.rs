use std::path::PathBuf;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;

use aws_sdk_s3::primitives::ByteStream;

use super::{checksum_file, manifest_key, FileEntry, Manifest};
use crate::error::{Error, Result};
use crate::storage::{s3_error, Storage};

/// The slowest upload rate a file is given time for, on top of `QUIVER_S3_TIMEOUT_MS`: a 128 MB
/// part gets 32 s more than an empty one.
const MIN_UPLOAD_BYTES_PER_S: f64 = 4e6;

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
