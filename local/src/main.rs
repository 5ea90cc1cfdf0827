//! `quiver-local`: Quiver on a laptop or in CI, with or without Docker.

use clap::{Parser, Subcommand};
use quiver_local::{bench, env, export, index, migrate, rehearse, s3server, seed, serve, services};

#[derive(Parser)]
#[command(
    version,
    about = "Run Quiver locally: services, every handler on one port, seed and bench"
)]
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
        /// Answer on one thread (a current-thread runtime), as a Lambda instance does; the bench's
        /// latency rows use it. Without it, one worker per core, for throughput.
        #[arg(long)]
        current_thread: bool,
    },
    /// Print the OpenAPI 3.1 document of every route (what `GET /openapi.json` serves).
    Openapi,
    /// Run the embedded S3-compatible server in the foreground (what `up` starts in the background).
    S3 {
        #[arg(long)]
        root: std::path::PathBuf,
        #[arg(long, default_value = "127.0.0.1:9010")]
        addr: String,
    },
    /// Apply pending schema migrations with the step's own limits (the deploy runs the same step).
    Migrate(migrate::Options),
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
    /// Export user_events to Parquet in S3 and publish a snapshot, as the scheduled function does.
    Snapshot {
        /// S3 prefix (default snapshots/user_events).
        #[arg(long)]
        prefix: Option<String>,
        /// Only events at or after this RFC 3339 time (needs its own --prefix: analytics serves the
        /// newest version at the default one).
        #[arg(long)]
        from: Option<String>,
        /// Only events before this RFC 3339 time.
        #[arg(long)]
        to: Option<String>,
        /// Versions to keep (default QUIVER_KEEP_VERSIONS, else 3).
        #[arg(long)]
        keep: Option<usize>,
    },
    /// Build a search index (a generated corpus or a JSONL file) and publish it for `search`.
    Index(index::Options),
    /// Measure every workload against its target through HTTP and write bench/results/.
    Bench(bench::Options),
    /// Run every function as infra/template.yaml deploys it (its environment, secrets from moto,
    /// TLS-only services, the Lambda runtime API) and send it every event Lambda would.
    Rehearse(rehearse::Options),
    /// Print the environment the functions get locally, as `export` lines.
    Env,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut rt = match cli.cmd {
        Cmd::Serve { current_thread: true, .. } => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    rt.enable_all().build()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    env::load();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .init();
    match cli.cmd {
        Cmd::Up { only } => services::up(only).await,
        Cmd::Down { only } => services::down(only).await,
        Cmd::Status => services::status().await,
        Cmd::Serve { addr, .. } => {
            serve::run(addr.or_else(|| std::env::var("QUIVER_SERVE_ADDR").ok())).await
        }
        Cmd::Openapi => {
            print!("{}", serve::openapi_json());
            Ok(())
        }
        Cmd::S3 { root, addr } => s3server::run(&root, &addr).await,
        Cmd::Migrate(opts) => migrate::run(opts).await.map(|_| ()),
        Cmd::Seed { events, seed, append } => seed::run(events, seed, append).await.map(|_| ()),
        Cmd::Snapshot { prefix, from, to, keep } => {
            export::run(prefix.as_deref(), from.as_deref(), to.as_deref(), keep).await.map(|_| ())
        }
        Cmd::Index(opts) => index::run(opts).await.map(|_| ()),
        Cmd::Bench(opts) => bench::run(opts).await.map(|_| ()),
        Cmd::Rehearse(opts) => rehearse::run(opts).await,
        Cmd::Env => {
            for (k, v) in env::file_vars() {
                println!("export {k}={}", std::env::var(&k).unwrap_or(v));
            }
            Ok(())
        }
    }
}
