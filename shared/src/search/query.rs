use std::path::Path;

use serde::{Deserialize, Serialize};
use tantivy::collector::{Count, TopDocs};
use tantivy::directory::MmapDirectory;
use tantivy::query::{
    BooleanQuery, ConstScoreQuery, Occur, Query, QueryParser, RangeQuery, TermQuery,
};
use tantivy::schema::document::Value;
use tantivy::schema::{Facet, Field, IndexRecordOption, TantivyDocument};
use tantivy::snippet::SnippetGenerator;
use tantivy::{DateTime, Index, IndexReader, ReloadPolicy, Searcher, Term};

use super::{
    schema, BODY, CREATED_AT, DEPENDENCY, ID, MAX_CREATED_AT_S, SNIPPET_CHARS, TAGS, TITLE,
    TITLE_BOOST,
};
use crate::error::{Error, Result, ResultExt};

/// One loaded index version: the searcher lives as long as the version is served.
pub struct IndexHandle {
    searcher: Searcher,
    parser: QueryParser,
    _reader: IndexReader,
    pub doc_count: u64,
}

/// A validated search.
#[derive(Debug, Clone)]
pub struct SearchQuery<'a> {
    pub q: &'a str,
    pub limit: usize,
    pub offset: usize,
    pub tag: Option<&'a str>,
    /// Inclusive bounds on `created_at`, seconds since the epoch.
    pub from: Option<i64>,
    pub to: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Hit {
    pub id: u64,
    pub title: String,
    pub score: f32,
    /// A fragment of `body`, HTML-escaped, with matches in `<b>…</b>`.
    pub snippet: String,
}

#[derive(Debug)]
pub struct Hits {
    /// Exact, from a `Count` collector run alongside `TopDocs`.
    pub total: u64,
    pub hits: Vec<Hit>,
}

impl IndexHandle {
    /// Opens an unpacked index with `MmapDirectory`; a schema other than ours is a 503.
    pub fn open(dir: &Path) -> Result<Self> {
        let bad = |why: String| {
            Error::unavailable(
                DEPENDENCY,
                format!("index at {} does not open: {why}", dir.display()),
            )
        };
        let mmap = MmapDirectory::open(dir).map_err(|e| bad(e.to_string()))?;
        let index = Index::open(mmap).map_err(|e| bad(e.to_string()))?;
        if index.schema() != schema() {
            return Err(bad("its schema is not the one this build expects".into()));
        }
        let reader: IndexReader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| bad(e.to_string()))?;
        let searcher = reader.searcher();
        let mut parser = QueryParser::for_index(&index, vec![TITLE, BODY]);
        parser.set_field_boost(TITLE, TITLE_BOOST);
        Ok(IndexHandle { doc_count: searcher.num_docs(), searcher, parser, _reader: reader })
    }

    /// Runs `q`, parsed leniently: a part that is not valid (an unclosed group, an unknown
    /// field) is dropped rather than refused. CPU work: call from a blocking thread
    /// when the index is large.
    pub fn search(&self, q: &SearchQuery) -> Result<Hits> {
        let (text, _ignored) = self.parser.parse_query_lenient(q.q);
        let mut filters: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if let Some(tag) = q.tag {
            let facet = Facet::from_path([tag]);
            let term = TermQuery::new(Term::from_facet(TAGS, &facet), IndexRecordOption::Basic);
            filters.push((Occur::Must, Box::new(ConstScoreQuery::new(Box::new(term), 0.0))));
        }
        if let (Some(from), Some(to)) = (q.from, q.to) {
            if from > to {
                return Ok(Hits { total: 0, hits: Vec::new() });
            }
        }
        if q.from.is_some() || q.to.is_some() {
            // Tantivy panics on a date it cannot hold; no document lies beyond the ones an
            // index holds, so a bound out there is moved to the edge.
            let bound = |s: Option<i64>| match s {
                Some(s) => std::ops::Bound::Included(Term::from_field_date(
                    CREATED_AT,
                    DateTime::from_timestamp_secs(s.clamp(-MAX_CREATED_AT_S, MAX_CREATED_AT_S)),
                )),
                None => std::ops::Bound::Unbounded,
            };
            let range = RangeQuery::new(bound(q.from), bound(q.to));
            filters.push((Occur::Must, Box::new(ConstScoreQuery::new(Box::new(range), 0.0))));
        }
        let query: Box<dyn Query> = if filters.is_empty() {
            text
        } else {
            filters.insert(0, (Occur::Must, text));
            Box::new(BooleanQuery::new(filters))
        };
        // Two passes cost less than one with both collectors: alone, `TopDocs` skips the blocks
        // that cannot reach the top (block-max WAND) and `Count` reads postings without scoring;
        // together every matching document is scored (10k reference documents: 64 µs against
        // 12 + 14 µs).
        let top = TopDocs::with_limit(q.limit.max(1)).and_offset(q.offset).order_by_score();
        let found = self.searcher.search(&*query, &top).and_then(|top| {
            let total = self.searcher.search(&*query, &Count)?;
            Ok((total, top))
        });
        let (total, top) = match found {
            Ok(found) => found,
            // `nosuchfield:*` gets past the lenient parser as "documents that have that field":
            // none do.
            Err(tantivy::TantivyError::FieldNotFound(_)) => {
                return Ok(Hits { total: 0, hits: Vec::new() })
            }
            Err(
                tantivy::TantivyError::InvalidArgument(m) | tantivy::TantivyError::SchemaError(m),
            ) => return Err(Error::bad_param("q", m)),
            Err(other) => return Err(Error::Internal(format!("searching {:?}: {other}", q.q))),
        };
        let mut snippets = SnippetGenerator::create(&self.searcher, &*query, BODY)
            .internal("building the snippet generator")?;
        snippets.set_max_num_chars(SNIPPET_CHARS);
        let mut hits = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let doc: TantivyDocument =
                self.searcher.doc(addr).internal("reading a stored document")?;
            let text = |f: Field| doc.get_first(f).and_then(|v| v.as_str()).unwrap_or("");
            let body = text(BODY);
            let snippet = snippets.snippet(body);
            let snippet = if snippet.is_empty() {
                escape_html(prefix(body, SNIPPET_CHARS))
            } else {
                snippet.to_html()
            };
            hits.push(Hit {
                id: doc.get_first(ID).and_then(|v| v.as_u64()).unwrap_or(0),
                title: text(TITLE).to_string(),
                score,
                snippet,
            });
        }
        Ok(Hits { total: total as u64, hits })
    }
}

/// The first `max` characters of `s`, cut at a word boundary when there is one.
pub(super) fn prefix(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        None => s,
        Some((end, _)) => {
            let cut = &s[..end];
            cut.rfind(' ').map(|i| &cut[..i]).unwrap_or(cut)
        }
    }
}

/// Escapes text for HTML (what Tantivy's snippets do for the fragments they highlight).
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}
