//! The event model: parsing and validating `POST /events` bodies (one object, an array, or
//! NDJSON), the opaque pagination cursor, and the COPY BINARY row encoding used by every writer.

mod copy;
#[cfg(feature = "pg")]
mod cursor;
mod parse;
#[cfg(test)]
mod tests;

pub use copy::*;
#[cfg(feature = "pg")]
pub use cursor::*;
pub use parse::*;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// The five kinds of event; the table has a CHECK for the same list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    PageView,
    Click,
    Conversion,
    Signup,
    Purchase,
}

impl EventType {
    pub const ALL: [EventType; 5] = [
        EventType::PageView,
        EventType::Click,
        EventType::Conversion,
        EventType::Signup,
        EventType::Purchase,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::PageView => "page_view",
            EventType::Click => "click",
            EventType::Conversion => "conversion",
            EventType::Signup => "signup",
            EventType::Purchase => "purchase",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// The `created_at` an event may have, in µs since the Unix epoch: from 1970-01-01T00:00:00Z to
/// 9999-12-31T23:59:59.999999Z, in UTC whatever the offset it is written with. Every year in it has
/// four digits, so a snapshot's `dt=YYYY-MM-DD` folder (and a cursor) can always name its day;
/// one event past it (year 10000 in UTC) once broke every later snapshot.
pub const CREATED_AT_US: std::ops::RangeInclusive<i64> = 0..=253_402_300_799_999_999;

/// [`CREATED_AT_US`] as times, for queries that bound a window by it (the end is exclusive).
pub fn created_at_bounds() -> (DateTime<Utc>, DateTime<Utc>) {
    let at = |us| DateTime::from_timestamp_micros(us).expect("within chrono's range");
    (at(*CREATED_AT_US.start()), at(*CREATED_AT_US.end() + 1))
}

/// Most events one `POST /events` may carry; more is a 413.
pub const MAX_EVENTS_PER_REQUEST: usize = 10_000;
/// Longest `page_url` accepted, in characters.
pub const MAX_PAGE_URL: usize = 2048;
/// Largest serialized `metadata` accepted.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
/// Largest `metadata.duration_ms` accepted when it is a number (about 31 years); from 0 up. The
/// bound keeps float8 `avg` in PostgreSQL from overflowing (1e200 did), and migration 0003's
/// generated column leaves out any value outside it that was written before.
pub const MAX_DURATION_MS: f64 = 1e12;
/// At most this many problems are reported in one 400.
pub const MAX_REPORTED_ERRORS: usize = 20;

/// An event ready to be written. `metadata` is JSON text; `created_at` is µs since the Unix epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub user_id: i32,
    pub event_type: EventType,
    pub page_url: String,
    pub metadata: String,
    pub created_at_us: i64,
}

/// A stored event, as the API returns it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Event {
    pub id: i64,
    pub user_id: i32,
    pub event_type: EventType,
    pub page_url: String,
    #[schema(value_type = Object)]
    pub metadata: Value,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
}

/// One event as `POST /events` reads it (documentation only: `validate` is the parser, and
/// reports every problem, up to 20, with its index or line).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct EventInput {
    #[schema(minimum = 1, maximum = 2147483647)]
    user_id: i32,
    event_type: EventType,
    /// 1 to 2,048 characters, without NUL.
    #[schema(min_length = 1, max_length = 2048, pattern = "^[^\\u0000]*$")]
    page_url: String,
    /// Any JSON object of at most 8 KiB, without NUL in its keys or strings (PostgreSQL's jsonb
    /// cannot hold one); `{}` when absent or null.
    #[schema(schema_with = metadata_schema)]
    metadata: Option<Value>,
    /// RFC 3339, from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z in UTC (an offset
    /// counts); now when absent. The pattern: a year from 1970 to 9999 as written, except the
    /// range's first and last day with an offset that moves them outside it.
    #[schema(value_type = Option<String>, format = DateTime,
        pattern = r"^(?!1970-01-01[Tt ][0-9:.]+\+(?!00:00))(?!9999-12-31[Tt ][0-9:.]+-(?!00:00))(19[7-9][0-9]|[2-9][0-9]{3})-")]
    created_at: Option<String>,
}

