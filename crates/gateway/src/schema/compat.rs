//! Schema compatibility: may documents written under one schema be read under another?
//!
//! `check(old, new, direction)` answers it for a direction:
//! - [`Direction::Backward`]: every document valid under `old` is valid under `new` (consumers
//!   that moved to the new schema still read the events already written);
//! - [`Direction::Forward`]: every document valid under `new` is valid under `old` (consumers
//!   still on the old schema read the events producers now write).
//!
//! The check walks both schemas side by side, the *writer* (whose documents exist) against the
//! *reader* (which must accept them), and reports every place where the reader is stricter. It
//! is sound: when it reports nothing, the property holds (a property test generates documents
//! to confirm it). It is not complete: for keywords whose effect it cannot compare
//! (`patternProperties`, `not`, `if`, `unevaluatedProperties`, regular expressions) a change is
//! reported as a violation unless both sides carry the same value.
//!
//! Each violation names the change from old to new (`type-narrowed`, `required-added`,
//! `property-removed-from-closed-model`, `max-length-decreased`, ...), whichever direction
//! found it, so a producer reads what they did, not which side was the reader. Content models
//! follow Confluent's JSON Schema rules: an object is *open* unless `additionalProperties` is
//! `false` (or a schema); a property added to an open model is a backward violation unless its
//! schema accepts anything, since old documents may carry that name with any value; a property
//! removed from a closed model is a backward violation, since old documents carry it and the
//! new model refuses unknown names.

mod objects;

use std::collections::{BTreeSet, HashSet};

use serde::Serialize;
use serde_json::{Map, Value};

/// Which documents must stay readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Old documents under the new schema.
    Backward,
    /// New documents under the old schema.
    Forward,
}

/// One way in which the new schema breaks a direction.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Violation {
    /// JSON pointer (as a URI fragment) of the schema location, e.g. `#/properties/amount`.
    pub path: String,
    /// The change, from old to new: `type-narrowed`, `property-removed-from-closed-model`,
    /// `required-added`, `enum-value-removed`, ...
    pub rule: String,
    /// The old schema's value at that place (`null` when it had none).
    pub old: Value,
    /// The new schema's value at that place (`null` when it has none).
    pub new: Value,
    /// What breaks, for whom.
    pub message: String,
    /// How to make the change compatible.
    pub hint: String,
}

/// Keywords that only annotate: changing them never changes which documents validate.
pub const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$anchor",
    "$comment",
    "$vocabulary",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "format",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
];

/// Keywords whose effect the checker does not compare: any difference is a violation.
const OPAQUE: &[&str] = &[
    "not",
    "if",
    "then",
    "else",
    "patternProperties",
    "propertyNames",
    "dependentSchemas",
    "unevaluatedProperties",
    "unevaluatedItems",
    "contains",
    "minContains",
    "maxContains",
    "prefixItems",
    "$dynamicRef",
    "$dynamicAnchor",
];

/// The violations of `direction` when `old` evolves into `new` (both JSON Schema documents).
pub fn check(old: &Value, new: &Value, direction: Direction) -> Vec<Violation> {
    let (writer, reader) = match direction {
        Direction::Backward => (old, new),
        Direction::Forward => (new, old),
    };
    let mut checker = Checker {
        direction,
        writer_root: writer,
        reader_root: reader,
        violations: Vec::new(),
        visiting: HashSet::new(),
    };
    checker.subschema(writer, reader, "#");
    checker.violations
}

