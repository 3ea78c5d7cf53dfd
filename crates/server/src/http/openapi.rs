//! The OpenAPI 3.1 document of the HTTP API, served at `/openapi.json`.
//!
//! The document is derived from the Rust types: every handler carries a `#[utoipa::path]`,
//! every body a `utoipa::ToSchema` and every query string a `utoipa::IntoParams`, so what the
//! document says is what the code does. The route table in `http/mod.rs` adds the security of
//! each operation (a bearer token, or none for the open routes).
//!
//! The dashboard's TypeScript types are generated from this document: it is committed as
//! `web/src/api/openapi.json` and `web/src/api/schema.d.ts` is generated from that file. A test
//! here fails when the committed document is stale; [`REGENERATE`] says how to bring both up
//! to date.

use axum::Json;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, ResponseBuilder};

use super::error::ErrorBody;
use super::{Access, events, gateway, routes, subscriptions};

/// The commands that rewrite the committed document and the dashboard's types from it.
pub const REGENERATE: &str = "MM_UPDATE_OPENAPI=1 cargo test -p merchant-monitor --lib openapi \
     && npm --prefix web run gen:api";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Merchant Monitor",
        description = "Per-merchant, per-API, per-minute activity from payment API logs. Errors share one shape: {\"error\":{\"code\",\"message\"}}. Send `Authorization: Bearer <token>` when the server has tokens configured."
    ),
    paths(
        routes::ingest,
        routes::merchants,
        routes::search_merchants,
        routes::activity_stream,
        events::lookup,
        routes::merchant,
        events::list,
        routes::activity,
        routes::apis,
        gateway::list_event_types,
        gateway::put_event_type,
        gateway::get_event_type,
        gateway::list_schemas,
        gateway::get_schema,
        gateway::check_compatibility,
        gateway::publish,
        gateway::read_events,
        gateway::type_stats,
        subscriptions::create,
        subscriptions::list,
        subscriptions::get,
        subscriptions::events,
        subscriptions::cursors,
        subscriptions::commit,
        routes::consumers,
        routes::set_backpressure,
        routes::metrics,
        document,
        routes::healthz,
        routes::readyz,
    ),
    components(schemas(ErrorBody, mm_model::activity::ActivityRecord)),
    modifiers(&RouteSecurity),
    security(("bearer" = []), ()),
    tags(
        (name = "ingest", description = "Sending API-call logs"),
        (name = "queries", description = "Activity, per-API tables, the merchant ranking and the live stream"),
        (name = "events", description = "Raw calls from the archive (embedded mode)"),
        (name = "event types", description = "The event gateway: event types, their schema versions, compatibility checks, publishing and reading"),
        (name = "subscriptions", description = "Consumer groups reading event types from cursors they commit"),
        (name = "admin", description = "Cluster mode: consumers and backpressure"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
struct ApiDoc;

/// The bearer-token scheme, and per operation what the route table says: open routes need no
/// token; the others may answer 401.
struct RouteSecurity;

impl utoipa::Modify for RouteSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        for route in super::routes() {
            let Some(operation) = operation_mut(openapi, route.method.as_str(), route.path) else {
                // Not documented: the route-coverage test names it.
                continue;
            };
            match route.access {
                Access::Open => operation.security = Some(Vec::new()),
                Access::Token => {
                    let unauthorized = ResponseBuilder::new()
                        .description("Missing or invalid token (code unauthorized)")
                        .content(
                            "application/json",
                            utoipa::openapi::ContentBuilder::new()
                                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                                    "ErrorBody",
                                ))))
                                .build(),
                        )
                        .build();
                    operation
                        .responses
                        .responses
                        .entry("401".to_owned())
                        .or_insert(RefOr::T(unauthorized));
                }
            }
        }
    }
}

fn operation_mut<'a>(
    openapi: &'a mut utoipa::openapi::OpenApi,
    method: &str,
    path: &str,
) -> Option<&'a mut utoipa::openapi::path::Operation> {
    let item = openapi.paths.paths.get_mut(path)?;
    match method {
        "GET" => item.get.as_mut(),
        "PUT" => item.put.as_mut(),
        "POST" => item.post.as_mut(),
        "DELETE" => item.delete.as_mut(),
        "PATCH" => item.patch.as_mut(),
        "HEAD" => item.head.as_mut(),
        "OPTIONS" => item.options.as_mut(),
        "TRACE" => item.trace.as_mut(),
        _ => None,
    }
}

/// The document.
pub fn spec() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as the committed `web/src/api/openapi.json` holds it: pretty JSON and a final
/// newline.
pub fn spec_pretty() -> String {
    let mut text = spec()
        .to_pretty_json()
        .expect("the OpenAPI document is plain data and serializes");
    text.push('\n');
    text
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi_document",
    tag = "operations",
    summary = "This document (OpenAPI 3.1)",
    responses((status = 200, description = "The OpenAPI document", body = Object)),
)]
pub async fn document() -> Response {
    Json(spec()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed copy the dashboard's types are generated from.
    fn committed_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web/src/api/openapi.json")
    }

    #[test]
    fn committed_openapi_json_matches_the_code() {
        let path = committed_path();
        let derived = spec_pretty();
        if std::env::var_os("MM_UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &derived).expect("web/src/api/openapi.json is writable");
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let first_difference = committed
            .lines()
            .zip(derived.lines())
            .position(|(committed, derived)| committed != derived)
            .unwrap_or(committed.lines().count().min(derived.lines().count()));
        assert!(
            committed == derived,
            "web/src/api/openapi.json is stale (from line {}): the API's Rust types or \
             annotations changed. Regenerate it and the dashboard's types with:\n    {REGENERATE}",
            first_difference + 1
        );
    }

    #[test]
    fn document_is_openapi_3_1() {
        let document = serde_json::to_value(spec()).expect("serializes");
        assert_eq!(document["openapi"], "3.1.0");
    }
}
