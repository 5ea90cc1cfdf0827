use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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
