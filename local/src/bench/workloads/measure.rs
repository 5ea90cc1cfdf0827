//! What every workload measures with: one probe, a load run, latency then throughput, the same
//! through `cargo lambda watch`, and the figures' formatting.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use super::Workload;
use crate::bench::loadgen::{self, LoadReport, Plan, Req, Stop};
use crate::bench::{pin, Ctx, Row};

/// Sends `req` once and fails unless it answers 2xx: the route a workload measures must be there.
pub async fn route(ctx: &Ctx, req: Req) -> Result<()> {
    let what = format!("{} {}", req.method, req.path);
    let plan = Plan {
        addr: ctx.serve,
        requests: vec![req],
        connections: 1,
        warmup: Duration::ZERO,
        stop: Stop::Count(1),
    };
    let r = loadgen::run(&plan).await.with_context(|| format!("probing {what}"))?;
    anyhow::ensure!(
        r.received == 1 && r.non_2xx == 0,
        "{what} did not answer 2xx on quiver-local serve ({} non-2xx, {} errors): is the route there?",
        r.non_2xx,
        r.errors
    );
    Ok(())
}

/// Runs `requests` on `connections` against `quiver-local serve` until `stop`, after the warm-up.
pub async fn load(
    ctx: &Ctx,
    requests: Vec<Req>,
    connections: usize,
    stop: Stop,
) -> Result<LoadReport> {
    let plan = Plan { addr: ctx.serve, requests, connections, warmup: ctx.warmup(), stop };
    loadgen::run(&plan).await
}

/// Latency at one connection on the current-thread server, with client and server on different
/// cores, then throughput at `--connections` unpinned on the multi-thread one.
pub async fn latency_and_throughput(
    ctx: &Ctx,
    requests: Vec<Req>,
) -> Result<(LoadReport, LoadReport, bool)> {
    latency_and_throughput_of(ctx, requests.clone(), requests).await
}

/// [`latency_and_throughput`] with other requests for each run (requests that must not repeat).
pub async fn latency_and_throughput_of(
    ctx: &Ctx,
    latency: Vec<Req>,
    throughput: Vec<Req>,
) -> Result<(LoadReport, LoadReport, bool)> {
    let pinned = pin(ctx.latency_pid, "1") && pin(std::process::id(), "0");
    let plan = Plan {
        addr: ctx.latency,
        requests: latency,
        connections: 1,
        warmup: ctx.warmup(),
        stop: Stop::After(ctx.measure_for()),
    };
    let lat = loadgen::run(&plan).await;
    pin(ctx.latency_pid, "0,1");
    pin(std::process::id(), "0,1");
    let lat = lat?;
    let thr = load(ctx, throughput, ctx.opts.connections, Stop::After(ctx.measure_for())).await?;
    Ok((lat, thr, pinned))
}

/// The figure of a latency row.
pub fn p50_p99(r: &LoadReport) -> String {
    format!("p50 {} / p99 {}", us(r.p50_us), us(r.p99_us))
}

/// The figure of a latency-and-throughput row.
pub fn latency_and_rps(lat: &LoadReport, thr: &LoadReport, pinned: bool) -> String {
    format!(
        "p50 {} / p99 {}{}; {:.0} req/s at {}",
        us(lat.p50_us),
        us(lat.p99_us),
        if pinned { " pinned" } else { "" },
        thr.rps,
        thr.connections
    )
}

/// Latency at one connection through `cargo lambda watch` (`--lambda`): the real function binary
/// behind the Lambda emulator. One instance per function serves one request at a time, so no
/// throughput is reported on this path.
pub async fn through_lambda(
    ctx: &Ctx,
    w: &Workload,
    function: &str,
    requests: Vec<Req>,
) -> Result<Option<Row>> {
    let Some(addr) = ctx.lambda.iter().find(|(f, _)| f == function).map(|(_, a)| *a) else {
        return Ok(None);
    };
    let requests = requests.into_iter().map(|mut r| {
        r.path = format!("/lambda-url/{function}{}", r.path);
        r
    });
    let plan = Plan {
        addr,
        requests: requests.collect(),
        connections: 1,
        warmup: ctx.warmup(),
        stop: Stop::After(ctx.measure_for()),
    };
    let r = loadgen::run(&plan).await?;
    check(&r)?;
    let row = Row::new(w, "lambda");
    Ok(Some(
        Row { id: format!("{}-lambda", w.id), ..row }
            .figure(p50_p99(&r), r.p50_us / 1e3)
            .detail(json!({"latency": r})),
    ))
}

/// Fails a run that had any error or non-2xx answer.
pub fn check(r: &LoadReport) -> Result<()> {
    anyhow::ensure!(
        r.errors == 0 && r.non_2xx == 0,
        "{} errors and {} non-2xx answers out of {}",
        r.errors,
        r.non_2xx,
        r.sent
    );
    Ok(())
}

/// Microseconds as the table shows them: µs below a millisecond, ms above.
pub fn us(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

/// The median of some figures (NaN when there are none).
pub fn median(v: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = v.collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
