//! `events`: the write path. `POST /events` takes one event, a JSON array or NDJSON and writes it
//! whole or not at all; `GET /events/{user_id}` pages through a user's events, newest first;
//! `POST /events/bulk?count=N` loads N generated events, the reference's bulk-insert benchmark.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Router;
use http::{HeaderMap, HeaderValue, StatusCode};
use quiver::config::ConfigError;
use quiver::error::Problem;
use quiver::events::{BodyFormat, Cursor, CursorKey, Event, EventsBody};
use quiver::generate::{Generator, Shape};
use quiver::http::{json, read_body, Caller, FromParams, Params, Query, MAX_BODY_BYTES};
use quiver::ingest::{self, Idempotency, Inserted, Outcome, MAX_IDEMPOTENCY_KEY};
use quiver::pg::Pg;
use quiver::{Config, Error, Result};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Most events one bulk request may generate.
pub const MAX_BULK: u64 = 1_000_000;

/// Per-instance state: the PostgreSQL pool (which applies migrations on first use).
pub struct Events {
    pg: Pg,
    idempotency_ttl: std::time::Duration,
    cursor_key: CursorKey,
}

impl Events {
    pub fn new(cfg: &Config) -> std::result::Result<Arc<Self>, ConfigError> {
        Ok(Arc::new(Events {
            pg: Pg::new(cfg)?,
            idempotency_ttl: cfg.idempotency_ttl,
            cursor_key: CursorKey::from_config(cfg),
        }))
    }
}

/// The routes, each registered with its OpenAPI entry.
pub fn api() -> OpenApiRouter<Arc<Events>> {
    OpenApiRouter::new().routes(routes!(create)).routes(routes!(bulk)).routes(routes!(list))
}

pub fn routes(state: Arc<Events>) -> Router {
    Router::from(api()).with_state(state)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let s = v.to_str().ok().filter(|s| {
        !s.is_empty() && s.len() <= MAX_IDEMPOTENCY_KEY && s.bytes().all(|b| b.is_ascii_graphic())
    });
    s.map(|s| Some(s.to_string())).ok_or_else(|| {
        Error::bad_param(
            "Idempotency-Key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        )
    })
}

/// Writes one event, a JSON array or NDJSON in one transaction: every row or none.
#[utoipa::path(post, path = "/events", tag = "events", operation_id = "write_events",
    params(("Idempotency-Key" = Option<String>, Header,
        pattern = "^[!-~]{1,255}$",
        description = "1 to 255 visible ASCII characters. A retry with the same key and body replays the first answer and writes nothing; another body is 409. A key belongs to its caller (the IAM principal that signed the request, an assumed role whatever its session name; unsigned requests share one scope) and is free again `QUIVER_IDEMPOTENCY_TTL_H` hours (default 24) after its first use.")),
    request_body(description = "One event, an array of up to 10,000, or NDJSON (one event per line); at most 6 MB. Through Lambda the whole event must fit its 6,291,456-byte payload limit, which is hit first: about 5.5 MB of JSON events (their quotes are escaped in the event) and 4.7 MB of NDJSON (base64-encoded); a larger body is refused by Lambda with its own 413.",
        content((EventsBody = "application/json"), (String = "application/x-ndjson"))),
    responses(
        (status = 201, description = "Every event written (or an idempotent replay, with `idempotent-replayed: true`).", body = Inserted),
        (status = 409, description = "The Idempotency-Key was used with another body.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Over 6 MB or over 10,000 events; `limit` says which.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither JSON nor NDJSON.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create(
    State(s): State<Arc<Events>>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let format = BodyFormat::from_content_type(
        headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
    )?;
    let key = idempotency_key(&headers)?;
    let bytes = read_body(&headers, body, MAX_BODY_BYTES).await?;
    let now_us = chrono::Utc::now().timestamp_micros();
    // Parsing a 6 MB body is CPU work; keep it off the async executor.
    let (batch, hash) = quiver::blocking("parsing task", move || {
        let hash = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes));
        quiver::events::parse_body(&bytes, format, now_us).map(|b| (b, hash))
    })
    .await?;
    let pg = &s.pg;
    let idempotency = key.as_deref().map(|key| Idempotency {
        caller: &caller.0,
        key,
        body_hash: &hash,
        ttl: s.idempotency_ttl,
    });
    match ingest::insert(pg, &batch, idempotency).await? {
        Outcome::Written(ins) => {
            tracing::info!(
                inserted = ins.inserted,
                first_id = ins.first_id,
                took_ms = ins.took_ms,
                "events written"
            );
            Ok(json(StatusCode::CREATED, &ins))
        }
        Outcome::Replayed(v) => {
            tracing::info!(
                key = key.as_deref().unwrap_or(""),
                "idempotent replay; nothing written"
            );
            let mut res = json(StatusCode::CREATED, &v);
            res.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(res)
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct Page {
    user_id: i32,
    count: usize,
    events: Vec<Event>,
    next_cursor: Option<String>,
}

/// `GET /events/{user_id}`'s query.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Paging {
    /// Events per page (default 100).
    #[param(required = false, minimum = 1, maximum = 1000)]
    limit: i64,
    /// `next_cursor` of the previous page, unchanged: it is signed, and any other value is a 400.
    #[param(value_type = Option<String>, pattern = "^[0-9a-f]{64}$")]
    cursor: Option<String>,
}

impl FromParams for Paging {
    fn from_params(p: &Params) -> Result<Self> {
        Ok(Paging {
            limit: p.number("limit", Some(100), 1..=1000)?,
            cursor: p.get("cursor").map(str::to_string),
        })
    }
}

/// A user's events, newest first, with keyset pagination.
#[utoipa::path(get, path = "/events/{user_id}", tag = "events", operation_id = "list_events",
    params(("user_id" = i32, Path, minimum = 1, description = "The user."), Paging),
    responses((status = 200, description = "One page: at most `limit` events and at most 2 MiB of them (`count` says how many); `next_cursor` is null on the last.", body = Page)))]
