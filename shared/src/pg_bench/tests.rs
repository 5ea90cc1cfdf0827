use super::*;

/// A COPY BINARY stream with the given tuples (each a list of fields; `None` is NULL).
fn copy_stream(tuples: &[Vec<Option<Vec<u8>>>], ext: &[u8]) -> Vec<u8> {
    let mut b = b"PGCOPY\n\xff\r\n\0".to_vec();
    b.extend_from_slice(&0i32.to_be_bytes());
    b.extend_from_slice(&(ext.len() as i32).to_be_bytes());
    b.extend_from_slice(ext);
    for t in tuples {
        b.extend_from_slice(&(t.len() as i16).to_be_bytes());
        for f in t {
            match f {
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
            }
        }
    }
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b
}

fn tuple(id: i64, pg_us: i64, meta: &str) -> Vec<Option<Vec<u8>>> {
    let mut jsonb = vec![1u8];
    jsonb.extend_from_slice(meta.as_bytes());
    vec![
        Some(id.to_be_bytes().to_vec()),
        Some(7i32.to_be_bytes().to_vec()),
        Some(b"click".to_vec()),
        Some("/é".as_bytes().to_vec()),
        Some(jsonb),
        Some(pg_us.to_be_bytes().to_vec()),
    ]
}

#[test]
fn copy_binary_is_parsed_by_hand() {
    let data =
        copy_stream(&[tuple(1, 0, r#"{"b": 1, "a": [true, null]}"#), tuple(2, -1, "{}")], b"ext");
    let rows = parse_copy(&data).unwrap();
    assert_eq!(rows.len(), 2);
    let json = serde_json::to_string(&rows).unwrap();
    assert_eq!(
        json,
        r#"[{"id":1,"user_id":7,"event_type":"click","page_url":"/é","metadata":{"a":[true,null],"b":1},"created_at":"2000-01-01T00:00:00.000000Z"},{"id":2,"user_id":7,"event_type":"click","page_url":"/é","metadata":{},"created_at":"1999-12-31T23:59:59.999999Z"}]"#
    );
    assert!(parse_copy(&copy_stream(&[], b"")).unwrap().is_empty());
}

#[test]
fn broken_copy_streams_are_errors_not_panics() {
    let good = copy_stream(&[tuple(1, 0, "{}")], b"");
    for cut in 0..good.len() {
        assert!(parse_copy(&good[..cut]).is_err(), "a stream cut at {cut} must be rejected");
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(parse_copy(&trailing).is_err());
    let mut null = tuple(1, 0, "{}");
    null[3] = None;
    assert!(parse_copy(&copy_stream(&[null], b"")).is_err());
    let mut v2 = tuple(1, 0, "{}");
    v2[4] = Some(b"\x02{}".to_vec());
    assert!(parse_copy(&copy_stream(&[v2], b"")).is_err());
    let mut kind = tuple(1, 0, "{}");
    kind[2] = Some(b"hover".to_vec());
    assert!(parse_copy(&copy_stream(&[kind], b"")).is_err());
    let mut short = tuple(1, 0, "{}");
    short.pop();
    assert!(parse_copy(&copy_stream(&[short], b"")).is_err());
    let mut infinity = tuple(1, i64::MAX, "{}");
    infinity[5] = Some(i64::MAX.to_be_bytes().to_vec());
    assert!(parse_copy(&copy_stream(&[infinity], b"")).is_err());
    let mut oids = good.clone();
    oids[11..15].copy_from_slice(&(1i32 << 16).to_be_bytes());
    assert!(parse_copy(&oids).is_err());
}

#[test]
fn the_order_rotates_so_each_approach_leads_once_in_four_runs() {
    let leads: Vec<Approach> = (0..4).map(|r| Approach::order(r)[0]).collect();
    assert_eq!(leads, Approach::ALL.to_vec());
    for r in 0..8 {
        let mut o = Approach::order(r).to_vec();
        o.sort_by_key(|a| a.name());
        let mut all = Approach::ALL.to_vec();
        all.sort_by_key(|a| a.name());
        assert_eq!(o, all, "run {r} runs every approach once");
    }
}

#[test]
fn spreads_use_the_median_and_speedups_compare_with_dynamic() {
    let d = |us: u64| Duration::from_micros(us);
    let s = Spread::of(&[d(400), d(100), d(300), d(200)]);
    assert_eq!(s, Spread { avg: 0.25, min: 0.1, p50: 0.25, max: 0.4 });
    assert_eq!(Spread::of(&[d(5), d(1), d(3)]).p50, 0.003);
    let c = Comparison::of(
        &[(Approach::Dynamic, 2.0), (Approach::Typed, 0.5), (Approach::Polars, 1.0)],
        "x",
    );
    assert_eq!(c.fastest, "typed");
    assert_eq!(
        serde_json::to_string(&c.speedup_vs_dynamic).unwrap(),
        r#"{"dynamic":1.0,"typed":4.0,"polars":2.0}"#
    );
}
