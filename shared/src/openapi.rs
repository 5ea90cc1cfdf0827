//! The OpenAPI 3.1 document. Each function registers its routes through `utoipa_axum::routes!`,
//! so a route and its entry come from the same `#[utoipa::path]` attribute and cannot drift;
//! `finish` adds what every operation shares: the problem+json errors and the document's info.

use utoipa::openapi::{ContentBuilder, OpenApi, PathItem, Ref, RefOr, ResponseBuilder};

use crate::error::{FieldError, Problem};

/// The content type of every error body.
pub const PROBLEM: &str = "application/problem+json";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Quiver",
        description = "A fast data API on AWS Lambda: events in PostgreSQL, Parquet snapshots queried \
                       with DuckDB, batch processing with Polars, Tantivy search and a Valkey cache. \
                       Every error is `application/problem+json` (RFC 9457).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(Problem, FieldError))
)]
struct Base;

/// Errors any operation may answer, whatever its own attribute lists.
const SHARED_ERRORS: [(&str, &str); 4] = [
    ("400", "A malformed or out-of-range parameter, header or body; the problem names it."),
    ("413", "A query string over 4 KiB, more than 32 parameters, or a body over its limit; `limit` says which."),
    ("500", "A bug; the detail is logged, never returned."),
    ("503", "A dependency (PostgreSQL, S3, a snapshot or an index) is down, slow or broken; the problem says which and why."),
];

/// Merges the functions' documents into one, with the shared info, schemas and error responses.
pub fn finish(parts: impl IntoIterator<Item = OpenApi>) -> OpenApi {
    let mut doc = <Base as utoipa::OpenApi>::openapi();
    doc.info.version = crate::VERSION.to_string();
    for part in parts {
        doc.merge(part);
    }
    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            for (status, description) in SHARED_ERRORS {
                op.responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| problem_response(description));
            }
        }
    }
    doc
}

/// A response whose body is a `Problem`.
pub fn problem_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
    RefOr::T(ResponseBuilder::new().description(description).content(PROBLEM, content).build())
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(|op| op.as_mut())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_gets_the_shared_errors() {
        let mut part = OpenApi::default();
        let op = utoipa::openapi::path::OperationBuilder::new().build();
        part.paths.paths.insert(
            "/x".into(),
            utoipa::openapi::PathItem::new(utoipa::openapi::HttpMethod::Get, op),
        );
        let doc = finish([part]);
        let responses = &doc.paths.paths["/x"].get.as_ref().unwrap().responses.responses;
        assert!(SHARED_ERRORS.iter().all(|(s, _)| responses.contains_key(*s)));
        assert!(doc.components.unwrap().schemas.contains_key("Problem"));
    }
}
