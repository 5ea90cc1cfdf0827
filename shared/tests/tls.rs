//! TLS to Valkey and PostgreSQL against real servers: a private redis-server that speaks only TLS
//! and a private PostgreSQL cluster that accepts only `hostssl` connections (as ElastiCache
//! Serverless and RDS with `rds.force_ssl=1` do), each with a certificate from a throwaway CA.
#![cfg(all(feature = "pg", feature = "cache"))]

use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver::pg::Pg;
use quiver::testing::{free_port, PrivatePostgres, PrivateValkey, TestCerts};
use quiver::valkey::Valkey;
use quiver::{Config, Error};

fn config(pairs: &[(&str, &str)]) -> Config {
    Config::from_vars(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
        .expect("a valid configuration")
}

fn assert_refused(err: &Error, because: &str) {
    assert!(matches!(err, Error::Unavailable { .. }), "a 503, not {err:?}");
    assert!(err.to_string().contains(because), "{err} (expected it to mention {because:?})");
}

/// Connect attempts are bounded by this (`QUIVER_HEALTH_TIMEOUT_MS`). redis-rs retries a failed
/// connect once, 1 to 2 s later; 3 s lets the handshake's own error come back instead of a timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[tokio::test]
async fn valkey_over_tls() {
    let (certs, stranger) = (TestCerts::generate(), TestCerts::generate());
    let server = PrivateValkey::start_tls(free_port(), &certs);
    let url = format!("rediss://localhost:{}", server.port);
    let connect_ms = CONNECT_TIMEOUT.as_millis().to_string();
    let valkey = |ca: Option<&std::path::Path>| {
        let ca = ca.map(|p| p.to_string_lossy().into_owned());
        let mut vars = vec![
            ("QUIVER_VALKEY_URL", url.as_str()),
            ("QUIVER_VALKEY_TIMEOUT_MS", "500"),
            ("QUIVER_HEALTH_TIMEOUT_MS", &connect_ms),
        ];
        vars.extend(ca.as_deref().map(|ca| ("QUIVER_VALKEY_CA_FILE", ca)));
        Arc::new(Valkey::new(&config(&vars)).expect("a valid Valkey configuration"))
    };

    // QUIVER_VALKEY_CA_FILE names the CA that signed the server's certificate: SET and GET work.
    let v = valkey(Some(&certs.ca));
    let mut c = v.connection_wait().await.expect("connects over TLS with the CA file");
    v.run("SET", redis::cmd("SET").arg("tls-key").arg("over TLS").query_async::<()>(&mut c))
        .await
        .unwrap();
    let got: String =
        v.run("GET", redis::cmd("GET").arg("tls-key").query_async(&mut c)).await.unwrap();
    assert_eq!(got, "over TLS");

    // Another CA, or the public roots: the cache path gets Err at once and serves without Valkey;
    // the handshake's error comes back within the connect timeout.
    let refused = |ca: Option<&std::path::Path>| {
        let v = valkey(ca);
        async move {
            assert!(
                v.connection().is_err(),
                "no connection yet: the cache is bypassed, not waited for"
            );
            let started = Instant::now();
            let Err(err) = v.connection_wait().await else {
                panic!("connected to a server outside the trusted CAs")
            };
            assert!(started.elapsed() < CONNECT_TIMEOUT, "took {:?}", started.elapsed());
            err
        }
    };
    let (other_ca, public_roots) = tokio::join!(refused(Some(&stranger.ca)), refused(None));
    assert_refused(&other_ca, "invalid peer certificate: UnknownIssuer");
    assert_refused(&public_roots, "invalid peer certificate: UnknownIssuer");
}

/// Whether the session that runs the query is encrypted, as the server sees it.
async fn encrypted(pg: &Pg) -> quiver::Result<bool> {
    // `connection`: this server has no schema, and the check would answer 503 `schema`.
    let c = pg.connection().await?;
    let row = pg
        .timed(
            "pg_stat_ssl",
            c.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]),
        )
        .await?;
    Ok(row.get(0))
}

#[tokio::test]
async fn postgres_over_tls() {
    let (certs, stranger) = (TestCerts::generate(), TestCerts::generate());
    let server = PrivatePostgres::start(free_port(), Some(&certs));
    let pg = |url: &str, ca: Option<&std::path::Path>| {
        let ca = ca.map(|p| p.to_string_lossy().into_owned());
        let mut vars = vec![("QUIVER_DATABASE_URL", url), ("QUIVER_PG_TIMEOUT_MS", "3000")];
        vars.extend(ca.as_deref().map(|ca| ("QUIVER_PG_CA_FILE", ca)));
        Pg::new(&config(&vars)).expect("a valid PostgreSQL configuration")
    };
    let by_ip = |params: &str| server.url(params).replace("@localhost:", "@127.0.0.1:");

    // Encrypted without a certificate check (libpq's require), and by default (prefer, when offered).
    assert!(encrypted(&pg(&server.url("sslmode=require"), None)).await.unwrap());
    assert!(encrypted(&pg(&server.url(""), None)).await.unwrap());
    // Verified against the CA file: the chain and the name, or (verify-ca) the chain only, so the
    // IP address, which the certificate does not name, passes there and not under verify-full.
    assert!(encrypted(&pg(&server.url("sslmode=verify-full"), Some(&certs.ca))).await.unwrap());
    assert!(encrypted(&pg(&by_ip("sslmode=verify-ca"), Some(&certs.ca))).await.unwrap());
    assert_refused(
        &encrypted(&pg(&by_ip("sslmode=verify-full"), Some(&certs.ca))).await.unwrap_err(),
        "not valid for",
    );

    // A certificate from another CA, or one the public roots do not know, is refused; with a CA
    // file, `require` checks the chain too (as libpq does).
    assert_refused(
        &encrypted(&pg(&server.url("sslmode=verify-full"), Some(&stranger.ca))).await.unwrap_err(),
        "certificate",
    );
    assert_refused(
        &encrypted(&pg(&server.url("sslmode=verify-full"), None)).await.unwrap_err(),
        "certificate",
    );
    assert_refused(
        &encrypted(&pg(&server.url("sslmode=require"), Some(&stranger.ca))).await.unwrap_err(),
        "certificate",
    );

    // The server is TLS-only: a plain connection is a 503 naming the reason.
    assert_refused(
        &encrypted(&pg(&server.url("sslmode=disable"), None)).await.unwrap_err(),
        "no encryption",
    );
}
