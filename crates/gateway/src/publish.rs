//! Publishing: a batch of events of one type, each checked and placed on its own.
//!
//! Each event goes through the steps Nakadi names, and the first that fails is its answer:
//! - `validating`: a JSON object whose `metadata` has an `eid` (UUID) and an `occurred_at`
//!   (RFC 3339) and none of the fields the gateway sets; the event without its `metadata`
//!   valid under the type's current schema. Every failure names the JSON pointer of the field
//!   and the rule (the schema keyword).
//! - `partitioning`: `hash` joins the key fields' values as text (a string as is, anything
//!   else as its JSON) with `|` and takes the Java client's murmur2 partition, so a Kafka
//!   producer keyed the same way agrees; `random` picks one; `user_defined` takes
//!   `metadata.partition`.
//! - `enriching`: the gateway adds `received_at`, `version`, `partition`, `flow_id` and
//!   `event_type` to the metadata, and the batch's W3C trace context (`traceparent`,
//!   `tracestate`: the producer span's, or the caller's when traces are off) when it has one.
//! - `publishing`: the durable append ([`crate::log`]); its failure fails the whole batch.

use std::borrow::Cow;

use mm_model::lines::without_byte_order_mark;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::event_type::PartitionStrategy;
use crate::log::{BatchContext, Record};
use crate::registry::Registered;

/// Metadata fields only the gateway sets.
const GATEWAY_FIELDS: [&str; 7] = [
    "received_at",
    "version",
    "event_type",
    "offset",
    "flow_id",
    "traceparent",
    "tracestate",
];
/// Validation errors reported per event at most.
const MAX_REPORTED: usize = 5;

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PublishingStatus {
    Submitted,
    Failed,
    /// Not published because another event of an atomic batch failed.
    Aborted,
}

/// The step an event reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    None,
    Validating,
    Partitioning,
    Enriching,
    Publishing,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::None => "none",
            Step::Validating => "validating",
            Step::Partitioning => "partitioning",
            Step::Enriching => "enriching",
            Step::Publishing => "publishing",
        }
    }
}

/// One event's answer, in input order (Nakadi's shape).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PublishItem {
    /// The event's `metadata.eid` (empty when it has none).
    pub eid: String,
    pub publishing_status: PublishingStatus,
    pub step: Step,
    /// Why it failed or was aborted; empty when submitted.
    pub detail: String,
    /// The reason as a metric label (a schema keyword, `metadata`, `not_json`, ...).
    #[serde(skip)]
    pub reason: &'static str,
}

/// How a batch is published.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// All or nothing.
    pub atomic: bool,
    /// From `X-Flow-Id`, or generated.
    pub flow_id: String,
    /// Stamped as `received_at`.
    pub now_us: i64,
    /// The trace context stored with each event and carried in its Kafka headers: see
    /// [`producer_span`] and [`mm_trace::context::outgoing`].
    pub trace: Option<mm_trace::context::TraceHeaders>,
}

/// The span of publishing one batch (an OpenTelemetry producer span): the events' trace
/// context is this span's, so each consumer's span continues from it.
pub fn producer_span(event_type: &str) -> tracing::Span {
    tracing::info_span!(
        "publish",
        otel.name = format!("{event_type} publish"),
        otel.kind = "producer",
        messaging.system = "merchant-monitor",
        messaging.operation.type = "publish",
        messaging.destination.name = event_type,
    )
}

/// A batch checked and placed: the answer of each event and the records to append.
#[derive(Debug)]
pub struct Prepared {
    pub items: Vec<PublishItem>,
    /// The records to append, and the index of the item each answers.
    pub records: Vec<Record>,
    pub record_items: Vec<usize>,
    /// What the records share (version, received_at, flow_id).
    pub context: BatchContext,
}

/// A body that cannot be read as events at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnreadableBatch(pub String);

impl Prepared {
    /// Whether every event is submitted (once the append succeeds).
    pub fn all_valid(&self) -> bool {
        self.records.len() == self.items.len()
    }

    /// Marks every event that would be submitted as aborted (atomic batch with a failure).
    pub fn abort(&mut self) {
        for index in self.record_items.drain(..) {
            let item = &mut self.items[index];
            item.publishing_status = PublishingStatus::Aborted;
            item.step = Step::None;
            item.detail = "not published: the batch is atomic and another event failed".into();
            item.reason = "aborted";
        }
        self.records.clear();
    }

