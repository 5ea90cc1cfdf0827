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

impl Manifest {
    /// Checks every value that becomes a local path or an S3 key, before any is used: a manifest
    /// is data from S3. The version is 1–64 of `[0-9A-Za-z_-]`; a file name is relative, of
    /// segments of `[0-9A-Za-z=._-]` that are not `.` or `..`; its key is `<prefix>/<version>/<name>`;
    /// its checksum is 32 hex digits. Anything else is a 503 (`corrupt`) naming the value.
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let bad = |what: String| {
            Err(Error::unavailable(
                crate::storage::NAME,
                format!("{} is not a valid manifest: {what}", manifest_key(prefix)),
            ))
        };
        let v = &self.version;
        if v.is_empty()
            || v.len() > 64
            || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return bad(format!("version {v:?}"));
        }
        for f in &self.files {
            let segment_ok = |seg: &str| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"=._-".contains(&b))
            };
            if f.name.len() > 255 || !f.name.split('/').all(segment_ok) {
                return bad(format!("file name {:?}", f.name));
            }
            if f.key != format!("{prefix}/{v}/{}", f.name) {
                return bad(format!("key {:?} of {:?}", f.key, f.name));
            }
            if f.xxh3_128.len() != 32 || !f.xxh3_128.bytes().all(|b| b.is_ascii_hexdigit()) {
                return bad(format!("checksum {:?} of {:?}", f.xxh3_128, f.name));
            }
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(version: &str, name: &str, key: Option<&str>) -> Manifest {
        Manifest {
            version: version.into(),
            created_at: String::new(),
            files: vec![FileEntry {
                name: name.into(),
                key: key.map_or_else(|| format!("p/{version}/{name}"), str::to_string),
                size: 1,
                xxh3_128: "0".repeat(32),
            }],
            meta: serde_json::Value::Null,
        }
    }

    /// Issue 16, item 6: manifest values become paths and keys only after they are checked.
    #[test]
    fn manifests_with_names_that_escape_are_refused() {
        let v = new_version();
        assert!(manifest(&v, "dt=2026-10-01/part-00000.parquet", None).validate("p").is_ok());
        assert!(manifest(&v, "index.tar.zst", None).validate("p").is_ok());
        for (version, name) in [
            ("../../etc", "a"),
            ("", "a"),
            ("v/1", "a"),
            (v.as_str(), "../../../tmp/x"),
            (v.as_str(), "/etc/passwd"),
            (v.as_str(), "a//b"),
            (v.as_str(), "a/./b"),
            (v.as_str(), "a b"),
            (v.as_str(), "a\\b"),
        ] {
            let e = manifest(version, name, None).validate("p").unwrap_err();
            assert_eq!(e.outage(), Some("corrupt"), "{version:?} {name:?}: {e}");
        }
        let elsewhere = manifest(&v, "a", Some("other/prefix/a"));
        assert!(elsewhere.validate("p").is_err(), "a key outside the version is refused");
        let mut m = manifest(&v, "a", None);
        m.files[0].xxh3_128 = "zz".into();
        assert!(m.validate("p").is_err());
    }
}