async fn list(
    State(s): State<Arc<Events>>,
    Path(user_id): Path<String>,
    Query(paging): Query<Paging>,
) -> Result<Response> {
    let user_id: i32 = user_id.parse().ok().filter(|id| *id > 0).ok_or_else(|| {
        Error::bad_param("user_id", format!("must be a whole number from 1 to {}", i32::MAX))
    })?;
    let cursor = paging.cursor.map(|t| Cursor::decode(&t, &s.cursor_key)).transpose()?;
    let (events, next) = ingest::list(&s.pg, user_id, paging.limit, cursor).await?;
    let next_cursor = next.map(|c| c.encode(&s.cursor_key));
    Ok(json(StatusCode::OK, &Page { user_id, count: events.len(), events, next_cursor }))
}

#[derive(Serialize, utoipa::ToSchema)]
struct BulkReport {
    inserted: u64,
    first_id: i64,
    last_id: i64,
    seed: u64,
    took_ms: f64,
    rows_per_s: u64,
}

/// `POST /events/bulk`'s query.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Bulk {
    /// How many events (default 1,000).
    #[param(required = false, minimum = 1, maximum = 1000000)]
    count: u64,
    /// Generator seed (default: the current time); int64, so at most 2^63 - 1.
    seed: Option<u64>,
}

impl FromParams for Bulk {
    fn from_params(p: &Params) -> Result<Self> {
        Ok(Bulk { count: p.number("count", Some(1000), 1..=MAX_BULK)?, seed: p.seed()? })
    }
}

/// The reference's bulk-insert benchmark: `count` generated events through one binary COPY.
#[utoipa::path(post, path = "/events/bulk", tag = "events", operation_id = "bulk_events", params(Bulk),
    responses((status = 201, description = "Every event written.", body = BulkReport)))]
async fn bulk(State(s): State<Arc<Events>>, Query(q): Query<Bulk>) -> Result<Response> {
    let count = q.count;
    let seed = q.seed.unwrap_or_else(|| chrono::Utc::now().timestamp_micros() as u64);
    let started = Instant::now();
    let gen = Generator::new(seed, Shape::default());
    let ins = ingest::bulk(&s.pg, &gen, 0, count, &|_| {}).await?;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(inserted = ins.inserted, took_ms = ins.took_ms, "bulk load written");
    Ok(json(
        StatusCode::CREATED,
        &BulkReport {
            inserted: ins.inserted,
            first_id: ins.first_id,
            last_id: ins.last_id,
            seed,
            took_ms: ins.took_ms,
            rows_per_s: (ins.inserted as f64 / secs.max(1e-9)) as u64,
        },
    ))
}
