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
