use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::Doc;
use crate::error::Result;
use crate::generate::Rng;

/// Which generated corpus to index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Corpus {
    /// The reference benchmark's templated documents ("Doc i - Performance Optimization").
    Reference,
    /// English-like text with a Zipf word distribution; see [`Realistic`].
    Realistic,
}

impl Corpus {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reference" => Some(Corpus::Reference),
            "realistic" => Some(Corpus::Realistic),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Corpus::Reference => "reference",
            Corpus::Realistic => "realistic",
        }
    }

    /// Documents `0..count` of this corpus.
    pub fn docs(self, count: u64, seed: u64) -> Box<dyn Iterator<Item = Result<Doc>> + Send> {
        match self {
            Corpus::Reference => Box::new((0..count).map(|i| Ok(reference_doc(i)))),
            Corpus::Realistic => {
                let r = Realistic::new(seed);
                Box::new((0..count).map(move |i| Ok(r.doc(i))))
            }
        }
    }
}

/// The reference corpus's topics: document `i` is about topic `i % 5`, and tagged with its tag.
pub const REFERENCE_TOPICS: [(&str, &str); 5] = [
    ("caching strategies", "caching"),
    ("query planning", "databases"),
    ("memory layout", "memory"),
    ("async runtimes", "async"),
    ("index compression", "search"),
];
/// Document `i` of the reference corpus was created `i` hours after this (2026-01-01T00:00:00Z).
pub const REFERENCE_START: i64 = 1_767_225_600;

/// Document `i` of the reference corpus. Every title contains "Performance", so a search for
/// `performance` over N documents has exactly N hits.
pub fn reference_doc(i: u64) -> Doc {
    let (topic, tag) = REFERENCE_TOPICS[(i % 5) as usize];
    let mut title = String::with_capacity(40);
    let _ = write!(title, "Doc {i} - Performance Optimization");
    let mut body = String::with_capacity(200);
    let _ = write!(
        body,
        "Document {i} is about {topic}. It shows how {topic} change the latency and the throughput of a \
         service, with measurements taken before and after each change."
    );
    Doc {
        id: i,
        title,
        body,
        tags: vec![Cow::Borrowed(tag)],
        created_at: Some(REFERENCE_START + i as i64 * 3600),
    }
}

/// The most frequent English words, in rank order; they head the realistic vocabulary.
const COMMON: &[&str] = &[
    "the", "of", "and", "to", "a", "in", "is", "it", "that", "for", "was", "on", "are", "as",
    "with", "be", "at", "by", "this", "have", "from", "or", "one", "had", "not", "but", "what",
    "all", "were", "when", "we", "there", "can", "an", "your", "which", "their", "said", "if",
    "do", "will", "each", "about", "how", "up", "out", "them", "then", "she", "many", "some", "so",
    "these", "would", "other", "into", "has", "more", "her", "two", "like", "him", "see", "time",
    "could", "no", "make", "than", "first", "been", "its", "who", "now", "people", "my", "made",
    "over", "did", "down", "only", "way", "find", "use", "may", "water", "long", "little", "very",
    "after", "words", "called", "just", "where", "most", "know", "get", "through", "back", "much",
    "before", "also", "around",
];
/// Domain words placed at mid ranks, so that benchmark queries match a realistic share of documents.
const DOMAIN: &[&str] = &[
    "performance",
    "search",
    "index",
    "query",
    "latency",
    "throughput",
    "cache",
    "memory",
    "database",
    "network",
    "server",
    "client",
    "storage",
    "compression",
    "benchmark",
    "request",
    "response",
    "error",
    "system",
    "data",
    "service",
    "function",
    "lambda",
    "snapshot",
    "segment",
    "document",
    "vector",
    "thread",
    "runtime",
    "python",
    "rust",
    "engine",
    "scale",
    "cluster",
    "replica",
    "stream",
    "batch",
    "event",
    "record",
    "schema",
];
const SYLLABLES: &[&str] = &[
    "ba", "be", "bi", "bo", "ca", "ce", "co", "da", "de", "di", "do", "fa", "fe", "fi", "ga", "ge",
    "go", "ha", "he", "hi", "la", "le", "li", "lo", "ma", "me", "mi", "mo", "na", "ne", "ni", "no",
    "pa", "pe", "pi", "po", "ra", "re", "ri", "ro", "sa", "se", "si", "so", "ta", "te", "ti", "to",
    "va", "ve", "vi", "tor", "ment", "tion", "ly", "er", "an", "en", "in", "on", "al", "el", "ar",
    "or", "ic", "ous", "ing", "ed", "st", "ver", "der", "ter", "per",
];
/// Words in the realistic vocabulary.
pub const VOCABULARY: usize = 40_000;
const TITLE_SKIP: usize = 100;
/// Tags of the realistic corpus, most frequent first.
pub const REALISTIC_TAGS: &[&str] = &[
    "news",
    "engineering",
    "science",
    "business",
    "health",
    "sports",
    "culture",
    "travel",
    "food",
    "politics",
    "education",
    "finance",
    "music",
    "film",
    "books",
    "games",
    "design",
    "history",
    "nature",
    "space",
    "cars",
    "fashion",
    "art",
    "law",
];
/// `created_at` of the realistic corpus spans 2025 (from 2025-01-01T00:00:00Z).
pub const REALISTIC_START: i64 = 1_735_689_600;

/// O(1) sampling from a discrete distribution (Vose's alias method): a binary search over 40k
/// cumulative weights per word would dominate generation.
struct Alias {
    prob: Vec<u32>,
    alias: Vec<u32>,
}

