//! Function binaries built the way Lambda packaging builds them: one package at a time, so that
//! each links only its own features (a workspace build unifies them, and `search` would link DuckDB).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Where Cargo puts its output: `CARGO_TARGET_DIR`, else `target/` in the checkout.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::env::repo_root().join("target"))
}

/// Where a function's own build is kept: `<target>/alone/<profile>/<name>`, which a workspace
/// build (features unified, so `search` would link DuckDB) never overwrites.
fn alone_path(name: &str, release: bool) -> PathBuf {
    target_dir().join("alone").join(if release { "release" } else { "debug" }).join(name)
}

/// The binary that the last `function_alone` build of `name` left, if there is one.
pub fn built_alone(name: &str, release: bool) -> Option<PathBuf> {
    Some(alone_path(name, release)).filter(|p| p.is_file())
}

/// Builds `functions/<name>` on its own (`cargo build -p NAME`) and returns its binary, kept
/// where [`built_alone`] finds it.
pub fn function_alone(name: &str, release: bool) -> Result<PathBuf> {
    let root = crate::env::repo_root();
    if !root.join("functions").join(name).is_dir() {
        bail!("no function crate functions/{name}");
    }
    let status = std::process::Command::new("cargo")
        .args(["build", "-q", "-p", name])
        .args(release.then_some("--release"))
        .current_dir(&root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build -p {name} failed ({status})");
    }
    let bin = target_dir().join(if release { "release" } else { "debug" }).join(name);
    if !bin.is_file() {
        bail!("cargo build -p {name} left no {}", bin.display());
    }
    let kept = alone_path(name, release);
    std::fs::create_dir_all(kept.parent().expect("a parent"))?;
    let part = kept.with_extension("part");
    std::fs::copy(&bin, &part).with_context(|| format!("copying {}", bin.display()))?;
    std::fs::rename(&part, &kept)?;
    Ok(kept)
}

/// Lays out a Lambda task root in `dir` the way the function's zip has it: the binary as
/// `bootstrap`, and `lib/libduckdb.so` beside it when the binary links DuckDB (from
/// `DUCKDB_LIB_DIR`, which `local/duckdb.sh` sets). Lambda's `LD_LIBRARY_PATH` has `/var/task/lib`.
pub fn task_root(bin: &Path, dir: &Path) -> Result<()> {
    std::fs::copy(bin, dir.join("bootstrap"))
        .with_context(|| format!("copying {}", bin.display()))?;
    let out = std::process::Command::new("readelf")
        .args(["-d", "--wide"])
        .arg(bin)
        .output()
        .context("running readelf (apt-get install binutils)")?;
    if String::from_utf8_lossy(&out.stdout).contains("[libduckdb.so]") {
        let from = std::env::var_os("DUCKDB_LIB_DIR")
            .map(PathBuf::from)
            .context("DUCKDB_LIB_DIR is not set: source local/env.sh (it fetches DuckDB)")?;
        std::fs::create_dir_all(dir.join("lib"))?;
        std::fs::copy(from.join("libduckdb.so"), dir.join("lib/libduckdb.so"))
            .with_context(|| format!("copying libduckdb.so from {}", from.display()))?;
    }
    Ok(())
}