/// The JSON body of `POST /events`: one event or an array of 1 to 10,000 (documentation only;
/// written by hand because the derive cannot bound an array variant).
pub struct EventsBody;

impl utoipa::PartialSchema for EventsBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, OneOfBuilder, Ref};
        let one = || Ref::from_schema_name("EventInput");
        let many = ArrayBuilder::new()
            .items(one())
            .min_items(Some(1))
            .max_items(Some(MAX_EVENTS_PER_REQUEST));
        utoipa::openapi::Schema::OneOf(OneOfBuilder::new().item(one()).item(many).build()).into()
    }
}

impl utoipa::ToSchema for EventsBody {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::Schema>)>) {
        use utoipa::PartialSchema;
        schemas.push(("EventInput".into(), EventInput::schema()));
        schemas.push((METADATA_VALUE.into(), metadata_value().into()));
    }
}

/// The name of the schema of one value inside `metadata`, which refers to itself.
const METADATA_VALUE: &str = "MetadataValue";
/// Text without NUL.
const NO_NUL: &str = "^[^\\u0000]*$";

/// An object whose keys hold no NUL and whose values are [`metadata_value`]s, or null.
fn metadata_object(nullable: bool) -> utoipa::openapi::schema::ObjectBuilder {
    use utoipa::openapi::schema::{ObjectBuilder, Ref, SchemaType, Type};
    let types: SchemaType = if nullable {
        [Type::Object, Type::Null].into_iter().collect()
    } else {
        Type::Object.into()
    };
    ObjectBuilder::new()
        .schema_type(types)
        .property_names(Some(ObjectBuilder::new().schema_type(Type::String).pattern(Some(NO_NUL))))
        .additional_properties(Some(Ref::from_schema_name(METADATA_VALUE)))
}

/// The top-level object: as any other, but a numeric `duration_ms` is bounded (JSON Schema's
/// `minimum`/`maximum` leave other types alone, so `"fast"` stays valid).
fn metadata_schema() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Ref, SchemaType};
    let bounded = ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .minimum(Some(0))
        .maximum(Some(MAX_DURATION_MS));
    let duration = AllOfBuilder::new().item(Ref::from_schema_name(METADATA_VALUE)).item(bounded);
    metadata_object(true).property("duration_ms", duration).into()
}

/// Any JSON value without NUL in a string or a key, at any depth.
fn metadata_value() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Ref, Type};
    let text = ObjectBuilder::new().schema_type(Type::String).pattern(Some(NO_NUL));
    let scalar = ObjectBuilder::new().schema_type(
        [Type::Number, Type::Boolean, Type::Null]
            .into_iter()
            .collect::<utoipa::openapi::schema::SchemaType>(),
    );
    let list = ArrayBuilder::new().items(Ref::from_schema_name(METADATA_VALUE));
    let one_of =
        OneOfBuilder::new().item(text).item(scalar).item(list).item(metadata_object(false));
    utoipa::openapi::Schema::OneOf(one_of.build())
}

/// RFC 3339 with microseconds and `Z`, the one timestamp format of the API.
pub fn rfc3339<S: serde::Serializer>(
    t: &DateTime<Utc>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&crate::time::rfc3339(*t))
}

/// The body formats `POST /events` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    NdJson,
}

impl BodyFormat {
    /// From `Content-Type`; anything but JSON or NDJSON is a 415.
    pub fn from_content_type(ct: Option<&str>) -> Result<Self> {
        let ct = ct.unwrap_or("application/json");
        let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match mime.as_str() {
            "application/json" | "" => Ok(BodyFormat::Json),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Ok(BodyFormat::NdJson),
            other => Err(Error::UnsupportedMediaType(format!(
                "content type {other:?} is not read here; send application/json or application/x-ndjson"
            ))),
        }
    }
}
