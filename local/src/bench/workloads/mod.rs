//! The workloads, each measured through HTTP against `quiver-local serve` (and, with `--lambda`,
//! through `cargo lambda watch`), or in-process where the figure is a build time. What each is
//! called, its reference figure and its target are in [`table`]; the files beside it measure them,
//! one group of workloads each. A route that does not answer fails its group: never skipped
//! silently.

mod binaries;
mod cache;
mod insert;
mod measure;
mod pg;
mod process;
mod search;
mod soak;
mod switch;
mod table;

pub use table::Workload;

use anyhow::Result;

use super::{Ctx, Options, Row};

/// Makes sure the data the workloads read is there: `opts.events` events, a snapshot of exactly
/// those, and an index of `opts.docs` reference documents. Each step is skipped when it is done.
pub async fn prepare(opts: &Options) -> Result<()> {
    let cfg = quiver::Config::from_env()?;
    let pg = quiver::pg::Pg::new(&cfg)?;
    quiver::migrate::run(&pg).await?;
    let events = events(opts);
    let seeded = quiver::ingest::count(&pg).await? != events as i64;
    if seeded {
        crate::seed::run(events, 42, false).await?;
    }
    let storage = quiver::storage::Storage::new(&cfg).await?;
    use quiver::artifact::fetch_manifest as fetch;
    let snapshots = quiver::snapshot::SnapshotSettings::from_env(&cfg)?.prefix;
    let published = fetch::<quiver::snapshot::SnapshotMeta>(&storage, &snapshots, None).await;
    if seeded || published.ok().flatten().map(|(m, _)| m.meta.row_count) != Some(events) {
        eprintln!("bench: publishing a snapshot of {events} events");
        crate::export::run(None, None, None, None).await?;
    }
    let indexes = indexer::IndexerSettings::from_env(&cfg)?.prefix;
    let published = fetch::<quiver::search::IndexMeta>(&storage, &indexes, None).await;
    if published.ok().flatten().map(|(m, _)| m.meta.doc_count) != Some(opts.docs) {
        eprintln!("bench: publishing an index of {} reference documents", opts.docs);
        let o = crate::index::Options {
            corpus: "reference".into(),
            docs: opts.docs,
            file: None,
            seed: 42,
        };
        crate::index::run(o).await?;
    }
    Ok(())
}

/// The events in PostgreSQL while the workloads run (`--quick` caps them at the reference's 7,206).
fn events(opts: &Options) -> u64 {
    if opts.quick {
        opts.events.min(7206)
    } else {
        opts.events
    }
}

/// Puts the table back to `events` rows after the write workloads added theirs.
async fn reseed(opts: &Options) -> Result<()> {
    crate::seed::run(events(opts), 42, false).await.map(|_| ())
}

/// Runs every group of workloads that `--only` asks for, in order; a group that fails is one
/// `failed` row and the run goes on.
pub async fn run_all(ctx: &Ctx) -> Vec<Row> {
    let mut rows = Vec::new();
    let wanted = |id: &str| ctx.opts.only.as_deref().is_none_or(|o| id.contains(o));
    macro_rules! step {
        ($id:expr, $f:expr) => {
            if wanted($id) {
                eprintln!("bench: {}", $id);
                match $f.await {
                    Ok(mut r) => rows.append(&mut r),
                    Err(e) => rows.push(Row::failed($id, &e)),
                }
            }
        };
    }
    step!("cache-hit", cache::hit(ctx));
    step!("cache-miss", cache::miss(ctx));
    step!("process", process::run(ctx));
    step!("index", search::indexing(ctx));
    step!("search", search::queries(ctx));
    step!("pg-encode", pg::encode(ctx));
    step!("pg-decode", pg::decode(ctx));
    step!("insert", insert::run(ctx));
    // A one-second soak says nothing about memory; `--quick` runs it only when asked for by name.
    if !ctx.opts.quick || ctx.opts.only.is_some() {
        step!("soak", soak::run(ctx));
    }
    step!("switch", switch::run(ctx));
    step!("cold-start", binaries::cold_starts(ctx));
    step!("size", binaries::sizes(ctx));
    if wanted("insert") || wanted("soak") {
        if let Err(e) = reseed(&ctx.opts).await {
            eprintln!("bench: re-seeding after the write workloads failed: {e:#}");
        }
    }
    rows
}
