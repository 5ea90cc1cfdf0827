//! Full-text search over a Tantivy index that is built once, packed into one `index.tar.zst`
//! bundle, published to S3 and opened read-only by every search instance.
//!
//! - [`schema`]: `id` (u64, fast, stored), `title` and `body` (text with positions, stored),
//!   `tags` (facet), `created_at` (fast date, seconds).
//! - Sources: [`reference_doc`] (the reference benchmark's templated corpus), [`Realistic`]
//!   (Zipf-distributed English-like text, deterministic per seed), [`JsonlDocs`] (user data).
//! - [`build`] indexes into a scratch directory without fsync (the result is packed and uploaded,
//!   never served from there), merging only when it ends with more than a few segments;
//!   [`pack`] / [`unpack`] move it as a bundle.
//! - [`IndexHandle`] is what a search instance keeps: one `Searcher` for the life of a version.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tantivy::collector::{Count, TopDocs};
use tantivy::directory::error::{DeleteError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    AntiCallToken, FileHandle, MmapDirectory, TerminatingWrite, WatchCallback, WatchHandle,
    WritePtr,
};
use tantivy::indexer::{IndexWriterOptions, NoMergePolicy};
use tantivy::query::{
    BooleanQuery, ConstScoreQuery, Occur, Query, QueryParser, RangeQuery, TermQuery,
};
use tantivy::schema::document::{ReferenceValue, ReferenceValueLeaf, Value};
use tantivy::schema::{
    DateOptions, DateTimePrecision, Facet, FacetOptions, Field, IndexRecordOption, NumericOptions,
    Schema, TantivyDocument, TextFieldIndexing, TextOptions,
};
use tantivy::snippet::SnippetGenerator;
use tantivy::{
    DateTime, Directory, Document, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, Term,
};

use crate::error::{Error, FieldError, Result};
use crate::generate::Rng;

/// The dependency named in 503s about a bundle that cannot be unpacked or opened.
pub const DEPENDENCY: &str = "index";
/// The one file of a published index version.
pub const BUNDLE: &str = "index.tar.zst";
/// Where the indexer publishes and the search function looks by default.
pub const DEFAULT_PREFIX: &str = "indexes/docs";

pub const ID: Field = Field::from_field_id(0);
pub const TITLE: Field = Field::from_field_id(1);
pub const BODY: Field = Field::from_field_id(2);
pub const TAGS: Field = Field::from_field_id(3);
pub const CREATED_AT: Field = Field::from_field_id(4);

/// Title matches weigh double, so a document titled with the query outranks one that only
/// mentions its words in a long body.
pub const TITLE_BOOST: f32 = 2.0;
/// Characters of `body` in a snippet.
pub const SNIPPET_CHARS: usize = 160;
/// Longest accepted JSONL line (one document).
pub const MAX_LINE_BYTES: usize = 1 << 20;
pub const MAX_TITLE_BYTES: usize = 4096;
pub const MAX_TAGS: usize = 32;
pub const MAX_TAG_CHARS: usize = 64;
/// A bundle may not unpack to more than this (a zstd bomb stops here, not at a full disk).
pub const MAX_UNPACKED_BYTES: u64 = 16 << 30;
const MAX_BUNDLE_FILES: usize = 10_000;
/// zstd level of the bundle: index files are already compressed, so a higher level buys little.
const BUNDLE_ZSTD_LEVEL: i32 = 3;

/// The schema; field ids are fixed by the order here and match the constants above.
pub fn schema() -> Schema {
    let mut b = Schema::builder();
    let text = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("default")
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_stored();
    b.add_u64_field("id", NumericOptions::default().set_fast().set_stored());
    b.add_text_field("title", text.clone());
    b.add_text_field("body", text);
    b.add_facet_field("tags", FacetOptions::default());
    b.add_date_field(
        "created_at",
        DateOptions::default().set_fast().set_precision(DateTimePrecision::Seconds),
    );
    b.build()
}

/// One document. Tags are single-level facets (`/rust`), kept as their names; `created_at` is
/// seconds since the Unix epoch. Implements Tantivy's `Document` so the writer reads it in place.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub id: u64,
    pub title: String,
    pub body: String,
    pub tags: Vec<Cow<'static, str>>,
    pub created_at: Option<i64>,
}

/// A leaf value borrowed from a [`Doc`].
#[derive(Debug, Clone)]
pub struct Leaf<'a>(ReferenceValueLeaf<'a>);

impl<'a> Value<'a> for Leaf<'a> {
    type ArrayIter = std::iter::Empty<Self>;
    type ObjectIter = std::iter::Empty<(&'a str, Self)>;

    fn as_value(&self) -> ReferenceValue<'a, Self> {
        ReferenceValue::Leaf(self.0.clone())
    }
}

/// The fields of a [`Doc`] in schema order, without allocating.
pub struct DocFields<'a> {
    doc: &'a Doc,
    at: usize,
}

impl<'a> Iterator for DocFields<'a> {
    type Item = (Field, Leaf<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let at = self.at;
            self.at += 1;
            let d = self.doc;
            return Some(match at {
                0 => (ID, Leaf(ReferenceValueLeaf::U64(d.id))),
                1 => (TITLE, Leaf(ReferenceValueLeaf::Str(&d.title))),
                2 => (BODY, Leaf(ReferenceValueLeaf::Str(&d.body))),
                3 => match d.created_at {
                    Some(s) => (
                        CREATED_AT,
                        Leaf(ReferenceValueLeaf::Date(DateTime::from_timestamp_secs(s))),
                    ),
                    None => continue,
                },
                // A single-level facet's encoded form is its name (validated by `normalize_tag`).
                n => (TAGS, Leaf(ReferenceValueLeaf::Facet(d.tags.get(n - 4)?))),
            });
        }
    }
}

impl Document for Doc {
    type Value<'a> = Leaf<'a>;
    type FieldsValuesIter<'a> = DocFields<'a>;

    fn iter_fields_and_values(&self) -> DocFields<'_> {
        DocFields { doc: self, at: 0 }
    }
}

