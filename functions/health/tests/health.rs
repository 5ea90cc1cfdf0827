//! `/health` against the real services started by `quiver-local up`.

use std::time::{Duration, Instant};

use quiver::testing::{free_port, service_config, TestApp};

#[tokio::test]
async fn the_sample_event_reports_every_dependency_up() {
    let state = health::Health::new(service_config()).await.unwrap();
    let app = TestApp::new(health::routes(state));
    let req = lambda_http::request::from_str(include_str!("../../../events/health.json")).unwrap();
    let r = app.call(req).await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(r.status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], quiver::VERSION);
    for dep in ["postgres", "valkey", "s3"] {
        assert_eq!(body["dependencies"][dep]["ok"], true, "{dep}: {body}");
        assert!(body["dependencies"][dep]["ms"].as_f64().unwrap() >= 0.0);
    }
}

#[tokio::test]
async fn a_stopped_valkey_gives_503_naming_it_within_the_timeout() {
    let port = free_port();
    let server = quiver::testing::PrivateValkey::start(port);
    let mut cfg = service_config();
    cfg.valkey_url = Some(format!("redis://127.0.0.1:{port}"));
    cfg.health_timeout = Duration::from_millis(500);
    let state = health::Health::new(cfg).await.unwrap();
    let report = health::report(&state).await;
    assert_eq!(report.status, "ok", "{report:?}");

    drop(server); // stop it
    let t = Instant::now();
    let r = TestApp::new(health::routes(state)).get("/health").await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert!(t.elapsed() < Duration::from_millis(1500), "took {:?}", t.elapsed());
    assert_eq!(r.status, 503, "{body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["dependencies"]["valkey"]["ok"], false);
    let why = body["dependencies"]["valkey"]["error"].as_str().unwrap();
    assert!(["timeout", "refused", "unavailable"].contains(&why), "{body}");
    assert_eq!(body["dependencies"]["postgres"]["ok"], true);
    assert_eq!(body["dependencies"]["s3"]["ok"], true);
}

#[tokio::test]
async fn unreachable_postgres_and_s3_are_named_too() {
    let mut cfg = service_config();
    let dead = free_port();
    cfg.database_url = Some(format!("postgres://quiver:quiver@127.0.0.1:{dead}/quiver"));
    cfg.s3_endpoint = Some(format!("http://127.0.0.1:{dead}"));
    cfg.health_timeout = Duration::from_millis(800);
    let state = health::Health::new(cfg).await.unwrap();
    let t = Instant::now();
    let report = health::report(&state).await;
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    assert!(!report.dependencies["postgres"].ok);
    assert!(!report.dependencies["s3"].ok);
    assert!(report.dependencies["valkey"].ok);
    // Issue 17, item 7: the report says why in one fixed word; hosts, ports and driver messages
    // (and credentials) stay in the log.
    for dep in ["postgres", "s3"] {
        let e = report.dependencies[dep].error.clone().unwrap();
        assert!(
            ["timeout", "refused", "unavailable", "corrupt"].contains(&e.as_str()),
            "{dep}: {e}"
        );
    }
    assert_eq!(report.dependencies["postgres"].error.as_deref(), Some("refused"));
}

#[tokio::test]
async fn a_service_that_is_not_configured_is_reported_not_fatal() {
    let mut cfg = service_config();
    cfg.bucket = None;
    let state = health::Health::new(cfg).await.unwrap();
    let r = health::report(&state).await;
    assert_eq!(r.status, "degraded");
    assert_eq!(r.dependencies["s3"].error.as_deref(), Some("QUIVER_BUCKET is not set"));
}
