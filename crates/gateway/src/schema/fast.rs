//! The fast path of event validation: a schema compiled into a tree of checks that runs while
//! the event's JSON text is parsed, without building a `serde_json::Value` (publishing spent
//! more time building values than validating them).
//!
//! It is an accelerator, never the judge of a failure: [`FastSchema::accepts`] answers `true`
//! only for events the full validator (`jsonschema`) accepts too; `false` means "invalid, or
//! not sure", and the caller then runs the full validator, which also words the errors.
//!
//! Compiled natively: `type`, `enum`/`const` of strings, `properties`, `required`,
//! `additionalProperties`, `items`, `minItems`/`maxItems`, `minLength`/`maxLength` (in
//! characters), `minimum`/`maximum`/`exclusiveMinimum`/`exclusiveMaximum`, and the annotations
//! (`title`, `description`, `default`, `examples`, `deprecated`, `readOnly`, `writeOnly`,
//! `$comment`). A subschema with any other keyword (`pattern`, `format`, `allOf`, …) is handed
//! to a `jsonschema` validator compiled from that subschema alone, on that part of the event
//! only, so its semantics are the full validator's. A schema with references (`$ref`,
//! `$dynamicRef`, `$defs`, `$anchor`, `$id`) below its root is not compiled at all.
//!
//! A property test (`fast/tests.rs`) checks that both validators agree on generated schemas
//! and documents.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize as _;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Integers this size or smaller convert to `f64` exactly.
const EXACT: u64 = 1 << 53;

/// Keywords no validator acts on (`compat::ANNOTATIONS` less those one may: `format`,
/// `content*`, and the identifiers, which the fast path leaves to the full validator).
const ANNOTATIONS: [&str; 8] = [
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$comment",
];

const REFERENCES: [&str; 6] = [
    "$ref",
    "$dynamicRef",
    "$defs",
    "$anchor",
    "$dynamicAnchor",
    "$id",
];

/// A schema compiled for the fast path.
pub struct FastSchema {
    root: Node,
}

enum Node {
    /// Anything (`true`, `{}`, only annotations).
    Any,
    /// Nothing (`false`).
    Never,
    Checks(Box<Checks>),
    /// A subschema the fast path does not compile: the full validator, on this part only.
    Delegate(Box<jsonschema::Validator>),
}

#[derive(Default)]
struct Checks {
    /// Bits of [`Kind`]; `None`: any type.
    types: Option<u8>,
    enum_strings: Option<Vec<Box<str>>>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    exclusive_minimum: Option<f64>,
    exclusive_maximum: Option<f64>,
    /// Sorted by name; each with its index in `required`, if it is required.
    properties: Vec<(Box<str>, Node, Option<usize>)>,
    required: Vec<Box<str>>,
    /// Whether a required name is not among `properties` (then names that are not properties
    /// are looked up in `required` too).
    required_elsewhere: bool,
    additional: Option<Node>,
    items: Option<Node>,
    min_items: Option<u64>,
    max_items: Option<u64>,
}

#[derive(Clone, Copy)]
enum Kind {
    Null = 1,
    Boolean = 2,
    Object = 4,
    Array = 8,
    Number = 16,
    Integer = 32,
    String = 64,
}

fn kind_bit(name: &str) -> Option<u8> {
    Some(match name {
        "null" => Kind::Null,
        "boolean" => Kind::Boolean,
        "object" => Kind::Object,
        "array" => Kind::Array,
        "number" => Kind::Number,
        "integer" => Kind::Integer,
        "string" => Kind::String,
        _ => return None,
    } as u8)
}

impl FastSchema {
    /// Compiles `schema` (already checked to be valid JSON Schema); `None` when it uses
    /// references below its root, which the fast path leaves to the full validator.
    pub fn compile(schema: &Value) -> Option<Self> {
        if let Value::Object(root) = schema {
            let below_root: Vec<&Value> = root
                .iter()
                .filter(|(keyword, _)| *keyword != "$schema" && *keyword != "$id")
                .map(|(_, value)| value)
                .collect();
            if root.contains_key("$ref")
                || root.contains_key("$dynamicRef")
                || root.contains_key("$defs")
                || below_root.iter().any(|value| has_references(value))
            {
                return None;
            }
        }
        Some(Self {
            root: node(schema, true)?,
        })
    }

