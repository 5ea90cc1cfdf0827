//! `quiver-local seed`: N generated events into PostgreSQL in one COPY BINARY transaction, with a
//! progress bar. The same generator feeds `POST /events/bulk` and the benchmarks.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use quiver::generate::{Generator, Shape};
use quiver::ingest::{self, Inserted};
use quiver::pg::Pg;

/// Replaces (or, with `append`, extends) the events with `count` generated from `seed`.
pub async fn run(count: u64, seed: u64, append: bool) -> anyhow::Result<Inserted> {
    let cfg = quiver::Config::from_env()?;
    let pg = Pg::new(&cfg)?;
    quiver::migrate::run(&pg).await?;
    if !append {
        let c = pg.client().await?;
        pg.timed(
            "truncate",
            c.batch_execute("TRUNCATE user_events RESTART IDENTITY; TRUNCATE idempotency_keys"),
        )
        .await?;
    }
    let bar = ProgressBar::new(count);
    bar.set_style(
        ProgressStyle::with_template(
            "seeding {bar:40.cyan/blue} {pos}/{len} events, {per_sec}, eta {eta}",
        )
        .expect("a valid template"),
    );
    let started = Instant::now();
    let gen = Generator::new(seed, Shape::default());
    let ins = ingest::bulk(&pg, &gen, 0, count, &|sent| bar.set_position(sent)).await?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let total = ingest::count(&pg).await?;
    println!(
        "seeded {} events (seed {seed}) in {:.2}s, {:.0} rows/s; user_events now holds {total}",
        ins.inserted,
        secs,
        ins.inserted as f64 / secs.max(1e-9)
    );
    Ok(ins)
}
