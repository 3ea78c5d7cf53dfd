//! The HTTP API: ingest, queries, OpenAPI document, health and metrics.

mod content_type;
mod error;
mod events;
mod openapi;
mod routes;
mod ui;

pub use ui::Ui;

pub use error::ApiError;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mm_storage::rollups::RollupStore;
use mm_telemetry::Metrics;

use crate::ingest::Ingestor;

/// What every handler can reach.
pub struct AppState {
    pub ingestor: Ingestor,
    pub store: Arc<RollupStore>,
    /// The raw-event archive (embedded mode).
    pub archive: Option<Arc<mm_archive::Archive>>,
    /// Cluster mode: this instance's consumers.
    pub cluster: Option<Arc<crate::cluster::ClusterStatus>>,
    pub metrics: Arc<Metrics>,
    pub tokens: Vec<String>,
    pub max_body_bytes: usize,
    pub healthy: Arc<AtomicBool>,
    pub ready: AtomicBool,
    /// Set to `true` when the server starts shutting down; ends long-lived streams.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// The activity stream, for server-sent-event subscribers.
    pub activity: tokio::sync::broadcast::Sender<Arc<crate::pipeline::ActivityRecord>>,
    /// Where the web dashboard's files come from.
    pub ui: Ui,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// Builds the router.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/ingest", post(routes::ingest))
        .route("/v1/merchants", get(routes::merchants))
        .route("/v1/merchants/search", get(routes::search_merchants))
        .route("/v1/activity/stream", get(routes::activity_stream))
        .route("/v1/events/{corr_id}", get(events::lookup))
        .route("/v1/merchants/{merchant}", get(routes::merchant))
        .route("/v1/merchants/{merchant}/events", get(events::list))
        .route("/v1/merchants/{merchant}/activity", get(routes::activity))
        .route("/v1/merchants/{merchant}/apis", get(routes::apis))
        .route("/v1/admin/consumers", get(routes::consumers))
        .route(
            "/v1/admin/backpressure",
            axum::routing::put(routes::set_backpressure),
        )
        .route("/metrics", get(routes::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .merge(api)
        .route("/openapi.json", get(openapi::document))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .fallback(ui::serve)
        .with_state(state)
}

/// Bearer-token check; with no tokens configured the server only listens on loopback.
async fn authenticate(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if state.tokens.is_empty() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token)
            if state
                .tokens
                .iter()
                .any(|allowed| constant_time_eq(allowed.as_bytes(), token.as_bytes())) =>
        {
            next.run(request).await
        }
        Some(_) => {
            state.metrics.refuse(401);
            ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the bearer token is not valid",
            )
            .into_response()
        }
        None => {
            state.metrics.refuse(401);
            ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send Authorization: Bearer <token>",
            )
            .into_response()
        }
    }
}

fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    left.iter()
        .zip(right)
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

impl AppState {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.healthy.load(Ordering::Acquire)
    }
}
