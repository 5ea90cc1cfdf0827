use std::path::Path;

use tokio::io::AsyncWriteExt;

use super::{manifest_key, FileEntry, Manifest, Meta};
use crate::error::{Error, Result};
use crate::storage::{s3_error, Storage, NAME};

/// The manifest, unless its ETag is still `known`. `Ok(None)` means unchanged; a prefix with no
/// manifest is a 503 (`unpublished`), and one that readers cannot use a 503 (`corrupt`).
pub async fn fetch_manifest<M: Meta>(
    s: &Storage,
    prefix: &str,
    known: Option<&str>,
) -> Result<Option<(Manifest<M>, String)>> {
    match fetch_checked(s, prefix, known).await? {
        Fetched::Unchanged => Ok(None),
        Fetched::Usable(m, etag) => Ok(Some((m, etag))),
        Fetched::Unusable { error, .. } => Err(error),
    }
}

/// What a manifest check found.
pub(super) enum Fetched<M> {
    Unchanged,
    Usable(Manifest<M>, String),
    /// In S3, but not something a reader can use: the version it names (when it names one), its
    /// ETag, and why.
    Unusable {
        version: Option<String>,
        etag: String,
        error: Error,
    },
}

pub(super) async fn fetch_checked<M: Meta>(
    s: &Storage,
    prefix: &str,
    known: Option<&str>,
) -> Result<Fetched<M>> {
    let key = manifest_key(prefix);
    let (body, etag) = match get_raw(s, &key, known).await? {
        Raw::Missing => {
            return Err(Error::unavailable(
                NAME,
                format!("nothing has been published yet: {key} does not exist"),
            ))
        }
        Raw::Unchanged => return Ok(Fetched::Unchanged),
        Raw::Found(body, etag) => (body, etag),
    };
    let checked = serde_json::from_slice::<Manifest<M>>(&body)
        .map_err(|e| Error::unavailable(NAME, format!("{key} is not a valid manifest: {e}")))
        .and_then(|m| m.check_usable(prefix).map(|()| m));
    Ok(match checked {
        Ok(m) => Fetched::Usable(m, etag),
        Err(error) => {
            #[derive(serde::Deserialize)]
            struct Named {
                version: String,
            }
            let version = serde_json::from_slice::<Named>(&body).ok().map(|n| n.version);
            Fetched::Unusable { version, etag, error }
        }
    })
}

/// A small object's body and ETag.
pub(super) enum Raw {
    Missing,
    Unchanged,
    Found(bytes::Bytes, String),
}

/// GETs a small object, unless its ETag is still `known`.
pub(super) async fn get_raw(s: &Storage, key: &str, known: Option<&str>) -> Result<Raw> {
    let res = s
        .client
        .get_object()
        .bucket(&s.bucket)
        .key(key)
        .set_if_none_match(known.map(str::to_string))
        .send()
        .await;
    let out = match res {
        Ok(o) => o,
        Err(e) => {
            return match e.raw_response().map(|r| r.status().as_u16()) {
                Some(304) => Ok(Raw::Unchanged),
                Some(404) => Ok(Raw::Missing),
                _ => Err(s3_error("GetObject", key, e)),
            };
        }
    };
    let etag = out.e_tag().unwrap_or_default().to_string();
    // Some S3 servers ignore If-None-Match and answer 200; the ETag says whether anything changed.
    if known.is_some_and(|k| k == etag) {
        return Ok(Raw::Unchanged);
    }
    let body = out.body.collect().await.map_err(|e| s3_error("GetObject", key, e))?.into_bytes();
    Ok(Raw::Found(body, etag))
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
    let part = RemoveOnDrop(dest.with_extension("part"));
    let mut f = tokio::fs::File::create(&part.0).await.map_err(io)?;
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
        return Err(Error::unavailable(
            NAME,
            format!("{} is corrupt: {size} bytes with checksum {sum}, the manifest says {} bytes with {}", file.key, file.size, file.xxh3_128),
        ));
    }
    tokio::fs::rename(&part.0, dest).await.map_err(io)?;
    Ok(())
}

/// A file that is deleted when this goes out of scope, however that happens: an error, a
/// timeout or a dropped future (a `.part` left behind would fill `/tmp` one failure at a time).
pub(super) struct RemoveOnDrop(pub std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
