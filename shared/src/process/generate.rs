use std::sync::OnceLock;

use super::Columns;
use crate::generate::Rng;

/// The generated categories, sorted by name, and how often each occurs.
pub const GEN_CATEGORIES: [&str; 8] =
    ["ALPHA", "BRAVO", "CHARLIE", "DELTA", "ECHO", "FOXTROT", "GOLF", "HOTEL"];
const GEN_CATEGORY_WEIGHTS: [f64; 8] = [30.0, 20.0, 15.0, 10.0, 10.0, 7.0, 5.0, 3.0];
/// Each category's values spread over `0..max` (in cents), so the per-category statistics differ.
const GEN_CATEGORY_MAX_CENTS: [u64; 8] =
    [100_000, 80_000, 60_000, 90_000, 50_000, 70_000, 100_000, 40_000];
/// The generated tags, sorted by name. Their popularity follows a Zipf law over a fixed shuffle,
/// so the most frequent tags are not simply the first names.
pub const GEN_TAGS: [&str; 24] = [
    "api", "batch", "beta", "billing", "cache", "cli", "critical", "debug", "docs", "edge", "etl",
    "export", "infra", "mobile", "ops", "prod", "queue", "search", "security", "staging", "stream",
    "test", "ui", "web",
];
/// 30 days, the window generated timestamps fall in, ending at `generate::DEFAULT_END_US`.
const GEN_WINDOW_MS: u64 = 30 * 86_400_000;
/// Rows per independently seeded chunk: the output depends on (size, seed) only, never on threads.
const GEN_CHUNK: usize = 1 << 16;
/// Below this many rows one thread is faster than starting more.
pub const GEN_PARALLEL_MIN: usize = 4 * GEN_CHUNK;

/// 1024-entry lookup tables from 10 random bits to a category or tag: one load per draw instead
/// of a search through a cumulative distribution.
fn gen_tables() -> &'static ([u8; 1024], [u8; 1024]) {
    static T: OnceLock<([u8; 1024], [u8; 1024])> = OnceLock::new();
    T.get_or_init(|| {
        let fill = |weights: &[f64], map: &dyn Fn(usize) -> u8| {
            let total: f64 = weights.iter().sum();
            let mut t = [0u8; 1024];
            let (mut k, mut acc) = (0usize, weights[0]);
            for (slot, out) in t.iter_mut().enumerate() {
                while (slot as f64 + 0.5) / 1024.0 * total > acc && k + 1 < weights.len() {
                    k += 1;
                    acc += weights[k];
                }
                *out = map(k);
            }
            t
        };
        let zipf: Vec<f64> = (1..=GEN_TAGS.len()).map(|r| 1.0 / (r as f64).powf(1.1)).collect();
        // Rank r is tag (7r + 15) mod 24: 7 is coprime with 24, so every tag gets one rank.
        (
            fill(&GEN_CATEGORY_WEIGHTS, &|k| k as u8),
            fill(&zipf, &|k| ((7 * k + 15) % GEN_TAGS.len()) as u8),
        )
    })
}

/// One generated point; `tags[..n_tags]` are its tags.
struct GenRow {
    ts_us: i64,
    category: u8,
    value: f64,
    n_tags: usize,
    tags: [u8; 3],
}

/// The next point of a chunk: two random words decide everything about it. Integer arithmetic
/// throughout (x86-64's baseline has no rounding instruction), one division per value.
#[inline(always)]
fn gen_row(rng: &mut Rng, cat_t: &[u8; 1024], tag_t: &[u8; 1024]) -> GenRow {
    const START_US: i64 = crate::generate::DEFAULT_END_US - (GEN_WINDOW_MS as i64) * 1000;
    let a = rng.next_u64();
    let b = rng.next_u64();
    let category = cat_t[((a >> 22) & 1023) as usize];
    // A triangular draw (the sum of two 21-bit uniforms), scaled to the category's range, in cents.
    let tri = (b >> 43) + ((b >> 22) & 0x1F_FFFF);
    GenRow {
        ts_us: START_US + (((a >> 32) * GEN_WINDOW_MS) >> 32) as i64 * 1000,
        category,
        value: ((tri * GEN_CATEGORY_MAX_CENTS[category as usize]) >> 22) as f64 / 100.0,
        n_tags: ((a >> 20) & 3) as usize,
        tags: [
            tag_t[(a & 1023) as usize],
            tag_t[(b & 1023) as usize],
            tag_t[((b >> 10) & 1023) as usize],
        ],
    }
}

