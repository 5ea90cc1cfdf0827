//! Secrets never reach a log line or a response body: `quiver-local serve` runs with passwords in
//! its PostgreSQL and Valkey URLs (wrong ones, so every dependency call fails and logs an error),
//! at debug level, and every byte it prints or answers is searched for them.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::{quiver_local, Group};

const PG_SECRET: &str = "pg-Sup3r-s3cret-0f-the-test";
const VALKEY_SECRET: &str = "valkey-Sup3r-s3cret-0f-the-test";

fn get(addr: &str, method: &str, path: &str, body: &str) -> Option<String> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn passwords_never_appear_in_logs_or_responses() {
    let cfg = quiver::testing::service_config();
    let mut pg = url::Url::parse(cfg.database_url.as_deref().unwrap()).unwrap();
    pg.set_password(Some(PG_SECRET)).unwrap();
    let mut valkey = url::Url::parse(cfg.valkey_url.as_deref().unwrap()).unwrap();
    valkey.set_password(Some(VALKEY_SECRET)).unwrap();
    let addr = format!("127.0.0.1:{}", quiver::testing::free_port());

    let log = std::env::temp_dir().join(format!("quiver-secrets-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).unwrap();
    let mut cmd = quiver_local();
    cmd.args(["serve", "--addr", &addr])
        .env("QUIVER_DATABASE_URL", pg.as_str())
        .env("QUIVER_VALKEY_URL", valkey.as_str())
        .env("QUIVER_PG_TIMEOUT_MS", "2000")
        .env("RUST_LOG", "debug")
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    let server = Group::spawn(cmd);

    let t = Instant::now();
    while get(&addr, "GET", "/health", "").is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "quiver-local serve did not start; log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut answers = String::new();
    for (method, path, body) in [
        ("GET", "/health", ""),
        ("GET", "/events/1", ""),
        ("POST", "/events", r#"{"user_id": 1, "event_type": "click", "page_url": "/x"}"#),
        ("GET", "/analytics/summary?source=postgres", ""),
        ("GET", "/samples/pg/benchmark-all?user_id=1", ""),
        ("GET", "/process?size=10&seed=1", ""),
        ("GET", "/search?q=performance", ""),
    ] {
        let a =
            get(&addr, method, path, body).unwrap_or_else(|| panic!("{method} {path}: no answer"));
        answers.push_str(&a);
    }
    // The failures we caused are there, as 503s with a reason.
    assert!(answers.contains("503"), "{answers}");
    drop(server);

    let logged = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(logged.lines().count() > 3, "the server logged almost nothing: {logged}");
    for secret in [PG_SECRET, VALKEY_SECRET] {
        assert!(
            !logged.contains(secret),
            "a log line shows a password:\n{}",
            logged.lines().filter(|l| l.contains(secret)).collect::<Vec<_>>().join("\n")
        );
        assert!(!answers.contains(secret), "a response shows a password:\n{answers}");
    }
    // No SQL text or backtrace in a response body.
    for leak in ["SELECT ", "INSERT ", "COPY ", "stack backtrace", "panicked at"] {
        assert!(!answers.contains(leak), "a response shows {leak:?}:\n{answers}");
    }
}
