//! The serde path: visitors that walk a record along the mapping tree and fill the slots of
//! the mapped fields with whatever JSON scalar the record held.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{Entry, FIELD_COUNT, Field, Node};

/// A mapped value before it is checked: whatever JSON scalar the record held.
#[derive(Debug, Default)]
pub(super) enum Scalar<'de> {
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
    pub(super) fn kind(&self) -> &'static str {
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
pub(super) struct Slots<'de> {
    pub(super) values: [Scalar<'de>; FIELD_COUNT],
    pub(super) attributes: Option<String>,
}

impl<'de> Slots<'de> {
    pub(super) fn take(&mut self, field: Field) -> Scalar<'de> {
        std::mem::take(&mut self.values[field as usize])
    }

    fn push_attribute(&mut self, key: &str, raw: &RawValue) {
        // Serializing a str into a String cannot fail.
        let quoted = serde_json::to_string(key).unwrap_or_default();
        self.push_attribute_text(&quoted, raw.get(), 0);
    }

    /// Adds `quoted_key: raw` to the attributes object. `record_bytes` sizes the object when
    /// this is its first attribute: the unmapped fields of a record take no more than the
    /// record, so the object is allocated once.
    pub(super) fn push_attribute_text(&mut self, quoted_key: &str, raw: &str, record_bytes: usize) {
        let text = self.attributes.get_or_insert_with(|| {
            let mut text =
                String::with_capacity(record_bytes.max(quoted_key.len() + raw.len() + 3));
            text.push('{');
            text
        });
        if text.len() > 1 {
            text.push(',');
        }
        text.push_str(quoted_key);
        text.push(':');
        text.push_str(raw);
    }

    pub(super) fn close_attributes(&mut self) {
        if let Some(text) = self.attributes.as_mut() {
            text.push('}');
        }
    }
}

/// Walks one object level of the record along the mapping tree. Yields whether the value was
/// an object; any other value is skipped.
pub(super) struct ObjectSeed<'s, 'de> {
    pub(super) node: &'s Node,
    pub(super) slots: &'s mut Slots<'de>,
    pub(super) keep_attributes: bool,
    pub(super) top: bool,
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
