//! The HTTP API: ingest, queries, OpenAPI document, health and metrics.

mod error;
mod events;
mod gateway;
mod openapi;
mod routes;
mod subscriptions;
mod ui;

pub use ui::Ui;

pub use error::{ApiError, ErrorBody};
pub use openapi::{
    REGENERATE as REGENERATE_OPENAPI, spec as openapi_spec, spec_pretty as openapi_json,
};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use mm_storage::rollups::RollupStore;
use mm_telemetry::Metrics;
use tracing::Instrument as _;

use mm_ingest::Ingestor;

/// What every handler can reach.
pub struct AppState {
    pub ingestor: Arc<Ingestor>,
    /// Memory every request in flight may hold together.
    pub budget: Arc<mm_http::MemoryBudget>,
    /// How request bodies must arrive.
    pub body_limits: mm_http::BodyLimits,
    pub store: Arc<RollupStore>,
    /// The raw-event archive (embedded mode).
    pub archive: Option<Arc<mm_archive::Archive>>,
    /// Cluster mode: this instance's consumers.
    pub cluster: Option<Arc<mm_telemetry::consumers::ClusterStatus>>,
    pub metrics: Arc<Metrics>,
    pub tokens: Vec<String>,
    pub max_body_bytes: usize,
    pub healthy: Arc<AtomicBool>,
    pub ready: AtomicBool,
    /// Set to `true` when the server starts shutting down; ends long-lived streams.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// Whether storage takes writes (embedded mode).
    pub storage: Option<Arc<mm_storage::health::StorageHealth>>,
    /// The activity stream, for server-sent-event subscribers.
    pub activity: tokio::sync::broadcast::Sender<Arc<mm_model::activity::ActivityRecord>>,
    /// Where the web dashboard's files come from.
    pub ui: Ui,
    /// The event gateway: its registry of event types, its event log and subscriptions.
    pub gateway: Option<Arc<mm_gateway::Gateway>>,
    /// Why the gateway is not running, when it is not (cluster mode: its topics could not be
    /// opened); ingest and aggregation go on without it.
    pub gateway_unavailable: Option<String>,
    /// Largest decompressed request body.
    pub max_decoded_bytes: usize,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A bearer token, when the server has tokens configured.
    Token,
    /// Anyone: health, readiness and the OpenAPI document.
    Open,
}

/// One route of the HTTP API.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: Method,
    /// In the router's and OpenAPI's syntax (`/v1/merchants/{merchant}`).
    pub path: &'static str,
    pub access: Access,
}

