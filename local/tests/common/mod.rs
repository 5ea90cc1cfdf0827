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

/// A private set of native services on free ports and its own state directory, so a test can
/// stop and start them without disturbing the shared ones. `down` runs on drop.
pub struct PrivateStack {
    pub state: PathBuf,
    pub pg: u16,
    pub valkey: u16,
    pub s3: u16,
}

impl PrivateStack {
    pub fn new(tag: &str) -> Self {
        let state = std::env::temp_dir().join(format!("quiver-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&state).unwrap();
        use quiver::testing::free_port;
        PrivateStack { state, pg: free_port(), valkey: free_port(), s3: free_port() }
    }

    pub fn database_url(&self) -> String {
        format!("postgres://quiver:quiver@127.0.0.1:{}/quiver", self.pg)
    }

    /// Runs `quiver-local ARGS` against this stack.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        quiver_local()
            .args(args)
            .env("QUIVER_STATE_DIR", &self.state)
            .env("QUIVER_NATIVE", "1")
            .env("QUIVER_DATABASE_URL", self.database_url())
            .env("QUIVER_VALKEY_URL", format!("redis://127.0.0.1:{}", self.valkey))
            .env("AWS_ENDPOINT_URL_S3", format!("http://127.0.0.1:{}", self.s3))
            .output()
            .unwrap()
    }

    /// Like `run`, but panics with the output when the command fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        let text = show(&o);
        assert!(o.status.success(), "quiver-local {} failed: {text}", args.join(" "));
        text
    }
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

pub fn show(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A minimal HTTP/1.1 request without a body, so tests need no client library: the status and
/// the body.
pub fn http(method: &str, url: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(900)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}
