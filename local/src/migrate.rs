//! `quiver-local migrate`: the migration step against `QUIVER_DATABASE_URL`, with its own limits
//! (the same code the deploy runs in AWS; `up`, `seed` and `bench` run it too). Prints the report.

use std::time::Duration;

use quiver::migrate::{Limits, Report};

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Longest wait for a table lock per try, in ms; queries queued behind it wait no longer.
    #[arg(long)]
    pub lock_timeout_ms: Option<u64>,
    /// Rows per backfill transaction.
    #[arg(long)]
    pub batch_rows: Option<i64>,
    /// Apply up to this version only.
    #[arg(long)]
    pub to: Option<i32>,
}

pub async fn run(opts: Options) -> anyhow::Result<Report> {
    let cfg = quiver::Config::from_env()?;
    let pg = quiver::pg::Pg::new(&cfg)?;
    let defaults = Limits::default();
    let limits = Limits {
        lock_timeout: opts.lock_timeout_ms.map_or(defaults.lock_timeout, Duration::from_millis),
        batch_rows: opts.batch_rows.unwrap_or(defaults.batch_rows),
        to: opts.to.unwrap_or(defaults.to),
        ..defaults
    };
    let report = quiver::migrate::run_with(&pg, &limits).await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(report)
}