/// Every route and its handler: the one list the router is built from. The OpenAPI document
/// takes each operation's security from it, and a test checks that the document describes
/// exactly these routes.
fn table() -> Vec<(Route, MethodRouter<Arc<AppState>>)> {
    use Access::{Open, Token};
    vec![
        route(Method::POST, "/v1/ingest", Token, routes::ingest),
        route(Method::GET, "/v1/merchants", Token, routes::merchants),
        route(
            Method::GET,
            "/v1/merchants/search",
            Token,
            routes::search_merchants,
        ),
        route(
            Method::GET,
            "/v1/activity/stream",
            Token,
            routes::activity_stream,
        ),
        route(Method::GET, "/v1/events/{corr_id}", Token, events::lookup),
        route(
            Method::GET,
            "/v1/merchants/{merchant}",
            Token,
            routes::merchant,
        ),
        route(
            Method::GET,
            "/v1/merchants/{merchant}/events",
            Token,
            events::list,
        ),
        route(
            Method::GET,
            "/v1/merchants/{merchant}/activity",
            Token,
            routes::activity,
        ),
        route(
            Method::GET,
            "/v1/merchants/{merchant}/apis",
            Token,
            routes::apis,
        ),
        route(
            Method::GET,
            "/v1/event-types",
            Token,
            gateway::list_event_types,
        ),
        route(
            Method::PUT,
            "/v1/event-types/{name}",
            Token,
            gateway::put_event_type,
        ),
        route(
            Method::GET,
            "/v1/event-types/{name}",
            Token,
            gateway::get_event_type,
        ),
        route(
            Method::GET,
            "/v1/event-types/{name}/schemas",
            Token,
            gateway::list_schemas,
        ),
        route(
            Method::GET,
            "/v1/event-types/{name}/schemas/{version}",
            Token,
            gateway::get_schema,
        ),
        route(
            Method::POST,
            "/v1/event-types/{name}/compatibility",
            Token,
            gateway::check_compatibility,
        ),
        route(
            Method::POST,
            "/v1/event-types/{name}/events",
            Token,
            gateway::publish,
        ),
        route(
            Method::GET,
            "/v1/event-types/{name}/events",
            Token,
            gateway::read_events,
        ),
        route(
            Method::GET,
            "/v1/event-types/{name}/stats",
            Token,
            gateway::type_stats,
        ),
        route(
            Method::POST,
            "/v1/subscriptions",
            Token,
            subscriptions::create,
        ),
        route(Method::GET, "/v1/subscriptions", Token, subscriptions::list),
        route(
            Method::GET,
            "/v1/subscriptions/{id}",
            Token,
            subscriptions::get,
        ),
        route(
            Method::GET,
            "/v1/subscriptions/{id}/events",
            Token,
            subscriptions::events,
        ),
        route(
            Method::GET,
            "/v1/subscriptions/{id}/cursors",
            Token,
            subscriptions::cursors,
        ),
        route(
            Method::POST,
            "/v1/subscriptions/{id}/cursors",
            Token,
            subscriptions::commit,
        ),
        route(Method::GET, "/v1/admin/consumers", Token, routes::consumers),
        route(
            Method::PUT,
            "/v1/admin/backpressure",
            Token,
            routes::set_backpressure,
        ),
        route(Method::GET, "/metrics", Token, routes::metrics),
        route(Method::GET, "/openapi.json", Open, openapi::document),
        route(Method::GET, "/healthz", Open, routes::healthz),
        route(Method::GET, "/readyz", Open, routes::readyz),
    ]
}

fn route<H, T>(
    method: Method,
    path: &'static str,
    access: Access,
    handler: H,
) -> (Route, MethodRouter<Arc<AppState>>)
where
    H: Handler<T, Arc<AppState>>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone())
        .expect("the route table uses only the standard methods");
    let route = Route {
        method,
        path,
        access,
    };
    (route, axum::routing::on(filter, handler))
}

/// Every route the router serves (the dashboard's files aside).
pub fn routes() -> Vec<Route> {
    table().into_iter().map(|(route, _)| route).collect()
}

/// Builds the router.
pub fn router(state: Arc<AppState>) -> Router {
    let mut protected = Router::new();
    let mut open = Router::new();
    for (route, handler) in table() {
        match route.access {
            Access::Token => protected = protected.route(route.path, handler),
            Access::Open => open = open.route(route.path, handler),
        }
    }
    let protected =
        protected.route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .merge(protected)
        .merge(open)
        .route_layer(middleware::from_fn_with_state(state.clone(), observe))
        .fallback(ui::serve)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state)
}

/// Times each request of a declared route into `mm_http_request_seconds` (the dashboard's
/// files and unknown paths stay out: their paths are not bounded), and runs it inside its
/// server span: continuing the caller's W3C `traceparent`, at the log level `X-Log-Level`
/// asks for.
async fn observe(
    State(state): State<Arc<AppState>>,
    matched: axum::extract::MatchedPath,
    request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().as_str().to_owned();
    let route = matched.as_str();
    let log_level = match requested_level(&state, request.headers()) {
        Ok(level) => level,
        Err(refusal) => return refusal.into_response(),
    };
    // Without traces or a raised level the request has no span: nothing would use it.
    let span = if log_level.is_none() && !mm_trace::exporting() {
        tracing::Span::none()
    } else {
        let span = request_span(&method, route, log_level.as_deref());
        if let Some(incoming) = mm_trace::context::TraceHeaders::from_http(request.headers()) {
            mm_trace::context::continue_from(&span, &incoming);
        }
        span
    };
    let response = next.run(request).instrument(span.clone()).await;
    let code = response.status().as_u16();
    let elapsed = started.elapsed();
    span.record("http.response.status_code", i64::from(code));
    if code >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    // The access log: a debug line, so `X-Log-Level: debug` shows it for one request.
    span.in_scope(|| {
        tracing::debug!(
            status = code,
            elapsed_ms = elapsed.as_secs_f64() * 1e3,
            "request served"
        );
    });
    let status = match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    state
        .metrics
        .http_request_seconds
        .get_or_create(&mm_telemetry::HttpRequestLabel {
            route: route.to_owned(),
            method,
            status,
        })
        .observe(elapsed.as_secs_f64());
    response
}