/// A tag as it is indexed: trimmed, lowercase, 1-64 of `a-z 0-9 . _ + # -`. `None` if invalid.
pub fn normalize_tag(raw: &str) -> Option<Cow<'_, str>> {
    let t = raw.trim();
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '#' | '-');
    if t.is_empty() || t.len() > MAX_TAG_CHARS || !t.chars().all(ok) {
        return None;
    }
    Some(if t.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(t.to_ascii_lowercase())
    } else {
        Cow::Borrowed(t)
    })
}

// ---------------------------------------------------------------------------------------------
// Corpora

/// Which generated corpus to index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Corpus {
    /// The reference benchmark's templated documents ("Doc i - Performance Optimization").
    Reference,
    /// English-like text with a Zipf word distribution; see [`Realistic`].
    Realistic,
}

impl Corpus {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reference" => Some(Corpus::Reference),
            "realistic" => Some(Corpus::Realistic),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Corpus::Reference => "reference",
            Corpus::Realistic => "realistic",
        }
    }

    /// Documents `0..count` of this corpus.
    pub fn docs(self, count: u64, seed: u64) -> Box<dyn Iterator<Item = Result<Doc>> + Send> {
        match self {
            Corpus::Reference => Box::new((0..count).map(|i| Ok(reference_doc(i)))),
            Corpus::Realistic => {
                let r = Realistic::new(seed);
                Box::new((0..count).map(move |i| Ok(r.doc(i))))
            }
        }
    }
}

/// The reference corpus's topics: document `i` is about topic `i % 5`, and tagged with its tag.
pub const REFERENCE_TOPICS: [(&str, &str); 5] = [
    ("caching strategies", "caching"),
    ("query planning", "databases"),
    ("memory layout", "memory"),
    ("async runtimes", "async"),
    ("index compression", "search"),
];
/// Document `i` of the reference corpus was created `i` hours after this (2026-01-01T00:00:00Z).
pub const REFERENCE_START: i64 = 1_767_225_600;

/// Document `i` of the reference corpus. Every title contains "Performance", so a search for
/// `performance` over N documents has exactly N hits.
pub fn reference_doc(i: u64) -> Doc {
    let (topic, tag) = REFERENCE_TOPICS[(i % 5) as usize];
    let mut title = String::with_capacity(40);
    let _ = write!(title, "Doc {i} - Performance Optimization");
    let mut body = String::with_capacity(200);
    let _ = write!(
        body,
        "Document {i} is about {topic}. It shows how {topic} change the latency and the throughput of a \
         service, with measurements taken before and after each change."
    );
    Doc {
        id: i,
        title,
        body,
        tags: vec![Cow::Borrowed(tag)],
        created_at: Some(REFERENCE_START + i as i64 * 3600),
    }
}

/// The most frequent English words, in rank order; they head the realistic vocabulary.
const COMMON: &[&str] = &[
    "the", "of", "and", "to", "a", "in", "is", "it", "that", "for", "was", "on", "are", "as",
    "with", "be", "at", "by", "this", "have", "from", "or", "one", "had", "not", "but", "what",
    "all", "were", "when", "we", "there", "can", "an", "your", "which", "their", "said", "if",
    "do", "will", "each", "about", "how", "up", "out", "them", "then", "she", "many", "some", "so",
    "these", "would", "other", "into", "has", "more", "her", "two", "like", "him", "see", "time",
    "could", "no", "make", "than", "first", "been", "its", "who", "now", "people", "my", "made",
    "over", "did", "down", "only", "way", "find", "use", "may", "water", "long", "little", "very",
    "after", "words", "called", "just", "where", "most", "know", "get", "through", "back", "much",
    "before", "also", "around",
];
/// Domain words placed at mid ranks, so that benchmark queries match a realistic share of documents.
const DOMAIN: &[&str] = &[
    "performance",
    "search",
    "index",
    "query",
    "latency",
    "throughput",
    "cache",
    "memory",
    "database",
    "network",
    "server",
    "client",
    "storage",
    "compression",
    "benchmark",
    "request",
    "response",
    "error",
    "system",
    "data",
    "service",
    "function",
    "lambda",
    "snapshot",
    "segment",
    "document",
    "vector",
    "thread",
    "runtime",
    "python",
    "rust",
    "engine",
    "scale",
    "cluster",
    "replica",
    "stream",
    "batch",
    "event",
    "record",
    "schema",
];
const SYLLABLES: &[&str] = &[
    "ba", "be", "bi", "bo", "ca", "ce", "co", "da", "de", "di", "do", "fa", "fe", "fi", "ga", "ge",
    "go", "ha", "he", "hi", "la", "le", "li", "lo", "ma", "me", "mi", "mo", "na", "ne", "ni", "no",
    "pa", "pe", "pi", "po", "ra", "re", "ri", "ro", "sa", "se", "si", "so", "ta", "te", "ti", "to",
    "va", "ve", "vi", "tor", "ment", "tion", "ly", "er", "an", "en", "in", "on", "al", "el", "ar",
    "or", "ic", "ous", "ing", "ed", "st", "ver", "der", "ter", "per",
];
/// Words in the realistic vocabulary.
pub const VOCABULARY: usize = 40_000;
const TITLE_SKIP: usize = 100;
/// Tags of the realistic corpus, most frequent first.
pub const REALISTIC_TAGS: &[&str] = &[
    "news",
    "engineering",
    "science",
    "business",
    "health",
    "sports",
    "culture",
    "travel",
    "food",
    "politics",
    "education",
    "finance",
    "music",
    "film",
    "books",
    "games",
    "design",
    "history",
    "nature",
    "space",
    "cars",
    "fashion",
    "art",
    "law",
];
/// `created_at` of the realistic corpus spans 2025 (from 2025-01-01T00:00:00Z).
pub const REALISTIC_START: i64 = 1_735_689_600;

/// O(1) sampling from a discrete distribution (Vose's alias method): a binary search over 40k
/// cumulative weights per word would dominate generation.
struct Alias {
    prob: Vec<u32>,
    alias: Vec<u32>,
}

