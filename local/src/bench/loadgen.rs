//! A small HTTP/1.1 load generator: N keep-alive connections, a warm-up that is not counted, then
//! a fixed duration or request count, with latencies in an HDR histogram (µs resolution).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderName, HeaderValue, Method};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;

/// One request of a workload; a plan rotates through several (e.g. a mix of search queries).
#[derive(Debug, Clone)]
pub struct Req {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl Req {
    pub fn get(path: impl Into<String>) -> Self {
        Req { method: Method::GET, path: path.into(), headers: Vec::new(), body: Bytes::new() }
    }

    pub fn post(
        path: impl Into<String>,
        content_type: &'static str,
        body: impl Into<Bytes>,
    ) -> Self {
        Req {
            method: Method::POST,
            path: path.into(),
            headers: vec![(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            body: body.into(),
        }
    }

    pub fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((HeaderName::from_static(name), HeaderValue::from_static(value)));
        self
    }
}

/// How long to run: a fixed time, or a fixed number of requests.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    After(Duration),
    Count(u64),
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub addr: SocketAddr,
    /// Rotated through in order; each connection starts at a different offset.
    pub requests: Vec<Req>,
    pub connections: usize,
    pub warmup: Duration,
    pub stop: Stop,
}

/// What a run measured. Latencies in µs.
#[derive(Debug, Clone, Serialize, Default)]
pub struct LoadReport {
    pub connections: usize,
    pub sent: u64,
    pub received: u64,
    pub non_2xx: u64,
    pub errors: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    pub rps: f64,
    pub seconds: f64,
}

struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

async fn connect(addr: SocketAddr) -> Result<Conn> {
    let stream =
        tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Conn { sender })
}

/// Sends one request and reads the whole body; returns the status.
async fn call(c: &mut Conn, addr: SocketAddr, r: &Req) -> Result<u16> {
    let mut b = http::Request::builder()
        .method(r.method.clone())
        .uri(&r.path)
        .header(http::header::HOST, addr.to_string());
    for (k, v) in &r.headers {
        b = b.header(k, v);
    }
    let req = b.body(Full::new(r.body.clone()))?;
    c.sender.ready().await?;
    let res = c.sender.send_request(req).await?;
    let status = res.status().as_u16();
    res.into_body().collect().await?;
    Ok(status)
}

/// What one connection measured: its histogram, sent, non-2xx, errors and measured time.
type Measured = (Histogram<u64>, u64, u64, u64, Duration);

/// One keep-alive connection: the warm-up, then requests until the budget or the time runs out.
async fn connection(
    k: usize,
    requests: Arc<Vec<Req>>,
    budget: Arc<AtomicU64>,
    addr: SocketAddr,
    stop: Stop,
    warm_until: Instant,
) -> Result<Measured> {
    let mut conn = connect(addr).await?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut sent, mut non_2xx, mut errors) = (0u64, 0u64, 0u64);
    let mut i = k;
    while Instant::now() < warm_until {
        let _ = call(&mut conn, addr, &requests[i % requests.len()]).await;
        i += 1;
    }
    let started = Instant::now();
    loop {
        if let Stop::After(d) = stop {
            if started.elapsed() >= d {
                break;
            }
        }
        if budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1)).is_err()
        {
            break;
        }
        let t = Instant::now();
        sent += 1;
        match call(&mut conn, addr, &requests[i % requests.len()]).await {
            Ok(status) => {
                hist.record((t.elapsed().as_micros() as u64).max(1))?;
                if !(200..300).contains(&status) {
                    non_2xx += 1;
                }
            }
            Err(_) => {
                errors += 1;
                conn = connect(addr).await?;
            }
        }
        i += 1;
    }
    Ok((hist, sent, non_2xx, errors, started.elapsed()))
}

