use crate::error::{Error, Result};

/// Where the next page starts: the last row's `(created_at, id)`, newest first.
///
/// The token is the position itself, 32 hex digits (`created_at` in µs, then `id`, each as 16),
/// with no check digits: any token of that shape names a position, and the page after it is
/// well defined (empty past the oldest event). The OpenAPI document gives the pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at_us: i64,
    pub id: i64,
}

/// The document's pattern for a cursor.
pub const CURSOR_PATTERN: &str = "^[0-9a-fA-F]{32}$";

impl Cursor {
    /// A URL-safe token.
    pub fn encode(&self) -> String {
        format!("{:016x}{:016x}", self.created_at_us as u64, self.id as u64)
    }

    /// Decodes a token of `encode`'s shape; anything else is a 400 naming `cursor`.
    pub fn decode(token: &str) -> Result<Self> {
        let half = |s: &str| u64::from_str_radix(s, 16).ok().map(|v| v as i64);
        let parsed = (token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Some((half(&token[..16])?, half(&token[16..])?)))
            .flatten();
        let (created_at_us, id) = parsed.ok_or_else(|| {
            Error::bad_param("cursor", "must be 32 hex digits: pass next_cursor back unchanged")
        })?;
        Ok(Cursor { created_at_us, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_any_token_of_the_shape_is_a_position() {
        for c in [
            Cursor { created_at_us: 1_790_000_000_000_000, id: 42 },
            Cursor { created_at_us: -1, id: i64::MAX },
            Cursor { created_at_us: i64::MIN, id: 0 },
        ] {
            assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        }
        assert_eq!(Cursor::decode(&"0".repeat(32)).unwrap(), Cursor { created_at_us: 0, id: 0 });
        assert!(Cursor::decode(&"F".repeat(32)).is_ok());
        for bad in ["", "abc", &"0".repeat(31), &"0".repeat(33), &"g".repeat(32), "ü"] {
            assert_eq!(Cursor::decode(bad).unwrap_err().status(), 400, "{bad:?}");
        }
    }
}
