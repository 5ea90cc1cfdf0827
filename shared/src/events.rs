//! The event model: parsing and validating `POST /events` bodies (one object, an array, or
//! NDJSON), the opaque pagination cursor, and the COPY BINARY row encoding used by every writer.

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, FieldError, Result};

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

/// Most events one `POST /events` may carry; more is a 413.
pub const MAX_EVENTS_PER_REQUEST: usize = 10_000;
/// Longest `page_url` accepted.
pub const MAX_PAGE_URL: usize = 2048;
/// Largest serialized `metadata` accepted.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
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
    /// 1 to 2,048 bytes, without NUL.
    #[schema(min_length = 1, max_length = 2048)]
    page_url: String,
    /// At most 8 KiB of JSON; `{}` when absent.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// RFC 3339; now when absent.
    #[schema(value_type = Option<String>, format = DateTime)]
    created_at: Option<String>,
}

/// The JSON body of `POST /events`: one event or an array of up to 10,000.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum EventsBody {
    One(EventInput),
    Many(Vec<EventInput>),
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

/// Parses and validates a whole body; every problem found (up to 20) is reported at once.
pub fn parse_body(body: &[u8], format: BodyFormat, now_us: i64) -> Result<Vec<NewEvent>> {
    let items: Vec<(String, Value)> = match format {
        BodyFormat::Json => {
            let v: Value = crate::http::parse_json(body)?;
            match v {
                Value::Array(a) => {
                    check_count(a.len())?;
                    a.into_iter().enumerate().map(|(i, v)| (format!("[{i}]"), v)).collect()
                }
                v @ Value::Object(_) => vec![(String::new(), v)],
                _ => {
                    return Err(Error::invalid(
                        "the body must be an event object or an array of events",
                        vec![],
                    ))
                }
            }
        }
        BodyFormat::NdJson => {
            let text = std::str::from_utf8(body)
                .map_err(|e| Error::invalid(format!("the body is not UTF-8: {e}"), vec![]))?;
            let mut items = Vec::new();
            let mut errors = Vec::new();
            for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                check_count(items.len() + errors.len() + 1)?;
                let at = format!("line {}", n + 1);
                match serde_json::from_str::<Value>(line) {
                    Ok(v) => items.push((at, v)),
                    Err(e) => errors.push(FieldError::new(at, format!("not valid JSON: {e}"))),
                }
            }
            if !errors.is_empty() {
                errors.truncate(MAX_REPORTED_ERRORS);
                return Err(Error::invalid(
                    format!("{} NDJSON line(s) are not valid JSON", errors.len()),
                    errors,
                ));
            }
            items
        }
    };
    if items.is_empty() {
        return Err(Error::invalid("the body holds no events", vec![]));
    }
    let mut events = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    let mut bad = 0usize;
    for (at, v) in items {
        match validate(&at, v, now_us) {
            Ok(e) => events.push(e),
            Err(mut errs) => {
                bad += 1;
                let room = MAX_REPORTED_ERRORS.saturating_sub(errors.len());
                errs.truncate(room);
                errors.extend(errs);
            }
        }
    }
    if bad > 0 {
        return Err(Error::invalid(
            format!("{bad} event(s) are invalid; nothing was written"),
            errors,
        ));
    }
    Ok(events)
}

fn check_count(n: usize) -> Result<()> {
    if n > MAX_EVENTS_PER_REQUEST {
        return Err(Error::TooLarge { what: "number of events", limit: MAX_EVENTS_PER_REQUEST });
    }
    Ok(())
}

fn field(at: &str, name: &str) -> String {
    if at.is_empty() {
        name.to_string()
    } else if at.starts_with('[') {
        format!("{at}.{name}")
    } else {
        format!("{at}: {name}")
    }
}