    /// Marks every event that was to be submitted as failed at publishing.
    pub fn fail_publishing(&mut self, detail: &str) {
        for index in self.record_items.drain(..) {
            let item = &mut self.items[index];
            item.publishing_status = PublishingStatus::Failed;
            item.step = Step::Publishing;
            item.detail = detail.to_owned();
            item.reason = "publishing";
        }
        self.records.clear();
    }
}

/// Splits a body into events, each as its own JSON text: a JSON array, or NDJSON (one event
/// per non-blank line). A UTF-8 byte order mark before the body or a line is not part of it.
pub fn split_batch(body: &[u8]) -> Result<Vec<&[u8]>, UnreadableBatch> {
    let body = without_byte_order_mark(body);
    let first = body.iter().find(|byte| !byte.is_ascii_whitespace());
    if first == Some(&b'[') {
        let events: Vec<&RawValue> = serde_json::from_slice(body).map_err(|error| {
            UnreadableBatch(format!("the body is not a JSON array of events: {error}"))
        })?;
        return Ok(events.into_iter().map(|raw| raw.get().as_bytes()).collect());
    }
    Ok(body
        .split(|byte| *byte == b'\n')
        .map(without_byte_order_mark)
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .collect())
}

/// Checks, partitions and enriches every event of `body` for `registered`.
pub fn prepare(
    registered: &Registered,
    body: &[u8],
    options: &PublishOptions,
) -> Result<Prepared, UnreadableBatch> {
    Ok(prepare_events(registered, split_batch(body)?, options))
}

/// Checks, partitions and enriches `events` (each its own JSON text) for `registered`.
pub fn prepare_events(
    registered: &Registered,
    events: Vec<&[u8]>,
    options: &PublishOptions,
) -> Prepared {
    let mut prepared = Prepared {
        items: Vec::with_capacity(events.len()),
        records: Vec::with_capacity(events.len()),
        record_items: Vec::with_capacity(events.len()),
        context: BatchContext {
            version: registered.event_type.version.to_string(),
            received_at: mm_model::time::format_rfc3339(options.now_us),
            flow_id: options.flow_id.clone(),
            trace: options.trace.clone(),
        },
    };
    let key_members = match registered.event_type.partition_strategy {
        PartitionStrategy::Hash => key_members(&registered.event_type.partition_key_fields),
        _ => Vec::new(),
    };
    let key_members: Vec<&str> = key_members.iter().map(String::as_str).collect();
    let enrichment = metadata::Enrichment::new(&prepared.context, &registered.event_type.name);
    for (index, event) in events.into_iter().enumerate() {
        let outcome = place(registered, event, &enrichment, &key_members);
        match outcome {
            Ok(Placed {
                eid,
                partition,
                key,
                occurred_at,
                bytes,
            }) => {
                prepared.items.push(PublishItem {
                    eid,
                    publishing_status: PublishingStatus::Submitted,
                    step: Step::None,
                    detail: String::new(),
                    reason: "",
                });
                prepared.records.push(Record {
                    partition,
                    key,
                    eid: prepared.items[index].eid.clone(),
                    occurred_at,
                    bytes,
                });
                prepared.record_items.push(index);
            }
            Err((eid, step, detail, reason)) => prepared.items.push(PublishItem {
                eid,
                publishing_status: PublishingStatus::Failed,
                step,
                detail,
                reason,
            }),
        }
    }
    if options.atomic && !prepared.all_valid() {
        prepared.abort();
    }
    prepared
}

/// An event placed: what its record needs.
struct Placed {
    eid: String,
    partition: u32,
    key: Option<String>,
    occurred_at: String,
    bytes: Vec<u8>,
}

/// A failed event: its eid, the step, the detail and the reason label.
type Failure = (String, Step, String, &'static str);

/// JSON Schema keywords as metric labels (the reason of a validation failure).
const KEYWORDS: &[&str] = &[
    "type",
    "enum",
    "const",
    "required",
    "properties",
    "additionalProperties",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "uniqueItems",
    "contains",
    "minProperties",
    "maxProperties",
    "dependentRequired",
    "propertyNames",
    "patternProperties",
    "anyOf",
    "oneOf",
    "allOf",
    "not",
    "if",
    "unevaluatedProperties",
    "unevaluatedItems",
    "false",
];

fn keyword_label(keyword: &str) -> &'static str {
    KEYWORDS
        .iter()
        .copied()
        .find(|known| *known == keyword)
        .unwrap_or("schema")
}

