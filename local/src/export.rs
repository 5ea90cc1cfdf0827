//! `quiver-local snapshot` (this module is `export`, apart from the `snapshot` function and
//! `quiver::snapshot`): one export of `user_events` to Parquet in S3, exactly as the scheduled
//! `snapshot` function does it, with a JSON report on stdout.

use ::snapshot::{ExportReport, Snapshot, SnapshotSettings, Window};
use chrono::{DateTime, Utc};

fn time(name: &str, v: Option<&str>) -> anyhow::Result<Option<DateTime<Utc>>> {
    v.map(|s| {
        quiver::time::parse_rfc3339(s).ok_or_else(|| {
            anyhow::anyhow!(
                "--{name}: {s:?} is not an RFC 3339 timestamp, e.g. 2026-10-01T00:00:00Z"
            )
        })
    })
    .transpose()
}

/// Exports `[from, to)` (everything by default) under `prefix` (default `snapshots/user_events`),
/// keeping the newest `keep` versions (default `QUIVER_KEEP_VERSIONS`, else 3).
pub async fn run(
    prefix: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
    keep: Option<usize>,
) -> anyhow::Result<ExportReport> {
    let window = Window { from: time("from", from)?, to: time("to", to)? };
    // `analytics` serves the newest version at its prefix: a window published there would replace
    // the full snapshot.
    anyhow::ensure!(
        window == Window::default() || prefix.is_some(),
        "--from/--to export a part of the table: give it its own --prefix, so that it does not replace the snapshot analytics serves"
    );
    if let (Some(a), Some(b)) = (window.from, window.to) {
        anyhow::ensure!(a < b, "--to must be later than --from");
    }
    let cfg = quiver::Config::from_env()?;
    let mut settings = SnapshotSettings::from_env(&cfg)?;
    if let Some(p) = prefix {
        settings = settings.with_prefix(p);
    }
    if let Some(k) = keep {
        anyhow::ensure!(k >= 1, "--keep must be at least 1");
        settings.retention.keep = k;
    }
    let report = Snapshot::with_settings(&cfg, settings).await?.run(&window).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(report)
}
