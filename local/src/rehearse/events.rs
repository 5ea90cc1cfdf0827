//! What the rehearsal sends: one valid request per operation of the OpenAPI document, in the order
//! a new deployment sees traffic, and the events Lambda wraps them in (an HTTP API payload 2.0
//! event, a Function URL event, an EventBridge scheduled event).

use base64::Engine;
use serde_json::{json, Value};

/// One step of the script.
pub enum Step {
    /// An HTTP request to the operation `route` (`"GET /events/{user_id}"`, as the OpenAPI document
    /// and the HTTP API's route key write it).
    Http(Request),
    /// The EventBridge rule of a scheduled function fires.
    Schedule(&'static str),
    /// The deploy's migration step: a one-off invocation of `snapshot` with [`migrate_event`]
    /// (README, "Migrations"); without `snapshot` in the run, the same step runs in process.
    Migrate,
}

/// A request with valid input.
pub struct Request {
    pub route: &'static str,
    /// The concrete path and query, e.g. `/events/42?limit=10`.
    pub target: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<String>,
}

fn http(route: &'static str, target: &str) -> Step {
    Step::Http(Request { route, target: target.into(), headers: vec![], body: None })
}

fn post(
    route: &'static str,
    target: &str,
    content_type: &str,
    body: &str,
    headers: &[(&'static str, &str)],
) -> Step {
    let mut all = vec![("content-type", content_type.to_string())];
    all.extend(headers.iter().map(|(k, v)| (*k, v.to_string())));
    Step::Http(Request { route, target: target.into(), headers: all, body: Some(body.into()) })
}

/// The script, in the order a new deployment sees it: the first scheduled runs on an empty
/// database, then ingest, exports and index builds, then the readers. `pass` tells apart the
/// writes of two passes over the same database.
pub fn script(pass: &str) -> Vec<Step> {
    let events = r#"[{"user_id":42,"event_type":"page_view","page_url":"/pricing","metadata":{"duration_ms":1200,"browser":"firefox"}},{"user_id":42,"event_type":"click","page_url":"/pricing"},{"user_id":42,"event_type":"conversion","page_url":"/checkout"}]"#;
    let ndjson = "{\"user_id\":43,\"event_type\":\"page_view\",\"page_url\":\"/docs\"}\n{\"user_id\":43,\"event_type\":\"click\",\"page_url\":\"/docs\"}\n";
    let batch = r#"{"batch_id":"rehearsal","data":[{"id":1,"timestamp":"2026-10-01T12:00:00Z","category":"ALPHA","value":12.5,"tags":["web","prod"]},{"id":2,"timestamp":1790856000,"category":"BRAVO","value":250,"tags":["api"]}]}"#;
    vec![
        // The deploy runs the migration step before any traffic is expected.
        Step::Migrate,
        http("GET /health", "/health"),
        http("GET /", "/"),
        http("GET /openapi.json", "/openapi.json"),
        // The schedule fires before anyone has written an event.
        Step::Schedule("snapshot"),
        Step::Schedule("indexer"),
        post(
            "POST /events",
            "/events",
            "application/json",
            events,
            &[("idempotency-key", &format!("rehearsal-{pass}-1"))],
        ),
        post("POST /events", "/events", "application/x-ndjson", ndjson, &[]),
        http("GET /events/{user_id}", "/events/42?limit=10"),
        http("POST /events/bulk", "/events/bulk?count=2000&seed=7"),
        http("POST /snapshot", "/snapshot"),
        Step::Schedule("snapshot"),
        http("GET /analytics/summary", "/analytics/summary"),
        http("GET /analytics/summary", "/analytics/summary?source=postgres&event_type=click"),
        http("GET /analytics/funnel", "/analytics/funnel"),
        http("GET /analytics/compare", "/analytics/compare"),
        http("POST /index", "/index?corpus=reference&docs=500&seed=3"),
        http("GET /search", "/search?q=performance&limit=5"),
        http("GET /process", "/process?size=1000&seed=7"),
        post("POST /process", "/process", "application/json", batch, &[]),
        http("GET /samples/pg/benchmark", "/samples/pg/benchmark?user_id=42&limit=10&runs=2"),
        http("GET /samples/pg/benchmark-all", "/samples/pg/benchmark-all?user_id=42&limit=10"),
        // Warm instances: the same reads again, now from the cache.
        http("GET /analytics/summary", "/analytics/summary"),
        http("GET /search", "/search?q=performance&limit=5"),
    ]
}

/// Content types Lambda and API Gateway pass as text; any other body arrives base64-encoded.
fn is_text(content_type: &str) -> bool {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    ct.starts_with("text/")
        || ["application/json", "application/javascript", "application/xml", "application/yaml"]
            .contains(&ct)
}

/// How the request reaches the function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    /// Through the HTTP API, whose route matched.
    Api,
    /// Through the function's own URL.
    FunctionUrl,
}

impl std::fmt::Display for Door {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Door::Api => "HTTP API",
            Door::FunctionUrl => "Function URL",
        })
    }
}

