//! `quiver-local bench`: prepares the data, starts `quiver-local serve`, and measures every
//! workload of [`workloads`] through the HTTP path a user hits, then prints the table in the
//! reference's shape and writes `bench/results/<date>-<host>.{json,md}` plus SVG charts.
//!
//! Honesty rules: every figure is taken after a warm-up; a workload whose route does not answer
//! is a failed row, never skipped; the reference's figures are quoted, not measured here.

pub mod lambda_emulator;
pub mod loadgen;
mod report;
mod workloads;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
pub use report::Row;
use serde::Serialize;

/// What `bench` was asked to do.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Events in PostgreSQL for the analytics workloads (the reference used 7,206).
    #[arg(long, default_value_t = 7206)]
    pub events: u64,
    /// Documents for the search workloads.
    #[arg(long, default_value_t = 10_000)]
    pub docs: u64,
    /// Run only the workloads whose id contains this word (e.g. `cache`, `insert`, `cold-start`).
    #[arg(long)]
    pub only: Option<String>,
    /// Measured seconds per load run (after warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Connections for the throughput runs (latency runs use one).
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Small sizes and about a second per workload: keeps the suite from rotting in CI.
    #[arg(long)]
    pub quick: bool,
    /// Also measure through `cargo lambda watch` (the real Lambda binaries behind the emulator).
    #[arg(long)]
    pub lambda: bool,
    /// Spawns per function for the cold-start median.
    #[arg(long, default_value_t = 10)]
    pub spawns: usize,
    /// Cold starts from release binaries (`cargo build --release -p NAME`, LTO; the first build of
    /// the DuckDB and Polars functions takes most of an hour on 2 cores) instead of dev-profile ones.
    #[arg(long)]
    pub release_cold_start: bool,
    /// Cold starts from the binaries each function's own build left (`bash local/test.sh` builds
    /// them; `quiver-local rehearse` too) instead of building them here; a function without one
    /// gets a row that says so. What `bash local/run.sh` passes, so that its table does not wait
    /// for eight more builds.
    #[arg(long)]
    pub reuse_binaries: bool,
    /// Measured seconds of the `soak` load test (64 connections on a mix of routes).
    #[arg(long, default_value_t = 60.0)]
    pub soak_seconds: f64,
    /// Exit non-zero when a workload failed (CI); otherwise the row says why and the run goes on.
    #[arg(long)]
    pub strict: bool,
    /// The `quiver-local` binary that serves (default: this one), e.g. an older build to compare
    /// with under the same load generator and workloads.
    #[arg(long)]
    pub server: Option<std::path::PathBuf>,
    /// Measure latency on the multi-thread server too, instead of on `serve --current-thread`
    /// (needed with a `--server` built before that flag existed).
    #[arg(long)]
    pub multi_thread_latency: bool,
    /// Where results go (default: bench/results in the checkout).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

/// The functions whose workloads also run through `cargo lambda watch` with `--lambda`.
const LAMBDA_FUNCTIONS: &[&str] = &["analytics", "search", "process"];

/// Shared by every workload: where the server is and how long to run.
pub struct Ctx {
    pub serve: SocketAddr,
    /// `cargo lambda watch` per function, with `--lambda`.
    pub lambda: Vec<(String, SocketAddr)>,
    pub opts: Options,
    pub server_pid: u32,
    /// `quiver-local serve --current-thread`, which the latency runs measure.
    pub latency: SocketAddr,
    pub latency_pid: u32,
}

impl Ctx {
    pub fn measure_for(&self) -> Duration {
        Duration::from_secs_f64(if self.opts.quick {
            self.opts.duration.min(1.0)
        } else {
            self.opts.duration
        })
    }

    pub fn warmup(&self) -> Duration {
        if self.opts.quick {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(1)
        }
    }
}

/// Binds port 0 to find a free port for the bench's own server.
pub(crate) fn free_addr() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

