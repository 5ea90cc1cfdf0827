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

mod copy;
mod decode;
mod report;
#[cfg(test)]
mod tests;

pub use copy::*;
pub use decode::*;
pub use report::*;

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use tokio_postgres::Statement;

use crate::error::{Error, Result};
use crate::pg::{Client, Pg};

/// The columns every approach reads, in the order of [`Event`]'s fields.
const COLUMNS: &str = "id, user_id, event_type, page_url, metadata, created_at";

/// A user's newest events, by the `(user_id, created_at DESC, id DESC)` index.
const SELECT: &str =
    "SELECT id, user_id, event_type, page_url, metadata, created_at FROM user_events \
                      WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2";

/// A generous size of one event's JSON, so the body is allocated once (the seed's are ~220 B).
const ROW_JSON_BYTES: usize = 256;

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
