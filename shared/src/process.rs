//! Batch processing, the reference stack's "data processing API": a `BatchData` body
//! (`{batch_id, data: [{id, timestamp, category, value, tags}]}`) or a generated batch is turned
//! into columns, then aggregated with Polars.
//!
//! The body is parsed straight into columns by serde visitors: no per-row maps, no `Value` tree,
//! strings borrowed from the body where JSON allows. Categories and tags are dictionary-encoded
//! while parsing (codes sorted by name afterwards), so Polars groups small integers instead of
//! strings, and "ties broken by name" is simply "ties broken by code". Tags are kept as one
//! flat column with a row per (point, tag), which is all the tag statistics need.
//!
//! Quantiles use linear interpolation between the two nearest ranks (Polars'
//! `QuantileMethod::Linear`, numpy's default): for `n` sorted values and quantile `q`, the
//! position is `(n - 1) * q`, and the answer interpolates between the values around it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use polars::prelude::*;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Serialize;

use crate::error::{Error, FieldError, Result};
use crate::generate::Rng;

/// Most points one `POST /process` body may hold.
pub const MAX_POINTS: usize = 100_000;
/// Most points `GET /process?size=` may generate.
pub const MAX_GENERATED: usize = 5_000_000;
/// Most tags on one point.
pub const MAX_TAGS: usize = 32;
/// Longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 64;
/// Longest category, in letters; the pattern alone would allow any length.
pub const MAX_CATEGORY_CHARS: usize = 64;
/// Longest `batch_id`, in characters.
pub const MAX_BATCH_ID_CHARS: usize = 128;
/// `value` must lie in `0..=MAX_VALUE`.
pub const MAX_VALUE: f64 = 1000.0;
/// Latest timestamp accepted, 9999-12-31T23:59:59Z, in epoch seconds (earliest: the epoch).
pub const MAX_EPOCH_S: i64 = 253_402_300_799;
/// How many tags `by_tag` lists.
pub const TOP_TAGS: usize = 10;
/// How many problems a 400 lists; the detail still says how many there were.
pub const LISTED_ERRORS: usize = 20;

/// A batch as columns. `categories` and `tags` hold codes into the name lists, which are sorted,
/// so code order is name order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns {
    pub ids: Vec<i64>,
    /// Microseconds since the Unix epoch, UTC.
    pub timestamps_us: Vec<i64>,
    pub categories: Vec<u32>,
    pub values: Vec<f64>,
    /// One entry per (point, tag): the exploded tag lists.
    pub tags: Vec<u32>,
    pub category_names: Vec<String>,
    pub tag_names: Vec<String>,
}

/// The `POST /process` body (documentation only: `parse` validates while it reads the bytes).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct BatchInput {
    #[schema(min_length = 1, max_length = 128)]
    batch_id: String,
    /// 1 to 100,000 points.
    #[schema(min_items = 1, max_items = 100000)]
    data: Vec<PointInput>,
}

/// One point of a batch.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct PointInput {
    id: i64,
    /// RFC 3339 (1970 to 9999), or epoch seconds.
    #[schema(value_type = String, format = DateTime)]
    timestamp: String,
    #[schema(pattern = "^[A-Z]{1,64}$")]
    category: String,
    #[schema(minimum = 0, maximum = 1000)]
    value: f64,
    /// At most 32 tags of 1 to 64 characters.
    #[schema(max_items = 32)]
    tags: Vec<String>,
}

/// A parsed `POST /process` body.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub batch_id: String,
    pub columns: Columns,
}

/// What `aggregate` computes: the reference's response, with deterministic ordering.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = BatchStats)]
pub struct Stats {
    pub total_records: u64,
    pub mean_value: f64,
    pub min_value: f64,
    pub max_value: f64,
    pub p50_value: f64,
    pub p95_value: f64,
    /// Every category, by name.
    pub by_category: Vec<CategoryStats>,
    /// The `TOP_TAGS` most frequent tags, by count descending, ties by name.
    pub by_tag: Vec<TagCount>,
}

/// One category's share of the batch.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CategoryStats {
    pub category: String,
    pub count: u64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

/// How many times a tag occurs in the batch (a tag listed twice on one point counts twice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TagCount {
    pub tag: String,
    pub count: u64,
}

// ---------------------------------------------------------------------------------------------
// Aggregation (Polars)
// ---------------------------------------------------------------------------------------------