/// Both schemas with annotations removed, everywhere: equal when only annotations changed.
pub fn without_annotations(schema: &Value) -> Value {
    match schema {
        Value::Object(object) => Value::Object(
            object
                .iter()
                .filter(|(keyword, _)| !ANNOTATIONS.contains(&keyword.as_str()))
                .map(|(keyword, value)| {
                    let value = match keyword.as_str() {
                        // Values, not schemas: kept as written.
                        "enum" | "const" | "required" => value.clone(),
                        _ => without_annotations(value),
                    };
                    (keyword.clone(), value)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_annotations).collect()),
        other => other.clone(),
    }
}

const TYPES: [&str; 7] = [
    "null", "boolean", "object", "array", "number", "string", "integer",
];

/// The JSON types a schema admits (`integer` stands for the integral numbers).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Types(BTreeSet<&'static str>);

impl Types {
    fn all() -> Self {
        Types(TYPES.iter().copied().collect())
    }

    fn of(schema: &Map<String, Value>) -> Self {
        let mut types = match schema.get("type") {
            Some(Value::String(name)) => Types(canonical(name).into_iter().collect()),
            Some(Value::Array(names)) => Types(
                names
                    .iter()
                    .filter_map(Value::as_str)
                    .filter_map(canonical)
                    .collect(),
            ),
            _ => Types::all(),
        };
        if types.0.contains("number") {
            types.0.insert("integer");
        }
        let values = match (schema.get("enum"), schema.get("const")) {
            (_, Some(constant)) => Some(std::slice::from_ref(constant)),
            (Some(Value::Array(values)), None) => Some(values.as_slice()),
            _ => None,
        };
        if let Some(values) = values {
            let of_values: BTreeSet<&'static str> = values.iter().flat_map(type_of).collect();
            types.0.retain(|name| of_values.contains(name));
        }
        types
    }

    fn admits(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    fn can_be_number(&self) -> bool {
        self.admits("number") || self.admits("integer")
    }
}

fn canonical(name: &str) -> Option<&'static str> {
    TYPES.iter().copied().find(|known| *known == name)
}

/// The types a value belongs to (an integral number is both `integer` and `number`).
fn type_of(value: &Value) -> Vec<&'static str> {
    match value {
        Value::Null => vec!["null"],
        Value::Bool(_) => vec!["boolean"],
        Value::Number(number) => {
            let integral = number.is_i64()
                || number.is_u64()
                || number.as_f64().is_some_and(|float| float.fract() == 0.0);
            if integral {
                vec!["integer", "number"]
            } else {
                vec!["number"]
            }
        }
        Value::String(_) => vec!["string"],
        Value::Array(_) => vec!["array"],
        Value::Object(_) => vec!["object"],
    }
}

struct Checker<'a> {
    direction: Direction,
    writer_root: &'a Value,
    reader_root: &'a Value,
    violations: Vec<Violation>,
    /// Pairs of (writer, reader) schema locations being compared: a recursive schema compared
    /// with itself ends here.
    visiting: HashSet<(usize, usize)>,
}

/// The kind of change a rule describes, from old to new.
fn bound_change(old: Option<f64>, new: Option<f64>) -> &'static str {
    match (old, new) {
        (None, Some(_)) => "added",
        (Some(_), None) => "removed",
        (Some(old), Some(new)) if new > old => "increased",
        (Some(old), Some(new)) if new < old => "decreased",
        _ => "changed",
    }
}

fn hint_for(rule: &str, direction: Direction) -> String {
    let readers = match direction {
        Direction::Backward => "events already written",
        Direction::Forward => "consumers still on the old version",
    };
    match rule {
        "required-added" => format!(
            "make the new property optional ({readers} do not have it), or give it a new name in a new event type"
        ),
        "required-removed" => "keep the property required until no consumer needs it, or use compatibility_mode none and a major version".into(),
        "property-added-to-open-model" => "the old model is open, so old events may already carry this name with any value: accept any value for it, close the old model first, or pick a new name".into(),
        "property-removed-from-closed-model" => "keep the property (it may stay optional), or open the model with additionalProperties: true".into(),
        "property-added-to-closed-model" => "consumers on the old version refuse unknown properties: open the old model first (additionalProperties: true), then add the property".into(),
        "property-removed-from-open-model" => "keep the property's schema (optional is fine): producers could otherwise send any value under its name".into(),
        "enum-value-removed" => format!("keep the value ({readers} use it); mark it deprecated in the description instead"),
        "enum-value-added" => "consumers on the old version do not know the new value: add it under compatibility_mode backward or none, after they are updated".into(),
        rule if rule.starts_with("type-") => "accept every type the other version accepts (a list of types widens it)".into(),
        rule if rule.starts_with("additional-properties-") => "keep additionalProperties as it was".into(),
        _ => format!("keep the constraint as permissive as before for {readers}, or use compatibility_mode none and a major version"),
    }
}

impl<'a> Checker<'a> {
    fn violation(&mut self, path: &str, rule: String, writer: Value, reader: Value, why: String) {
        let (old, new) = match self.direction {
            Direction::Backward => (writer, reader),
            Direction::Forward => (reader, writer),
        };
        let who = match self.direction {
            Direction::Backward => "events written under the old schema would fail the new one",
            Direction::Forward => {
                "events written under the new schema would fail consumers on the old one"
            }
        };
        let hint = hint_for(&rule, self.direction);
        self.violations.push(Violation {
            path: path.to_owned(),
            message: format!("{why}: {who}"),
            rule,
            old,
            new,
            hint,
        });
    }

    /// The writer's and reader's values of a change, as old and new.
    fn old_new<T>(&self, writer: T, reader: T) -> (T, T) {
        match self.direction {
            Direction::Backward => (writer, reader),
            Direction::Forward => (reader, writer),
        }
    }