pub(crate) async fn wait_http(addr: SocketAddr, path: &str, within: Duration) -> Result<()> {
    let t = Instant::now();
    while t.elapsed() < within {
        let plan = loadgen::Plan {
            addr,
            requests: vec![loadgen::Req::get(path)],
            connections: 1,
            warmup: Duration::ZERO,
            stop: loadgen::Stop::Count(1),
        };
        if let Ok(r) = loadgen::run(&plan).await {
            if r.received == 1 {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("nothing answered {path} on {addr} within {}s", within.as_secs())
}

/// Starts `quiver-local serve` with `args` on a free port and waits until it answers.
async fn start_server(
    opts: &Options,
    args: &[&str],
) -> Result<(SocketAddr, tokio::process::Child)> {
    let addr = free_addr()?;
    let bin = match &opts.server {
        Some(b) => b.clone(),
        None => std::env::current_exe()?,
    };
    let server = tokio::process::Command::new(bin)
        .args(["serve", "--addr", &addr.to_string()])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting quiver-local serve")?;
    wait_http(addr, "/health", Duration::from_secs(60)).await?;
    Ok((addr, server))
}

/// Pins every thread of `pid` to `cpus` (e.g. "0" or "0,1") with taskset, when it is there.
pub fn pin(pid: u32, cpus: &str) -> bool {
    std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub async fn run(opts: Options) -> Result<Vec<Row>> {
    let started = Instant::now();
    crate::services::up(None).await.context("bringing the services up")?;
    workloads::prepare(&opts).await?;

    // One server per runtime: throughput on one worker per core, latency on one thread, as a
    // Lambda instance answers (one request at a time; `serve --current-thread`).
    let (addr, mut server) = start_server(&opts, &[]).await?;
    let mut latency_server = None;
    let latency = if opts.multi_thread_latency {
        addr
    } else {
        let (a, s) = start_server(&opts, &["--current-thread"]).await?;
        latency_server = Some(s);
        a
    };
    // One `cargo lambda watch` per function measured on the Lambda path, each started from the
    // function's own directory: `cargo run` there builds that package alone, with its own features,
    // as Lambda packaging does (and reuses what `cargo build -p NAME` built), instead of one
    // workspace-wide build that unifies every function's features.
    let mut watches = Vec::new();
    let mut lambda = Vec::new();
    if opts.lambda {
        let root = crate::env::repo_root();
        for name in LAMBDA_FUNCTIONS {
            let port = free_addr()?.port();
            let mut child = tokio::process::Command::new("cargo")
                .args(["lambda", "watch", "--ignore-changes", "--env-file"])
                .arg(root.join("local/.env.local"))
                .args(["-A", "127.0.0.1", "-P", &port.to_string()])
                .current_dir(root.join("functions").join(name))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("starting cargo lambda watch (is cargo-lambda installed? local/bootstrap.sh installs it)")?;
            let a: SocketAddr = format!("127.0.0.1:{port}").parse()?;
            eprintln!("bench: waiting for {name} under cargo lambda watch on {a}");
            let probe = format!("/lambda-url/{name}/");
            tokio::select! {
                ready = wait_http(a, &probe, Duration::from_secs(900)) => ready?,
                status = child.wait() => bail!("cargo lambda watch for {name} exited ({status:?}) before answering: is cargo-lambda on PATH? (source local/bootstrap.sh)"),
            }
            watches.push(child);
            lambda.push((name.to_string(), a));
        }
    }
    let ctx = Ctx {
        serve: addr,
        lambda,
        server_pid: server.id().unwrap_or(0),
        latency,
        latency_pid: latency_server.as_ref().unwrap_or(&server).id().unwrap_or(0),
        opts: opts.clone(),
    };
    let rows = workloads::run_all(&ctx).await;
    let _ = server.kill().await;
    if let Some(mut s) = latency_server {
        let _ = s.kill().await;
    }
    for mut w in watches {
        let _ = w.kill().await;
    }
    report::write(&ctx, &rows, started.elapsed())?;
    let failed: Vec<&str> =
        rows.iter().filter(|r| r.status.starts_with("failed")).map(|r| r.id.as_str()).collect();
    if opts.strict && !failed.is_empty() {
        bail!("workloads failed: {}", failed.join(", "));
    }
    Ok(rows)
}

/// The cpuidle driver, and the guest halt-polling window when the driver is `haltpoll`.
fn idle(read: &dyn Fn(&str) -> String) -> String {
    let driver = read("/sys/devices/system/cpu/cpuidle/current_driver").trim().to_string();
    let poll = read("/sys/module/haltpoll/parameters/guest_halt_poll_ns").trim().to_string();
    match (driver.as_str(), poll.as_str()) {
        ("", _) => "cpuidle: unknown".into(),
        ("haltpoll", "0") => {
            "cpuidle haltpoll with guest_halt_poll_ns 0 (every idle wait halts the vCPU)".into()
        }
        ("haltpoll", ns) if !ns.is_empty() => format!("cpuidle haltpoll, guest_halt_poll_ns {ns}"),
        (d, _) => format!("cpuidle {d}"),
    }
}

/// Machine facts for the results file.
#[derive(Debug, Serialize)]
pub struct Machine {
    pub host: String,
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub rustc: String,
    pub commit: String,
    pub profile: &'static str,
    /// How an idle vCPU waits (a guest's halt polling): at one connection, each request waits
    /// several times, and a wait that halts the vCPU costs a trip through the hypervisor.
    pub idle: String,
}

pub fn machine() -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    let mem_kb: f64 = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    let out = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .current_dir(crate::env::repo_root())
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    Machine {
        host: out("hostname", &[]),
        cpu,
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        memory_gib: (mem_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        rustc: out("rustc", &["--version"]),
        commit: out("git", &["rev-parse", "--short", "HEAD"]),
        idle: idle(&read),
        profile: if cfg!(debug_assertions) {
            "dev (debug assertions)"
        } else {
            "dev profile: deps opt-level 3, our crates opt-level 2"
        },
    }
}
