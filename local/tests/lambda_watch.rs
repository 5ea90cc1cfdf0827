//! End to end: the real `health` binary under `cargo lambda watch`, as a user runs it.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{repo_root, Group};

#[test]
fn health_answers_through_cargo_lambda_watch() {
    quiver::testing::service_config();
    let probe = Command::new("cargo").args(["lambda", "--version"]).output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "cargo-lambda is not installed: `pip install cargo-lambda` into a venv (local/bootstrap.sh does it)"
    );
    let port = quiver::testing::free_port();
    let mut cmd = Command::new("cargo");
    // From the function's own directory, so that `cargo run` selects (and compiles features for)
    // that package only, as Lambda packaging does, instead of unifying the whole workspace.
    cmd.args(["lambda", "watch", "--ignore-changes", "--env-file"])
        .arg(repo_root().join("local/.env.local"))
        .args(["-A", "127.0.0.1", "-P"])
        .arg(port.to_string())
        .current_dir(repo_root().join("functions/health"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _watch = Group::spawn(cmd);

    // The first request compiles the function, so allow for a build.
    let url = format!("http://127.0.0.1:{port}/lambda-url/health/");
    let started = Instant::now();
    let (status, body) = loop {
        match common::http("GET", &url) {
            Ok(r) => break r,
            Err(e) if started.elapsed() < Duration::from_secs(900) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("cargo lambda watch never answered at {url}: {e}"),
        }
    };
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok", "{v}");
    for dep in ["postgres", "valkey", "s3"] {
        assert_eq!(v["dependencies"][dep]["ok"], true, "{dep}: {v}");
    }

    // The sample event runs through `cargo lambda invoke` against the same emulator.
    let out = Command::new("cargo")
        .args([
            "lambda",
            "invoke",
            "health",
            "--data-file",
            "events/health.json",
            "--invoke-address",
            "127.0.0.1",
            "-P",
        ])
        .arg(port.to_string())
        .current_dir(repo_root())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "invoke failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["statusCode"], 200, "{v}");
}
