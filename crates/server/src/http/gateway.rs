//! The event gateway's registry over HTTP: event types, their schema versions and dry-run
//! compatibility checks. The rules live in `mm-gateway`; this maps them to requests and
//! statuses.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use mm_gateway::{
    CompatibilityMode, CompatibilityReport, EventType, EventTypeDefinition, PutOutcome, Registry,
    RegistryError, SchemaRecord,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::{ApiError, AppState};

/// `GET /v1/event-types`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventTypeList {
    pub event_types: Vec<EventType>,
}

/// `GET /v1/event-types/{name}/schemas`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchemaList {
    /// Newest first.
    pub schemas: Vec<SchemaRecord>,
}

/// The body of `POST /v1/event-types/{name}/compatibility`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompatibilityRequest {
    /// The candidate schema.
    #[schema(value_type = Object)]
    pub schema: serde_json::Value,
    /// Check under this mode instead of the type's own.
    #[serde(default)]
    pub compatibility_mode: Option<CompatibilityMode>,
}

fn registry(state: &AppState) -> Result<Arc<Registry>, ApiError> {
    state.registry.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_in_cluster_mode",
            "the event gateway runs in embedded mode only so far; cluster mode will share its registry through a compacted topic",
        )
    })
}

fn registry_error(error: RegistryError) -> ApiError {
    let message = error.to_string();
    match error {
        RegistryError::UnknownType(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_event_type", message)
        }
        RegistryError::UnknownVersion { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_schema_version", message)
        }
        RegistryError::InvalidName(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_event_type_name",
            message,
        ),
        RegistryError::InvalidDefinition { field, .. } => ApiError {
            location: Some(format!("#/{field}")),
            ..ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_definition",
                message,
            )
        },
        // The schema is the body's `schema` field in both requests that carry one.
        RegistryError::InvalidSchema(invalid) => ApiError {
            location: Some(format!(
                "#/schema{}",
                invalid.location.trim_start_matches('#')
            )),
            ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_schema", message)
        },
        RegistryError::Incompatible { violations, .. } => ApiError {
            violations: Some(violations),
            ..ApiError::new(StatusCode::CONFLICT, "incompatible_schema", message)
        },
        RegistryError::Fixed { field, .. } => ApiError {
            location: Some(format!("#/{field}")),
            ..ApiError::new(StatusCode::CONFLICT, "immutable_field", message)
        },
        RegistryError::Storage(_) | RegistryError::Corrupt { .. } => {
            ApiError::internal("event type registry", message)
        }
    }
}

/// A JSON request body, or a 400 that says what is wrong with it.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| ApiError::bad_request(format!("{what}: {error}")))
}

/// Runs registry work (it may write to disk) off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ApiError::internal("event type registry task", error))?
        .map_err(registry_error)
}

#[utoipa::path(
    get,
    path = "/v1/event-types",
    tag = "event types",
    summary = "Every registered event type",
    responses((status = 200, description = "The event types, by name", body = EventTypeList)),
)]
pub async fn list_event_types(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let event_types = registry(&state)?.list();
    Ok(Json(EventTypeList { event_types }).into_response())
}

/// `PUT /v1/event-types/{name}`: creates the type, or evolves its schema under its
/// compatibility mode.
#[utoipa::path(
    put,
    path = "/v1/event-types/{name}",
    tag = "event types",
    summary = "Create an event type (201) or evolve it (200, with a new schema version when the schema changed)",
    params(("name" = String, Path, description = "Dot-separated name, e.g. order.refund-requested")),
    request_body = EventTypeDefinition,
    responses(
        (status = 201, description = "Created at version 1.0.0", body = EventType),
        (status = 200, description = "Evolved (or unchanged)", body = EventType),
        (status = 400, description = "Unreadable body (code bad_request)", body = ErrorBody),
        (status = 409, description = "The schema breaks the compatibility mode (code incompatible_schema, with violations), or a fixed field changed (code immutable_field)", body = ErrorBody),
        (status = 422, description = "Bad name, definition or schema (codes invalid_event_type_name, invalid_definition, invalid_schema; location says where)", body = ErrorBody),
    ),
)]
pub async fn put_event_type(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let registry = registry(&state)?;
    let definition: EventTypeDefinition = json_body(&body, "event type definition")?;
    let location = format!("/v1/event-types/{name}");
    let (outcome, event_type) =
        blocking(move || registry.put(&name, definition, mm_model::time::now_us())).await?;
    let status = match outcome {
        PutOutcome::Created => StatusCode::CREATED,
        PutOutcome::Evolved | PutOutcome::Unchanged => StatusCode::OK,
    };
    Ok((status, [(header::LOCATION, location)], Json(event_type)).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/event-types/{name}",
    tag = "event types",
    summary = "An event type as registered, with its current version",
    params(("name" = String, Path, description = "Event type name")),
    responses(
        (status = 200, description = "The event type", body = EventType),
        (status = 404, description = "No such type (code unknown_event_type)", body = ErrorBody),
    ),
)]
pub async fn get_event_type(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let registered = registry(&state)?.get(&name).map_err(registry_error)?;
    Ok(Json(registered.event_type.clone()).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/event-types/{name}/schemas",
    tag = "event types",
    summary = "Every schema version of an event type, newest first",
    params(("name" = String, Path, description = "Event type name")),
    responses(
        (status = 200, description = "The schemas", body = SchemaList),
        (status = 404, description = "No such type (code unknown_event_type)", body = ErrorBody),
    ),
)]
pub async fn list_schemas(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let schemas = registry(&state)?.schemas(&name).map_err(registry_error)?;
    Ok(Json(SchemaList { schemas }).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/event-types/{name}/schemas/{version}",
    tag = "event types",
    summary = "One schema version of an event type",
    params(
        ("name" = String, Path, description = "Event type name"),
        ("version" = String, Path, description = "A version such as 1.2.0"),
    ),
    responses(
        (status = 200, description = "The schema", body = SchemaRecord),
        (status = 404, description = "No such type or version (codes unknown_event_type, unknown_schema_version)", body = ErrorBody),
    ),
)]
pub async fn get_schema(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let schema = registry(&state)?
        .schema(&name, &version)
        .map_err(registry_error)?;
    Ok(Json(schema).into_response())
}

/// `POST /v1/event-types/{name}/compatibility`: would this schema be accepted, as which
/// version, and what would it break?
#[utoipa::path(
    post,
    path = "/v1/event-types/{name}/compatibility",
    tag = "event types",
    summary = "Dry run: check a candidate schema against the type's versions (under its mode, or another)",
    params(("name" = String, Path, description = "Event type name")),
    request_body = CompatibilityRequest,
    responses(
        (status = 200, description = "The verdict, the version it would get and every violation", body = CompatibilityReport),
        (status = 400, description = "Unreadable body (code bad_request)", body = ErrorBody),
        (status = 404, description = "No such type (code unknown_event_type)", body = ErrorBody),
        (status = 422, description = "The candidate is not valid JSON Schema (code invalid_schema; location says where)", body = ErrorBody),
    ),
)]
pub async fn check_compatibility(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let registry = registry(&state)?;
    let request: CompatibilityRequest = json_body(&body, "compatibility request")?;
    let report = registry
        .compatibility(&name, &request.schema, request.compatibility_mode)
        .map_err(registry_error)?;
    Ok(Json(report).into_response())
}
