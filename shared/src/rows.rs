//! Four ways to turn a user's newest events into the JSON body `GET /events/{user_id}` would
//! send, timed apart (query vs decode), so the reference stack's Pydantic / msgspec / Polars
//! comparison can be reproduced honestly: every approach is warmed up, runs on the same pooled
//! connection with a prepared statement, and must produce byte-identical bodies.
//!
//! - `dynamic`: rows → generic JSON records, by column name and type (the dict/Pydantic analog);
//! - `typed`: rows → [`Event`] via `FromSql` → serde (the msgspec analog, and the reference body);
//! - `polars`: rows → a Polars `DataFrame` (columnar) → JSON;
//! - `copy_binary`: `COPY … TO STDOUT (FORMAT binary)` parsed by hand → typed rows → JSON.
//!
//! The canonical rendering is serde_json's: `metadata` is parsed from PostgreSQL's jsonb text into
//! a `serde_json::Value` and written back, so `1e300` (stored as a 301-digit numeric) is `1e+300`,
//! `-0.0` (numeric has no negative zero) is `0.0`, `1.10` is `1.1`, and object keys come out in
//! `Value`'s map order. Every approach goes through that one path for `metadata`, so they agree.

use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use polars::prelude::{
    Column, DataFrame, Int32Chunked, Int64Chunked, IntoColumn, IntoSeries, NewChunkedArray,
    StringChunked, TimeUnit, TimeZone,
};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Row, Statement};

use crate::error::{Error, Result};
use crate::events::{self, Event, EventType};
use crate::pg::{Client, Pg};

/// The columns every approach reads, in the order of [`Event`]'s fields.
const COLUMNS: &str = "id, user_id, event_type, page_url, metadata, created_at";

/// A user's newest events, by the `(user_id, created_at DESC, id DESC)` index.
const SELECT: &str =
    "SELECT id, user_id, event_type, page_url, metadata, created_at FROM user_events \
                      WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2";

/// A generous size of one event's JSON, so the body is allocated once (the seed's are ~220 B).
const ROW_JSON_BYTES: usize = 256;

/// µs from the Unix epoch to PostgreSQL's (2000-01-01T00:00:00Z).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// One way of producing the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Approach {
    Dynamic,
    Typed,
    Polars,
    CopyBinary,
}

impl Approach {
    /// In the order responses list them; `dynamic` is the baseline speedups are measured against.
    pub const ALL: [Approach; 4] =
        [Approach::Dynamic, Approach::Typed, Approach::Polars, Approach::CopyBinary];

    pub fn name(self) -> &'static str {
        match self {
            Approach::Dynamic => "dynamic",
            Approach::Typed => "typed",
            Approach::Polars => "polars",
            Approach::CopyBinary => "copy_binary",
        }
    }

    /// The order of run `run`: rotated by one each run, so no approach always goes first (on a
    /// cold cache line) or always follows the same neighbour.
    pub fn order(run: usize) -> [Approach; 4] {
        std::array::from_fn(|i| Approach::ALL[(run + i) % Approach::ALL.len()])
    }
}

/// What one approach produced, and how long each half took.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The JSON array a client would get.
    pub body: Vec<u8>,
    /// Rows in it.
    pub count: usize,
    /// From sending the query until the last row (or COPY chunk) arrived.
    pub query: Duration,
    /// From the received rows to the finished body.
    pub decode: Duration,
}

impl Outcome {
    pub fn total(&self) -> Duration {
        self.query + self.decode
    }
}

/// One pooled connection with both statements prepared, so that only execution is timed.
pub struct Session {
    pg: Pg,
    client: Client,
    select: Statement,
    copy: Statement,
    user_id: i32,
    limit: i64,
}

impl Session {
    /// Takes a connection and prepares the statements for `user_id`'s newest `limit` events.
    pub async fn open(pg: &Pg, user_id: i32, limit: i64) -> Result<Session> {
        let client = pg.client().await?;
        let select = pg.timed("prepare select", client.prepare_cached(SELECT)).await?;
        // COPY takes no bind parameters, so the two integers are written into the statement; it is
        // prepared per session, not cached, since every (user, limit) pair is another statement.
        let copy_sql = format!(
            "COPY (SELECT {COLUMNS} FROM user_events WHERE user_id = {user_id} \
             ORDER BY created_at DESC, id DESC LIMIT {limit}) TO STDOUT (FORMAT binary)"
        );
        let copy = pg.timed("prepare copy", client.prepare(&copy_sql)).await?;
        Ok(Session { pg: pg.clone(), client, select, copy, user_id, limit })
    }