impl Alias {
    fn new(weights: &[f64]) -> Self {
        let n = weights.len();
        let sum: f64 = weights.iter().sum();
        let mut p: Vec<f64> = weights.iter().map(|w| w * n as f64 / sum).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| p[i] < 1.0);
        let mut prob = vec![u32::MAX; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            prob[s] = (p[s] * u32::MAX as f64) as u32;
            alias[s] = l as u32;
            p[l] -= 1.0 - p[s];
            if p[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        Alias { prob, alias }
    }

    #[inline]
    fn sample(&self, rng: &mut Rng) -> usize {
        let r = rng.next_u64();
        let i = (((r >> 32) * self.prob.len() as u64) >> 32) as usize;
        if (r as u32) < self.prob[i] {
            i
        } else {
            self.alias[i] as usize
        }
    }
}

struct Vocab {
    words: Vec<Box<str>>,
    body: Alias,
    title: Alias,
    tags: Alias,
}

/// The vocabulary is the same for every seed, so that a query means the same thing across corpora.
fn vocab() -> &'static Vocab {
    static V: OnceLock<Vocab> = OnceLock::new();
    V.get_or_init(|| {
        let mut words: Vec<Box<str>> = COMMON.iter().map(|w| Box::from(*w)).collect();
        let mut seen: HashSet<Box<str>> = words.iter().cloned().collect();
        seen.extend(DOMAIN.iter().map(|w| Box::from(*w)));
        let mut rng = Rng::new(0x005E_ED0F_0A5C);
        let mut synthetic = Vec::with_capacity(VOCABULARY);
        while synthetic.len() + words.len() + DOMAIN.len() < VOCABULARY {
            let mut w = String::with_capacity(12);
            for _ in 0..2 + rng.below(3) {
                w.push_str(SYLLABLES[rng.below(SYLLABLES.len() as u64) as usize]);
            }
            let w: Box<str> = w.into();
            if seen.insert(w.clone()) {
                synthetic.push(w);
            }
        }
        // Domain words go every 40 ranks from rank 200: common enough to match, rare enough to rank.
        let mut synthetic = synthetic.into_iter();
        let mut domain = DOMAIN.iter();
        while words.len() < VOCABULARY {
            let next = if words.len() >= 200 && words.len().is_multiple_of(40) {
                domain.next().map(|w| Box::from(*w))
            } else {
                None
            };
            match next.or_else(|| synthetic.next()) {
                Some(w) => words.push(w),
                None => break,
            }
        }
        let zipf: Vec<f64> = (1..=words.len()).map(|k| 1.0 / (k as f64).powf(1.05)).collect();
        let tag_w: Vec<f64> = (1..=REALISTIC_TAGS.len()).map(|k| 1.0 / k as f64).collect();
        Vocab {
            body: Alias::new(&zipf),
            title: Alias::new(&zipf[TITLE_SKIP..]),
            tags: Alias::new(&tag_w),
            words,
        }
    })
}

/// English-like documents: Zipf-distributed words over a 40k vocabulary, sentences of 6-18
/// words, log-normal lengths (median 200 words), 1-3 tags, `created_at` within 2025. Document
/// `i` depends only on `(seed, i)`, so any range can be generated independently.
#[derive(Debug, Clone, Copy)]
pub struct Realistic {
    seed: u64,
}

impl Realistic {
    pub fn new(seed: u64) -> Self {
        vocab();
        Realistic { seed }
    }

    /// The `rank`-th most frequent word (0-based).
    pub fn word(rank: usize) -> &'static str {
        &vocab().words[rank]
    }

    pub fn doc(&self, i: u64) -> Doc {
        let v = vocab();
        let mut rng = Rng::for_item(self.seed, i);
        let mut title = String::with_capacity(64);
        for k in 0..3 + rng.below(6) {
            if k > 0 {
                title.push(' ');
            }
            push_capitalized(&mut title, &v.words[TITLE_SKIP + v.title.sample(&mut rng)]);
        }
        let words = rng.log_normal(200.0, 0.5).clamp(20.0, 2_000.0) as usize;
        let mut body = String::with_capacity(words * 7);
        let mut left = words;
        while left > 0 {
            let n = (6 + rng.below(13) as usize).min(left);
            left -= n;
            push_capitalized(&mut body, &v.words[v.body.sample(&mut rng)]);
            for _ in 1..n {
                body.push(' ');
                body.push_str(&v.words[v.body.sample(&mut rng)]);
            }
            body.push_str(if left > 0 { ". " } else { "." });
        }
        let ntags = 1 + rng.below(3) as usize;
        let mut tags: Vec<Cow<'static, str>> = Vec::with_capacity(ntags);
        for _ in 0..ntags {
            let t = REALISTIC_TAGS[v.tags.sample(&mut rng)];
            if !tags.iter().any(|x| x == t) {
                tags.push(Cow::Borrowed(t));
            }
        }
        let created_at = Some(REALISTIC_START + rng.below(365 * 86_400) as i64);
        Doc { id: i, title, body, tags, created_at }
    }
}

fn push_capitalized(out: &mut String, word: &str) {
    let mut chars = word.chars();
    if let Some(c) = chars.next() {
        out.push(c.to_ascii_uppercase());
        out.push_str(chars.as_str());
    }
}

// ---------------------------------------------------------------------------------------------
// JSONL

#[derive(Deserialize)]
struct Line<'a> {
    id: Option<u64>,
    #[serde(borrow)]
    title: Option<Cow<'a, str>>,
    #[serde(borrow)]
    body: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tags: Option<Vec<Cow<'a, str>>>,
    #[serde(default)]
    created_at: Option<serde_json::Value>,
}

fn line_error(line: u64, field: &str, problem: impl Into<String>) -> Error {
    let at =
        if field.is_empty() { format!("line {line}") } else { format!("line {line}: {field}") };
    let fe = FieldError::new(at, problem);
    Error::invalid(format!("{}: {}", fe.at, fe.problem), vec![fe])
}

