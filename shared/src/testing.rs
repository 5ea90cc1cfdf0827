//! Helpers for integration tests that talk to the real services, and [`TestApp`], the harness
//! every test calls a function through. A missing service fails the test with a message that
//! says how to start it; nothing is skipped quietly.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::Config;

mod app;
pub use app::{Reply, TestApp};

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
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A private `valkey-server` (or `redis-server`) on `port`, killed when dropped: for tests that
/// stop and restart Valkey without disturbing the shared one. Not installed is a panic that says so.
pub struct PrivateValkey {
    child: std::process::Child,
    pub port: u16,
}

impl PrivateValkey {
    pub fn start(port: u16) -> Self {
        Self::spawn(port, &["--port", &port.to_string()])
    }

    /// TLS only (`rediss://localhost:port`), with `certs`' server certificate; clients need no certificate.
    pub fn start_tls(port: u16, certs: &TestCerts) -> Self {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        Self::spawn(
            port,
            &[
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--tls-cert-file",
                &path(&certs.cert),
                "--tls-key-file",
                &path(&certs.key),
                "--tls-ca-cert-file",
                &path(&certs.ca),
                "--tls-auth-clients",
                "no",
            ],
        )
    }

    fn spawn(port: u16, listen: &[&str]) -> Self {
        let bin = ["valkey-server", "redis-server"]
            .into_iter()
            .find(|b| Command::new(b).arg("--version").output().is_ok())
            .expect(
                "valkey-server or redis-server must be installed (apt-get install -y redis-server)",
            );
        let mut child = Command::new(bin)
            .args(listen)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        let t = std::time::Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("private {bin} exited ({status}) instead of listening on {port}; for TLS it must be built with it (Debian's is)");
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "private {bin} did not start on port {port}"
            );
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

/// A directory of its own under the system's temporary directory, removed when dropped.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(what: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "quiver-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A throwaway CA and a server certificate it signed for `localhost` (a DNS name only, no IP
/// address), made with the `openssl` CLI. `ca`, `cert` and `key` are PEM files.
pub struct TestCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    _dir: ScratchDir,
}

impl TestCerts {
    pub fn generate() -> Self {
        let dir = ScratchDir::new("certs");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-days",
                    "2",
                ])
                .args(args)
                .current_dir(&dir.0)
                .output()
                .unwrap_or_else(|e| panic!("running openssl (apt-get install -y openssl): {e}"));
            assert!(
                out.status.success(),
                "openssl req {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        // A CA name of its own, so that two sets' CAs are strangers, not look-alikes.
        let ca_name = format!(
            "/CN=quiver test CA {}",
            dir.0.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
        );
        openssl(&[
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            &ca_name,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ]);
        openssl(&[
            "-keyout",
            "server.key",
            "-out",
            "server.crt",
            "-subj",
            "/CN=localhost",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ]);
        TestCerts {
            ca: dir.0.join("ca.crt"),
            cert: dir.0.join("server.crt"),
            key: dir.0.join("server.key"),
            _dir: dir,
        }
    }
}

/// A private PostgreSQL cluster (the newest under `/usr/lib/postgresql`, or on `PATH`) on
/// `127.0.0.1:port`, user `quiver` with [`PrivatePostgres::PASSWORD`], stopped and deleted when
/// dropped. With certificates it is TLS-only, as RDS with `rds.force_ssl=1`: pg_hba.conf has
/// `hostssl` lines and no `host` line, so a plain connection is refused.
pub struct PrivatePostgres {
    pub port: u16,
    bindir: PathBuf,
    data: PathBuf,
    dir: ScratchDir,
}

impl PrivatePostgres {
    pub const PASSWORD: &str = "quiver-test-password";

