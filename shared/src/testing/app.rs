//! The one harness every integration test calls a function through: a [`TestApp`] takes a request
//! and gives back a [`Reply`] holding the status, the headers and the whole body, so that a test
//! reads as "given this, calling that gives this", with no plumbing of its own.

use std::fmt;

use axum::body::{Body, HttpBody};
use axum::{BoxError, Router};
use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// A function's routes as its Lambda binary serves them, called in process (no socket). Cloning
/// is cheap: concurrent tests clone it into their tasks.
#[derive(Clone)]
pub struct TestApp(Router);

impl TestApp {
    /// `routes` (a function's `routes(state)`) behind [`crate::http::app`], as on Lambda.
    pub fn new(routes: Router) -> Self {
        TestApp(crate::http::app(routes))
    }

    /// A router that is already behind [`crate::http::app`], such as `quiver-local serve`'s.
    pub fn from_app(app: Router) -> Self {
        TestApp(app)
    }

    /// Any request, including a `lambda_http::Request` parsed from a sample event.
    pub async fn call<B>(&self, req: Request<B>) -> Reply
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let what = format!("{} {}", req.method(), req.uri());
        let res = self.0.clone().oneshot(req).await.unwrap_or_else(|e| match e {});
        let (parts, body) = res.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => panic!("reading the body of the answer to {what}: {e}"),
        };
        Reply { status: parts.status.as_u16(), headers: parts.headers, body }
    }

    /// `method uri` with `headers` and `body`; the helpers below are shorthands for it.
    pub async fn send(
        &self,
        method: &str,
        uri: impl AsRef<str>,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Reply {
        let uri = uri.as_ref();
        let mut req = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(body.into()).unwrap_or_else(|e| panic!("building {method} {uri}: {e}"));
        self.call(req).await
    }

    /// `GET uri`.
    pub async fn get(&self, uri: impl AsRef<str>) -> Reply {
        self.send("GET", uri, &[], Body::empty()).await
    }

    /// `GET uri` with request headers, e.g. `[("accept-encoding", "zstd")]`.
    pub async fn get_with(&self, uri: impl AsRef<str>, headers: &[(&str, &str)]) -> Reply {
        self.send("GET", uri, headers, Body::empty()).await
    }

    /// `POST uri` with a body of `content_type`.
    pub async fn post(
        &self,
        uri: impl AsRef<str>,
        content_type: &str,
        body: impl Into<Body>,
    ) -> Reply {
        self.send("POST", uri, &[("content-type", content_type)], body).await
    }

    /// `POST uri` with `body` as `application/json`.
    pub async fn post_json(&self, uri: impl AsRef<str>, body: &Value) -> Reply {
        self.post(uri, "application/json", body.to_string()).await
    }
}

/// What a [`TestApp`] answered. Shown with `{}`, it is the status and the body's text, for
/// assertion messages.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body as sent, still compressed if `content-encoding` says so; see [`Reply::decoded`].
    pub body: Bytes,
}

impl Reply {
    /// The (decoded) body as JSON; a body that is not JSON is a panic that shows it.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.decoded())
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {self}"))
    }

    /// The (decoded) body as text, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.decoded()).into_owned()
    }

    /// The header's first value, or `None` when it is absent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| {
            v.to_str().unwrap_or_else(|_| panic!("header {name} is not visible ASCII: {v:?}"))
        })
    }

    /// Every value of the header joined with ", " (`Server-Timing` comes as several); "" if none.
    pub fn header_all(&self, name: &str) -> String {
        let values: Vec<&str> = self
            .headers
            .get_all(name)
            .iter()
            .map(|v| {
                v.to_str().unwrap_or_else(|_| panic!("header {name} is not visible ASCII: {v:?}"))
            })
            .collect();
        values.join(", ")
    }

    /// The body as a client reads it: a `content-encoding: zstd` body decompressed, any other
    /// body as it is. Another encoding is a panic, not bytes that merely fail to parse.
    pub fn decoded(&self) -> Bytes {
        self.try_decoded().unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_decoded(&self) -> Result<Bytes, String> {
        match self.headers.get("content-encoding").map(|v| v.as_bytes()) {
            None | Some(b"identity") => Ok(self.body.clone()),
            Some(b"zstd") => zstd::stream::decode_all(&self.body[..])
                .map(Bytes::from)
                .map_err(|e| format!("a zstd body that does not decode: {e}")),
            Some(other) => Err(format!(
                "content-encoding {} is not decoded by the test harness",
                String::from_utf8_lossy(other)
            )),
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never a panic here: this runs inside failing assertions.
        match self.try_decoded() {
            Ok(body) => write!(f, "{} {}", self.status, String::from_utf8_lossy(&body)),
            Err(e) => write!(f, "{} ({e}) {}", self.status, String::from_utf8_lossy(&self.body)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A router that echoes the request's method, path and `x-echo` header, and answers with two
    /// `Server-Timing` values and, when asked for zstd, a zstd body.
    fn echo() -> TestApp {
        let handler = |req: Request<Body>| async move {
            let echo = req.headers().get("x-echo").map(|v| v.to_str().unwrap().to_string());
            let json = serde_json::json!({"method": req.method().as_str(), "path": req.uri().path(), "echo": echo});
            let mut res = http::Response::builder()
                .header("server-timing", "a;dur=1")
                .header("server-timing", "b;dur=2");
            let body = if req.headers().get("accept-encoding").is_some_and(|v| v == "zstd") {
                res = res.header("content-encoding", "zstd");
                zstd::bulk::compress(json.to_string().as_bytes(), 3).unwrap()
            } else {
                json.to_string().into_bytes()
            };
            res.body(Body::from(body)).unwrap()
        };
        TestApp::from_app(Router::new().fallback(handler))
    }

    #[tokio::test]
    async fn a_reply_holds_status_headers_and_the_decoded_body() {
        let r = echo().get_with("/x", &[("x-echo", "hi")]).await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.json(), serde_json::json!({"method": "GET", "path": "/x", "echo": "hi"}));
        assert_eq!(r.header("server-timing"), Some("a;dur=1"));
        assert_eq!(r.header_all("server-timing"), "a;dur=1, b;dur=2");
        assert_eq!((r.header("x-missing"), r.header_all("x-missing").as_str()), (None, ""));

        let z = echo().send("POST", "/y", &[("accept-encoding", "zstd")], "").await;
        assert_eq!(z.header("content-encoding"), Some("zstd"));
        assert_ne!(z.body, z.decoded(), "the body is kept as sent");
        assert_eq!(z.json()["method"], "POST");
    }

    #[test]
    #[should_panic(expected = "the body is not JSON")]
    fn a_body_that_is_not_json_is_a_panic_that_shows_it() {
        Reply { status: 500, headers: HeaderMap::new(), body: Bytes::from_static(b"oops") }.json();
    }
}
