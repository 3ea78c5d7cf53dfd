//! Handlers.

mod queries;

// A glob: `#[utoipa::path]` puts a hidden `__path_*` item beside each handler, and the OpenAPI
// document names both through this module.
pub use queries::*;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mm_ingest::BodyError;
use mm_query::Period;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::{ApiError, AppState};
use mm_ingest::{IngestAnswer, IngestFailure, IngestReply};
use mm_model::time::now_us;
use mm_telemetry::consumers::ConsumerStatus;

/// A query string as it arrived; [`params`] reads it into the endpoint's parameter struct.
pub(super) type RawQuery = Result<Query<HashMap<String, String>>, QueryRejection>;

/// Reads a query string into `T`, refusing any parameter that `T` does not document: the
/// parameters an endpoint accepts are the ones its OpenAPI description lists.
pub(super) fn params<T: IntoParams + serde::de::DeserializeOwned>(
    query: RawQuery,
) -> Result<T, ApiError> {
    let Query(map) =
        query.map_err(|rejection| ApiError::bad_request(format!("query string: {rejection}")))?;
    let allowed: Vec<String> = T::into_params(|| Some(utoipa::openapi::path::ParameterIn::Query))
        .into_iter()
        .map(|parameter| parameter.name)
        .collect();
    if let Some(unknown) = map.keys().find(|key| !allowed.contains(key)) {
        return Err(ApiError::bad_request(format!(
            "unknown parameter {unknown:?}; allowed: {}",
            allowed.join(", ")
        )));
    }
    let object = map
        .into_iter()
        .map(|(name, value)| (name, serde_json::Value::String(value)))
        .collect();
    serde_json::from_value(serde_json::Value::Object(object))
        .map_err(|error| ApiError::bad_request(format!("query string: {error}")))
}

/// A period from `from` and `to`, `default_span_us` long when `from` is absent.
pub(super) fn period(
    from: Option<&str>,
    to: Option<&str>,
    default_span_us: i64,
) -> Result<Period, ApiError> {
    Ok(Period::parse(from, to, now_us(), default_span_us)?)
}

/// A path parameter naming a merchant account.
pub(super) const MERCHANT_PATH_PARAM: &str = "Merchant account, exact name";

/// This instance's Kafka consumers.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsumersResponse {
    /// Records in flight to the broker before the repartition consumer pauses its partitions.
    pub max_in_flight: usize,
    pub consumers: Vec<ConsumerStatus>,
}

/// A new backpressure limit.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackpressureSetting {
    /// Records the repartition consumer may have on their way to the broker before it pauses
    /// its partitions.
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub max_in_flight: usize,
}

/// The backpressure limit now and before the change.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackpressureChange {
    pub max_in_flight: usize,
    pub previous: usize,
}

/// The answer of `/healthz` and `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `degraded` from `/healthz`, `ready` from `/readyz`.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// What is degraded: storage that cannot write (the disk is full, say), which the
    /// server leaves by itself once writes succeed again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Runs work that reads or writes the disk off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    // The work stays inside the request's span.
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .map_err(|error| ApiError::internal("blocking task", error))?
}

