//! The results: a terminal table in the reference's shape (reference, Quiver, ratio), a JSON and a
//! Markdown file under `bench/results/`, and SVG bar charts.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

use super::workloads::Workload;
use super::Ctx;

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: String,
    pub workload: String,
    /// `serve` (quiver-local serve), `lambda` (cargo lambda watch), `binary` or `artifact`.
    pub path: String,
    pub reference: String,
    pub reference_ms: Option<f64>,
    pub quiver: String,
    pub quiver_ms: Option<f64>,
    pub target: String,
    pub status: String,
    pub detail: Value,
}

impl Row {
    /// A row of `w` measured along `path`; its `{…}` placeholders are filled with [`Row::fill`].
    pub fn new(w: &Workload, path: &str) -> Self {
        Row {
            id: w.id.into(),
            workload: w.name.into(),
            path: path.into(),
            reference: w.reference.into(),
            reference_ms: w.reference_ms,
            quiver: String::new(),
            quiver_ms: None,
            target: w.target.into(),
            status: "measured".into(),
            detail: Value::Null,
        }
    }

    /// The row of a group of workloads that failed as a whole, saying why.
    pub fn failed(group: &str, error: &anyhow::Error) -> Self {
        let blank = Workload { id: "", name: "", reference: "", reference_ms: None, target: "" };
        Row { id: group.into(), workload: group.into(), ..Row::new(&blank, "serve") }
            .status(format!("failed: {error:#}"))
    }

    /// Puts `value` in place of `{key}` in the id and the name: the events, the function measured.
    pub fn fill(mut self, key: &str, value: impl std::fmt::Display) -> Self {
        let (key, value) = (format!("{{{key}}}"), value.to_string());
        self.id = self.id.replace(&key, &value);
        self.workload = self.workload.replace(&key, &value);
        self
    }

    /// The target of a workload whose target is per function.
    pub fn target(mut self, target: &str) -> Self {
        self.target = target.into();
        self
    }

    /// Quotes `note` instead of the reference where its figure was for something else.
    pub fn not_comparable(mut self, note: String) -> Self {
        self.reference = note;
        self.reference_ms = None;
        self
    }

    pub fn figure(mut self, text: String, ms: f64) -> Self {
        self.quiver = text;
        self.quiver_ms = Some(ms);
        self
    }

    pub fn status(mut self, s: String) -> Self {
        self.quiver = s.clone();
        self.status = s;
        self
    }

    pub fn detail(mut self, v: Value) -> Self {
        self.detail = v;
        self
    }

    /// How many times faster than the reference, where both are times.
    pub fn ratio(&self) -> String {
        match (self.reference_ms, self.quiver_ms, self.path.as_str()) {
            (Some(r), Some(q), p) if q > 0.0 && p != "artifact" => match r / q {
                x if x >= 10.0 => format!("{x:.0}×"),
                x => format!("{x:.1}×"),
            },
            _ => "—".into(),
        }
    }
}

fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| workload | path | reference (Python stack, M2 Max) | Quiver (this machine) | ratio | target |");
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            r.workload,
            r.path,
            r.reference,
            r.quiver,
            r.ratio(),
            r.target
        );
    }
    s
}

const NOTES: &str = "\
- Reference figures are quoted from the Python stack's write-up (Apple M2 Max); Quiver's were measured here, on the machine below, after a warm-up.\n\
- The reference's \"509× faster\" compared a cold first call with warm later calls; nothing here does that.\n\
- The reference's cache test summarized 3 records, not 50k; our MISS rows run the real summary over the stated number of events.\n\
- Latency rows run one connection with client and server pinned to different cores (taskset) where marked \"pinned\"; throughput rows run unpinned at the stated connections.\n\
- Cold starts spawn the function binary against a minimal Lambda runtime API built into quiver-local (median of N spawns; init = spawn → first `next`). `snapshot` and `indexer` do their whole job (an export, an index build) in the first invocation, so their figure is the init alone.\n";

