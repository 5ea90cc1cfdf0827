//! Shared by the integration tests of `quiver-local`.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

pub fn quiver_local() -> Command {
    Command::new(env!("CARGO_BIN_EXE_quiver-local"))
}

/// A child in its own process group, killed with all its children when dropped.
pub struct Group(pub Child);

impl Group {
    pub fn spawn(mut cmd: Command) -> Self {
        Group(cmd.process_group(0).spawn().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}")))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: signalling the process group we created.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}
