//! The queries in PostgreSQL, over `user_events` directly.

use super::*;
use crate::pg::Pg;

fn args(f: &Filters) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>, Option<&'static str>) {
    (f.from, f.to, f.event_type.map(EventType::as_str))
}

pub async fn summary(pg: &Pg, f: &Filters) -> Result<Summary> {
    let c = pg.client().await?;
    // duration_ms is averaged only where it is a JSON number, so user-supplied metadata cannot break the cast.
    let sql = format!(
        "SELECT count(*), count(DISTINCT user_id), \
                avg(CASE WHEN jsonb_typeof(metadata->'duration_ms') = 'number' THEN (metadata->>'duration_ms')::float8 END), \
                min(created_at), max(created_at), \
                count(*) FILTER (WHERE event_type = 'page_view'), count(*) FILTER (WHERE event_type = 'click'), \
                count(*) FILTER (WHERE event_type = 'conversion'), count(*) FILTER (WHERE event_type = 'signup'), \
                count(*) FILTER (WHERE event_type = 'purchase') \
         FROM user_events WHERE {PG_WHERE}"
    );
    let (from, to, et) = args(f);
    let r = pg.timed("analytics summary", c.query_one(&sql, &[&from, &to, &et])).await?;
    Ok(Summary::new(
        r.get(0),
        r.get(1),
        EventType::ALL.iter().enumerate().map(|(k, t)| (*t, r.get::<_, i64>(5 + k))),
        r.get(2),
        r.get(3),
        r.get(4),
    ))
}

pub async fn funnel(pg: &Pg, f: &Filters) -> Result<Vec<FunnelRow>> {
    let c = pg.client().await?;
    let sql = format!(
        "SELECT page_url, count(*) FILTER (WHERE event_type = 'page_view') AS page_views, \
                count(*) FILTER (WHERE event_type = 'click'), count(*) FILTER (WHERE event_type = 'conversion') \
         FROM user_events WHERE {PG_WHERE} \
         GROUP BY page_url ORDER BY page_views DESC, page_url ASC LIMIT {FUNNEL_PAGES}"
    );
    let (from, to, et) = args(f);
    let rows = pg.timed("analytics funnel", c.query(&sql, &[&from, &to, &et])).await?;
    Ok(rows.iter().map(|r| FunnelRow::new(r.get(0), r.get(1), r.get(2), r.get(3))).collect())
}
