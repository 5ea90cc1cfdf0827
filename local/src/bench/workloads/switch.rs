//! Version switches under load (issue 16): p99 of `/analytics/summary` (uncached, 1M events) and
//! of `/search` (misses, 100k documents) while an instance switches to a newly published version,
//! next to p99 without a switch; the server's peak RSS during the snapshot switch; `/tmp` after
//! ten switches of each.
//!
//! Its own server (`serve --current-thread`, as a Lambda instance answers), its own database
//! (`quiver_bench_switch`, so the other workloads keep their row counts), its own S3 prefixes and
//! `QUIVER_TMP_DIR`. Versions are published from this process while no load runs, so the
//! measured window holds the switch alone: the manifest check (every second here) and the load.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use super::measure::{check, us};
use super::table::{SWITCH_SEARCH, SWITCH_SUMMARY, SWITCH_TMP};
use crate::bench::loadgen::{self, LoadReport, Plan, Req, Stop};
use crate::bench::{free_addr, wait_http, Ctx, Row};
use quiver::testing::disk_bytes;

const SNAPSHOTS: &str = "bench/switch/snapshots/user_events";
const INDEXES: &str = "bench/switch/indexes/docs";
const DATABASE: &str = "quiver_bench_switch";

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// One GET's `header`, which must answer 2xx.
async fn get_header(addr: SocketAddr, path: &str, header: &str) -> Result<Option<String>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let res = tx.send_request(req).await?;
    anyhow::ensure!(res.status().is_success(), "GET {path}: {}", res.status());
    Ok(res.headers().get(header).and_then(|v| v.to_str().ok()).map(str::to_string))
}

/// The scratch database with exactly `events` generated events.
async fn database(events: u64) -> Result<quiver::pg::Pg> {
    let cfg = quiver::Config::from_env()?;
    let main = quiver::pg::Pg::new(&cfg)?;
    let c = main.client().await?;
    let exists = c.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&DATABASE]).await?;
    if exists.is_none() {
        c.batch_execute(&format!("CREATE DATABASE {DATABASE}")).await?;
    }
    let mut url = url::Url::parse(cfg.database_url.as_deref().context("no database URL")?)?;
    url.set_path(DATABASE);
    let scratch = quiver::Config { database_url: Some(url.to_string()), ..cfg };
    let pg = quiver::pg::Pg::new(&scratch)?;
    quiver::migrate::run(&pg).await?;
    if quiver::ingest::count(&pg).await? != events as i64 {
        eprintln!("bench: writing {events} events into {DATABASE}");
        pg.client().await?.batch_execute("TRUNCATE user_events").await?;
        let gen = quiver::generate::Generator::new(7, quiver::generate::Shape::default());
        quiver::ingest::bulk(&pg, &gen, 0, events, &|_| {}).await?;
    }
    Ok(pg)
}

struct Switcher {
    pg: quiver::pg::Pg,
    storage: quiver::storage::Storage,
    snapshots: quiver::snapshot::SnapshotSettings,
    indexer: Arc<indexer::Indexer>,
    docs: u64,
    seed: AtomicU64,
}

impl Switcher {
    async fn snapshot(&self) -> Result<String> {
        let w = quiver::snapshot::Window::default();
        Ok(quiver::snapshot::export(&self.pg, &self.storage, &self.snapshots, &w).await?.version)
    }

    async fn index(&self) -> Result<String> {
        let seed = self.seed.fetch_add(1, Ordering::Relaxed);
        let corpus = quiver::search::Corpus::Realistic;
        let source = indexer::Source::Corpus { corpus, docs: self.docs, seed };
        Ok(self.indexer.run(source).await?.version)
    }
}

