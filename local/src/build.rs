//! Function binaries built the way Lambda packaging builds them: one package at a time, so that
//! each links only its own features (a workspace build unifies them, and `search` would link DuckDB).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// Where Cargo puts its output: `CARGO_TARGET_DIR`, else `target/` in the checkout.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::env::repo_root().join("target"))
}

/// Builds `functions/<name>` on its own (`cargo build -p NAME`) and returns its binary.
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
    Ok(bin)
}
