use std::cell::RefCell;

use http::HeaderValue;

/// A response encoding the client accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Zstd,
    Br,
    Gzip,
    Identity,
}

impl Encoding {
    pub fn header_value(self) -> Option<HeaderValue> {
        match self {
            Encoding::Zstd => Some(HeaderValue::from_static("zstd")),
            Encoding::Br => Some(HeaderValue::from_static("br")),
            Encoding::Gzip => Some(HeaderValue::from_static("gzip")),
            Encoding::Identity => None,
        }
    }
}

/// Picks the best encoding from `Accept-Encoding`, honouring q-values; ties prefer zstd, br, gzip.
pub fn negotiate(accept: Option<&str>) -> Encoding {
    let Some(accept) = accept else { return Encoding::Identity };
    let q_of = |name: &str| -> Option<f32> {
        let mut star = None;
        for item in accept.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
                .find_map(|v| v.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if token.eq_ignore_ascii_case(name) {
                return Some(q);
            }
            if token == "*" {
                star = Some(q);
            }
        }
        star
    };
    let mut best = (Encoding::Identity, 0.0f32);
    for (enc, name) in [(Encoding::Zstd, "zstd"), (Encoding::Br, "br"), (Encoding::Gzip, "gzip")] {
        if let Some(q) = q_of(name) {
            if q > best.1 {
                best = (enc, q);
            }
        }
    }
    best.0
}

thread_local! {
    /// zstd contexts are reused per thread instead of being built per call.
    static ZSTD_C: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static ZSTD_D: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// zstd level for responses and cache values: fast, and still 5-10x on JSON.
pub const ZSTD_LEVEL: i32 = 3;

/// Compresses with a reused per-thread zstd context.
pub fn zstd_compress(data: &[u8]) -> Vec<u8> {
    ZSTD_C.with(|c| {
        let mut c = c.borrow_mut();
        let c =
            c.get_or_insert_with(|| zstd::bulk::Compressor::new(ZSTD_LEVEL).expect("zstd context"));
        c.compress(data).expect("zstd compression into a growable buffer cannot fail")
    })
}

/// Decompresses a zstd frame of at most `max` bytes with a reused per-thread context.
pub fn zstd_decompress(data: &[u8], max: usize) -> std::io::Result<Vec<u8>> {
    ZSTD_D.with(|d| {
        let mut d = d.borrow_mut();
        let d = d.get_or_insert_with(|| zstd::bulk::Decompressor::new().expect("zstd context"));
        d.decompress(data, max)
    })
}

/// Encodes `data` for the client.
pub fn compress(enc: Encoding, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match enc {
        Encoding::Zstd => zstd_compress(data),
        Encoding::Br => {
            let mut out = Vec::with_capacity(data.len() / 4);
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 4, 22);
                w.write_all(data).expect("writing to a Vec");
            }
            out
        }
        Encoding::Gzip => {
            let mut w = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 4),
                flate2::Compression::fast(),
            );
            w.write_all(data).expect("writing to a Vec");
            w.finish().expect("writing to a Vec")
        }
        Encoding::Identity => data.to_vec(),
    }
}

/// A strong ETag over the uncompressed body.
pub fn etag_for(body: &[u8]) -> HeaderValue {
    let h = xxhash_rust::xxh3::xxh3_128(body);
    HeaderValue::from_str(&format!("\"{h:032x}\"")).expect("hex is a valid header")
}

/// Whether `If-None-Match` matches `etag` (weak comparison, as RFC 9110 asks for this header).
pub fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let etag = strip(etag);
    if_none_match.split(',').any(|t| t.trim() == "*" || strip(t) == etag)
}