/// Parses one JSONL line `{id, title, body, tags?, created_at?}`; errors name the line and field.
/// `created_at` is RFC 3339 or whole seconds since the epoch.
pub fn parse_doc(bytes: &[u8], line: u64) -> Result<Doc> {
    let l: Line = serde_json::from_slice(bytes)
        .map_err(|e| line_error(line, "", format!("not a valid document: {e}")))?;
    let id = l
        .id
        .ok_or_else(|| line_error(line, "id", "is required (a whole number from 0 to 2^64-1)"))?;
    let title = l.title.ok_or_else(|| line_error(line, "title", "is required"))?;
    if title.len() > MAX_TITLE_BYTES {
        return Err(line_error(line, "title", format!("must be at most {MAX_TITLE_BYTES} bytes")));
    }
    let body = l.body.ok_or_else(|| line_error(line, "body", "is required"))?;
    let raw_tags = l.tags.unwrap_or_default();
    if raw_tags.len() > MAX_TAGS {
        return Err(line_error(line, "tags", format!("at most {MAX_TAGS} tags")));
    }
    let mut tags = Vec::with_capacity(raw_tags.len());
    for (k, t) in raw_tags.iter().enumerate() {
        let t = normalize_tag(t).ok_or_else(|| {
            line_error(
                line,
                &format!("tags[{k}]"),
                format!("must be 1-{MAX_TAG_CHARS} of a-z 0-9 . _ + # -"),
            )
        })?;
        if !tags.iter().any(|x: &Cow<str>| x == &t) {
            tags.push(Cow::Owned(t.into_owned()));
        }
    }
    let created_at = match l.created_at {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => {
            Some(n.as_i64().filter(|s| (0..=253_402_300_799).contains(s)).ok_or_else(|| {
                line_error(
                    line,
                    "created_at",
                    "seconds must be a whole number from 0 to 253402300799",
                )
            })?)
        }
        Some(serde_json::Value::String(s)) => Some(parse_time(&s).ok_or_else(|| {
            line_error(line, "created_at", "must be RFC 3339, e.g. 2026-01-31T12:00:00Z")
        })?),
        Some(_) => {
            return Err(line_error(
                line,
                "created_at",
                "must be an RFC 3339 string or seconds since the epoch",
            ))
        }
    };
    Ok(Doc { id, title: title.into_owned(), body: body.into_owned(), tags, created_at })
}

/// Seconds since the epoch of an RFC 3339 time or a `YYYY-MM-DD` date (midnight UTC).
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp());
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp())
}

/// Documents from JSONL, one per line (blank lines skipped), read with one reused buffer. A
/// repeated `id` is an error: the index would return both copies.
pub struct JsonlDocs<R> {
    reader: R,
    buf: Vec<u8>,
    line: u64,
    seen: HashSet<u64>,
    done: bool,
}

impl<R: BufRead> JsonlDocs<R> {
    pub fn new(reader: R) -> Self {
        JsonlDocs {
            reader,
            buf: Vec::with_capacity(4096),
            line: 0,
            seen: HashSet::new(),
            done: false,
        }
    }
}

impl<R: BufRead> Iterator for JsonlDocs<R> {
    type Item = Result<Doc>;

    fn next(&mut self) -> Option<Result<Doc>> {
        while !self.done {
            self.buf.clear();
            self.line += 1;
            let n = match (&mut self.reader)
                .take(MAX_LINE_BYTES as u64 + 1)
                .read_until(b'\n', &mut self.buf)
            {
                Ok(n) => n,
                Err(e) => {
                    self.done = true;
                    return Some(Err(Error::invalid(
                        format!("line {}: could not be read: {e}", self.line),
                        vec![],
                    )));
                }
            };
            if n == 0 {
                return None;
            }
            if self.buf.len() > MAX_LINE_BYTES && self.buf.last() != Some(&b'\n') {
                self.done = true;
                return Some(Err(Error::TooLarge { what: "JSONL line", limit: MAX_LINE_BYTES }));
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let doc = parse_doc(&self.buf, self.line).and_then(|d| {
                if self.seen.insert(d.id) {
                    Ok(d)
                } else {
                    Err(line_error(self.line, "id", format!("{} appears more than once", d.id)))
                }
            });
            self.done = doc.is_err();
            return Some(doc);
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Building

/// Tantivy's smallest arena per indexing thread (its `MEMORY_BUDGET_NUM_BYTES_MIN`, not exported).
const MIN_HEAP_PER_THREAD: usize = 15_000_000;

/// Writer sizing. Tantivy gives each indexing thread its own segment and memory arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BuildOptions {
    /// Memory arena per indexing thread; a segment is flushed when it fills.
    pub heap_per_thread: usize,
    pub threads: usize,
}

impl BuildOptions {
    /// Half the function's memory for the writer (Tantivy's arena grows page by page up to it),
    /// 1 GiB when not on Lambda, split over one indexing thread per core (Lambda gives a second
    /// vCPU from 1,769 MB). Each thread writes its own segment, so a build ends with about one
    /// segment per thread: few enough to search without merging them.
    pub fn for_memory(memory_mb: Option<u32>) -> Self {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let total = memory_mb.map(|mb| mb as usize * (1 << 20) / 2).unwrap_or(1 << 30);
        let threads = cpus.clamp(1, 8).min((total / MIN_HEAP_PER_THREAD).max(1));
        let heap_per_thread = (total / threads).clamp(MIN_HEAP_PER_THREAD, 4000 << 20);
        BuildOptions { heap_per_thread, threads }
    }
}

/// A build that ends with more segments than this (the heap filled up) is merged into one.
/// Up to it, merging costs more than it saves: BM25 statistics are index-wide either way, and a
/// search visits a handful of segments in microseconds.
pub const MAX_SEGMENTS: usize = 4;

/// What [`build`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Built {
    pub docs: u64,
    /// Segments after the commit (before any merge).
    pub segments: usize,
    /// Adding every document and committing (the reference's "index N documents" figure).
    pub index_ms: f64,
    pub merge_ms: f64,
    pub docs_per_s: f64,
}

fn internal(what: &str) -> impl Fn(tantivy::TantivyError) -> Error + '_ {
    move |e| Error::Internal(format!("{what}: {e}"))
}

/// Indexes `docs` into a new index at `dir` (created, must not hold an index), commits, and
/// merges to one segment when there are more than [`MAX_SEGMENTS`]. A document error (bad JSONL)
/// aborts the build and is returned as is.
/// CPU-heavy: call from a blocking thread.
pub fn build<I>(dir: &Path, docs: I, opts: &BuildOptions) -> Result<Built>
where
    I: IntoIterator<Item = Result<Doc>>,
{
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Internal(format!("create {}: {e}", dir.display())))?;
    let started = Instant::now();
    let index = Index::create(ScratchDirectory::open(dir)?, schema(), Default::default())
        .map_err(internal("creating the index"))?;
    let options = IndexWriterOptions::builder()
        .memory_budget_per_thread(opts.heap_per_thread)
        .num_worker_threads(opts.threads)
        .num_merge_threads(1)
        .build();
    let mut writer: IndexWriter<Doc> =
        index.writer_with_options(options).map_err(internal("opening the index writer"))?;
    writer.set_merge_policy(Box::new(NoMergePolicy));
    let mut count = 0u64;
    for doc in docs {
        writer.add_document(doc?).map_err(internal("adding a document"))?;
        count += 1;
    }
    writer.commit().map_err(internal("committing the index"))?;
    let index_ms = started.elapsed().as_secs_f64() * 1e3;
    let merge_started = Instant::now();
    let ids = index.searchable_segment_ids().map_err(internal("listing segments"))?;
    if ids.len() > MAX_SEGMENTS {
        writer.merge(&ids).wait().map_err(internal("merging segments"))?;
    }
    writer.wait_merging_threads().map_err(internal("finishing the merge"))?;
    let merge_ms = merge_started.elapsed().as_secs_f64() * 1e3;
    Ok(Built {
        docs: count,
        segments: ids.len(),
        index_ms,
        merge_ms,
        docs_per_s: count as f64 / (index_ms / 1e3).max(1e-9),
    })
}