/// Runs the plan: warm-up first (not counted), then the measured phase.
///
/// The client runs on its own threads, one per core at most, each a single-threaded runtime that
/// drives its share of the connections: a request and its connection task never wake another
/// thread, so the client adds no cross-thread wake-ups to the latency it measures (as `wrk`'s
/// event loops do not).
pub async fn run(plan: &Plan) -> Result<LoadReport> {
    anyhow::ensure!(
        !plan.requests.is_empty() && plan.connections > 0,
        "a plan needs requests and connections"
    );
    let requests = Arc::new(plan.requests.clone());
    let budget = Arc::new(AtomicU64::new(match plan.stop {
        Stop::Count(n) => n,
        Stop::After(_) => u64::MAX,
    }));
    let warm_until = Instant::now() + plan.warmup;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = plan.connections.min(cores);
    let (connections, addr, stop) = (plan.connections, plan.addr, plan.stop);
    let handles: Vec<std::thread::JoinHandle<Result<Vec<Measured>>>> = (0..threads)
        .map(|t| {
            let (requests, budget) = (requests.clone(), budget.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(async move {
                    let tasks: Vec<_> = (t..connections)
                        .step_by(threads)
                        .map(|k| {
                            tokio::spawn(connection(
                                k,
                                requests.clone(),
                                budget.clone(),
                                addr,
                                stop,
                                warm_until,
                            ))
                        })
                        .collect();
                    let mut out = Vec::with_capacity(tasks.len());
                    for task in tasks {
                        out.push(task.await??);
                    }
                    Ok(out)
                })
            })
        })
        .collect();
    let measured = tokio::task::spawn_blocking(move || {
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().map_err(|_| anyhow::anyhow!("a load-generator thread panicked"))??);
        }
        anyhow::Ok(all)
    })
    .await??;
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut r = LoadReport { connections: plan.connections, ..Default::default() };
    let mut longest = Duration::ZERO;
    for (h, sent, non_2xx, errors, took) in measured {
        all.add(&h)?;
        r.sent += sent;
        r.non_2xx += non_2xx;
        r.errors += errors;
        longest = longest.max(took);
    }
    r.received = all.len();
    r.p50_us = all.value_at_quantile(0.50) as f64;
    r.p90_us = all.value_at_quantile(0.90) as f64;
    r.p99_us = all.value_at_quantile(0.99) as f64;
    r.max_us = all.max() as f64;
    r.mean_us = (all.mean() * 10.0).round() / 10.0;
    r.seconds = longest.as_secs_f64();
    r.rps = if r.seconds > 0.0 { (r.received as f64 / r.seconds).round() } else { 0.0 };
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_what_it_sends_and_orders_percentiles() {
        let hits = Arc::new(AtomicU64::new(0));
        let h2 = hits.clone();
        let app = axum::Router::new()
            .route(
                "/ok",
                axum::routing::get(move || {
                    h2.fetch_add(1, Ordering::Relaxed);
                    async { "ok" }
                }),
            )
            .route(
                "/teapot",
                axum::routing::get(|| async { (http::StatusCode::IM_A_TEAPOT, "no") }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let plan = Plan {
            addr,
            requests: vec![Req::get("/ok")],
            connections: 4,
            warmup: Duration::ZERO,
            stop: Stop::Count(1000),
        };
        let r = run(&plan).await.unwrap();
        assert_eq!(r.sent, 1000);
        assert_eq!(r.received, 1000);
        assert_eq!(hits.load(Ordering::Relaxed), 1000, "the server saw exactly what was sent");
        assert_eq!((r.non_2xx, r.errors), (0, 0));
        assert!(r.p50_us <= r.p90_us && r.p90_us <= r.p99_us && r.p99_us <= r.max_us, "{r:?}");
        assert!(r.rps > 0.0);

        let plan = Plan {
            requests: vec![Req::get("/ok"), Req::get("/teapot")],
            stop: Stop::Count(100),
            connections: 1,
            ..plan
        };
        let r = run(&plan).await.unwrap();
        assert_eq!(r.non_2xx, 50);
    }
}
