//! Field mapping and record parsing: one JSON log record to an [`ApiCallRef`].
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

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use thiserror::Error;

use crate::event::ApiCallRef;
use crate::time;

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

/// Why a record was rejected: a stable code, also used as a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    InvalidJson,
    InvalidUtf8,
    NotAnObject,
    MissingField,
    WrongType,
    InvalidValue,
    TooLong,
    TooOld,
    TooFarInFuture,
    RecordTooLarge,
}

impl RejectReason {
    /// Every reason, for metrics pre-registration.
    pub const ALL: [RejectReason; 10] = [
        RejectReason::InvalidJson,
        RejectReason::InvalidUtf8,
        RejectReason::NotAnObject,
        RejectReason::MissingField,
        RejectReason::WrongType,
        RejectReason::InvalidValue,
        RejectReason::TooLong,
        RejectReason::TooOld,
        RejectReason::TooFarInFuture,
        RejectReason::RecordTooLarge,
    ];

    /// The stable code.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::MissingField => "missing_field",
            RejectReason::WrongType => "wrong_type",
            RejectReason::InvalidValue => "invalid_value",
            RejectReason::TooLong => "too_long",
            RejectReason::TooOld => "too_old",
            RejectReason::TooFarInFuture => "too_far_in_future",
            RejectReason::RecordTooLarge => "record_too_large",
        }
    }
}

/// A rejected record: which field (as named in the record), why, and a stable code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}{message}", field.as_deref().map(|name| format!("{name}: ")).unwrap_or_default())]
pub struct RecordError {
    pub field: Option<String>,
    pub reason: RejectReason,
    pub message: String,
}

impl RecordError {
    pub fn new(field: Option<&str>, reason: RejectReason, message: impl Into<String>) -> Self {
        Self {
            field: field.map(str::to_owned),
            reason,
            message: message.into(),
        }
    }
}

/// A mapping that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MappingError {
    #[error("field mapping for {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

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

#[derive(Debug)]
enum Entry {
    Leaf(Field),
    Branch(Node),
}

#[derive(Debug)]
struct Node {
    entries: Vec<(String, Entry)>,
    /// Entry index + 1 by [`bucket_of`] the key; 0 for none, [`SHARED_BUCKET`] when two
    /// entries share the bucket (then the entries are searched in turn).
    buckets: [u8; 64],
}

impl Default for Node {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            buckets: [0; 64],
        }
    }
}

const SHARED_BUCKET: u8 = u8::MAX;

/// A key's bucket: a mix of its length and first and last bytes, which tells the usual log
/// field names apart.
fn bucket_of(key: &[u8]) -> usize {
    let (Some(first), Some(last)) = (key.first(), key.last()) else {
        return 0;
    };
    (key.len() * 7 + usize::from(*first) * 3 + usize::from(*last)) & 63
}

impl Node {
    /// The entry named `key`.
    fn find(&self, key: &str) -> Option<&(String, Entry)> {
        let bytes = key.as_bytes();
        match self.buckets[bucket_of(bytes)] {
            0 => None,
            SHARED_BUCKET => self
                .entries
                .iter()
                .find(|(name, _)| name.as_bytes() == bytes),
            slot => self
                .entries
                .get(usize::from(slot) - 1)
                .filter(|(name, _)| name.as_bytes() == bytes),
        }
    }

    fn push(&mut self, name: String, entry: Entry) {
        let bucket = &mut self.buckets[bucket_of(name.as_bytes())];
        *bucket = match *bucket {
            // More entries than slot numbers: search them all.
            0 if self.entries.len() < usize::from(SHARED_BUCKET) - 1 => {
                self.entries.len() as u8 + 1
            }
            _ => SHARED_BUCKET,
        };
        self.entries.push((name, entry));
    }
}

/// Parses records with one compiled [`FieldMapping`]. Cheap to share between threads.
#[derive(Debug)]
pub struct EventParser {
    root: Node,
    /// How each field is named in error messages: its pointer without the leading slash.
    display_names: [String; FIELD_COUNT],
    keep_attributes: bool,
    /// Every field maps to a top-level key: the fast scanner applies.
    flat: bool,
}