    /// Resolves a local `$ref` (`#/...`) against the root the schema belongs to; says whether
    /// a reference was followed.
    fn resolve<'v>(&self, schema: &'v Value, writer_side: bool) -> (&'v Value, bool)
    where
        'a: 'v,
    {
        let root: &'v Value = if writer_side {
            self.writer_root
        } else {
            self.reader_root
        };
        let mut current = schema;
        let mut followed = false;
        for _ in 0..32 {
            let Some(Value::String(reference)) = current.get("$ref") else {
                break;
            };
            let Some(target) = reference
                .strip_prefix('#')
                .and_then(|pointer| root.pointer(pointer))
            else {
                break;
            };
            current = target;
            followed = true;
        }
        (current, followed)
    }

    /// Reports where documents valid under `writer` may fail `reader`.
    fn subschema(&mut self, writer: &Value, reader: &Value, path: &str) {
        let (writer, writer_followed) = self.resolve(writer, true);
        let (reader, reader_followed) = self.resolve(reader, false);
        // Recursion only comes through references, whose targets stay put in the roots.
        if (writer_followed || reader_followed)
            && !self.visiting.insert((
                writer as *const Value as usize,
                reader as *const Value as usize,
            ))
        {
            return;
        }
        let empty = Map::new();
        let (writer_map, reader_map) = match (writer, reader) {
            (_, Value::Bool(true)) | (Value::Bool(false), _) => return,
            (Value::Bool(true), Value::Object(reader_map)) => (&empty, reader_map),
            (Value::Object(writer_map), Value::Object(reader_map)) => (writer_map, reader_map),
            (writer, reader) => {
                self.violation(
                    path,
                    "schema-narrowed".into(),
                    writer.clone(),
                    reader.clone(),
                    "the reader's schema refuses every document".into(),
                );
                return;
            }
        };
        if without_annotations(writer) == without_annotations(reader) {
            return;
        }
        // A writer that is a union fits when each of its branches does.
        for keyword in ["anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = writer_map.get(keyword)
                && !reader_map.contains_key(keyword)
                && branches.iter().all(|branch| {
                    let mut trial = self.trial();
                    trial.subschema(branch, reader, path);
                    trial.violations.is_empty()
                })
            {
                return;
            }
        }
        self.opaque_keywords(writer_map, reader_map, path);
        self.combinators(writer, writer_map, reader_map, path);
        let writer_types = Types::of(writer_map);
        self.types(writer_map, reader_map, &writer_types, path);
        self.enums(writer_map, reader_map, path);
        if writer_types.can_be_number() {
            self.numbers(writer_map, reader_map, path);
        }
        if writer_types.admits("string") {
            self.strings(writer_map, reader_map, path);
        }
        if writer_types.admits("array") {
            self.arrays(writer_map, reader_map, path);
        }
        if writer_types.admits("object") {
            self.objects(writer_map, reader_map, path);
        }
    }

    fn opaque_keywords(
        &mut self,
        writer: &Map<String, Value>,
        reader: &Map<String, Value>,
        path: &str,
    ) {
        for keyword in OPAQUE {
            let (writer_value, reader_value) = (writer.get(*keyword), reader.get(*keyword));
            if writer_value == reader_value || reader_value.is_none() {
                // The reader adds no constraint of its own here.
                continue;
            }
            let (old, new) = self.old_new(writer_value, reader_value);
            let rule = format!(
                "{}-{}",
                kebab(keyword),
                match (old, new) {
                    (None, Some(_)) => "added",
                    (Some(_), None) => "removed",
                    _ => "changed",
                }
            );
            self.violation(
                &format!("{path}/{keyword}"),
                rule,
                writer_value.cloned().unwrap_or(Value::Null),
                reader_value.cloned().unwrap_or(Value::Null),
                format!("`{keyword}` changed and its effect cannot be compared"),
            );
        }
    }

    fn combinators(
        &mut self,
        writer: &Value,
        writer_map: &Map<String, Value>,
        reader_map: &Map<String, Value>,
        path: &str,
    ) {
        // The reader's allOf: the writer's documents must pass every branch.
        if let Some(Value::Array(branches)) = reader_map.get("allOf")
            && writer_map.get("allOf") != reader_map.get("allOf")
        {
            for (index, branch) in branches.iter().enumerate() {
                self.subschema(writer, branch, &format!("{path}/allOf/{index}"));
            }
        }
        for keyword in ["anyOf", "oneOf"] {
            let Some(Value::Array(reader_branches)) = reader_map.get(keyword) else {
                continue;
            };
            if writer_map.get(keyword) == reader_map.get(keyword) {
                continue;
            }
            // Each writer branch (or the writer as a whole) must fit some reader branch.
            let candidates: Vec<&Value> = match writer_map.get(keyword) {
                Some(Value::Array(branches)) => branches.iter().collect(),
                _ => vec![writer],
            };
            let unfit = candidates.iter().any(|candidate| {
                !reader_branches.iter().any(|branch| {
                    let mut trial = self.trial();
                    trial.subschema(candidate, branch, path);
                    trial.violations.is_empty()
                })
            });
            if !unfit {
                continue;
            }
            let (old, new) = self.old_new(writer_map.get(keyword), reader_map.get(keyword));
            let rule = match (old, new) {
                (None, Some(_)) => "combined-type-added",
                (Some(_), None) => "combined-type-removed",
                _ => "combined-type-narrowed",
            };
            self.violation(
                &format!("{path}/{keyword}"),
                rule.into(),
                writer_map.get(keyword).cloned().unwrap_or(Value::Null),
                reader_map.get(keyword).cloned().unwrap_or(Value::Null),
                format!("a value the writer admits matches no branch of the reader's `{keyword}`"),
            );
        }
    }

    fn types(
        &mut self,
        writer: &Map<String, Value>,
        reader: &Map<String, Value>,
        writer_types: &Types,
        path: &str,
    ) {
        let reader_types = {
            let mut types = match reader.get("type") {
                Some(Value::String(name)) => Types(canonical(name).into_iter().collect()),
                Some(Value::Array(names)) => Types(
                    names
                        .iter()
                        .filter_map(Value::as_str)
                        .filter_map(canonical)
                        .collect(),
                ),
                _ => return,
            };
            if types.0.contains("number") {
                types.0.insert("integer");
            }
            types
        };
        let refused: Vec<&str> = writer_types
            .0
            .iter()
            .copied()
            .filter(|name| !reader_types.admits(name))
            .collect();
        if refused.is_empty() {
            return;
        }
        let writer_declared = Types::of(&strip_values(writer));
        let (old, new) = self.old_new(&writer_declared, &reader_types);
        let rule = if new.0.is_subset(&old.0) {
            "type-narrowed"
        } else if old.0.is_subset(&new.0) {
            "type-extended"
        } else {
            "type-changed"
        };
        self.violation(
            &format!("{path}/type"),
            rule.into(),
            writer.get("type").cloned().unwrap_or(Value::Null),
            reader.get("type").cloned().unwrap_or(Value::Null),
            format!("values of type {} are refused", refused.join(", ")),
        );
    }

    fn enums(&mut self, writer: &Map<String, Value>, reader: &Map<String, Value>, path: &str) {
        let values = |schema: &Map<String, Value>| -> Option<Vec<Value>> {
            match (schema.get("const"), schema.get("enum")) {
                (Some(constant), _) => Some(vec![constant.clone()]),
                (None, Some(Value::Array(values))) => Some(values.clone()),
                _ => None,
            }
        };
        let Some(reader_values) = values(reader) else {
            return;
        };
        let keyword = if reader.contains_key("const") {
            "const"
        } else {
            "enum"
        };
        match values(writer) {
            None => {
                let (old, new) = self.old_new(None::<()>, Some(()));
                let rule = match (old, new) {
                    (None, Some(())) => format!("{keyword}-added"),
                    _ => format!("{keyword}-removed"),
                };
                self.violation(
                    &format!("{path}/{keyword}"),
                    rule,
                    Value::Null,
                    Value::Array(reader_values),
                    "values outside the list are refused".into(),
                );
            }
            Some(writer_values) => {
                let refused: Vec<Value> = writer_values
                    .iter()
                    .filter(|value| !reader_values.contains(value))
                    .cloned()
                    .collect();
                if refused.is_empty() {
                    return;
                }
                let rule = match self.direction {
                    Direction::Backward => "enum-value-removed",
                    Direction::Forward => "enum-value-added",
                };
                self.violation(
                    &format!("{path}/{keyword}"),
                    rule.into(),
                    Value::Array(writer_values),
                    Value::Array(reader_values),
                    format!(
                        "{} {} refused",
                        serde_json::to_string(&refused).unwrap_or_default(),
                        if refused.len() == 1 { "is" } else { "are" }
                    ),
                );
            }
        }
    }

    /// A reader's bound that the writer does not keep: `tighter(writer, reader)` says when the
    /// reader's value is stricter.
    fn bound(
        &mut self,
        keyword: &str,
        writer: &Map<String, Value>,
        reader: &Map<String, Value>,
        path: &str,
        tighter: impl Fn(f64, f64) -> bool,
    ) {
        let number = |schema: &Map<String, Value>| schema.get(keyword).and_then(Value::as_f64);
        let Some(reader_value) = number(reader) else {
            return;
        };
        let writer_value = number(writer);
        if writer_value.is_some_and(|writer_value| !tighter(writer_value, reader_value)) {
            return;
        }
        let (old, new) = self.old_new(writer_value, Some(reader_value));
        let rule = format!("{}-{}", kebab(keyword), bound_change(old, new));
        self.violation(
            &format!("{path}/{keyword}"),
            rule,
            writer.get(keyword).cloned().unwrap_or(Value::Null),
            reader.get(keyword).cloned().unwrap_or(Value::Null),
            format!("`{keyword}` is stricter"),
        );
    }

    fn numbers(&mut self, writer: &Map<String, Value>, reader: &Map<String, Value>, path: &str) {
        self.bound("maximum", writer, reader, path, |w, r| r < w);
        self.bound("exclusiveMaximum", writer, reader, path, |w, r| r < w);
        self.bound("minimum", writer, reader, path, |w, r| r > w);
        self.bound("exclusiveMinimum", writer, reader, path, |w, r| r > w);
        // Multiples of the writer's step are multiples of the reader's when it divides it.
        self.bound("multipleOf", writer, reader, path, |w, r| {
            let ratio = w / r;
            (ratio - ratio.round()).abs() > 1e-9
        });
    }

    fn strings(&mut self, writer: &Map<String, Value>, reader: &Map<String, Value>, path: &str) {
        self.bound("maxLength", writer, reader, path, |w, r| r < w);
        self.bound("minLength", writer, reader, path, |w, r| r > w);
        if let Some(pattern) = reader.get("pattern")
            && writer.get("pattern") != Some(pattern)
        {
            let (old, new) = self.old_new(writer.get("pattern"), Some(pattern));
            let rule = match (old, new) {
                (None, Some(_)) => "pattern-added",
                (Some(_), None) => "pattern-removed",
                _ => "pattern-changed",
            };
            self.violation(
                &format!("{path}/pattern"),
                rule.into(),
                writer.get("pattern").cloned().unwrap_or(Value::Null),
                pattern.clone(),
                "strings that do not match the pattern are refused".into(),
            );
        }
    }

    fn arrays(&mut self, writer: &Map<String, Value>, reader: &Map<String, Value>, path: &str) {
        self.bound("maxItems", writer, reader, path, |w, r| r < w);
        self.bound("minItems", writer, reader, path, |w, r| r > w);
        if reader.get("uniqueItems") == Some(&Value::Bool(true))
            && writer.get("uniqueItems") != Some(&Value::Bool(true))
        {
            let (old, new) = self.old_new(writer.get("uniqueItems"), reader.get("uniqueItems"));
            let rule = if new.is_some() && old.is_none_or(|value| value != &Value::Bool(true)) {
                "unique-items-added"
            } else {
                "unique-items-removed"
            };
            self.violation(
                &format!("{path}/uniqueItems"),
                rule.into(),
                writer.get("uniqueItems").cloned().unwrap_or(Value::Null),
                Value::Bool(true),
                "arrays with repeated items are refused".into(),
            );
        }
        if let Some(reader_items) = reader.get("items") {
            let writer_items = writer.get("items").unwrap_or(&Value::Bool(true));
            self.subschema(writer_items, reader_items, &format!("{path}/items"));
        }
    }

    fn trial(&self) -> Checker<'a> {
        Checker {
            direction: self.direction,
            writer_root: self.writer_root,
            reader_root: self.reader_root,
            violations: Vec::new(),
            visiting: self.visiting.clone(),
        }
    }
}

/// A schema's keywords without `enum` and `const` (its declared types).
fn strip_values(schema: &Map<String, Value>) -> Map<String, Value> {
    let mut copy = schema.clone();
    copy.remove("enum");
    copy.remove("const");
    copy
}

/// `exclusiveMaximum` → `exclusive-maximum`.
fn kebab(keyword: &str) -> String {
    let mut out = String::with_capacity(keyword.len() + 4);
    for character in keyword.chars() {
        if character.is_ascii_uppercase() {
            out.push('-');
            out.push(character.to_ascii_lowercase());
        } else {
            out.push(character);
        }
    }
    out
}

/// A property name as a JSON pointer token.
pub fn escape_pointer(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}
