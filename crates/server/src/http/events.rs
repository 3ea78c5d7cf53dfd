//! Raw events from the archive: lookup by correlation id and listing by merchant.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use mm_archive::RowQuery;
use mm_model::ApiCall;
use mm_model::time::MICROS_PER_MINUTE;
use mm_query::TimeParam;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::routes::{MERCHANT_PATH_PARAM, PathText, RawQuery, blocking, params, period};
use super::{ApiError, AppState};

/// One call as ingested: the mapped fields, then every unmapped field of the original record
/// exactly as it arrived.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CallEvent {
    /// Event time.
    #[schema(format = DateTime)]
    pub ts: String,
    pub merchant: String,
    pub api: String,
    /// HTTP status of the call.
    pub status: u16,
    /// Latency in milliseconds; fractional values are kept.
    pub latency_ms: f64,
    /// Correlation id.
    pub corr_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub partner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub region: Option<String>,
    /// The trace id of the call, when its record carried one: its `trace_id` field (a string,
    /// as recorded), or the trace id (32 hexadecimal digits) of a valid W3C `traceparent` field.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub trace_id: Option<String>,
    /// The record's unmapped fields, each exactly as archived (at any depth of nesting); a
    /// mapped field's name is never repeated here.
    #[serde(flatten)]
    #[schema(value_type = BTreeMap<String, Value>)]
    pub unmapped: BTreeMap<String, Box<RawValue>>,
}

impl CallEvent {
    /// An archived event as the API shows it.
    pub fn new(event: &ApiCall) -> Self {
        let mut unmapped = match event
            .attributes
            .as_deref()
            .map(serde_json::from_str::<BTreeMap<String, Box<RawValue>>>)
        {
            Some(Ok(attributes)) => attributes,
            Some(Err(error)) => {
                tracing::warn!(%error, corr_id = %event.corr_id, "archived unmapped fields unreadable");
                BTreeMap::new()
            }
            None => BTreeMap::new(),
        };
        let mapped = [
            ("partner", &event.partner),
            ("method", &event.method),
            ("path", &event.path),
            ("host", &event.host),
            ("region", &event.region),
        ];
        // The mapped value wins over an unmapped field of the same name.
        for name in ["ts", "merchant", "api", "status", "latency_ms", "corr_id"] {
            unmapped.remove(name);
        }
        for (name, value) in mapped {
            if value.is_some() {
                unmapped.remove(name);
            }
        }
        let trace_id = trace_id(&mut unmapped);
        Self {
            ts: mm_model::time::format_rfc3339(event.ts_us),
            merchant: event.merchant.clone(),
            api: event.api.clone(),
            status: event.status,
            latency_ms: event.latency_ms,
            corr_id: event.corr_id.clone(),
            partner: event.partner.clone(),
            method: event.method.clone(),
            path: event.path.clone(),
            host: event.host.clone(),
            region: event.region.clone(),
            trace_id,
            unmapped,
        }
    }
}

/// The trace id a record carried: its `trace_id` field when it is a string (taken out of the
/// unmapped fields, so it is shown once), else the trace id of a valid `traceparent`. A
/// `trace_id` field of another kind stays among the unmapped fields, and nothing is derived.
fn trace_id(unmapped: &mut BTreeMap<String, Box<RawValue>>) -> Option<String> {
    if let Some(raw) = unmapped.get("trace_id") {
        let text = serde_json::from_str::<String>(raw.get()).ok()?;
        unmapped.remove("trace_id");
        return Some(text);
    }
    let traceparent = unmapped
        .get(mm_trace::context::TRACEPARENT)
        .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())?;
    mm_trace::context::TraceHeaders::read(|name| {
        (name == mm_trace::context::TRACEPARENT).then_some(traceparent.as_str())
    })
    .map(|context| context.trace_id().to_owned())
}

/// The query parameters of `GET /v1/events/{corr_id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LookupParams {
    /// Narrows the search to one merchant.
    pub merchant: Option<String>,
    /// Start, inclusive (default: 24 hours before `to`): RFC 3339 or epoch milliseconds.
    #[param(inline)]
    pub from: Option<TimeParam>,
    /// End, exclusive (default: now): RFC 3339 or epoch milliseconds.
    #[param(inline)]
    pub to: Option<TimeParam>,
    /// Most events to return (the oldest), from 1 to 1000.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000, default = 100)]
    pub limit: Option<String>,
}

/// The calls that carried a correlation id.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventsFound {
    /// Matching events, oldest first: at most `limit`.
    pub events: Vec<CallEvent>,
    /// More events matched than `limit`; narrow the period or the merchant to see them.
    pub truncated: bool,
}

/// The query parameters of `GET /v1/merchants/{merchant}/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Start, inclusive (default: 1 hour before `to`): RFC 3339 or epoch milliseconds.
    #[param(inline)]
    pub from: Option<TimeParam>,
    /// End, exclusive (default: now): RFC 3339 or epoch milliseconds.
    #[param(inline)]
    pub to: Option<TimeParam>,
    /// Only calls of this API.
    pub api: Option<String>,
    /// Only calls that answered this HTTP status.
    #[param(value_type = Option<u16>, minimum = 100, maximum = 599)]
    pub status: Option<String>,
    /// Events per page, from 1 to 1000.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000, default = 100)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of a merchant's calls, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventsPage {
    pub merchant: String,
    pub events: Vec<CallEvent>,
    /// Where the next page starts; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// `GET /v1/events/{corr_id}?merchant&from&to`: the calls that carried a correlation id
