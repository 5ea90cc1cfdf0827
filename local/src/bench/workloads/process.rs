//! `process` over generated records (GET, a new seed per request) and over a posted body (POST,
//! each body new, then one body again).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use serde_json::json;

use super::measure::{check, load, p50_p99, route, through_lambda, us};
use super::table::{PROCESS_1M, PROCESS_50K, PROCESS_POST_50K, PROCESS_POST_50K_HIT};
use crate::bench::loadgen::{self, Plan, Req, Stop};
use crate::bench::{Ctx, Row};

pub async fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    route(ctx, Req::get("/process?size=10&seed=1")).await?;
    let mut rows = Vec::new();
    for (w, size) in [(&PROCESS_50K, 50_000u64), (&PROCESS_1M, 1_000_000)] {
        if ctx.opts.quick && size > 50_000 {
            continue;
        }
        // A new seed per request, and per run: every answer is computed, none comes from the cache.
        let salt = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as u64 % (1 << 40)
            * 1_000_000;
        let reqs: Vec<Req> = (0..100_000)
            .map(|s| Req::get(format!("/process?size={size}&seed={}", salt + s)))
            .collect();
        let r = load(ctx, reqs, 1, Stop::After(ctx.measure_for())).await?;
        check(&r)?;
        rows.push(
            Row::new(w, "serve").figure(p50_p99(&r), r.p50_us / 1e3).detail(json!({"latency": r})),
        );
        let fresh: Vec<Req> = (0..10_000)
            .map(|s| Req::get(format!("/process?size={size}&seed={}", salt + 500_000 + s)))
            .collect();
        rows.extend(through_lambda(ctx, w, "process", fresh).await?);
    }
    // POST a 50,000-point body: every body new (a MISS: parse + process), then one body again (a HIT).
    let salt = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    let n = if ctx.opts.quick { 3 } else { 20 };
    let bodies: Vec<Req> = (0..n)
        .map(|i| {
            Req::post("/process", "application/json", quiver::process::batch_json(50_000, salt + i))
        })
        .collect();
    let plan = Plan {
        addr: ctx.serve,
        requests: bodies.clone(),
        connections: 1,
        warmup: Duration::ZERO,
        stop: Stop::Count(n),
    };
    let miss = loadgen::run(&plan).await?;
    check(&miss)?;
    let hit = load(ctx, vec![bodies[0].clone()], 1, Stop::After(ctx.measure_for())).await?;
    check(&hit)?;
    rows.push(
        Row::new(&PROCESS_POST_50K, "serve")
            .figure(
                format!("p50 {} / p99 {} (each body new)", us(miss.p50_us), us(miss.p99_us)),
                miss.p50_us / 1e3,
            )
            .detail(json!({"latency": miss})),
    );
    rows.push(
        Row::new(&PROCESS_POST_50K_HIT, "serve")
            .figure(p50_p99(&hit), hit.p50_us / 1e3)
            .detail(json!({"latency": hit})),
    );
    Ok(rows)
}
