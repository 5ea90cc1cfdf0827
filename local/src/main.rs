//! `quiver-local`: Quiver on a laptop or in CI, with or without Docker.

use clap::{Parser, Subcommand};

use quiver_local::{bench, env, s3server, seed, serve, services};

#[derive(Parser)]
#[command(version, about = "Run Quiver locally: services, every handler on one port, seed and bench")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start PostgreSQL, Valkey and S3 (Docker compose when an engine runs, else natively); idempotent.
    Up {
        /// Start only this service.
        #[arg(long, value_enum)]
        only: Option<services::Service>,
    },
    /// Stop every service `up` started.
    Down {
        /// Stop only this service.
        #[arg(long, value_enum)]
        only: Option<services::Service>,
    },
    /// Say which services answer.
    Status,
    /// Mount every function's handler in one HTTP server.
    Serve {
        /// Address to listen on (default: QUIVER_SERVE_ADDR, else 127.0.0.1:8080).
        #[arg(long)]
        addr: Option<String>,
    },
    /// Run the embedded S3-compatible server in the foreground (what `up` starts in the background).
    S3 {
        #[arg(long)]
        root: std::path::PathBuf,
        #[arg(long, default_value = "127.0.0.1:9010")]
        addr: String,
    },
    /// Load N generated events into PostgreSQL (replacing what is there unless --append).
    Seed {
        #[arg(long, default_value_t = 7206)]
        events: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Keep existing events and add these after them.
        #[arg(long)]
        append: bool,
    },
    /// Measure every workload of shared/TARGETS.md through HTTP and write bench/results/.
    Bench(bench::Options),
    /// Print the environment the functions get locally, as `export` lines.
    Env,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    env::load();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .init();
    match Cli::parse().cmd {
        Cmd::Up { only } => services::up(only).await,
        Cmd::Down { only } => services::down(only).await,
        Cmd::Status => services::status().await,
        Cmd::Serve { addr } => serve::run(addr.or_else(|| std::env::var("QUIVER_SERVE_ADDR").ok())).await,
        Cmd::S3 { root, addr } => s3server::run(&root, &addr).await,
        Cmd::Seed { events, seed, append } => seed::run(events, seed, append).await.map(|_| ()),
        Cmd::Bench(opts) => bench::run(opts).await.map(|_| ()),
        Cmd::Env => {
            for (k, v) in env::file_vars() {
                println!("export {k}={}", std::env::var(&k).unwrap_or(v));
            }
            Ok(())
        }
    }
}
