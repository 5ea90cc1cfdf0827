//! A deterministic, seeded event generator with realistic shapes: Zipf-skewed users and pages, a
//! 70/22/5/1.5/1.5 type mix, log-normal durations, and a daily cycle in `created_at`. Event `i` of
//! seed `s` is always the same, so chunks can be generated independently and in any order.

use std::fmt::Write;
use std::sync::{Arc, OnceLock};

use bytes::BytesMut;

use crate::events::{self, EventType, NewEvent};

/// A small, fast PRNG (SplitMix64); good enough for synthetic data, and dependency-free.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The generator for item `i` of stream `seed`.
    pub fn for_item(seed: u64, i: u64) -> Self {
        let mut r =
            Rng(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.f64().max(f64::MIN_POSITIVE);
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-normal with the given median and shape.
    pub fn log_normal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    /// An index drawn from a cumulative distribution.
    pub fn pick(&mut self, cdf: &[f64]) -> usize {
        let u = self.f64() * cdf.last().copied().unwrap_or(1.0);
        cdf.partition_point(|c| *c <= u).min(cdf.len() - 1)
    }
}

/// The cumulative Zipf distribution over ranks 1..=n with exponent `s`.
pub fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    let mut acc = 0.0;
    (1..=n)
        .map(|k| {
            acc += 1.0 / (k as f64).powf(s);
            acc
        })
        .collect()
}

fn cdf(weights: &[f64]) -> Vec<f64> {
    let mut acc = 0.0;
    weights
        .iter()
        .map(|w| {
            acc += w;
            acc
        })
        .collect()
}

/// How the generated events are shaped.
#[derive(Debug, Clone)]
pub struct Shape {
    pub users: usize,
    pub pages: usize,
    /// The newest possible `created_at`, µs since the Unix epoch.
    pub end_us: i64,
    /// How far back events go, in days.
    pub window_days: u32,
}

/// 2026-11-01T00:00:00Z: a fixed anchor, so that a seed gives the same data on any day.
pub const DEFAULT_END_US: i64 = 1_793_491_200_000_000;

impl Default for Shape {
    fn default() -> Self {
        Shape { users: 10_000, pages: 200, end_us: DEFAULT_END_US, window_days: 30 }
    }
}

struct Tables {
    users: Vec<f64>,
    pages: Vec<f64>,
    urls: Vec<String>,
    types: Vec<f64>,
    hours: Vec<f64>,
}

const TYPE_WEIGHTS: [f64; 5] = [70.0, 22.0, 5.0, 1.5, 1.5];
const BROWSERS: [&str; 5] = ["chrome", "safari", "firefox", "edge", "other"];
const BROWSER_W: [f64; 5] = [64.0, 19.0, 8.0, 6.0, 3.0];
const DEVICES: [&str; 3] = ["desktop", "mobile", "tablet"];
const DEVICE_W: [f64; 3] = [55.0, 40.0, 5.0];
const COUNTRIES: [&str; 10] = ["US", "GB", "DE", "FR", "IN", "BR", "JP", "CA", "AU", "NL"];
const COUNTRY_W: [f64; 10] = [38.0, 10.0, 9.0, 7.0, 9.0, 6.0, 5.0, 6.0, 5.0, 5.0];
const REFERRERS: [&str; 6] = ["direct", "google", "newsletter", "twitter", "github", "hacker_news"];
const REFERRER_W: [f64; 6] = [35.0, 40.0, 8.0, 7.0, 6.0, 4.0];

fn page_url(rank: usize) -> String {
    const FIXED: [&str; 8] =
        ["/", "/pricing", "/signup", "/checkout", "/docs", "/blog", "/about", "/login"];
    match rank {
        r if r < FIXED.len() => FIXED[r].to_string(),
        r if r % 3 == 0 => format!("/blog/post-{r}"),
        r if r % 3 == 1 => format!("/products/{}", 1000 + r),
        r => format!("/docs/page-{r}"),
    }
}

fn tables(shape: &Shape) -> Arc<Tables> {
    // The default shape's tables are built once per process; others per generator.
    static DEFAULT: OnceLock<Arc<Tables>> = OnceLock::new();
    let build = || {
        // A daily cycle: quiet at night (UTC), busiest mid-afternoon.
        let hours: Vec<f64> =
            (0..24).map(|h| 1.2 + ((h as f64 - 9.0) * std::f64::consts::PI / 12.0).sin()).collect();
        Arc::new(Tables {
            users: zipf_cdf(shape.users, 1.07),
            pages: zipf_cdf(shape.pages, 1.1),
            urls: (0..shape.pages).map(page_url).collect(),
            types: cdf(&TYPE_WEIGHTS),
            hours: cdf(&hours),
        })
    };
    let d = Shape::default();
    if shape.users == d.users && shape.pages == d.pages {
        DEFAULT.get_or_init(build).clone()
    } else {
        build()
    }
}