    /// Runs one approach once.
    pub async fn run(&self, approach: Approach) -> Result<Outcome> {
        let started = Instant::now();
        if approach == Approach::CopyBinary {
            let data = self.pg.timed("copy out events", self.copy_out()).await?;
            let query = started.elapsed();
            let rows = parse_copy(&data)?;
            let body = encode(&rows, rows.len() * ROW_JSON_BYTES)?;
            return Ok(Outcome {
                count: rows.len(),
                body,
                query,
                decode: started.elapsed() - query,
            });
        }
        let rows = self
            .pg
            .timed("select events", self.client.query(&self.select, &[&self.user_id, &self.limit]))
            .await?;
        let query = started.elapsed();
        let hint = rows.len() * ROW_JSON_BYTES;
        let body = match approach {
            Approach::Dynamic => encode(&dynamic(&rows)?, hint)?,
            Approach::Typed => encode(&typed(&rows)?, hint)?,
            Approach::Polars => frame_json(&frame(&rows)?, hint)?,
            Approach::CopyBinary => unreachable!("handled above"),
        };
        Ok(Outcome { count: rows.len(), body, query, decode: started.elapsed() - query })
    }

    /// The whole COPY output in one buffer (PostgreSQL sends one message per row).
    async fn copy_out(&self) -> std::result::Result<Vec<u8>, tokio_postgres::Error> {
        let stream = self.client.copy_out(&self.copy).await?;
        futures::pin_mut!(stream);
        let mut data = Vec::with_capacity(64 * 1024);
        while let Some(chunk) = stream.next().await {
            data.extend_from_slice(&chunk?);
        }
        Ok(data)
    }
}

fn encode<T: Serialize + ?Sized>(value: &T, hint: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(hint.max(64));
    serde_json::to_writer(&mut out, value)
        .map_err(|e| Error::Internal(format!("encoding events: {e}")))?;
    Ok(out)
}

fn column_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("decoding user_events.{what}: {e}"))
}

// ---- typed --------------------------------------------------------------------------------------

/// Rows → the API's own [`Event`]; its serialization is the reference body.
pub fn typed(rows: &[Row]) -> Result<Vec<Event>> {
    rows.iter()
        .map(|r| {
            let kind: &str = r.try_get(2).map_err(|e| column_error("event_type", e))?;
            Ok(Event {
                id: r.try_get(0).map_err(|e| column_error("id", e))?,
                user_id: r.try_get(1).map_err(|e| column_error("user_id", e))?,
                event_type: event_type(kind)?,
                page_url: r.try_get(3).map_err(|e| column_error("page_url", e))?,
                metadata: r.try_get(4).map_err(|e| column_error("metadata", e))?,
                created_at: r.try_get(5).map_err(|e| column_error("created_at", e))?,
            })
        })
        .collect()
}

fn event_type(s: &str) -> Result<EventType> {
    EventType::parse(s).ok_or_else(|| column_error("event_type", format!("unknown value {s:?}")))
}

// ---- dynamic ------------------------------------------------------------------------------------

