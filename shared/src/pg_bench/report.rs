use std::time::Duration;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::{Approach, Outcome, Session};
use crate::error::Result;
use crate::pg::Pg;
use crate::time::ms;

/// avg / min / p50 / max of one measure, in ms.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Spread {
    pub avg: f64,
    pub min: f64,
    pub p50: f64,
    pub max: f64,
}

impl Spread {
    /// Of `samples` (at least one); p50 is the median, the mean of the middle two for even counts.
    pub fn of(samples: &[Duration]) -> Spread {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let n = ms.len();
        let p50 = if n == 0 {
            0.0
        } else if n % 2 == 1 {
            ms[n / 2]
        } else {
            (ms[n / 2 - 1] + ms[n / 2]) / 2.0
        };
        Spread {
            avg: round(ms.iter().sum::<f64>() / n.max(1) as f64, 4),
            min: round(ms.first().copied().unwrap_or(0.0), 4),
            p50: round(p50, 4),
            max: round(ms.last().copied().unwrap_or(0.0), 4),
        }
    }
}

fn round(v: f64, decimals: i32) -> f64 {
    let p = 10f64.powi(decimals);
    (v * p).round() / p
}

/// Values keyed by approach, serialized as a JSON object in [`Approach::ALL`] order.
#[derive(Debug, Clone)]
pub struct ByApproach<T>(pub Vec<(Approach, T)>);

impl<T> ByApproach<T> {
    pub fn get(&self, a: Approach) -> Option<&T> {
        self.0.iter().find(|(k, _)| *k == a).map(|(_, v)| v)
    }
}

impl<T: Serialize> Serialize for ByApproach<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k.name(), v)?;
        }
        m.end()
    }
}

/// Which approach was fastest, and each one's speedup over `dynamic` (dynamic / theirs).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Comparison {
    #[schema(value_type = String)]
    pub fastest: &'static str,
    /// The figure compared: `p50 total_ms` for the repeated benchmark, `total_time_ms` for one pass.
    #[schema(value_type = String)]
    pub basis: &'static str,
    /// By approach: `dynamic`, `typed`, `polars`, `copy_binary`.
    #[schema(value_type = BTreeMap<String, f64>)]
    pub speedup_vs_dynamic: ByApproach<f64>,
}

impl Comparison {
    pub(super) fn of(totals: &[(Approach, f64)], basis: &'static str) -> Comparison {
        let fastest = totals
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(a, _)| a.name())
            .unwrap_or("typed");
        let base =
            totals.iter().find(|(a, _)| *a == Approach::Dynamic).map(|(_, t)| *t).unwrap_or(0.0);
        let speedup = totals
            .iter()
            .map(|(a, t)| (*a, if *t > 0.0 { round(base / t, 2) } else { 0.0 }))
            .collect();
        Comparison { fastest, basis, speedup_vs_dynamic: ByApproach(speedup) }
    }
}

/// One approach's figures over the counted runs.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DecodeStats {
    pub query_ms: Spread,
    pub decode_ms: Spread,
    pub total_ms: Spread,
    /// Rows in the body.
    pub count: usize,
    /// Size of the body.
    pub bytes: usize,
    /// Counted runs (the warm-up is not among them).
    pub samples: usize,
}

/// `GET /samples/pg/benchmark`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DecodeReport {
    pub dataset_size: usize,
    pub user_id: i32,
    pub limit: i64,
    pub runs: usize,
    #[schema(value_type = BTreeMap<String, DecodeStats>)]
    pub approaches: ByApproach<DecodeStats>,
    pub comparison: Comparison,
    /// Whether every approach's body was byte-identical to `typed`'s in the warm-up round.
    pub identical_json: bool,
    pub note: String,
}

/// One approach's figures in the reference's "all approaches" shape.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Pass {
    pub query_time_ms: f64,
    pub parse_time_ms: f64,
    pub total_time_ms: f64,
    pub count: usize,
}