fn split_pointer(field: &'static str, pointer: &str) -> Result<Vec<String>, MappingError> {
    let invalid = |reason: &str| MappingError::Invalid {
        field,
        reason: reason.to_owned(),
    };
    let body = match pointer.strip_prefix('/') {
        Some(body) => body,
        None if !pointer.is_empty() => return Ok(vec![pointer.to_owned()]),
        None => return Err(invalid("empty pointer")),
    };
    body.split('/')
        .map(|token| {
            if token.is_empty() {
                return Err(invalid("empty pointer segment"));
            }
            Ok(token.replace("~1", "/").replace("~0", "~"))
        })
        .collect()
}

impl EventParser {
    /// Compiles `mapping`. With `keep_attributes`, unmapped top-level fields are kept, raw, in
    /// [`ApiCallRef::attributes`]; without, they are skipped (faster).
    pub fn new(mapping: &FieldMapping, keep_attributes: bool) -> Result<Self, MappingError> {
        let fields: [(&'static str, &str, Field); FIELD_COUNT] = [
            ("ts", &mapping.ts, Field::Ts),
            ("merchant", &mapping.merchant, Field::Merchant),
            ("api", &mapping.api, Field::Api),
            ("status", &mapping.status, Field::Status),
            ("latency_ms", &mapping.latency_ms, Field::Latency),
            ("corr_id", &mapping.corr_id, Field::CorrId),
            ("partner", &mapping.partner, Field::Partner),
            ("method", &mapping.method, Field::Method),
            ("path", &mapping.path, Field::Path),
            ("host", &mapping.host, Field::Host),
            ("region", &mapping.region, Field::Region),
        ];
        let mut root = Node::default();
        let mut display_names: [String; FIELD_COUNT] = Default::default();
        for (name, pointer, field) in fields {
            let segments = split_pointer(name, pointer)?;
            display_names[field as usize] = segments.join("/");
            insert_path(&mut root, &segments, field).map_err(|reason| MappingError::Invalid {
                field: name,
                reason,
            })?;
        }
        let flat = root
            .entries
            .iter()
            .all(|(_, entry)| matches!(entry, Entry::Leaf(_)));
        Ok(Self {
            root,
            display_names,
            keep_attributes,
            flat,
        })
    }

    fn name(&self, field: Field) -> &str {
        &self.display_names[field as usize]
    }

    /// Parses one record (a JSON object) and validates it against `bounds`.
    pub fn parse<'a>(
        &self,
        record: &'a [u8],
        bounds: TimeBounds,
    ) -> Result<ApiCallRef<'a>, RecordError> {
        if self.flat
            && let Ok(text) = std::str::from_utf8(record)
            && let Some(slots) = fast::scan(text, &self.root, self.keep_attributes)
        {
            return self.build(slots, bounds);
        }
        // Strings that are kept (mapped fields, raw attributes) are checked for UTF-8 as they
        // are read; only when the record fails is the whole of it checked, to say why.
        let reader = serde_json::de::SliceRead::new(record);
        self.parse_from(reader, bounds)
            .map_err(|error| match std::str::from_utf8(record) {
                Err(utf8) if error.reason == RejectReason::InvalidJson => RecordError::new(
                    None,
                    RejectReason::InvalidUtf8,
                    format!("record is not valid UTF-8 (at byte {})", utf8.valid_up_to()),
                ),
                _ => error,
            })
    }

    /// Parses one record given as text; see [`EventParser::parse`].
    pub fn parse_str<'a>(
        &self,
        text: &'a str,
        bounds: TimeBounds,
    ) -> Result<ApiCallRef<'a>, RecordError> {
        if self.flat
            && let Some(slots) = fast::scan(text, &self.root, self.keep_attributes)
        {
            return self.build(slots, bounds);
        }
        self.parse_from(serde_json::de::StrRead::new(text), bounds)
    }

    /// The serde path alone, for checking the fast scanner against it.
    #[cfg(test)]
    fn parse_without_fast_path<'a>(
        &self,
        record: &'a [u8],
        bounds: TimeBounds,
    ) -> Result<ApiCallRef<'a>, RecordError> {
        self.parse_from(serde_json::de::SliceRead::new(record), bounds)
    }

    fn parse_from<'a, R: serde_json::de::Read<'a>>(
        &self,
        reader: R,
        bounds: TimeBounds,
    ) -> Result<ApiCallRef<'a>, RecordError> {
        let mut slots = Slots::default();
        let mut deserializer = serde_json::Deserializer::new(reader);
        let seed = ObjectSeed {
            node: &self.root,
            slots: &mut slots,
            keep_attributes: self.keep_attributes,
            top: true,
        };
        let is_object = seed.deserialize(&mut deserializer).map_err(json_error)?;
        deserializer.end().map_err(json_error)?;
        if !is_object {
            return Err(RecordError::new(
                None,
                RejectReason::NotAnObject,
                "record is not a JSON object",
            ));
        }
        self.build(slots, bounds)
    }

    fn build<'a>(
        &self,
        mut slots: Slots<'a>,
        bounds: TimeBounds,
    ) -> Result<ApiCallRef<'a>, RecordError> {
        let ts_us = self.timestamp(slots.take(Field::Ts))?;
        if ts_us < bounds.min_ts_us {
            return Err(RecordError::new(
                Some(self.name(Field::Ts)),
                RejectReason::TooOld,
                "event is older than the rollup retention",
            ));
        }
        if ts_us > bounds.max_ts_us {
            return Err(RecordError::new(
                Some(self.name(Field::Ts)),
                RejectReason::TooFarInFuture,
                "event is further in the future than the allowed clock skew",
            ));
        }
        let merchant = self.identifier(Field::Merchant, slots.take(Field::Merchant))?;
        let api = self.identifier(Field::Api, slots.take(Field::Api))?;
        let status = self.status(slots.take(Field::Status))?;
        let latency_ms = self.latency(slots.take(Field::Latency))?;
        let corr_id = self.identifier(Field::CorrId, slots.take(Field::CorrId))?;
        let attributes = match slots.attributes.take() {
            Some(text) if text.len() > MAX_ATTRIBUTES_BYTES => {
                return Err(RecordError::new(
                    None,
                    RejectReason::TooLong,
                    format!("unmapped attributes exceed {MAX_ATTRIBUTES_BYTES} bytes"),
                ));
            }
            other => other.map(Cow::Owned),
        };
        Ok(ApiCallRef {
            ts_us,
            merchant,
            api,
            status,
            latency_ms,
            corr_id,
            partner: self.optional_text(Field::Partner, slots.take(Field::Partner))?,
            method: self.optional_text(Field::Method, slots.take(Field::Method))?,
            path: self.optional_text(Field::Path, slots.take(Field::Path))?,
            host: self.optional_text(Field::Host, slots.take(Field::Host))?,
            region: self.optional_text(Field::Region, slots.take(Field::Region))?,
            attributes,
        })
    }

    fn missing(&self, field: Field) -> RecordError {
        RecordError::new(
            Some(self.name(field)),
            RejectReason::MissingField,
            "required field is missing",
        )
    }

    fn wrong_type(&self, field: Field, expected: &str, found: &Scalar<'_>) -> RecordError {
        RecordError::new(
            Some(self.name(field)),
            RejectReason::WrongType,
            format!("expected {expected}, found {}", found.kind()),
        )
    }

    fn invalid(&self, field: Field, message: impl Into<String>) -> RecordError {
        RecordError::new(Some(self.name(field)), RejectReason::InvalidValue, message)
    }

    fn timestamp(&self, value: Scalar<'_>) -> Result<i64, RecordError> {
        let parsed = match &value {
            Scalar::Missing | Scalar::Null => return Err(self.missing(Field::Ts)),
            Scalar::Str(text)
                if text.bytes().all(|byte| byte.is_ascii_digit()) && !text.is_empty() =>
            {
                text.parse::<i64>()
                    .map_err(|_| time::TimeError::OutOfRange)
                    .and_then(time::from_epoch_number)
            }
            Scalar::Str(text) => time::parse_rfc3339(text),
            Scalar::Int(number) => time::from_epoch_number(*number),
            Scalar::UInt(number) => i64::try_from(*number)
                .map_err(|_| time::TimeError::OutOfRange)
                .and_then(time::from_epoch_number),
            Scalar::Float(number) => time::from_epoch_float(*number),
            other => {
                return Err(self.wrong_type(
                    Field::Ts,
                    "an RFC 3339 string or epoch number",
                    other,
                ));
            }
        };
        parsed.map_err(|error| self.invalid(Field::Ts, error.to_string()))
    }

    fn identifier<'a>(&self, field: Field, value: Scalar<'a>) -> Result<Cow<'a, str>, RecordError> {
        let text = match value {
            Scalar::Missing | Scalar::Null => return Err(self.missing(field)),
            Scalar::Str(text) => text,
            Scalar::Int(number) if field != Field::Api => Cow::Owned(number.to_string()),
            Scalar::UInt(number) if field != Field::Api => Cow::Owned(number.to_string()),
            other => return Err(self.wrong_type(field, "a string", &other)),
        };
        if text.is_empty() {
            return Err(self.invalid(field, "must not be empty"));
        }
        if text.len() > MAX_ID_BYTES {
            return Err(RecordError::new(
                Some(self.name(field)),
                RejectReason::TooLong,
                format!("longer than {MAX_ID_BYTES} bytes ({} bytes)", text.len()),
            ));
        }
        if has_control_character(&text) {
            return Err(self.invalid(field, "must not contain control characters"));
        }
        Ok(text)
    }

    fn optional_text<'a>(
        &self,
        field: Field,
        value: Scalar<'a>,
    ) -> Result<Option<Cow<'a, str>>, RecordError> {
        match value {
            Scalar::Missing | Scalar::Null => Ok(None),
            Scalar::Str(text) if text.len() > MAX_TEXT_BYTES => Err(RecordError::new(
                Some(self.name(field)),
                RejectReason::TooLong,
                format!("longer than {MAX_TEXT_BYTES} bytes ({} bytes)", text.len()),
            )),
            Scalar::Str(text) => Ok(Some(text)),
            other => Err(self.wrong_type(field, "a string", &other)),
        }
    }

    fn status(&self, value: Scalar<'_>) -> Result<u16, RecordError> {
        let number: i64 = match &value {
            Scalar::Missing | Scalar::Null => return Err(self.missing(Field::Status)),
            Scalar::Int(number) => *number,
            Scalar::UInt(number) => i64::try_from(*number).unwrap_or(i64::MAX),
            Scalar::Str(text) => text
                .trim()
                .parse()
                .map_err(|_| self.invalid(Field::Status, format!("not a status code: {text:?}")))?,
            Scalar::Float(number) if number.fract() == 0.0 && number.abs() < 1e6 => *number as i64,
            other => return Err(self.wrong_type(Field::Status, "an integer status code", other)),
        };
        if !(100..=599).contains(&number) {
            return Err(self.invalid(
                Field::Status,
                format!("status {number} is not in 100..=599"),
            ));
        }
        Ok(number as u16)
    }

    fn latency(&self, value: Scalar<'_>) -> Result<f64, RecordError> {
        let number = match &value {
            Scalar::Missing | Scalar::Null => return Err(self.missing(Field::Latency)),
            Scalar::Int(number) => *number as f64,
            Scalar::UInt(number) => *number as f64,
            Scalar::Float(number) => *number,
            Scalar::Str(text) => text
                .trim()
                .parse::<f64>()
                .map_err(|_| self.invalid(Field::Latency, format!("not a number: {text:?}")))?,
            other => {
                return Err(self.wrong_type(Field::Latency, "a number of milliseconds", other));
            }
        };
        if !number.is_finite() || number < 0.0 {
            return Err(self.invalid(
                Field::Latency,
                format!("latency {number} must be a non-negative number"),
            ));
        }
        if number > MAX_LATENCY_MS {
            return Err(self.invalid(
                Field::Latency,
                format!("latency {number} ms is longer than a day"),
            ));
        }
        Ok(number)
    }
}

