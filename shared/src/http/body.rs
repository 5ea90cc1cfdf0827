use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;

use crate::error::{Error, Result};

/// Reads a whole body, refusing anything larger than `limit` with a 413 that states the limit.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes> {
    if let Some(len) =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
    {
        if len > limit {
            return Err(Error::TooLarge { what: "request body", limit });
        }
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Error::TooLarge { what: "request body", limit })
        }
        Err(e) => Err(Error::invalid(format!("could not read the request body: {e}"), vec![])),
    }
}

/// Parses a JSON body; the error says where it broke (serde_json also caps nesting at 128).
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::invalid(
            "the request body is empty; a JSON document was expected",
            vec![],
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        Error::invalid(format!("the body is not valid JSON for this route: {e}"), vec![])
    })
}

/// A JSON response with a known content type.
pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut res = (status, body).into_response();
            res.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            res
        }
        Err(e) => Error::Internal(format!("serializing a response: {e}")).into_response(),
    }
}