    /// Whether the event `json` (an object; its `metadata` member is not part of the
    /// validated body) is valid. `false` may also mean "not sure".
    pub fn accepts(&self, json: &[u8]) -> bool {
        self.scan(json, &[]).is_some()
    }

    /// Checks the event `json` as [`Self::accepts`] does, and finds its `metadata` member and
    /// the top-level members `key_members` name on the way: `None` when it does not accept
    /// the event, or a member it looks for is given twice.
    pub fn scan<'a>(&self, json: &'a [u8], key_members: &[&str]) -> Option<Scan<'a>> {
        let text = std::str::from_utf8(json).ok()?;
        let capture = Capture {
            base: text.as_ptr() as usize,
            key_members,
            metadata: std::cell::Cell::new(None),
            keys: std::cell::RefCell::new(vec![None; key_members.len()]),
        };
        let mut deserializer = serde_json::Deserializer::from_str(text);
        Check {
            node: &self.root,
            root: true,
            capture: Some(&capture),
        }
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end())
        .ok()?;
        let slice = |(start, length): (usize, usize)| text.get(start..start + length);
        Some(Scan {
            metadata: match capture.metadata.get() {
                Some(range) => Some(slice(range)?),
                None => None,
            },
            keys: capture
                .keys
                .into_inner()
                .into_iter()
                .map(|range| range.and_then(slice))
                .collect(),
        })
    }
}

fn has_references(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(key, value)| REFERENCES.contains(&key.as_str()) || has_references(value)),
        Value::Array(values) => values.iter().any(has_references),
        _ => false,
    }
}

/// Compiles one (sub)schema; `root` keeps `$schema` out of the keywords.
fn node(schema: &Value, root: bool) -> Option<Node> {
    let map = match schema {
        Value::Bool(true) => return Some(Node::Any),
        Value::Bool(false) => return Some(Node::Never),
        Value::Object(map) => map,
        _ => return None,
    };
    match checks(map, root) {
        Some(checks) => Some(checks),
        None => delegate(schema),
    }
}

fn delegate(schema: &Value) -> Option<Node> {
    let mut schema = schema.clone();
    if let Value::Object(map) = &mut schema {
        map.remove("$schema");
    }
    jsonschema::draft202012::new(&schema)
        .ok()
        .map(|validator| Node::Delegate(Box::new(validator)))
}

/// A limit that compares exactly as `f64`.
fn exact_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => {
            if let Some(integer) = number.as_u64() {
                (integer <= EXACT).then_some(integer as f64)
            } else if let Some(integer) = number.as_i64() {
                (integer.unsigned_abs() <= EXACT).then_some(integer as f64)
            } else {
                number.as_f64().filter(|float| float.is_finite())
            }
        }
        _ => None,
    }
}

fn count(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|float| float.fract() == 0.0 && *float >= 0.0)
            .map(|float| float as u64)
    })
}

