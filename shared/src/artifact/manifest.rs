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

/// `<prefix>/manifest.json`: the newest complete version. `M` is what the artifact adds (row
/// counts, schema, document counts): `snapshot::SnapshotMeta`, `search::IndexMeta`, or raw JSON
/// for code that only moves manifests around.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest<M = serde_json::Value> {
    pub version: String,
    pub created_at: String,
    pub files: Vec<FileEntry>,
    /// The versions published before this one, newest first (at most [`HISTORY`]): what
    /// retention keeps besides this one. Anything else under the prefix is an old version or the
    /// orphan of a failed run.
    #[serde(default)]
    pub previous: Vec<String>,
    /// When each of `previous` stopped being current (RFC 3339; the `created_at` of the manifest
    /// that replaced it), in the same order: retention's grace counts from then, not from when
    /// a version was made. Shorter in manifests written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced_at: Vec<String>,
    pub meta: M,
}

/// Published versions a manifest remembers.
pub const HISTORY: usize = 32;

impl<M> Manifest<M> {
    /// Bytes of all the files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

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
        if let Some(bad_version) =
            std::iter::once(v).chain(&self.previous).find(|v| !valid_version(v))
        {
            return bad(format!("version {bad_version:?}"));
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

impl<M: super::Meta> Manifest<M> {
    /// Everything a reader checks before it uses a manifest: [`Manifest::validate`] and the
    /// artifact's own [`super::Meta::check_files`]. [`super::publish`] runs the same check before
    /// it uploads anything, so a manifest that readers would refuse is never published.
    pub fn check_usable(&self, prefix: &str) -> Result<()> {
        self.validate(prefix)?;
        self.meta.check_files(&self.files).map_err(|what| {
            Error::unavailable(
                crate::storage::NAME,
                format!("{} is not a valid manifest: {what}", manifest_key(prefix)),
            )
        })
    }
}

/// Whether `v` may name a version: 1-64 of `[0-9A-Za-z_-]`, so it is one path segment.
pub fn valid_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// When a version made by [`new_version`] was started; `None` for any other name (retention
/// never deletes what it did not name).
pub fn version_time(v: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let (stamp, salt) = v.split_once('-')?;
    if salt.len() != 4 || !salt.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%3fZ").ok().map(|t| t.and_utc())
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
            previous: Vec::new(),
            replaced_at: Vec::new(),
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
        let mut m = manifest(&v, "a", None);
        m.previous = vec!["../x".into()];
        assert!(m.validate("p").is_err(), "the versions retention keeps are checked too");
    }

    #[test]
    fn version_names_carry_their_start_time() {
        let before = chrono::Utc::now() - chrono::Duration::milliseconds(1);
        let v = new_version();
        let t = version_time(&v).expect("a version of ours has a time");
        assert!(t >= before && t <= chrono::Utc::now(), "{v}: {t}");
        assert_eq!(
            version_time("20261130T101010123Z-00af").map(|t| t.timestamp_millis() % 1000),
            Some(123)
        );
        for foreign in ["latest", "20261130T101010123Z", "20261130T101010123Z-zz00", "x-0000"] {
            assert_eq!(version_time(foreign), None, "{foreign}");
        }
    }
}