/// Generates events deterministically; `event(i)` never depends on any other event.
pub struct Generator {
    seed: u64,
    shape: Shape,
    t: Arc<Tables>,
    browsers: Vec<f64>,
    devices: Vec<f64>,
    countries: Vec<f64>,
    referrers: Vec<f64>,
}

impl Generator {
    pub fn new(seed: u64, shape: Shape) -> Self {
        Generator {
            seed,
            t: tables(&shape),
            shape,
            browsers: cdf(&BROWSER_W),
            devices: cdf(&DEVICE_W),
            countries: cdf(&COUNTRY_W),
            referrers: cdf(&REFERRER_W),
        }
    }

    /// Event number `i`. `metadata` is written into `meta` (cleared first) to avoid an allocation.
    pub fn event_into(&self, i: u64, meta: &mut String) -> (i32, EventType, &str, i64) {
        let mut r = Rng::for_item(self.seed, i);
        let user_id = r.pick(&self.t.users) as i32 + 1;
        let event_type = EventType::ALL[r.pick(&self.t.types)];
        let page = &self.t.urls[r.pick(&self.t.pages)];
        let day = r.below(self.shape.window_days.max(1) as u64) as i64;
        let hour = r.pick(&self.t.hours) as i64;
        let within_hour = r.below(3_600_000_000) as i64;
        let day_start = self.shape.end_us - (day + 1) * 86_400_000_000;
        let created_at_us =
            day_start - day_start.rem_euclid(86_400_000_000) + hour * 3_600_000_000 + within_hour;
        let duration_ms = r.log_normal(1_800.0, 0.9).clamp(20.0, 600_000.0) as u64;
        meta.clear();
        let _ = write!(
            meta,
            r#"{{"duration_ms":{duration_ms},"browser":"{}","device":"{}","country":"{}","referrer":"{}""#,
            BROWSERS[r.pick(&self.browsers)],
            DEVICES[r.pick(&self.devices)],
            COUNTRIES[r.pick(&self.countries)],
            REFERRERS[r.pick(&self.referrers)],
        );
        if event_type == EventType::Purchase {
            let cents = (r.log_normal(4_999.0, 0.8) as u64).max(99);
            let _ = write!(meta, r#","amount_cents":{cents}"#);
        }
        meta.push('}');
        (user_id, event_type, page.as_str(), created_at_us)
    }

    /// Event number `i` as an owned value.
    pub fn event(&self, i: u64) -> NewEvent {
        let mut meta = String::new();
        let (user_id, event_type, page, created_at_us) = self.event_into(i, &mut meta);
        NewEvent { user_id, event_type, page_url: page.to_string(), metadata: meta, created_at_us }
    }

    /// Events `range` as COPY BINARY rows with ids from `first_id`, appended to `buf` (no header).
    pub fn copy_rows(&self, range: std::ops::Range<u64>, first_id: i64, buf: &mut BytesMut) {
        let mut meta = String::with_capacity(160);
        buf.reserve((range.end - range.start) as usize * 190);
        for (k, i) in range.enumerate() {
            let (user_id, event_type, page, created_at_us) = self.event_into(i, &mut meta);
            events::copy_row(
                buf,
                first_id + k as i64,
                user_id,
                event_type,
                page,
                &meta,
                created_at_us,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_events() {
        let a = Generator::new(7, Shape::default());
        let b = Generator::new(7, Shape::default());
        let c = Generator::new(8, Shape::default());
        assert_eq!(a.event(123), b.event(123));
        assert_ne!(a.event(123), c.event(123));
    }

    #[test]
    fn the_mix_and_skew_look_like_real_traffic() {
        let g = Generator::new(42, Shape::default());
        let n = 50_000;
        let mut types = [0usize; 5];
        let mut user1 = 0;
        let mut purchases_with_amount = 0;
        let mut hours = [0usize; 24];
        for i in 0..n {
            let e = g.event(i);
            types[EventType::ALL.iter().position(|t| *t == e.event_type).unwrap()] += 1;
            user1 += (e.user_id == 1) as usize;
            let m: serde_json::Value = serde_json::from_str(&e.metadata).unwrap();
            assert!(m["duration_ms"].as_u64().unwrap() >= 20);
            if e.event_type == EventType::Purchase {
                purchases_with_amount += m["amount_cents"].is_u64() as usize;
            }
            assert!(
                e.created_at_us <= DEFAULT_END_US
                    && e.created_at_us > DEFAULT_END_US - 31 * 86_400_000_000
            );
            hours[((e.created_at_us / 3_600_000_000) % 24) as usize] += 1;
        }
        let share = |k: usize| types[k] as f64 / n as f64;
        assert!((share(0) - 0.70).abs() < 0.02, "{types:?}");
        assert!((share(1) - 0.22).abs() < 0.02, "{types:?}");
        assert!((share(2) - 0.05).abs() < 0.01, "{types:?}");
        assert_eq!(purchases_with_amount, types[4]);
        assert!(user1 > n as usize / 50, "user 1 is the heaviest: {user1}");
        assert!(hours[15] > 2 * hours[3], "daily cycle: {hours:?}");
    }
}
