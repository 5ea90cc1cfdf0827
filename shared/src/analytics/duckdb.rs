//! The same queries in DuckDB, over a snapshot loaded by `snapshot::Snapshots` into an in-memory
//! table ([`Table`]), returning the types of `analytics` with the same rounding.

use ::duckdb::types::{TimeUnit, Value};
use chrono::{DateTime, Utc};

use super::{Filters, FunnelRow, Summary, FUNNEL_PAGES};
use crate::error::{Error, Result};
use crate::events::EventType;
use crate::snapshot::Table;

/// The event type's code in a loaded table: its position in `EventType::ALL`.
fn code(t: EventType) -> u8 {
    EventType::ALL.iter().position(|x| *x == t).expect("every type is in ALL") as u8
}

/// `WHERE` over the filters that are set, each value a bound parameter. Leaving out the unset ones
/// (instead of `? IS NULL OR ...`) lets DuckDB prune by zone maps.
fn where_clause(f: &Filters) -> (String, Vec<Value>) {
    let mut parts = Vec::new();
    let mut args = Vec::new();
    if let Some(t) = f.from {
        parts.push("created_at >= ?");
        args.push(Value::Timestamp(TimeUnit::Microsecond, t.timestamp_micros()));
    }
    if let Some(t) = f.to {
        parts.push("created_at < ?");
        args.push(Value::Timestamp(TimeUnit::Microsecond, t.timestamp_micros()));
    }
    if let Some(t) = f.event_type {
        parts.push("et = ?");
        args.push(Value::UTinyInt(code(t)));
    }
    let sql =
        if parts.is_empty() { String::new() } else { format!(" WHERE {}", parts.join(" AND ")) };
    (sql, args)
}

impl Table {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The summary, with the rounding of `analytics::Summary` (blocking). One pass groups by type
    /// (counts, duration sums, first and last); the distinct users are a grouped subquery, which
    /// DuckDB runs much faster than `count(DISTINCT)` next to other aggregates. The average is
    /// the duration sum over the duration count, as `avg` computes it.
    pub fn summary(&self, f: &Filters) -> Result<Summary> {
        let (w, mut args) = where_clause(f);
        args.extend(args.clone());
        let t = &self.name;
        let sql = format!(
            "SELECT et, count(*), sum(duration_ms), count(duration_ms), min(created_at), max(created_at), \
                    (SELECT count(*) FROM (SELECT user_id FROM {t}{w} GROUP BY user_id)) \
             FROM {t}{w} GROUP BY et"
        );
        type Group =
            (Option<u8>, i64, Option<f64>, i64, Option<DateTime<Utc>>, Option<DateTime<Utc>>, i64);
        let groups: Vec<Group> = self
            .duck
            .with_conn(|c| {
                let mut st = c.prepare_cached(&sql)?;
                let rows = st.query_map(::duckdb::params_from_iter(args.iter()), |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                })?;
                rows.collect()
            })
            .map_err(|e| Error::Internal(format!("DuckDB summary over {t}: {e}")))?;
        let (mut total, mut unique, mut sum, mut with_duration) = (0i64, 0i64, 0f64, 0i64);
        let (mut first, mut last): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = (None, None);
        let mut by_type = Vec::with_capacity(EventType::ALL.len());
        for (et, n, s, cd, mi, ma, u) in groups {
            total += n;
            unique = u;
            sum += s.unwrap_or(0.0);
            with_duration += cd;
            first = match (first, mi) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            last = last.max(ma);
            if let Some(t) = et.and_then(|k| EventType::ALL.get(k as usize)) {
                by_type.push((*t, n));
            }
        }
        let avg = (with_duration > 0).then(|| sum / with_duration as f64);
        Ok(Summary::new(total, unique, by_type, avg, first, last))
    }

    /// The funnel: the top pages by views, ties by URL, as `analytics::postgres::funnel` (blocking).
    pub fn funnel(&self, f: &Filters) -> Result<Vec<FunnelRow>> {
        let (w, args) = where_clause(f);
        let [pv, cl, co] = [EventType::PageView, EventType::Click, EventType::Conversion].map(code);
        let sql = format!(
            "SELECT page_id, count_if(et = {pv}) AS page_views, count_if(et = {cl}), count_if(et = {co}) \
             FROM {}{w} GROUP BY page_id ORDER BY page_views DESC, page_id ASC LIMIT {FUNNEL_PAGES}",
            self.name
        );
        let rows: Vec<(i32, i64, i64, i64)> = self
            .duck
            .with_conn(|c| {
                let mut st = c.prepare_cached(&sql)?;
                let rows = st.query_map(::duckdb::params_from_iter(args.iter()), |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?;
                rows.collect()
            })
            .map_err(|e| Error::Internal(format!("DuckDB funnel over {}: {e}", self.name)))?;
        rows.into_iter()
            .map(|(id, v, c, k)| {
                let url = self.pages.get(id as usize).ok_or_else(|| {
                    Error::Internal(format!("page id {id} is not in {}", self.name))
                })?;
                Ok(FunnelRow::new(url.clone(), v, c, k))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_bound_parameters() {
        let f = Filters {
            from: DateTime::from_timestamp_micros(1),
            to: None,
            event_type: Some(EventType::Click),
        };
        let (sql, args) = where_clause(&f);
        assert_eq!(sql, " WHERE created_at >= ? AND et = ?");
        assert_eq!(args.len(), 2);
        assert_eq!(where_clause(&Filters::default()).0, "");
    }
}
