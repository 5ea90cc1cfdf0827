//! The reference stack's analytics queries: a summary and a conversion funnel, filtered by time
//! range and event type. The filters, the result types and their rounding live here once, so that
//! PostgreSQL ([`postgres`]) and DuckDB over a snapshot (`duckdb.rs`: `snapshot::Table::summary`
//! and `funnel`) return byte-identical JSON.

#[cfg(feature = "duckdb")]
mod duckdb;
#[cfg(feature = "pg")]
pub mod postgres;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::events::EventType;
use crate::http::{FromParams, Params};

/// Filters every analytics query takes: `from` (inclusive), `to` (exclusive), `event_type`. A
/// window with `from` at or after `to` holds no event, and its answer is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Filters {
    /// Inclusive lower bound on `created_at`, RFC 3339.
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<DateTime<Utc>>,
    /// Exclusive upper bound on `created_at`, RFC 3339.
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<DateTime<Utc>>,
    /// Only events of this type.
    #[param(inline)]
    pub event_type: Option<EventType>,
}

impl FromParams for Filters {
    fn from_params(p: &Params) -> Result<Self> {
        Ok(Filters {
            from: p.time("from")?,
            to: p.time("to")?,
            event_type: match p.get("event_type") {
                None => None,
                Some(s) => Some(EventType::parse(s).ok_or_else(|| {
                    Error::bad_param(
                        "event_type",
                        "must be one of page_view, click, conversion, signup, purchase",
                    )
                })?),
            },
        })
    }
}

impl Filters {
    /// A canonical text form, for cache keys.
    pub fn normalized(&self) -> String {
        let t = |v: &Option<DateTime<Utc>>| {
            v.map(|t| t.timestamp_micros().to_string()).unwrap_or_default()
        };
        format!(
            "from={}&to={}&event_type={}",
            t(&self.from),
            t(&self.to),
            self.event_type.map(EventType::as_str).unwrap_or("")
        )
    }
}

/// `GET /analytics/summary`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Summary {
    pub total_events: i64,
    pub unique_users: i64,
    /// A count for every type, zero included.
    #[schema(value_type = BTreeMap<String, i64>)]
    pub events_by_type: BTreeMap<&'static str, i64>,
    /// Rounded to 3 decimals; `null` when no event has a numeric `metadata.duration_ms`.
    pub avg_duration_ms: Option<f64>,
    pub first_event_at: Option<String>,
    pub last_event_at: Option<String>,
}

/// One page of the funnel.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct FunnelRow {
    pub page_url: String,
    pub page_views: i64,
    pub clicks: i64,
    pub conversions: i64,
    /// conversions / page_views, rounded to 4 decimals (0 without page views).
    pub conversion_rate: f64,
}

/// How many pages the funnel lists.
pub const FUNNEL_PAGES: i64 = 20;

pub fn round_to(v: f64, decimals: i32) -> f64 {
    let p = 10f64.powi(decimals);
    (v * p).round() / p
}

fn ts(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

impl Summary {
    /// Builds the summary from raw aggregates, applying the shared rounding.
    pub fn new(
        total_events: i64,
        unique_users: i64,
        by_type: impl IntoIterator<Item = (EventType, i64)>,
        avg_duration_ms: Option<f64>,
        first: Option<DateTime<Utc>>,
        last: Option<DateTime<Utc>>,
    ) -> Self {
        let mut events_by_type: BTreeMap<&'static str, i64> =
            EventType::ALL.iter().map(|t| (t.as_str(), 0)).collect();
        for (t, n) in by_type {
            events_by_type.insert(t.as_str(), n);
        }
        Summary {
            total_events,
            unique_users,
            events_by_type,
            avg_duration_ms: avg_duration_ms.map(|v| round_to(v, 3)),
            first_event_at: ts(first),
            last_event_at: ts(last),
        }
    }
}

impl FunnelRow {
    pub fn new(page_url: String, page_views: i64, clicks: i64, conversions: i64) -> Self {
        let conversion_rate =
            if page_views > 0 { round_to(conversions as f64 / page_views as f64, 4) } else { 0.0 };
        FunnelRow { page_url, page_views, clicks, conversions, conversion_rate }
    }
}

/// `created_at` in `[$1, $2)`, either end optional: the one time window of every PostgreSQL query
/// (the analytics below and the snapshot export). A macro, so that `concat!` can build constants.
macro_rules! pg_window {
    () => {
        "($1::timestamptz IS NULL OR created_at >= $1) AND ($2::timestamptz IS NULL OR created_at < $2)"
    };
}
#[cfg(all(feature = "duckdb", feature = "pg", feature = "s3"))] // the snapshot export
pub(crate) use pg_window;

/// `WHERE` over `created_at` and `event_type` with three bound parameters; never formatted values.
pub const PG_WHERE: &str = concat!(pg_window!(), " AND ($3::text IS NULL OR event_type = $3)");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_name_bad_parameters() {
        let f = Filters::from_params(
            &Params::parse(Some("from=2026-10-01T00:00:00Z&event_type=click")).unwrap(),
        )
        .unwrap();
        assert_eq!(f.event_type, Some(EventType::Click));
        assert!(f.from.is_some() && f.to.is_none());
        // A window that ends before it starts is empty, not an error.
        let p = Params::parse(Some("from=2026-10-02T00:00:00Z&to=2026-10-01T00:00:00Z")).unwrap();
        assert!(Filters::from_params(&p).is_ok());
        for (q, param) in [
            ("from=yesterday", "from"),
            ("event_type=view", "event_type"),
            ("event_type=%27%3B%20DROP%20TABLE%20user_events%3B--", "event_type"),
        ] {
            match Filters::from_params(&Params::parse(Some(q)).unwrap()).unwrap_err() {
                Error::BadRequest { param: Some(p), .. } => assert_eq!(p, param, "{q}"),
                other => panic!("{q}: {other:?}"),
            }
        }
    }

    #[test]
    fn summaries_list_every_type_and_round_the_same_way() {
        let s = Summary::new(3, 2, [(EventType::Click, 3)], Some(1234.56789), None, None);
        assert_eq!(s.events_by_type.len(), 5);
        assert_eq!(s.events_by_type["click"], 3);
        assert_eq!(s.events_by_type["purchase"], 0);
        assert_eq!(s.avg_duration_ms, Some(1234.568));
        assert_eq!(FunnelRow::new("/".into(), 3, 1, 1).conversion_rate, 0.3333);
        assert_eq!(FunnelRow::new("/".into(), 0, 1, 1).conversion_rate, 0.0);
    }
}
