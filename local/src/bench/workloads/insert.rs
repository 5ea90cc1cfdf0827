//! Writes to PostgreSQL: 1,000 events per `POST /events`, generated events in bulk, and the same
//! writes without HTTP (PostgreSQL's share of the figures).

use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};

use super::measure::{check, load, median, us};
use super::table::{INSERT_1000, INSERT_1000_PG, INSERT_BULK, INSERT_BULK_PG};
use crate::bench::loadgen::{self, Plan, Req, Stop};
use crate::bench::{Ctx, Row};

pub async fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    let events: Vec<Value> = (0..1000)
        .map(|i| json!({"user_id": 1_900_000_000 + (i % 50), "event_type": "click", "page_url": format!("/bench/{i}"), "metadata": {"duration_ms": i}}))
        .collect();
    let body = serde_json::to_vec(&events)?;
    let n = if ctx.opts.quick { 20 } else { 200 };
    let r =
        load(ctx, vec![Req::post("/events", "application/json", body.clone())], 1, Stop::Count(n))
            .await?;
    check(&r)?;
    let bulk_n = if ctx.opts.quick { 2 } else { 5 };
    let count = if ctx.opts.quick { 10_000 } else { 100_000 };
    let plan = Plan {
        addr: ctx.serve,
        requests: vec![Req::post(
            format!("/events/bulk?count={count}&seed=9"),
            "application/json",
            "",
        )],
        connections: 1,
        warmup: Duration::ZERO,
        stop: Stop::Count(bulk_n),
    };
    let b = loadgen::run(&plan).await?;
    check(&b)?;
    let rows_per_s = count as f64 / (b.p50_us / 1e6);
    // The same writes without HTTP: PostgreSQL's share of the figures above.
    let cfg = quiver::Config::from_env()?;
    let pg = quiver::pg::Pg::new(&cfg)?;
    let batch = quiver::events::parse_body(
        &body,
        quiver::events::BodyFormat::Json,
        chrono::Utc::now().timestamp_micros(),
    )?;
    let mut direct_ms = Vec::new();
    for _ in 0..n {
        // Without an idempotency key every insert is written, never replayed.
        if let quiver::ingest::Outcome::Written(i) =
            quiver::ingest::insert(&pg, &batch, None).await?
        {
            direct_ms.push(i.took_ms);
        }
    }
    let direct_ms = median(direct_ms.into_iter());
    let gen = quiver::generate::Generator::new(9, quiver::generate::Shape::default());
    let mut bulk_ms = Vec::new();
    for _ in 0..bulk_n {
        bulk_ms.push(quiver::ingest::bulk(&pg, &gen, 0, count, &|_| {}).await?.took_ms);
    }
    let bulk_ms = median(bulk_ms.into_iter());
    Ok(vec![
        Row::new(&INSERT_1000, "serve")
            .figure(
                format!(
                    "p50 {} / p99 {} ({:.0} rows/s)",
                    us(r.p50_us),
                    us(r.p99_us),
                    1000.0 / (r.p50_us / 1e6)
                ),
                r.p50_us / 1e3,
            )
            .detail(json!({"latency": r})),
        Row::new(&INSERT_BULK, "serve")
            .fill("count", count)
            .figure(
                format!("{:.0} rows/s (p50 {} per request)", rows_per_s, us(b.p50_us)),
                b.p50_us / 1e3,
            )
            .detail(json!({"latency": b, "rows_per_s": rows_per_s})),
        Row::new(&INSERT_1000_PG, "binary").figure(
            format!(
                "{:.2} ms (median of {n}; {:.0} rows/s)",
                direct_ms,
                1000.0 / (direct_ms / 1e3)
            ),
            direct_ms,
        ),
        Row::new(&INSERT_BULK_PG, "binary").fill("count", count).figure(
            format!(
                "{:.0} rows/s ({:.1} ms, median of {bulk_n})",
                count as f64 / (bulk_ms / 1e3),
                bulk_ms
            ),
            bulk_ms,
        ),
    ])
}
