//! The query handlers: a merchant's activity and per-API table, the merchant ranking, lookup
//! and search of merchants, and the live activity stream.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mm_query::{
    ActivityParams, ActivityResponse, ApisParams, ApisResponse, MerchantsParams, MerchantsResponse,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{MERCHANT_PATH_PARAM, PathText, RawQuery, blocking, params};
use crate::http::error::ErrorBody;
use crate::http::{ApiError, AppState};
use mm_model::time::now_us;

/// `merchant` and `last_seen` of a known merchant.
#[derive(Debug, Serialize, ToSchema)]
pub struct KnownMerchant {
    pub merchant: String,
    /// Start of the latest minute with calls.
    #[schema(format = DateTime)]
    pub last_seen: String,
}

/// The query parameters of `GET /v1/merchants/search`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Start of the merchant accounts to suggest, any case.
    #[param(default = "")]
    pub prefix: Option<String>,
    /// How many suggestions, from 1 to 1000.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000, default = 20)]
    pub limit: Option<String>,
}

/// Known merchant accounts that start with a prefix.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResponse {
    pub prefix: String,
    /// Matching merchant accounts in name order.
    pub merchants: Vec<String>,
}

/// The query parameters of `GET /v1/activity/stream`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Only this merchant.
    pub merchant: Option<String>,
}

/// `GET /v1/merchants/{merchant}/activity`.
#[utoipa::path(
    get,
    path = "/v1/merchants/{merchant}/activity",
    tag = "queries",
    summary = "A merchant's calls over time",
    params(("merchant" = String, Path, description = MERCHANT_PATH_PARAM), ActivityParams),
    responses(
        (status = 200, description = "Buckets, empty ones included", body = ActivityResponse),
        (status = 400, description = "Bad parameter (code bad_request)", body = ErrorBody),
    ),
)]
pub async fn activity(
    State(state): State<Arc<AppState>>,
    PathText(merchant): PathText,
    query: RawQuery,
) -> Result<Response, ApiError> {
    let params: ActivityParams = params(query)?;
    let period = params.period(now_us())?;
    let step = params.step()?;
    let api = params.api;
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
#[utoipa::path(
    get,
    path = "/v1/merchants/{merchant}/apis",
    tag = "queries",
    summary = "Every API a merchant called",
    params(("merchant" = String, Path, description = MERCHANT_PATH_PARAM), ApisParams),
    responses(
        (status = 200, description = "One row per API", body = ApisResponse),
        (status = 400, description = "Bad parameter (code bad_request)", body = ErrorBody),
    ),
)]
pub async fn apis(
    State(state): State<Arc<AppState>>,
    PathText(merchant): PathText,
    query: RawQuery,
) -> Result<Response, ApiError> {
    let params: ApisParams = params(query)?;
    let period = params.period(now_us())?;
    let sort = params.sort()?;
    let store = state.store.clone();
    let answer = blocking(move || Ok(mm_query::apis(&store, &merchant, period, sort)?)).await?;
    Ok(Json(answer).into_response())
}

/// `GET /v1/merchants`.
#[utoipa::path(
    get,
    path = "/v1/merchants",
    tag = "queries",
    summary = "Top merchants",
    params(MerchantsParams),
    responses(
        (status = 200, description = "Ranking", body = MerchantsResponse),
        (status = 400, description = "Bad parameter (code bad_request)", body = ErrorBody),
    ),
)]
pub async fn merchants(
    State(state): State<Arc<AppState>>,
    query: RawQuery,
) -> Result<Response, ApiError> {
    let params: MerchantsParams = params(query)?;
    let period = params.period(now_us())?;
    let sort = params.sort()?;
    let limit = params.limit()?;
    let store = state.store.clone();
    let answer = blocking(move || Ok(mm_query::merchants(&store, period, sort, limit)?)).await?;
    Ok(Json(answer).into_response())
}

/// `GET /v1/merchants/{merchant}`: whether the store knows the merchant, and its last minute
/// with calls; 404 `unknown_merchant` otherwise.
#[utoipa::path(
    get,
    path = "/v1/merchants/{merchant}",
    tag = "queries",
    summary = "Whether the store knows a merchant (exact name)",
    params(("merchant" = String, Path, description = MERCHANT_PATH_PARAM)),
    responses(
        (status = 200, description = "Known merchant", body = KnownMerchant),
        (status = 404, description = "Unknown merchant (code unknown_merchant)", body = ErrorBody),
    ),
)]
pub async fn merchant(
    State(state): State<Arc<AppState>>,
    PathText(merchant): PathText,
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
        Some(minute) => Ok(Json(KnownMerchant {
            merchant,
            last_seen: mm_model::time::format_rfc3339(mm_model::time::minute_start(minute)),
        })
        .into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_merchant",
            format!("no calls from merchant {merchant:?} are stored"),
        )),
    }
}

/// `GET /v1/merchants/search?prefix=&limit=`: known merchants starting with `prefix`, ignoring
/// case, for suggestions.
#[utoipa::path(
    get,
    path = "/v1/merchants/search",
    tag = "queries",
    summary = "Known merchants starting with a prefix, ignoring case (suggestions)",
    params(SearchParams),
    responses(
        (status = 200, description = "Matching merchant accounts in name order", body = SearchResponse),
        (status = 400, description = "Bad parameter (code bad_request)", body = ErrorBody),
    ),
)]
pub async fn search_merchants(
    State(state): State<Arc<AppState>>,
    query: RawQuery,
) -> Result<Response, ApiError> {
    let params: SearchParams = params(query)?;
    let prefix = params.prefix.unwrap_or_default();
    let limit = mm_query::parse_limit(params.limit.as_deref(), 20)?;
    let store = state.store.clone();
    let search_prefix = prefix.clone();
    let merchants = blocking(move || {
        store
            .search_merchants(&search_prefix, limit)
            .map_err(|error| ApiError::internal("merchant search", error))
    })
    .await?;
    Ok(Json(SearchResponse { prefix, merchants }).into_response())
}

/// `GET /v1/activity/stream[?merchant=]`: the activity stream as server-sent events, one
/// `activity` event per final or correction record from now on.
#[utoipa::path(
    get,
    path = "/v1/activity/stream",
    tag = "queries",
    summary = "The activity stream as server-sent events",
    description = "One `activity` event per closed (merchant, api, minute) window, merchant-wide windows (api `\"\"`) included, or correction from now on (JSON data: an `ActivityRecord`, with `correction` and `dedupe_key`); a `lagged` event tells a slow reader how many records it missed.",
    params(StreamParams),
    responses(
        (status = 200, description = "text/event-stream: `activity` events (JSON data) and `lagged` events (the number of records missed)",
            body = String, content_type = "text/event-stream"),
        (status = 400, description = "Bad parameter (code bad_request)", body = ErrorBody),
    ),
)]
pub async fn activity_stream(
    State(state): State<Arc<AppState>>,
    query: RawQuery,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let params: StreamParams = params(query)?;
    let merchant = params.merchant;
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
