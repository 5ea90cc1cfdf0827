//! The OpenAPI document cannot drift from the code: every route is registered through
//! `utoipa_axum::routes!` (a plain `.route(` fails here), the copy `health` serves equals the
//! generated one, every documented operation reaches its handler in `quiver-local serve`, and the
//! document is well formed (unique operation ids, every `$ref` defined, problem+json errors).

mod common;

use std::collections::BTreeSet;

use quiver::testing::TestApp;
use serde_json::Value;

fn document() -> Value {
    serde_json::from_str(&quiver_local::serve::openapi_json()).unwrap()
}

fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if ["get", "put", "post", "delete", "patch", "head", "options", "trace"]
                .contains(&method.as_str())
            {
                ops.push((method.to_uppercase(), path.clone(), op));
            }
        }
    }
    ops
}

#[test]
fn the_served_copy_is_the_generated_document() {
    let committed =
        std::fs::read_to_string(common::repo_root().join("functions/health/openapi.json")).unwrap();
    assert!(
        committed == quiver_local::serve::openapi_json(),
        "functions/health/openapi.json is stale: run `quiver-local openapi > functions/health/openapi.json`"
    );
}

/// A route added with axum's own `.route(` would be served without an OpenAPI entry.
#[test]
fn every_route_goes_through_the_document() {
    let root = common::repo_root();
    let mut sources: Vec<_> = std::fs::read_dir(root.join("functions"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path().join("src")).unwrap())
        .map(|f| f.unwrap().path())
        .collect();
    sources.push(root.join("local/src/serve.rs"));
    for path in sources.iter().filter(|p| p.extension().is_some_and(|e| e == "rs")) {
        let text = std::fs::read_to_string(path).unwrap();
        for needle in [".route(", ".route_service(", ".nest(", "axum::routing"] {
            assert!(!text.contains(needle), "{} uses `{needle}`: register routes with utoipa_axum::routes! so they are documented", path.display());
        }
    }
}

#[test]
fn the_document_is_well_formed() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let text = doc.to_string();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &part[..part.find('"').unwrap()];
        assert!(schemas.contains_key(name), "$ref to undefined schema {name}");
    }
    let mut ids = BTreeSet::new();
    for (method, path, op) in operations(&doc) {
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
        assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
        assert!(
            op["summary"].is_string() || op["description"].is_string(),
            "{method} {path} is not described"
        );
        for status in ["400", "500", "503"] {
            if status == "503" && ["/health", "/"].contains(&path.as_str()) {
                continue; // a degraded health report is JSON, not a problem
            }
            let content = &op["responses"][status]["content"];
            assert!(
                content["application/problem+json"].is_object(),
                "{method} {path} {status} is not problem+json"
            );
        }
    }
    // The functions' routes, as the README and the SAM template list them.
    let paths: BTreeSet<&str> =
        doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    for p in [
        "/health",
        "/openapi.json",
        "/events",
        "/events/bulk",
        "/events/{user_id}",
        "/analytics/summary",
        "/analytics/funnel",
        "/analytics/compare",
        "/search",
        "/index",
        "/snapshot",
        "/process",
        "/samples/pg/benchmark",
        "/samples/pg/benchmark-all",
    ] {
        assert!(paths.contains(p), "{p} is not documented");
    }
}

/// Each documented operation, called with input its handler must refuse, answers with the
/// handler's 400/415 rather than the router's 404/405: the document describes what is served.
/// (Refused input keeps the heavy routes, bulk, snapshot and index, from doing any work.)
#[tokio::test(flavor = "multi_thread")]
async fn every_documented_operation_is_served() {
    let app = TestApp::from_app(
        quiver_local::serve::router(quiver::testing::service_config()).await.unwrap(),
    );
    for (method, path, _) in operations(&document()) {
        let uri = format!(
            "{}?count=0&size=0&limit=0&user_id=0&event_type=none",
            path.replace("{user_id}", "0")
        );
        let r = app.send(&method, &uri, &[("content-type", "text/plain")], "not json").await;
        let always_answers = ["/health", "/", "/openapi.json"].contains(&path.as_str());
        if always_answers {
            assert_eq!(r.status, 200, "{method} {uri}: {r}");
        } else {
            assert!(matches!(r.status, 400 | 415), "{method} {uri} answered {r}");
        }
    }
}
