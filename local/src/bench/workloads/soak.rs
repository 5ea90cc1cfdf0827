//! The load test: many connections on a mix of routes, failing on any error or on memory growth.

use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};

use super::measure::{check, us};
use super::table::SOAK;
use crate::bench::loadgen::{self, Plan, Req, Stop};
use crate::bench::{Ctx, Row};

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))?;
    Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
}

/// `--connections` (64 in CI) on a mix of a cached route, an uncached DuckDB summary, search and
/// `POST /events` for `--soak-seconds`. It fails on any error or non-2xx, or when the server's RSS
/// after the run is more than 10% above its peak during the warm-up.
pub async fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    let secs = if ctx.opts.quick { ctx.opts.soak_seconds.min(1.0) } else { ctx.opts.soak_seconds };
    let body = |i: usize| {
        let events: Vec<Value> = (0..10)
            .map(|j| json!({"user_id": 1_900_000_000 + (i % 50), "event_type": "click", "page_url": format!("/soak/{i}/{j}"), "metadata": {"duration_ms": j}}))
            .collect();
        serde_json::to_vec(&events).expect("events serialize")
    };
    const WORDS: [&str; 8] =
        ["performance", "rust", "search", "cache", "lambda", "optimization", "data", "index"];
    const TYPES: [&str; 5] = ["page_view", "click", "conversion", "signup", "purchase"];
    let mut requests = Vec::new();
    for i in 0..64 {
        requests.push(Req::get("/analytics/summary"));
        requests.push(Req::get(format!(
            "/analytics/summary?cache=off&event_type={}",
            TYPES[i % TYPES.len()]
        )));
        requests.push(Req::get(format!("/search?q={}&limit=10", WORDS[i % WORDS.len()])));
        requests.push(Req::post("/events", "application/json", body(i)));
    }
    let conns = ctx.opts.connections.max(1);
    let warm = Plan {
        addr: ctx.serve,
        requests: requests.clone(),
        connections: conns,
        warmup: Duration::ZERO,
        stop: Stop::After(Duration::from_secs_f64(if ctx.opts.quick {
            0.5
        } else {
            (secs / 2.0).clamp(15.0, 30.0)
        })),
    };
    // RSS under load moves by about ±10% around its plateau, so the end of the warm-up alone is
    // a noisy base (one run ended it at 193 MiB and the next 10 s at 216, then stayed at 221 for
    // 40 s). The base is the warm-up's peak: a leak still shows as growth above it.
    let pid = ctx.server_pid;
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let warmed = loadgen::run(&warm).await;
    sampler.abort();
    check(&warmed?)?;
    let rss_warm = peak.load(std::sync::atomic::Ordering::Relaxed).max(rss_kib(pid)?);
    let run = Plan {
        addr: ctx.serve,
        requests,
        connections: conns,
        warmup: Duration::ZERO,
        stop: Stop::After(Duration::from_secs_f64(secs)),
    };
    let r = loadgen::run(&run).await?;
    let rss_after = rss_kib(ctx.server_pid)?;
    check(&r)?;
    let growth = rss_after as f64 / rss_warm.max(1) as f64 - 1.0;
    let mib = |k: u64| k as f64 / 1024.0;
    anyhow::ensure!(
        growth <= 0.10,
        "RSS grew {:.1}% ({:.0} → {:.0} MiB) over the run",
        growth * 100.0,
        mib(rss_warm),
        mib(rss_after)
    );
    Ok(vec![Row::new(&SOAK, "serve")
        .figure(
            format!("{:.0} req/s at {conns} for {secs:.0} s, p99 {}, 0 errors; RSS {:.0} → {:.0} MiB ({:+.1}%)", r.rps, us(r.p99_us), mib(rss_warm), mib(rss_after), growth * 100.0),
            r.p99_us / 1e3,
        )
        .detail(json!({"load": r, "rss_kib_warmup_peak": rss_warm, "rss_kib_after_run": rss_after, "growth": growth}))])
}
