use std::path::Path;

use tokio::io::AsyncWriteExt;

use super::{manifest_key, FileEntry, Manifest};
use crate::error::{Error, Result};
use crate::storage::{s3_error, Storage, NAME};

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
    m.validate(prefix)?;
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