/// Whether `text` holds a Unicode control character (C0, DEL or C1), checked on the bytes:
/// C1 controls are the two-byte sequences `C2 80`..`C2 9F`.
fn has_control_character(text: &str) -> bool {
    let bytes = text.as_bytes();
    let c0_or_delete = bytes.iter().fold(false, |found, byte| {
        found | (*byte < 0x20) | (*byte == 0x7f)
    });
    c0_or_delete
        || (!bytes.is_ascii()
            && bytes
                .windows(2)
                .any(|pair| pair[0] == 0xc2 && (0x80..=0x9f).contains(&pair[1])))
}

fn insert_path(node: &mut Node, segments: &[String], field: Field) -> Result<(), String> {
    let (first, rest) = segments.split_first().ok_or("empty pointer")?;
    let existing = node.entries.iter_mut().position(|(name, _)| name == first);
    if rest.is_empty() {
        if existing.is_some() {
            return Err(format!("{first:?} is already mapped to another field"));
        }
        node.push(first.clone(), Entry::Leaf(field));
        return Ok(());
    }
    let index = match existing {
        Some(index) => index,
        None => {
            node.push(first.clone(), Entry::Branch(Node::default()));
            node.entries.len() - 1
        }
    };
    match &mut node.entries[index].1 {
        Entry::Branch(child) => insert_path(child, rest, field),
        Entry::Leaf(_) => Err(format!(
            "{first:?} is mapped to a value and cannot hold other fields"
        )),
    }
}

