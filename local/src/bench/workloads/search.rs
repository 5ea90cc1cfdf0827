//! Tantivy: building and publishing an index (in-process), and queries over HTTP.

use std::time::Duration;

use anyhow::Result;
use quiver::search::Corpus;
use serde_json::json;

use super::measure::{
    check, latency_and_rps, latency_and_throughput, latency_and_throughput_of, route,
    through_lambda,
};
use super::table::{INDEX_10K, INDEX_REALISTIC_100K, INDEX_REALISTIC_10K, SEARCH, SEARCH_MISS};
use crate::bench::loadgen::Req;
use crate::bench::{Ctx, Row};

/// Indexing time (including the commit) and bundle size for two corpora, each published under a
/// bench-only prefix, plus the cold start of a `search` instance over it (manifest, download,
/// checksum, unpack, open). In-process: these are build times, not HTTP latencies.
pub async fn indexing(ctx: &Ctx) -> Result<Vec<Row>> {
    let cfg = quiver::Config::from_env()?;
    let mut settings = indexer::IndexerSettings::from_env(&cfg)?;
    settings.prefix = "bench/indexes/docs".into();
    // Five runs a case, each replacing the last: nobody else reads this prefix, so no grace.
    settings.retention = quiver::artifact::Retention { keep: 1, grace: std::time::Duration::ZERO };
    let prefix = settings.prefix.clone();
    let ix = indexer::Indexer::with_settings(&cfg, settings).await?;
    let runs = if ctx.opts.quick { 1 } else { 5 };
    let mut rows = Vec::new();
    let cases = [
        (&INDEX_10K, Corpus::Reference, 10_000u64),
        (&INDEX_REALISTIC_10K, Corpus::Realistic, 10_000),
        (&INDEX_REALISTIC_100K, Corpus::Realistic, 100_000),
    ];
    for (w, corpus, docs) in cases {
        if ctx.opts.quick && docs > 10_000 {
            continue;
        }
        let mut reports = Vec::new();
        for _ in 0..runs {
            reports.push(ix.run(indexer::Source::Corpus { corpus, docs, seed: 42 }).await?);
        }
        reports.sort_by(|a, b| a.index_ms.total_cmp(&b.index_ms));
        let r = &reports[reports.len() / 2];
        let dir =
            std::path::PathBuf::from(&cfg.tmp_dir).join("quiver-bench-search").join(&r.version);
        let reader = ::search::Search::with_settings(
            &cfg,
            ::search::SearchSettings {
                prefix: prefix.clone(),
                dir: dir.clone(),
                check_every: Duration::from_secs(3600),
            },
        )
        .await?;
        let warm = reader.warm().await?;
        drop(reader);
        let _ = std::fs::remove_dir_all(&dir);
        rows.push(
            Row::new(w, "binary")
                .figure(
                    format!(
                        "{:.1} ms ({:.0} docs/s, median of {runs}); bundle {:.2} MB; search cold start {:.1} ms",
                        r.index_ms,
                        r.docs_per_s,
                        r.bundle_bytes as f64 / 1e6,
                        warm.ms
                    ),
                    r.index_ms,
                )
                .detail(json!({"report": r, "search_cold_start": warm})),
        );
    }
    Ok(rows)
}

/// A mix of query shapes (term, phrase, boolean, field, exclusion) against the published index.
pub async fn queries(ctx: &Ctx) -> Result<Vec<Row>> {
    route(ctx, Req::get("/search?q=performance")).await?;
    let mix = [
        "performance",
        "\"performance optimization\"",
        "rust AND lambda",
        "optimization OR caching",
        "title:performance",
        "database -python",
    ];
    let reqs: Vec<Req> = mix
        .iter()
        .map(|q| {
            Req::get(format!(
                "/search?q={}",
                url::form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>()
            ))
        })
        .collect();
    let (lat, thr, pinned) = latency_and_throughput(ctx, reqs.clone()).await?;
    check(&lat)?;
    check(&thr)?;
    let mut rows = vec![Row::new(&SEARCH, "serve")
        .figure(latency_and_rps(&lat, &thr, pinned), lat.p50_us / 1e3)
        .detail(json!({"latency": lat, "throughput": thr, "pinned": pinned, "queries": mix}))];
    rows.extend(through_lambda(ctx, &SEARCH, "search", reqs).await?);
    // Misses: `performance <word>` matches every reference document, like `performance`, with a
    // word no document holds and no request before asked for: the latency and the throughput run
    // each get their own 300,000, more than either sends.
    let run = std::process::id();
    let misses = |tag: &str| -> Vec<Req> {
        (0..300_000).map(|i| Req::get(format!("/search?q=performance+{tag}{run}x{i}"))).collect()
    };
    let (lat, thr, pinned) = latency_and_throughput_of(ctx, misses("l"), misses("t")).await?;
    check(&lat)?;
    check(&thr)?;
    rows.push(
        Row::new(&SEARCH_MISS, "serve")
            .figure(latency_and_rps(&lat, &thr, pinned), lat.p50_us / 1e3)
            .detail(json!({"latency": lat, "throughput": thr, "pinned": pinned})),
    );
    Ok(rows)
}