/// Checks one event, returning every problem with it.
pub fn validate(at: &str, v: Value, now_us: i64) -> std::result::Result<NewEvent, Vec<FieldError>> {
    let Value::Object(mut m) = v else {
        let at = if at.is_empty() { "body".to_string() } else { at.to_string() };
        return Err(vec![FieldError::new(at, "must be a JSON object")]);
    };
    let mut errs = Vec::new();
    let user_id = match m.remove("user_id") {
        None => {
            errs.push(FieldError::new(field(at, "user_id"), "is required"));
            None
        }
        Some(Value::Number(n)) => match n.as_i64() {
            Some(id) if id > 0 && id <= i32::MAX as i64 => Some(id as i32),
            _ => {
                errs.push(FieldError::new(
                    field(at, "user_id"),
                    format!("must be a whole number from 1 to {}", i32::MAX),
                ));
                None
            }
        },
        Some(other) => {
            errs.push(FieldError::new(
                field(at, "user_id"),
                format!("must be a number, not {}", kind(&other)),
            ));
            None
        }
    };
    let event_type = match m.remove("event_type") {
        None => {
            errs.push(FieldError::new(field(at, "event_type"), "is required"));
            None
        }
        Some(Value::String(s)) => match EventType::parse(&s) {
            Some(t) => Some(t),
            None => {
                errs.push(FieldError::new(
                    field(at, "event_type"),
                    "must be one of page_view, click, conversion, signup, purchase",
                ));
                None
            }
        },
        Some(other) => {
            errs.push(FieldError::new(
                field(at, "event_type"),
                format!("must be a string, not {}", kind(&other)),
            ));
            None
        }
    };
    let page_url = match m.remove("page_url") {
        None => {
            errs.push(FieldError::new(field(at, "page_url"), "is required"));
            None
        }
        Some(Value::String(s)) if s.is_empty() || s.len() > MAX_PAGE_URL || s.contains('\0') => {
            errs.push(FieldError::new(
                field(at, "page_url"),
                format!("must be 1 to {MAX_PAGE_URL} bytes without NUL"),
            ));
            None
        }
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            errs.push(FieldError::new(
                field(at, "page_url"),
                format!("must be a string, not {}", kind(&other)),
            ));
            None
        }
    };
    let metadata = match m.remove("metadata") {
        None | Some(Value::Null) => Some("{}".to_string()),
        Some(v @ Value::Object(_)) => {
            let text = v.to_string();
            if text.len() > MAX_METADATA_BYTES {
                errs.push(FieldError::new(
                    field(at, "metadata"),
                    format!("must be at most {MAX_METADATA_BYTES} bytes"),
                ));
                None
            } else if text.contains("\\u0000") {
                errs.push(FieldError::new(
                    field(at, "metadata"),
                    "must not contain NUL characters",
                ));
                None
            } else {
                Some(text)
            }
        }
        Some(other) => {
            errs.push(FieldError::new(
                field(at, "metadata"),
                format!("must be an object, not {}", kind(&other)),
            ));
            None
        }
    };
    let created_at_us = match m.remove("created_at") {
        None | Some(Value::Null) => Some(now_us),
        Some(Value::String(s)) => match crate::time::parse_rfc3339(&s) {
            Some(t) if (1970..=9999).contains(&chrono::Datelike::year(&t)) => {
                Some(t.timestamp_micros())
            }
            _ => {
                errs.push(FieldError::new(
                    field(at, "created_at"),
                    "must be an RFC 3339 timestamp, e.g. 2026-11-24T10:00:00Z",
                ));
                None
            }
        },
        Some(other) => {
            errs.push(FieldError::new(
                field(at, "created_at"),
                format!("must be an RFC 3339 string, not {}", kind(&other)),
            ));
            None
        }
    };
    for unknown in m.keys() {
        errs.push(FieldError::new(field(at, unknown), "is not a field of an event"));
    }
    match (user_id, event_type, page_url, metadata, created_at_us) {
        (Some(user_id), Some(event_type), Some(page_url), Some(metadata), Some(created_at_us))
            if errs.is_empty() =>
        {
            Ok(NewEvent { user_id, event_type, page_url, metadata, created_at_us })
        }
        _ => Err(errs),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Keeps `Map` in the public API stable for callers building events by hand.
pub type Metadata = Map<String, Value>;

// ---- cursor -----------------------------------------------------------------------------------

/// Where the next page starts: the last row's `(created_at, id)`, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at_us: i64,
    pub id: i64,
}