pub fn write(ctx: &Ctx, rows: &[Row], took: Duration) -> Result<()> {
    let m = super::machine();
    let out = ctx.opts.out.clone().unwrap_or_else(|| crate::env::repo_root().join("bench/results"));
    std::fs::create_dir_all(&out)?;
    let date = chrono_date();
    // A partial or differently sized run gets its own files instead of replacing the full table.
    let mut stem = format!("{date}-{}", m.host);
    if ctx.opts.quick {
        stem.push_str("-quick");
    }
    if ctx.opts.events != 7206 {
        stem.push_str(&format!("-{}ev", ctx.opts.events));
    }
    if ctx.opts.docs != 10_000 {
        stem.push_str(&format!("-{}docs", ctx.opts.docs));
    }
    if let Some(only) = &ctx.opts.only {
        stem.push_str(&format!(
            "-{}",
            only.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")
        ));
    }
    if ctx.opts.release_cold_start {
        stem.push_str("-release");
    }
    let params = serde_json::json!({
        "events": ctx.opts.events, "docs": ctx.opts.docs, "duration_s": ctx.opts.duration,
        "connections": ctx.opts.connections, "quick": ctx.opts.quick, "lambda": ctx.opts.lambda, "only": ctx.opts.only,
    });
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let doc = serde_json::json!({"date": date, "command": command, "machine": m, "parameters": params, "took_s": took.as_secs_f64(), "rows": rows});
    std::fs::write(out.join(format!("{stem}.json")), serde_json::to_string_pretty(&doc)?)?;
    let md = format!(
        "# Quiver benchmark, {date}\n\nCommand: `{command}`\n\nMachine: {} ({} cores, {} GiB, {}), {}, commit {}, {}.\n\n{}\n{}\nCharts: [latency]({stem}-latency.svg), [throughput]({stem}-throughput.svg), [cold start]({stem}-cold-start.svg).\n",
        m.cpu, m.cores, m.memory_gib, m.idle, m.rustc, m.commit, m.profile, table(rows), NOTES
    );
    std::fs::write(out.join(format!("{stem}.md")), &md)?;
    std::fs::write(out.join(format!("{stem}-latency.svg")), latency_chart(rows))?;
    std::fs::write(
        out.join(format!("{stem}-throughput.svg")),
        bars("Throughput (req/s)", &series(rows, |d| d["throughput"]["rps"].as_f64())),
    )?;
    std::fs::write(
        out.join(format!("{stem}-cold-start.svg")),
        bars(
            "Cold start (ms, median)",
            &rows
                .iter()
                .filter(|r| r.id.starts_with("cold-start-"))
                .filter_map(|r| {
                    Some((r.id.trim_start_matches("cold-start-").to_string(), r.quiver_ms?))
                })
                .collect::<Vec<_>>(),
        ),
    )?;
    println!("\n{}", table(rows));
    println!("{NOTES}");
    println!("results: {}", out.join(format!("{stem}.md")).display());
    Ok(())
}

fn series(rows: &[Row], f: impl Fn(&Value) -> Option<f64>) -> Vec<(String, f64)> {
    rows.iter().filter_map(|r| Some((r.id.clone(), f(&r.detail)?))).collect()
}

fn chrono_date() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

fn latency_chart(rows: &[Row]) -> String {
    let mut bars_in = Vec::new();
    for r in rows {
        for (k, q) in [("p50", "p50_us"), ("p99", "p99_us")] {
            if let Some(v) = r.detail["latency"][q].as_f64() {
                bars_in.push((format!("{} {k}", r.id), v));
            }
        }
    }
    bars("Latency at one connection (µs)", &bars_in)
}

/// A horizontal bar chart as plain SVG.
fn bars(title: &str, data: &[(String, f64)]) -> String {
    let (w, row_h, left) = (820.0, 22.0, 240.0);
    let h = 50.0 + row_h * data.len().max(1) as f64;
    let max = data.iter().map(|d| d.1).fold(0.0f64, f64::max).max(1e-9);
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<text x=\"10\" y=\"20\" font-size=\"15\">{}</text>\n", esc(title));
    for (i, (label, v)) in data.iter().enumerate() {
        let y = 35.0 + i as f64 * row_h;
        let bw = (w - left - 120.0) * v / max;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text><rect x=\"{left}\" y=\"{y}\" width=\"{bw:.1}\" height=\"{}\" fill=\"#4a7bd0\"/><text x=\"{}\" y=\"{}\">{v:.1}</text>",
            left - 8.0,
            y + 14.0,
            esc(label),
            row_h - 6.0,
            left + bw + 6.0,
            y + 14.0
        );
    }
    if data.is_empty() {
        s.push_str("<text x=\"10\" y=\"45\">nothing measured in this run</text>\n");
    }
    s.push_str("</svg>\n");
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