fn json_error(error: serde_json::Error) -> RecordError {
    RecordError::new(
        None,
        RejectReason::InvalidJson,
        format!("invalid JSON: {error}"),
    )
}

/// A mapped value before it is checked: whatever JSON scalar the record held.
#[derive(Debug, Default)]
enum Scalar<'de> {
    #[default]
    Missing,
    Null,
    Bool,
    Str(Cow<'de, str>),
    Int(i64),
    UInt(u64),
    Float(f64),
    Compound,
}

impl Scalar<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Scalar::Missing => "nothing",
            Scalar::Null => "null",
            Scalar::Bool => "a boolean",
            Scalar::Str(_) => "a string",
            Scalar::Int(_) | Scalar::UInt(_) => "an integer",
            Scalar::Float(_) => "a number",
            Scalar::Compound => "an object or array",
        }
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(value)))
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(value.to_owned())))
    }
    fn visit_string<E: de::Error>(self, value: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(value)))
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Int(value))
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(Scalar::UInt(value))
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float(value))
    }
    fn visit_bool<E: de::Error>(self, _value: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Compound)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Compound)
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match deserializer.deserialize_str(ScalarVisitor)? {
            Scalar::Str(text) => Ok(Key(text)),
            _ => Err(de::Error::custom("object key is not a string")),
        }
    }
}