/// One row as a generic record: column name → JSON value, in column order (as a Python dict
/// keeps insertion order; `serde_json::Map` would sort the keys and change the body).
#[derive(Debug, Clone, PartialEq)]
pub struct Record(pub Vec<(String, Value)>);

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// Rows → records, knowing nothing about the table: each value is converted by its column type.
pub fn dynamic(rows: &[Row]) -> Result<Vec<Record>> {
    rows.iter()
        .map(|r| {
            let fields = r
                .columns()
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    Ok((
                        c.name().to_string(),
                        value(r, i, c.type_()).map_err(|e| column_error(c.name(), e))?,
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Record(fields))
        })
        .collect()
}

fn value(r: &Row, i: usize, ty: &Type) -> std::result::Result<Value, tokio_postgres::Error> {
    Ok(match *ty {
        Type::INT8 => r.try_get::<_, Option<i64>>(i)?.into(),
        Type::INT4 => r.try_get::<_, Option<i32>>(i)?.into(),
        Type::INT2 => r.try_get::<_, Option<i16>>(i)?.into(),
        Type::BOOL => r.try_get::<_, Option<bool>>(i)?.into(),
        Type::FLOAT8 => r.try_get::<_, Option<f64>>(i)?.into(),
        Type::JSON | Type::JSONB => r.try_get::<_, Option<Value>>(i)?.unwrap_or(Value::Null),
        Type::TIMESTAMPTZ => r
            .try_get::<_, Option<DateTime<Utc>>>(i)?
            .map(|t| Value::String(t.to_rfc3339_opts(SecondsFormat::Micros, true)))
            .unwrap_or(Value::Null),
        // text, varchar, name, …: anything else is read as text, which fails loudly if it is not.
        _ => r.try_get::<_, Option<String>>(i)?.into(),
    })
}

// ---- polars -------------------------------------------------------------------------------------

/// Rows → a `DataFrame`: one pass per column, strings borrowed from the rows until Polars copies
/// them into its Arrow buffers; `created_at` is a UTC µs `Datetime`, `metadata` its JSON text.
pub fn frame(rows: &[Row]) -> Result<DataFrame> {
    fn col<'a, T: FromSql<'a>>(rows: &'a [Row], i: usize, name: &str) -> Result<Vec<T>> {
        rows.iter().map(|r| r.try_get(i).map_err(|e| column_error(name, e))).collect()
    }
    let n = rows.len();
    let metadata: Vec<JsonText> = col(rows, 4, "metadata")?;
    let created: Vec<Micros> = col(rows, 5, "created_at")?;
    let columns: Vec<Column> = vec![
        Int64Chunked::from_vec("id".into(), col(rows, 0, "id")?).into_column(),
        Int32Chunked::from_vec("user_id".into(), col(rows, 1, "user_id")?).into_column(),
        StringChunked::from_iter_values(
            "event_type".into(),
            col::<&str>(rows, 2, "event_type")?.into_iter(),
        )
        .into_column(),
        StringChunked::from_iter_values(
            "page_url".into(),
            col::<&str>(rows, 3, "page_url")?.into_iter(),
        )
        .into_column(),
        StringChunked::from_iter_values("metadata".into(), metadata.iter().map(|m| m.0))
            .into_column(),
        Int64Chunked::from_vec("created_at".into(), created.iter().map(|m| m.0).collect())
            .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
            .into_series()
            .into_column(),
    ];
    DataFrame::new(n, columns)
        .map_err(|e| Error::Internal(format!("building the events frame: {e}")))
}

/// A frame from [`frame`] → the body, walking the columns row by row.
pub fn frame_json(df: &DataFrame, hint: usize) -> Result<Vec<u8>> {
    let polars =
        |e: polars::error::PolarsError| Error::Internal(format!("reading the events frame: {e}"));
    let get = |name: &str| df.column(name).map_err(polars);
    let (ids, users, kinds) = (
        get("id")?.i64().map_err(polars)?,
        get("user_id")?.i32().map_err(polars)?,
        get("event_type")?.str().map_err(polars)?,
    );
    let (urls, meta) =
        (get("page_url")?.str().map_err(polars)?, get("metadata")?.str().map_err(polars)?);
    let created = get("created_at")?.datetime().map_err(polars)?.physical();
    if [
        ids.null_count(),
        users.null_count(),
        kinds.null_count(),
        urls.null_count(),
        meta.null_count(),
        created.null_count(),
    ] != [0; 6]
    {
        return Err(Error::Internal("the events frame holds nulls in NOT NULL columns".into()));
    }
    let mut rows = Vec::with_capacity(df.height());
    let columns = ids
        .no_null_iter()
        .zip(users.no_null_iter())
        .zip(kinds.no_null_iter())
        .zip(urls.no_null_iter());
    for ((((id, user_id), kind), page_url), (meta, us)) in
        columns.zip(meta.no_null_iter().zip(created.no_null_iter()))
    {
        rows.push(EventRef::new(id, user_id, event_type(kind)?, page_url, meta, us)?);
    }
    encode(&rows, hint)
}

// ---- copy_binary --------------------------------------------------------------------------------

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
    fn new(
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
        .checked_add(PG_EPOCH_US)
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

/// avg / min / p50 / max of one measure, in ms.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Spread {
    pub avg: f64,
    pub min: f64,
    pub p50: f64,
    pub max: f64,
}

impl Spread {
    /// Of `samples` (at least one); p50 is the median, the mean of the middle two for even counts.
    pub fn of(samples: &[Duration]) -> Spread {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let n = ms.len();
        let p50 = if n == 0 {
            0.0
        } else if n % 2 == 1 {
            ms[n / 2]
        } else {
            (ms[n / 2 - 1] + ms[n / 2]) / 2.0
        };
        Spread {
            avg: round(ms.iter().sum::<f64>() / n.max(1) as f64, 4),
            min: round(ms.first().copied().unwrap_or(0.0), 4),
            p50: round(p50, 4),
            max: round(ms.last().copied().unwrap_or(0.0), 4),
        }
    }
}

fn round(v: f64, decimals: i32) -> f64 {
    let p = 10f64.powi(decimals);
    (v * p).round() / p
}

fn ms(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1e3, 4)
}

