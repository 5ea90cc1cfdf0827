use crate::error::{Error, Result};

/// Where the next page starts: the last row's `(created_at, id)`, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at_us: i64,
    pub id: i64,
}

const CURSOR_VERSION: u8 = 1;

impl Cursor {
    /// An opaque, URL-safe token.
    pub fn encode(&self) -> String {
        use base64::Engine;
        let mut b = [0u8; 25];
        b[0] = CURSOR_VERSION;
        b[1..9].copy_from_slice(&self.created_at_us.to_be_bytes());
        b[9..17].copy_from_slice(&self.id.to_be_bytes());
        let check = xxhash_rust::xxh3::xxh3_64(&b[..17]);
        b[17..].copy_from_slice(&check.to_be_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    /// Decodes a token from `encode`; anything else is a 400 naming `cursor`.
    pub fn decode(token: &str) -> Result<Self> {
        use base64::Engine;
        let bad = || {
            Error::bad_param(
                "cursor",
                "is not a cursor this API issued; pass next_cursor back unchanged",
            )
        };
        if token.len() > 64 {
            return Err(bad());
        }
        let b =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
        if b.len() != 25 || b[0] != CURSOR_VERSION {
            return Err(bad());
        }
        let check = u64::from_be_bytes(b[17..25].try_into().expect("8 bytes"));
        if check != xxhash_rust::xxh3::xxh3_64(&b[..17]) {
            return Err(bad());
        }
        let created_at_us = i64::from_be_bytes(b[1..9].try_into().expect("8 bytes"));
        let id = i64::from_be_bytes(b[9..17].try_into().expect("8 bytes"));
        if id <= 0 {
            return Err(bad());
        }
        Ok(Cursor { created_at_us, id })
    }
}
