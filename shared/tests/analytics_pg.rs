//! The PostgreSQL analytics queries agree with a plain Rust computation over the same events.
//! Each run writes its events into a time window of its own, far in the future, and filters on it.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use quiver::analytics::{postgres, Filters, FunnelRow, Summary, FUNNEL_PAGES};
use quiver::events::{EventType, NewEvent, MAX_DURATION_MS};
use quiver::generate::{Generator, Shape};
use quiver::pg::Pg;
use quiver::testing::service_config;

fn expected_summary(events: &[NewEvent]) -> Summary {
    let users: HashSet<i32> = events.iter().map(|e| e.user_id).collect();
    let mut by_type = BTreeMap::new();
    let mut durations = Vec::new();
    for e in events {
        *by_type.entry(e.event_type).or_insert(0i64) += 1;
        let m: serde_json::Value = serde_json::from_str(&e.metadata).unwrap();
        // Numbers outside the accepted range, written before the bound, are left out.
        if let Some(d) = m["duration_ms"].as_f64().filter(|d| (0.0..=MAX_DURATION_MS).contains(d)) {
            durations.push(d);
        }
    }
    let avg =
        (!durations.is_empty()).then(|| durations.iter().sum::<f64>() / durations.len() as f64);
    let t = |us: i64| DateTime::<Utc>::from_timestamp_micros(us);
    Summary::new(
        events.len() as i64,
        users.len() as i64,
        by_type,
        avg,
        events.iter().map(|e| e.created_at_us).min().and_then(t),
        events.iter().map(|e| e.created_at_us).max().and_then(t),
    )
}

fn expected_funnel(events: &[NewEvent]) -> Vec<FunnelRow> {
    let mut pages: BTreeMap<&str, [i64; 3]> = BTreeMap::new();
    for e in events {
        let c = pages.entry(&e.page_url).or_default();
        match e.event_type {
            EventType::PageView => c[0] += 1,
            EventType::Click => c[1] += 1,
            EventType::Conversion => c[2] += 1,
            _ => {}
        }
    }
    let mut rows: Vec<FunnelRow> =
        pages.into_iter().map(|(p, c)| FunnelRow::new(p.to_string(), c[0], c[1], c[2])).collect();
    rows.sort_by(|a, b| b.page_views.cmp(&a.page_views).then(a.page_url.cmp(&b.page_url)));
    rows.truncate(FUNNEL_PAGES as usize);
    rows
}

#[tokio::test]
async fn summary_and_funnel_match_a_plain_computation() {
    let pg = Pg::new(&service_config()).unwrap();
    quiver::migrate::run(&pg).await.unwrap();
    // A window of 10 days somewhere in 2100-2900 that no other run uses.
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let end_us = 4_102_444_800_000_000 + (nanos % 250_000) as i64 * 100_000_000_000;
    let shape = Shape { end_us, window_days: 10, ..Shape::default() };
    let gen = Generator::new(nanos as u64, shape);
    let mut events: Vec<NewEvent> = (0..3000).map(|i| gen.event(i)).collect();
    // Metadata a user could send: a non-numeric duration must not break the average.
    events[0].metadata = r#"{"duration_ms":"fast"}"#.into();
    // Rows written before `POST /events` bounded duration_ms (issue 17, item 5): 1e200 overflowed
    // float8 `avg` and the summary answered 500; a negative one is left out as well.
    events[1].metadata = r#"{"duration_ms":1e200}"#.into();
    events[2].metadata = r#"{"duration_ms":-5}"#.into();
    quiver::ingest::insert(&pg, &events, None).await.unwrap();

    let window = Filters {
        from: DateTime::from_timestamp_micros(end_us - 11 * 86_400_000_000),
        to: DateTime::from_timestamp_micros(end_us + 1),
        event_type: None,
    };
    assert_eq!(postgres::summary(&pg, &window).await.unwrap(), expected_summary(&events));
    assert_eq!(postgres::funnel(&pg, &window).await.unwrap(), expected_funnel(&events));

    let clicks = Filters { event_type: Some(EventType::Click), ..window.clone() };
    let only: Vec<NewEvent> =
        events.iter().filter(|e| e.event_type == EventType::Click).cloned().collect();
    assert_eq!(postgres::summary(&pg, &clicks).await.unwrap(), expected_summary(&only));
}

/// `url` with its database name replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, rest) = url.rsplit_once('/').expect("a URL with a database name");
    let query = rest.find('?').map(|i| &rest[i..]).unwrap_or("");
    format!("{base}/{db}{query}")
}

/// Issue 17, item 6: ties at the funnel's cutoff are ordered by bytes, as DuckDB orders them, even
/// in a database whose collation (ICU en-US, case-insensitive first) orders them otherwise.
#[tokio::test]
async fn funnel_ties_at_the_cutoff_are_ordered_by_bytes_under_an_icu_collation() {
    let cfg = service_config();
    let admin = Pg::new(&cfg).unwrap();
    let db = quiver::testing::unique_name("funnel_icu").replace('-', "_");
    let create = format!(
        "CREATE DATABASE {db} TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C' LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
    );
    admin.client().await.unwrap().batch_execute(&create).await.unwrap();
    let url = with_database(cfg.database_url.as_deref().unwrap(), &db);
    let pg = Pg::new(&quiver::config::Config { database_url: Some(url), ..cfg.clone() }).unwrap();
    quiver::migrate::run(&pg).await.unwrap();

    // 19 pages with two views, then two with one: "/B" and "/a" tie for the 20th place. By bytes
    // "/B" comes first; under en-US, "/a" does.
    let gen = Generator::new(1, Shape::default());
    let view = |page: &str| NewEvent {
        event_type: EventType::PageView,
        page_url: page.to_string(),
        ..gen.event(0)
    };
    let mut events: Vec<NewEvent> =
        (0..19).flat_map(|k| vec![view(&format!("/p{k:02}")); 2]).collect();
    events.extend([view("/a"), view("/B")]);
    quiver::ingest::insert(&pg, &events, None).await.unwrap();
    let funnel = postgres::funnel(&pg, &Filters::default()).await;

    drop(pg);
    admin
        .client()
        .await
        .unwrap()
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await
        .unwrap();
    let funnel = funnel.unwrap();
    assert_eq!(funnel, expected_funnel(&events));
    assert_eq!(funnel.last().unwrap().page_url, "/B");
}
