//! A dependency that answers, but slowly: each of PostgreSQL, Valkey and S3 is put behind a small
//! TCP proxy that holds every reply for seconds. A request must end within its configured timeout:
//! a 503 naming the dependency (PostgreSQL, S3), or an answer without the cache (Valkey: BYPASS).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver::testing::TestApp;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long the proxy holds each reply: far beyond every timeout below.
const DELAY: Duration = Duration::from_secs(5);

/// Listens on a free port and forwards to `upstream`; requests pass at once, every chunk of reply
/// waits `DELAY`. Returns the proxy's port.
async fn slow_proxy(upstream: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&upstream).await else { return };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move { tokio::io::copy(&mut cr, &mut sw).await });
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = sr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    tokio::time::sleep(DELAY).await;
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// `host:port` of a URL such as `postgres://u:p@127.0.0.1:55432/db` or `http://127.0.0.1:9010`.
fn host_port(url: &str) -> String {
    let u = url::Url::parse(url).unwrap();
    format!("{}:{}", u.host_str().unwrap(), u.port().unwrap())
}

/// Points a configured service URL at a slow proxy in front of the same service.
async fn slow_down(url: &mut Option<String>) {
    let u = url.clone().expect("the service URL is configured");
    let port = slow_proxy(host_port(&u)).await;
    *url = Some(u.replacen(&host_port(&u), &format!("127.0.0.1:{port}"), 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_postgres_is_a_503_within_the_timeout() {
    let mut cfg = quiver::testing::service_config();
    slow_down(&mut cfg.database_url).await;
    cfg.pg_timeout = Duration::from_millis(500);
    let app = TestApp::new(events::routes(events::Events::new(&cfg).unwrap()));
    let write = json!([{"user_id": 5, "event_type": "click", "page_url": "/slow"}]);
    for read in [false, true] {
        let t = Instant::now();
        let r =
            if read { app.get("/events/5").await } else { app.post_json("/events", &write).await };
        assert_eq!(r.status, 503, "{r}");
        let v = r.json();
        assert_eq!(v["dependency"], "postgres", "{v}");
        assert!(
            t.elapsed() < Duration::from_millis(2_500),
            "a 500 ms timeout took {:?}",
            t.elapsed()
        );
    }
}

/// A proxy whose connections can be frozen: after `freeze`, every connection open at that moment
/// stops carrying bytes either way (a hung or half-open backend), while new connections pass.
struct Freezer {
    port: u16,
    frozen_below: Arc<AtomicU64>,
    next: Arc<AtomicU64>,
}

impl Freezer {
    async fn new(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (frozen_below, next) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (fb, nx) = (frozen_below.clone(), next.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let id = nx.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(&upstream).await else { continue };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                for (mut from, mut to) in [
                    (
                        Box::new(cr) as Box<dyn AsyncRead + Send + Unpin>,
                        Box::new(sw) as Box<dyn AsyncWrite + Send + Unpin>,
                    ),
                    (Box::new(sr), Box::new(cw)),
                ] {
                    let fb = fb.clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            while id < fb.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                            }
                            if to.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            }
        });
        Freezer { port, frozen_below, next }
    }

    fn freeze(&self) {
        self.frozen_below.store(self.next.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// The configuration with PostgreSQL behind a `Freezer`, one pooled connection (Lambda's
/// default) and a 500 ms timeout; and an `events` app on it, its connection made.
async fn frozen_postgres_app() -> (Freezer, TestApp) {
    let mut cfg = quiver::testing::service_config();
    let url = cfg.database_url.clone().expect("the service URL is configured");
    let proxy = Freezer::new(host_port(&url)).await;
    cfg.database_url =
        Some(url.replacen(&host_port(&url), &format!("127.0.0.1:{}", proxy.port), 1));
    cfg.pg_pool_size = 1;
    cfg.pg_timeout = Duration::from_millis(500);
    let app = TestApp::new(events::routes(events::Events::new(&cfg).unwrap()));
    assert_eq!(app.get("/events/5").await.status, 200, "through the proxy before the fault");
    (proxy, app)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_timed_out_is_replaced_not_reused() {
    let (proxy, app) = frozen_postgres_app().await;
    proxy.freeze();
    let r = app.get("/events/5").await;
    assert_eq!((r.status, &r.json()["dependency"]), (503, &json!("postgres")), "{r}");
    // The hung connection is not handed out again: the next request gets a fresh one.
    let t = Instant::now();
    let r = app.get("/events/5").await;
    assert_eq!(r.status, 200, "the request after the fault, on a new connection: {r}");
    assert!(t.elapsed() < Duration::from_millis(1_500), "took {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_connection_that_stopped_answering_is_replaced_before_use() {
    let (proxy, app) = frozen_postgres_app().await;
    // Half-open while idle (an RDS failover, a NAT timeout): nothing failed yet, so only the
    // check of a connection idle past VERIFY_IDLE can notice it.
    proxy.freeze();
    tokio::time::sleep(quiver::pg::VERIFY_IDLE + Duration::from_millis(300)).await;
    let t = Instant::now();
    let r = app.get("/events/5").await;
    assert_eq!(r.status, 200, "answered on a new connection: {r}");
    assert!(t.elapsed() < Duration::from_millis(2_500), "took {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_valkey_is_bypassed_within_the_timeout() {
    let mut cfg = quiver::testing::service_config();
    slow_down(&mut cfg.valkey_url).await;
    cfg.valkey_timeout = Duration::from_millis(50);
    cfg.health_timeout = Duration::from_millis(300);
    let app = TestApp::new(process::routes(process::Process::new(&cfg).unwrap()));
    for seed in 0..3 {
        let t = Instant::now();
        let r = app.get(format!("/process?size=100&seed={seed}")).await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.header("x-cache"), Some("BYPASS"));
        assert_eq!(r.json()["total_records"], 100);
        assert!(
            t.elapsed() < Duration::from_millis(1_500),
            "the cache held the answer for {:?}",
            t.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_s3_at_a_cold_start_is_a_503_within_the_timeout() {
    let mut cfg = quiver::testing::service_config();
    slow_down(&mut cfg.s3_endpoint).await;
    cfg.s3_timeout = Duration::from_millis(800);
    let app = TestApp::new(search::routes(search::Search::new(&cfg).await.unwrap()));
    let t = Instant::now();
    let r = app.get("/search?q=rust").await;
    assert_eq!(r.status, 503, "{r}");
    let v = r.json();
    assert!(
        v["detail"].as_str().unwrap_or("").contains("s3") || v["dependency"].is_string(),
        "{v}"
    );
    assert!(t.elapsed() < Duration::from_secs(4), "an 800 ms S3 timeout took {:?}", t.elapsed());
}