/// `POST /v1/ingest`.
#[utoipa::path(
    post,
    path = "/v1/ingest",
    tag = "ingest",
    summary = "Ingest API-call logs",
    description = "NDJSON (one JSON object per line) or a JSON array of objects; optional Content-Encoding gzip or zstd. Answers only after accepted records are durable. With an Idempotency-Key, a retry of the same request (same key, same body) within ingest.idempotency_window is answered with the first answer (header Idempotent-Replayed: true) and stores nothing again, across restarts and crashes; keys are scoped to the caller's token.",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters naming this request; send the same key when retrying it"),
    ),
    request_body(
        description = "The records",
        content(
            (String = "application/x-ndjson"),
            (Vec<Object> = "application/json"),
        ),
    ),
    responses(
        (status = 200, description = "All records accepted", body = IngestReply),
        (status = 207, description = "Some records rejected, the others accepted", body = IngestReply),
        (status = 400, description = "Unreadable or empty body, or a malformed Idempotency-Key (codes unreadable_body, empty_body, bad_idempotency_key)", body = ErrorBody),
        (status = 408, description = "The body paused longer than http.body_idle_timeout or arrived slower than http.body_min_bytes_per_second (code request_timeout)", body = ErrorBody),
        (status = 413, description = "Body over the size limit (code payload_too_large)", body = ErrorBody),
        (status = 409, description = "A request with this Idempotency-Key is in progress; see Retry-After (code idempotency_key_in_use)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before sending again"))),
        (status = 415, description = "Unsupported content encoding (code unsupported_encoding)", body = ErrorBody),
        (status = 422, description = "The Idempotency-Key was used for a different request body (code idempotency_key_reused)", body = ErrorBody),
        (status = 429, description = "Too many concurrent requests; see Retry-After (code too_many_requests)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before sending again"))),
        (status = 507, description = "The server's disk is full; nothing was stored; see Retry-After (code disk_full)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before sending again"))),
        (status = 501, description = "Cluster mode: Idempotency-Key is honoured in embedded mode only (code idempotency_unsupported)", body = ErrorBody),
        (status = 503, description = "Overloaded or storage cannot write; see Retry-After (codes overloaded, memory_bound, storage_unavailable, broker_unavailable, shutting_down)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before sending again"))),
    ),
)]
pub async fn ingest(
    State(state): State<Arc<AppState>>,
    caller: Option<axum::Extension<super::Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let refuse = |error: ApiError| {
        state.metrics.refuse(error.status.as_u16());
        error.into_response()
    };
    let key = match idempotency_key(&headers) {
        Ok(key) => key.map(|key| {
            let scope = caller
                .as_ref()
                .map_or("anonymous", |caller| caller.0.0.as_str());
            format!("{scope}:{key}")
        }),
        Err(error) => return refuse(error),
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    // The body is read whole before a place among the ingest requests is taken: a slow
    // sender holds only its connection and the memory its bytes take, and is cut off by the
    // body timeouts.
    let mut reservation = state.budget.reservation();
    let read = mm_http::read_body(
        body,
        state.max_body_bytes,
        declared,
        &state.body_limits,
        &mut reservation,
    )
    .await;
    let bytes = match read {
        Ok(bytes) => bytes,
        // The connection layer adds `Connection: close`: the rest of the body is unread.
        Err(error) => return refuse(body_error(error)),
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let outcome = state
        .ingestor
        .ingest_detached(encoding, bytes, reservation, key)
        .await;
    match outcome {
        Ok(IngestAnswer::Fresh(reply)) => {
            let status = StatusCode::from_u16(reply.status()).unwrap_or(StatusCode::OK);
            (status, Json(reply)).into_response()
        }
        Ok(IngestAnswer::Replayed { status, body }) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            [
                (header::CONTENT_TYPE, "application/json"),
                (
                    header::HeaderName::from_static("idempotent-replayed"),
                    "true",
                ),
            ],
            body.to_vec(),
        )
            .into_response(),
        Err(failure) => refuse(failure_to_error(failure)),
    }
}

/// The `Idempotency-Key` header: absent, or 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )
    };
    let text = value.to_str().map_err(|_| bad())?;
    if text.is_empty() || text.len() > 255 || !text.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(text.to_owned()))
}

pub(super) fn body_error(error: mm_http::BodyReadError) -> ApiError {
    use mm_http::BodyReadError;
    let message = error.to_string();
    match error {
        BodyReadError::TooLarge { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
        }
        BodyReadError::Stalled(_) | BodyReadError::TooSlow { .. } => {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", message)
        }
        BodyReadError::Memory(exhausted) => exhausted.into(),
        BodyReadError::Client(_) => ApiError::bad_request(message),
    }
}