/// Values keyed by approach, serialized as a JSON object in [`Approach::ALL`] order.
#[derive(Debug, Clone)]
pub struct ByApproach<T>(pub Vec<(Approach, T)>);

impl<T> ByApproach<T> {
    pub fn get(&self, a: Approach) -> Option<&T> {
        self.0.iter().find(|(k, _)| *k == a).map(|(_, v)| v)
    }
}

impl<T: Serialize> Serialize for ByApproach<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k.name(), v)?;
        }
        m.end()
    }
}

/// Which approach was fastest, and each one's speedup over `dynamic` (dynamic / theirs).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Comparison {
    #[schema(value_type = String)]
    pub fastest: &'static str,
    /// The figure compared: `p50 total_ms` for the repeated benchmark, `total_time_ms` for one pass.
    #[schema(value_type = String)]
    pub basis: &'static str,
    /// By approach: `dynamic`, `typed`, `polars`, `copy_binary`.
    #[schema(value_type = BTreeMap<String, f64>)]
    pub speedup_vs_dynamic: ByApproach<f64>,
}

impl Comparison {
    fn of(totals: &[(Approach, f64)], basis: &'static str) -> Comparison {
        let fastest = totals
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(a, _)| a.name())
            .unwrap_or("typed");
        let base =
            totals.iter().find(|(a, _)| *a == Approach::Dynamic).map(|(_, t)| *t).unwrap_or(0.0);
        let speedup = totals
            .iter()
            .map(|(a, t)| (*a, if *t > 0.0 { round(base / t, 2) } else { 0.0 }))
            .collect();
        Comparison { fastest, basis, speedup_vs_dynamic: ByApproach(speedup) }
    }
}

/// One approach's figures over the counted runs.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = DecodeStats)]
pub struct Stats {
    pub query_ms: Spread,
    pub decode_ms: Spread,
    pub total_ms: Spread,
    /// Rows in the body.
    pub count: usize,
    /// Size of the body.
    pub bytes: usize,
    /// Counted runs (the warm-up is not among them).
    pub samples: usize,
}

/// `GET /samples/pg/benchmark`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = DecodeReport)]
pub struct Report {
    pub dataset_size: usize,
    pub user_id: i32,
    pub limit: i64,
    pub runs: usize,
    #[schema(value_type = BTreeMap<String, Stats>)]
    pub approaches: ByApproach<Stats>,
    pub comparison: Comparison,
    /// Whether every approach's body was byte-identical to `typed`'s in the warm-up round.
    pub identical_json: bool,
    pub note: String,
}

/// One approach's figures in the reference's "all approaches" shape.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Pass {
    pub query_time_ms: f64,
    pub parse_time_ms: f64,
    pub total_time_ms: f64,
    pub count: usize,
}

/// `GET /samples/pg/benchmark-all`, in the reference's shape.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PassReport {
    pub dataset_size: usize,
    #[schema(value_type = BTreeMap<String, Pass>)]
    pub approaches: ByApproach<Pass>,
    pub comparison: Comparison,
    pub identical_json: bool,
    pub note: String,
}

