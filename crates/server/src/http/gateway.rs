//! The event gateway's registry over HTTP: event types, their schema versions and dry-run
//! compatibility checks. The rules live in `mm-gateway`; this maps them to requests and
//! statuses.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mm_gateway::{
    CompatibilityMode, CompatibilityReport, EventType, EventTypeDefinition, Gateway, LogError,
    PublishItem, PublishOptions, PutOutcome, RegistryError, SchemaRecord,
};
use mm_ingest::IngestFailure;
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::routes::{RawQuery, blocking, body_error, failure_to_error, params};
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

pub(super) fn gateway(state: &AppState) -> Result<Arc<Gateway>, ApiError> {
    state.gateway.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "gateway_unavailable",
            format!(
                "the event gateway is not running on this instance: {}",
                state
                    .gateway_unavailable
                    .as_deref()
                    .unwrap_or("it was not started")
            ),
        )
    })
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        registry_error(error)
    }
}

impl From<LogError> for ApiError {
    fn from(error: LogError) -> Self {
        log_error(error)
    }
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
        RegistryError::BuiltIn(_) => {
            ApiError::new(StatusCode::CONFLICT, "built_in_event_type", message)
        }
        RegistryError::Conflict(_) => {
            ApiError::new(StatusCode::CONFLICT, "concurrent_change", message)
        }
        RegistryError::Storage(_) | RegistryError::Corrupt { .. } => {
            ApiError::internal("event type registry", message)
        }
    }
}

/// A JSON request body, or a 400 that says what is wrong with it.
pub(super) fn json_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    what: &str,
) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| ApiError::bad_request(format!("{what}: {error}")))
}

/// The `limit` of a read: 100 when absent, from 1 to 10000.
pub(super) fn limit_param(text: Option<&str>) -> Result<usize, ApiError> {
    let limit: usize = number("limit", text, 100)?;
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request("limit: from 1 to 10000"));
    }
    Ok(limit)
}

#[utoipa::path(
    get,
    path = "/v1/event-types",
    tag = "event types",
    summary = "Every registered event type",
    responses((status = 200, description = "The event types, by name", body = EventTypeList)),
)]
pub async fn list_event_types(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let event_types = gateway(&state)?.registry.list();
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
        (status = 409, description = "The schema breaks the compatibility mode (code incompatible_schema, with violations), a fixed field changed (code immutable_field), the type is built in (code built_in_event_type), or another instance changed it at the same moment (code concurrent_change: retry)", body = ErrorBody),
        (status = 422, description = "Bad name, definition or schema (codes invalid_event_type_name, invalid_definition, invalid_schema; location says where)", body = ErrorBody),
    ),
)]
pub async fn put_event_type(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let gateway = gateway(&state)?;
    let definition: EventTypeDefinition = json_body(&body, "event type definition")?;
    let location = format!("/v1/event-types/{name}");
    let log_gateway = gateway.clone();
    let (outcome, event_type) = blocking(move || {
        let put = gateway
            .registry
            .put(&name, definition, mm_model::time::now_us());
        state
            .metrics
            .gateway_event_types
            .set(gateway.registry.len() as i64);
        Ok(put?)
    })
    .await?;
    if outcome == PutOutcome::Created {
        log_gateway.log.prepare(&event_type).await?;
    }
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
    let registered = gateway(&state)?.registry.get(&name)?;
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
    let schemas = gateway(&state)?.registry.schemas(&name)?;
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
    let schema = gateway(&state)?.registry.schema(&name, &version)?;
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
    let gateway = gateway(&state)?;
    let request: CompatibilityRequest = json_body(&body, "compatibility request")?;
    let report = gateway.compatibility(&name, &request.schema, request.compatibility_mode)?;
    Ok(Json(report).into_response())
}

/// Query parameters of `POST /v1/event-types/{name}/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PublishParams {
    /// `true`: all events are published or none (the valid ones of a failed batch are
    /// `aborted`).
    #[param(value_type = Option<bool>)]
    pub atomic: Option<String>,
}

/// A stored event with its offset in its metadata.
pub(super) fn with_offset(offset: u64, bytes: &[u8]) -> serde_json::Value {
    let mut event: serde_json::Value =
        serde_json::from_slice(bytes).unwrap_or(serde_json::Value::Null);
    if let Some(metadata) = event
        .get_mut("metadata")
        .and_then(|value| value.as_object_mut())
    {
        metadata.insert("offset".into(), serde_json::Value::from(offset));
    }
    event
}

/// Up to `limit` events of a partition from `offset`, and the next offset.
async fn read_page(
    gateway: Arc<Gateway>,
    name: String,
    partition: u32,
    offset: u64,
    limit: usize,
) -> Result<(Vec<serde_json::Value>, u64), ApiError> {
    blocking(move || {
        let (stored, next) = gateway.log.read(&name, partition, offset, limit)?;
        let events = stored
            .into_iter()
            .map(|(offset, bytes)| with_offset(offset, &bytes))
            .collect::<Vec<_>>();
        Ok((events, next))
    })
    .await
}

