use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;

use super::{MAX_QUERY_BYTES, MAX_QUERY_PARAMS};
use crate::error::{Error, Result};

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
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(Params { pairs })
    }

    /// Refuses a parameter that `route` does not take, naming it and the ones it does.
    pub fn only(self, route: &str, allowed: &[&str]) -> Result<Self> {
        match self.pairs.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            Some((k, _)) => Err(Error::bad_param(
                k,
                format!("is not a parameter of {route} (use {})", allowed.join(", ")),
            )),
            None => Ok(self),
        }
    }

    pub fn from_uri(uri: &http::Uri) -> Result<Self> {
        Self::parse(uri.query())
    }

    /// The raw value, if present and non-empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
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
                let v: T = raw.trim().parse().map_err(|_| {
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