const CURSOR_VERSION: u8 = 1;

impl Cursor {
    /// An opaque, URL-safe token.
    pub fn encode(&self) -> String {
        use base64::Engine;
        let mut b = [0u8; 25];
        b[0] = CURSOR_VERSION;
        b[1..9].copy_from_slice(&self.created_at_us.to_be_bytes());
        b[9..17].copy_from_slice(&self.id.to_be_bytes());
        let check = xxhash_rust::xxh3::xxh3_64(&b[..17]);
        b[17..].copy_from_slice(&check.to_be_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    /// Decodes a token from `encode`; anything else is a 400 naming `cursor`.
    pub fn decode(token: &str) -> Result<Self> {
        use base64::Engine;
        let bad = || {
            Error::bad_param(
                "cursor",
                "is not a cursor this API issued; pass next_cursor back unchanged",
            )
        };
        if token.len() > 64 {
            return Err(bad());
        }
        let b =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
        if b.len() != 25 || b[0] != CURSOR_VERSION {
            return Err(bad());
        }
        let check = u64::from_be_bytes(b[17..25].try_into().expect("8 bytes"));
        if check != xxhash_rust::xxh3::xxh3_64(&b[..17]) {
            return Err(bad());
        }
        let created_at_us = i64::from_be_bytes(b[1..9].try_into().expect("8 bytes"));
        let id = i64::from_be_bytes(b[9..17].try_into().expect("8 bytes"));
        if id <= 0 {
            return Err(bad());
        }
        Ok(Cursor { created_at_us, id })
    }
}

// ---- COPY BINARY ------------------------------------------------------------------------------

/// The column list every COPY writer uses, in row-encoding order.
pub const COPY_IN: &str =
    "COPY user_events (id, user_id, event_type, page_url, metadata, created_at) FROM STDIN (FORMAT binary)";

/// The 19-byte COPY BINARY header.
pub fn copy_header(buf: &mut BytesMut) {
    buf.put_slice(b"PGCOPY\n\xff\r\n\0");
    buf.put_i32(0);
    buf.put_i32(0);
}

/// The COPY BINARY trailer.
pub fn copy_trailer(buf: &mut BytesMut) {
    buf.put_i16(-1);
}

/// One row in COPY BINARY format.
pub fn copy_row(
    buf: &mut BytesMut,
    id: i64,
    user_id: i32,
    event_type: EventType,
    page_url: &str,
    metadata: &str,
    created_at_us: i64,
) {
    buf.put_i16(6);
    buf.put_i32(8);
    buf.put_i64(id);
    buf.put_i32(4);
    buf.put_i32(user_id);
    let t = event_type.as_str();
    buf.put_i32(t.len() as i32);
    buf.put_slice(t.as_bytes());
    buf.put_i32(page_url.len() as i32);
    buf.put_slice(page_url.as_bytes());
    buf.put_i32(metadata.len() as i32 + 1);
    buf.put_u8(1); // jsonb binary format version
    buf.put_slice(metadata.as_bytes());
    buf.put_i32(8);
    buf.put_i64(created_at_us - crate::time::PG_EPOCH_US);
}

impl NewEvent {
    pub fn copy_row(&self, buf: &mut BytesMut, id: i64) {
        copy_row(
            buf,
            id,
            self.user_id,
            self.event_type,
            &self.page_url,
            &self.metadata,
            self.created_at_us,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_478_400_000_000;

    fn one(json: &str) -> Result<Vec<NewEvent>> {
        parse_body(json.as_bytes(), BodyFormat::Json, NOW)
    }

    fn problems(e: Error) -> Vec<String> {
        match e {
            Error::BadRequest { errors, .. } => {
                errors.into_iter().map(|f| format!("{}: {}", f.at, f.problem)).collect()
            }
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn a_single_object_an_array_and_ndjson_parse() {
        let e = one(r#"{"user_id":1,"event_type":"click","page_url":"/a"}"#).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].metadata, "{}");
        assert_eq!(e[0].created_at_us, NOW);
        let e = one(r#"[{"user_id":1,"event_type":"click","page_url":"/a","metadata":{"k":1},"created_at":"2026-01-02T03:04:05.123456Z"}]"#).unwrap();
        assert_eq!(e[0].metadata, r#"{"k":1}"#);
        assert_eq!(e[0].created_at_us, 1_767_323_045_123_456);
        let nd = b"{\"user_id\":1,\"event_type\":\"click\",\"page_url\":\"/a\"}\n\n{\"user_id\":2,\"event_type\":\"signup\",\"page_url\":\"/b\"}\n";
        assert_eq!(parse_body(nd, BodyFormat::NdJson, NOW).unwrap().len(), 2);
    }

    #[test]
    fn every_problem_names_the_index_and_field() {
        let p = problems(one(r#"[{"user_id":1,"event_type":"click","page_url":"/a"},{"user_id":"x","event_type":"nope","extra":1}]"#).unwrap_err());
        assert!(p.contains(&"[1].user_id: must be a number, not a string".to_string()), "{p:?}");
        assert!(p.iter().any(|s| s.starts_with("[1].event_type: must be one of")), "{p:?}");
        assert!(p.contains(&"[1].page_url: is required".to_string()), "{p:?}");
        assert!(p.contains(&"[1].extra: is not a field of an event".to_string()), "{p:?}");
        let p = problems(
            parse_body(
                b"{\"user_id\":0,\"event_type\":\"click\",\"page_url\":\"/a\"}\nnot json\n",
                BodyFormat::NdJson,
                NOW,
            )
            .unwrap_err(),
        );
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("line 2: not valid JSON"), "{p:?}");
        let p = problems(
            parse_body(
                b"{\"user_id\":0,\"event_type\":\"click\",\"page_url\":\"/a\"}\n",
                BodyFormat::NdJson,
                NOW,
            )
            .unwrap_err(),
        );
        assert!(p[0].starts_with("line 1: user_id: must be a whole number"), "{p:?}");
    }

    #[test]
    fn at_most_twenty_problems_are_reported() {
        let body = format!("[{}]", vec![r#"{"user_id":-1}"#; 50].join(","));
        let p = problems(one(&body).unwrap_err());
        assert_eq!(p.len(), MAX_REPORTED_ERRORS);
    }

    #[test]
    fn limits_are_413() {
        let body = format!("[{}]", vec!["{}"; MAX_EVENTS_PER_REQUEST + 1].join(","));
        assert_eq!(one(&body).unwrap_err().status(), 413);
    }

    #[test]
    fn wrong_shapes_and_types_are_400() {
        for bad in [
            "",
            "3",
            "\"x\"",
            "[]",
            "{",
            "[1]",
            r#"{"user_id":1,"event_type":"click","page_url":"/a","metadata":[1]}"#,
            r#"{"user_id":1,"event_type":"click","page_url":"/a","created_at":"yesterday"}"#,
            r#"{"user_id":1.5,"event_type":"click","page_url":"/a"}"#,
            r#"{"user_id":99999999999,"event_type":"click","page_url":"/a"}"#,
            r#"{"user_id":1,"event_type":"click","page_url":""}"#,
        ] {
            assert_eq!(one(bad).unwrap_err().status(), 400, "{bad}");
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(one(&deep).unwrap_err().status(), 400);
        assert_eq!(BodyFormat::from_content_type(Some("text/csv")).unwrap_err().status(), 415);
        assert_eq!(
            BodyFormat::from_content_type(Some("application/x-ndjson; charset=utf-8")).unwrap(),
            BodyFormat::NdJson
        );
    }

    #[test]
    fn cursors_round_trip_and_reject_tampering() {
        let c = Cursor { created_at_us: NOW, id: 42 };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        let mut t = c.encode().into_bytes();
        t[5] = if t[5] == b'A' { b'B' } else { b'A' };
        assert_eq!(Cursor::decode(std::str::from_utf8(&t).unwrap()).unwrap_err().status(), 400);
        for bad in ["", "x", "!!!", &"A".repeat(100)] {
            assert_eq!(Cursor::decode(bad).unwrap_err().status(), 400);
        }
    }
}
