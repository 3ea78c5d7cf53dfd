//! Raw events from the archive: lookup by correlation id and listing by merchant.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use mm_archive::RowQuery;
use mm_model::ApiCall;
use mm_model::time::MICROS_PER_MINUTE;
use serde_json::{Map, Value};

use super::routes::{Params, blocking, limit_param, params, period};
use super::{ApiError, AppState};

/// An event as the API shows it: the mapped fields, then every unmapped field as ingested.
pub fn event_json(event: &ApiCall) -> Value {
    let mut object = Map::new();
    object.insert(
        "ts".into(),
        Value::String(mm_model::time::format_rfc3339(event.ts_us)),
    );
    object.insert("merchant".into(), Value::String(event.merchant.clone()));
    object.insert("api".into(), Value::String(event.api.clone()));
    object.insert("status".into(), Value::from(event.status));
    object.insert("latency_ms".into(), Value::from(event.latency_ms));
    object.insert("corr_id".into(), Value::String(event.corr_id.clone()));
    for (name, value) in [
        ("partner", &event.partner),
        ("method", &event.method),
        ("path", &event.path),
        ("host", &event.host),
        ("region", &event.region),
    ] {
        if let Some(value) = value {
            object.insert(name.into(), Value::String(value.clone()));
        }
    }
    if let Some(Ok(Value::Object(attributes))) = event
        .attributes
        .as_deref()
        .map(serde_json::from_str::<Value>)
    {
        for (name, value) in attributes {
            object.entry(name).or_insert(value);
        }
    }
    Value::Object(object)
}

/// `GET /v1/events/{corr_id}?merchant&from&to`: the calls that carried a correlation id
/// (default period: the last 24 hours).
pub async fn lookup(
    State(state): State<Arc<AppState>>,
    Path(corr_id): Path<String>,
    query: Params,
) -> Result<Response, ApiError> {
    let map = params(query, &["merchant", "from", "to"])?;
    let period = period(&map, 24 * 60 * MICROS_PER_MINUTE)?;
    let merchant = map.get("merchant").cloned();
    let archive = archive_of(&state)?;
    let mut events = blocking(move || {
        let query = RowQuery {
            corr_id: Some(&corr_id),
            merchant: merchant.as_deref(),
            from_us: period.from_us,
            to_us: period.to_us,
        };
        archive
            .find(&query)
            .map_err(|error| ApiError::internal("event lookup", error))
    })
    .await?;
    events.sort_by_key(|event| event.ts_us);
    let events: Vec<Value> = events.iter().map(event_json).collect();
    Ok(Json(serde_json::json!({ "events": events })).into_response())
}

fn parse_cursor(text: &str) -> Result<(i64, String), ApiError> {
    let invalid =
        || ApiError::bad_request(format!("cursor {text:?} is not one this server returned"));
    let (ts, corr_id) = text.split_once('~').ok_or_else(invalid)?;
    Ok((ts.parse().map_err(|_| invalid())?, corr_id.to_owned()))
}

/// `GET /v1/merchants/{merchant}/events?from&to&api&status&limit&cursor`: a merchant's calls,
/// newest first, with a stable cursor (default period: the last hour).
pub async fn list(
    State(state): State<Arc<AppState>>,
    Path(merchant): Path<String>,
    query: Params,
) -> Result<Response, ApiError> {
    let map = params(query, &["from", "to", "api", "status", "limit", "cursor"])?;
    let period = period(&map, 60 * MICROS_PER_MINUTE)?;
    let api = map.get("api").cloned();
    let status = match map.get("status") {
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
    let limit = limit_param(&map, 100)?;
    let cursor = map
        .get("cursor")
        .map(|text| parse_cursor(text))
        .transpose()?;
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
        (true, Some(last)) => Value::String(format!("{}~{}", last.ts_us, last.corr_id)),
        _ => Value::Null,
    };
    let events: Vec<Value> = events.iter().map(event_json).collect();
    Ok(Json(
        serde_json::json!({ "merchant": merchant, "events": events, "next_cursor": next_cursor }),
    )
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
