//! An event's `metadata` read from its text, without building values, and the enriched
//! metadata written after it.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::GATEWAY_FIELDS;
use crate::schema::fast::Name;

/// What publishing needs of a producer's metadata.
#[derive(Default)]
pub(super) struct View<'a> {
    pub eid: Option<Cow<'a, str>>,
    pub occurred_at: Option<Cow<'a, str>>,
    pub partition: Option<&'a RawValue>,
    /// A member the gateway sets, or `eid`/`occurred_at` that is not a string.
    pub odd: bool,
}

impl<'a> View<'a> {
    /// Reads `raw` (a JSON object; `None` otherwise).
    pub fn read(raw: &'a RawValue) -> Option<Self> {
        let mut deserializer = serde_json::Deserializer::from_str(raw.get());
        deserializer.deserialize_map(Read).ok()
    }
}

struct Read;

impl<'de> Visitor<'de> for Read {
    type Value = View<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<View<'de>, A::Error> {
        let mut view = View::default();
        while let Some(Name(name)) = map.next_key::<Name<'de>>()? {
            match &*name {
                "eid" | "occurred_at" => {
                    let text = match map.next_value::<Text<'de>>()? {
                        Text(Some(text)) => Some(text),
                        Text(None) => {
                            view.odd = true;
                            None
                        }
                    };
                    if name == "eid" {
                        view.eid = text;
                    } else {
                        view.occurred_at = text;
                    }
                }
                "partition" => view.partition = Some(map.next_value()?),
                other => {
                    if GATEWAY_FIELDS.contains(&other) {
                        view.odd = true;
                    }
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(view)
    }
}

/// A string (borrowed when it has no escapes), or `None` for any other value.
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Text<'de>;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("any value")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Some(Cow::Borrowed(text))))
            }
            fn visit_str<E>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(Some(Cow::Owned(text.to_owned()))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_unit<E>(self) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Text<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

/// The metadata the gateway adds, serialised once per batch: everything but the partition.
pub(super) struct Enrichment {
    /// `"received_at":…,"version":…,"partition":`
    head: Vec<u8>,
    /// `,"flow_id":…,"event_type":…[,"traceparent":…[,"tracestate":…]]}`
    tail: Vec<u8>,
}

impl Enrichment {
    pub fn new(context: &crate::log::BatchContext, event_type: &str) -> Self {
        let text = |value: &str| serde_json::to_string(value).unwrap_or_else(|_| "\"\"".into());
        let mut tail = format!(
            ",\"flow_id\":{},\"event_type\":{}",
            text(&context.flow_id),
            text(event_type)
        );
        if let Some(trace) = &context.trace {
            for (name, value) in trace.pairs() {
                tail.push_str(&format!(",\"{name}\":{}", text(value)));
            }
        }
        tail.push('}');
        Self {
            head: format!(
                "\"received_at\":{},\"version\":{},\"partition\":",
                text(&context.received_at),
                text(&context.version)
            )
            .into_bytes(),
            tail: tail.into_bytes(),
        }
    }

    /// Writes the producer's metadata object `raw` with the gateway's members added.
    pub fn write(&self, raw: &RawValue, partition: u32, out: &mut Vec<u8>) {
        let text = raw.get().trim();
        // A JSON object's text: `{`, its members, `}`.
        let members = text
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'))
            .unwrap_or_default()
            .trim();
        out.push(b'{');
        if !members.is_empty() {
            out.extend_from_slice(members.as_bytes());
            out.push(b',');
        }
        out.extend_from_slice(&self.head);
        out.extend_from_slice(itoa_u32(partition).as_bytes());
        out.extend_from_slice(&self.tail);
    }
}

fn itoa_u32(value: u32) -> String {
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_members_follow_the_producers_and_the_result_is_json() {
        let context = crate::log::BatchContext {
            version: "1.2.0".into(),
            received_at: "2026-12-01T10:00:00Z".into(),
            flow_id: "f\"1".into(),
            trace: Some(mm_trace::context::TraceHeaders {
                traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                tracestate: Some("vendor=1".into()),
            }),
        };
        let enrichment = Enrichment::new(&context, "order.paid");
        let mut out = Vec::new();
        let raw: Box<RawValue> =
            serde_json::from_str(r#" { "eid": "x", "trace": {"a": [1]} } "#).expect("raw");
        enrichment.write(&raw, 3, &mut out);
        let written: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(
            written,
            serde_json::json!({
                "eid": "x", "trace": {"a": [1]}, "received_at": "2026-12-01T10:00:00Z",
                "version": "1.2.0", "partition": 3, "flow_id": "f\"1", "event_type": "order.paid",
                "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "tracestate": "vendor=1"
            })
        );
        let empty: Box<RawValue> = serde_json::from_str("{ }").expect("raw");
        out.clear();
        enrichment.write(&empty, 0, &mut out);
        assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok());
    }

    #[test]
    fn a_view_reads_the_members_publishing_needs_and_flags_the_odd_ones() {
        let raw: Box<RawValue> = serde_json::from_str(
            r#"{"eid": "e\u0031", "occurred_at": "t", "partition": 2, "other": [1]}"#,
        )
        .expect("raw");
        let view = View::read(&raw).expect("an object");
        assert_eq!(view.eid.as_deref(), Some("e1"));
        assert_eq!(view.occurred_at.as_deref(), Some("t"));
        assert_eq!(view.partition.map(RawValue::get), Some("2"));
        assert!(!view.odd);
        let odd: Box<RawValue> =
            serde_json::from_str(r#"{"eid": 1, "received_at": "x"}"#).expect("raw");
        assert!(View::read(&odd).expect("an object").odd);
        let not_object: Box<RawValue> = serde_json::from_str("[1]").expect("raw");
        assert!(View::read(&not_object).is_none());
    }
}
