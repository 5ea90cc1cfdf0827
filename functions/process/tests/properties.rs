//! The Polars statistics against a plain Rust computation of the same numbers, on random batches
//! (parsed from JSON bodies) and on generated ones. Quantiles on both sides use linear
//! interpolation between the nearest ranks: position `(n - 1) * q` in the sorted values.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use quiver::process::{
    aggregate, generate, parse, BatchStats, CategoryStats, TagCount, MAX_EPOCH_S, TOP_TAGS,
};
use serde_json::{json, Value};

#[derive(Debug, Clone)]
struct Point {
    id: i64,
    timestamp: Value,
    category: String,
    value: f64,
    tags: Vec<String>,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = (sorted.len() - 1) as f64 * q;
    let lo = pos.floor() as usize;
    if lo + 1 >= sorted.len() || pos == lo as f64 {
        return sorted[lo];
    }
    (pos - lo as f64) * (sorted[lo + 1] - sorted[lo]) + sorted[lo]
}

/// The straightforward computation: sums, sorts and maps, nothing clever.
fn reference(rows: &[(&str, f64)], tags: &[&str]) -> BatchStats {
    let mut values: Vec<f64> = rows.iter().map(|r| r.1).collect();
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut cats: BTreeMap<&str, (u64, f64, f64, f64)> = BTreeMap::new();
    for (c, v) in rows {
        let e = cats.entry(c).or_insert((0, 0.0, f64::INFINITY, f64::NEG_INFINITY));
        e.0 += 1;
        e.1 += v;
        e.2 = e.2.min(*v);
        e.3 = e.3.max(*v);
    }
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for t in tags {
        *counts.entry(t).or_default() += 1;
    }
    let mut by_tag: Vec<TagCount> =
        counts.into_iter().map(|(t, c)| TagCount { tag: t.to_string(), count: c }).collect();
    by_tag.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.tag.cmp(&b.tag)));
    by_tag.truncate(TOP_TAGS);
    BatchStats {
        total_records: rows.len() as u64,
        mean_value: values.iter().sum::<f64>() / values.len() as f64,
        min_value: values[0],
        max_value: *values.last().unwrap(),
        p50_value: quantile(&values, 0.5),
        p95_value: quantile(&values, 0.95),
        by_category: cats
            .into_iter()
            .map(|(c, (n, sum, min, max))| CategoryStats {
                category: c.to_string(),
                count: n,
                mean: sum / n as f64,
                min,
                max,
            })
            .collect(),
        by_tag,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn assert_matches(got: &BatchStats, want: &BatchStats) {
    assert_eq!(got.total_records, want.total_records);
    assert!(
        close(got.mean_value, want.mean_value),
        "mean {} vs {}",
        got.mean_value,
        want.mean_value
    );
    assert_eq!((got.min_value, got.max_value), (want.min_value, want.max_value));
    assert_eq!((got.p50_value, got.p95_value), (want.p50_value, want.p95_value));
    assert_eq!(got.by_category.len(), want.by_category.len());
    for (g, w) in got.by_category.iter().zip(&want.by_category) {
        assert_eq!((&g.category, g.count, g.min, g.max), (&w.category, w.count, w.min, w.max));
        assert!(close(g.mean, w.mean), "{}: mean {} vs {}", g.category, g.mean, w.mean);
    }
    assert_eq!(got.by_tag, want.by_tag);
}

fn timestamp() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0..=MAX_EPOCH_S).prop_map(|s| json!(s)),
        (0i64..4_102_444_800)
            .prop_map(|s| json!(chrono::DateTime::from_timestamp(s, 0).unwrap().to_rfc3339())),
        (0.0..4e9f64).prop_map(|s| json!(s)),
    ]
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![0.0..=1000.0f64, (0u32..=1000).prop_map(f64::from), Just(0.0), Just(1000.0)]
}

fn point() -> impl Strategy<Value = Point> {
    // Few distinct categories and tags, so that groups are large and count ties are common.
    (any::<i64>(), timestamp(), "[A-D]{1,2}", value(), prop::collection::vec("[a-f]{1,2}", 0..6))
        .prop_map(|(id, timestamp, category, value, tags)| Point {
            id,
            timestamp,
            category,
            value,
            tags,
        })
}

fn body(points: &[Point]) -> String {
    let data: Vec<Value> = points
        .iter()
        .map(|p| json!({"id": p.id, "timestamp": p.timestamp, "category": p.category, "value": p.value, "tags": p.tags}))
        .collect();
    json!({"batch_id": "prop", "data": data}).to_string()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the bytes, the body parser answers with a batch or a 4xx; it never panics.
    #[test]
    fn arbitrary_bodies_are_a_batch_or_a_4xx(bytes in prop::collection::vec(any::<u8>(), 0..3000)) {
        if let Err(e) = parse(&bytes) {
            prop_assert!((400..500).contains(&e.status().as_u16()), "{e}");
        }
    }

    /// Valid bodies with one byte changed: still a batch or a 4xx.
    #[test]
    fn mutated_bodies_are_a_batch_or_a_4xx(points in prop::collection::vec(point(), 1..30), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut b = body(&points).into_bytes();
        let i = at.index(b.len());
        b[i] = byte;
        if let Err(e) = parse(&b) {
            prop_assert!((400..500).contains(&e.status().as_u16()), "{e}");
        }
    }

    #[test]
    fn parsed_batches_match_a_plain_computation(points in prop::collection::vec(point(), 1..400)) {
        let got = aggregate(parse(body(&points).as_bytes()).unwrap().columns).unwrap();
        let rows: Vec<(&str, f64)> = points.iter().map(|p| (p.category.as_str(), p.value)).collect();
        let tags: Vec<&str> = points.iter().flat_map(|p| p.tags.iter().map(String::as_str)).collect();
        assert_matches(&got, &reference(&rows, &tags));
    }

    #[test]
    fn one_bad_value_is_reported_at_its_index(points in prop::collection::vec(point(), 1..50), pick in any::<prop::sample::Index>()) {
        let mut points = points;
        let k = pick.index(points.len());
        points[k].value = 1000.5;
        let e = parse(body(&points).as_bytes()).unwrap_err();
        let quiver::Error::BadRequest { param, .. } = e else { panic!("expected a 400, got {e}") };
        prop_assert_eq!(param, Some(format!("data[{k}].value")));
    }

    #[test]
    fn generated_batches_match_a_plain_computation(size in 1usize..3000, seed in any::<u64>()) {
        let cols = generate(size, seed);
        let rows: Vec<(&str, f64)> =
            cols.categories.iter().zip(&cols.values).map(|(c, v)| (cols.category_names[*c as usize].as_str(), *v)).collect();
        let tags: Vec<&str> = cols.tags.iter().map(|t| cols.tag_names[*t as usize].as_str()).collect();
        let want = reference(&rows, &tags);
        assert_matches(&aggregate(cols.clone()).unwrap(), &want);
    }
}

