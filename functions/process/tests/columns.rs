//! The BatchData parser and the generator on their own: columns, dictionaries, limits and the
//! exact place each problem is reported.

use quiver::process::*;
use quiver::Error;

fn body(points: &str) -> Vec<u8> {
    format!(r#"{{"batch_id":"b1","data":[{points}]}}"#).into_bytes()
}

const OK: &str = r#"{"id":1,"timestamp":"2026-10-01T12:00:00Z","category":"ALPHA","value":10.5,"tags":["x","y"]}"#;

fn err_at(points: &str) -> (u16, String) {
    let e = parse(&body(points)).unwrap_err();
    let at = match &e {
        Error::BadRequest { param, .. } => param.clone().unwrap_or_default(),
        other => other.to_string(),
    };
    (e.status().as_u16(), at)
}

#[test]
fn a_valid_batch_becomes_columns_with_sorted_dictionaries() {
    let b = parse(&body(&format!(
        r#"{OK},{{"id":2,"timestamp":1790000000,"category":"AB","value":0,"tags":["y"]}},{{"id":3,"timestamp":1790000000.5,"category":"ALPHA","value":1000}}"#
    )))
    .unwrap();
    assert_eq!(b.batch_id, "b1");
    let c = &b.columns;
    assert_eq!(c.ids, vec![1, 2, 3]);
    assert_eq!(
        c.timestamps_us,
        vec![1_790_856_000_000_000, 1_790_000_000_000_000, 1_790_000_000_500_000]
    );
    assert_eq!(c.category_names, vec!["AB", "ALPHA"]);
    assert_eq!(c.categories, vec![1, 0, 1]);
    assert_eq!(c.values, vec![10.5, 0.0, 1000.0]);
    assert_eq!(c.tag_names, vec!["x", "y"]);
    assert_eq!(c.tags, vec![0, 1, 1]);
}

#[test]
fn each_rule_names_the_index_and_field() {
    let cases = [
        (
            r#"{"id":1,"timestamp":"2026-10-01T12:00:00Z","category":"alpha","value":1}"#,
            "data[1].category",
        ),
        (
            r#"{"id":1,"timestamp":"2026-10-01T12:00:00Z","category":"A1","value":1}"#,
            "data[1].category",
        ),
        (
            r#"{"id":1,"timestamp":"2026-10-01T12:00:00Z","category":"","value":1}"#,
            "data[1].category",
        ),
        (
            r#"{"id":1,"timestamp":"2026-10-01T12:00:00Z","category":"A","value":1000.01}"#,
            "data[1].value",
        ),
        (
            r#"{"id":1,"timestamp":"2026-10-01T12:00:00Z","category":"A","value":-1}"#,
            "data[1].value",
        ),
        (
            r#"{"id":1,"timestamp":"2026-10-01T12:00:00Z","category":"A","value":"5"}"#,
            "data[1].value",
        ),
        (r#"{"id":1,"timestamp":"yesterday","category":"A","value":1}"#, "data[1].timestamp"),
        (r#"{"id":1,"timestamp":-62167219201,"category":"A","value":1}"#, "data[1].timestamp"),
        (r#"{"id":1.5,"timestamp":0,"category":"A","value":1}"#, "data[1].id"),
        (r#"{"timestamp":0,"category":"A","value":1}"#, "data[1].id"),
        (r#"{"id":1,"timestamp":0,"category":"A","value":1,"value":2}"#, "data[1].value"),
        (r#"{"id":1,"timestamp":0,"category":"A","value":1,"tags":"x"}"#, "data[1].tags"),
        (r#"{"id":1,"timestamp":0,"category":"A","value":1,"tags":["ok",7]}"#, "data[1].tags[1]"),
        (r#"[1,2]"#, "data[1]"),
    ];
    for (point, at) in cases {
        assert_eq!(err_at(&format!("{OK},{point}")), (400, at.to_string()), "{point}");
    }
    let long = "t".repeat(MAX_TAG_CHARS + 1);
    assert_eq!(
        err_at(&format!(
            r#"{OK},{{"id":1,"timestamp":0,"category":"A","value":1,"tags":["{long}"]}}"#
        ))
        .1,
        "data[1].tags[0]"
    );
    let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("\"t{i}\"")).collect();
    let many =
        format!(r#"{{"id":1,"timestamp":0,"category":"A","value":1,"tags":[{}]}}"#, many.join(","));
    assert_eq!(err_at(&format!("{OK},{many}")).1, "data[1].tags");
    let exact: Vec<String> =
        (0..MAX_TAGS).map(|_| format!("\"{}\"", "é".repeat(MAX_TAG_CHARS))).collect();
    let exact = format!(
        r#"{{"id":1,"timestamp":0,"category":"A","value":1,"tags":[{}]}}"#,
        exact.join(",")
    );
    assert!(parse(&body(&exact)).is_ok(), "32 tags of 64 characters are allowed");
}

#[test]
fn the_body_shape_is_checked() {
    assert_eq!(parse(b"").unwrap_err().status(), 400);
    assert_eq!(parse(b"{nope").unwrap_err().status(), 400);
    assert_eq!(parse(b"[]").unwrap_err().status(), 400);
    let e = parse(br#"{"batch_id":"b"}"#).unwrap_err();
    assert!(e.to_string().contains("data"), "{e}");
    let e = parse(br#"{"batch_id":"b","data":[]}"#).unwrap_err();
    assert!(e.to_string().contains("at least one"), "{e}");
    let e = parse(format!(r#"{{"data":[{OK}]}}"#).as_bytes()).unwrap_err();
    assert!(e.to_string().contains("batch_id"), "{e}");
    let e = parse(format!(r#"{{"batch_id":7,"data":[{OK}]}}"#).as_bytes()).unwrap_err();
    assert!(e.to_string().contains("batch_id"), "{e}");
    let e = parse(br#"{"batch_id":"b","data":{}}"#).unwrap_err();
    assert!(e.to_string().contains("data: must be an array"), "{e}");
}

#[test]
fn more_than_the_limit_of_points_is_413() {
    let one = r#"{"id":1,"timestamp":0,"category":"A","value":1}"#;
    let points = vec![one; MAX_POINTS + 1].join(",");
    let e = parse(&body(&points)).unwrap_err();
    assert_eq!(e.status(), 413);
    assert!(matches!(e, Error::TooLarge { limit: MAX_POINTS, .. }));
    let points = vec![one; MAX_POINTS].join(",");
    assert_eq!(parse(&body(&points)).unwrap().columns.values.len(), MAX_POINTS);
}

#[test]
fn more_than_the_limit_of_categories_is_a_400_at_the_first_one_too_many() {
    // Categories are letters: number i as base-26 letters gives distinct names.
    let name = |mut i: usize| {
        let mut s = String::new();
        loop {
            s.push((b'A' + (i % 26) as u8) as char);
            i /= 26;
            if i == 0 {
                return s;
            }
        }
    };
    let point =
        |i: usize| format!(r#"{{"id":{i},"timestamp":0,"category":"{}","value":1}}"#, name(i));
    let ok: Vec<String> = (0..MAX_CATEGORIES).map(point).collect();
    assert_eq!(parse(&body(&ok.join(","))).unwrap().columns.category_names.len(), MAX_CATEGORIES);
    let over: Vec<String> = (0..MAX_CATEGORIES + 5).map(point).collect();
    let e = parse(&body(&over.join(","))).unwrap_err();
    assert_eq!(e.status(), 400);
    let Error::BadRequest { param, .. } = e else { panic!("not a 400") };
    assert_eq!(param.as_deref(), Some(format!("data[{MAX_CATEGORIES}].category").as_str()));
}

#[test]
fn many_problems_are_counted_and_the_first_listed() {
    let bad = r#"{"id":1,"timestamp":0,"category":"a","value":1}"#;
    let e = parse(&body(&vec![bad; 50].join(","))).unwrap_err();
    let Error::BadRequest { errors, detail, .. } = e else { panic!("not a 400") };
    assert_eq!(errors.len(), LISTED_ERRORS);
    assert!(detail.starts_with("50 problems"), "{detail}");
    assert_eq!(errors[3].at, "data[3].category");
}

#[test]
fn escaped_strings_are_decoded() {
    let b = parse(&body(
        r#"{"id":1,"timestamp":0,"category":"\u0041B","value":1,"tags":["a\"b","a\"b"]}"#,
    ))
    .unwrap();
    assert_eq!(b.columns.category_names, vec!["AB"]);
    assert_eq!(b.columns.tag_names, vec!["a\"b"]);
    assert_eq!(b.columns.tags, vec![0, 0]);
}

#[test]
fn generation_is_deterministic_and_within_the_rules() {
    let a = generate(GEN_PARALLEL_MIN + 1234, 7);
    let b = generate(GEN_PARALLEL_MIN + 1234, 7);
    assert_eq!(a, b);
    assert_ne!(a.values, generate(GEN_PARALLEL_MIN + 1234, 8).values);
    // A prefix of a larger batch is the smaller batch: chunks never depend on the size.
    let small = generate(1000, 7);
    assert_eq!(small.values[..], a.values[..1000]);
    assert!(a.values.iter().all(|v| (0.0..=MAX_VALUE).contains(v)));
    assert!(a.categories.iter().all(|c| (*c as usize) < GEN_CATEGORIES.len()));
    assert!(a.tags.iter().all(|t| (*t as usize) < GEN_TAGS.len()));
    assert_eq!(a.ids[0], 1);
    assert_eq!(*a.ids.last().unwrap(), a.ids.len() as i64);
    let mut sorted = GEN_TAGS.to_vec();
    sorted.sort();
    assert_eq!(sorted, GEN_TAGS);
    let mut sorted = GEN_CATEGORIES.to_vec();
    sorted.sort();
    assert_eq!(sorted, GEN_CATEGORIES);
    let mut seen = vec![0; GEN_TAGS.len()];
    generate(GEN_PARALLEL_MIN, 1).tags.iter().for_each(|t| seen[*t as usize] += 1);
    assert!(seen.iter().all(|n| *n > 0), "every tag occurs: {seen:?}");
}

#[test]
fn the_statistics_are_bit_for_bit_repeatable() {
    // Large enough for Polars to use all its threads; float sums must not depend on their timing.
    let cols = generate(300_000, 3);
    let first = aggregate(cols.clone()).unwrap();
    for _ in 0..10 {
        assert_eq!(aggregate(cols.clone()).unwrap(), first);
    }
}

#[test]
fn the_generated_body_parses_back_into_the_generated_columns() {
    let body = batch_json(70_007, 11);
    let parsed = parse(&body).unwrap();
    assert_eq!(parsed.batch_id, "generated-70007-11");
    let cols = generate(70_007, 11); // two generator chunks
    assert_eq!(parsed.columns.ids, cols.ids);
    assert_eq!(parsed.columns.timestamps_us, cols.timestamps_us);
    assert_eq!(parsed.columns.values, cols.values);
    // The parser numbers categories and tags by name among those present; all are present here.
    assert_eq!(parsed.columns.category_names, GEN_CATEGORIES);
    assert_eq!(parsed.columns.categories, cols.categories);
    assert_eq!(parsed.columns.tag_names, GEN_TAGS);
    assert_eq!(parsed.columns.tags, cols.tags);
    // The reference's 50,000-point batch fits Lambda's payload limit.
    assert!(batch_json(50_000, 1).len() < quiver::http::MAX_BODY_BYTES);
}