/// Tunes the process for batch work; call once at init. glibc then keeps freed memory for the
/// next batch instead of returning it to the kernel: a 1,000,000-point batch otherwise pays
/// ~12,000 page faults per request (a third of its time on the 2-core VM) to map fresh zeroed
/// pages for columns the previous request just freed.
pub fn init() {
    keep_freed_memory();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_THRESHOLD: i32 = -3;
    // Blocks up to 32 MB (glibc's maximum) come from the heap rather than from their own mmap,
    // and the heap is trimmed only when 256 MB lie free at its top.
    // SAFETY: mallopt only changes allocator parameters; it takes the allocator's own lock.
    let ok = unsafe {
        mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 256 << 20) == 1
    };
    if !ok {
        tracing::warn!(
            "mallopt refused the batch memory settings; large batches will page-fault more"
        );
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn polars_err(e: PolarsError) -> Error {
    Error::Internal(format!("polars: {e}"))
}

/// The statistics of a non-empty batch, computed by Polars over a DataFrame built from the
/// columns as they are (the vectors move into Polars; nothing is copied).
pub fn aggregate(cols: Columns) -> Result<Stats> {
    let n = cols.values.len();
    if n == 0 {
        return Err(Error::Internal("aggregate called with an empty batch".into()));
    }
    let Columns { ids, timestamps_us, categories, values, tags, category_names, tag_names } = cols;
    let points = DataFrame::new(
        n,
        vec![
            Column::new("id".into(), ids),
            Int64Chunked::from_vec("timestamp".into(), timestamps_us)
                .into_datetime(TimeUnit::Microseconds, None)
                .into_column(),
            Column::new("category".into(), categories),
            Column::new("value".into(), values),
        ],
    )
    .map_err(polars_err)?;
    let tags =
        DataFrame::new(tags.len(), vec![Column::new("tag".into(), tags)]).map_err(polars_err)?;

    let value = || col("value");
    let summary = points.clone().lazy().select([
        len().alias("n"),
        value().mean().alias("mean"),
        value().min().alias("min"),
        value().max().alias("max"),
        value().quantile(lit(0.5), QuantileMethod::Linear).alias("p50"),
        value().quantile(lit(0.95), QuantileMethod::Linear).alias("p95"),
    ]);
    // The mean is written as sum / count on purpose: Polars cannot pre-aggregate that, so it
    // groups row indices and sums each group in row order. Its partitioned path (taken for a
    // plain `mean()`) adds partial sums in whatever order threads finish, and identical requests
    // would then differ in the last bits. This way the answer is the same on 1 or 8 threads.
    let by_category = points
        .lazy()
        .group_by([col("category")])
        .agg([
            len().alias("count"),
            (value().sum() / len().cast(DataType::Float64)).alias("mean"),
            value().min().alias("min"),
            value().max().alias("max"),
        ])
        .sort(["category"], SortMultipleOptions::default());
    let by_tag = tags
        .lazy()
        .group_by([col("tag")])
        .agg([len().alias("count")])
        .sort_by_exprs(
            [col("count"), col("tag")],
            SortMultipleOptions::default().with_order_descending_multi([true, false]),
        )
        .limit(TOP_TAGS as IdxSize);
    let frames = LazyFrame::collect_all_with_engine(
        vec![summary.logical_plan, by_category.logical_plan, by_tag.logical_plan],
        Engine::InMemory,
        OptFlags::default(),
    )
    .map_err(polars_err)?;
    let [summary, by_category, by_tag]: [DataFrame; 3] = frames
        .try_into()
        .map_err(|_| Error::Internal("polars: expected three result frames".into()))?;

    let f64_at = |df: &DataFrame, name: &str, i: usize| -> Result<f64> {
        df.column(name)
            .and_then(|c| c.get(i))
            .map_err(polars_err)?
            .extract::<f64>()
            .ok_or_else(|| Error::Internal(format!("polars: {name}[{i}] is null")))
    };
    let u64_at = |df: &DataFrame, name: &str, i: usize| -> Result<u64> {
        df.column(name)
            .and_then(|c| c.get(i))
            .map_err(polars_err)?
            .extract::<u64>()
            .ok_or_else(|| Error::Internal(format!("polars: {name}[{i}] is null")))
    };
    let name_of = |names: &[String], code: u64| -> Result<String> {
        names
            .get(code as usize)
            .cloned()
            .ok_or_else(|| Error::Internal(format!("code {code} has no name")))
    };
    let by_category = (0..by_category.height())
        .map(|i| {
            Ok(CategoryStats {
                category: name_of(&category_names, u64_at(&by_category, "category", i)?)?,
                count: u64_at(&by_category, "count", i)?,
                mean: f64_at(&by_category, "mean", i)?,
                min: f64_at(&by_category, "min", i)?,
                max: f64_at(&by_category, "max", i)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let by_tag = (0..by_tag.height())
        .map(|i| {
            Ok(TagCount {
                tag: name_of(&tag_names, u64_at(&by_tag, "tag", i)?)?,
                count: u64_at(&by_tag, "count", i)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Stats {
        total_records: u64_at(&summary, "n", 0)?,
        mean_value: f64_at(&summary, "mean", 0)?,
        min_value: f64_at(&summary, "min", 0)?,
        max_value: f64_at(&summary, "max", 0)?,
        p50_value: f64_at(&summary, "p50", 0)?,
        p95_value: f64_at(&summary, "p95", 0)?,
        by_category,
        by_tag,
    })
}

// ---------------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------------

/// The generated categories, sorted by name, and how often each occurs.
pub const GEN_CATEGORIES: [&str; 8] =
    ["ALPHA", "BRAVO", "CHARLIE", "DELTA", "ECHO", "FOXTROT", "GOLF", "HOTEL"];
const GEN_CATEGORY_WEIGHTS: [f64; 8] = [30.0, 20.0, 15.0, 10.0, 10.0, 7.0, 5.0, 3.0];
/// Each category's values spread over `0..max` (in cents), so the per-category statistics differ.
const GEN_CATEGORY_MAX_CENTS: [u64; 8] =
    [100_000, 80_000, 60_000, 90_000, 50_000, 70_000, 100_000, 40_000];
/// The generated tags, sorted by name. Their popularity follows a Zipf law over a fixed shuffle,
/// so the most frequent tags are not simply the first names.
pub const GEN_TAGS: [&str; 24] = [
    "api", "batch", "beta", "billing", "cache", "cli", "critical", "debug", "docs", "edge", "etl",
    "export", "infra", "mobile", "ops", "prod", "queue", "search", "security", "staging", "stream",
    "test", "ui", "web",
];
/// 30 days, the window generated timestamps fall in, ending at `generate::DEFAULT_END_US`.
const GEN_WINDOW_MS: u64 = 30 * 86_400_000;
/// Rows per independently seeded chunk: the output depends on (size, seed) only, never on threads.
const GEN_CHUNK: usize = 1 << 16;
/// Below this many rows one thread is faster than starting more.
pub const GEN_PARALLEL_MIN: usize = 4 * GEN_CHUNK;

/// 1024-entry lookup tables from 10 random bits to a category or tag: one load per draw instead
/// of a search through a cumulative distribution.
fn gen_tables() -> &'static ([u8; 1024], [u8; 1024]) {
    static T: OnceLock<([u8; 1024], [u8; 1024])> = OnceLock::new();
    T.get_or_init(|| {
        let fill = |weights: &[f64], map: &dyn Fn(usize) -> u8| {
            let total: f64 = weights.iter().sum();
            let mut t = [0u8; 1024];
            let (mut k, mut acc) = (0usize, weights[0]);
            for (slot, out) in t.iter_mut().enumerate() {
                while (slot as f64 + 0.5) / 1024.0 * total > acc && k + 1 < weights.len() {
                    k += 1;
                    acc += weights[k];
                }
                *out = map(k);
            }
            t
        };
        let zipf: Vec<f64> = (1..=GEN_TAGS.len()).map(|r| 1.0 / (r as f64).powf(1.1)).collect();
        // Rank r is tag (7r + 15) mod 24: 7 is coprime with 24, so every tag gets one rank.
        (
            fill(&GEN_CATEGORY_WEIGHTS, &|k| k as u8),
            fill(&zipf, &|k| ((7 * k + 15) % GEN_TAGS.len()) as u8),
        )
    })
}

/// One generated point; `tags[..n_tags]` are its tags.
struct GenRow {
    ts_us: i64,
    category: u8,
    value: f64,
    n_tags: usize,
    tags: [u8; 3],
}

/// The next point of a chunk: two random words decide everything about it. Integer arithmetic
/// throughout (x86-64's baseline has no rounding instruction), one division per value.
#[inline(always)]
fn gen_row(rng: &mut Rng, cat_t: &[u8; 1024], tag_t: &[u8; 1024]) -> GenRow {
    const START_US: i64 = crate::generate::DEFAULT_END_US - (GEN_WINDOW_MS as i64) * 1000;
    let a = rng.next_u64();
    let b = rng.next_u64();
    let category = cat_t[((a >> 22) & 1023) as usize];
    // A triangular draw (the sum of two 21-bit uniforms), scaled to the category's range, in cents.
    let tri = (b >> 43) + ((b >> 22) & 0x1F_FFFF);
    GenRow {
        ts_us: START_US + (((a >> 32) * GEN_WINDOW_MS) >> 32) as i64 * 1000,
        category,
        value: ((tri * GEN_CATEGORY_MAX_CENTS[category as usize]) >> 22) as f64 / 100.0,
        n_tags: ((a >> 20) & 3) as usize,
        tags: [
            tag_t[(a & 1023) as usize],
            tag_t[(b & 1023) as usize],
            tag_t[((b >> 10) & 1023) as usize],
        ],
    }
}

/// Fills one chunk of the columns.
fn gen_chunk(seed: u64, (chunk, ids, ts, cats, vals, tags): &mut ChunkOut<'_>) {
    let first_id = (*chunk * GEN_CHUNK) as i64 + 1;
    let (cat_t, tag_t) = gen_tables();
    let mut rng = Rng::for_item(seed, *chunk as u64);
    tags.reserve(ids.len() * 3);
    let rows = ids.iter_mut().zip(ts.iter_mut()).zip(cats.iter_mut()).zip(vals.iter_mut());
    for (i, (((id, t), c), v)) in rows.enumerate() {
        let row = gen_row(&mut rng, cat_t, tag_t);
        *id = first_id + i as i64;
        *t = row.ts_us;
        *c = u32::from(row.category);
        *v = row.value;
        tags.extend(row.tags[..row.n_tags].iter().map(|t| u32::from(*t)));
    }
}

/// The same points as `generate(size, seed)` as a `POST /process` body, so that a benchmark
/// can send the reference's 50,000-point batch (about 5.5 MB) and get the same statistics as
/// `GET /process?size=&seed=`. Timestamps are RFC 3339 with milliseconds.
pub fn batch_json(size: usize, seed: u64) -> Vec<u8> {
    use std::io::Write;
    let (cat_t, tag_t) = gen_tables();
    let mut out = Vec::with_capacity(size * 120 + 64);
    let _ = write!(out, r#"{{"batch_id":"generated-{size}-{seed}","data":["#);
    let mut id = 0usize;
    for chunk in 0..size.div_ceil(GEN_CHUNK) {
        // Seeded per chunk, exactly as `generate` does.
        let mut rng = Rng::for_item(seed, chunk as u64);
        for _ in 0..GEN_CHUNK.min(size - chunk * GEN_CHUNK) {
            let row = gen_row(&mut rng, cat_t, tag_t);
            id += 1;
            let ts = chrono::DateTime::from_timestamp_micros(row.ts_us)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default();
            let _ = write!(
                out,
                r#"{}{{"id":{id},"timestamp":"{ts}","category":"{}","value":{},"tags":["#,
                if id == 1 { "" } else { "," },
                GEN_CATEGORIES[row.category as usize],
                row.value
            );
            for (j, t) in row.tags[..row.n_tags].iter().enumerate() {
                let _ =
                    write!(out, r#"{}"{}""#, if j == 0 { "" } else { "," }, GEN_TAGS[*t as usize]);
            }
            out.extend_from_slice(b"]}");
        }
    }
    out.extend_from_slice(b"]}");
    out
}

/// One chunk's share of the output columns, and its tag list.
type ChunkOut<'a> =
    (usize, &'a mut [i64], &'a mut [i64], &'a mut [u32], &'a mut [f64], &'a mut Vec<u32>);

fn gen_chunks(seed: u64, part: &mut [ChunkOut<'_>]) {
    for chunk in part.iter_mut() {
        gen_chunk(seed, chunk);
    }
}

/// `size` deterministic points for `seed`, generated straight into columns, in parallel chunks
/// when the batch is large.
pub fn generate(size: usize, seed: u64) -> Columns {
    let mut ids = vec![0i64; size];
    let mut ts = vec![0i64; size];
    let mut cats = vec![0u32; size];
    let mut vals = vec![0f64; size];
    let chunks = size.div_ceil(GEN_CHUNK);
    let mut tag_parts: Vec<Vec<u32>> = (0..chunks).map(|_| Vec::new()).collect();
    {
        let mut work: Vec<ChunkOut<'_>> = ids
            .chunks_mut(GEN_CHUNK)
            .zip(ts.chunks_mut(GEN_CHUNK))
            .zip(cats.chunks_mut(GEN_CHUNK))
            .zip(vals.chunks_mut(GEN_CHUNK))
            .zip(tag_parts.iter_mut())
            .enumerate()
            .map(|(k, ((((i, t), c), v), g))| (k, i, t, c, v, g))
            .collect();
        let threads = if size < GEN_PARALLEL_MIN {
            1
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .clamp(1, 8)
                .min(chunks)
        };
        if threads == 1 {
            gen_chunks(seed, &mut work);
        } else {
            let per = chunks.div_ceil(threads);
            std::thread::scope(|s| {
                for part in work.chunks_mut(per) {
                    s.spawn(move || gen_chunks(seed, part));
                }
            });
        }
    }
    let tags =
        if tag_parts.len() == 1 { tag_parts.pop().unwrap_or_default() } else { tag_parts.concat() };
    Columns {
        ids,
        timestamps_us: ts,
        categories: cats,
        values: vals,
        tags,
        category_names: GEN_CATEGORIES.iter().map(|s| s.to_string()).collect(),
        tag_names: GEN_TAGS.iter().map(|s| s.to_string()).collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Parses and validates a `BatchData` body. Every problem is reported with where it is
/// (`data[3].value`); more than `MAX_POINTS` points is a 413 naming the limit.
pub fn parse(body: &[u8]) -> Result<Batch> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::invalid(
            "the request body is empty; a BatchData object {batch_id, data: [...]} was expected",
            vec![],
        ));
    }
    let mut p = Parser::new(body.len());
    let mut de = serde_json::Deserializer::from_slice(body);
    let res = TopSeed(&mut p).deserialize(&mut de).and_then(|()| de.end());
    if let Some(e) = p.fatal.take() {
        return Err(e);
    }
    if let Err(e) = res {
        return Err(Error::invalid(
            format!("the body is not valid JSON for BatchData: {e}"),
            vec![],
        ));
    }
    p.finish()
}

/// A hash for the dictionaries: xxh3 with a per-process random seed, so that crafted strings
/// cannot be made to collide (SipHash would cost ~2x on these short keys).
#[derive(Clone, Copy)]
struct SeededXxh3(u64);

impl BuildHasher for SeededXxh3 {
    type Hasher = Xxh3Hasher;
    fn build_hasher(&self) -> Xxh3Hasher {
        Xxh3Hasher(self.0)
    }
}

struct Xxh3Hasher(u64);

impl Hasher for Xxh3Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }
    // `str` hashes as its bytes plus a 0xff terminator; the bytes alone are enough here.
    fn write_u8(&mut self, _: u8) {}
    fn finish(&self) -> u64 {
        self.0
    }
}

fn hash_seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        std::collections::hash_map::RandomState::new().hash_one(0x5157_4956_4552u64)
    })
}

/// Strings to dense codes, borrowing from the body when JSON allows.
struct Dict<'de> {
    codes: HashMap<Cow<'de, str>, u32, SeededXxh3>,
}

impl<'de> Dict<'de> {
    fn new() -> Self {
        Dict { codes: HashMap::with_hasher(SeededXxh3(hash_seed())) }
    }

    fn code(&mut self, s: Cow<'de, str>) -> u32 {
        if let Some(&c) = self.codes.get(s.as_ref()) {
            return c;
        }
        let c = self.codes.len() as u32;
        self.codes.insert(s, c);
        c
    }

    /// The names sorted, and for each code in parse order its code in that sorted order.
    fn into_sorted(self) -> (Vec<String>, Vec<u32>) {
        let mut by_name: Vec<(Cow<'de, str>, u32)> = self.codes.into_iter().collect();
        by_name.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut remap = vec![0u32; by_name.len()];
        for (new, (_, old)) in by_name.iter().enumerate() {
            remap[*old as usize] = new as u32;
        }
        (by_name.into_iter().map(|(s, _)| s.into_owned()).collect(), remap)
    }
}

struct Parser<'de> {
    batch_id: Option<String>,
    seen_batch_id: bool,
    seen_data: bool,
    ids: Vec<i64>,
    ts: Vec<i64>,
    cats: Vec<u32>,
    vals: Vec<f64>,
    tags: Vec<u32>,
    cat_dict: Dict<'de>,
    tag_dict: Dict<'de>,
    errors: Vec<FieldError>,
    error_count: usize,
    /// Set when parsing must stop with this error (too many points).
    fatal: Option<Error>,
}

impl<'de> Parser<'de> {
    fn new(body_len: usize) -> Self {
        // A point takes at least ~60 bytes of JSON; reserving for that avoids most regrowth.
        let rows = (body_len / 64).min(MAX_POINTS);
        Parser {
            batch_id: None,
            seen_batch_id: false,
            seen_data: false,
            ids: Vec::with_capacity(rows),
            ts: Vec::with_capacity(rows),
            cats: Vec::with_capacity(rows),
            vals: Vec::with_capacity(rows),
            tags: Vec::with_capacity(rows * 2),
            cat_dict: Dict::new(),
            tag_dict: Dict::new(),
            errors: Vec::new(),
            error_count: 0,
            fatal: None,
        }
    }

    fn error(&mut self, at: impl FnOnce() -> String, problem: impl FnOnce() -> String) {
        self.error_count += 1;
        if self.errors.len() < LISTED_ERRORS {
            self.errors.push(FieldError::new(at(), problem()));
        }
    }

    fn point_error(&mut self, index: usize, field: &str, problem: impl FnOnce() -> String) {
        self.error(|| format!("data[{index}].{field}"), problem);
    }

    fn finish(mut self) -> Result<Batch> {
        if !self.seen_batch_id {
            self.error(|| "batch_id".into(), || "is required".into());
        }
        if !self.seen_data {
            self.error(
                || "data".into(),
                || "is required: an array of points {id, timestamp, category, value, tags}".into(),
            );
        }
        if self.error_count > 0 {
            let first = &self.errors[0];
            let detail = if self.error_count == 1 {
                format!("{}: {}", first.at, first.problem)
            } else {
                format!(
                    "{} problems in the batch; the first {} are listed, starting with {}: {}",
                    self.error_count,
                    self.errors.len(),
                    first.at,
                    first.problem
                )
            };
            return Err(Error::BadRequest {
                param: Some(first.at.clone()),
                detail,
                errors: self.errors,
            });
        }
        let (category_names, cat_map) = self.cat_dict.into_sorted();
        let (tag_names, tag_map) = self.tag_dict.into_sorted();
        self.cats.iter_mut().for_each(|c| *c = cat_map[*c as usize]);
        self.tags.iter_mut().for_each(|t| *t = tag_map[*t as usize]);
        Ok(Batch {
            batch_id: self.batch_id.unwrap_or_default(),
            columns: Columns {
                ids: self.ids,
                timestamps_us: self.ts,
                categories: self.cats,
                values: self.vals,
                tags: self.tags,
                category_names,
                tag_names,
            },
        })
    }
}

/// Any JSON value, reduced to what validation needs; arrays and objects are skipped unread.
enum Scalar<'de> {
    Null,
    Bool,
    Int(i64),
    /// A whole number above `i64::MAX`.
    BigInt,
    Float(f64),
    Str(Cow<'de, str>),
    Array,
    Object,
}

impl Scalar<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool => "a boolean",
            Scalar::Int(_) | Scalar::BigInt | Scalar::Float(_) => "a number",
            Scalar::Str(_) => "a string",
            Scalar::Array => "an array",
            Scalar::Object => "an object",
        }
    }
}

impl<'de> de::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> std::result::Result<Scalar<'de>, E> {
                Ok(Scalar::Null)
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<Scalar<'de>, E> {
                Ok(Scalar::Bool)
            }
            fn visit_i64<E>(self, v: i64) -> std::result::Result<Scalar<'de>, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> std::result::Result<Scalar<'de>, E> {
                Ok(i64::try_from(v).map(Scalar::Int).unwrap_or(Scalar::BigInt))
            }
            fn visit_f64<E>(self, v: f64) -> std::result::Result<Scalar<'de>, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_string())))
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Scalar<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Array)
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Scalar<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Object)
            }
        }
        d.deserialize_any(V)
    }
}

