//! Each function binary on its own: its cold start against the runtime emulator, and the size of
//! its Lambda zip.

use anyhow::{Context, Result};
use serde_json::json;

use super::measure::median;
use super::table::{COLD_START, FUNCTIONS, SIZE};
use crate::bench::{Ctx, Row};

/// Spawns each function binary (built here, on its own) `--spawns` times and takes the medians.
pub async fn cold_starts(ctx: &Ctx) -> Result<Vec<Row>> {
    let root = crate::env::repo_root();
    let release = ctx.opts.release_cold_start;
    let env: Vec<(String, String)> = crate::env::file_vars()
        .into_iter()
        .map(|(k, _)| (k.clone(), std::env::var(&k).unwrap_or_default()))
        .collect();
    let mut rows = Vec::new();
    for f in FUNCTIONS {
        let row = Row::new(&COLD_START, "binary")
            .fill("function", f.name)
            .fill("profile", if release { "release" } else { "dev-profile" })
            .target(f.cold_start);
        let bin = if ctx.opts.reuse_binaries {
            match crate::build::built_alone(f.name, release) {
                Some(bin) => bin,
                None => {
                    let why = "not built on its own yet (bash local/test.sh builds it)";
                    rows.push(row.status(why.into()));
                    continue;
                }
            }
        } else {
            crate::build::function_alone(f.name, release)?
        };
        let event = std::fs::read_to_string(root.join(f.event))
            .with_context(|| format!("reading {}, the cold-start event of {}", f.event, f.name))?;
        let spawns = if ctx.opts.quick { 3 } else { ctx.opts.spawns.max(10) };
        let mut runs = Vec::new();
        for _ in 0..spawns {
            runs.push(crate::bench::lambda_emulator::cold_start(&bin, f.name, &event, &env).await?);
        }
        let (init, first, total) = (
            median(runs.iter().map(|c| c.init_ms)),
            median(runs.iter().map(|c| c.first_invoke_ms)),
            median(runs.iter().map(|c| c.total_ms)),
        );
        // A scheduled job's first invocation is the job itself (an export, an index build).
        let job = matches!(f.name, "snapshot" | "indexer");
        rows.push(
            row.figure(
                    if job {
                        format!("init {init:.1} ms (first invoke, the job itself: {first:.1} ms; median of {spawns})")
                    } else {
                        format!("init {init:.1} ms + first invoke {first:.1} ms = {total:.1} ms (median of {spawns})")
                    },
                    if job { init } else { total },
                )
                .detail(json!({"runs": runs})),
        );
    }
    Ok(rows)
}

/// The zips `make build` leaves in `target/lambda/<name>/`; a missing one says so.
pub async fn sizes(_ctx: &Ctx) -> Result<Vec<Row>> {
    let root = crate::env::repo_root();
    let mut rows = Vec::new();
    for f in FUNCTIONS {
        let zip = root.join("target/lambda").join(f.name).join("bootstrap.zip");
        let row = Row::new(&SIZE, "artifact").fill("function", f.name).target(f.zipped);
        rows.push(match std::fs::metadata(&zip) {
            Ok(m) => row.figure(format!("{:.2} MB", m.len() as f64 / 1e6), m.len() as f64 / 1e6),
            Err(_) => row.status("not built yet (make build)".to_string()),
        });
    }
    Ok(rows)
}
