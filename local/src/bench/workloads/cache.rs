//! The analytics summary from the cache (a HIT) and computed (a MISS, from DuckDB over the
//! snapshot and from PostgreSQL).

use anyhow::Result;
use serde_json::json;

use super::measure::median;
use super::measure::{
    check, latency_and_rps, latency_and_throughput, load, p50_p99, route, through_lambda,
};
use super::table::{CACHE_HIT, CACHE_MISS, DUCKDB_7206, PG_SUMMARY, PG_SUMMARY_EXPLAIN};
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
    let runs = if ctx.opts.quick {
        3
    } else if n > 100_000 {
        5
    } else {
        31
    };
    let (ours, theirs) = explain_summary(runs).await?;
    let row = Row::new(&PG_SUMMARY_EXPLAIN, "binary").fill("events", n);
    rows.push(
        Row {
            reference: format!("its own query: {theirs:.2} ms (measured here, same table)"),
            reference_ms: Some(theirs),
            ..row
        }
        .figure(
            format!(
                "{ours:.2} ms, {:.0}% of the reference query (medians of {runs}, interleaved)",
                100.0 * ours / theirs
            ),
            ours,
        ),
    );
    Ok(rows)
}

/// The reference stack's summary query (issue 19), as it runs it.
const REFERENCE_SUMMARY: &str =
    "SELECT count(*), count(DISTINCT user_id), count(*) FILTER (WHERE event_type='page_view'), \
    count(*) FILTER (WHERE event_type='click'), count(*) FILTER (WHERE event_type='conversion'), \
    avg((metadata->>'duration_ms')::int) FROM user_events";

/// The median `Execution Time` of `EXPLAIN ANALYZE` for Quiver's summary query (unfiltered) and
/// for the reference's, run alternately on one connection after three warm-up rounds: the
/// server's own time, without the client or the network.
async fn explain_summary(runs: usize) -> Result<(f64, f64)> {
    let pg = quiver::pg::Pg::new(&quiver::Config::from_env()?)?;
    let c = pg.client().await?;
    let explain = |sql: &str| format!("EXPLAIN (ANALYZE, TIMING OFF) {sql}");
    let (ours, theirs) =
        (explain(&quiver::analytics::postgres::summary_sql()), explain(REFERENCE_SUMMARY));
    let no_time: Option<chrono::DateTime<chrono::Utc>> = None;
    let no_type: Option<&str> = None;
    let execution_ms = |rows: Vec<tokio_postgres::Row>| -> Result<f64> {
        rows.iter()
            .filter_map(|r| {
                r.get::<_, String>(0)
                    .strip_prefix("Execution Time: ")?
                    .strip_suffix(" ms")?
                    .parse()
                    .ok()
            })
            .next()
            .ok_or_else(|| anyhow::anyhow!("EXPLAIN ANALYZE gave no execution time"))
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 0..runs + 3 {
        let x = execution_ms(c.query(&ours, &[&no_time, &no_time, &no_type]).await?)?;
        let y = execution_ms(c.query(&theirs, &[]).await?)?;
        if round >= 3 {
            a.push(x);
            b.push(y);
        }
    }
    Ok((median(a.into_iter()), median(b.into_iter())))
}
