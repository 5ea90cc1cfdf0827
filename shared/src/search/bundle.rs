use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use super::{BUNDLE_ZSTD_LEVEL, DEPENDENCY, MAX_BUNDLE_FILES, MAX_UNPACKED_BYTES};
use crate::error::{Error, Result};

/// Packs the index files of `index_dir` (not Tantivy's lock files) into a zstd-compressed tar at
/// `out`, deterministically (sorted names, no timestamps). Returns the bundle's size.
pub fn pack(index_dir: &Path, out: &Path) -> Result<u64> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Error::Internal(format!("{what} {}: {e}", p.display()))
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(index_dir).map_err(|e| io("read", index_dir, e))? {
        let entry = entry.map_err(|e| io("read", index_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false)
            && !name.starts_with(".tantivy-")
            && !name.ends_with(".tmp-write")
        {
            names.push(name);
        }
    }
    names.sort();
    let file = File::create(out).map_err(|e| io("create", out, e))?;
    let enc =
        zstd::stream::Encoder::new(BufWriter::with_capacity(1 << 20, file), BUNDLE_ZSTD_LEVEL)
            .map_err(|e| io("compress", out, e))?;
    let mut tar = tar::Builder::new(enc);
    tar.mode(tar::HeaderMode::Deterministic);
    for name in &names {
        let path = index_dir.join(name);
        let mut f = File::open(&path).map_err(|e| io("open", &path, e))?;
        tar.append_file(name, &mut f).map_err(|e| io("pack", &path, e))?;
    }
    let mut w = tar
        .into_inner()
        .map_err(|e| io("pack", out, e))?
        .finish()
        .map_err(|e| io("compress", out, e))?;
    w.flush().map_err(|e| io("write", out, e))?;
    drop(w);
    Ok(std::fs::metadata(out).map_err(|e| io("stat", out, e))?.len())
}

/// Unpacks a bundle into `dest` (emptied first). Only plain files with plain names are
/// accepted, at most [`MAX_UNPACKED_BYTES`] in all; anything else is a corrupt bundle (503).
pub fn unpack(bundle: &Path, dest: &Path) -> Result<u64> {
    let bad = |why: String| {
        Error::unavailable(DEPENDENCY, format!("bundle {} is unusable: {why}", bundle.display()))
    };
    let _ = std::fs::remove_dir_all(dest);
    std::fs::create_dir_all(dest)
        .map_err(|e| Error::Internal(format!("create {}: {e}", dest.display())))?;
    let file = File::open(bundle).map_err(|e| bad(format!("open: {e}")))?;
    let dec = zstd::stream::Decoder::new(file).map_err(|e| bad(format!("zstd: {e}")))?;
    let mut archive = tar::Archive::new(dec);
    let (mut total, mut files, mut has_meta) = (0u64, 0usize, false);
    for entry in archive.entries().map_err(|e| bad(format!("tar: {e}")))? {
        let mut entry = entry.map_err(|e| bad(format!("tar: {e}")))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(bad("holds something other than plain files".into()));
        }
        let name =
            entry.path().map_err(|e| bad(format!("tar: {e}")))?.to_string_lossy().into_owned();
        let plain = !name.is_empty()
            && name.len() <= 255
            && !name.starts_with("..")
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !plain {
            return Err(bad(format!("holds a file with the name {name:?}")));
        }
        let size = entry.header().size().map_err(|e| bad(format!("tar: {e}")))?;
        total += size;
        files += 1;
        if total > MAX_UNPACKED_BYTES || files > MAX_BUNDLE_FILES {
            return Err(bad(format!(
                "unpacks to more than {MAX_UNPACKED_BYTES} bytes or {MAX_BUNDLE_FILES} files"
            )));
        }
        has_meta |= name == "meta.json";
        let path = dest.join(&name);
        let mut out = BufWriter::with_capacity(
            1 << 20,
            File::create(&path)
                .map_err(|e| Error::Internal(format!("create {}: {e}", path.display())))?,
        );
        let copied = std::io::copy(&mut (&mut entry).take(size), &mut out)
            .map_err(|e| bad(format!("{name}: {e}")))?;
        out.flush().map_err(|e| Error::Internal(format!("write {}: {e}", path.display())))?;
        if copied != size {
            return Err(bad(format!("{name} is truncated")));
        }
    }
    if !has_meta {
        return Err(bad("has no meta.json".into()));
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// Searching