/// The events of a partition from `offset` as NDJSON, then each new one as it becomes
/// durable, until the client leaves or the server stops.
fn follow(
    state: &AppState,
    gateway: Arc<Gateway>,
    name: String,
    partition: u32,
    offset: u64,
    limit: usize,
) -> Response {
    let appended = gateway.log.watch();
    let shutdown = state.shutdown.subscribe();
    let stream = futures_util::stream::unfold(
        (gateway, name, offset, appended, shutdown),
        move |(gateway, name, offset, mut appended, mut shutdown)| async move {
            loop {
                // Marks what is seen before reading, so an append during the read wakes us.
                appended.borrow_and_update();
                let page = read_page(gateway.clone(), name.clone(), partition, offset, limit).await;
                let (events, next) = match page {
                    Ok(page) => page,
                    Err(_) => return None,
                };
                if !events.is_empty() {
                    let mut lines = Vec::new();
                    for event in events {
                        if serde_json::to_writer(&mut lines, &event).is_err() {
                            return None;
                        }
                        lines.push(b'\n');
                    }
                    return Some((
                        Ok::<bytes::Bytes, std::convert::Infallible>(lines.into()),
                        (gateway, name, next, appended, shutdown),
                    ));
                }
                tokio::select! {
                    changed = appended.changed() => if changed.is_err() { return None },
                    // The server is stopping: end the stream so graceful shutdown can finish.
                    _ = shutdown.wait_for(|stopping| *stopping) => return None,
                }
            }
        },
    );
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Query parameters of `GET /v1/event-types/{name}/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadParams {
    /// The partition to read (from 0).
    #[param(value_type = u32)]
    pub partition: String,
    /// The first offset to return [default: 0].
    #[param(value_type = Option<u64>)]
    pub offset: Option<String>,
    /// Events at most [default: 100, at most 10000]; per read while following.
    #[param(value_type = Option<usize>)]
    pub limit: Option<String>,
    /// `true`: answer NDJSON, one event per line, and keep the answer open, sending new events
    /// as they become durable.
    #[param(value_type = Option<bool>)]
    pub follow: Option<String>,
}

/// `GET /v1/event-types/{name}/events`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    /// The events, each with its full `metadata` (including `partition` and `offset`).
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<serde_json::Value>,
    /// Where the next read starts.
    pub next_offset: u64,
}

/// Reads a number parameter, or says which one is wrong.
pub(super) fn number<T: std::str::FromStr>(
    name: &str,
    text: Option<&str>,
    default: T,
) -> Result<T, ApiError> {
    match text {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|_| ApiError::bad_request(format!("{name}: {text:?} is not a whole number"))),
    }
}

pub(super) fn log_error(error: LogError) -> ApiError {
    let message = error.to_string();
    match error {
        LogError::Busy => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message).retry_after(1)
        }
        LogError::Storage(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            message,
        )
        .retry_after(10),
        LogError::Stopped => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message).retry_after(5)
        }
    }
}

/// `POST /v1/event-types/{name}/events`: a JSON array or NDJSON of events (gzip or zstd
/// allowed), each validated, partitioned and enriched; answered once the submitted ones are
/// durable.
#[utoipa::path(
    post,
    path = "/v1/event-types/{name}/events",
    tag = "event types",
    summary = "Publish events: 200 all submitted, 207 some failed (the rest submitted), 422 none submitted; 207/422 answer each event in input order",
    params(("name" = String, Path, description = "Event type name"), PublishParams),
    request_body(content = Vec<Object>, description = "A JSON array of events, or NDJSON; each with metadata.eid (UUID) and metadata.occurred_at (RFC 3339)", content_type = "application/json"),
    responses(
        (status = 200, description = "Every event submitted and durable"),
        (status = 207, description = "Some events failed; the others are submitted", body = Vec<PublishItem>),
        (status = 422, description = "No event submitted", body = Vec<PublishItem>),
        (status = 400, description = "Unreadable body (code unreadable_body)", body = ErrorBody),
        (status = 404, description = "No such type (code unknown_event_type)", body = ErrorBody),
        (status = 409, description = "A built-in type, whose events arrive through /v1/ingest (code built_in_event_type)", body = ErrorBody),
        (status = 413, description = "Body too large (code payload_too_large)", body = ErrorBody),
        (status = 429, description = "Too many requests in flight (code too_many_requests), with Retry-After", body = ErrorBody),
        (status = 503, description = "The event log is busy or unavailable (codes overloaded, storage_unavailable), with Retry-After", body = ErrorBody),
    ),
)]
pub async fn publish(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    query: RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let gateway = gateway(&state)?;
    let publish_params: PublishParams = params(query)?;
    let atomic = match publish_params.atomic.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "atomic: {other:?} is neither true nor false"
            )));
        }
    };
    let registered = gateway.publishable(&name)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    let mut reservation = state.budget.reservation();
    let bytes = mm_http::read_body(
        body,
        state.max_body_bytes,
        declared,
        &state.body_limits,
        &mut reservation,
    )
    .await
    .map_err(body_error)?;
    // Publishing takes one of the places ingest requests take: overload is refused alike.
    let _place = state.ingestor.try_admit().map_err(failure_to_error)?;
    let started = std::time::Instant::now();
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let flow_id = headers
        .get("x-flow-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(mm_gateway::publish::new_flow_id);
    let span = mm_gateway::publish::producer_span(&name);
    let options = PublishOptions {
        atomic,
        flow_id,
        now_us: mm_model::time::now_us(),
        trace: mm_trace::context::outgoing(
            &span,
            mm_trace::context::TraceHeaders::from_http(&headers).as_ref(),
        ),
    };
    let max_decoded = state.max_decoded_bytes;
    let preparing = span.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        let _entered = preparing.enter();
        let decoded =
            mm_ingest::decode_body(encoding.as_deref(), &bytes, max_decoded, &mut reservation)
                .map_err(|error| failure_to_error(IngestFailure::Body(error)))?;
        mm_gateway::publish::prepare(&registered, &decoded, &options).map_err(|error| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                error.to_string(),
            )
        })
    })
    .await
    .map_err(|error| ApiError::internal("publishing task", error))??;
    let mut prepared = prepared;
    let submitted = gateway
        .commit(&name, &mut prepared)
        .instrument(span)
        .await?;
    state.metrics.count_published(
        &name,
        submitted,
        prepared
            .items
            .iter()
            .filter(|item| item.publishing_status != mm_gateway::PublishingStatus::Submitted)
            .map(|item| (item.step.as_str(), item.reason)),
    );
    state
        .metrics
        .gateway_publish_seconds
        .observe(started.elapsed().as_secs_f64());
    let status = if submitted == prepared.items.len() {
        return Ok(StatusCode::OK.into_response());
    } else if submitted > 0 {
        StatusCode::MULTI_STATUS
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok((status, Json(prepared.items)).into_response())
}

/// `GET /v1/event-types/{name}/events?partition=P&offset=O&limit=N`: a partition's events in
/// order from an offset.
#[utoipa::path(
    get,
    path = "/v1/event-types/{name}/events",
    tag = "event types",
    summary = "Read a partition's events in order from an offset",
    params(("name" = String, Path, description = "Event type name"), ReadParams),
    responses(
        (status = 200, description = "The events and the next offset; with follow=true, NDJSON that stays open", body = EventPage),
        (status = 400, description = "Bad parameter (code bad_request)", body = ErrorBody),
        (status = 404, description = "No such type (code unknown_event_type)", body = ErrorBody),
    ),
)]
pub async fn read_events(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    query: RawQuery,
) -> Result<Response, ApiError> {
    let gateway = gateway(&state)?;
    let read: ReadParams = params(query)?;
    let registered = gateway.registry.get(&name)?;
    let partitions = registered.event_type.partitions;
    let partition: u32 = number("partition", Some(&read.partition), 0)?;
    if partition >= partitions {
        return Err(ApiError::bad_request(format!(
            "partition: {name:?} has partitions 0 to {}",
            partitions - 1
        )));
    }
    let offset: u64 = number("offset", read.offset.as_deref(), 0)?;
    let limit = limit_param(read.limit.as_deref())?;
    match read.follow.as_deref() {
        None | Some("false") => {}
        Some("true") => return Ok(follow(&state, gateway, name, partition, offset, limit)),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "follow: {other:?} is neither true nor false"
            )));
        }
    }
    let (events, next_offset) = read_page(gateway, name, partition, offset, limit).await?;
    Ok(Json(EventPage {
        events,
        next_offset,
    })
    .into_response())
}

#[utoipa::path(
    get,
    path = "/v1/event-types/{name}/stats",
    tag = "event types",
    summary = "An event type's publish and reject rates over the last minute, totals since start and latest rejects",
    params(("name" = String, Path, description = "Event type name")),
    responses(
        (status = 200, description = "The type's traffic", body = mm_gateway::stats::TypeStats),
        (status = 404, description = "No such type (code unknown_event_type)", body = ErrorBody),
    ),
)]
pub async fn type_stats(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let gateway = gateway(&state)?;
    gateway.registry.get(&name)?;
    Ok(Json(gateway.stats.of(&name, mm_model::time::now_us())).into_response())
}
