use std::borrow::Cow;
use std::collections::HashSet;
use std::io::{BufRead, Read};

use serde::Deserialize;

use super::{
    normalize_tag, Doc, MAX_CREATED_AT_S, MAX_LINE_BYTES, MAX_TAGS, MAX_TAG_CHARS, MAX_TITLE_BYTES,
};
use crate::error::{Error, FieldError, Result};

/// One JSONL document. A field it does not list is refused, as in every body the API reads.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    id: Option<u64>,
    #[serde(borrow)]
    title: Option<Cow<'a, str>>,
    #[serde(borrow)]
    body: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tags: Option<Vec<Cow<'a, str>>>,
    #[serde(default)]
    created_at: Option<serde_json::Value>,
}

fn line_error(line: u64, field: &str, problem: impl Into<String>) -> Error {
    let at =
        if field.is_empty() { format!("line {line}") } else { format!("line {line}: {field}") };
    let fe = FieldError::new(at, problem);
    Error::invalid(format!("{}: {}", fe.at, fe.problem), vec![fe])
}

/// Parses one JSONL line `{id, title, body, tags?, created_at?}`; errors name the line and field.
/// `created_at` is RFC 3339 or whole seconds since the epoch.
pub fn parse_doc(bytes: &[u8], line: u64) -> Result<Doc> {
    let l: Line = serde_json::from_slice(bytes)
        .map_err(|e| line_error(line, "", format!("not a valid document: {e}")))?;
    let id = l
        .id
        .ok_or_else(|| line_error(line, "id", "is required (a whole number from 0 to 2^64-1)"))?;
    let title = l.title.ok_or_else(|| line_error(line, "title", "is required"))?;
    if title.len() > MAX_TITLE_BYTES {
        return Err(line_error(line, "title", format!("must be at most {MAX_TITLE_BYTES} bytes")));
    }
    let body = l.body.ok_or_else(|| line_error(line, "body", "is required"))?;
    let raw_tags = l.tags.unwrap_or_default();
    if raw_tags.len() > MAX_TAGS {
        return Err(line_error(line, "tags", format!("at most {MAX_TAGS} tags")));
    }
    let mut tags = Vec::with_capacity(raw_tags.len());
    for (k, t) in raw_tags.iter().enumerate() {
        let t = normalize_tag(t).ok_or_else(|| {
            line_error(
                line,
                &format!("tags[{k}]"),
                format!("must be 1-{MAX_TAG_CHARS} of a-z 0-9 . _ + # -"),
            )
        })?;
        if !tags.iter().any(|x: &Cow<str>| x == &t) {
            tags.push(Cow::Owned(t.into_owned()));
        }
    }
    let created_at = match l.created_at {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => {
            Some(n.as_i64().filter(|s| (0..=MAX_CREATED_AT_S).contains(s)).ok_or_else(|| {
                line_error(
                    line,
                    "created_at",
                    format!("seconds must be a whole number from 0 to {MAX_CREATED_AT_S}"),
                )
            })?)
        }
        Some(serde_json::Value::String(s)) => Some(
            parse_time(&s).filter(|s| (0..=MAX_CREATED_AT_S).contains(s)).ok_or_else(|| {
                line_error(
                    line,
                    "created_at",
                    "must be RFC 3339 from 1970 to 2262, e.g. 2026-01-31T12:00:00Z",
                )
            })?,
        ),
        Some(_) => {
            return Err(line_error(
                line,
                "created_at",
                "must be an RFC 3339 string or seconds since the epoch",
            ))
        }
    };
    Ok(Doc { id, title: title.into_owned(), body: body.into_owned(), tags, created_at })
}

/// Seconds since the epoch of an RFC 3339 time or a `YYYY-MM-DD` date (midnight UTC).
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(us) = crate::time::parse_rfc3339_us(s) {
        return Some(us.div_euclid(1_000_000));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp())
}

/// Documents from JSONL, one per line (blank lines skipped), read with one reused buffer. A
/// repeated `id` is an error: the index would return both copies.
pub struct JsonlDocs<R> {
    reader: R,
    buf: Vec<u8>,
    line: u64,
    seen: HashSet<u64>,
    done: bool,
}

impl<R: BufRead> JsonlDocs<R> {
    pub fn new(reader: R) -> Self {
        JsonlDocs {
            reader,
            buf: Vec::with_capacity(4096),
            line: 0,
            seen: HashSet::new(),
            done: false,
        }
    }
}

impl<R: BufRead> Iterator for JsonlDocs<R> {
    type Item = Result<Doc>;

    fn next(&mut self) -> Option<Result<Doc>> {
        while !self.done {
            self.buf.clear();
            self.line += 1;
            let n = match (&mut self.reader)
                .take(MAX_LINE_BYTES as u64 + 1)
                .read_until(b'\n', &mut self.buf)
            {
                Ok(n) => n,
                Err(e) => {
                    self.done = true;
                    return Some(Err(Error::invalid(
                        format!("line {}: could not be read: {e}", self.line),
                        vec![],
                    )));
                }
            };
            if n == 0 {
                return None;
            }
            if self.buf.len() > MAX_LINE_BYTES && self.buf.last() != Some(&b'\n') {
                self.done = true;
                return Some(Err(Error::TooLarge { what: "JSONL line", limit: MAX_LINE_BYTES }));
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let doc = parse_doc(&self.buf, self.line).and_then(|d| {
                if self.seen.insert(d.id) {
                    Ok(d)
                } else {
                    Err(line_error(self.line, "id", format!("{} appears more than once", d.id)))
                }
            });
            self.done = doc.is_err();
            return Some(doc);
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Building