/// The natively compiled checks of `map`, or `None` when a keyword needs the full validator.
fn checks(map: &Map<String, Value>, root: bool) -> Option<Node> {
    let mut checks = Checks::default();
    let mut any = true;
    for (keyword, value) in map {
        if ANNOTATIONS.contains(&keyword.as_str()) || (root && keyword == "$schema") {
            continue;
        }
        any = false;
        match keyword.as_str() {
            "type" => {
                let mut bits = 0;
                match value {
                    Value::String(name) => bits |= kind_bit(name)?,
                    Value::Array(names) => {
                        for name in names {
                            bits |= kind_bit(name.as_str()?)?;
                        }
                    }
                    _ => return None,
                }
                checks.types = Some(bits);
            }
            "enum" => {
                let values = value.as_array()?;
                let strings = values
                    .iter()
                    .map(|value| value.as_str().map(Box::from))
                    .collect::<Option<Vec<_>>>()?;
                checks.enum_strings = Some(strings);
            }
            "const" => checks.enum_strings = Some(vec![Box::from(value.as_str()?)]),
            "minLength" => checks.min_length = Some(count(value)?),
            "maxLength" => checks.max_length = Some(count(value)?),
            "minItems" => checks.min_items = Some(count(value)?),
            "maxItems" => checks.max_items = Some(count(value)?),
            "minimum" => checks.minimum = Some(exact_number(value)?),
            "maximum" => checks.maximum = Some(exact_number(value)?),
            "exclusiveMinimum" => checks.exclusive_minimum = Some(exact_number(value)?),
            "exclusiveMaximum" => checks.exclusive_maximum = Some(exact_number(value)?),
            "required" => {
                checks.required = value
                    .as_array()?
                    .iter()
                    .map(|name| name.as_str().map(Box::from))
                    .collect::<Option<Vec<_>>>()?;
            }
            "properties" => {
                let mut properties: Vec<(Box<str>, Node, Option<usize>)> = value
                    .as_object()?
                    .iter()
                    .map(|(name, schema)| {
                        Some((Box::from(name.as_str()), node(schema, false)?, None))
                    })
                    .collect::<Option<Vec<_>>>()?;
                properties.sort_by(|a, b| a.0.cmp(&b.0));
                properties.dedup_by(|a, b| a.0 == b.0);
                checks.properties = properties;
            }
            "additionalProperties" => checks.additional = Some(node(value, false)?),
            "items" => checks.items = Some(node(value, false)?),
            _ => return None,
        }
    }
    if any {
        return Some(Node::Any);
    }
    for (index, name) in checks.required.iter().enumerate() {
        match checks
            .properties
            .iter_mut()
            .find(|(known, _, _)| known == name)
        {
            Some(property) => property.2 = property.2.or(Some(index)),
            None => checks.required_elsewhere = true,
        }
    }
    Some(Node::Checks(Box::new(checks)))
}

impl Checks {
    /// The property named `name`. Compares lengths and first bytes before names: faster than
    /// a binary search by name, whose string comparisons took a twentieth of the server's
    /// time while publishing (profiled with `bench --only publish`).
    fn property(&self, name: &str) -> Option<&(Box<str>, Node, Option<usize>)> {
        let bytes = name.as_bytes();
        let first = bytes.first().copied();
        self.properties.iter().find(|(known, _, _)| {
            known.len() == bytes.len()
                && known.as_bytes().first().copied() == first
                && **known == *name
        })
    }
}

/// The checks of a schema that admits anything.
static NO_CHECKS: Checks = Checks {
    types: None,
    enum_strings: None,
    min_length: None,
    max_length: None,
    minimum: None,
    maximum: None,
    exclusive_minimum: None,
    exclusive_maximum: None,
    properties: Vec::new(),
    required: Vec::new(),
    required_elsewhere: false,
    additional: None,
    items: None,
    min_items: None,
    max_items: None,
};

/// Validation failed, or the fast path is not sure: the full validator decides.
#[derive(Debug)]
struct Unsure;

impl fmt::Display for Unsure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("not accepted by the fast path")
    }
}

impl std::error::Error for Unsure {}

impl serde::de::Error for Unsure {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Unsure
    }
}

/// Checks one value against `node` while it is parsed.
#[derive(Clone, Copy)]
struct Check<'a> {
    node: &'a Node,
    /// The event itself: its `metadata` member is skipped.
    root: bool,
    /// At the root: where the members publishing needs are, found on the way.
    capture: Option<&'a Capture<'a>>,
}

/// The members of an event found while it is checked, as byte ranges of its text.
struct Capture<'a> {
    base: usize,
    key_members: &'a [&'a str],
    metadata: std::cell::Cell<Option<(usize, usize)>>,
    keys: std::cell::RefCell<Vec<Option<(usize, usize)>>>,
}

impl Capture<'_> {
    fn range(&self, raw: &serde_json::value::RawValue) -> (usize, usize) {
        let text = raw.get();
        (text.as_ptr() as usize - self.base, text.len())
    }
}

