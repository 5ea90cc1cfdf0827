//! One error type for every function. It renders as `application/problem+json` (RFC 9457), so a
//! client mistake is a 4xx that names the parameter, and a dependency that is down is a 503 with a
//! reason. Internal details (SQL, stack traces, connection strings) are logged, never returned.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;

/// One problem in a request, pointing at the parameter, line or index it concerns.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    /// Where: a parameter name, `[3].user_id` or `line 7: event_type`.
    pub at: String,
    pub problem: String,
}

impl FieldError {
    pub fn new(at: impl Into<String>, problem: impl Into<String>) -> Self {
        FieldError { at: at.into(), problem: problem.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400: malformed or out-of-range input.
    #[error("{detail}")]
    BadRequest { param: Option<String>, detail: String, errors: Vec<FieldError> },
    /// 404: no such route or object.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: e.g. an idempotency key reused with another body.
    #[error("{0}")]
    Conflict(String),
    /// 413: the body or the row count is over its limit.
    #[error("{what} exceeds the limit of {limit}")]
    TooLarge { what: &'static str, limit: usize },
    /// 415: a body in a content type we do not read.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 503: a dependency is down, slow or serving something broken.
    #[error("{dependency} is unavailable: {reason}")]
    Unavailable { dependency: &'static str, reason: String },
    /// 500: a bug. The message is logged; the client sees a generic line.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `.internal("what was being done")`: the one mapping of an unexpected failure (a driver, codec
/// or join error that is a bug, not the client's or a dependency's fault) to a logged 500.
pub trait ResultExt<T> {
    fn internal(self, what: &str) -> Result<T>;
}

impl<T, E: std::fmt::Display> ResultExt<T> for std::result::Result<T, E> {
    fn internal(self, what: &str) -> Result<T> {
        self.map_err(|e| Error::Internal(format!("{what}: {e}")))
    }
}

/// Runs CPU-bound `f` (DuckDB, Polars, Tantivy, JSON of megabytes) off the async executor;
/// `what` names it in the 500 if the task panics.
pub async fn blocking<T, F>(what: &str, f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await.internal(what)?
}

impl Error {
    /// A 400 about one named parameter.
    pub fn bad_param(param: &str, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Error::BadRequest {
            param: Some(param.to_string()),
            errors: vec![FieldError::new(param, detail.clone())],
            detail: format!("{param}: {detail}"),
        }
    }

    /// A 400 listing several problems (the caller truncates to a sensible number).
    pub fn invalid(detail: impl Into<String>, errors: Vec<FieldError>) -> Self {
        Error::BadRequest { param: None, detail: detail.into(), errors }
    }

    /// A 503 naming the dependency and why.
    pub fn unavailable(dependency: &'static str, reason: impl std::fmt::Display) -> Self {
        Error::Unavailable { dependency, reason: reason.to_string() }
    }

    /// For a 503, the short, fixed reason a client sees: `timeout`, `refused`, `corrupt` (a
    /// dependency served something broken: a bad manifest, checksum or bundle), `unpublished` (no
    /// snapshot or index has been published yet), `schema` (the database schema is behind the
    /// code: the migration step has not run; see [`crate::migrate`]), `memory` (a version does
    /// not fit in what the instance has left) or `unavailable`.
    /// The full reason, with host names and driver messages, goes to the log only.
    pub fn outage(&self) -> Option<&'static str> {
        let Error::Unavailable { reason, .. } = self else { return None };
        let r = reason.to_ascii_lowercase();
        let any = |words: &[&str]| words.iter().any(|w| r.contains(w));
        Some(if any(&["schema is behind"]) {
            "schema"
        } else if any(&["nothing has been published"]) {
            "unpublished"
        } else if any(&["out of memory"]) {
            "memory"
        } else if any(&["timed out", "timeout", "no answer within"]) {
            "timeout"
        } else if any(&["refused"]) {
            "refused"
        } else if any(&[
            "corrupt",
            "not a valid",
            "unusable",
            "checksum",
            "xxh3",
            "does not match",
            "lists no files",
            "could not be loaded",
            "truncated",
        ]) {
            "corrupt"
        } else {
            "unavailable"
        })
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            Error::BadRequest { .. } => "bad-request",
            Error::NotFound(_) => "not-found",
            Error::MethodNotAllowed => "method-not-allowed",
            Error::Conflict(_) => "conflict",
            Error::TooLarge { .. } => "too-large",
            Error::UnsupportedMediaType(_) => "unsupported-media-type",
            Error::Unavailable { .. } => "dependency-unavailable",
            Error::Internal(_) => "internal",
        }
    }

    /// The problem+json document. Internal errors keep their detail out of it.
    pub fn problem(&self) -> Problem {
        let status = self.status();
        let detail = match self {
            Error::Internal(_) => "an internal error occurred; it has been logged".to_string(),
            Error::Unavailable { dependency, .. } => {
                format!("{dependency} is unavailable: {}", self.outage().unwrap_or("unavailable"))
            }
            other => other.to_string(),
        };
        Problem {
            kind: format!("urn:quiver:problem:{}", self.slug()),
            title: status.canonical_reason().unwrap_or("error").to_string(),
            status: status.as_u16(),
            detail,
            param: match self {
                Error::BadRequest { param, .. } => param.clone(),
                _ => None,
            },
            errors: match self {
                Error::BadRequest { errors, .. } => errors.clone(),
                _ => Vec::new(),
            },
            limit: match self {
                Error::TooLarge { limit, .. } => Some(*limit),
                _ => None,
            },
            dependency: match self {
                Error::Unavailable { dependency, .. } => Some(dependency),
                _ => None,
            },
            reason: self.outage(),
        }
    }
}

/// RFC 9457 problem details, with Quiver's extension members.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:quiver:problem:<slug>`, e.g. `urn:quiver:problem:bad-request`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// The dependency that is down (503 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub dependency: Option<&'static str>,
    /// Why, in one fixed word (503 only): `timeout`, `refused`, `corrupt`, `unpublished`,
    /// `schema` (the migration step has not run), `memory` or `unavailable`. The
    /// details are in the log line with this response's `x-request-id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub reason: Option<&'static str>,
}

/// What a 5xx response carries for the log: the full message that its body leaves out. The
/// request's log line (`quiver::http::finish`) writes it next to the `x-request-id`.
#[derive(Debug, Clone)]
pub struct LoggedDetail {
    pub dependency: Option<&'static str>,
    pub detail: String,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let logged = match &self {
            Error::Internal(msg) => Some(LoggedDetail { dependency: None, detail: msg.clone() }),
            Error::Unavailable { dependency, reason } => {
                Some(LoggedDetail { dependency: Some(dependency), detail: reason.clone() })
            }
            other => {
                tracing::info!(status = status.as_u16(), problem = %other, "client error");
                None
            }
        };
        let body = serde_json::to_vec(&self.problem()).unwrap_or_else(|_| b"{}".to_vec());
        let mut res = (status, body).into_response();
        if let Some(l) = logged {
            res.extensions_mut().insert(l);
        }
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}

impl From<crate::config::ConfigError> for Error {
    fn from(e: crate::config::ConfigError) -> Self {
        Error::Internal(format!("configuration: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn render(e: Error) -> (StatusCode, String, serde_json::Value) {
        let res = e.into_response();
        let ct = res.headers()[header::CONTENT_TYPE].to_str().unwrap().to_string();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, ct, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn bad_param_is_400_problem_json_naming_the_param() {
        let (status, ct, body) =
            render(Error::bad_param("limit", "must be between 1 and 1000")).await;
        assert_eq!(status, 400);
        assert_eq!(ct, "application/problem+json");
        assert_eq!(body["param"], "limit");
        assert_eq!(body["status"], 400);
        assert!(body["detail"].as_str().unwrap().contains("limit"));
        assert_eq!(body["errors"][0]["at"], "limit");
    }

    /// Issue 17, item 7: a 503 names the dependency and a fixed reason; the driver's message
    /// (host names, ports) stays out of the body.
    #[tokio::test]
    async fn unavailable_is_503_with_dependency_and_a_fixed_reason() {
        for (message, reason) in [
            ("connect: error connecting to server: Connection refused (os error 111)", "refused"),
            ("list events: timed out after 5000 ms", "timeout"),
            ("GET snapshots/x/part-0.parquet: xxh3 does not match the manifest", "corrupt"),
            ("bundle /tmp/quiver/idx.tar.zst is unusable: bad header", "corrupt"),
            ("db.internal.example:5432: the database system is shutting down", "unavailable"),
            ("nothing has been published yet: snapshots/m.json does not exist", "unpublished"),
            ("version v2 could not be loaded: Out of Memory Error: failed to allocate", "memory"),
            ("the database schema is behind this code (version 2, needs 4); run `quiver-local migrate`, a timeout-free step", "schema"),
        ] {
            let (status, _, body) = render(Error::unavailable("postgres", message)).await;
            assert_eq!(status, 503);
            assert_eq!(body["dependency"], "postgres");
            assert_eq!(body["reason"], reason, "{message}");
            assert_eq!(body["detail"], format!("postgres is unavailable: {reason}"));
            assert!(!body.to_string().contains("5432") && !body.to_string().contains("/tmp"));
        }
    }

    #[tokio::test]
    async fn internal_errors_hide_their_detail() {
        let (status, _, body) = render(Error::Internal("SELECT secret FROM t".into())).await;
        assert_eq!(status, 500);
        assert!(!body.to_string().contains("SELECT"));
    }

    #[tokio::test]
    async fn too_large_reports_the_limit() {
        let (status, _, body) = render(Error::TooLarge { what: "body", limit: 6_291_456 }).await;
        assert_eq!(status, 413);
        assert_eq!(body["limit"], 6_291_456);
    }
}