/// A directory for building an index that is packed and uploaded, never served in place: files
/// go to disk (memory stays bounded by the writer heap) but nothing is fsynced, which on a real
/// disk costs more than indexing a small corpus.
#[derive(Debug, Clone)]
struct ScratchDirectory {
    root: PathBuf,
    mmap: MmapDirectory,
}

impl ScratchDirectory {
    fn open(root: &Path) -> Result<Self> {
        let mmap = MmapDirectory::open(root)
            .map_err(|e| Error::Internal(format!("open {}: {e}", root.display())))?;
        Ok(ScratchDirectory { root: root.to_path_buf(), mmap })
    }
}

struct UnsyncedFile(File);

impl Write for UnsyncedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl TerminatingWrite for UnsyncedFile {
    fn terminate_ref(&mut self, _: AntiCallToken) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl Directory for ScratchDirectory {
    fn get_file_handle(
        &self,
        path: &Path,
    ) -> std::result::Result<Arc<dyn FileHandle>, OpenReadError> {
        self.mmap.get_file_handle(path)
    }
    fn delete(&self, path: &Path) -> std::result::Result<(), DeleteError> {
        self.mmap.delete(path)
    }
    fn exists(&self, path: &Path) -> std::result::Result<bool, OpenReadError> {
        self.mmap.exists(path)
    }
    fn open_write(&self, path: &Path) -> std::result::Result<WritePtr, OpenWriteError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.root.join(path))
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    OpenWriteError::FileAlreadyExists(path.to_path_buf())
                } else {
                    OpenWriteError::wrap_io_error(e, path.to_path_buf())
                }
            })?;
        Ok(BufWriter::new(Box::new(UnsyncedFile(file))))
    }
    fn atomic_read(&self, path: &Path) -> std::result::Result<Vec<u8>, OpenReadError> {
        self.mmap.atomic_read(path)
    }
    fn atomic_write(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
        let target = self.root.join(path);
        let tmp = target.with_extension("tmp-write");
        std::fs::write(&tmp, data)?;
        std::fs::rename(tmp, target)
    }
    fn sync_directory(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn acquire_lock(
        &self,
        lock: &tantivy::directory::Lock,
    ) -> std::result::Result<tantivy::directory::DirectoryLock, tantivy::directory::error::LockError>
    {
        self.mmap.acquire_lock(lock)
    }
    fn watch(&self, cb: WatchCallback) -> tantivy::Result<WatchHandle> {
        self.mmap.watch(cb)
    }
}

// ---------------------------------------------------------------------------------------------
// Bundles

/// Packs the index files of `index_dir` (not Tantivy's lock files) into a zstd-compressed tar at
/// `out`, deterministically (sorted names, no timestamps). Returns the bundle's size.
pub fn pack(index_dir: &Path, out: &Path) -> Result<u64> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Error::Internal(format!("{what} {}: {e}", p.display()))
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(index_dir).map_err(|e| io("read", index_dir, e))? {
        let entry = entry.map_err(|e| io("read", index_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false)
            && !name.starts_with(".tantivy-")
            && !name.ends_with(".tmp-write")
        {
            names.push(name);
        }
    }
    names.sort();
    let file = File::create(out).map_err(|e| io("create", out, e))?;
    let enc =
        zstd::stream::Encoder::new(BufWriter::with_capacity(1 << 20, file), BUNDLE_ZSTD_LEVEL)
            .map_err(|e| io("compress", out, e))?;
    let mut tar = tar::Builder::new(enc);
    tar.mode(tar::HeaderMode::Deterministic);
    for name in &names {
        let path = index_dir.join(name);
        let mut f = File::open(&path).map_err(|e| io("open", &path, e))?;
        tar.append_file(name, &mut f).map_err(|e| io("pack", &path, e))?;
    }
    let mut w = tar
        .into_inner()
        .map_err(|e| io("pack", out, e))?
        .finish()
        .map_err(|e| io("compress", out, e))?;
    w.flush().map_err(|e| io("write", out, e))?;
    drop(w);
    Ok(std::fs::metadata(out).map_err(|e| io("stat", out, e))?.len())
}