/// Fills one chunk of the columns.
fn gen_chunk(seed: u64, (chunk, ids, ts, cats, vals, tags): &mut ChunkOut<'_>) {
    let first_id = (*chunk * GEN_CHUNK) as i64 + 1;
    let (cat_t, tag_t) = gen_tables();
    let mut rng = Rng::for_item(seed, *chunk as u64);
    tags.reserve(ids.len() * 3);
    let rows = ids.iter_mut().zip(ts.iter_mut()).zip(cats.iter_mut()).zip(vals.iter_mut());
    for (i, (((id, t), c), v)) in rows.enumerate() {
        let row = gen_row(&mut rng, cat_t, tag_t);
        *id = first_id + i as i64;
        *t = row.ts_us;
        *c = u32::from(row.category);
        *v = row.value;
        tags.extend(row.tags[..row.n_tags].iter().map(|t| u32::from(*t)));
    }
}

/// The same points as `generate(size, seed)` as a `POST /process` body, so that a benchmark
/// can send the reference's 50,000-point batch (about 5.5 MB) and get the same statistics as
/// `GET /process?size=&seed=`. Timestamps are RFC 3339 with milliseconds.
pub fn batch_json(size: usize, seed: u64) -> Vec<u8> {
    use std::io::Write;
    let (cat_t, tag_t) = gen_tables();
    let mut out = Vec::with_capacity(size * 120 + 64);
    let _ = write!(out, r#"{{"batch_id":"generated-{size}-{seed}","data":["#);
    let mut id = 0usize;
    for chunk in 0..size.div_ceil(GEN_CHUNK) {
        // Seeded per chunk, exactly as `generate` does.
        let mut rng = Rng::for_item(seed, chunk as u64);
        for _ in 0..GEN_CHUNK.min(size - chunk * GEN_CHUNK) {
            let row = gen_row(&mut rng, cat_t, tag_t);
            id += 1;
            let ts = chrono::DateTime::from_timestamp_micros(row.ts_us)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default();
            let _ = write!(
                out,
                r#"{}{{"id":{id},"timestamp":"{ts}","category":"{}","value":{},"tags":["#,
                if id == 1 { "" } else { "," },
                GEN_CATEGORIES[row.category as usize],
                row.value
            );
            for (j, t) in row.tags[..row.n_tags].iter().enumerate() {
                let _ =
                    write!(out, r#"{}"{}""#, if j == 0 { "" } else { "," }, GEN_TAGS[*t as usize]);
            }
            out.extend_from_slice(b"]}");
        }
    }
    out.extend_from_slice(b"]}");
    out
}

/// One chunk's share of the output columns, and its tag list.
type ChunkOut<'a> =
    (usize, &'a mut [i64], &'a mut [i64], &'a mut [u32], &'a mut [f64], &'a mut Vec<u32>);

fn gen_chunks(seed: u64, part: &mut [ChunkOut<'_>]) {
    for chunk in part.iter_mut() {
        gen_chunk(seed, chunk);
    }
}

/// `size` deterministic points for `seed`, generated straight into columns, in parallel chunks
/// when the batch is large.
pub fn generate(size: usize, seed: u64) -> Columns {
    let mut ids = vec![0i64; size];
    let mut ts = vec![0i64; size];
    let mut cats = vec![0u32; size];
    let mut vals = vec![0f64; size];
    let chunks = size.div_ceil(GEN_CHUNK);
    let mut tag_parts: Vec<Vec<u32>> = (0..chunks).map(|_| Vec::new()).collect();
    {
        let mut work: Vec<ChunkOut<'_>> = ids
            .chunks_mut(GEN_CHUNK)
            .zip(ts.chunks_mut(GEN_CHUNK))
            .zip(cats.chunks_mut(GEN_CHUNK))
            .zip(vals.chunks_mut(GEN_CHUNK))
            .zip(tag_parts.iter_mut())
            .enumerate()
            .map(|(k, ((((i, t), c), v), g))| (k, i, t, c, v, g))
            .collect();
        let threads = if size < GEN_PARALLEL_MIN {
            1
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .clamp(1, 8)
                .min(chunks)
        };
        if threads == 1 {
            gen_chunks(seed, &mut work);
        } else {
            let per = chunks.div_ceil(threads);
            std::thread::scope(|s| {
                for part in work.chunks_mut(per) {
                    s.spawn(move || gen_chunks(seed, part));
                }
            });
        }
    }
    let tags =
        if tag_parts.len() == 1 { tag_parts.pop().unwrap_or_default() } else { tag_parts.concat() };
    Columns {
        ids,
        timestamps_us: ts,
        categories: cats,
        values: vals,
        tags,
        category_names: GEN_CATEGORIES.iter().map(|s| s.to_string()).collect(),
        tag_names: GEN_TAGS.iter().map(|s| s.to_string()).collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------
