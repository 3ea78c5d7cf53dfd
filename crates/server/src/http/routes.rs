//! Handlers.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mm_gateway::BodyError;
use mm_model::time::MICROS_PER_MINUTE;
use mm_query::{ApiSort, MerchantSort, Period, Step};

use super::{ApiError, AppState};
use crate::ingest::IngestFailure;
use crate::pipeline::now_us;

/// How long a client may take to send an ingest body while holding a place in flight.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub(super) type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

pub(super) fn params(query: Params, allowed: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let Query(map) =
        query.map_err(|rejection| ApiError::bad_request(format!("query string: {rejection}")))?;
    if let Some(unknown) = map.keys().find(|key| !allowed.contains(&key.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown parameter {unknown:?}; allowed: {}",
            allowed.join(", ")
        )));
    }
    Ok(map)
}

pub(super) fn period(
    map: &HashMap<String, String>,
    default_span_us: i64,
) -> Result<Period, ApiError> {
    Ok(Period::parse(
        map.get("from").map(String::as_str),
        map.get("to").map(String::as_str),
        now_us(),
        default_span_us,
    )?)
}

/// The `limit` parameter: 1 to 1000, `default` when absent.
pub(super) fn limit_param(
    map: &HashMap<String, String>,
    default: usize,
) -> Result<usize, ApiError> {
    let Some(text) = map.get("limit") else {
        return Ok(default);
    };
    match text.parse::<usize>() {
        Ok(limit) if (1..=1000).contains(&limit) => Ok(limit),
        _ => Err(ApiError::bad_request(format!(
            "limit {text:?} must be a whole number from 1 to 1000"
        ))),
    }
}

pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ApiError::internal("query task", error))?
}

/// `POST /v1/ingest`.
pub async fn ingest(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let refuse = |error: ApiError| {
        state.metrics.refuse(error.status.as_u16());
        error.into_response()
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "request body is larger than {} bytes; send smaller batches",
                state.max_body_bytes
            ),
        )
    };
    if declared.is_some_and(|length| length > state.max_body_bytes) {
        return refuse(too_large());
    }
    // The place is taken before the body is read, so slow senders count against the limit
    // and buffered bodies stay bounded.
    let _permit = match state.ingestor.try_admit() {
        Ok(permit) => permit,
        Err(failure) => return refuse(failure_to_error(failure)),
    };
    let read = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        axum::body::to_bytes(body, state.max_body_bytes),
    );
    let bytes = match read.await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return refuse(too_large()),
        Err(_) => {
            return refuse(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    BODY_READ_TIMEOUT.as_secs()
                ),
            ));
        }
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|value| value.to_str().ok());
    match state.ingestor.ingest_admitted(encoding, &bytes).await {
        Ok(reply) if reply.rejected == 0 => (StatusCode::OK, Json(reply)).into_response(),
        Ok(reply) => (StatusCode::MULTI_STATUS, Json(reply)).into_response(),
        Err(failure) => refuse(failure_to_error(failure)),
    }
}

fn failure_to_error(failure: IngestFailure) -> ApiError {
    let message = failure.to_string();
    match failure {
        IngestFailure::Body(BodyError::TooLarge { .. }) => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
        }
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
        IngestFailure::Storage(detail) => ApiError::internal("ingest", detail),
    }
}

/// `GET /v1/merchants/{merchant}/activity`.
pub async fn activity(
    State(state): State<Arc<AppState>>,
    Path(merchant): Path<String>,
    query: Params,
) -> Result<Response, ApiError> {
    let map = params(query, &["from", "to", "step", "api"])?;
    let period = period(&map, 60 * MICROS_PER_MINUTE)?;
    let step = Step::parse(map.get("step").map(String::as_str))?;
    let api = map.get("api").cloned();
    let store = state.store.clone();
    let answer = blocking(move || {
        Ok(mm_query::activity(
            &store,
            &merchant,
            api.as_deref(),
            period,
            step,
        )?)
    })
    .await?;
    Ok(Json(answer).into_response())
}

/// `GET /v1/merchants/{merchant}/apis`.
pub async fn apis(
    State(state): State<Arc<AppState>>,
    Path(merchant): Path<String>,
    query: Params,
) -> Result<Response, ApiError> {
    let map = params(query, &["from", "to", "sort"])?;
    let period = period(&map, 60 * MICROS_PER_MINUTE)?;
    let sort = ApiSort::parse(map.get("sort").map(String::as_str))?;
    let store = state.store.clone();
    let answer = blocking(move || Ok(mm_query::apis(&store, &merchant, period, sort)?)).await?;
    Ok(Json(answer).into_response())
}

