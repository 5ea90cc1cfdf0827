use chrono::{DateTime, SecondsFormat, Utc};
use polars::prelude::{
    Column, DataFrame, Int32Chunked, Int64Chunked, IntoColumn, IntoSeries, NewChunkedArray,
    StringChunked, TimeUnit, TimeZone,
};
use serde::ser::Serializer;
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::Row;

use super::{column_error, encode, EventRef, JsonText, Micros};
use crate::error::{Error, Result};
use crate::events::{Event, EventType};

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

pub(super) fn event_type(s: &str) -> Result<EventType> {
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
