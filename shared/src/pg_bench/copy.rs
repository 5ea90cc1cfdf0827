use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::types::{FromSql, Type};

use super::column_error;
use super::decode::event_type;
use crate::error::{Error, Result};
use crate::events::{self, EventType};

/// An event borrowing its text from the buffer it was decoded from; it serializes exactly like
/// [`Event`] (same fields, order and formats), which the tests check byte for byte.
#[derive(Debug, Serialize)]
pub struct EventRef<'a> {
    pub id: i64,
    pub user_id: i32,
    pub event_type: EventType,
    pub page_url: &'a str,
    pub metadata: Value,
    #[serde(serialize_with = "events::rfc3339")]
    pub created_at: DateTime<Utc>,
}

impl<'a> EventRef<'a> {
    pub(super) fn new(
        id: i64,
        user_id: i32,
        event_type: EventType,
        page_url: &'a str,
        metadata: &str,
        unix_us: i64,
    ) -> Result<Self> {
        Ok(EventRef {
            id,
            user_id,
            event_type,
            page_url,
            metadata: serde_json::from_str(metadata).map_err(|e| column_error("metadata", e))?,
            created_at: DateTime::from_timestamp_micros(unix_us)
                .ok_or_else(|| column_error("created_at", "out of range"))?,
        })
    }
}

/// `COPY … (FORMAT binary)` output → events. The format: an 11-byte signature, a flags word, a
/// header extension; then per tuple an i16 field count and per field an i32 length (-1 = NULL)
/// and the value in the type's binary send format; a field count of -1 ends the data.
pub fn parse_copy(data: &[u8]) -> Result<Vec<EventRef<'_>>> {
    const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
    let bad = |what: String| Error::Internal(format!("COPY BINARY output: {what}"));
    let mut r = Reader { data, pos: 0 };
    if r.take(SIGNATURE.len()) != Some(SIGNATURE) {
        return Err(bad("missing the PGCOPY signature".into()));
    }
    let flags = r.i32().ok_or_else(|| bad("truncated header".into()))?;
    if flags & (1 << 16) != 0 {
        return Err(bad("rows carry OIDs, which this reader does not expect".into()));
    }
    let ext =
        r.i32().filter(|n| *n >= 0).ok_or_else(|| bad("bad header extension length".into()))?;
    r.take(ext as usize).ok_or_else(|| bad("truncated header extension".into()))?;
    let mut out = Vec::new();
    loop {
        let at = out.len();
        match r.i16().ok_or_else(|| bad(format!("truncated before tuple {at} or the trailer")))? {
            -1 => break,
            6 => {}
            n => return Err(bad(format!("tuple {at} has {n} fields, expected 6"))),
        }
        let mut f = [&[][..]; 6];
        for (i, field) in f.iter_mut().enumerate() {
            let len = r.i32().ok_or_else(|| bad(format!("tuple {at} is truncated")))?;
            if len < 0 {
                return Err(bad(format!("tuple {at} field {i} is NULL in a NOT NULL column")));
            }
            *field = r
                .take(len as usize)
                .ok_or_else(|| bad(format!("tuple {at} field {i} is truncated")))?;
        }
        let int = |b: &[u8], name: &str| -> Result<i64> {
            match b.len() {
                8 => Ok(i64::from_be_bytes(b.try_into().expect("8 bytes"))),
                4 => Ok(i32::from_be_bytes(b.try_into().expect("4 bytes")) as i64),
                n => Err(column_error(name, format!("{n}-byte integer"))),
            }
        };
        let text = |b, name: &str| std::str::from_utf8(b).map_err(|e| column_error(name, e));
        let user_id =
            i32::try_from(int(f[1], "user_id")?).map_err(|e| column_error("user_id", e))?;
        let created = pg_micros(f[5]).map_err(|e| column_error("created_at", e))?;
        let meta = jsonb_text(f[4]).map_err(|e| column_error("metadata", e))?;
        out.push(EventRef::new(
            int(f[0], "id")?,
            user_id,
            event_type(text(f[2], "event_type")?)?,
            text(f[3], "page_url")?,
            meta,
            created,
        )?);
    }
    if r.pos != data.len() {
        return Err(bad(format!("{} bytes after the trailer", data.len() - r.pos)));
    }
    Ok(out)
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let b = self.data.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(b)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

/// A `timestamptz` in binary form (µs since 2000-01-01 UTC) → µs since the Unix epoch.
pub fn pg_micros(raw: &[u8]) -> std::result::Result<i64, BoxError> {
    let b: [u8; 8] =
        raw.try_into().map_err(|_| format!("timestamptz must be 8 bytes, got {}", raw.len()))?;
    i64::from_be_bytes(b)
        .checked_add(crate::time::PG_EPOCH_US)
        .ok_or_else(|| "timestamptz is infinity or out of range".into())
}

/// A `jsonb` in binary form (a version byte, 1, then the JSON text) → the text.
pub fn jsonb_text(raw: &[u8]) -> std::result::Result<&str, BoxError> {
    match raw.split_first() {
        Some((1, text)) => Ok(std::str::from_utf8(text)?),
        Some((v, _)) => Err(format!("jsonb version {v} is not supported (expected 1)").into()),
        None => Err("empty jsonb value".into()),
    }
}

/// A `json`/`jsonb` column as borrowed text, so the Polars frame can hold it without parsing.
pub struct JsonText<'a>(pub &'a str);

impl<'a> FromSql<'a> for JsonText<'a> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        if *ty == Type::JSONB {
            jsonb_text(raw).map(JsonText)
        } else {
            Ok(JsonText(std::str::from_utf8(raw)?))
        }
    }
    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSON | Type::JSONB)
    }
}

/// A `timestamptz` column as µs since the Unix epoch, the physical value of a Polars `Datetime`.
pub struct Micros(pub i64);

impl<'a> FromSql<'a> for Micros {
    fn from_sql(_: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        pg_micros(raw).map(Micros)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }
}

// ---- the benchmark ------------------------------------------------------------------------------
