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

mod aggregate;
mod check;
mod generate;
mod parse;

pub use aggregate::*;

pub use generate::*;
pub use parse::*;

use serde::Serialize;

/// Most points one `POST /process` body may hold.
pub const MAX_POINTS: usize = 100_000;
/// Most points `GET /process?size=` may generate.
pub const MAX_GENERATED: usize = 5_000_000;
pub use crate::{MAX_TAGS, MAX_TAG_CHARS};
/// Most distinct categories in one batch: the answer lists every one, and 100,000 of them would
/// make it larger than Lambda's 6 MB response limit (1,000 stay under 150 KB).
pub const MAX_CATEGORIES: usize = 1_000;
/// Longest category, in letters; the pattern alone would allow any length.
pub const MAX_CATEGORY_CHARS: usize = 64;
/// Longest `batch_id`, in characters.
pub const MAX_BATCH_ID_CHARS: usize = 128;
/// `value` must lie in `0..=MAX_VALUE`.
pub const MAX_VALUE: f64 = 1000.0;
/// Latest epoch-seconds timestamp accepted, 9999-12-31T23:59:59Z.
pub const MAX_EPOCH_S: i64 = 253_402_300_799;
/// Earliest epoch-seconds timestamp accepted, 0000-01-01T00:00:00Z.
pub const MIN_EPOCH_S: i64 = -62_167_219_200;
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

/// The `POST /process` body (documentation only: `parse` validates while it reads the bytes, and
/// refuses a field the document does not list).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct BatchInput {
    #[schema(min_length = 1, max_length = 128)]
    batch_id: String,
    /// 1 to 100,000 points, of at most 1,000 distinct categories.
    #[schema(min_items = 1, max_items = 100000)]
    data: Vec<PointInput>,
}

/// One point of a batch.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct PointInput {
    id: i64,
    /// An RFC 3339 date-time, or epoch seconds.
    #[schema(schema_with = timestamp_schema)]
    timestamp: String,
    #[schema(pattern = "^[A-Z]{1,64}$")]
    category: String,
    #[schema(minimum = 0, maximum = 1000)]
    value: f64,
    /// At most 32 tags of 1 to 64 characters (none when absent).
    #[schema(required = false, max_items = 32, inline)]
    tags: Vec<Tag>,
}

/// A tag: 1 to 64 characters.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(value_type = String, pattern = "^[\\s\\S]{1,64}$")]
#[allow(dead_code)]
pub struct Tag(String);

/// `oneOf` an RFC 3339 string and epoch seconds (a number) from `MIN_EPOCH_S` to `MAX_EPOCH_S`.
fn timestamp_schema() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
    let text = ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)));
    let seconds = ObjectBuilder::new()
        .schema_type(Type::Number)
        .minimum(Some(MIN_EPOCH_S as f64))
        .maximum(Some(MAX_EPOCH_S as f64));
    utoipa::openapi::Schema::OneOf(OneOfBuilder::new().item(text).item(seconds).build())
}

/// A parsed `POST /process` body.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub batch_id: String,
    pub columns: Columns,
}

/// What `aggregate` computes: the reference's response, with deterministic ordering.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BatchStats {
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
/// thousands of page faults per request to map fresh zeroed pages for columns the previous
/// request just freed.
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
