//! `quiver-local index`: builds a search index from a generated corpus or a local JSONL file and
//! publishes it as the `indexer` function does (same code), so `search` serves it.

use std::path::PathBuf;

use quiver::search::Corpus;

/// What to index; `file` wins over `corpus`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Generated corpus: `reference` (the reference benchmark's templated documents) or `realistic`.
    #[arg(long, default_value = "reference", value_parser = ["reference", "realistic"])]
    pub corpus: String,
    /// Number of generated documents (1 to 1,000,000).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub docs: u64,
    /// A JSONL file of `{id, title, body, tags?, created_at?}` instead of a generated corpus.
    #[arg(long)]
    pub file: Option<PathBuf>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Builds and publishes; returns the indexer's report (the benchmark reads its timings).
pub async fn run(opts: Options) -> anyhow::Result<indexer::IndexReport> {
    let cfg = quiver::Config::from_env()?;
    let ix = indexer::Indexer::new(&cfg).await?;
    let source = match opts.file {
        Some(path) => indexer::Source::File(path),
        None => indexer::Source::Corpus {
            corpus: Corpus::parse(&opts.corpus)
                .ok_or_else(|| anyhow::anyhow!("--corpus must be reference or realistic"))?,
            docs: opts.docs,
            seed: opts.seed,
        },
    };
    let r = ix.run(source).await?;
    println!(
        "indexed {} documents from {} in {:.1} ms ({:.0} docs/s, {} segment(s), {} thread(s)), merged in {:.1} ms; \
         bundle {} bytes packed in {:.1} ms, uploaded in {:.1} ms; published {}/{} (total {:.0} ms)",
        r.docs,
        r.source,
        r.index_ms,
        r.docs_per_s,
        r.segments,
        r.threads,
        r.merge_ms,
        r.bundle_bytes,
        r.pack_ms,
        r.upload_ms,
        ix.settings().prefix,
        r.version,
        r.total_ms
    );
    if !r.deleted.is_empty() {
        println!("deleted old versions: {}", r.deleted.join(", "));
    }
    Ok(r)
}