/// The object keys we read; anything else is skipped (unknown fields are allowed, as in msgspec).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    BatchId,
    Data,
    Id,
    Timestamp,
    Category,
    Value,
    Tags,
    Other,
}

impl<'de> de::Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Field, E> {
                Ok(match v {
                    "batch_id" => Field::BatchId,
                    "data" => Field::Data,
                    "id" => Field::Id,
                    "timestamp" => Field::Timestamp,
                    "category" => Field::Category,
                    "value" => Field::Value,
                    "tags" => Field::Tags,
                    _ => Field::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// Implements the visitor methods for JSON kinds a visitor does not expect: each records a
/// problem through `self.wrong(kind)` and the value is skipped.
macro_rules! reject_scalars {
    () => {
        fn visit_unit<E>(self) -> std::result::Result<(), E> {
            self.wrong("null");
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> std::result::Result<(), E> {
            self.wrong("a boolean");
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> std::result::Result<(), E> {
            self.wrong("a number");
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> std::result::Result<(), E> {
            self.wrong("a number");
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> std::result::Result<(), E> {
            self.wrong("a number");
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> std::result::Result<(), E> {
            self.wrong("a string");
            Ok(())
        }
    };
}

/// The top-level object: `batch_id` and `data`.
struct TopSeed<'a, 'de>(&'a mut Parser<'de>);

impl<'de> DeserializeSeed<'de> for TopSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a BatchData object {batch_id, data: [...]}")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let p = self.0;
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::BatchId => {
                    let v: Scalar = map.next_value()?;
                    if std::mem::replace(&mut p.seen_batch_id, true) {
                        p.error(|| "batch_id".into(), || "is given more than once".into());
                        continue;
                    }
                    match v {
                        Scalar::Str(s)
                            if !s.is_empty() && s.chars().count() <= MAX_BATCH_ID_CHARS =>
                        {
                            p.batch_id = Some(s.into_owned())
                        }
                        Scalar::Str(_) => p.error(
                            || "batch_id".into(),
                            || format!("must be 1 to {MAX_BATCH_ID_CHARS} characters"),
                        ),
                        other => p.error(
                            || "batch_id".into(),
                            || format!("must be a string, got {}", other.kind()),
                        ),
                    }
                }
                Field::Data => {
                    if p.seen_data {
                        p.error(|| "data".into(), || "is given more than once".into());
                        map.next_value::<IgnoredAny>()?;
                    } else {
                        p.seen_data = true;
                        map.next_value_seed(DataSeed(&mut *p))?;
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// `data`: the array of points.
struct DataSeed<'a, 'de>(&'a mut Parser<'de>);

impl DataSeed<'_, '_> {
    fn wrong(self, kind: &str) {
        self.0.error(|| "data".into(), || format!("must be an array of points, got {kind}"));
    }
}

impl<'de> DeserializeSeed<'de> for DataSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DataSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of points")
    }
    reject_scalars!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.wrong("an object");
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        let p = self.0;
        let mut index = 0;
        while seq.next_element_seed(PointSeed { p: &mut *p, index })?.is_some() {
            index += 1;
        }
        if index == 0 {
            p.error(|| "data".into(), || "must hold at least one point".into());
        }
        Ok(())
    }
}

/// One point, validated field by field and appended to the columns only when the whole batch
/// is still valid (after the first problem, parsing only collects further problems).
struct PointSeed<'a, 'de> {
    p: &'a mut Parser<'de>,
    index: usize,
}

impl PointSeed<'_, '_> {
    fn wrong(self, kind: &str) {
        let index = self.index;
        self.p.error(
            || format!("data[{index}]"),
            || format!("must be an object {{id, timestamp, category, value, tags}}, got {kind}"),
        );
    }
}

impl<'de> DeserializeSeed<'de> for PointSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        if self.index >= MAX_POINTS {
            self.p.fatal =
                Some(Error::TooLarge { what: "number of points in data", limit: MAX_POINTS });
            return Err(de::Error::custom("too many points"));
        }
        d.deserialize_any(self)
    }
}

/// A field's state while its point is read: absent, present but invalid, or a valid value.
enum Slot<T> {
    Missing,
    Bad,
    Ok(T),
}

impl<T> Slot<T> {
    fn present(&self) -> bool {
        !matches!(self, Slot::Missing)
    }
}

fn excerpt(s: &str) -> String {
    const MAX: usize = 40;
    match s.char_indices().nth(MAX) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
    }
}

fn check_id(v: &Scalar) -> std::result::Result<i64, String> {
    match v {
        Scalar::Int(i) => Ok(*i),
        Scalar::BigInt => Err(format!("must be a whole number from {} to {}", i64::MIN, i64::MAX)),
        other => Err(format!("must be a whole number, got {}", other.kind())),
    }
}

fn check_timestamp(v: &Scalar) -> std::result::Result<i64, String> {
    const RANGE: &str = "must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z";
    let us = match v {
        Scalar::Str(s) => match rfc3339_fast(s.as_bytes()) {
            Some(us) => us,
            None => chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|_| format!("must be an RFC 3339 timestamp (e.g. 2026-10-01T12:00:00Z) or epoch seconds, got {}", excerpt(s)))?
                .timestamp_micros(),
        },
        Scalar::Int(s) if (0..=MAX_EPOCH_S).contains(s) => s * 1_000_000,
        Scalar::Float(s) if (0.0..=MAX_EPOCH_S as f64).contains(s) => (s * 1e6).round() as i64,
        Scalar::Int(_) | Scalar::BigInt | Scalar::Float(_) => return Err(format!("{RANGE} (as epoch seconds: 0 to {MAX_EPOCH_S})")),
        other => return Err(format!("must be an RFC 3339 string or epoch seconds, got {}", other.kind())),
    };
    if !(0..=(MAX_EPOCH_S * 1_000_000 + 999_999)).contains(&us) {
        return Err(RANGE.into());
    }
    Ok(us)
}

/// The common RFC 3339 shape, `YYYY-MM-DDTHH:MM:SS[.digits](Z|±HH:MM)`, in µs since the epoch
/// (sub-microsecond digits truncated, as chrono does), without chrono's general parser: ~40 ns
/// less per point. `None` means "not this exact shape"; chrono then has the last word, so the
/// two never disagree on what is valid (leap seconds, a space separator, long fractions).
fn rfc3339_fast(s: &[u8]) -> Option<i64> {
    fn digits(b: &[u8]) -> Option<i64> {
        b.iter().try_fold(0i64, |v, c| c.is_ascii_digit().then(|| v * 10 + i64::from(c - b'0')))
    }
    if s.len() < 20
        || s[4] != b'-'
        || s[7] != b'-'
        || !matches!(s[10], b'T' | b't')
        || s[13] != b':'
        || s[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (digits(&s[0..4])?, digits(&s[5..7])?, digits(&s[8..10])?);
    let (h, mi, sec) = (digits(&s[11..13])?, digits(&s[14..16])?, digits(&s[17..19])?);
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&mo)
        || d < 1
        || d > month_days[(mo - 1) as usize]
        || h > 23
        || mi > 59
        || sec > 59
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        micros = digits(&frac[..n.min(6)])? * 10i64.pow(6u32.saturating_sub(n as u32));
        rest = &frac[n..];
    }
    let offset_s = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (oh, om) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            if *sign == b'-' {
                -(oh * 3600 + om * 60)
            } else {
                oh * 3600 + om * 60
            }
        }
        _ => return None,
    };
    // Days from 1970-01-01 to the date (proleptic Gregorian; H. Hinnant's days_from_civil).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + sec - offset_s) * 1_000_000 + micros)
}

