use serde_json::{Map, Value};

use super::{
    BodyFormat, EventType, NewEvent, MAX_DURATION_MS, MAX_EVENTS_PER_REQUEST, MAX_METADATA_BYTES,
    MAX_PAGE_URL, MAX_REPORTED_ERRORS,
};
use crate::error::{Error, FieldError, Result};

/// Parses and validates a whole body; every problem found (up to 20) is reported at once.
pub fn parse_body(body: &[u8], format: BodyFormat, now_us: i64) -> Result<Vec<NewEvent>> {
    let items: Vec<(String, Value)> = match format {
        BodyFormat::Json => {
            let v: Value = crate::http::parse_json(body)?;
            match v {
                Value::Array(a) => {
                    check_count(a.len())?;
                    a.into_iter().enumerate().map(|(i, v)| (format!("[{i}]"), v)).collect()
                }
                v @ Value::Object(_) => vec![(String::new(), v)],
                _ => {
                    return Err(Error::invalid(
                        "the body must be an event object or an array of events",
                        vec![],
                    ))
                }
            }
        }
        BodyFormat::NdJson => {
            let text = std::str::from_utf8(body)
                .map_err(|e| Error::invalid(format!("the body is not UTF-8: {e}"), vec![]))?;
            let mut items = Vec::new();
            let mut errors = Vec::new();
            for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                check_count(items.len() + errors.len() + 1)?;
                let at = format!("line {}", n + 1);
                match serde_json::from_str::<Value>(line) {
                    Ok(v) => items.push((at, v)),
                    Err(e) => errors.push(FieldError::new(at, format!("not valid JSON: {e}"))),
                }
            }
            if !errors.is_empty() {
                errors.truncate(MAX_REPORTED_ERRORS);
                return Err(Error::invalid(
                    format!("{} NDJSON line(s) are not valid JSON", errors.len()),
                    errors,
                ));
            }
            items
        }
    };
    if items.is_empty() {
        return Err(Error::invalid("the body holds no events", vec![]));
    }
    let mut events = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    let mut bad = 0usize;
    for (at, v) in items {
        match validate(&at, v, now_us) {
            Ok(e) => events.push(e),
            Err(mut errs) => {
                bad += 1;
                let room = MAX_REPORTED_ERRORS.saturating_sub(errors.len());
                errs.truncate(room);
                errors.extend(errs);
            }
        }
    }
    if bad > 0 {
        return Err(Error::invalid(
            format!("{bad} event(s) are invalid; nothing was written"),
            errors,
        ));
    }
    Ok(events)
}

fn check_count(n: usize) -> Result<()> {
    if n > MAX_EVENTS_PER_REQUEST {
        return Err(Error::TooLarge { what: "number of events", limit: MAX_EVENTS_PER_REQUEST });
    }
    Ok(())
}

fn field(at: &str, name: &str) -> String {
    if at.is_empty() {
        name.to_string()
    } else if at.starts_with('[') {
        format!("{at}.{name}")
    } else {
        format!("{at}: {name}")
    }
}

