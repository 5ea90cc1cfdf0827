use super::parse::Scalar;
use super::{MAX_CATEGORY_CHARS, MAX_EPOCH_S, MAX_VALUE, MIN_EPOCH_S};

pub(super) fn excerpt(s: &str) -> String {
    const MAX: usize = 40;
    match s.char_indices().nth(MAX) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
    }
}

pub(super) fn check_id(v: &Scalar) -> std::result::Result<i64, String> {
    match v {
        Scalar::Int(i) => Ok(*i),
        // JSON Schema's integers are the whole numbers, `1.0` and `1e2` among them (as long as
        // a double holds them exactly: past 2^53 the text may be outside i64).
        Scalar::Float(f) if f.fract() == 0.0 && f.abs() <= 2f64.powi(53) => Ok(*f as i64),
        Scalar::BigInt => Err(format!("must be a whole number from {} to {}", i64::MIN, i64::MAX)),
        other => Err(format!("must be a whole number, got {}", other.kind())),
    }
}

/// Any RFC 3339 date-time (years 0000 to 9999, any offset), or epoch seconds from `MIN_EPOCH_S`
/// to `MAX_EPOCH_S`: exactly what the document's `oneOf` allows.
pub(super) fn check_timestamp(v: &Scalar) -> std::result::Result<i64, String> {
    let range = || format!("as epoch seconds must be from {MIN_EPOCH_S} to {MAX_EPOCH_S}");
    match v {
        Scalar::Str(s) => crate::time::parse_rfc3339_us(s).ok_or_else(|| {
            format!(
                "must be an RFC 3339 timestamp (e.g. 2026-10-01T12:00:00Z) or epoch seconds, got {}",
                excerpt(s)
            )
        }),
        Scalar::Int(s) if (MIN_EPOCH_S..=MAX_EPOCH_S).contains(s) => Ok(s * 1_000_000),
        Scalar::Float(s) if (MIN_EPOCH_S as f64..=MAX_EPOCH_S as f64).contains(s) => {
            Ok((s * 1e6).round() as i64)
        }
        Scalar::Int(_) | Scalar::BigInt | Scalar::Float(_) => Err(range()),
        other => Err(format!("must be an RFC 3339 string or epoch seconds, got {}", other.kind())),
    }
}

pub(super) fn valid_category(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_CATEGORY_CHARS && s.bytes().all(|b| b.is_ascii_uppercase())
}

/// `value` arrives as raw JSON text and is parsed with `str::parse`, which rounds correctly:
/// serde_json's own float parsing (without `float_roundtrip`, which would rebuild Polars) can be
/// one ULP off for 17-digit numbers, and then `min_value` would not be a value the client sent.
/// (axum enables serde_json's `raw_value` feature, so `RawValue` is always available.)
pub(super) fn check_value(raw: &str) -> std::result::Result<f64, String> {
    let kind = match raw.as_bytes().first() {
        Some(b'-' | b'0'..=b'9') => {
            return match raw.parse::<f64>() {
                Ok(x) if (0.0..=MAX_VALUE).contains(&x) => Ok(x),
                _ => Err(format!(
                    "must be between 0 and {MAX_VALUE}, got {}",
                    excerpt(raw).trim_matches('"')
                )),
            };
        }
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'[') => "an array",
        _ => "an object",
    };
    Err(format!("must be a number between 0 and {MAX_VALUE}, got {kind}"))
}
