use super::parse::Scalar;
use super::{MAX_CATEGORY_CHARS, MAX_EPOCH_S, MAX_VALUE};

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
        Scalar::BigInt => Err(format!("must be a whole number from {} to {}", i64::MIN, i64::MAX)),
        other => Err(format!("must be a whole number, got {}", other.kind())),
    }
}

pub(super) fn check_timestamp(v: &Scalar) -> std::result::Result<i64, String> {
    const RANGE: &str = "must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z";
    let us = match v {
        Scalar::Str(s) => match rfc3339_fast(s.as_bytes()) {
            Some(us) => us,
            None => chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|_| format!("must be an RFC 3339 timestamp (e.g. 2026-10-01T12:00:00Z) or epoch seconds, got {}", excerpt(s)))?
                .timestamp_micros(),
        },
        Scalar::Int(s) if (0..=MAX_EPOCH_S).contains(s) => s * 1_000_000,
        Scalar::Float(s) if (0.0..=MAX_EPOCH_S as f64).contains(s) => (s * 1e6).round() as i64,
        Scalar::Int(_) | Scalar::BigInt | Scalar::Float(_) => return Err(format!("{RANGE} (as epoch seconds: 0 to {MAX_EPOCH_S})")),
        other => return Err(format!("must be an RFC 3339 string or epoch seconds, got {}", other.kind())),
    };
    if !(0..=(MAX_EPOCH_S * 1_000_000 + 999_999)).contains(&us) {
        return Err(RANGE.into());
    }
    Ok(us)
}

/// The common RFC 3339 shape, `YYYY-MM-DDTHH:MM:SS[.digits](Z|±HH:MM)`, in µs since the epoch
/// (sub-microsecond digits truncated, as chrono does), without chrono's general parser: ~40 ns
/// less per point. `None` means "not this exact shape"; chrono then has the last word, so the
/// two never disagree on what is valid (leap seconds, a space separator, long fractions).
pub(super) fn rfc3339_fast(s: &[u8]) -> Option<i64> {
    fn digits(b: &[u8]) -> Option<i64> {
        b.iter().try_fold(0i64, |v, c| c.is_ascii_digit().then(|| v * 10 + i64::from(c - b'0')))
    }
    if s.len() < 20
        || s[4] != b'-'
        || s[7] != b'-'
        || !matches!(s[10], b'T' | b't')
        || s[13] != b':'
        || s[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (digits(&s[0..4])?, digits(&s[5..7])?, digits(&s[8..10])?);
    let (h, mi, sec) = (digits(&s[11..13])?, digits(&s[14..16])?, digits(&s[17..19])?);
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&mo)
        || d < 1
        || d > month_days[(mo - 1) as usize]
        || h > 23
        || mi > 59
        || sec > 59
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        micros = digits(&frac[..n.min(6)])? * 10i64.pow(6u32.saturating_sub(n as u32));
        rest = &frac[n..];
    }
    let offset_s = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (oh, om) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            if *sign == b'-' {
                -(oh * 3600 + om * 60)
            } else {
                oh * 3600 + om * 60
            }
        }
        _ => return None,
    };
    // Days from 1970-01-01 to the date (proleptic Gregorian; H. Hinnant's days_from_civil).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + sec - offset_s) * 1_000_000 + micros)
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
