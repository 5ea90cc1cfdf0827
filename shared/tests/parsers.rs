//! Property tests of the request parsers that need no service: query parameters, the JSON/NDJSON
//! event parser and validator, and cursors. Whatever the input, a parser returns a value or a
//! 4xx that names the problem; it never panics, and what it accepts is what was sent.

use proptest::prelude::*;
use quiver::events::{parse_body, BodyFormat, EventType};
use quiver::http::Params;
use quiver::Error;
use serde_json::{json, Value};

const NOW: i64 = 1_790_000_000_000_000;

fn client_error(e: &Error) -> bool {
    (400..500).contains(&e.status().as_u16())
}

/// A JSON value of any shape, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid event, as a client would send it.
fn event() -> impl Strategy<Value = (i32, EventType, String, Value)> {
    (1..=i32::MAX, prop::sample::select(EventType::ALL.to_vec()), "/[a-z0-9/._-]{0,60}", any_json())
        .prop_map(|(u, t, p, m)| {
            let metadata = match m {
                Value::Object(o) => Value::Object(o),
                other => json!({ "v": other }),
            };
            (u, t, p, metadata)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn query_strings_parse_or_are_a_4xx(raw in ".{0,300}") {
        match Params::parse(Some(&raw)) {
            Ok(p) => {
                for name in ["limit", "count", "offset"] {
                    match p.number::<i64>(name, Some(1), 1..=1000) {
                        Ok(n) => prop_assert!((1..=1000).contains(&n)),
                        Err(e) => prop_assert_eq!(e.problem().param, Some(name.to_string())),
                    }
                }
                if let Err(e) = p.choice("source", &["duckdb", "postgres"], "duckdb") {
                    prop_assert_eq!(e.problem().param, Some("source".to_string()));
                }
            }
            Err(e) => prop_assert!(client_error(&e), "{e}"),
        }
    }

    #[test]
    fn numbers_in_range_are_accepted_and_out_of_range_named(n in any::<i64>()) {
        let p = Params::parse(Some(&format!("limit={n}"))).unwrap();
        let got = p.number::<i64>("limit", None, 1..=1000);
        prop_assert_eq!(got.is_ok(), (1..=1000).contains(&n));
    }

    #[test]
    fn arbitrary_bodies_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000), ndjson in any::<bool>()) {
        let format = if ndjson { BodyFormat::NdJson } else { BodyFormat::Json };
        if let Err(e) = parse_body(&bytes, format, NOW) {
            prop_assert!(client_error(&e), "{e}");
        }
    }

    #[test]
    fn arbitrary_json_is_validated_not_trusted(v in any_json()) {
        match parse_body(v.to_string().as_bytes(), BodyFormat::Json, NOW) {
            Ok(events) => prop_assert!(events.iter().all(|e| e.user_id > 0 && !e.page_url.is_empty())),
            Err(e) => prop_assert!(client_error(&e), "{e}"),
        }
    }

    #[test]
    fn valid_events_come_back_as_sent(events in prop::collection::vec(event(), 1..40), ndjson in any::<bool>()) {
        let docs: Vec<Value> = events.iter().map(|(u, t, p, m)| json!({"user_id": u, "event_type": t.as_str(), "page_url": p, "metadata": m})).collect();
        let (body, format) = if ndjson {
            (docs.iter().map(Value::to_string).collect::<Vec<_>>().join("\n"), BodyFormat::NdJson)
        } else {
            (Value::Array(docs).to_string(), BodyFormat::Json)
        };
        let parsed = parse_body(body.as_bytes(), format, NOW);
        // The one rejection a valid-looking event may get: metadata over 8 KiB.
        if let Err(e) = &parsed {
            prop_assert!(e.to_string().contains("metadata") || e.problem().errors.iter().all(|f| f.at.contains("metadata")), "{e}");
            return Ok(());
        }
        let parsed = parsed.unwrap();
        prop_assert_eq!(parsed.len(), events.len());
        for (got, (u, t, p, m)) in parsed.iter().zip(&events) {
            prop_assert_eq!(got.user_id, *u);
            prop_assert_eq!(got.event_type, *t);
            prop_assert_eq!(&got.page_url, p);
            prop_assert_eq!(serde_json::from_str::<Value>(&got.metadata).unwrap(), m.clone());
            prop_assert_eq!(got.created_at_us, NOW);
        }
    }

    #[test]
    fn one_bad_event_rejects_the_batch_and_is_named(events in prop::collection::vec(event(), 1..20), pick in any::<prop::sample::Index>()) {
        let bad = pick.index(events.len());
        let docs: Vec<Value> = events.iter().enumerate().map(|(i, (u, t, p, _))| {
            let user = if i == bad { json!(0) } else { json!(u) };
            json!({"user_id": user, "event_type": t.as_str(), "page_url": p})
        }).collect();
        let e = parse_body(Value::Array(docs).to_string().as_bytes(), BodyFormat::Json, NOW).unwrap_err();
        prop_assert_eq!(e.status().as_u16(), 400);
        let at = format!("[{bad}].user_id");
        prop_assert!(e.problem().errors.iter().any(|f| f.at == at), "{:?}", e.problem().errors);
    }

}

/// Cursors are signed with the `pg` feature's HMAC.
#[cfg(feature = "pg")]
mod cursors {
    use proptest::prelude::*;
    use quiver::events::{Cursor, CursorKey, CURSOR_CREATED_AT_US};

    proptest! {
    #[test]
    fn cursors_round_trip(created_at_us in CURSOR_CREATED_AT_US, id in 1..i64::MAX) {
        let key = CursorKey::new(b"a key of at least thirty-two bytes");
        let c = Cursor { created_at_us, id };
        prop_assert_eq!(Cursor::decode(&c.encode(&key), &key).unwrap(), c);
    }

    /// A signed cursor outside the documented `created_at` range is still a 400 naming `cursor`.
    #[test]
    fn cursors_outside_the_range_are_a_400(before in i64::MIN..*CURSOR_CREATED_AT_US.start(), after in (*CURSOR_CREATED_AT_US.end() + 1)..i64::MAX, id in 1..i64::MAX) {
        let key = CursorKey::new(b"a key of at least thirty-two bytes");
        for created_at_us in [before, after] {
            let e = Cursor::decode(&Cursor { created_at_us, id }.encode(&key), &key).unwrap_err();
            prop_assert_eq!(e.problem().param, Some("cursor".to_string()));
        }
    }

    /// A cursor is signed: any token the API did not hand out, including every made-up one of the
    /// documented shape, is a 400 naming `cursor`.
    #[test]
    fn other_cursors_are_a_400_naming_cursor(token in ".{0,100}|[0-9a-f]{64}") {
        let key = CursorKey::new(b"a key of at least thirty-two bytes");
        let e = Cursor::decode(&token, &key).unwrap_err();
        prop_assert_eq!(e.status().as_u16(), 400);
        prop_assert_eq!(e.problem().param, Some("cursor".to_string()));
    }
    }
}
