//! The analytics summary from the cache (a HIT) and computed (a MISS, from DuckDB over the
//! snapshot and from PostgreSQL).

use anyhow::Result;
use serde_json::json;

use super::measure::{
    check, latency_and_rps, latency_and_throughput, load, p50_p99, route, through_lambda,
};
use super::table::{CACHE_HIT, CACHE_MISS, DUCKDB_7206, PG_SUMMARY};
use crate::bench::loadgen::{Req, Stop};
use crate::bench::{Ctx, Row};

pub async fn hit(ctx: &Ctx) -> Result<Vec<Row>> {
    let req = Req::get("/analytics/summary").header("accept-encoding", "zstd");
    route(ctx, req.clone()).await?;
    let (lat, thr, pinned) = latency_and_throughput(ctx, vec![req.clone()]).await?;
    check(&lat)?;
    check(&thr)?;
    let mut rows = vec![Row::new(&CACHE_HIT, "serve")
        .figure(latency_and_rps(&lat, &thr, pinned), lat.p50_us / 1e3)
        .detail(json!({"latency": lat, "throughput": thr, "pinned": pinned}))];
    rows.extend(through_lambda(ctx, &CACHE_HIT, "analytics", vec![req]).await?);
    Ok(rows)
}

pub async fn miss(ctx: &Ctx) -> Result<Vec<Row>> {
    let n = super::events(&ctx.opts);
    route(ctx, Req::get("/analytics/summary?source=duckdb")).await?;
    // Each request filters from a different instant before all data: a distinct cache key, the same answer.
    let busting = |source: &str| -> Vec<Req> {
        (0..200_000)
            .map(|i| {
                Req::get(format!(
                    "/analytics/summary?source={source}&from=2000-01-01T00:00:00.{i:06}Z"
                ))
            })
            .collect()
    };
    let stop = Stop::After(ctx.measure_for());
    let duck = load(ctx, busting("duckdb"), 1, stop).await?;
    check(&duck)?;
    let pg = load(ctx, busting("postgres"), 1, stop).await?;
    check(&pg)?;
    let mut pg_row = Row::new(&PG_SUMMARY, "serve").fill("events", n);
    if n != 7206 {
        pg_row = pg_row.not_comparable(format!("— ({} was for 7,206)", PG_SUMMARY.reference));
    }
    let mut rows = vec![
        Row::new(&CACHE_MISS, "serve")
            .fill("events", n)
            .figure(p50_p99(&duck), duck.p50_us / 1e3)
            .detail(json!({"latency": duck})),
        pg_row.figure(p50_p99(&pg), pg.p50_us / 1e3).detail(json!({"latency": pg})),
    ];
    if n == 7206 {
        rows.push(Row::new(&DUCKDB_7206, "serve").figure(p50_p99(&duck), duck.p50_us / 1e3));
    }
    Ok(rows)
}
