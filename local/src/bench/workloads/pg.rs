//! The reference's "Comprehensive Comparison": one user's newest events fetched from PostgreSQL
//! and encoded as JSON (over HTTP) or decoded four ways (inside the function).

use anyhow::Result;
use serde_json::{json, Value};

use super::measure::{check, load, route, us};
use super::table::{PG_DECODE, PG_DECODE_100_TYPED, PG_ENCODE_100};
use crate::bench::loadgen::{Req, Stop};
use crate::bench::{Ctx, Row};

pub async fn encode(ctx: &Ctx) -> Result<Vec<Row>> {
    let path = "/samples/pg/benchmark-all?user_id=1&limit=100";
    route(ctx, Req::get(path)).await?;
    let r = load(ctx, vec![Req::get(path)], 1, Stop::After(ctx.measure_for())).await?;
    check(&r)?;
    Ok(vec![Row::new(&PG_ENCODE_100, "serve")
        .figure(
            format!("endpoint p50 {} (all four approaches per call)", us(r.p50_us)),
            r.p50_us / 1e3,
        )
        .detail(json!({"latency": r}))])
}

/// One user's newest 100 and 500 events fetched and decoded four ways, `runs` times each inside
/// the function (so no HTTP in the figures).
pub async fn decode(ctx: &Ctx) -> Result<Vec<Row>> {
    const USER: i32 = 1_999_999_001;
    route(ctx, Req::get(format!("/samples/pg/benchmark?user_id={USER}&limit=1&runs=1"))).await?;
    // 500 events of one user, written once per seeding (the key is forgotten when the table is re-seeded).
    let events: Vec<Value> = (0..500)
        .map(|i| json!({"user_id": USER, "event_type": (["page_view", "click", "conversion"][i % 3]), "page_url": format!("/docs/{}", i % 40), "metadata": {"duration_ms": i * 7, "source": "bench"}}))
        .collect();
    let write = Req::post("/events", "application/json", serde_json::to_vec(&events)?)
        .header("idempotency-key", "bench-pg-decode-500");
    check(&load(ctx, vec![write], 1, Stop::Count(1)).await?)?;
    let runs = if ctx.opts.quick { 10 } else { 100 };
    let pg = quiver::pg::Pg::new(&quiver::Config::from_env()?)?;
    let mut rows = Vec::new();
    for limit in [100, 500] {
        let report =
            serde_json::to_value(quiver::pg_bench::benchmark(&pg, USER, limit, runs).await?)?;
        let approaches = report["approaches"].as_object().cloned().unwrap_or_default();
        for (approach, st) in &approaches {
            let p50 = |m: &str| st[m]["p50"].as_f64().unwrap_or(f64::NAN);
            let w = match (limit, approach.as_str()) {
                (100, "typed") => &PG_DECODE_100_TYPED,
                _ => &PG_DECODE,
            };
            rows.push(
                Row::new(w, "binary")
                    .fill("limit", limit)
                    .fill("approach", approach)
                    .figure(
                        format!(
                            "query {:.3} + decode {:.3} = {:.3} ms (p50 of {runs})",
                            p50("query_ms"),
                            p50("decode_ms"),
                            p50("total_ms")
                        ),
                        p50("total_ms"),
                    )
                    .detail(st.clone()),
            );
        }
    }
    Ok(rows)
}