/// Runs every approach once, uncounted, and says whether their bodies agree with `typed`'s.
async fn warm_up(s: &Session) -> Result<(usize, bool)> {
    let mut bodies = Vec::with_capacity(4);
    for a in Approach::ALL {
        bodies.push((a, s.run(a).await?));
    }
    let reference = &bodies.iter().find(|(a, _)| *a == Approach::Typed).expect("typed is in ALL").1;
    let identical = bodies.iter().all(|(_, o)| o.body == reference.body);
    if !identical {
        tracing::error!(
            user_id = s.user_id,
            limit = s.limit,
            "row-decoding approaches disagree on the JSON body"
        );
    }
    Ok((reference.count, identical))
}

/// `runs` counted rounds of every approach after one warm-up round, rotating the order each run.
pub async fn benchmark(pg: &Pg, user_id: i32, limit: i64, runs: usize) -> Result<Report> {
    let s = Session::open(pg, user_id, limit).await?;
    let (dataset_size, identical_json) = warm_up(&s).await?;
    let mut samples: Vec<(Approach, Vec<Outcome>)> =
        Approach::ALL.iter().map(|a| (*a, Vec::with_capacity(runs))).collect();
    for run in 0..runs {
        for a in Approach::order(run) {
            let o = s.run(a).await?;
            samples.iter_mut().find(|(k, _)| *k == a).expect("every approach has a slot").1.push(o);
        }
    }
    let stats: Vec<(Approach, Stats)> = samples
        .iter()
        .map(|(a, os)| {
            let last = os.last();
            let spread =
                |f: fn(&Outcome) -> Duration| Spread::of(&os.iter().map(f).collect::<Vec<_>>());
            let stats = Stats {
                query_ms: spread(|o| o.query),
                decode_ms: spread(|o| o.decode),
                total_ms: spread(Outcome::total),
                count: last.map_or(0, |o| o.count),
                bytes: last.map_or(0, |o| o.body.len()),
                samples: os.len(),
            };
            (*a, stats)
        })
        .collect();
    let totals: Vec<(Approach, f64)> = stats.iter().map(|(a, s)| (*a, s.total_ms.p50)).collect();
    Ok(Report {
        dataset_size,
        user_id,
        limit,
        runs,
        comparison: Comparison::of(&totals, "p50 total_ms"),
        approaches: ByApproach(stats),
        identical_json,
        note: format!(
            "one warm-up round of every approach ran first and is not counted; then {runs} run(s), the order of \
             approaches rotating by one each run; all on one pooled connection with prepared statements; query_ms \
             ends when the last row has arrived, decode_ms ends with the finished JSON body"
        ),
    })
}