/// (default period: the last 24 hours).
#[utoipa::path(
    get,
    path = "/v1/events/{corr_id}",
    operation_id = "lookup_events",
    tag = "events",
    summary = "The call(s) that carried a correlation id",
    description = "Each event with every field as ingested: ts (RFC 3339), merchant, api, status, latency_ms, corr_id, the optional mapped fields, trace_id when the record carried a trace context (a trace_id field or a W3C traceparent), and every other unmapped field of the original record.",
    params(("corr_id" = String, Path, description = "Correlation id"), LookupParams),
    responses(
        (status = 200, description = "Matching events, oldest first", body = EventsFound),
        (status = 400, description = "Bad parameter (code bad_request)", body = ErrorBody),
        (status = 501, description = "Cluster mode: raw events are archived in embedded mode only (code archive_unavailable)", body = ErrorBody),
    ),
)]
pub async fn lookup(
    State(state): State<Arc<AppState>>,
    PathText(corr_id): PathText,
    query: RawQuery,
) -> Result<Response, ApiError> {
    let params: LookupParams = params(query)?;
    let period = period(
        params.from.as_ref().map(TimeParam::as_str),
        params.to.as_ref().map(TimeParam::as_str),
        24 * 60 * MICROS_PER_MINUTE,
    )?;
    let limit = mm_query::parse_limit(params.limit.as_deref(), 100)?;
    let merchant = params.merchant;
    let archive = archive_of(&state)?;
    let (events, truncated) = blocking(move || {
        let query = RowQuery {
            corr_id: Some(&corr_id),
            merchant: merchant.as_deref(),
            from_us: period.from_us,
            to_us: period.to_us,
        };
        archive
            .find_oldest(&query, limit)
            .map_err(|error| ApiError::internal("event lookup", error))
    })
    .await?;
    let events = events.iter().map(CallEvent::new).collect();
    Ok(Json(EventsFound { events, truncated }).into_response())
}

fn parse_cursor(text: &str) -> Result<(i64, String), ApiError> {
    let invalid =
        || ApiError::bad_request(format!("cursor {text:?} is not one this server returned"));
    let (ts, corr_id) = text.split_once('~').ok_or_else(invalid)?;
    Ok((ts.parse().map_err(|_| invalid())?, corr_id.to_owned()))
}

/// `GET /v1/merchants/{merchant}/events?from&to&api&status&limit&cursor`: a merchant's calls,
/// newest first, with a stable cursor (default period: the last hour).
#[utoipa::path(
    get,
    path = "/v1/merchants/{merchant}/events",
    operation_id = "list_merchant_events",
    tag = "events",
    summary = "A merchant's raw calls, newest first",
    params(("merchant" = String, Path, description = MERCHANT_PATH_PARAM), ListParams),
    responses(
        (status = 200, description = "A page of events", body = EventsPage),
        (status = 400, description = "Bad parameter (code bad_request)", body = ErrorBody),
        (status = 501, description = "Cluster mode: raw events are archived in embedded mode only (code archive_unavailable)", body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    PathText(merchant): PathText,
    query: RawQuery,
) -> Result<Response, ApiError> {
    let params: ListParams = params(query)?;
    let period = period(
        params.from.as_ref().map(TimeParam::as_str),
        params.to.as_ref().map(TimeParam::as_str),
        60 * MICROS_PER_MINUTE,
    )?;
    let api = params.api;
    let status = match params.status.as_deref() {
        None => None,
        Some(text) => Some(
            text.parse::<u16>()
                .ok()
                .filter(|code| (100..=599).contains(code))
                .ok_or_else(|| {
                    ApiError::bad_request(format!("status {text:?} is not an HTTP status code"))
                })?,
        ),
    };
    let limit = mm_query::parse_limit(params.limit.as_deref(), 100)?;
    let cursor = params.cursor.as_deref().map(parse_cursor).transpose()?;
    let archive = archive_of(&state)?;
    let lookup_merchant = merchant.clone();
    let mut events = blocking(move || {
        let query = RowQuery {
            corr_id: None,
            merchant: Some(&lookup_merchant),
            from_us: period.from_us,
            to_us: period.to_us,
        };
        archive
            .find(&query)
            .map_err(|error| ApiError::internal("event listing", error))
    })
    .await?;
    events.retain(|event| {
        api.as_deref().is_none_or(|api| event.api == api)
            && status.is_none_or(|status| event.status == status)
    });
    // Newest first; the correlation id breaks ties so the order, and so the cursor, is stable.
    events.sort_by(|left, right| (right.ts_us, &right.corr_id).cmp(&(left.ts_us, &left.corr_id)));
    if let Some((cursor_ts, cursor_corr)) = &cursor {
        events.retain(|event| (event.ts_us, &event.corr_id) < (*cursor_ts, cursor_corr));
    }
    let more = events.len() > limit;
    events.truncate(limit);
    let next_cursor = match (more, events.last()) {
        (true, Some(last)) => Some(format!("{}~{}", last.ts_us, last.corr_id)),
        _ => None,
    };
    let events = events.iter().map(CallEvent::new).collect();
    Ok(Json(EventsPage {
        merchant,
        events,
        next_cursor,
    })
    .into_response())
}

fn archive_of(state: &AppState) -> Result<Arc<mm_archive::Archive>, ApiError> {
    state.archive.clone().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_IMPLEMENTED,
            "archive_unavailable",
            "raw events are archived in embedded mode only; this instance runs in cluster mode",
        )
    })
}
