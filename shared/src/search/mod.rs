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

mod build;
mod bundle;
mod corpus;
mod jsonl;
mod query;
#[cfg(test)]
mod tests;

pub use build::*;
pub use bundle::*;
pub use corpus::*;
pub use jsonl::*;
pub use query::*;

use std::borrow::Cow;

use tantivy::schema::document::{ReferenceValue, ReferenceValueLeaf, Value};
use tantivy::schema::{
    DateOptions, DateTimePrecision, FacetOptions, Field, IndexRecordOption, NumericOptions, Schema,
    TextFieldIndexing, TextOptions,
};
use tantivy::{DateTime, Document};

/// What an index version's manifest says about it (`Manifest<IndexMeta>`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IndexMeta {
    /// Documents in the index: a loaded version holding any other number is refused.
    pub doc_count: u64,
    pub bundle_size: u64,
    /// Bytes of the unpacked index, which a reader needs on disk besides the bundle.
    #[serde(default)]
    pub index_bytes: u64,
    /// Where the documents came from (`reference:10000:seed=42`, `s3:<key>`, ...).
    pub source: String,
    pub schema: String,
    pub index_ms: f64,
}

#[cfg(feature = "s3")]
impl crate::artifact::Meta for IndexMeta {
    fn unpacked_bytes(&self) -> u64 {
        self.index_bytes
    }

    /// A reader opens the version's one bundle.
    fn check_files(&self, files: &[crate::artifact::FileEntry]) -> std::result::Result<(), String> {
        match files.iter().any(|f| f.name == BUNDLE) {
            true => Ok(()),
            false => Err(format!("it has no {BUNDLE}")),
        }
    }
}

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
/// Latest `created_at` an index holds, in epoch seconds (2262-04-11): Tantivy keeps dates as i64
/// nanoseconds, and panics past them. The earliest is 0, the epoch.
pub const MAX_CREATED_AT_S: i64 = i64::MAX / 1_000_000_000;

/// Title matches weigh double, so a document titled with the query outranks one that only
/// mentions its words in a long body.
pub const TITLE_BOOST: f32 = 2.0;
/// Characters of `body` in a snippet.
pub const SNIPPET_CHARS: usize = 160;
/// Longest accepted JSONL line (one document).
pub const MAX_LINE_BYTES: usize = 1 << 20;
pub const MAX_TITLE_BYTES: usize = 4096;
pub use crate::{MAX_TAGS, MAX_TAG_CHARS};
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