/// One event through validating, partitioning and enriching.
///
/// The stored event is written from the event's own text: its members as they came, then the
/// producer's metadata as it came with the gateway's members added.
fn place(
    registered: &Registered,
    raw: &[u8],
    enrichment: &metadata::Enrichment,
    key_members: &[&str],
) -> Result<Placed, Failure> {
    if let Some(placed) = place_fast(registered, raw, enrichment, key_members) {
        return Ok(placed);
    }
    let fields: Vec<(Cow<'_, str>, &RawValue)> = match serde_json::from_slice::<Fields<'_>>(raw) {
        Ok(fields) => fields.0,
        Err(error) if error.is_data() => {
            return Err((
                String::new(),
                Step::Validating,
                "an event is a JSON object".into(),
                "not_object",
            ));
        }
        Err(error) => {
            return Err((
                String::new(),
                Step::Validating,
                format!("the event is not JSON: {error}"),
                "not_json",
            ));
        }
    };
    let raw_metadata = fields
        .iter()
        .find(|(name, _)| name == "metadata")
        .map(|(_, value)| *value);
    let strategy = registered.event_type.partition_strategy;
    let view = raw_metadata.and_then(metadata::View::read);
    let eid = view
        .as_ref()
        .and_then(|view| view.eid.as_deref())
        .unwrap_or_default()
        .to_owned();
    let fail =
        |step: Step, detail: String, reason: &'static str| (eid.clone(), step, detail, reason);
    let (Some(raw_metadata), Some(view)) =
        (raw_metadata, view.filter(|view| clean(view, strategy)))
    else {
        return Err(fail(
            Step::Validating,
            metadata_problem(raw_metadata, strategy),
            "metadata",
        ));
    };
    // What the fast path did not take: the full validator decides and words the errors.
    let body = body_value(&fields, |name| name != "metadata")
        .map_err(|detail| fail(Step::Validating, detail, "not_json"))?;
    validate(registered, &body)
        .map_err(|(detail, reason)| fail(Step::Validating, detail, reason))?;
    let (partition, key) = partition_of(registered, &body, view.partition)
        .map_err(|detail| fail(Step::Partitioning, detail, "partition"))?;
    let mut bytes = Vec::with_capacity(raw.len() + 192);
    bytes.push(b'{');
    for (name, value) in fields.iter().filter(|(name, _)| name != "metadata") {
        match name {
            // Borrowed: the name had no escapes, so its text is its JSON as it is.
            Cow::Borrowed(name) => {
                bytes.push(b'"');
                bytes.extend_from_slice(name.as_bytes());
                bytes.push(b'"');
            }
            Cow::Owned(name) => serde_json::to_writer(&mut bytes, name)
                .map_err(|error| fail(Step::Enriching, error.to_string(), "enriching"))?,
        }
        bytes.push(b':');
        bytes.extend_from_slice(value.get().as_bytes());
        bytes.push(b',');
    }
    bytes.extend_from_slice(b"\"metadata\":");
    enrichment.write(raw_metadata, partition, &mut bytes);
    bytes.push(b'}');
    let occurred_at = view.occurred_at.map(Cow::into_owned).unwrap_or_default();
    Ok(Placed {
        eid,
        partition,
        key,
        occurred_at,
        bytes,
    })
}

/// The fast path of [`place`]: one pass over the event's text checks it against the schema
/// and finds its metadata and key members; the stored event is its text with the metadata
/// replaced by the enriched metadata. `None` when anything is amiss (the slow path then
/// decides and words the problem).
fn place_fast(
    registered: &Registered,
    raw: &[u8],
    enrichment: &metadata::Enrichment,
    key_members: &[&str],
) -> Option<Placed> {
    let raw = raw.trim_ascii_end();
    let scan = registered.fast.as_ref()?.scan(raw, key_members)?;
    let metadata_text = scan.metadata?;
    let raw_metadata: &RawValue = serde_json::from_str(metadata_text).ok()?;
    let view = metadata::View::read(raw_metadata)?;
    let strategy = registered.event_type.partition_strategy;
    if !clean(&view, strategy) {
        return None;
    }
    let (partition, key) = match strategy {
        PartitionStrategy::Hash => {
            let key_fields = &registered.event_type.partition_key_fields;
            let key = match plain_key(key_fields, key_members, &scan.keys) {
                Some(key) => key,
                // Deeper pointers, other values, escapes: the key fields' members as values.
                None => {
                    let mut members = Map::new();
                    for (name, text) in key_members.iter().zip(&scan.keys) {
                        members.insert((*name).to_owned(), serde_json::from_str((*text)?).ok()?);
                    }
                    partition_key(&Value::Object(members), key_fields).ok()?
                }
            };
            hashed(&registered.event_type, key)
        }
        _ => (keyless_partition(registered, view.partition).ok()?, None),
    };
    let start = metadata_text.as_ptr() as usize - raw.as_ptr() as usize;
    let end = start + metadata_text.len();
    let mut bytes = Vec::with_capacity(raw.len() + 192);
    bytes.extend_from_slice(raw.get(..start)?);
    enrichment.write(raw_metadata, partition, &mut bytes);
    bytes.extend_from_slice(raw.get(end..)?);
    Some(Placed {
        eid: view.eid?.into_owned(),
        partition,
        key,
        occurred_at: view.occurred_at?.into_owned(),
        bytes,
    })
}

/// The top-level members that hold the key fields (`/customer/id` → `customer`), each once.
fn key_members(key_fields: &[String]) -> Vec<String> {
    let mut members: Vec<String> = Vec::new();
    for field in key_fields {
        let member = first_segment(field);
        if !members.contains(&member) {
            members.push(member);
        }
    }
    members
}

/// The partition key straight from the members' text, when every key field is a top-level
/// member (`/order_id`) holding a string without escapes; `None` otherwise.
fn plain_key(key_fields: &[String], members: &[&str], texts: &[Option<&str>]) -> Option<String> {
    let mut key = String::new();
    for (index, field) in key_fields.iter().enumerate() {
        let name = field.strip_prefix('/')?;
        let position = members.iter().position(|member| *member == name)?;
        let text = texts.get(position).copied().flatten()?;
        let inner = text.strip_prefix('"')?.strip_suffix('"')?;
        if inner.contains('\\') {
            return None;
        }
        if index > 0 {
            key.push('|');
        }
        key.push_str(inner);
    }
    Some(key)
}

/// Whether the metadata passes [`check_metadata`] (which words the problem when not).
fn clean(view: &metadata::View<'_>, strategy: PartitionStrategy) -> bool {
    !view.odd
        && view.eid.as_deref().is_some_and(is_uuid)
        && view
            .occurred_at
            .as_deref()
            .is_some_and(|at| mm_model::time::parse_rfc3339(at).is_ok())
        && (view.partition.is_none() || strategy == PartitionStrategy::UserDefined)
}

/// What is wrong with an event's metadata (`raw`), in words.
fn metadata_problem(raw: Option<&RawValue>, strategy: PartitionStrategy) -> String {
    match raw.map(|raw| serde_json::from_str::<Value>(raw.get())) {
        Some(Ok(Value::Object(metadata))) => match check_metadata(&metadata, strategy) {
            Err(detail) => detail,
            // Only a member given twice reads differently member by member.
            Ok(()) => "/metadata: a member is given more than once".into(),
        },
        Some(_) => "/metadata: must be an object with eid and occurred_at".into(),
        None => "/metadata: missing (an object with eid and occurred_at)".into(),
    }
}

/// The event's members that `keep` names, as one object value.
fn body_value(
    fields: &[(Cow<'_, str>, &RawValue)],
    keep: impl Fn(&str) -> bool,
) -> Result<Value, String> {
    let mut body = Map::new();
    for (name, value) in fields {
        if !keep(name) {
            continue;
        }
        let value: Value =
            serde_json::from_str(value.get()).map_err(|error| format!("/{name}: {error}"))?;
        body.insert(name.clone().into_owned(), value);
    }
    Ok(Value::Object(body))
}

/// The full validator on the event's body: `Err` with the first errors, each with its pointer
/// and keyword, and the reason label.
fn validate(registered: &Registered, body: &Value) -> Result<(), (String, &'static str)> {
    let mut reason = "schema";
    let errors: Vec<String> = registered
        .validator
        .iter_errors(body)
        .take(MAX_REPORTED + 1)
        .map(|error| {
            if reason == "schema" {
                reason = keyword_label(error.kind().keyword());
            }
            let pointer = error.instance_path().as_str().to_owned();
            let pointer = if pointer.is_empty() {
                "/".into()
            } else {
                pointer
            };
            format!("{pointer}: {error} ({})", error.kind().keyword())
        })
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    let mut detail = errors[..errors.len().min(MAX_REPORTED)].join("; ");
    if errors.len() > MAX_REPORTED {
        detail.push_str("; and more");
    }
    Err((detail, reason))
}

/// The first segment of a JSON pointer, unescaped (`/a~1b/c` → `a/b`).
fn first_segment(pointer: &str) -> String {
    pointer
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .replace("~1", "/")
        .replace("~0", "~")
}

/// An object's fields as their raw texts, in order (a later duplicate name replaces nothing:
/// the validation sees the last one, as `serde_json` would).
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Fields<'de>;
            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut fields: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::with_capacity(16);
                while let Some(crate::schema::fast::Name(name)) =
                    map.next_key::<crate::schema::fast::Name<'de>>()?
                {
                    let value: &'de RawValue = map.next_value()?;
                    // A repeated name keeps its last value, once.
                    fields.retain(|(known, _)| *known != name);
                    fields.push((name, value));
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

fn check_metadata(
    metadata: &Map<String, Value>,
    strategy: PartitionStrategy,
) -> Result<(), String> {
    match metadata.get("eid") {
        Some(Value::String(eid)) if is_uuid(eid) => {}
        Some(other) => return Err(format!("/metadata/eid: {other} is not a UUID")),
        None => return Err("/metadata/eid: missing (a UUID that identifies the event)".into()),
    }
    match metadata.get("occurred_at") {
        Some(Value::String(at)) if mm_model::time::parse_rfc3339(at).is_ok() => {}
        Some(other) => {
            return Err(format!(
                "/metadata/occurred_at: {other} is not an RFC 3339 time"
            ));
        }
        None => {
            return Err(
                "/metadata/occurred_at: missing (when the event happened, RFC 3339)".into(),
            );
        }
    }
    if let Some(field) = GATEWAY_FIELDS
        .iter()
        .find(|field| metadata.contains_key(**field))
    {
        return Err(format!(
            "/metadata/{field}: set by the gateway, not by producers; leave it out"
        ));
    }
    if metadata.contains_key("partition") && strategy != PartitionStrategy::UserDefined {
        return Err("/metadata/partition: only for user_defined partitioning; this type places events itself".into());
    }
    Ok(())
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hexadecimal.
fn is_uuid(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(index, byte)| match index {
            8 | 13 | 18 | 23 => *byte == b'-',
            _ => byte.is_ascii_hexdigit(),
        })
}

/// The partition key of an event: its key fields' values as text, joined with `|`.
pub fn partition_key(body: &Value, fields: &[String]) -> Result<String, String> {
    let mut key = String::new();
    for (index, field) in fields.iter().enumerate() {
        let value = body
            .pointer(field)
            .ok_or_else(|| format!("{field}: the partition key field is missing"))?;
        if index > 0 {
            key.push('|');
        }
        match value {
            Value::String(text) => key.push_str(text),
            other => key.push_str(&other.to_string()),
        }
    }
    Ok(key)
}

/// The event's partition, and its partition key when the strategy has one.
fn partition_of(
    registered: &Registered,
    body: &Value,
    given: Option<&RawValue>,
) -> Result<(u32, Option<String>), String> {
    let event_type = &registered.event_type;
    match event_type.partition_strategy {
        PartitionStrategy::Hash => Ok(hashed(
            event_type,
            partition_key(body, &event_type.partition_key_fields)?,
        )),
        _ => Ok((keyless_partition(registered, given)?, None)),
    }
}

/// The partition of a partition key: the Java client's murmur2.
fn hashed(event_type: &crate::EventType, key: String) -> (u32, Option<String>) {
    let partition = mm_kafka::partition_for(key.as_bytes(), event_type.partitions) as u32;
    (partition, Some(key))
}

/// The partition of an event of a strategy without keys: `random`, or `user_defined` from
/// `metadata.partition` (`given`).
fn keyless_partition(registered: &Registered, given: Option<&RawValue>) -> Result<u32, String> {
    let event_type = &registered.event_type;
    match event_type.partition_strategy {
        PartitionStrategy::Hash => Err("the hash strategy partitions by key".into()),
        PartitionStrategy::Random => Ok(fastrand::u32(..event_type.partitions)),
        PartitionStrategy::UserDefined => {
            let given: Value = given
                .and_then(|raw| serde_json::from_str(raw.get()).ok())
                .ok_or(
                    "/metadata/partition: missing (this type's producers choose the partition)",
                )?;
            let given = &given;
            let partition = match given {
                Value::Number(number) => number.as_u64(),
                Value::String(text) => text.parse().ok(),
                _ => None,
            };
            match partition {
                Some(partition) if partition < u64::from(event_type.partitions) => {
                    Ok(partition as u32)
                }
                _ => Err(format!(
                    "/metadata/partition: {given} is not a partition of this type (0 to {})",
                    event_type.partitions - 1
                )),
            }
        }
    }
}

/// A flow id for a batch that came without `X-Flow-Id`.
pub fn new_flow_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

mod metadata;

#[cfg(test)]
mod tests;
