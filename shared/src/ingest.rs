//! Writes to `user_events`: validated batches and generated bulk loads, both through COPY BINARY
//! in one transaction, so a batch is written whole or not at all. An `Idempotency-Key` makes a
//! retried batch replay its first response instead of writing twice.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::SinkExt;
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::Statement;

use crate::error::{Error, Result};
use crate::events::{self, NewEvent};
use crate::generate::Generator;
use crate::pg::{Pg, Timer};
use crate::time::ms;

/// What a write reports.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Inserted {
    pub inserted: u64,
    pub first_id: i64,
    pub last_id: i64,
    pub took_ms: f64,
}

/// The result of a write that carried an idempotency key.
#[derive(Debug)]
pub enum Outcome {
    /// Written now.
    Written(Inserted),
    /// Written before under this key; here is the response it got.
    Replayed(Value),
}

/// Rows are sent to PostgreSQL in chunks of about this many bytes.
const CHUNK_BYTES: usize = 1 << 20;

/// Longest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// An `Idempotency-Key` as a write carries it.
#[derive(Debug, Clone, Copy)]
pub struct Idempotency<'a> {
    /// Who sent it ([`crate::http::Caller`]): keys are scoped per caller, so another caller's
    /// key never replays this one's answer.
    pub caller: &'a str,
    pub key: &'a str,
    /// A hash of the body: the same key with another body is a 409.
    pub body_hash: &'a str,
    /// How long the key replays its answer; after that it is free again. Every keyed write also
    /// deletes up to [`EXPIRED_PER_WRITE`] expired keys, so the table stays bounded.
    pub ttl: Duration,
}

/// Most expired keys one keyed write deletes.
pub const EXPIRED_PER_WRITE: i64 = 100;

/// Writes `batch` in one transaction. With `key`, a retry with the same body replays the stored
/// response; the same key with another body is a 409.
pub async fn insert(pg: &Pg, batch: &[NewEvent], key: Option<Idempotency<'_>>) -> Result<Outcome> {
    let started = Instant::now();
    let n = batch.len() as i64;
    let mut c = pg.client().await?;
    let timer = pg.bounded(pg.timeout());
    let (reserve, copy) = prepared(&timer, &c).await?;
    let first_id = reserve_ids(&timer, &c, &reserve, n).await?;
    let tx = pg.timed("begin", c.transaction()).await?;
    if let Some(k) = key {
        // Claims the key, or takes over an expired one; in the same statement, deletes a few
        // other expired keys (skipping rows another writer holds).
        let claim = "WITH expired AS (
                DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
                    SELECT ctid FROM idempotency_keys
                    WHERE created_at < now() - make_interval(secs => $4)
                      AND NOT (caller = $1 AND key = $2)
                    LIMIT $5 FOR UPDATE SKIP LOCKED)))
            INSERT INTO idempotency_keys (caller, key, body_hash) VALUES ($1, $2, $3)
            ON CONFLICT (caller, key) DO UPDATE
                SET body_hash = EXCLUDED.body_hash, status = NULL, response = NULL, created_at = now()
                WHERE idempotency_keys.created_at < now() - make_interval(secs => $4)";
        let ttl_s = k.ttl.as_secs_f64();
        let claimed = pg
            .timed(
                "claim idempotency key",
                tx.execute(claim, &[&k.caller, &k.key, &k.body_hash, &ttl_s, &EXPIRED_PER_WRITE]),
            )
            .await?;
        if claimed == 0 {
            // Another request with this key committed first (we waited on its row lock if it was in flight).
            let row = pg
                .timed(
                    "read idempotency key",
                    tx.query_one(
                        "SELECT body_hash, response FROM idempotency_keys WHERE caller = $1 AND key = $2",
                        &[&k.caller, &k.key],
                    ),
                )
                .await?;
            let stored_hash: String = row.get(0);
            let key = k.key;
            if stored_hash != k.body_hash {
                return Err(Error::Conflict(format!(
                    "Idempotency-Key {key:?} was used before with a different body; use a new key for a new batch"
                )));
            }
            let response: Option<Value> = row.get(1);
            return response.map(Outcome::Replayed).ok_or_else(|| {
                Error::Conflict(format!(
                    "a request with Idempotency-Key {key:?} is still in progress"
                ))
            });
        }
    }
    let mut buf = BytesMut::with_capacity(CHUNK_BYTES + 64 * 1024);
    events::copy_header(&mut buf);
    let sink = pg.timed("copy", tx.copy_in(&copy)).await?;
    futures::pin_mut!(sink);
    for (k, e) in batch.iter().enumerate() {
        e.copy_row(&mut buf, first_id + k as i64);
        if buf.len() >= CHUNK_BYTES {
            pg.timed("copy", sink.send(buf.split().freeze())).await?;
        }
    }
    events::copy_trailer(&mut buf);
    pg.timed("copy", sink.send(buf.split().freeze())).await?;
    let written = pg.timed("copy", sink.as_mut().finish()).await?;
    let inserted =
        Inserted { inserted: written, first_id, last_id: first_id + n - 1, took_ms: 0.0 };
    if let Some(k) = key {
        let mut stored = inserted.clone();
        stored.took_ms = ms(started.elapsed());
        let v = serde_json::to_value(&stored).expect("a plain struct serializes");
        pg.timed(
            "store idempotent response",
            tx.execute(
                "UPDATE idempotency_keys SET status = 201, response = $3 WHERE caller = $1 AND key = $2",
                &[&k.caller, &k.key, &v],
            ),
        )
        .await?;
    }
    pg.timed("commit", tx.commit()).await?;
    Ok(Outcome::Written(Inserted { took_ms: ms(started.elapsed()), ..inserted }))
}