pub(super) fn failure_to_error(failure: IngestFailure) -> ApiError {
    let message = failure.to_string();
    match failure {
        IngestFailure::Body(BodyError::TooLarge { .. }) => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
        }
        IngestFailure::Body(BodyError::Memory(exhausted)) => exhausted.into(),
        IngestFailure::Body(BodyError::UnsupportedEncoding(_)) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            message,
        ),
        IngestFailure::Body(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "unreadable_body", message)
        }
        IngestFailure::Empty => ApiError::new(StatusCode::BAD_REQUEST, "empty_body", message),
        IngestFailure::TooManyRequests => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message)
                .retry_after(1)
        }
        IngestFailure::Overloaded | IngestFailure::BrokerBusy | IngestFailure::ArchiveBehind => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message).retry_after(1)
        }
        IngestFailure::Broker(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker_unavailable",
            message,
        )
        .retry_after(5),
        IngestFailure::Closed => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message).retry_after(5)
        }
        IngestFailure::StorageUnavailable {
            disk_full: true, ..
        } => ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "disk_full", message).retry_after(10),
        IngestFailure::StorageUnavailable { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            message,
        )
        .retry_after(10),
        IngestFailure::Storage(detail) => ApiError::internal("ingest", detail),
        IngestFailure::Aborted => ApiError::internal("ingest", message),
        IngestFailure::KeyInProgress => {
            ApiError::new(StatusCode::CONFLICT, "idempotency_key_in_use", message).retry_after(1)
        }
        IngestFailure::KeyConflict => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            message,
        ),
        IngestFailure::KeysUnsupported => ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "idempotency_unsupported",
            message,
        ),
    }
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "Text exposition", body = String,
            content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
    ),
)]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    if let Some(storage) = &state.storage {
        let writable = storage.writable();
        state.metrics.storage_writable.set(i64::from(writable));
        state
            .metrics
            .storage_disk_full
            .set(i64::from(!writable && storage.disk_full()));
    }
    // The store counts its reopens; the counter follows it.
    let reopens = &state.metrics.storage_store_reopens;
    reopens.inc_by(state.store.reopens().saturating_sub(reopens.get()));
    state
        .metrics
        .http_request_memory_bytes
        .set(state.budget.used() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /healthz`: the process is up and its pipeline runs.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Liveness",
    description = "200 while the pipeline runs: `ok`, or `degraded` with a detail while storage cannot write (a state the server leaves by itself; restarting does not help). 503 once a pipeline thread has failed: restarting does help.",
    responses(
        (status = 200, description = "Up (ok or degraded)", body = Health),
        (status = 503, description = "A pipeline thread failed (code pipeline_failed)", body = ErrorBody),
    ),
)]
pub async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    if !state.healthy.load(std::sync::atomic::Ordering::Acquire) {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "pipeline_failed",
            "a pipeline thread failed; see the server log",
        )
        .into_response();
    }
    let detail = state.storage_problem().map(|(_, message)| message);
    Json(Health {
        status: if detail.is_some() { "degraded" } else { "ok" },
        detail,
    })
    .into_response()
}

/// `GET /readyz`: recovery is done and the pipeline is running.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "Readiness",
    description = "Ready once recovery is done, the pipeline is running and storage takes writes (on one machine: ingest would succeed; in cluster mode: the replica store that queries read is current).",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready (codes not_ready, disk_full, storage_unavailable)", body = ErrorBody),
    ),
)]
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if !state.is_ready() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the pipeline is not running",
        )
        .into_response();
    }
    if let Some((code, message)) = state.storage_problem() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message).into_response();
    }
    Json(Health {
        status: "ready",
        detail: None,
    })
    .into_response()
}

/// A path segment as text; one that is not valid UTF-8 (or otherwise unreadable) is refused
/// in the JSON error shape like every other bad request.
#[derive(Debug)]
pub struct PathText(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathText {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::bad_request(format!(
                "path: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// A route that exists, called with a method it does not answer.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not answer that method; see /openapi.json",
    )
}

/// Anything else.
pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see /openapi.json",
    )
}

/// `GET /v1/admin/consumers`: cluster mode's consumers on this instance: per partition the
/// position, the last committed offset, the end of the partition and the lag.
#[utoipa::path(
    get,
    path = "/v1/admin/consumers",
    tag = "admin",
    summary = "Cluster mode: this instance's Kafka consumers, per partition position, committed offset, end and lag",
    responses(
        (status = 200, description = "Consumers", body = ConsumersResponse),
        (status = 404, description = "Embedded mode (code not_cluster_mode)", body = ErrorBody),
    ),
)]
pub async fn consumers(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let cluster = cluster_of(&state)?;
    Ok(Json(ConsumersResponse {
        max_in_flight: cluster.max_in_flight(),
        consumers: cluster.snapshot(),
    })
    .into_response())
}

/// `PUT /v1/admin/backpressure` with `{"max_in_flight": N}`: how many records the repartition
/// consumer may have on their way to the broker before it pauses its partitions.
#[utoipa::path(
    put,
    path = "/v1/admin/backpressure",
    tag = "admin",
    summary = "Cluster mode: records in flight to the broker before the repartition consumer pauses its partitions",
    request_body = BackpressureSetting,
    responses(
        (status = 200, description = "The new and the previous limit", body = BackpressureChange),
        (status = 400, description = "Bad value (code bad_request)", body = ErrorBody),
        (status = 404, description = "Embedded mode (code not_cluster_mode)", body = ErrorBody),
    ),
)]
pub async fn set_backpressure(
    State(state): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let cluster = cluster_of(&state)?;
    let setting: BackpressureSetting = serde_json::from_slice(&body).map_err(|error| {
        ApiError::bad_request(format!(
            "expected {{\"max_in_flight\": N}} with N from 1 to 10000000: {error}"
        ))
    })?;
    if !(1..=10_000_000).contains(&setting.max_in_flight) {
        return Err(ApiError::bad_request(
            "max_in_flight must be from 1 to 10000000",
        ));
    }
    let previous = cluster
        .max_in_flight
        .swap(setting.max_in_flight, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        previous,
        now = setting.max_in_flight,
        "backpressure limit changed"
    );
    Ok(Json(BackpressureChange {
        max_in_flight: setting.max_in_flight,
        previous,
    })
    .into_response())
}

fn cluster_of(state: &AppState) -> Result<Arc<mm_telemetry::consumers::ClusterStatus>, ApiError> {
    state.cluster.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_cluster_mode",
            "this instance runs in embedded mode: it has no Kafka consumers",
        )
    })
}
