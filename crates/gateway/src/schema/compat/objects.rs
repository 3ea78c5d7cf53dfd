//! Objects: bounds on the number of properties, required names, each property against the
//! other side's property or content model (the open/closed rules), `additionalProperties`
//! and `dependentRequired`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::{Checker, Direction, escape_pointer};

impl Checker<'_> {
    pub(super) fn objects(
        &mut self,
        writer: &Map<String, Value>,
        reader: &Map<String, Value>,
        path: &str,
    ) {
        self.bound("maxProperties", writer, reader, path, |w, r| r < w);
        self.bound("minProperties", writer, reader, path, |w, r| r > w);
        let empty = Map::new();
        let (writer_properties, reader_properties) =
            (properties_of(writer, &empty), properties_of(reader, &empty));
        let names = |schema: &Map<String, Value>, keyword: &str| -> BTreeSet<String> {
            match schema.get(keyword) {
                Some(Value::Array(names)) => names
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                _ => BTreeSet::new(),
            }
        };
        let (writer_required, reader_required) =
            (names(writer, "required"), names(reader, "required"));
        // What a schema says of a name it does not list.
        let patterns =
            writer.contains_key("patternProperties") || reader.contains_key("patternProperties");
        let open = Value::Bool(true);
        let (writer_additional, reader_additional) = (
            writer.get("additionalProperties").unwrap_or(&open),
            reader.get("additionalProperties").unwrap_or(&open),
        );

        for name in reader_required.difference(&writer_required) {
            let (old, new) = self.old_new(false, true);
            let rule = if new && !old {
                "required-added"
            } else {
                "required-removed"
            };
            self.violation(
                &format!("{path}/required"),
                rule.into(),
                Value::Array(writer_required.iter().cloned().map(Value::String).collect()),
                Value::Array(reader_required.iter().cloned().map(Value::String).collect()),
                format!("documents without `{name}` are refused"),
            );
        }

        let all_names: BTreeSet<&String> = writer_properties
            .keys()
            .chain(reader_properties.keys())
            .collect();
        for name in all_names {
            let property_path = format!("{path}/properties/{}", escape_pointer(name));
            match (writer_properties.get(name), reader_properties.get(name)) {
                (Some(writer_schema), Some(reader_schema)) => {
                    self.subschema(writer_schema, reader_schema, &property_path);
                }
                (Some(writer_schema), None) => {
                    // The reader judges the name by its additionalProperties.
                    let mut trial = self.trial();
                    trial.subschema(writer_schema, reader_additional, &property_path);
                    if trial.violations.is_empty() {
                        self.visiting = trial.visiting;
                        continue;
                    }
                    let closed = reader_additional == &Value::Bool(false);
                    let rule = match (self.direction, closed) {
                        (Direction::Backward, true) => "property-removed-from-closed-model",
                        (Direction::Backward, false) => {
                            "property-removed-from-partially-open-model"
                        }
                        (Direction::Forward, true) => "property-added-to-closed-model",
                        (Direction::Forward, false) => "property-added-to-partially-open-model",
                    };
                    self.violation(
                        &property_path,
                        rule.into(),
                        writer_schema.clone(),
                        Value::Null,
                        format!(
                            "`{name}` is not a property of the reader's model, which refuses it"
                        ),
                    );
                }
                (None, Some(reader_schema)) => {
                    // The writer may have produced the name under its additionalProperties.
                    let writer_schema = if patterns && writer_additional == &Value::Bool(false) {
                        // A pattern may admit the name: assume any value.
                        &Value::Bool(true)
                    } else {
                        writer_additional
                    };
                    let mut trial = self.trial();
                    trial.subschema(writer_schema, reader_schema, &property_path);
                    if trial.violations.is_empty() {
                        self.visiting = trial.visiting;
                        continue;
                    }
                    let open = writer_schema == &Value::Bool(true);
                    let rule = match (self.direction, open) {
                        (Direction::Backward, true) => "property-added-to-open-model",
                        (Direction::Backward, false) => "property-added-to-partially-open-model",
                        (Direction::Forward, true) => "property-removed-from-open-model",
                        (Direction::Forward, false) => "property-removed-from-partially-open-model",
                    };
                    self.violation(
                        &property_path,
                        rule.into(),
                        Value::Null,
                        reader_schema.clone(),
                        format!(
                            "the writer's model admits `{name}` with values the reader's schema for it refuses"
                        ),
                    );
                }
                (None, None) => {}
            }
        }

        // Names neither lists.
        let mut trial = self.trial();
        trial.subschema(
            writer_additional,
            reader_additional,
            &format!("{path}/additionalProperties"),
        );
        if !trial.violations.is_empty() {
            let (old, new) = self.old_new(writer_additional, reader_additional);
            let rule = if new == &Value::Bool(false) {
                "additional-properties-narrowed"
            } else if old == &Value::Bool(false) {
                "additional-properties-extended"
            } else {
                "additional-properties-changed"
            };
            self.violation(
                &format!("{path}/additionalProperties"),
                rule.into(),
                writer
                    .get("additionalProperties")
                    .cloned()
                    .unwrap_or(Value::Null),
                reader
                    .get("additionalProperties")
                    .cloned()
                    .unwrap_or(Value::Null),
                "properties the writer's model admits are refused".into(),
            );
        }

        // dependentRequired: the reader's demands must be the writer's.
        let dependencies = |schema: &Map<String, Value>| -> BTreeMap<String, BTreeSet<String>> {
            match schema.get("dependentRequired") {
                Some(Value::Object(map)) => map
                    .iter()
                    .map(|(name, names)| {
                        let set = names
                            .as_array()
                            .map(|names| {
                                names
                                    .iter()
                                    .filter_map(Value::as_str)
                                    .map(str::to_owned)
                                    .collect()
                            })
                            .unwrap_or_default();
                        (name.clone(), set)
                    })
                    .collect(),
                _ => BTreeMap::new(),
            }
        };
        let (writer_dependencies, reader_dependencies) =
            (dependencies(writer), dependencies(reader));
        for (name, needed) in &reader_dependencies {
            let kept = writer_dependencies.get(name).cloned().unwrap_or_default();
            if needed.is_subset(&kept) || writer_required.is_superset(needed) {
                continue;
            }
            let (old, new) = self.old_new(!kept.is_empty(), true);
            let rule = if new && !old {
                "dependent-required-added"
            } else {
                "dependent-required-extended"
            };
            self.violation(
                &format!("{path}/dependentRequired/{}", escape_pointer(name)),
                rule.into(),
                writer
                    .get("dependentRequired")
                    .cloned()
                    .unwrap_or(Value::Null),
                reader
                    .get("dependentRequired")
                    .cloned()
                    .unwrap_or(Value::Null),
                format!("documents with `{name}` but without all of {needed:?} are refused"),
            );
        }
    }
}

/// A schema's `properties` (`empty` when it has none).
fn properties_of<'m>(
    schema: &'m Map<String, Value>,
    empty: &'m Map<String, Value>,
) -> &'m Map<String, Value> {
    match schema.get("properties") {
        Some(Value::Object(properties)) => properties,
        _ => empty,
    }
}