/// The payload 2.0 event Lambda receives for `req`, through `door`, signed by an IAM caller.
pub fn http_event(req: &Request, door: Door, n: u64) -> Value {
    let (method, route_path) = req.route.split_once(' ').expect("a route is METHOD /path");
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let (api_id, domain) = match door {
        Door::Api => ("a1b2c3d4e5", "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com".to_string()),
        Door::FunctionUrl => ("urlid12345", "urlid12345.lambda-url.us-east-1.on.aws".to_string()),
    };
    let mut headers = serde_json::Map::new();
    for (k, v) in [
        ("accept", "*/*".to_string()),
        ("accept-encoding", "gzip, deflate, br, zstd".to_string()),
        ("host", domain.clone()),
        ("user-agent", "awscurl/0.36".to_string()),
        ("x-amz-date", "20261129T120000Z".to_string()),
        ("x-amz-security-token", "IQoJb3JpZ2luX2VjEXAMPLE".to_string()),
        ("x-amzn-trace-id", format!("Root=1-6749a000-{n:024x}")),
        ("x-forwarded-for", "203.0.113.7".to_string()),
        ("x-forwarded-port", "443".to_string()),
        ("x-forwarded-proto", "https".to_string()),
    ] {
        headers.insert(k.into(), v.into());
    }
    for (k, v) in &req.headers {
        headers.insert((*k).into(), v.clone().into());
    }
    let content_type = req
        .headers
        .iter()
        .find(|(k, _)| *k == "content-type")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let (body, encoded) = match &req.body {
        Some(b) if is_text(content_type) => (Value::from(b.clone()), false),
        Some(b) => (Value::from(base64::engine::general_purpose::STANDARD.encode(b)), true),
        None => (Value::Null, false),
    };
    if let Some(b) = &req.body {
        headers.insert("content-length".into(), b.len().to_string().into());
    }
    let mut query_params = serde_json::Map::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        // Repeated keys arrive joined with commas.
        let joined = match query_params.get(k.as_ref()).and_then(Value::as_str) {
            Some(prev) => format!("{prev},{v}"),
            None => v.into_owned(),
        };
        query_params.insert(k.into_owned(), joined.into());
    }
    let path_params = path_parameters(route_path, path);
    let route_key = match door {
        Door::Api => req.route.to_string(),
        Door::FunctionUrl => "$default".to_string(),
    };
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": api_id,
            "authorizer": {"iam": {
                "accessKey": "ASIAEXAMPLEREHEARSAL",
                "accountId": "123456789012",
                "callerId": "AROAEXAMPLE:rehearsal",
                "principalOrgId": null,
                "userArn": "arn:aws:sts::123456789012:assumed-role/quiver-client/rehearsal",
                "userId": "AROAEXAMPLE:rehearsal"
            }},
            "domainName": domain,
            "domainPrefix": api_id,
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7", "userAgent": "awscurl/0.36"},
            "requestId": format!("rehearsal-{n}"),
            "routeKey": route_key,
            "stage": "$default",
            "time": "29/Nov/2026:12:00:00 +0000",
            "timeEpoch": 1795953600000u64
        },
        "isBase64Encoded": encoded
    });
    if !query_params.is_empty() {
        event["queryStringParameters"] = query_params.into();
    }
    if door == Door::Api && !path_params.is_empty() {
        event["pathParameters"] = path_params.into();
    }
    if !body.is_null() {
        event["body"] = body;
    }
    event
}

/// `{user_id}` in `route` matched against the concrete `path`.
fn path_parameters(route: &str, path: &str) -> serde_json::Map<String, Value> {
    route
        .split('/')
        .zip(path.split('/'))
        .filter_map(|(r, p)| {
            Some((r.strip_prefix('{')?.strip_suffix('}')?.to_string(), Value::from(p)))
        })
        .collect()
}

/// The event an EventBridge schedule rule sends.
/// The one-off event of the deploy's migration step, exactly as the stack's MigrateCommand sends it.
pub fn migrate_event() -> Value {
    json!({"detail-type": "quiver.migrate"})
}

