use aws_lc_rs::hmac;

use crate::error::{Error, Result};

/// Where the next page starts: the last row's `(created_at, id)`, newest first.
///
/// The token is the position (`created_at` in µs, then `id`, 16 hex digits each) and an HMAC-SHA256
/// tag over it (32 hex digits) under the instance's [`CursorKey`], so a client can pass back only
/// positions this API handed out. The OpenAPI document gives the shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at_us: i64,
    pub id: i64,
}

/// The document's pattern for a cursor.
pub const CURSOR_PATTERN: &str = "^[0-9a-f]{64}$";

/// The earliest and latest `created_at` a cursor may hold: the events' own range.
pub const CURSOR_CREATED_AT_US: std::ops::RangeInclusive<i64> = super::CREATED_AT_US;

/// The key that signs cursors. `QUIVER_CURSOR_KEY` when it is set (at least 32 characters);
/// otherwise derived from the database URL, which every instance of a deployment shares (on AWS it
/// comes from the database secret, so it is never known to clients); with neither, random per
/// process.
#[derive(Clone)]
pub struct CursorKey(hmac::Key);

impl CursorKey {
    pub fn from_config(cfg: &crate::Config) -> Self {
        match (&cfg.cursor_key, &cfg.database_url) {
            (Some(k), _) => CursorKey::new(k.as_bytes()),
            (None, Some(url)) => {
                let derive = hmac::Key::new(hmac::HMAC_SHA256, b"quiver cursor key v1");
                CursorKey::new(hmac::sign(&derive, url.as_bytes()).as_ref())
            }
            (None, None) => CursorKey::new(&crate::tls::random_bytes::<32>()),
        }
    }

    pub fn new(secret: &[u8]) -> Self {
        CursorKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    fn tag(&self, position: &str) -> String {
        let tag = hmac::sign(&self.0, position.as_bytes());
        tag.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Cursor {
    /// A URL-safe token, signed with `key`.
    pub fn encode(&self, key: &CursorKey) -> String {
        let position = format!("{:016x}{:016x}", self.created_at_us as u64, self.id as u64);
        let tag = key.tag(&position);
        position + &tag
    }

    /// Decodes a token that `encode` made with `key`; anything else is a 400 naming `cursor`.
    pub fn decode(token: &str, key: &CursorKey) -> Result<Self> {
        let bad = |why: &str| Error::bad_param("cursor", why.to_string());
        if token.len() != 64 || !token.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad("must be 64 lowercase hex digits: pass next_cursor back unchanged"));
        }
        let (position, tag) = token.split_at(32);
        // Compared in constant time, so the tag cannot be guessed one digit at a time.
        let expected = key.tag(position);
        let diff = expected.bytes().zip(tag.bytes()).fold(0u8, |d, (a, b)| d | (a ^ b));
        if diff != 0 {
            return Err(bad(
                "was not issued by this API (or its key changed): start again from the first page",
            ));
        }
        let half = |s: &str| u64::from_str_radix(s, 16).map(|v| v as i64);
        let (created_at_us, id) = match (half(&position[..16]), half(&position[16..])) {
            (Ok(t), Ok(id)) => (t, id),
            _ => return Err(bad("must be 64 lowercase hex digits")),
        };
        if !CURSOR_CREATED_AT_US.contains(&created_at_us) || id < 0 {
            return Err(bad("names a position outside any event"));
        }
        Ok(Cursor { created_at_us, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17, item 8: a cursor is accepted only with the key that signed it, and a forged or
    /// altered one (such as a far-future position, once a 500) is a 400.
    #[test]
    fn cursors_round_trip_under_their_key_and_forgeries_are_400() {
        let key = CursorKey::new(b"0123456789abcdef0123456789abcdef");
        for c in [
            Cursor { created_at_us: 1_790_000_000_000_000, id: 42 },
            Cursor { created_at_us: *CURSOR_CREATED_AT_US.end(), id: i64::MAX },
            Cursor { created_at_us: *CURSOR_CREATED_AT_US.start(), id: 0 },
        ] {
            let t = c.encode(&key);
            assert!(t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()), "{t}");
            assert_eq!(Cursor::decode(&t, &key).unwrap(), c);
        }
        let good = Cursor { created_at_us: 1_790_000_000_000_000, id: 42 }.encode(&key);
        let other = CursorKey::new(b"another key, another deployment!");
        assert_eq!(Cursor::decode(&good, &other).unwrap_err().status(), 400);
        // A forged far-future position (year 294,000) with a made-up tag.
        let forged = format!("{:016x}{:016x}{}", i64::MAX as u64, 1u64, "0".repeat(32));
        assert_eq!(Cursor::decode(&forged, &key).unwrap_err().status(), 400);
        // Signed but out of range: refused too.
        let far = Cursor { created_at_us: i64::MAX, id: 1 }.encode(&key);
        assert_eq!(Cursor::decode(&far, &key).unwrap_err().status(), 400);
        let mut flipped = good.clone().into_bytes();
        flipped[10] = if flipped[10] == b'0' { b'1' } else { b'0' };
        assert!(Cursor::decode(std::str::from_utf8(&flipped).unwrap(), &key).is_err());
        for bad in ["", "abc", &"0".repeat(63), &"0".repeat(65), &"g".repeat(64), "ü"] {
            assert_eq!(Cursor::decode(bad, &key).unwrap_err().status(), 400, "{bad:?}");
        }
    }

    #[test]
    fn the_key_comes_from_the_setting_else_the_database_url() {
        let cfg = |pairs: &[(&str, &str)]| {
            let vars = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            crate::Config::from_vars(&vars).unwrap()
        };
        let c = Cursor { created_at_us: 1, id: 2 };
        let url = [("QUIVER_DATABASE_URL", "postgres://u:p@h/db")];
        let a = CursorKey::from_config(&cfg(&url));
        let b = CursorKey::from_config(&cfg(&url));
        assert_eq!(c.encode(&a), c.encode(&b), "instances of one deployment agree");
        let other = CursorKey::from_config(&cfg(&[("QUIVER_DATABASE_URL", "postgres://u:q@h/db")]));
        assert_ne!(c.encode(&a), c.encode(&other));
        let set = [("QUIVER_CURSOR_KEY", "k".repeat(32))];
        let set: Vec<(&str, &str)> = set.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            c.encode(&CursorKey::from_config(&cfg(&set))),
            c.encode(&CursorKey::new(&[b'k'; 32]))
        );
        let random = [CursorKey::from_config(&cfg(&[])), CursorKey::from_config(&cfg(&[]))];
        assert_ne!(c.encode(&random[0]), c.encode(&random[1]));
    }
}