/// Waits until `path` answers with `version` in `header`.
async fn served(addr: SocketAddr, path: &str, header: &str, version: &str) -> Result<Duration> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(300) {
        if get_header(addr, path, header).await?.as_deref() == Some(version) {
            return Ok(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{path} never served version {version}")
}

/// Load on one connection for `secs`, sampling the server's RSS; returns the report and the peak.
async fn measure(
    addr: SocketAddr,
    pid: u32,
    requests: Vec<Req>,
    secs: f64,
) -> Result<(LoadReport, u64)> {
    let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let plan = Plan {
        addr,
        requests,
        connections: 1,
        warmup: Duration::ZERO,
        stop: Stop::After(Duration::from_secs_f64(secs)),
    };
    let r = loadgen::run(&plan).await;
    sampler.abort();
    let r = r?;
    check(&r)?;
    Ok((r, peak.load(Ordering::Relaxed)))
}

pub async fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    let (events, docs, rounds) =
        if ctx.opts.quick { (20_000, 5_000, 3) } else { (1_000_000, 100_000, 10) };
    let cfg = quiver::Config::from_env()?;
    let pg = database(events).await?;
    let storage = quiver::storage::Storage::new(&cfg).await?;
    let no_grace = quiver::artifact::Retention { keep: 2, grace: Duration::ZERO };
    let mut snapshots = quiver::snapshot::SnapshotSettings::from_env(&cfg)?.with_prefix(SNAPSHOTS);
    snapshots.retention = no_grace;
    let mut ix = indexer::IndexerSettings::from_env(&cfg)?;
    ix.prefix = INDEXES.into();
    ix.retention = no_grace;
    let sw = Switcher {
        pg,
        storage,
        snapshots,
        indexer: indexer::Indexer::with_settings(&cfg, ix).await?,
        docs,
        seed: AtomicU64::new(1),
    };
    eprintln!("bench: switch: publishing the first snapshot ({events} events) and index ({docs} documents)");
    let (mut snap, mut index) = (sw.snapshot().await?, sw.index().await?);

    let tmp: PathBuf =
        std::env::temp_dir().join(format!("quiver-bench-switch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let mut url = url::Url::parse(cfg.database_url.as_deref().context("no database URL")?)?;
    url.set_path(DATABASE);
    let addr = free_addr()?;
    let bin = match &ctx.opts.server {
        Some(b) => b.clone(),
        None => std::env::current_exe()?,
    };
    let mut server = tokio::process::Command::new(bin)
        .args(["serve", "--current-thread", "--addr", &addr.to_string()])
        .env("QUIVER_DATABASE_URL", url.as_str())
        .env("QUIVER_SNAPSHOT_PREFIX", SNAPSHOTS)
        .env("QUIVER_INDEX_PREFIX", INDEXES)
        .env("QUIVER_SNAPSHOT_CHECK_S", "1")
        .env("QUIVER_INDEX_CHECK_S", "1")
        .env("QUIVER_TMP_DIR", &tmp)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting quiver-local serve for the switch")?;
    let pid = server.id().unwrap_or(0);
    wait_http(addr, "/health", Duration::from_secs(60)).await?;
    let run = std::process::id();
    let summary = || vec![Req::get("/analytics/summary?cache=off")];
    let misses = |tag: String| -> Vec<Req> {
        (0..300_000).map(|i| Req::get(format!("/search?q=performance+{tag}{run}x{i}"))).collect()
    };
    let cold_snapshot =
        served(addr, "/analytics/summary?cache=off", "x-data-version", &snap).await?;
    let cold_index = served(addr, "/search?q=warmup", "x-index-version", &index).await?;
    let secs = if ctx.opts.quick { 2.0 } else { 5.0 };

    // Without a switch, then with one: the new version is published first, and the window
    // starts at once, so the check (within 1 s) and the whole load fall inside it.
    let (calm_summary, calm_rss) = measure(addr, pid, summary(), secs).await?;
    snap = sw.snapshot().await?;
    // The window is the switch: up to 1 s until the check, then the load (about as long as the
    // cold one), with room for it to run slower under load. A longer window would dilute it.
    let window = |cold: Duration| (1.0 + cold.as_secs_f64() * 2.0).max(2.0);
    let (switch_summary, switch_rss) = measure(addr, pid, summary(), window(cold_snapshot)).await?;
    served(addr, "/analytics/summary?cache=off", "x-data-version", &snap).await?;

    let (calm_search, _) = measure(addr, pid, misses("calm".into()), secs).await?;
    index = sw.index().await?;
    let (switch_search, _) =
        measure(addr, pid, misses("switch".into()), window(cold_index)).await?;
    served(addr, "/search?q=warmup", "x-index-version", &index).await?;

    // Ten switches of each, then what the instance keeps in QUIVER_TMP_DIR.
    let mut after = Vec::new();
    for k in 0..rounds {
        eprintln!("bench: switch: round {}/{rounds}", k + 1);
        snap = sw.snapshot().await?;
        index = sw.index().await?;
        served(addr, "/analytics/summary?cache=off", "x-data-version", &snap).await?;
        served(addr, "/search?q=warmup", "x-index-version", &index).await?;
        after.push(disk_bytes(&tmp));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tmp_bytes = disk_bytes(&tmp);
    let (m, _) =
        quiver::artifact::fetch_manifest::<quiver::search::IndexMeta>(&sw.storage, INDEXES, None)
            .await?
            .context("no index manifest")?;
    let one_index = m.meta.index_bytes;
    let _ = server.kill().await;
    let _ = std::fs::remove_dir_all(&tmp);

    let mib = |kib: u64| kib as f64 / 1024.0;
    let vs = |calm: &LoadReport, during: &LoadReport| {
        format!(
            "p99 {} during a switch vs {} without (×{:.2}); p50 {} vs {}",
            us(during.p99_us),
            us(calm.p99_us),
            during.p99_us / calm.p99_us.max(1.0),
            us(during.p50_us),
            us(calm.p50_us)
        )
    };
    Ok(vec![
        Row::new(&SWITCH_SUMMARY, "serve")
            .fill("events", events)
            .figure(
                format!("{}; peak RSS {:.0} MiB (before: {:.0})", vs(&calm_summary, &switch_summary), mib(switch_rss), mib(calm_rss)),
                switch_summary.p99_us / 1e3,
            )
            .detail(json!({"without": calm_summary, "during": switch_summary, "rss_kib_peak_during": switch_rss, "rss_kib_peak_before": calm_rss, "cold_load_ms": cold_snapshot.as_millis() as u64})),
        Row::new(&SWITCH_SEARCH, "serve")
            .fill("docs", docs)
            .figure(vs(&calm_search, &switch_search), switch_search.p99_us / 1e3)
            .detail(json!({"without": calm_search, "during": switch_search, "cold_load_ms": cold_index.as_millis() as u64})),
        Row::new(&SWITCH_TMP, "serve")
            .fill("rounds", rounds)
            .figure(
                format!("{:.1} MiB after {rounds} switches of each (one unpacked index: {:.1} MiB; snapshots: in memory)", tmp_bytes as f64 / 1048576.0, one_index as f64 / 1048576.0),
                0.0,
            )
            .detail(json!({"tmp_bytes": tmp_bytes, "per_round": after, "index_bytes": one_index})),
    ])
}