impl Alias {
    fn new(weights: &[f64]) -> Self {
        let n = weights.len();
        let sum: f64 = weights.iter().sum();
        let mut p: Vec<f64> = weights.iter().map(|w| w * n as f64 / sum).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| p[i] < 1.0);
        let mut prob = vec![u32::MAX; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            prob[s] = (p[s] * u32::MAX as f64) as u32;
            alias[s] = l as u32;
            p[l] -= 1.0 - p[s];
            if p[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        Alias { prob, alias }
    }

    #[inline]
    fn sample(&self, rng: &mut Rng) -> usize {
        let r = rng.next_u64();
        let i = (((r >> 32) * self.prob.len() as u64) >> 32) as usize;
        if (r as u32) < self.prob[i] {
            i
        } else {
            self.alias[i] as usize
        }
    }
}

pub(super) struct Vocab {
    pub(super) words: Vec<Box<str>>,
    body: Alias,
    title: Alias,
    tags: Alias,
}

/// The vocabulary is the same for every seed, so that a query means the same thing across corpora.
pub(super) fn vocab() -> &'static Vocab {
    static V: OnceLock<Vocab> = OnceLock::new();
    V.get_or_init(|| {
        let mut words: Vec<Box<str>> = COMMON.iter().map(|w| Box::from(*w)).collect();
        let mut seen: HashSet<Box<str>> = words.iter().cloned().collect();
        seen.extend(DOMAIN.iter().map(|w| Box::from(*w)));
        let mut rng = Rng::new(0x005E_ED0F_0A5C);
        let mut synthetic = Vec::with_capacity(VOCABULARY);
        while synthetic.len() + words.len() + DOMAIN.len() < VOCABULARY {
            let mut w = String::with_capacity(12);
            for _ in 0..2 + rng.below(3) {
                w.push_str(SYLLABLES[rng.below(SYLLABLES.len() as u64) as usize]);
            }
            let w: Box<str> = w.into();
            if seen.insert(w.clone()) {
                synthetic.push(w);
            }
        }
        // Domain words go every 40 ranks from rank 200: common enough to match, rare enough to rank.
        let mut synthetic = synthetic.into_iter();
        let mut domain = DOMAIN.iter();
        while words.len() < VOCABULARY {
            let next = if words.len() >= 200 && words.len().is_multiple_of(40) {
                domain.next().map(|w| Box::from(*w))
            } else {
                None
            };
            match next.or_else(|| synthetic.next()) {
                Some(w) => words.push(w),
                None => break,
            }
        }
        let zipf: Vec<f64> = (1..=words.len()).map(|k| 1.0 / (k as f64).powf(1.05)).collect();
        let tag_w: Vec<f64> = (1..=REALISTIC_TAGS.len()).map(|k| 1.0 / k as f64).collect();
        Vocab {
            body: Alias::new(&zipf),
            title: Alias::new(&zipf[TITLE_SKIP..]),
            tags: Alias::new(&tag_w),
            words,
        }
    })
}

/// English-like documents: Zipf-distributed words over a 40k vocabulary, sentences of 6-18
/// words, log-normal lengths (median 200 words), 1-3 tags, `created_at` within 2025. Document
/// `i` depends only on `(seed, i)`, so any range can be generated independently.
#[derive(Debug, Clone, Copy)]
pub struct Realistic {
    seed: u64,
}

impl Realistic {
    pub fn new(seed: u64) -> Self {
        vocab();
        Realistic { seed }
    }

    /// The `rank`-th most frequent word (0-based).
    pub fn word(rank: usize) -> &'static str {
        &vocab().words[rank]
    }

    pub fn doc(&self, i: u64) -> Doc {
        let v = vocab();
        let mut rng = Rng::for_item(self.seed, i);
        let mut title = String::with_capacity(64);
        for k in 0..3 + rng.below(6) {
            if k > 0 {
                title.push(' ');
            }
            push_capitalized(&mut title, &v.words[TITLE_SKIP + v.title.sample(&mut rng)]);
        }
        let words = rng.log_normal(200.0, 0.5).clamp(20.0, 2_000.0) as usize;
        let mut body = String::with_capacity(words * 7);
        let mut left = words;
        while left > 0 {
            let n = (6 + rng.below(13) as usize).min(left);
            left -= n;
            push_capitalized(&mut body, &v.words[v.body.sample(&mut rng)]);
            for _ in 1..n {
                body.push(' ');
                body.push_str(&v.words[v.body.sample(&mut rng)]);
            }
            body.push_str(if left > 0 { ". " } else { "." });
        }
        let ntags = 1 + rng.below(3) as usize;
        let mut tags: Vec<Cow<'static, str>> = Vec::with_capacity(ntags);
        for _ in 0..ntags {
            let t = REALISTIC_TAGS[v.tags.sample(&mut rng)];
            if !tags.iter().any(|x| x == t) {
                tags.push(Cow::Borrowed(t));
            }
        }
        let created_at = Some(REALISTIC_START + rng.below(365 * 86_400) as i64);
        Doc { id: i, title, body, tags, created_at }
    }
}

fn push_capitalized(out: &mut String, word: &str) {
    let mut chars = word.chars();
    if let Some(c) = chars.next() {
        out.push(c.to_ascii_uppercase());
        out.push_str(chars.as_str());
    }
}

// ---------------------------------------------------------------------------------------------
// JSONL