#[derive(Default)]
struct Slots<'de> {
    values: [Scalar<'de>; FIELD_COUNT],
    attributes: Option<String>,
}

impl<'de> Slots<'de> {
    fn take(&mut self, field: Field) -> Scalar<'de> {
        std::mem::take(&mut self.values[field as usize])
    }

    fn push_attribute(&mut self, key: &str, raw: &RawValue) {
        self.push_attribute_text(key, raw.get());
    }

    fn push_attribute_text(&mut self, key: &str, raw: &str) {
        let text = self.attributes.get_or_insert_with(|| String::from("{"));
        if text.len() > 1 {
            text.push(',');
        }
        // Serializing a str into a String cannot fail.
        let quoted = serde_json::to_string(key).unwrap_or_default();
        text.push_str(&quoted);
        text.push(':');
        text.push_str(raw);
    }

    fn close_attributes(&mut self) {
        if let Some(text) = self.attributes.as_mut() {
            text.push('}');
        }
    }
}

/// Walks one object level of the record along the mapping tree. Yields whether the value was
/// an object; any other value is skipped.
struct ObjectSeed<'s, 'de> {
    node: &'s Node,
    slots: &'s mut Slots<'de>,
    keep_attributes: bool,
    top: bool,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_, 'de> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_, 'de> {
    type Value = bool;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let keep = self.keep_attributes && self.top;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let entry = self.node.find(&key);
            match entry {
                Some((_, Entry::Leaf(field))) => {
                    self.slots.values[*field as usize] = map.next_value::<Scalar<'de>>()?;
                }
                Some((_, Entry::Branch(child))) if keep => {
                    // Keep the whole nested object as an attribute too, then map inside it.
                    let raw: &'de RawValue = map.next_value()?;
                    self.slots.push_attribute(&key, raw);
                    let mut nested = serde_json::Deserializer::from_str(raw.get());
                    let seed = ObjectSeed {
                        node: child,
                        slots: &mut *self.slots,
                        keep_attributes: false,
                        top: false,
                    };
                    seed.deserialize(&mut nested).map_err(de::Error::custom)?;
                }
                Some((_, Entry::Branch(child))) => {
                    map.next_value_seed(ObjectSeed {
                        node: child,
                        slots: &mut *self.slots,
                        keep_attributes: false,
                        top: false,
                    })?;
                }
                None if keep => {
                    let raw: &'de RawValue = map.next_value()?;
                    self.slots.push_attribute(&key, raw);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if keep {
            self.slots.close_attributes();
        }
        Ok(true)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_borrowed_str<E: de::Error>(self, _value: &'de str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E: de::Error>(self, _value: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _value: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _value: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _value: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_bool<E: de::Error>(self, _value: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

mod fast;
#[cfg(test)]
mod tests;
