use std::any::TypeId;
use std::collections::HashMap;
use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::sync::{OnceLock, RwLock};

use axum::extract::{FromRequestParts, MatchedPath};
use http::request::Parts;

use super::{MAX_QUERY_BYTES, MAX_QUERY_PARAMS};
use crate::error::{Error, Result};

/// The query parameters of one route, declared once. The struct derives `utoipa::IntoParams`,
/// which writes the route's OpenAPI parameters, and implements this trait, which parses them;
/// [`Query`] refuses every name the derive does not declare, so the document and the server take
/// the same names. The derive's ranges, lengths and patterns are the ones `from_params` checks
/// (`bash local/schemathesis.sh` holds the two to each other).
pub trait FromParams: utoipa::IntoParams + Sized + 'static {
    /// Every name the route takes: those its derive declares, plus those of any struct it
    /// embeds (`#[param(ignore)]`), which an embedding struct adds by overriding this.
    fn names() -> Vec<String> {
        declared::<Self>()
    }
    fn from_params(p: &Params) -> Result<Self>;
}

/// The names a `utoipa::IntoParams` derive declares.
pub fn declared<T: utoipa::IntoParams>() -> Vec<String> {
    T::into_params(|| None).into_iter().map(|p| p.name).collect()
}

/// `T::names()`, computed once per type.
fn names_of<T: FromParams>() -> &'static [String] {
    type Names = HashMap<TypeId, &'static [String]>;
    static NAMES: OnceLock<RwLock<Names>> = OnceLock::new();
    let names = NAMES.get_or_init(Default::default);
    let id = TypeId::of::<T>();
    if let Some(found) = names.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
        return found;
    }
    names
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(id)
        .or_insert_with(|| Vec::leak(T::names()))
}

/// Extracts a route's [`FromParams`] from the query string: a name the route does not declare, a
/// repeated or empty parameter and a value out of range are each a 400 naming the parameter.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: FromParams> FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self> {
        let route = parts.extensions.get::<MatchedPath>().map_or(parts.uri.path(), |m| m.as_str());
        Params::parse_as(route, parts.uri.query()).map(Query)
    }
}

/// Decoded query parameters, with typed getters whose errors name the parameter.
#[derive(Debug, Default, Clone)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses a raw query string (without `?`), enforcing length and count limits.
    pub fn parse(query: Option<&str>) -> Result<Self> {
        let q = query.unwrap_or("");
        if q.len() > MAX_QUERY_BYTES {
            return Err(Error::TooLarge { what: "query string", limit: MAX_QUERY_BYTES });
        }
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            if k.is_empty() {
                continue;
            }
            if pairs.len() == MAX_QUERY_PARAMS {
                return Err(Error::TooLarge {
                    what: "number of query parameters",
                    limit: MAX_QUERY_PARAMS,
                });
            }
            if pairs.iter().any(|(seen, _)| *seen == k) {
                return Err(Error::bad_param(&k, "is given more than once"));
            }
            if v.is_empty() {
                return Err(Error::bad_param(&k, "is empty: leave it out or give it a value"));
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(Params { pairs })
    }

    /// Parses a raw query string as `route`'s `T`, refusing a name `T` does not declare.
    pub fn parse_as<T: FromParams>(route: &str, query: Option<&str>) -> Result<T> {
        let p = Self::parse(query)?;
        let names = names_of::<T>();
        if let Some((k, _)) = p.pairs.iter().find(|(k, _)| !names.contains(k)) {
            return Err(Error::bad_param(
                k,
                format!("is not a parameter of {route}, which takes {}", names.join(", ")),
            ));
        }
        T::from_params(&p)
    }

    /// The raw value, if present (never empty: `parse` refuses an empty value).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// An RFC 3339 timestamp.
    pub fn time(&self, name: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        self.get(name)
            .map(|s| {
                crate::time::parse_rfc3339(s).ok_or_else(|| {
                    Error::bad_param(
                        name,
                        "must be an RFC 3339 timestamp, e.g. 2026-10-01T00:00:00Z",
                    )
                })
            })
            .transpose()
    }

    /// A string parameter of at most `max_len` characters.
    pub fn text(&self, name: &str, max_len: usize) -> Result<Option<&str>> {
        match self.get(name) {
            Some(v) if v.chars().count() > max_len => {
                Err(Error::bad_param(name, format!("must be at most {max_len} characters")))
            }
            other => Ok(other),
        }
    }

    /// A number within `range`; `default` when absent. Errors name the parameter and the range.
    pub fn number<T>(&self, name: &str, default: Option<T>, range: RangeInclusive<T>) -> Result<T>
    where
        T: FromStr + PartialOrd + Display + Copy,
    {
        match self.get(name) {
            None => default.ok_or_else(|| Error::bad_param(name, "is required")),
            Some(raw) => {
                // Digits, a leading minus and a decimal point only: `str::parse` also takes
                // `+5`, which is no number the document describes.
                let plain = raw.bytes().enumerate().all(|(i, b)| {
                    b.is_ascii_digit() || (i == 0 && b == b'-') || (b == b'.' && i > 0)
                });
                let v: T = raw.parse().ok().filter(|_| plain).ok_or_else(|| {
                    Error::bad_param(
                        name,
                        format!("must be a number between {} and {}", range.start(), range.end()),
                    )
                })?;
                if !range.contains(&v) {
                    return Err(Error::bad_param(
                        name,
                        format!("must be between {} and {}, got {v}", range.start(), range.end()),
                    ));
                }
                Ok(v)
            }
        }
    }

    /// An optional number within `range`.
    pub fn opt_number<T>(&self, name: &str, range: RangeInclusive<T>) -> Result<Option<T>>
    where
        T: FromStr + PartialOrd + Display + Copy,
    {
        match self.get(name) {
            None => Ok(None),
            Some(_) => self.number(name, None, range).map(Some),
        }
    }

    /// A generator seed: the document's integers are int64, so at most `i64::MAX`.
    pub fn seed(&self) -> Result<Option<u64>> {
        self.opt_number("seed", 0..=i64::MAX as u64)
    }

    /// One of a fixed set of words.
    pub fn choice<'a>(&self, name: &str, allowed: &[&'a str], default: &'a str) -> Result<&'a str> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => allowed.iter().find(|a| **a == v).copied().ok_or_else(|| {
                Error::bad_param(name, format!("must be one of {}", allowed.join(", ")))
            }),
        }
    }
}
