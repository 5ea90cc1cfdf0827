//! Time, in one place: the API's one timestamp format (RFC 3339) and its one parser, and the
//! units that day partitions and PostgreSQL's binary format count in.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

/// One day in microseconds (snapshots partition by UTC day).
pub const DAY_US: i64 = 86_400_000_000;
/// PostgreSQL's epoch, 2000-01-01T00:00:00Z, in Unix microseconds: its binary format counts
/// timestamps from there.
pub const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// Milliseconds, rounded to the microsecond, for reports and logs.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// RFC 3339 with microseconds and `Z`, the one timestamp format of the API's answers.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Microseconds since the Unix epoch of an RFC 3339 timestamp, or `None` when `s` is not one.
/// The common shape is read without chrono's general parser (`POST /process` parses one per
/// point); anything else goes to chrono, so the two never disagree on
/// what is valid.
pub fn parse_rfc3339_us(s: &str) -> Option<i64> {
    fast(s.as_bytes())
        .or_else(|| DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_micros()))
}

/// [`parse_rfc3339_us`] as a UTC time.
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    parse_rfc3339_us(s).and_then(DateTime::from_timestamp_micros)
}

/// The common shape, `YYYY-MM-DDTHH:MM:SS[.digits](Z|±HH:MM)`, in µs since the epoch
/// (sub-microsecond digits truncated, as chrono does), without chrono's general parser.
/// `None` means "not this exact shape"; chrono then has the last word, so the
/// two never disagree on what is valid (leap seconds, a space separator, long fractions).
fn fast(s: &[u8]) -> Option<i64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_path_and_chrono_agree() {
        for s in [
            "2026-10-01T12:00:00Z",
            "2026-10-01t12:00:00.123456789z",
            "2024-02-29T23:59:59+05:30",
            "2026-10-01 12:00:00Z",
            "1969-12-31T23:59:59.5-00:00",
        ] {
            let chrono = DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros();
            assert_eq!(parse_rfc3339_us(s), Some(chrono), "{s}");
        }
        for s in ["2026-02-30T00:00:00Z", "2026-10-01", "2026-10-01T25:00:00Z", ""] {
            assert_eq!(parse_rfc3339_us(s), None, "{s}");
        }
    }
}
