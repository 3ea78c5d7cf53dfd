//! Subscriptions over HTTP: consumer groups reading event types from committed cursors. The
//! rules live in `mm_gateway::subscriptions`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mm_gateway::subscriptions::{Cursor, Subscription, SubscriptionError, SubscriptionRequest};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::gateway::{gateway, json_body, limit_param, log_error, with_offset};
use super::routes::{RawQuery, blocking, params};
use super::{ApiError, AppState};

/// `GET /v1/subscriptions`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionList {
    pub subscriptions: Vec<Subscription>,
}

/// Cursors: read from a subscription, or committed to it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Cursors {
    pub cursors: Vec<Cursor>,
}

/// `GET /v1/subscriptions/{id}/events`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionEvents {
    /// The events, each with its full `metadata` (including `partition` and `offset`).
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<serde_json::Value>,
    /// Every partition's cursor after these events: commit them once they are processed.
    pub cursors: Vec<Cursor>,
}

/// Query parameters of `GET /v1/subscriptions/{id}/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsParams {
    /// Events at most [default: 100, at most 10000].
    #[param(value_type = Option<usize>)]
    pub limit: Option<String>,
}

impl From<SubscriptionError> for ApiError {
    fn from(error: SubscriptionError) -> Self {
        subscription_error(error)
    }
}

fn subscription_error(error: SubscriptionError) -> ApiError {
    let message = error.to_string();
    match error {
        SubscriptionError::Unknown(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_subscription", message)
        }
        SubscriptionError::Invalid(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_subscription_request",
            message,
        ),
        SubscriptionError::Log(error) => log_error(error),
        SubscriptionError::Storage(_) => ApiError::internal("subscriptions", message),
    }
}

#[utoipa::path(
    post,
    path = "/v1/subscriptions",
    tag = "subscriptions",
    summary = "Subscribe a consumer group to event types (the same group and types give back the same subscription)",
    request_body = SubscriptionRequest,
    responses(
        (status = 201, description = "Created, cursors at the beginning or the end", body = Subscription),
        (status = 200, description = "The existing subscription of this group and these types", body = Subscription),
        (status = 400, description = "Unreadable body (code bad_request)", body = ErrorBody),
        (status = 422, description = "No group, no types or an unknown type (code invalid_subscription_request)", body = ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let gateway = gateway(&state)?;
    let request: SubscriptionRequest = json_body(&body, "subscription request")?;
    let (created, subscription) = blocking(move || {
        Ok(gateway.subscriptions.create(
            request,
            &gateway.registry,
            &gateway.log,
            mm_model::time::now_us(),
        )?)
    })
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(subscription)).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/subscriptions",
    tag = "subscriptions",
    summary = "Every subscription",
    responses((status = 200, description = "The subscriptions", body = SubscriptionList)),
)]
pub async fn list(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let gateway = gateway(&state)?;
    let subscriptions = blocking(move || Ok(gateway.subscriptions.list()?)).await?;
    Ok(Json(SubscriptionList { subscriptions }).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/subscriptions/{id}",
    tag = "subscriptions",
    summary = "One subscription",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "The subscription", body = Subscription),
        (status = 404, description = "No such subscription (code unknown_subscription)", body = ErrorBody),
    ),
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let gateway = gateway(&state)?;
    let subscription = blocking(move || Ok(gateway.subscriptions.get(&id)?)).await?;
    Ok(Json(subscription).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/subscriptions/{id}/events",
    tag = "subscriptions",
    summary = "Events from the committed cursors, with the cursors after them",
    params(("id" = String, Path, description = "Subscription id"), EventsParams),
    responses(
        (status = 200, description = "Events and cursors", body = SubscriptionEvents),
        (status = 400, description = "Bad parameter (code bad_request)", body = ErrorBody),
        (status = 404, description = "No such subscription (code unknown_subscription)", body = ErrorBody),
    ),
)]
pub async fn events(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    query: RawQuery,
) -> Result<Response, ApiError> {
    let gateway = gateway(&state)?;
    let read: EventsParams = params(query)?;
    let limit = limit_param(read.limit.as_deref())?;
    let (stored, cursors) =
        blocking(move || Ok(gateway.subscriptions.read(&id, &gateway.log, limit)?)).await?;
    let events = stored
        .into_iter()
        .map(|(cursor, bytes)| with_offset(cursor.offset, &bytes))
        .collect();
    Ok(Json(SubscriptionEvents { events, cursors }).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/subscriptions/{id}/cursors",
    tag = "subscriptions",
    summary = "The committed cursors",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "One cursor per partition of every type read", body = Cursors),
        (status = 404, description = "No such subscription (code unknown_subscription)", body = ErrorBody),
    ),
)]
pub async fn cursors(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let gateway = gateway(&state)?;
    let cursors = blocking(move || Ok(gateway.subscriptions.cursors(&id)?)).await?;
    Ok(Json(Cursors { cursors }).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/subscriptions/{id}/cursors",
    tag = "subscriptions",
    summary = "Commit cursors (durable when answered)",
    params(("id" = String, Path, description = "Subscription id")),
    request_body = Cursors,
    responses(
        (status = 204, description = "Committed"),
        (status = 400, description = "Unreadable body (code bad_request)", body = ErrorBody),
        (status = 404, description = "No such subscription (code unknown_subscription)", body = ErrorBody),
        (status = 422, description = "A cursor of a partition not read, or beyond its end (code invalid_subscription_request)", body = ErrorBody),
    ),
)]
pub async fn commit(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let gateway = gateway(&state)?;
    let Cursors { cursors } = json_body(&body, "cursors")?;
    blocking(move || Ok(gateway.subscriptions.commit(&id, &cursors, &gateway.log)?)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