    pub fn start(port: u16, tls: Option<&TestCerts>) -> Self {
        let bindir = pg_bindir().expect(
            "PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install -y postgresql",
        );
        let dir = ScratchDir::new("postgres");
        let data = dir.0.join("data");
        std::fs::write(dir.0.join("pwfile"), Self::PASSWORD).expect("writing the password file");
        let mut opts =
            format!("-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off", dir.0.display());
        if let Some(certs) = tls {
            std::fs::copy(&certs.cert, dir.0.join("server.crt"))
                .expect("copying the server certificate");
            std::fs::copy(&certs.key, dir.0.join("server.key")).expect("copying the server key");
            opts += &format!(
                " -c ssl=on -c ssl_cert_file={0}/server.crt -c ssl_key_file={0}/server.key",
                dir.0.display()
            );
        }
        // PostgreSQL refuses to run as root; then everything belongs to the `postgres` user.
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir.0)
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "could not hand {} to the postgres user (apt-get install -y postgresql creates it)",
                dir.0.display()
            );
        }
        let key = dir.0.join("server.key");
        if key.exists() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                .expect("chmod 600 on the server key");
        }
        let pg = PrivatePostgres { port, bindir, data, dir };
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data.to_string_lossy(),
                "-U",
                "quiver",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
                "--auth=scram-sha-256",
                &format!("--pwfile={}", pg.dir.0.join("pwfile").display()),
            ],
        );
        let host = if tls.is_some() { "hostssl" } else { "host" };
        std::fs::write(
            pg.data.join("pg_hba.conf"),
            format!("local all all scram-sha-256\n{host} all all 127.0.0.1/32 scram-sha-256\n"),
        )
        .expect("writing pg_hba.conf");
        let log = pg.dir.0.join("postgres.log");
        pg.run(
            "pg_ctl",
            &[
                "-D",
                &pg.data.to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-w",
                "-t",
                "30",
                "-o",
                &opts,
                "start",
            ],
        );
        pg
    }

    /// `postgres://quiver:…@localhost:port/postgres`, with `?params` unless they are empty.
    pub fn url(&self, params: &str) -> String {
        let query = if params.is_empty() { String::new() } else { format!("?{params}") };
        format!("postgres://quiver:{}@localhost:{}/postgres{query}", Self::PASSWORD, self.port)
    }

    fn command(&self, tool: &str) -> Command {
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bindir.join(tool));
            c
        } else {
            Command::new(self.bindir.join(tool))
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self
            .command(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {tool}: {e}"));
        let log = std::fs::read_to_string(self.dir.0.join("postgres.log")).unwrap_or_default();
        assert!(
            out.status.success(),
            "{tool} failed: {}{}\n{log}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // No panic here: this may run while a failed test unwinds.
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// Whether this process runs as root (PostgreSQL refuses to).
/// Bytes of every file under `dir` (what a directory holds, as `du` counts apparent sizes).
pub fn disk_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => disk_bytes(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The directory of `initdb` and `pg_ctl`: `PATH` first, then the newest of Debian's versions.
pub fn pg_bindir() -> Option<PathBuf> {
    let has_tools = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(d) =
        std::env::var_os("PATH").iter().flat_map(std::env::split_paths).find(|d| has_tools(d))
    {
        return Some(d);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| has_tools(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Microseconds in a day.
pub use crate::time::DAY_US;

/// A UTC midnight (µs) after the year 3000, far past any seeded or generated data, that no other
/// caller uses: 8-day blocks from a random start per process, then consecutive blocks, so tests
/// that write windows of up to 8 days there never see each other's events.
pub fn unique_midnight_us() -> i64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    const BASE_US: i64 = 32_503_680_000_000_000; // 3000-01-01T00:00:00Z
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = *BASE.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        crate::generate::Rng::new(nanos ^ (std::process::id() as u64) << 32).next_u64()
    });
    let block = base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % 125_000;
    BASE_US + (block as i64 * 8 + 8) * DAY_US
}

/// A name no other test run uses: `name`, the process id, the time and a counter.
pub fn unique_name(name: &str) -> String {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{name}-{}-{nanos}-{seq}", std::process::id())
}

/// Deletes every object under `prefix/` (a test's own prefix; best effort, at most 1,000 keys).
#[cfg(feature = "s3")]
pub async fn delete_prefix(storage: &crate::storage::Storage, prefix: &str) {
    let listed = storage
        .client
        .list_objects_v2()
        .bucket(&storage.bucket)
        .prefix(format!("{prefix}/"))
        .send();
    let Ok(listed) = listed.await else { return };
    for o in listed.contents() {
        let Some(key) = o.key() else { continue };
        let _ = storage.client.delete_object().bucket(&storage.bucket).key(key).send().await;
    }
}