/// `GET /v1/merchants`.
pub async fn merchants(
    State(state): State<Arc<AppState>>,
    query: Params,
) -> Result<Response, ApiError> {
    let map = params(query, &["from", "to", "sort", "limit"])?;
    let period = period(&map, 60 * MICROS_PER_MINUTE)?;
    let sort = MerchantSort::parse(map.get("sort").map(String::as_str))?;
    let limit = limit_param(&map, 50)?;
    let store = state.store.clone();
    let answer = blocking(move || Ok(mm_query::merchants(&store, period, sort, limit)?)).await?;
    Ok(Json(answer).into_response())
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// `GET /readyz`: recovery is done and the pipeline is running.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.is_ready() {
        Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the pipeline is not running",
        )
        .into_response()
    }
}

/// Anything else.
pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see /openapi.json",
    )
}

/// `GET /v1/merchants/{merchant}`: whether the store knows the merchant, and its last minute
/// with calls; 404 `unknown_merchant` otherwise.
pub async fn merchant(
    State(state): State<Arc<AppState>>,
    Path(merchant): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let name = merchant.clone();
    let last_seen = blocking(move || {
        store
            .merchant_last_seen(&name)
            .map_err(|error| ApiError::internal("merchant lookup", error))
    })
    .await?;
    match last_seen {
        Some(minute) => Ok(Json(serde_json::json!({
            "merchant": merchant,
            "last_seen": mm_model::time::format_rfc3339(mm_model::time::minute_start(minute)),
        }))
        .into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_merchant",
            format!("no calls from merchant {merchant:?} are stored"),
        )),
    }
}

/// `GET /v1/admin/consumers`: cluster mode's consumers on this instance: per partition the
/// position, the last committed offset, the end of the partition and the lag.
pub async fn consumers(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let cluster = cluster_of(&state)?;
    Ok(Json(serde_json::json!({
        "consumers": cluster.snapshot(),
        "max_in_flight": cluster.max_in_flight(),
    }))
    .into_response())
}

/// `PUT /v1/admin/backpressure` with `{"max_in_flight": N}`: how many records the repartition
/// consumer may have on their way to the broker before it pauses its partitions.
pub async fn set_backpressure(
    State(state): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let cluster = cluster_of(&state)?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Setting {
        max_in_flight: usize,
    }
    let setting: Setting = serde_json::from_slice(&body).map_err(|error| {
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
    Ok(
        Json(serde_json::json!({ "max_in_flight": setting.max_in_flight, "previous": previous }))
            .into_response(),
    )
}

fn cluster_of(state: &AppState) -> Result<Arc<crate::cluster::ClusterStatus>, ApiError> {
    state.cluster.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_cluster_mode",
            "this instance runs in embedded mode: it has no Kafka consumers",
        )
    })
}

/// `GET /v1/merchants/search?prefix=&limit=`: known merchants starting with `prefix`, ignoring
/// case, for suggestions.
pub async fn search_merchants(
    State(state): State<Arc<AppState>>,
    query: Params,
) -> Result<Response, ApiError> {
    let map = params(query, &["prefix", "limit"])?;
    let prefix = map.get("prefix").cloned().unwrap_or_default();
    let limit = limit_param(&map, 20)?;
    let store = state.store.clone();
    let search_prefix = prefix.clone();
    let merchants = blocking(move || {
        store
            .search_merchants(&search_prefix, limit)
            .map_err(|error| ApiError::internal("merchant search", error))
    })
    .await?;
    Ok(Json(serde_json::json!({ "prefix": prefix, "merchants": merchants })).into_response())
}

/// `GET /v1/activity/stream[?merchant=]`: the activity stream as server-sent events, one
/// `activity` event per final or correction record from now on.
pub async fn activity_stream(
    State(state): State<Arc<AppState>>,
    query: Params,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let map = params(query, &["merchant"])?;
    let merchant = map.get("merchant").cloned();
    let receiver = state.activity.subscribe();
    let shutdown = state.shutdown.subscribe();
    let stream = futures_util::stream::unfold(
        (receiver, merchant, shutdown),
        |(mut receiver, merchant, mut shutdown)| async move {
            loop {
                let received = tokio::select! {
                    received = receiver.recv() => received,
                    // The server is stopping: end the stream so graceful shutdown can finish.
                    _ = shutdown.wait_for(|stopping| *stopping) => return None,
                };
                let event = match received {
                    Ok(record) => {
                        if merchant
                            .as_deref()
                            .is_some_and(|wanted| wanted != record.merchant)
                        {
                            continue;
                        }
                        Event::default()
                            .event("activity")
                            .json_data(&*record)
                            .unwrap_or_else(|_| Event::default().comment("unencodable record"))
                    }
                    Err(RecvError::Lagged(missed)) => {
                        Event::default().event("lagged").data(missed.to_string())
                    }
                    Err(RecvError::Closed) => return None,
                };
                return Some((
                    Ok::<Event, std::convert::Infallible>(event),
                    (receiver, merchant, shutdown),
                ));
            }
        },
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
