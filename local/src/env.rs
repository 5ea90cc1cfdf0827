//! Where local state lives, and `local/.env.local` as the one source of local settings.

use std::path::PathBuf;

/// The checkout's root: `QUIVER_ROOT`, else the checkout that holds the current directory, else
/// the one this binary was built from. One build directory serves several clones (CI clones share
/// `~/.cache/quiver/target`), so the build-time path alone would send `up`/`down` to another
/// clone's pid files.
pub fn repo_root() -> PathBuf {
    if let Some(root) = std::env::var_os("QUIVER_ROOT") {
        return PathBuf::from(root);
    }
    let here = std::env::current_dir().ok().and_then(|d| {
        d.ancestors()
            .find(|a| a.join("local/.env.local").is_file() && a.join("Cargo.toml").is_file())
            .map(PathBuf::from)
    });
    here.unwrap_or_else(|| {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        p.canonicalize().unwrap_or(p)
    })
}

/// Where native services keep their data, logs and pid files (`QUIVER_STATE_DIR`, else `local/.data`).
pub fn state_dir() -> PathBuf {
    std::env::var_os("QUIVER_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("local/.data"))
}

/// The `KEY=VALUE` lines of `local/.env.local`, in order.
pub fn file_vars() -> Vec<(String, String)> {
    let path = repo_root().join("local/.env.local");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

/// Sets every variable of `local/.env.local` that the environment does not already set.
pub fn load() {
    for (k, v) in file_vars() {
        if std::env::var_os(&k).is_none() {
            // SAFETY: called at the start of main, before any other thread exists.
            unsafe { std::env::set_var(k, v) };
        }
    }
}

/// The value of a variable that `load` has set (the environment or `.env.local`).
pub fn var(name: &str) -> anyhow::Result<String> {
    std::env::var(name).map_err(|_| anyhow::anyhow!("{name} is not set (see local/.env.local)"))
}