pub fn scheduled_event(function: &str, n: u64) -> Value {
    json!({
        "version": "0",
        "id": format!("00000000-0000-4000-8000-{n:012}"),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-11-29T12:00:00Z",
        "region": "us-east-1",
        "resources": [format!("arn:aws:events:us-east-1:123456789012:rule/quiver-{function}-Schedule")],
        "detail": {}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_events_carry_the_route_and_its_path_parameters_and_url_events_do_not() {
        let req = Request {
            route: "GET /events/{user_id}",
            target: "/events/42?limit=10&x=a&x=b".into(),
            headers: vec![],
            body: None,
        };
        let api = http_event(&req, Door::Api, 1);
        assert_eq!(api["routeKey"], "GET /events/{user_id}");
        assert_eq!(api["pathParameters"]["user_id"], "42");
        assert_eq!(api["queryStringParameters"]["x"], "a,b");
        assert_eq!(api["rawQueryString"], "limit=10&x=a&x=b");
        let url = http_event(&req, Door::FunctionUrl, 2);
        assert_eq!(url["routeKey"], "$default");
        assert!(url.get("pathParameters").is_none());
        assert!(url["requestContext"]["domainName"].as_str().unwrap().contains(".lambda-url."));
    }

    #[test]
    fn a_body_that_is_not_text_arrives_base64_encoded() {
        let Step::Http(ndjson) =
            post("POST /events", "/events", "application/x-ndjson", "{}\n", &[])
        else {
            unreachable!()
        };
        let e = http_event(&ndjson, Door::Api, 1);
        assert_eq!(e["isBase64Encoded"], true);
        assert_eq!(e["body"], "e30K");
        let Step::Http(json) =
            post("POST /events", "/events", "application/json; charset=utf-8", "{}", &[])
        else {
            unreachable!()
        };
        assert_eq!(http_event(&json, Door::FunctionUrl, 1)["body"], "{}");
    }
}

/// Issue 29, item 11: the largest body each route takes through Lambda, whose synchronous
/// payload limit (6,291,456 bytes) counts the whole event: the body as it arrives (JSON text
/// escaped inside the event's `body` string, anything else base64), plus the envelope.
#[cfg(test)]
mod payload_limits {
    use super::{http_event, Door, Request};

    /// Lambda's limit on a synchronous invocation's request payload.
    const LAMBDA_PAYLOAD_BYTES: usize = 6_291_456;

    /// The largest body of whole `item`s (joined by `sep`, inside `open`…`close`) whose event,
    /// through either door, fits the limit.
    fn largest(
        route: &'static str,
        ct: &str,
        open: &str,
        item: &str,
        sep: &str,
        close: &str,
    ) -> usize {
        let body = |n: usize| format!("{open}{}{close}", vec![item; n].join(sep));
        let fits = |n: usize| {
            let req = Request {
                route,
                target: route.split_once(' ').unwrap().1.to_string(),
                headers: vec![
                    ("content-type", ct.to_string()),
                    ("idempotency-key", "k".repeat(64)),
                ],
                body: Some(body(n)),
            };
            [Door::Api, Door::FunctionUrl].iter().all(|&door| {
                serde_json::to_vec(&http_event(&req, door, 1)).unwrap().len()
                    <= LAMBDA_PAYLOAD_BYTES
            })
        };
        let (mut lo, mut hi) = (1, LAMBDA_PAYLOAD_BYTES / item.len() + 1);
        while lo + 1 < hi {
            let mid = (lo + hi) / 2;
            if fits(mid) {
                lo = mid
            } else {
                hi = mid
            }
        }
        body(lo).len()
    }

    /// The figures the README and the OpenAPI document quote ("Request bodies through Lambda").
    #[test]
    fn each_body_route_takes_what_the_documents_say() {
        let event = r#"{"user_id":42,"event_type":"page_view","page_url":"/pricing","metadata":{"duration_ms":1200,"browser":"firefox"},"created_at":"2026-11-24T10:00:00Z"}"#;
        let json = largest("POST /events", "application/json", "[", event, ",", "]");
        let ndjson = largest("POST /events", "application/x-ndjson", "", event, "\n", "\n");
        let point = r#"{"id":1,"timestamp":"2026-10-01T12:00:00Z","category":"ALPHA","value":12.5,"tags":["web","prod"]}"#;
        let process = largest(
            "POST /process",
            "application/json",
            r#"{"batch_id":"b","data":["#,
            point,
            ",",
            "]}",
        );
        let doc = r#"{"id":1,"title":"Query planning in DuckDB","body":"A cost-based optimizer picks the join order from the statistics it keeps per column.","tags":["databases"],"created_at":"2026-10-01"}"#;
        let index = largest("POST /index", "application/x-ndjson", "", doc, "\n", "\n");
        eprintln!("largest bodies through Lambda: POST /events JSON {json}, NDJSON {ndjson}; POST /process {process}; POST /index NDJSON {index}");
        // JSON arrives as text, its quotes escaped in the event: about 5.5 MB of events.
        assert!((5_300_000..5_600_000).contains(&json), "{json}");
        // NDJSON arrives base64-encoded: three quarters of the limit, about 4.7 MB.
        assert!((4_700_000..4_720_000).contains(&ndjson), "{ndjson}");
        assert!((4_700_000..4_720_000).contains(&index), "{index}");
        assert!((5_000_000..5_600_000).contains(&process), "{process}");
    }
}
