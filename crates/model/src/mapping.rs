//! Field mapping and record parsing: one JSON log record to an [`ApiCallRef`](crate::event::ApiCallRef).
//!
//! Each field of the event is read from a configurable JSON pointer (RFC 6901), so an existing
//! log format is ingested without changing its producers: `{"req":{"acct":"M1"}}` maps with
//! `merchant = "/req/acct"`. The pointers are compiled into a small tree that the parser walks
//! while it streams through the record, so a record is read once, nested or not, and mapped
//! strings are borrowed from the input when they carry no escapes.
//!
//! A record that cannot be used yields a [`RecordError`] naming the field and the reason; the
//! caller decides what to do with it (the HTTP gateway reports it per record).
//!
//! ```
//! use mm_model::mapping::{EventParser, FieldMapping, TimeBounds};
//! let parser = EventParser::new(&FieldMapping::default(), true).unwrap();
//! let line = br#"{"ts":"2026-11-21T15:04:05Z","merchant":"M1","api":"/v1/payments","status":200,"latency_ms":12.5,"corr_id":"c-1","sdk":"java"}"#;
//! let event = parser.parse(line, TimeBounds::UNBOUNDED).unwrap();
//! assert_eq!(event.merchant, "M1");
//! assert_eq!(event.attributes.as_deref(), Some(r#"{"sdk":"java"}"#));
//! ```

mod error;
mod fast;
mod parser;
mod serde_path;
mod tree;

pub use error::{MappingError, RecordError, RejectReason};
pub use parser::EventParser;

use serde::{Deserialize, Serialize};
use serde_path::{Scalar, Slots};
use tree::{Entry, Node};

/// Longest merchant account, API name or correlation id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest optional text field (partner, method, path, host, region), in bytes.
pub const MAX_TEXT_BYTES: usize = 2048;
/// Largest unmapped-attribute object kept per record, in bytes.
pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;
/// Largest latency accepted: one day.
pub const MAX_LATENCY_MS: f64 = 86_400_000.0;

/// Where each event field is read from: a JSON pointer (`/a/b`) or a top-level name (`a`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldMapping {
    /// Event time: RFC 3339 text, or epoch milliseconds / microseconds as a number.
    pub ts: String,
    /// Merchant account (text, or an integer id).
    pub merchant: String,
    /// API name.
    pub api: String,
    /// HTTP status code.
    pub status: String,
    /// Latency in milliseconds, fractions allowed.
    pub latency_ms: String,
    /// Correlation id (text, or an integer id).
    pub corr_id: String,
    /// Optional partner (platform) the merchant belongs to.
    pub partner: String,
    /// Optional HTTP method.
    pub method: String,
    /// Optional request path.
    pub path: String,
    /// Optional host that served the call.
    pub host: String,
    /// Optional region.
    pub region: String,
}

impl Default for FieldMapping {
    fn default() -> Self {
        Self {
            ts: "/ts".into(),
            merchant: "/merchant".into(),
            api: "/api".into(),
            status: "/status".into(),
            latency_ms: "/latency_ms".into(),
            corr_id: "/corr_id".into(),
            partner: "/partner".into(),
            method: "/method".into(),
            path: "/path".into(),
            host: "/host".into(),
            region: "/region".into(),
        }
    }
}

/// The event fields, in the order of the parser's slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Ts = 0,
    Merchant,
    Api,
    Status,
    Latency,
    CorrId,
    Partner,
    Method,
    Path,
    Host,
    Region,
}

const FIELD_COUNT: usize = 11;

/// Accepted event-time range, inclusive, in µs since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBounds {
    pub min_ts_us: i64,
    pub max_ts_us: i64,
}

impl TimeBounds {
    /// No bounds.
    pub const UNBOUNDED: TimeBounds = TimeBounds {
        min_ts_us: i64::MIN,
        max_ts_us: i64::MAX,
    };

    /// The event times accepted at `reference_us` (the arrival time, or a Kafka record's own
    /// timestamp): no older than `retention_us`, no further ahead than `max_skew_us`.
    pub fn around(reference_us: i64, retention_us: i64, max_skew_us: i64) -> TimeBounds {
        TimeBounds {
            min_ts_us: reference_us.saturating_sub(retention_us),
            max_ts_us: reference_us.saturating_add(max_skew_us),
        }
    }
}

#[cfg(test)]
mod tests;

impl FieldMapping {
    /// The JSON Schema (draft 2020-12) of the records this mapping reads: each field at its
    /// place (nested pointers as nested objects), the six core fields required. It describes
    /// what `/v1/ingest` accepts; the event gateway registers it as the built-in
    /// `merchant.api-call` type.
    pub fn json_schema(&self) -> serde_json::Value {
        use serde_json::json;
        let text = json!({"type": "string", "maxLength": MAX_TEXT_BYTES});
        let fields = [
            (
                &self.ts,
                json!({"type": ["string", "number"], "description": "Event time: RFC 3339 text, or epoch milliseconds or microseconds"}),
                true,
            ),
            (
                &self.merchant,
                json!({"type": ["string", "integer"], "description": "Merchant account"}),
                true,
            ),
            (
                &self.api,
                json!({"type": "string", "description": "API name"}),
                true,
            ),
            (
                &self.status,
                json!({"type": "integer", "description": "HTTP status code"}),
                true,
            ),
            (
                &self.latency_ms,
                json!({"type": "number", "minimum": 0, "maximum": MAX_LATENCY_MS, "description": "Latency in milliseconds"}),
                true,
            ),
            (
                &self.corr_id,
                json!({"type": ["string", "integer"], "description": "Correlation id"}),
                true,
            ),
            (&self.partner, text.clone(), false),
            (&self.method, text.clone(), false),
            (&self.path, text.clone(), false),
            (&self.host, text.clone(), false),
            (&self.region, text, false),
        ];
        let mut root = json!({"type": "object", "properties": {}, "required": []});
        for (place, schema, required) in fields {
            let tokens: Vec<String> = match place.strip_prefix('/') {
                Some(pointer) => pointer
                    .split('/')
                    .map(|token| token.replace("~1", "/").replace("~0", "~"))
                    .collect(),
                None => vec![place.clone()],
            };
            let Some((last, parents)) = tokens.split_last() else {
                continue;
            };
            let mut node = &mut root;
            for parent in parents {
                if required
                    && let Some(names) = node["required"].as_array_mut()
                    && !names.iter().any(|name| name == parent)
                {
                    names.push(json!(parent));
                }
                let entry = &mut node["properties"][parent.as_str()];
                if entry.is_null() {
                    *entry = json!({"type": "object", "properties": {}, "required": []});
                }
                node = entry;
            }
            node["properties"][last.as_str()] = schema;
            if required && let Some(names) = node["required"].as_array_mut() {
                names.push(json!(last));
            }
        }
        root
    }
}