fn valid_category(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_CATEGORY_CHARS && s.bytes().all(|b| b.is_ascii_uppercase())
}

/// `value` arrives as raw JSON text and is parsed with `str::parse`, which rounds correctly:
/// serde_json's own float parsing (without `float_roundtrip`, which would rebuild Polars) can be
/// one ULP off for 17-digit numbers, and then `min_value` would not be a value the client sent.
/// (axum enables serde_json's `raw_value` feature, so `RawValue` is always available.)
fn check_value(raw: &str) -> std::result::Result<f64, String> {
    let kind = match raw.as_bytes().first() {
        Some(b'-' | b'0'..=b'9') => {
            return match raw.parse::<f64>() {
                Ok(x) if (0.0..=MAX_VALUE).contains(&x) => Ok(x),
                _ => Err(format!(
                    "must be between 0 and {MAX_VALUE}, got {}",
                    excerpt(raw).trim_matches('"')
                )),
            };
        }
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'[') => "an array",
        _ => "an object",
    };
    Err(format!("must be a number between 0 and {MAX_VALUE}, got {kind}"))
}

impl<'de> Visitor<'de> for PointSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a point {id, timestamp, category, value, tags}")
    }
    reject_scalars!();
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.wrong("an array");
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let PointSeed { p, index } = self;
        let (mut id, mut ts, mut cat, mut val) =
            (Slot::Missing, Slot::Missing, Slot::Missing, Slot::Missing);
        let mut tags_seen = false;
        let tags_start = p.tags.len();
        let errors_before = p.error_count;
        while let Some(field) = map.next_key::<Field>()? {
            let name = match field {
                Field::Id => "id",
                Field::Timestamp => "timestamp",
                Field::Category => "category",
                Field::Value => "value",
                Field::Tags => "tags",
                Field::BatchId | Field::Data | Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let duplicate = match field {
                Field::Id => id.present(),
                Field::Timestamp => ts.present(),
                Field::Category => cat.present(),
                Field::Value => val.present(),
                _ => tags_seen,
            };
            if duplicate {
                map.next_value::<IgnoredAny>()?;
                p.point_error(index, name, || "is given more than once".into());
                continue;
            }
            if field == Field::Tags {
                tags_seen = true;
                map.next_value_seed(TagsSeed { p: &mut *p, index })?;
                continue;
            }
            if field == Field::Value {
                let raw: &'de serde_json::value::RawValue = map.next_value()?;
                match check_value(raw.get()) {
                    Ok(x) => val = Slot::Ok(x),
                    Err(problem) => {
                        val = Slot::Bad;
                        p.point_error(index, name, || problem);
                    }
                }
                continue;
            }
            let v: Scalar<'de> = map.next_value()?;
            let checked = match field {
                Field::Id => check_id(&v).map(|x| id = Slot::Ok(x)),
                Field::Timestamp => check_timestamp(&v).map(|x| ts = Slot::Ok(x)),
                _ => match v {
                    Scalar::Str(s) if valid_category(&s) => {
                        cat = Slot::Ok(s);
                        Ok(())
                    }
                    Scalar::Str(s) => Err(format!(
                        "must match ^[A-Z]+$ (1 to {MAX_CATEGORY_CHARS} letters), got {}",
                        excerpt(&s)
                    )),
                    other => {
                        Err(format!("must be a string matching ^[A-Z]+$, got {}", other.kind()))
                    }
                },
            };
            if let Err(problem) = checked {
                match field {
                    Field::Id => id = Slot::Bad,
                    Field::Timestamp => ts = Slot::Bad,
                    _ => cat = Slot::Bad,
                }
                p.point_error(index, name, || problem);
            }
        }
        for (name, missing) in [
            ("id", !id.present()),
            ("timestamp", !ts.present()),
            ("category", !cat.present()),
            ("value", !val.present()),
        ] {
            if missing {
                p.point_error(index, name, || "is required".into());
            }
        }
        match (id, ts, cat, val) {
            (Slot::Ok(id), Slot::Ok(ts), Slot::Ok(cat), Slot::Ok(val)) if p.error_count == 0 => {
                let code = p.cat_dict.code(cat);
                p.ids.push(id);
                p.ts.push(ts);
                p.cats.push(code);
                p.vals.push(val);
            }
            _ => {
                if p.error_count > errors_before {
                    p.tags.truncate(tags_start);
                }
            }
        }
        Ok(())
    }
}