/// An RFC 3339 string with `digits` fraction digits and the given offset (or `Z`), built by hand
/// so that the shapes the fast parser handles and the ones it leaves to chrono both occur.
fn rfc3339(secs: i64, nanos: u32, digits: usize, offset_min: Option<i32>, sep: char) -> String {
    let off = chrono::FixedOffset::east_opt(offset_min.unwrap_or(0) * 60).unwrap();
    let t = chrono::DateTime::from_timestamp(secs, nanos).unwrap().with_timezone(&off);
    let mut s = t.format(&format!("%Y-%m-%d{sep}%H:%M:%S")).to_string();
    if digits > 0 {
        s.push('.');
        s.push_str(&format!("{nanos:09}")[..digits.min(9)]);
        s.push_str(&"7".repeat(digits.saturating_sub(9)));
    }
    match offset_min {
        None => s.push('Z'),
        Some(_) => s.push_str(&t.format("%:z").to_string()),
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn rfc3339_timestamps_agree_with_chrono(
        secs in -100_000i64..MAX_EPOCH_S + 100_000,
        nanos in 0u32..1_000_000_000,
        digits in 0usize..=11,
        offset_min in prop::option::of(-1439i32..=1439),
        sep in prop::sample::select(vec!['T', 't', ' ']),
    ) {
        let Some(_) = chrono::DateTime::from_timestamp(secs, nanos) else { return Ok(()) };
        let ts = rfc3339(secs, nanos, digits, offset_min, sep);
        let point = json!({"id": 1, "timestamp": ts, "category": "A", "value": 1});
        let parsed = parse(json!({"batch_id": "t", "data": [point]}).to_string().as_bytes());
        let want = chrono::DateTime::parse_from_rfc3339(&ts).map(|t| t.timestamp_micros());
        match (parsed, want) {
            (Ok(b), Ok(us)) => prop_assert_eq!(b.columns.timestamps_us[0], us, "{}", ts),
            (Err(_), Ok(us)) => prop_assert!(!(0..=MAX_EPOCH_S * 1_000_000 + 999_999).contains(&us), "{} rejected", ts),
            (Ok(b), Err(e)) => prop_assert!(false, "{} accepted as {} but chrono says {}", ts, b.columns.timestamps_us[0], e),
            (Err(_), Err(_)) => {}
        }
    }
}

#[test]
fn malformed_rfc3339_is_rejected_like_chrono() {
    for ts in [
        "2026-02-29T00:00:00Z",
        "2024-02-30T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-10-01T24:00:00Z",
        "2026-10-01T12:60:00Z",
        "2026-10-01T12:00:00",
        "2026-10-01T12:00:00.Z",
        "2026-10-01T12:00:00+24:00",
        "2026-10-01T12:00:00+0200",
        "2026-1-01T12:00:00Z",
        "2026-10-01T12:00:00Zjunk",
        "+026-10-01T12:00:00Z",
    ] {
        let point = json!({"id": 1, "timestamp": ts, "category": "A", "value": 1});
        let parsed = parse(json!({"batch_id": "t", "data": [point]}).to_string().as_bytes());
        assert_eq!(parsed.is_ok(), chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    }
    let point = json!({"id": 1, "timestamp": "2024-02-29T23:59:60Z", "category": "A", "value": 1});
    let b = parse(json!({"batch_id": "t", "data": [point]}).to_string().as_bytes()).unwrap();
    let leap =
        chrono::DateTime::parse_from_rfc3339("2024-02-29T23:59:60Z").unwrap().timestamp_micros();
    assert_eq!(b.columns.timestamps_us[0], leap, "a leap second is left to chrono");
}

#[test]
fn a_large_generated_batch_matches_too() {
    // Large enough for parallel generation and for Polars to split its work.
    let cols = generate(700_000, 42);
    let rows: Vec<(&str, f64)> = cols
        .categories
        .iter()
        .zip(&cols.values)
        .map(|(c, v)| (cols.category_names[*c as usize].as_str(), *v))
        .collect();
    let tags: Vec<&str> = cols.tags.iter().map(|t| cols.tag_names[*t as usize].as_str()).collect();
    let want = reference(&rows, &tags);
    assert_matches(&aggregate(cols.clone()).unwrap(), &want);
}