/// Unpacks a bundle into `dest` (emptied first). Only plain files with plain names are
/// accepted, at most [`MAX_UNPACKED_BYTES`] in all; anything else is a corrupt bundle (503).
pub fn unpack(bundle: &Path, dest: &Path) -> Result<u64> {
    let bad = |why: String| {
        Error::unavailable(DEPENDENCY, format!("bundle {} is unusable: {why}", bundle.display()))
    };
    let _ = std::fs::remove_dir_all(dest);
    std::fs::create_dir_all(dest)
        .map_err(|e| Error::Internal(format!("create {}: {e}", dest.display())))?;
    let file = File::open(bundle).map_err(|e| bad(format!("open: {e}")))?;
    let dec = zstd::stream::Decoder::new(file).map_err(|e| bad(format!("zstd: {e}")))?;
    let mut archive = tar::Archive::new(dec);
    let (mut total, mut files, mut has_meta) = (0u64, 0usize, false);
    for entry in archive.entries().map_err(|e| bad(format!("tar: {e}")))? {
        let mut entry = entry.map_err(|e| bad(format!("tar: {e}")))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(bad("holds something other than plain files".into()));
        }
        let name =
            entry.path().map_err(|e| bad(format!("tar: {e}")))?.to_string_lossy().into_owned();
        let plain = !name.is_empty()
            && name.len() <= 255
            && !name.starts_with("..")
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !plain {
            return Err(bad(format!("holds a file with the name {name:?}")));
        }
        let size = entry.header().size().map_err(|e| bad(format!("tar: {e}")))?;
        total += size;
        files += 1;
        if total > MAX_UNPACKED_BYTES || files > MAX_BUNDLE_FILES {
            return Err(bad(format!(
                "unpacks to more than {MAX_UNPACKED_BYTES} bytes or {MAX_BUNDLE_FILES} files"
            )));
        }
        has_meta |= name == "meta.json";
        let path = dest.join(&name);
        let mut out = BufWriter::with_capacity(
            1 << 20,
            File::create(&path)
                .map_err(|e| Error::Internal(format!("create {}: {e}", path.display())))?,
        );
        let copied = std::io::copy(&mut (&mut entry).take(size), &mut out)
            .map_err(|e| bad(format!("{name}: {e}")))?;
        out.flush().map_err(|e| Error::Internal(format!("write {}: {e}", path.display())))?;
        if copied != size {
            return Err(bad(format!("{name} is truncated")));
        }
    }
    if !has_meta {
        return Err(bad("has no meta.json".into()));
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// Searching

/// One loaded index version: the searcher lives as long as the version is served.
pub struct IndexHandle {
    searcher: Searcher,
    parser: QueryParser,
    _reader: IndexReader,
    pub doc_count: u64,
}

/// A validated search.
#[derive(Debug, Clone)]
pub struct SearchQuery<'a> {
    pub q: &'a str,
    pub limit: usize,
    pub offset: usize,
    pub tag: Option<&'a str>,
    /// Inclusive bounds on `created_at`, seconds since the epoch.
    pub from: Option<i64>,
    pub to: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Hit {
    pub id: u64,
    pub title: String,
    pub score: f32,
    /// A fragment of `body`, HTML-escaped, with matches in `<b>…</b>`.
    pub snippet: String,
}

#[derive(Debug)]
pub struct Hits {
    /// Exact, from a `Count` collector run alongside `TopDocs`.
    pub total: u64,
    pub hits: Vec<Hit>,
}

impl IndexHandle {
    /// Opens an unpacked index with `MmapDirectory`; a schema other than ours is a 503.
    pub fn open(dir: &Path) -> Result<Self> {
        let bad = |why: String| {
            Error::unavailable(
                DEPENDENCY,
                format!("index at {} does not open: {why}", dir.display()),
            )
        };
        let mmap = MmapDirectory::open(dir).map_err(|e| bad(e.to_string()))?;
        let index = Index::open(mmap).map_err(|e| bad(e.to_string()))?;
        if index.schema() != schema() {
            return Err(bad("its schema is not the one this build expects".into()));
        }
        let reader: IndexReader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| bad(e.to_string()))?;
        let searcher = reader.searcher();
        let mut parser = QueryParser::for_index(&index, vec![TITLE, BODY]);
        parser.set_field_boost(TITLE, TITLE_BOOST);
        Ok(IndexHandle { doc_count: searcher.num_docs(), searcher, parser, _reader: reader })
    }

    /// Runs `q`: a syntax error or an unknown field is a 400 naming `q`. CPU work: call from a
    /// blocking thread when the index is large.
    pub fn search(&self, q: &SearchQuery) -> Result<Hits> {
        let text =
            self.parser.parse_query(q.q).map_err(|e| Error::bad_param("q", e.to_string()))?;
        let mut filters: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if let Some(tag) = q.tag {
            let facet = Facet::from_path([tag]);
            let term = TermQuery::new(Term::from_facet(TAGS, &facet), IndexRecordOption::Basic);
            filters.push((Occur::Must, Box::new(ConstScoreQuery::new(Box::new(term), 0.0))));
        }
        if q.from.is_some() || q.to.is_some() {
            let bound = |s: Option<i64>| match s {
                Some(s) => std::ops::Bound::Included(Term::from_field_date(
                    CREATED_AT,
                    DateTime::from_timestamp_secs(s),
                )),
                None => std::ops::Bound::Unbounded,
            };
            let range = RangeQuery::new(bound(q.from), bound(q.to));
            filters.push((Occur::Must, Box::new(ConstScoreQuery::new(Box::new(range), 0.0))));
        }
        let query: Box<dyn Query> = if filters.is_empty() {
            text
        } else {
            filters.insert(0, (Occur::Must, text));
            Box::new(BooleanQuery::new(filters))
        };
        let collector =
            (Count, TopDocs::with_limit(q.limit.max(1)).and_offset(q.offset).order_by_score());
        let (total, top) = self.searcher.search(&*query, &collector).map_err(|e| match e {
            tantivy::TantivyError::InvalidArgument(m) | tantivy::TantivyError::SchemaError(m) => {
                Error::bad_param("q", m)
            }
            other => Error::Internal(format!("searching {:?}: {other}", q.q)),
        })?;
        let mut snippets = SnippetGenerator::create(&self.searcher, &*query, BODY)
            .map_err(internal("building the snippet generator"))?;
        snippets.set_max_num_chars(SNIPPET_CHARS);
        let mut hits = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let doc: TantivyDocument =
                self.searcher.doc(addr).map_err(internal("reading a stored document"))?;
            let text = |f: Field| doc.get_first(f).and_then(|v| v.as_str()).unwrap_or("");
            let body = text(BODY);
            let snippet = snippets.snippet(body);
            let snippet = if snippet.is_empty() {
                escape_html(prefix(body, SNIPPET_CHARS))
            } else {
                snippet.to_html()
            };
            hits.push(Hit {
                id: doc.get_first(ID).and_then(|v| v.as_u64()).unwrap_or(0),
                title: text(TITLE).to_string(),
                score,
                snippet,
            });
        }
        Ok(Hits { total: total as u64, hits })
    }
}