/// One counted pass of every approach after the warm-up round, in the reference's shape.
pub async fn one_pass(pg: &Pg, user_id: i32, limit: i64) -> Result<PassReport> {
    let s = Session::open(pg, user_id, limit).await?;
    let (dataset_size, identical_json) = warm_up(&s).await?;
    let mut passes = Vec::with_capacity(4);
    for a in Approach::ALL {
        let o = s.run(a).await?;
        passes.push((
            a,
            Pass {
                query_time_ms: ms(o.query),
                parse_time_ms: ms(o.decode),
                total_time_ms: ms(o.total()),
                count: o.count,
            },
        ));
    }
    let totals: Vec<(Approach, f64)> = passes.iter().map(|(a, p)| (*a, p.total_time_ms)).collect();
    Ok(PassReport {
        dataset_size,
        comparison: Comparison::of(&totals, "total_time_ms"),
        approaches: ByApproach(passes),
        identical_json,
        note: "one warm-up round of every approach ran first and is not counted (the reference's 509x compared a \
               cold first call with warm ones); then one pass of each, on one pooled connection with prepared \
               statements"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A COPY BINARY stream with the given tuples (each a list of fields; `None` is NULL).
    fn copy_stream(tuples: &[Vec<Option<Vec<u8>>>], ext: &[u8]) -> Vec<u8> {
        let mut b = b"PGCOPY\n\xff\r\n\0".to_vec();
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&(ext.len() as i32).to_be_bytes());
        b.extend_from_slice(ext);
        for t in tuples {
            b.extend_from_slice(&(t.len() as i16).to_be_bytes());
            for f in t {
                match f {
                    None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(v) => {
                        b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                        b.extend_from_slice(v);
                    }
                }
            }
        }
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b
    }

    fn tuple(id: i64, pg_us: i64, meta: &str) -> Vec<Option<Vec<u8>>> {
        let mut jsonb = vec![1u8];
        jsonb.extend_from_slice(meta.as_bytes());
        vec![
            Some(id.to_be_bytes().to_vec()),
            Some(7i32.to_be_bytes().to_vec()),
            Some(b"click".to_vec()),
            Some("/é".as_bytes().to_vec()),
            Some(jsonb),
            Some(pg_us.to_be_bytes().to_vec()),
        ]
    }

    #[test]
    fn copy_binary_is_parsed_by_hand() {
        let data = copy_stream(
            &[tuple(1, 0, r#"{"b": 1, "a": [true, null]}"#), tuple(2, -1, "{}")],
            b"ext",
        );
        let rows = parse_copy(&data).unwrap();
        assert_eq!(rows.len(), 2);
        let json = serde_json::to_string(&rows).unwrap();
        assert_eq!(
            json,
            r#"[{"id":1,"user_id":7,"event_type":"click","page_url":"/é","metadata":{"a":[true,null],"b":1},"created_at":"2000-01-01T00:00:00.000000Z"},{"id":2,"user_id":7,"event_type":"click","page_url":"/é","metadata":{},"created_at":"1999-12-31T23:59:59.999999Z"}]"#
        );
        assert!(parse_copy(&copy_stream(&[], b"")).unwrap().is_empty());
    }

    #[test]
    fn broken_copy_streams_are_errors_not_panics() {
        let good = copy_stream(&[tuple(1, 0, "{}")], b"");
        for cut in 0..good.len() {
            assert!(parse_copy(&good[..cut]).is_err(), "a stream cut at {cut} must be rejected");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(parse_copy(&trailing).is_err());
        let mut null = tuple(1, 0, "{}");
        null[3] = None;
        assert!(parse_copy(&copy_stream(&[null], b"")).is_err());
        let mut v2 = tuple(1, 0, "{}");
        v2[4] = Some(b"\x02{}".to_vec());
        assert!(parse_copy(&copy_stream(&[v2], b"")).is_err());
        let mut kind = tuple(1, 0, "{}");
        kind[2] = Some(b"hover".to_vec());
        assert!(parse_copy(&copy_stream(&[kind], b"")).is_err());
        let mut short = tuple(1, 0, "{}");
        short.pop();
        assert!(parse_copy(&copy_stream(&[short], b"")).is_err());
        let mut infinity = tuple(1, i64::MAX, "{}");
        infinity[5] = Some(i64::MAX.to_be_bytes().to_vec());
        assert!(parse_copy(&copy_stream(&[infinity], b"")).is_err());
        let mut oids = good.clone();
        oids[11..15].copy_from_slice(&(1i32 << 16).to_be_bytes());
        assert!(parse_copy(&oids).is_err());
    }

    #[test]
    fn the_order_rotates_so_each_approach_leads_once_in_four_runs() {
        let leads: Vec<Approach> = (0..4).map(|r| Approach::order(r)[0]).collect();
        assert_eq!(leads, Approach::ALL.to_vec());
        for r in 0..8 {
            let mut o = Approach::order(r).to_vec();
            o.sort_by_key(|a| a.name());
            let mut all = Approach::ALL.to_vec();
            all.sort_by_key(|a| a.name());
            assert_eq!(o, all, "run {r} runs every approach once");
        }
    }

    #[test]
    fn spreads_use_the_median_and_speedups_compare_with_dynamic() {
        let d = |us: u64| Duration::from_micros(us);
        let s = Spread::of(&[d(400), d(100), d(300), d(200)]);
        assert_eq!(s, Spread { avg: 0.25, min: 0.1, p50: 0.25, max: 0.4 });
        assert_eq!(Spread::of(&[d(5), d(1), d(3)]).p50, 0.003);
        let c = Comparison::of(
            &[(Approach::Dynamic, 2.0), (Approach::Typed, 0.5), (Approach::Polars, 1.0)],
            "x",
        );
        assert_eq!(c.fastest, "typed");
        assert_eq!(
            serde_json::to_string(&c.speedup_vs_dynamic).unwrap(),
            r#"{"dynamic":1.0,"typed":4.0,"polars":2.0}"#
        );
    }
}
