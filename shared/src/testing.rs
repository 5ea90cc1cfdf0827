//! Helpers for integration tests that talk to the real services. A missing service fails the
//! test with a message that says how to start it; nothing is skipped quietly.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::Config;

const HOW: &str = "start the services with `quiver-local up` and export local/.env.local \
                   (`bash local/test.sh` does both)";

/// The variable's value, or a panic naming it.
pub fn service_env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: {HOW}"))
}

fn assert_answers(name: &str, var: &str) {
    let raw = service_env(var);
    let u = url::Url::parse(&raw).unwrap_or_else(|_| panic!("{var} is not a URL"));
    let addr = (u.host_str().unwrap_or("localhost"), u.port_or_known_default().unwrap_or(0))
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("{var}: host does not resolve"));
    if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
        panic!("{name} is not answering at {addr} ({var}): {HOW}");
    }
}

/// The configuration of the local services, after checking that each one answers.
pub fn service_config() -> Config {
    assert_answers("PostgreSQL", "QUIVER_DATABASE_URL");
    assert_answers("Valkey", "QUIVER_VALKEY_URL");
    assert_answers("S3", "AWS_ENDPOINT_URL_S3");
    service_env("QUIVER_BUCKET");
    Config::from_env().expect("the local configuration is valid")
}

/// A TCP port that was free a moment ago, for a private server a test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A private `valkey-server` (or `redis-server`) on `port`, killed when dropped: for tests that
/// stop and restart Valkey without disturbing the shared one. Not installed is a panic that says so.
pub struct PrivateValkey {
    child: std::process::Child,
    pub port: u16,
}

impl PrivateValkey {
    pub fn start(port: u16) -> Self {
        use std::process::{Command, Stdio};
        let bin = ["valkey-server", "redis-server"]
            .into_iter()
            .find(|b| Command::new(b).arg("--version").output().is_ok())
            .expect("valkey-server or redis-server must be installed (apt-get install -y redis-server)");
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        let t = std::time::Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(10), "private {bin} did not start on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        PrivateValkey { child, port }
    }
}

impl Drop for PrivateValkey {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Microseconds in a day.
pub const DAY_US: i64 = 86_400_000_000;

/// A UTC midnight (µs) after the year 3000, far past any seeded or generated data, that no other
/// caller uses: 8-day blocks from a random start per process, then consecutive blocks, so tests
/// that write windows of up to 8 days there never see each other's events.
pub fn unique_midnight_us() -> i64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    const BASE_US: i64 = 32_503_680_000_000_000; // 3000-01-01T00:00:00Z
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = *BASE.get_or_init(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        crate::generate::Rng::new(nanos ^ (std::process::id() as u64) << 32).next_u64()
    });
    let block = base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % 125_000;
    BASE_US + (block as i64 * 8 + 8) * DAY_US
}