/// The id reservation and the COPY, prepared once per connection (both in one round trip): a
/// write then spends its round trips on the work, not on parsing the same two statements again.
async fn prepared(timer: &Timer, c: &crate::pg::Client) -> Result<(Statement, Statement)> {
    let both = futures::future::try_join(
        c.prepare_cached("SELECT quiver_reserve_event_ids($1)"),
        c.prepare_cached(events::COPY_IN),
    );
    timer.timed("prepare", both).await
}

/// Reserves `n` consecutive ids and returns the first. It runs on its own, before the write's
/// transaction: the function's transaction-level lock then lasts this one statement, so concurrent
/// writers do not queue behind each other's COPY. A write that fails afterwards leaves a gap in the
/// ids, as any failed insert into a `bigserial` does.
async fn reserve_ids(
    timer: &Timer,
    c: &crate::pg::Client,
    reserve: &Statement,
    n: i64,
) -> Result<i64> {
    let row = timer.timed("reserve ids", c.query_one(reserve, &[&n])).await?;
    Ok(row.get(0))
}

/// Generates `count` events from `gen` (items `start..start+count`) and writes them in one
/// transaction through COPY BINARY. `progress` is called with the rows sent so far.
pub async fn bulk(
    pg: &Pg,
    gen: &Generator,
    start: u64,
    count: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Inserted> {
    let started = Instant::now();
    let mut c = pg.client().await?;
    // A million rows take seconds, not the per-statement default; give the load room, bounded.
    let limit = pg.timeout().max(Duration::from_secs(10)) + Duration::from_micros(count * 20);
    let bounded = pg.bounded(limit);
    let (reserve, copy) = prepared(&bounded, &c).await?;
    let first_id = reserve_ids(&bounded, &c, &reserve, count as i64).await?;
    let tx = bounded.timed("begin", c.transaction()).await?;
    bounded
        .timed(
            "set timeout",
            tx.batch_execute(&format!("SET LOCAL statement_timeout = {}", limit.as_millis())),
        )
        .await?;
    let sink = bounded.timed("copy", tx.copy_in(&copy)).await?;
    futures::pin_mut!(sink);
    const ROWS_PER_CHUNK: u64 = 5_000;
    let mut buf = BytesMut::with_capacity(ROWS_PER_CHUNK as usize * 200);
    events::copy_header(&mut buf);
    let mut sent = 0u64;
    while sent < count {
        let n = ROWS_PER_CHUNK.min(count - sent);
        gen.copy_rows(start + sent..start + sent + n, first_id + sent as i64, &mut buf);
        sent += n;
        if sent == count {
            events::copy_trailer(&mut buf);
        }
        bounded.timed("copy", sink.send(buf.split().freeze())).await?;
        progress(sent);
    }
    if count == 0 {
        events::copy_trailer(&mut buf);
        bounded.timed("copy", sink.send(buf.split().freeze())).await?;
    }
    let written = bounded.timed("copy", sink.as_mut().finish()).await?;
    bounded.timed("commit", tx.commit()).await?;
    Ok(Inserted {
        inserted: written,
        first_id,
        last_id: first_id + count as i64 - 1,
        took_ms: ms(started.elapsed()),
    })
}

/// Most bytes of event JSON one page holds. A page stops early at this size (and says where the
/// next one starts), so that the answer stays far under Lambda's 6 MB response limit even after
/// the Lambda envelope escapes it again: 1,000 events of the largest accepted size would be
/// about 20 MB.
pub const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// One page of a user's events, newest first, and the cursor of the next page: at most `limit`
/// events and at most [`MAX_PAGE_BYTES`] of them (always at least one).
pub async fn list(
    pg: &Pg,
    user_id: i32,
    limit: i64,
    cursor: Option<events::Cursor>,
) -> Result<(Vec<events::Event>, Option<events::Cursor>)> {
    let c = pg.client().await?;
    const COLS: &str =
        "SELECT id, user_id, event_type, page_url, metadata, created_at FROM user_events";
    let rows = match cursor {
        None => {
            let sql =
                format!("{COLS} WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2");
            pg.timed("list events", c.query(&sql, &[&user_id, &(limit + 1)])).await?
        }
        Some(cur) => {
            // A decoded cursor lies within `CURSOR_CREATED_AT_US`; a `Cursor` built by hand is
            // moved to the nearest end, which changes nothing: no event lies beyond either.
            let (first, last) =
                (*events::CURSOR_CREATED_AT_US.start(), *events::CURSOR_CREATED_AT_US.end());
            let at = chrono::DateTime::from_timestamp_micros(cur.created_at_us.clamp(first, last))
                .expect("within chrono's range");
            let sql = format!(
                "{COLS} WHERE user_id = $1 AND (created_at, id) < ($2, $3) ORDER BY created_at DESC, id DESC LIMIT $4"
            );
            pg.timed("list events", c.query(&sql, &[&user_id, &at, &cur.id, &(limit + 1)])).await?
        }
    };
    let mut out: Vec<events::Event> = Vec::with_capacity(rows.len());
    for r in rows.iter().take(limit as usize) {
        let t: String = r.get(2);
        out.push(events::Event {
            id: r.get(0),
            user_id: r.get(1),
            event_type: events::EventType::parse(&t)
                .ok_or_else(|| Error::Internal(format!("unknown event_type {t:?} in the table")))?,
            page_url: r.get(3),
            metadata: r.get(4),
            created_at: r.get(5),
        });
    }
    let mut bytes = 0usize;
    let fits = out
        .iter()
        .take_while(|e| {
            bytes += json_len(e);
            bytes <= MAX_PAGE_BYTES
        })
        .count()
        .max(1);
    let more = rows.len() as i64 > limit || fits < out.len();
    out.truncate(fits);
    let next = if more {
        out.last()
            .map(|e| events::Cursor { created_at_us: e.created_at.timestamp_micros(), id: e.id })
    } else {
        None
    };
    Ok((out, next))
}

/// The row count of `user_events` (tests and the seed CLI use it).
pub async fn count(pg: &Pg) -> Result<i64> {
    let c = pg.client().await?;
    Ok(pg.timed("count", c.query_one("SELECT count(*) FROM user_events", &[])).await?.get(0))
}

/// The length of `v` as JSON, without building it.
fn json_len(v: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    serde_json::to_writer(&mut c, v).map(|_| c.0).unwrap_or(0)
}