/// Checks one event, returning every problem with it.
pub fn validate(at: &str, v: Value, now_us: i64) -> std::result::Result<NewEvent, Vec<FieldError>> {
    let Value::Object(mut m) = v else {
        let at = if at.is_empty() { "body".to_string() } else { at.to_string() };
        return Err(vec![FieldError::new(at, "must be a JSON object")]);
    };
    let mut errs = Vec::new();
    let mut report = |name: &str, problem: Option<String>| {
        if let Some(problem) = problem {
            errs.push(FieldError::new(field(at, name), problem));
        }
    };
    let user_id = checked(&mut m, "user_id", &mut report, |v| match v {
        // JSON Schema's integers are the whole numbers, `7.0` among them.
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e10).map(|f| f as i64))
            .filter(|id| (1..=i64::from(i32::MAX)).contains(id))
            .map(|id| id as i32)
            .ok_or_else(|| format!("must be a whole number from 1 to {}", i32::MAX)),
        other => Err(format!("must be a number, not {}", kind(&other))),
    });
    let event_type = checked(&mut m, "event_type", &mut report, |v| match v {
        Value::String(s) => EventType::parse(&s).ok_or_else(|| {
            "must be one of page_view, click, conversion, signup, purchase".to_string()
        }),
        other => Err(format!("must be a string, not {}", kind(&other))),
    });
    let page_url = checked(&mut m, "page_url", &mut report, |v| match v {
        Value::String(s)
            if s.is_empty() || s.chars().count() > MAX_PAGE_URL || s.contains('\0') =>
        {
            Err(format!("must be 1 to {MAX_PAGE_URL} characters without NUL"))
        }
        Value::String(s) => Ok(s),
        other => Err(format!("must be a string, not {}", kind(&other))),
    });
    let duration = m.get("metadata").and_then(|v| v.get("duration_ms")).and_then(Value::as_f64);
    if duration.is_some_and(|d| !(0.0..=MAX_DURATION_MS).contains(&d)) {
        report(
            "metadata.duration_ms",
            Some(format!("must be a number from 0 to {MAX_DURATION_MS:e} when it is a number")),
        );
    }
    let metadata = optional(&mut m, "metadata", "{}".to_string(), &mut report, |v| match v {
        v @ Value::Object(_) => {
            let text = v.to_string();
            if text.len() > MAX_METADATA_BYTES {
                Err(format!("must be at most {MAX_METADATA_BYTES} bytes"))
            } else if text.contains("\\u0000") {
                Err("must not contain NUL characters".to_string())
            } else {
                Ok(text)
            }
        }
        other => Err(format!("must be an object, not {}", kind(&other))),
    });
    let created_at_us = optional(&mut m, "created_at", now_us, &mut report, |v| match v {
        // The year as written (the document's pattern), not in UTC: an offset may move it.
        Value::String(s) => crate::time::parse_rfc3339(&s)
            .filter(|_| s.get(..4).and_then(|y| y.parse().ok()).is_some_and(|y: u32| y >= 1970))
            .map(|t| t.timestamp_micros())
            .ok_or_else(|| {
                "must be an RFC 3339 timestamp from year 1970 on, e.g. 2026-11-24T10:00:00Z"
                    .to_string()
            }),
        other => Err(format!("must be an RFC 3339 string, not {}", kind(&other))),
    });
    for unknown in m.keys() {
        report(unknown, Some("is not a field of an event".to_string()));
    }
    match (user_id, event_type, page_url, metadata, created_at_us) {
        (Some(user_id), Some(event_type), Some(page_url), Some(metadata), Some(created_at_us))
            if errs.is_empty() =>
        {
            Ok(NewEvent { user_id, event_type, page_url, metadata, created_at_us })
        }
        _ => Err(errs),
    }
}

/// Takes the required field `name` out of `m` and checks it; a problem (or its absence) is
/// reported through `report` under the field's name.
fn checked<T>(
    m: &mut Map<String, Value>,
    name: &str,
    report: &mut impl FnMut(&str, Option<String>),
    check: impl FnOnce(Value) -> std::result::Result<T, String>,
) -> Option<T> {
    let result = match m.remove(name) {
        None => Err("is required".to_string()),
        Some(v) => check(v),
    };
    report(name, result.as_ref().err().cloned());
    result.ok()
}

/// Like [`checked`], for a field that may be absent or `null` (then `default`).
fn optional<T>(
    m: &mut Map<String, Value>,
    name: &str,
    default: T,
    report: &mut impl FnMut(&str, Option<String>),
    check: impl FnOnce(Value) -> std::result::Result<T, String>,
) -> Option<T> {
    match m.remove(name) {
        None | Some(Value::Null) => Some(default),
        Some(v) => {
            let result = check(v);
            report(name, result.as_ref().err().cloned());
            result.ok()
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Keeps `Map` in the public API stable for callers building events by hand.
pub type Metadata = Map<String, Value>;