/// `tags`: an array of strings, appended to the flat tag column as codes.
struct TagsSeed<'a, 'de> {
    p: &'a mut Parser<'de>,
    index: usize,
}

impl TagsSeed<'_, '_> {
    fn wrong(self, kind: &str) {
        self.p
            .point_error(self.index, "tags", || format!("must be an array of strings, got {kind}"));
    }
}

impl<'de> DeserializeSeed<'de> for TagsSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TagsSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of tags")
    }
    reject_scalars!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.wrong("an object");
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        let TagsSeed { p, index } = self;
        let mut j = 0usize;
        while let Some(v) = seq.next_element::<Scalar<'de>>()? {
            if j < MAX_TAGS {
                match v {
                    Scalar::Str(s)
                        if !s.is_empty()
                            && (s.len() <= MAX_TAG_CHARS || s.chars().count() <= MAX_TAG_CHARS) =>
                    {
                        if p.error_count == 0 {
                            let code = p.tag_dict.code(s);
                            p.tags.push(code);
                        }
                    }
                    Scalar::Str(_) => p.error(
                        || format!("data[{index}].tags[{j}]"),
                        || format!("must be 1 to {MAX_TAG_CHARS} characters"),
                    ),
                    other => p.error(
                        || format!("data[{index}].tags[{j}]"),
                        || format!("must be a string, got {}", other.kind()),
                    ),
                }
            }
            j += 1;
        }
        if j > MAX_TAGS {
            p.point_error(index, "tags", || format!("must hold at most {MAX_TAGS} tags, got {j}"));
        }
        Ok(())
    }
}