/// `GET /samples/pg/benchmark-all`, in the reference's shape.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PassReport {
    pub dataset_size: usize,
    #[schema(value_type = BTreeMap<String, Pass>)]
    pub approaches: ByApproach<Pass>,
    pub comparison: Comparison,
    pub identical_json: bool,
    pub note: String,
}

/// Runs every approach once, uncounted, and says whether their bodies agree with `typed`'s.
async fn warm_up(s: &Session) -> Result<(usize, bool)> {
    let mut bodies = Vec::with_capacity(4);
    for a in Approach::ALL {
        bodies.push((a, s.run(a).await?));
    }
    let reference = &bodies.iter().find(|(a, _)| *a == Approach::Typed).expect("typed is in ALL").1;
    let identical = bodies.iter().all(|(_, o)| o.body == reference.body);
    if !identical {
        tracing::error!(
            user_id = s.user_id,
            limit = s.limit,
            "row-decoding approaches disagree on the JSON body"
        );
    }
    Ok((reference.count, identical))
}

/// `runs` counted rounds of every approach after one warm-up round, rotating the order each run.
pub async fn benchmark(pg: &Pg, user_id: i32, limit: i64, runs: usize) -> Result<DecodeReport> {
    let s = Session::open(pg, user_id, limit).await?;
    let (dataset_size, identical_json) = warm_up(&s).await?;
    let mut samples: Vec<(Approach, Vec<Outcome>)> =
        Approach::ALL.iter().map(|a| (*a, Vec::with_capacity(runs))).collect();
    for run in 0..runs {
        for a in Approach::order(run) {
            let o = s.run(a).await?;
            samples.iter_mut().find(|(k, _)| *k == a).expect("every approach has a slot").1.push(o);
        }
    }
    let stats: Vec<(Approach, DecodeStats)> = samples
        .iter()
        .map(|(a, os)| {
            let last = os.last();
            let spread =
                |f: fn(&Outcome) -> Duration| Spread::of(&os.iter().map(f).collect::<Vec<_>>());
            let stats = DecodeStats {
                query_ms: spread(|o| o.query),
                decode_ms: spread(|o| o.decode),
                total_ms: spread(Outcome::total),
                count: last.map_or(0, |o| o.count),
                bytes: last.map_or(0, |o| o.body.len()),
                samples: os.len(),
            };
            (*a, stats)
        })
        .collect();
    let totals: Vec<(Approach, f64)> = stats.iter().map(|(a, s)| (*a, s.total_ms.p50)).collect();
    Ok(DecodeReport {
        dataset_size,
        user_id,
        limit,
        runs,
        comparison: Comparison::of(&totals, "p50 total_ms"),
        approaches: ByApproach(stats),
        identical_json,
        note: format!(
            "one warm-up round of every approach ran first and is not counted; then {runs} run(s), the order of \
             approaches rotating by one each run; all on one pooled connection with prepared statements; query_ms \
             ends when the last row has arrived, decode_ms ends with the finished JSON body"
        ),
    })
}

/// One counted pass of every approach after the warm-up round, in the reference's shape.
pub async fn one_pass(pg: &Pg, user_id: i32, limit: i64) -> Result<PassReport> {
    let s = Session::open(pg, user_id, limit).await?;
    let (dataset_size, identical_json) = warm_up(&s).await?;
    let mut passes = Vec::with_capacity(4);
    for a in Approach::ALL {
        let o = s.run(a).await?;
        passes.push((
            a,
            Pass {
                query_time_ms: ms(o.query),
                parse_time_ms: ms(o.decode),
                total_time_ms: ms(o.total()),
                count: o.count,
            },
        ));
    }
    let totals: Vec<(Approach, f64)> = passes.iter().map(|(a, p)| (*a, p.total_time_ms)).collect();
    Ok(PassReport {
        dataset_size,
        comparison: Comparison::of(&totals, "total_time_ms"),
        approaches: ByApproach(passes),
        identical_json,
        note: "one warm-up round of every approach ran first and is not counted (the reference's 509x compared a \
               cold first call with warm ones); then one pass of each, on one pooled connection with prepared \
               statements"
            .into(),
    })
}