/// The first `max` characters of `s`, cut at a word boundary when there is one.
fn prefix(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        None => s,
        Some((end, _)) => {
            let cut = &s[..end];
            cut.rfind(' ').map(|i| &cut[..i]).unwrap_or(cut)
        }
    }
}

/// Escapes text for HTML (what Tantivy's snippets do for the fragments they highlight).
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("quiver-search-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    fn doc(id: u64, title: &str, body: &str, tags: &[&'static str], created_at: i64) -> Doc {
        Doc {
            id,
            title: title.into(),
            body: body.into(),
            tags: tags.iter().map(|t| Cow::Borrowed(*t)).collect(),
            created_at: Some(created_at),
        }
    }

    fn q(q: &str) -> SearchQuery<'_> {
        SearchQuery { q, limit: 10, offset: 0, tag: None, from: None, to: None }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// Any text, in Tantivy's syntax or not, is a result or a 400 naming `q`; never a panic.
        #[test]
        fn any_query_is_an_answer_or_a_400(text in ".{1,120}", limit in 1usize..20, offset in 0usize..50) {
            let h = handle();
            match h.search(&SearchQuery { q: &text, limit, offset, tag: None, from: None, to: None }) {
                Ok(r) => proptest::prop_assert!(r.hits.len() <= limit && r.total <= 3),
                Err(e) => {
                    proptest::prop_assert_eq!(e.status().as_u16(), 400, "{}", e);
                    proptest::prop_assert_eq!(e.problem().param, Some("q".to_string()));
                }
            }
        }
    }

    /// A three-document index, built once for the property tests.
    fn handle() -> &'static IndexHandle {
        static H: std::sync::OnceLock<IndexHandle> = std::sync::OnceLock::new();
        H.get_or_init(|| {
            let dir = tmp("props");
            let docs = vec![
                doc(1, "Rust search", "Search engines in Rust are fast.", &["rust"], 100),
                doc(2, "Cooking", "Pasta and basil, no engines.", &["food"], 200),
                doc(3, "Engines", "Steam engines and search trees.", &["history"], 300),
            ];
            build(&dir, docs.into_iter().map(Ok), &BuildOptions::for_memory(Some(256))).unwrap();
            IndexHandle::open(&dir).unwrap()
        })
    }

    #[test]
    fn build_pack_unpack_and_search() {
        let dir = tmp("roundtrip");
        let docs = vec![
            doc(
                1,
                "Rust & <Tantivy>",
                "Search engines in Rust are fast. Rust is safe.",
                &["rust"],
                100,
            ),
            doc(
                2,
                "Cooking",
                "A recipe with no engines at all, only pasta and basil.",
                &["food"],
                200,
            ),
            doc(
                3,
                "Engines",
                "Steam engines and search trees, side by side.",
                &["rust", "history"],
                300,
            ),
        ];
        let built = build(
            &dir.join("index"),
            docs.into_iter().map(Ok),
            &BuildOptions::for_memory(Some(256)),
        )
        .unwrap();
        assert_eq!(built.docs, 3);
        let size = pack(&dir.join("index"), &dir.join(BUNDLE)).unwrap();
        assert!(size > 0);
        let again = dir.join("again.tar.zst");
        assert_eq!(pack(&dir.join("index"), &again).unwrap(), size, "packing is deterministic");
        unpack(&dir.join(BUNDLE), &dir.join("open")).unwrap();
        let h = IndexHandle::open(&dir.join("open")).unwrap();
        assert_eq!(h.doc_count, 3);

        let r = h.search(&q("engines")).unwrap();
        assert_eq!(r.total, 3);
        let r = h.search(&q("rust")).unwrap();
        assert_eq!(r.hits[0].id, 1);
        assert!(r.hits[0].snippet.contains("<b>Rust</b>"), "{}", r.hits[0].snippet);
        assert_eq!(r.hits[0].title, "Rust & <Tantivy>");
        let r = h.search(&SearchQuery { tag: Some("rust"), ..q("engines") }).unwrap();
        assert_eq!(r.total, 2);
        let r = h
            .search(&SearchQuery { from: Some(150), to: Some(250), ..q("engines OR pasta") })
            .unwrap();
        assert_eq!(r.hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![2]);
        assert_eq!(h.search(&q("title:(")).unwrap_err().status(), 400);
        assert_eq!(h.search(&q("nosuchfield:x")).unwrap_err().status(), 400);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_bundles_are_503() {
        let dir = tmp("corrupt");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("junk.tar.zst"), b"definitely not zstd").unwrap();
        let e = unpack(&dir.join("junk.tar.zst"), &dir.join("out")).unwrap_err();
        assert_eq!(e.status(), 503);
        assert!(IndexHandle::open(&dir.join("out")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn jsonl_errors_name_the_line_and_field() {
        let text = "{\"id\":1,\"title\":\"a\",\"body\":\"b\",\"tags\":[\"Rust\"],\"created_at\":\"2026-01-02T00:00:00Z\"}\n\n{\"id\":2,\"body\":\"x\"}\n";
        let docs: Vec<_> = JsonlDocs::new(text.as_bytes()).collect();
        let first = docs[0].as_ref().unwrap();
        assert_eq!(first.tags, vec![Cow::Borrowed("rust")]);
        assert_eq!(first.created_at, Some(1_767_312_000));
        let e = docs[1].as_ref().unwrap_err().to_string();
        assert!(e.contains("line 3: title"), "{e}");
        let dup =
            "{\"id\":1,\"title\":\"a\",\"body\":\"b\"}\n{\"id\":1,\"title\":\"a\",\"body\":\"b\"}";
        let e = JsonlDocs::new(dup.as_bytes()).nth(1).unwrap().unwrap_err().to_string();
        assert!(e.contains("line 2: id"), "{e}");
        let e = parse_doc(br#"{"id":1,"title":"a","body":"b","tags":["a/b"]}"#, 9)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 9: tags[0]"), "{e}");
    }

    #[test]
    fn corpora_are_deterministic_and_shaped() {
        let r = Realistic::new(7);
        assert_eq!(r.doc(12), Realistic::new(7).doc(12));
        assert_ne!(r.doc(12), Realistic::new(8).doc(12));
        let words: usize = (0..500).map(|i| r.doc(i).body.split(' ').count()).sum();
        assert!((150 * 500..300 * 500).contains(&words), "mean length {}", words / 500);
        assert_eq!(vocab().words.len(), VOCABULARY);
        assert!(vocab().words.iter().any(|w| &**w == "performance"));
        let d = reference_doc(7);
        assert_eq!(d.title, "Doc 7 - Performance Optimization");
        assert_eq!(d.tags, vec![Cow::Borrowed("memory")]);
    }

    #[test]
    #[ignore]
    fn zz_phases() {
        for round in 0..3 {
            for threads in [1usize, 2] {
                let dir = tmp(&format!("phases-{round}-{threads}"));
                std::fs::create_dir_all(&dir).unwrap();
                let t0 = Instant::now();
                let index = Index::create(
                    ScratchDirectory::open(&dir).unwrap(),
                    schema(),
                    Default::default(),
                )
                .unwrap();
                let options = IndexWriterOptions::builder()
                    .memory_budget_per_thread(500 << 20)
                    .num_worker_threads(threads)
                    .num_merge_threads(1)
                    .build();
                let mut writer: IndexWriter<Doc> = index.writer_with_options(options).unwrap();
                writer.set_merge_policy(Box::new(NoMergePolicy));
                let t1 = Instant::now();
                for i in 0..10_000 {
                    writer.add_document(reference_doc(i)).unwrap();
                }
                let t2 = Instant::now();
                writer.commit().unwrap();
                let t3 = Instant::now();
                eprintln!(
                    "threads {threads}: create {:.1} add {:.1} commit {:.1} total {:.1}",
                    (t1 - t0).as_secs_f64() * 1e3,
                    (t2 - t1).as_secs_f64() * 1e3,
                    (t3 - t2).as_secs_f64() * 1e3,
                    (t3 - t0).as_secs_f64() * 1e3
                );
                let t = Instant::now();
                let ram = Index::create_in_ram(schema());
                let mut w: IndexWriter<Doc> = ram
                    .writer_with_options(
                        IndexWriterOptions::builder()
                            .memory_budget_per_thread(500 << 20)
                            .num_worker_threads(threads)
                            .build(),
                    )
                    .unwrap();
                for i in 0..10_000 {
                    w.add_document(reference_doc(i)).unwrap();
                }
                w.commit().unwrap();
                eprintln!("threads {threads}: ram total {:.1}", t.elapsed().as_secs_f64() * 1e3);
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }

    #[test]
    #[ignore]
    fn zz_timing() {
        for (name, corpus, n, threads) in [
            ("reference", Corpus::Reference, 10_000u64, 1usize),
            ("reference", Corpus::Reference, 10_000, 2),
            ("reference", Corpus::Reference, 10_000, 1),
            ("realistic", Corpus::Realistic, 10_000, 1),
            ("realistic", Corpus::Realistic, 100_000, 1),
            ("realistic", Corpus::Realistic, 100_000, 2),
        ] {
            let dir = tmp(&format!("timing-{name}-{n}-{threads}"));
            let t = Instant::now();
            let gen: usize = corpus.docs(n, 1).map(|d| d.unwrap().body.len()).sum();
            let gen_ms = t.elapsed().as_secs_f64() * 1e3;
            let opts = BuildOptions { threads, ..BuildOptions::for_memory(None) };
            let b = build(&dir.join("i"), corpus.docs(n, 1), &opts).unwrap();
            let t = Instant::now();
            let size = pack(&dir.join("i"), &dir.join("b.tar.zst")).unwrap();
            let pack_ms = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            unpack(&dir.join("b.tar.zst"), &dir.join("o")).unwrap();
            let h = IndexHandle::open(&dir.join("o")).unwrap();
            let open_ms = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            let mut total = 0;
            for _ in 0..100 {
                total += h.search(&q("performance search")).unwrap().total;
            }
            let s_us = t.elapsed().as_secs_f64() * 1e4;
            eprintln!("{name} {n} t={threads}: gen {gen_ms:.1} ms ({gen} B), index {:.1} ms ({:.0}/s) segs {} merge {:.1} ms, pack {pack_ms:.1} ms {size} B, unpack+open {open_ms:.1} ms, search {s_us:.1} us ({total})", b.index_ms, b.docs_per_s, b.segments, b.merge_ms);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn snippets_fall_back_to_an_escaped_prefix() {
        assert_eq!(prefix("one two three", 7), "one");
        assert_eq!(escape_html("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#x27;");
    }
}