/// An event checked by the fast path, with the members publishing needs.
pub struct Scan<'a> {
    /// The `metadata` member's value, as it was sent.
    pub metadata: Option<&'a str>,
    /// The value of each key member asked for (`None`: not there).
    pub keys: Vec<Option<&'a str>>,
}

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        match self.node {
            Node::Any if !self.root => IgnoredAny::deserialize(deserializer).map(drop),
            Node::Never => Err(serde::de::Error::custom(Unsure)),
            Node::Delegate(validator) if !self.root => {
                let value = Value::deserialize(deserializer)?;
                if validator.is_valid(&value) {
                    Ok(())
                } else {
                    Err(serde::de::Error::custom(Unsure))
                }
            }
            // The root is checked member by member, so that `metadata` stays out.
            Node::Any | Node::Delegate(_) | Node::Checks(_) => deserializer.deserialize_any(self),
        }
    }
}

fn unsure<E: serde::de::Error>() -> E {
    E::custom(Unsure)
}

impl Check<'_> {
    fn checks(&self) -> Option<&Checks> {
        match self.node {
            Node::Checks(checks) => Some(checks),
            _ => None,
        }
    }

    fn kind<E: serde::de::Error>(&self, kind: Kind) -> Result<(), E> {
        match self.checks().and_then(|checks| checks.types) {
            Some(bits) if bits & kind as u8 == 0 => Err(unsure()),
            _ => Ok(()),
        }
    }

    fn no_enum<E: serde::de::Error>(&self) -> Result<(), E> {
        // The enums compiled natively hold only strings.
        match self
            .checks()
            .and_then(|checks| checks.enum_strings.as_ref())
        {
            Some(_) => Err(unsure()),
            None => Ok(()),
        }
    }

    fn number<E: serde::de::Error>(&self, value: f64, integer: bool) -> Result<(), E> {
        if let Some(bits) = self.checks().and_then(|checks| checks.types) {
            let number = bits & Kind::Number as u8 != 0;
            let whole = bits & Kind::Integer as u8 != 0 && integer;
            if !number && !whole {
                return Err(unsure());
            }
        }
        self.no_enum()?;
        let Some(checks) = self.checks() else {
            return Ok(());
        };
        let within = checks.minimum.is_none_or(|limit| value >= limit)
            && checks.maximum.is_none_or(|limit| value <= limit)
            && checks.exclusive_minimum.is_none_or(|limit| value > limit)
            && checks.exclusive_maximum.is_none_or(|limit| value < limit);
        if within { Ok(()) } else { Err(unsure()) }
    }

    fn string<E: serde::de::Error>(&self, text: &str) -> Result<(), E> {
        self.kind(Kind::String)?;
        let Some(checks) = self.checks() else {
            return Ok(());
        };
        if let Some(values) = &checks.enum_strings
            && !values.iter().any(|value| **value == *text)
        {
            return Err(unsure());
        }
        if checks.min_length.is_some() || checks.max_length.is_some() {
            let length = text.chars().count() as u64;
            if checks.min_length.is_some_and(|limit| length < limit)
                || checks.max_length.is_some_and(|limit| length > limit)
            {
                return Err(unsure());
            }
        }
        Ok(())
    }
}

/// An object member's name, borrowed from the text when it has no escapes.
pub(crate) struct Name<'de>(pub(crate) Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Name<'de>;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(text.to_owned())))
            }
        }
        deserializer.deserialize_str(Visit)
    }
}

