//! `quiver-local up | status | down` on a private state directory and private ports, so that the
//! services the other tests use are not disturbed.

mod common;

use common::quiver_local;
use quiver::testing::free_port;

#[test]
fn up_is_idempotent_and_down_stops_everything() {
    let state = tempdir();
    let (pg, valkey, s3) = (free_port(), free_port(), free_port());
    let run = |cmd: &str| {
        quiver_local()
            .arg(cmd)
            .env("QUIVER_STATE_DIR", &state)
            .env("QUIVER_NATIVE", "1")
            .env("QUIVER_DATABASE_URL", format!("postgres://quiver:quiver@127.0.0.1:{pg}/quiver"))
            .env("QUIVER_VALKEY_URL", format!("redis://127.0.0.1:{valkey}"))
            .env("AWS_ENDPOINT_URL_S3", format!("http://127.0.0.1:{s3}"))
            .output()
            .unwrap()
    };
    let show = |o: &std::process::Output| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));

    let first = run("up");
    assert!(first.status.success(), "up failed: {}", show(&first));
    let again = run("up");
    assert!(again.status.success(), "second up failed: {}", show(&again));
    let text = show(&again);
    assert_eq!(text.matches("already answering").count(), 3, "second up must reuse all three: {text}");
    let status = run("status");
    assert!(status.status.success(), "{}", show(&status));

    let down = run("down");
    assert!(down.status.success(), "down failed: {}", show(&down));
    let status = run("status");
    assert!(!status.status.success(), "status after down must fail: {}", show(&status));
    for port in [pg, valkey, s3] {
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "port {port} still answers after down");
    }
    let _ = std::fs::remove_dir_all(&state);
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("quiver-up-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
