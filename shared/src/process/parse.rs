use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::check::{check_id, check_timestamp, check_value, excerpt, valid_category};
use super::{Batch, Columns, LISTED_ERRORS, MAX_BATCH_ID_CHARS, MAX_POINTS};
use super::{MAX_CATEGORIES, MAX_CATEGORY_CHARS, MAX_TAGS, MAX_TAG_CHARS};
use crate::error::{Error, FieldError, Result};

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
pub(super) enum Scalar<'de> {
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
    pub(super) fn kind(&self) -> &'static str {
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

/// The object keys we read. Any other key is a problem reported with its name: the document says
/// `additionalProperties: false`, as it does for `POST /events`.
#[derive(Clone, PartialEq, Eq)]
enum Field {
    BatchId,
    Data,
    Id,
    Timestamp,
    Category,
    Value,
    Tags,
    Other(String),
}

impl Field {
    fn name(&self) -> &str {
        match self {
            Field::BatchId => "batch_id",
            Field::Data => "data",
            Field::Id => "id",
            Field::Timestamp => "timestamp",
            Field::Category => "category",
            Field::Value => "value",
            Field::Tags => "tags",
            Field::Other(name) => name,
        }
    }
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
                    other => Field::Other(other.to_string()),
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
                other => {
                    map.next_value::<IgnoredAny>()?;
                    p.error(
                        || other.name().to_string(),
                        || "is not a field of a batch (batch_id, data)".into(),
                    );
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
                Field::BatchId | Field::Data | Field::Other(_) => {
                    map.next_value::<IgnoredAny>()?;
                    p.point_error(index, field.name(), || {
                        "is not a field of a point (id, timestamp, category, value, tags)".into()
                    });
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
                if p.cat_dict.codes.len() == MAX_CATEGORIES + 1 {
                    p.point_error(index, "category", || {
                        format!("is one category too many: a batch holds at most {MAX_CATEGORIES}")
                    });
                }
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