/// The level `X-Log-Level` asks for: honoured for callers the server knows (any, without
/// tokens); a value that is not a level is refused.
fn requested_level(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(LOG_LEVEL_HEADER) else {
        return Ok(None);
    };
    let known = state.tokens.is_empty()
        || headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token)
            .is_some_and(|token| accepted(state, token));
    if !known {
        return Ok(None);
    }
    let text = value.to_str().unwrap_or_default();
    match mm_trace::level::parse(text) {
        Ok(_) => Ok(Some(text.to_owned())),
        Err(reason) => Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_log_level",
            format!("{LOG_LEVEL_HEADER}: {reason}"),
        )),
    }
}

/// The server span of one request.
fn request_span(method: &str, route: &str, log_level: Option<&str>) -> tracing::Span {
    tracing::info_span!(
        "http.request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        log_level,
    )
}

/// The header that raises the log level of one request's spans.
pub const LOG_LEVEL_HEADER: &str = "x-log-level";

/// Who called, as far as idempotency keys are concerned: a fingerprint of the bearer token
/// (never the token itself), so two clients cannot answer each other's keys.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

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
        .and_then(bearer_token);
    match presented {
        Some(token) if accepted(&state, token) => {
            let caller = Caller(format!(
                "t{:08x}{:08x}",
                crc32fast::hash(token.as_bytes()),
                crc32fast::hash(format!("scope:{token}").as_bytes())
            ));
            let mut request = request;
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Some(_) => unauthorized(&state, "the bearer token is not valid", true),
        None => unauthorized(&state, "send Authorization: Bearer <token>", false),
    }
}

/// Whether `token` is one of the server's.
fn accepted(state: &AppState, token: &str) -> bool {
    state
        .tokens
        .iter()
        .any(|allowed| constant_time_eq(allowed.as_bytes(), token.as_bytes()))
}

/// The token of an `Authorization: Bearer <token>` value; the scheme name is
/// case-insensitive (RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A 401 with the challenge RFC 6750 asks for.
fn unauthorized(state: &AppState, message: &'static str, invalid_token: bool) -> Response {
    state.metrics.refuse(401);
    let mut response = ApiError::new(
        axum::http::StatusCode::UNAUTHORIZED,
        "unauthorized",
        message,
    )
    .into_response();
    let challenge = if invalid_token {
        "Bearer realm=\"merchant-monitor\", error=\"invalid_token\""
    } else {
        "Bearer realm=\"merchant-monitor\""
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static(challenge),
    );
    response
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

    /// When storage cannot write: an error code and a message saying why and since when.
    pub fn storage_problem(&self) -> Option<(&'static str, String)> {
        let storage = self.storage.as_ref()?;
        if storage.writable() {
            return None;
        }
        let failures = storage.failures();
        let first = failures.first()?;
        let since = mm_model::time::format_rfc3339(first.since_us);
        Some(if first.disk_full {
            (
                "disk_full",
                format!(
                    "the disk is full since {since} ({}: {}); ingest is refused until space is freed, queries answer everything acknowledged",
                    first.component, first.detail
                ),
            )
        } else {
            (
                "storage_unavailable",
                format!(
                    "storage cannot write since {since} ({}: {}); ingest is refused until writes succeed",
                    first.component, first.detail
                ),
            )
        })
    }
}
