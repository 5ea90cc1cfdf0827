//! The queries in PostgreSQL, over `user_events` directly.

use super::*;
use crate::pg::Pg;

fn args(f: &Filters) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>, Option<&'static str>) {
    (f.from, f.to, f.event_type.map(EventType::as_str))
}

/// The summary's SQL, with the filters as `$1`–`$3` (the bench runs it under `EXPLAIN ANALYZE`).
/// `duration_ms` is the stored column (migrations 3 and 4): no jsonb is parsed per row.
/// One aggregate less: purchases are the total less the four other types. `count(DISTINCT)`
/// sorts, and at 1M rows spills past the default `work_mem`; a grouped subquery (hashed, and
/// parallel there) was faster at 1M but twice as slow at 7,206 rows when the table is not
/// all-visible, as under ingest (a hash aggregate instead of an index-only scan).
pub fn summary_sql() -> String {
    format!(
        "SELECT count(*), count(DISTINCT user_id), avg(duration_ms), min(created_at), max(created_at), \
                count(*) FILTER (WHERE event_type = 'page_view'), count(*) FILTER (WHERE event_type = 'click'), \
                count(*) FILTER (WHERE event_type = 'conversion'), count(*) FILTER (WHERE event_type = 'signup') \
         FROM user_events WHERE {PG_WHERE}"
    )
}

pub async fn summary(pg: &Pg, f: &Filters) -> Result<Summary> {
    let c = pg.client_at(crate::migrate::DURATION_MS).await?;
    let sql = summary_sql();
    let (from, to, et) = args(f);
    let r = pg.timed("analytics summary", c.query_one(&sql, &[&from, &to, &et])).await?;
    let total: i64 = r.get(0);
    let mut by_type = [0i64; 5];
    for (k, n) in by_type.iter_mut().take(4).enumerate() {
        *n = r.get(5 + k);
    }
    by_type[4] = total - by_type[..4].iter().sum::<i64>();
    Ok(Summary::new(
        total,
        r.get(1),
        EventType::ALL.iter().copied().zip(by_type),
        r.get(2),
        r.get(3),
        r.get(4),
    ))
}

/// Ties are ordered by the bytes of the URL (`COLLATE "C"`), as DuckDB orders them, whatever the
/// column's or the database's collation (RDS defaults to en_US).
pub async fn funnel(pg: &Pg, f: &Filters) -> Result<Vec<FunnelRow>> {
    let c = pg.client().await?;
    let sql = format!(
        "SELECT page_url, count(*) FILTER (WHERE event_type = 'page_view') AS page_views, \
                count(*) FILTER (WHERE event_type = 'click'), count(*) FILTER (WHERE event_type = 'conversion') \
         FROM user_events WHERE {PG_WHERE} \
         GROUP BY page_url ORDER BY page_views DESC, page_url COLLATE \"C\" ASC LIMIT {FUNNEL_PAGES}"
    );
    let (from, to, et) = args(f);
    let rows = pg.timed("analytics funnel", c.query(&sql, &[&from, &to, &et])).await?;
    Ok(rows.iter().map(|r| FunnelRow::new(r.get(0), r.get(1), r.get(2), r.get(3))).collect())
}