impl<'de> Visitor<'de> for Check<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.kind(Kind::Null)?;
        self.no_enum()
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.kind(Kind::Boolean)?;
        self.no_enum()
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<(), E> {
        if value > EXACT {
            return Err(unsure());
        }
        self.number(value as f64, true)
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<(), E> {
        if value.unsigned_abs() > EXACT {
            return Err(unsure());
        }
        self.number(value as f64, true)
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<(), E> {
        if !value.is_finite() {
            return Err(unsure());
        }
        self.number(value, value.fract() == 0.0)
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, text: &'de str) -> Result<(), E> {
        self.string(text)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<(), E> {
        self.string(text)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.kind(Kind::Array)?;
        self.no_enum()?;
        let checks = self.checks();
        let items = checks.and_then(|checks| checks.items.as_ref());
        let mut count = 0u64;
        loop {
            let more = match items {
                Some(node) => seq.next_element_seed(Check {
                    node,
                    root: false,
                    capture: None,
                })?,
                None => seq.next_element::<IgnoredAny>()?.map(drop),
            };
            if more.is_none() {
                break;
            }
            count += 1;
        }
        if let Some(checks) = checks
            && (checks.min_items.is_some_and(|limit| count < limit)
                || checks.max_items.is_some_and(|limit| count > limit))
        {
            return Err(unsure());
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.kind(Kind::Object)?;
        self.no_enum()?;
        let checks = self.checks();
        // The root of a delegated schema: its members are checked by the full validator, as
        // one object without `metadata`.
        let delegated = match self.node {
            Node::Delegate(validator) => Some(validator),
            _ => None,
        };
        let mut collected = Map::new();
        let required = checks.map_or(&[][..], |checks| checks.required.as_slice());
        // Which required members were seen (the first 64 by bit; more are checked by name).
        let mut seen: u64 = 0;
        let mut seen_more: Vec<&str> = Vec::new();
        while let Some(Name(name)) = map.next_key::<Name<'de>>()? {
            if self.root && name == "metadata" {
                match self.capture {
                    Some(capture) => {
                        let raw: &'de serde_json::value::RawValue = map.next_value()?;
                        if capture.metadata.replace(Some(capture.range(raw))).is_some() {
                            return Err(unsure());
                        }
                    }
                    None => map.next_value::<IgnoredAny>().map(drop)?,
                }
                continue;
            }
            if delegated.is_some() {
                let value: Value = map.next_value()?;
                collected.insert(name.into_owned(), value);
                continue;
            }
            let checks = checks.unwrap_or(&NO_CHECKS);
            let property = checks.property(&name);
            let required_index = match property {
                Some((_, _, index)) => *index,
                None if checks.required_elsewhere => {
                    required.iter().position(|known| **known == *name)
                }
                None => None,
            };
            if let Some(index) = required_index {
                if index < 64 {
                    seen |= 1 << index;
                } else {
                    seen_more.push(&required[index]);
                }
            }
            let node = property
                .map(|(_, node, _)| node)
                .or(checks.additional.as_ref());
            let wanted = self.capture.and_then(|capture| {
                capture
                    .key_members
                    .iter()
                    .position(|member| *member == name)
                    .map(|index| (capture, index))
            });
            if let Some((capture, index)) = wanted {
                // A key member: kept as text, and checked from that text.
                let raw: &'de serde_json::value::RawValue = map.next_value()?;
                if capture.keys.borrow_mut()[index]
                    .replace(capture.range(raw))
                    .is_some()
                {
                    return Err(unsure());
                }
                if let Some(node) = node {
                    let mut inner = serde_json::Deserializer::from_str(raw.get());
                    Check {
                        node,
                        root: false,
                        capture: None,
                    }
                    .deserialize(&mut inner)
                    .map_err(|_| unsure::<A::Error>())?;
                }
                continue;
            }
            match node {
                Some(node) => map.next_value_seed(Check {
                    node,
                    root: false,
                    capture: None,
                })?,
                None => map.next_value::<IgnoredAny>().map(drop)?,
            }
        }
        if let Some(validator) = delegated {
            return if validator.is_valid(&Value::Object(collected)) {
                Ok(())
            } else {
                Err(unsure())
            };
        }
        let all_seen = required.iter().enumerate().all(|(index, name)| {
            if index < 64 {
                seen & (1 << index) != 0
            } else {
                seen_more.contains(&&**name)
            }
        });
        if all_seen { Ok(()) } else { Err(unsure()) }
    }
}

#[cfg(test)]
mod tests;
