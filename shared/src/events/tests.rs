use super::*;

const NOW: i64 = 1_795_478_400_000_000;

fn one(json: &str) -> Result<Vec<NewEvent>> {
    parse_body(json.as_bytes(), BodyFormat::Json, NOW)
}

fn problems(e: Error) -> Vec<String> {
    match e {
        Error::BadRequest { errors, .. } => {
            errors.into_iter().map(|f| format!("{}: {}", f.at, f.problem)).collect()
        }
        other => panic!("expected a 400, got {other:?}"),
    }
}

#[test]
fn a_single_object_an_array_and_ndjson_parse() {
    let e = one(r#"{"user_id":1,"event_type":"click","page_url":"/a"}"#).unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].metadata, "{}");
    assert_eq!(e[0].created_at_us, NOW);
    let e = one(r#"[{"user_id":1,"event_type":"click","page_url":"/a","metadata":{"k":1},"created_at":"2026-01-02T03:04:05.123456Z"}]"#).unwrap();
    assert_eq!(e[0].metadata, r#"{"k":1}"#);
    assert_eq!(e[0].created_at_us, 1_767_323_045_123_456);
    let nd = b"{\"user_id\":1,\"event_type\":\"click\",\"page_url\":\"/a\"}\n\n{\"user_id\":2,\"event_type\":\"signup\",\"page_url\":\"/b\"}\n";
    assert_eq!(parse_body(nd, BodyFormat::NdJson, NOW).unwrap().len(), 2);
}

#[test]
fn every_problem_names_the_index_and_field() {
    let p = problems(one(r#"[{"user_id":1,"event_type":"click","page_url":"/a"},{"user_id":"x","event_type":"nope","extra":1}]"#).unwrap_err());
    assert!(p.contains(&"[1].user_id: must be a number, not a string".to_string()), "{p:?}");
    assert!(p.iter().any(|s| s.starts_with("[1].event_type: must be one of")), "{p:?}");
    assert!(p.contains(&"[1].page_url: is required".to_string()), "{p:?}");
    assert!(p.contains(&"[1].extra: is not a field of an event".to_string()), "{p:?}");
    let p = problems(
        parse_body(
            b"{\"user_id\":0,\"event_type\":\"click\",\"page_url\":\"/a\"}\nnot json\n",
            BodyFormat::NdJson,
            NOW,
        )
        .unwrap_err(),
    );
    assert_eq!(p.len(), 1);
    assert!(p[0].starts_with("line 2: not valid JSON"), "{p:?}");
    let p = problems(
        parse_body(
            b"{\"user_id\":0,\"event_type\":\"click\",\"page_url\":\"/a\"}\n",
            BodyFormat::NdJson,
            NOW,
        )
        .unwrap_err(),
    );
    assert!(p[0].starts_with("line 1: user_id: must be a whole number"), "{p:?}");
}

#[test]
fn at_most_twenty_problems_are_reported() {
    let body = format!("[{}]", vec![r#"{"user_id":-1}"#; 50].join(","));
    let p = problems(one(&body).unwrap_err());
    assert_eq!(p.len(), MAX_REPORTED_ERRORS);
}

#[test]
fn limits_are_413() {
    let body = format!("[{}]", vec!["{}"; MAX_EVENTS_PER_REQUEST + 1].join(","));
    assert_eq!(one(&body).unwrap_err().status(), 413);
}

#[test]
fn wrong_shapes_and_types_are_400() {
    for bad in [
        "",
        "3",
        "\"x\"",
        "[]",
        "{",
        "[1]",
        r#"{"user_id":1,"event_type":"click","page_url":"/a","metadata":[1]}"#,
        r#"{"user_id":1,"event_type":"click","page_url":"/a","created_at":"yesterday"}"#,
        r#"{"user_id":1.5,"event_type":"click","page_url":"/a"}"#,
        r#"{"user_id":99999999999,"event_type":"click","page_url":"/a"}"#,
        r#"{"user_id":1,"event_type":"click","page_url":""}"#,
    ] {
        assert_eq!(one(bad).unwrap_err().status(), 400, "{bad}");
    }
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(one(&deep).unwrap_err().status(), 400);
    assert_eq!(BodyFormat::from_content_type(Some("text/csv")).unwrap_err().status(), 415);
    assert_eq!(
        BodyFormat::from_content_type(Some("application/x-ndjson; charset=utf-8")).unwrap(),
        BodyFormat::NdJson
    );
}

#[test]
fn a_duration_out_of_range_is_400_naming_it() {
    let ev = |d: &str| {
        format!(
            r#"{{"user_id":1,"event_type":"click","page_url":"/a","metadata":{{"duration_ms":{d}}}}}"#
        )
    };
    for bad in ["1e200", "-1", "1000000000001"] {
        let p = problems(one(&ev(bad)).unwrap_err());
        assert_eq!(
            p,
            ["metadata.duration_ms: must be a number from 0 to 1e12 when it is a number"],
            "{bad}"
        );
    }
    for good in ["0", "1200", "1.5", "1e12", "\"fast\"", "null"] {
        assert!(one(&ev(good)).is_ok(), "{good}");
    }
}

/// Issue 29, item 1: `created_at` is bounded in UTC, so an offset cannot carry an event into year
/// 10000 (whose `dt=+10000-01-01` folder broke every later snapshot) or before 1970.
#[test]
fn created_at_is_bounded_in_utc_whatever_its_offset() {
    let ev = |t: &str| {
        format!(r#"{{"user_id":9,"event_type":"click","page_url":"/x","created_at":"{t}"}}"#)
    };
    for bad in [
        "9999-12-31T12:00:00-12:00",
        "9999-12-31T23:59:59.999999-00:01",
        "1970-01-01T00:30:00+01:00",
        "1969-12-31T23:59:59.999999Z",
    ] {
        let p = problems(one(&ev(bad)).unwrap_err());
        assert!(p.len() == 1 && p[0].starts_with("created_at: must be"), "{bad}: {p:?}");
    }
    for (good, us) in [
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T00:30:00-01:00", 5_400_000_000),
        ("9999-12-31T23:59:59.999999Z", *CREATED_AT_US.end()),
        ("9999-12-31T12:00:00+12:00", 253_402_214_400_000_000),
    ] {
        assert_eq!(one(&ev(good)).unwrap()[0].created_at_us, us, "{good}");
    }
}
