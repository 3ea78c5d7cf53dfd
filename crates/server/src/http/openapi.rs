//! The OpenAPI 3.1 document of the HTTP API, served at `/openapi.json`.

use axum::Json;
use serde_json::{Value, json};

fn time_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description,
            "schema": { "type": "string", "examples": ["2026-11-21T15:00:00Z", "1795273200000"] } })
}

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn latency_fields() -> Value {
    json!({
        "p50_ms": { "type": ["number", "null"] }, "p95_ms": { "type": ["number", "null"] },
        "p99_ms": { "type": ["number", "null"] }, "max_ms": { "type": ["number", "null"] }
    })
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
        base.extend(extra.clone());
    }
    base
}

/// The document.
pub fn spec() -> Value {
    let from = time_param(
        "from",
        "Start of the period, inclusive: RFC 3339 or epoch milliseconds. Default: one hour before `to`.",
    );
    let to = time_param(
        "to",
        "End of the period, exclusive: RFC 3339 or epoch milliseconds. Default: now.",
    );
    let merchant = json!({ "name": "merchant", "in": "path", "required": true, "schema": { "type": "string" } });
    let admin_consumers = json!({ "get": {
                "summary": "Cluster mode: this instance's Kafka consumers, per partition position, committed offset, end and lag",
                "responses": { "200": { "description": "Consumers", "content": { "application/json": { "schema": {
                    "type": "object", "properties": {
                        "max_in_flight": { "type": "integer" },
                        "consumers": { "type": "array", "items": { "type": "object", "properties": {
                            "role": { "type": "string", "enum": ["repartition", "aggregate"] }, "group": { "type": "string" }, "topic": { "type": "string" },
                            "partitions": { "type": "array", "items": { "type": "object", "properties": {
                                "partition": { "type": "integer" }, "position": { "type": "integer" }, "committed": { "type": ["integer", "null"] },
                                "high_watermark": { "type": "integer" }, "lag": { "type": "integer" }, "paused": { "type": "boolean" } } } } } } } } } } } },
                    "404": error_response("Embedded mode (code not_cluster_mode)") } } });
    let admin_backpressure = json!({ "put": {
                "summary": "Cluster mode: records in flight to the broker before the repartition consumer pauses its partitions",
                "requestBody": { "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "required": ["max_in_flight"], "properties": { "max_in_flight": { "type": "integer", "minimum": 1, "maximum": 10000000 } } } } } },
                "responses": { "200": { "description": "The new and the previous limit" },
                    "400": error_response("Bad value"), "404": error_response("Embedded mode (code not_cluster_mode)") } } });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Merchant Monitor",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Per-merchant, per-API, per-minute activity from payment API logs. Errors share one shape: {\"error\":{\"code\",\"message\"}}. Send `Authorization: Bearer <token>` when the server has tokens configured."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "object",
                    "required": ["code", "message"], "properties": { "code": { "type": "string" }, "message": { "type": "string" } } } } },
                "IngestReply": { "type": "object", "required": ["accepted", "rejected"], "properties": {
                    "accepted": { "type": "integer" }, "rejected": { "type": "integer" },
                    "errors": { "type": "array", "items": { "type": "object", "required": ["index", "code", "reason"], "properties": {
                        "index": { "type": "integer", "description": "0-based record position (blank NDJSON lines are not records)" },
                        "line": { "type": "integer", "description": "1-based line of an NDJSON body" },
                        "field": { "type": ["string", "null"] },
                        "code": { "type": "string", "enum": ["invalid_json", "invalid_utf8", "not_an_object", "missing_field", "wrong_type", "invalid_value", "too_long", "too_old", "too_far_in_future", "record_too_large"] },
                        "reason": { "type": "string" } } } } } },
                "Activity": { "type": "object", "required": ["merchant", "step", "buckets"], "properties": {
                    "merchant": { "type": "string" }, "api": { "type": "string" }, "step": { "type": "string", "enum": ["1m", "5m", "1h", "1d"] },
                    "buckets": { "type": "array", "items": { "type": "object", "properties": merge(json!({
                        "start": { "type": "string", "format": "date-time" }, "calls": { "type": "integer" },
                        "status_2xx": { "type": "integer" }, "status_3xx": { "type": "integer" }, "status_4xx": { "type": "integer" },
                        "status_5xx": { "type": "integer" }, "error_rate": { "type": "number", "description": "5xx share of calls" } }), latency_fields()) } } } },
                "Apis": { "type": "object", "required": ["merchant", "apis"], "properties": {
                    "merchant": { "type": "string" },
                    "apis": { "type": "array", "items": { "type": "object", "properties": merge(json!({
                        "api": { "type": "string" }, "calls": { "type": "integer" },
                        "status": { "type": "object", "additionalProperties": { "type": "integer" }, "description": "calls per exact status code" },
                        "error_rate": { "type": "number" } }), latency_fields()) } } } },
                "Merchants": { "type": "object", "required": ["merchants"], "properties": {
                    "merchants": { "type": "array", "items": { "type": "object", "properties": {
                        "merchant": { "type": "string" }, "calls": { "type": "integer" }, "errors": { "type": "integer", "description": "5xx calls" },
                        "error_rate": { "type": "number" } } } } } }
            }
        },
        "security": [{ "bearer": [] }, {}],
        "paths": {
            "/v1/ingest": { "post": {
                "summary": "Ingest API-call logs",
                "description": "NDJSON (one JSON object per line) or a JSON array of objects; optional Content-Encoding gzip or zstd. Answers only after accepted records are durable.",
                "requestBody": { "required": true, "content": { "application/x-ndjson": { "schema": { "type": "string" } }, "application/json": { "schema": { "type": "array", "items": { "type": "object" } } } } },
                "responses": {
                    "200": { "description": "All records accepted", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/IngestReply" } } } },
                    "207": { "description": "Some records rejected, the others accepted", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/IngestReply" } } } },
                    "400": error_response("Unreadable body"), "401": error_response("Missing or invalid token"),
                    "413": error_response("Body over the size limit"), "415": error_response("Unsupported content encoding"),
                    "429": error_response("Too many concurrent requests; see Retry-After"), "503": error_response("Overloaded; see Retry-After")
                } } },
            "/v1/admin/consumers": admin_consumers,
            "/v1/admin/backpressure": admin_backpressure,
            "/v1/merchants/{merchant}": { "get": {
                "summary": "Whether the store knows a merchant (exact name)",
                "parameters": [merchant],
                "responses": { "200": { "description": "Known merchant", "content": { "application/json": { "schema": {
                    "type": "object", "required": ["merchant", "last_seen"], "properties": {
                        "merchant": { "type": "string" },
                        "last_seen": { "type": "string", "format": "date-time", "description": "Start of the latest minute with calls" } } } } } },
                    "404": error_response("Unknown merchant (code unknown_merchant)") } } },
            "/v1/merchants/{merchant}/activity": { "get": {
                "summary": "A merchant's calls over time",
                "parameters": [merchant, from, to,
                    { "name": "step", "in": "query", "schema": { "type": "string", "enum": ["1m", "5m", "1h", "1d"], "default": "1m" } },
                    { "name": "api", "in": "query", "schema": { "type": "string" }, "description": "Only this API" }],
                "responses": { "200": { "description": "Buckets, empty ones included", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Activity" } } } },
                    "400": error_response("Bad parameter") } } },
            "/v1/merchants/{merchant}/apis": { "get": {
                "summary": "Every API a merchant called",
                "parameters": [merchant, from, to,
                    { "name": "sort", "in": "query", "schema": { "type": "string", "enum": ["calls", "errors", "error_rate", "p99", "api"], "default": "calls" } }],
                "responses": { "200": { "description": "One row per API", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Apis" } } } },
                    "400": error_response("Bad parameter") } } },
            "/v1/merchants": { "get": {
                "summary": "Top merchants",
                "parameters": [from, to,
                    { "name": "sort", "in": "query", "schema": { "type": "string", "enum": ["calls", "errors", "error_rate"], "default": "calls" } },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 50 } }],
                "responses": { "200": { "description": "Ranking", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Merchants" } } } },
                    "400": error_response("Bad parameter") } } },
            "/v1/merchants/search": { "get": {
                "summary": "Known merchants starting with a prefix, ignoring case (suggestions)",
                "parameters": [
                    { "name": "prefix", "in": "query", "schema": { "type": "string", "default": "" } },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 20 } }],
                "responses": { "200": { "description": "Matching merchant accounts in name order", "content": { "application/json": { "schema": {
                    "type": "object", "properties": { "prefix": { "type": "string" }, "merchants": { "type": "array", "items": { "type": "string" } } } } } } },
                    "400": error_response("Bad parameter") } } },
            "/v1/activity/stream": { "get": {
                "summary": "The activity stream as server-sent events",
                "description": "One `activity` event per closed (merchant, api, minute) window or correction from now on (JSON data with `correction` and `dedupe_key`); a `lagged` event tells a slow reader how many records it missed.",
                "parameters": [{ "name": "merchant", "in": "query", "schema": { "type": "string" }, "description": "Only this merchant" }],
                "responses": { "200": { "description": "text/event-stream" } } } },
            "/v1/events/{corr_id}": { "get": {
                "summary": "The call(s) that carried a correlation id",
                "description": "Each event with every field as ingested: ts (RFC 3339), merchant, api, status, latency_ms, corr_id, the optional mapped fields, and every unmapped field of the original record.",
                "parameters": [
                    { "name": "corr_id", "in": "path", "required": true, "schema": { "type": "string" } },
                    { "name": "merchant", "in": "query", "schema": { "type": "string" }, "description": "Narrows the search to one merchant" },
                    time_param("from", "Start, inclusive (default: 24 hours before `to`)"), time_param("to", "End, exclusive (default: now)")],
                "responses": { "200": { "description": "Matching events, oldest first", "content": { "application/json": { "schema": {
                    "type": "object", "properties": { "events": { "type": "array", "items": { "type": "object" } } } } } } },
                    "400": error_response("Bad parameter") } } },
            "/v1/merchants/{merchant}/events": { "get": {
                "summary": "A merchant's raw calls, newest first",
                "parameters": [merchant.clone(), time_param("from", "Start, inclusive (default: 1 hour before `to`)"), time_param("to", "End, exclusive (default: now)"),
                    { "name": "api", "in": "query", "schema": { "type": "string" } },
                    { "name": "status", "in": "query", "schema": { "type": "integer", "minimum": 100, "maximum": 599 } },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } },
                    { "name": "cursor", "in": "query", "schema": { "type": "string" }, "description": "`next_cursor` of the previous page" }],
                "responses": { "200": { "description": "A page of events", "content": { "application/json": { "schema": {
                    "type": "object", "properties": { "merchant": { "type": "string" }, "events": { "type": "array", "items": { "type": "object" } },
                        "next_cursor": { "type": ["string", "null"], "description": "null on the last page" } } } } } },
                    "400": error_response("Bad parameter") } } },
            "/metrics": { "get": { "summary": "Prometheus metrics", "responses": { "200": { "description": "Text exposition" } } } },
            "/healthz": { "get": { "summary": "Liveness", "security": [], "responses": { "200": { "description": "Up" } } } },
            "/readyz": { "get": { "summary": "Readiness", "security": [], "responses": { "200": { "description": "Ready" }, "503": error_response("Not ready") } } }
        }
    })
}

/// `GET /openapi.json`.
pub async fn document() -> Json<Value> {
    Json(spec())
}
