//! The compatibility checker against its rules table and, by generated documents, against
//! what validation itself says.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::compat::{Direction, check};
use super::{CompatibilityMode, SchemaVersion, violations};

/// An object schema with `id` (always there, required) and maybe `note`.
fn object(open: bool, note: Option<bool>) -> Value {
    let mut properties = json!({"id": {"type": "string"}});
    let mut required = vec![json!("id")];
    if let Some(note_required) = note {
        properties["note"] = json!({"type": "string", "maxLength": 20});
        if note_required {
            required.push(json!("note"));
        }
    }
    let mut schema = json!({"type": "object", "properties": properties, "required": required});
    if !open {
        schema["additionalProperties"] = json!(false);
    }
    schema
}

/// Open or closed content model × property added or removed × required or optional, under
/// backward, forward and full: the 24 cases, each with the rules expected (empty: compatible).
#[test]
fn open_and_closed_models_with_added_and_removed_properties_follow_the_rules_table() {
    type Case = (
        &'static str,
        bool,
        &'static str,
        bool,
        &'static [&'static str],
        &'static [&'static str],
    );
    // (model, open, change, required, backward rules, forward rules); full = both.
    let table: [Case; 8] = [
        (
            "open",
            true,
            "added",
            false,
            &["property-added-to-open-model"],
            &[],
        ),
        (
            "open",
            true,
            "added",
            true,
            &["required-added", "property-added-to-open-model"],
            &[],
        ),
        (
            "open",
            true,
            "removed",
            false,
            &[],
            &["property-removed-from-open-model"],
        ),
        (
            "open",
            true,
            "removed",
            true,
            &[],
            &["required-removed", "property-removed-from-open-model"],
        ),
        (
            "closed",
            false,
            "added",
            false,
            &[],
            &["property-added-to-closed-model"],
        ),
        (
            "closed",
            false,
            "added",
            true,
            &["required-added"],
            &["property-added-to-closed-model"],
        ),
        (
            "closed",
            false,
            "removed",
            false,
            &["property-removed-from-closed-model"],
            &[],
        ),
        (
            "closed",
            false,
            "removed",
            true,
            &["property-removed-from-closed-model"],
            &["required-removed"],
        ),
    ];
    let mut cases = 0;
    for (model, open, change, required, backward, forward) in table {
        let (old, new) = match change {
            "added" => (object(open, None), object(open, Some(required))),
            _ => (object(open, Some(required)), object(open, None)),
        };
        let full: Vec<&str> = backward.iter().chain(forward).copied().collect();
        for (mode, expected) in [
            (CompatibilityMode::Backward, backward.to_vec()),
            (CompatibilityMode::Forward, forward.to_vec()),
            (CompatibilityMode::Full, full),
        ] {
            let found = violations(mode, &[(SchemaVersion::FIRST, &old)], &new);
            let mut rules: Vec<&str> = found.iter().map(|found| found.rule.as_str()).collect();
            rules.sort_unstable();
            let mut expected = expected.clone();
            expected.sort_unstable();
            expected.dedup();
            let what = if required { "required" } else { "optional" };
            assert_eq!(
                rules,
                expected,
                "{model} model, {what} property {change}, {}: {found:#?}",
                mode.as_str()
            );
            for violation in &found {
                assert!(violation.path.starts_with("#/"), "{violation:?}");
                assert!(!violation.message.is_empty() && !violation.hint.is_empty());
            }
            cases += 1;
        }
    }
    assert_eq!(cases, 24);
}

#[test]
fn a_narrowed_type_is_reported_at_its_pointer_with_both_values() {
    let old = json!({"type": "object", "properties": {"amount": {"type": "number"}}});
    let new = json!({"type": "object", "properties": {"amount": {"type": "integer"}}});
    let found = check(&old, &new, Direction::Backward);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].path, "#/properties/amount/type");
    assert_eq!(found[0].rule, "type-narrowed");
    assert_eq!(
        (found[0].old.clone(), found[0].new.clone()),
        (json!("number"), json!("integer"))
    );
    // Widening is fine backward, and breaks forward under the same name of the change.
    assert!(check(&new, &old, Direction::Backward).is_empty());
    assert_eq!(
        check(&new, &old, Direction::Forward)[0].rule,
        "type-extended"
    );
}

#[test]
fn enum_values_removed_break_backward_and_added_break_forward() {
    let old = json!({"enum": ["card", "sepa"]});
    let new = json!({"enum": ["card"]});
    assert_eq!(
        check(&old, &new, Direction::Backward)[0].rule,
        "enum-value-removed"
    );
    assert!(check(&old, &new, Direction::Forward).is_empty());
    assert_eq!(
        check(&new, &old, Direction::Forward)[0].rule,
        "enum-value-added"
    );
}

#[test]
fn bounds_are_named_by_their_change_from_old_to_new() {
    let rules = |old: Value, new: Value, direction| -> Vec<String> {
        check(&old, &new, direction)
            .into_iter()
            .map(|found| found.rule)
            .collect()
    };
    let string = |extra: Value| {
        let mut schema = json!({"type": "string"});
        schema
            .as_object_mut()
            .expect("an object")
            .extend(extra.as_object().expect("an object").clone());
        schema
    };
    assert_eq!(
        rules(
            string(json!({"maxLength": 10})),
            string(json!({"maxLength": 5})),
            Direction::Backward
        ),
        ["max-length-decreased"]
    );
    assert_eq!(
        rules(
            string(json!({})),
            string(json!({"maxLength": 5})),
            Direction::Backward
        ),
        ["max-length-added"]
    );
    assert_eq!(
        rules(
            string(json!({"maxLength": 5})),
            string(json!({})),
            Direction::Forward
        ),
        ["max-length-removed"]
    );
    assert_eq!(
        rules(
            json!({"minimum": 0}),
            json!({"minimum": 1}),
            Direction::Backward
        ),
        ["minimum-increased"]
    );
    assert_eq!(
        rules(
            json!({"multipleOf": 2}),
            json!({"multipleOf": 4}),
            Direction::Backward
        ),
        ["multiple-of-increased"]
    );
    assert!(
        rules(
            json!({"multipleOf": 4}),
            json!({"multipleOf": 2}),
            Direction::Backward
        )
        .is_empty()
    );
    assert_eq!(
        rules(
            string(json!({})),
            string(json!({"pattern": "^a"})),
            Direction::Backward
        ),
        ["pattern-added"]
    );
}

#[test]
fn only_annotations_changed_is_a_patch_and_compatible_additions_are_minor() {
    use super::{ChangeKind, change_kind};
    let old = object(false, None);
    let mut described = old.clone();
    described["description"] = json!("a refund was requested");
    described["properties"]["id"]["title"] = json!("Refund id");
    let mode = CompatibilityMode::None;
    assert_eq!(change_kind(&old, &old, mode), ChangeKind::None);
    assert_eq!(change_kind(&old, &described, mode), ChangeKind::Patch);
    assert_eq!(
        change_kind(&old, &object(false, Some(false)), mode),
        ChangeKind::Minor
    );
    assert_eq!(
        change_kind(&object(false, Some(false)), &old, mode),
        ChangeKind::Major
    );
    // Under forward, an optional property removed from an open model breaks; under backward
    // it does not.
    let (with_note, without) = (object(true, Some(false)), object(true, None));
    assert_eq!(
        change_kind(&with_note, &without, CompatibilityMode::Backward),
        ChangeKind::Minor
    );
    assert_eq!(
        change_kind(&with_note, &without, CompatibilityMode::Forward),
        ChangeKind::Major
    );
}

#[test]
fn transitive_modes_check_every_earlier_version() {
    // 1.0.0 allows "sepa"; 1.1.0 dropped it (allowed under plain backward); a third version is
    // checked against both under backward_transitive.
    let first = json!({"enum": ["card", "sepa"]});
    let second = json!({"enum": ["card", "sepa", "ach"]});
    let candidate = json!({"enum": ["card", "ach"]});
    let history = [
        (SchemaVersion::FIRST, &first),
        ("1.1.0".parse().expect("a version"), &second),
    ];
    let plain = violations(CompatibilityMode::Backward, &history, &candidate);
    let transitive = violations(CompatibilityMode::BackwardTransitive, &history, &candidate);
    assert_eq!(plain.len(), 1);
    assert_eq!(transitive.len(), 1);
    // Against only the first version, the transitive mode still finds it.
    let only_first = violations(
        CompatibilityMode::BackwardTransitive,
        &[
            (SchemaVersion::FIRST, &first),
            (
                "1.1.0".parse().expect("a version"),
                &json!({"enum": ["card", "ach"]}),
            ),
        ],
        &candidate,
    );
    assert_eq!(only_first.len(), 1, "{only_first:#?}");
    assert!(
        only_first[0].message.contains("against version 1.0.0"),
        "{}",
        only_first[0].message
    );
    assert!(
        violations(
            CompatibilityMode::Backward,
            &[(SchemaVersion::FIRST, &json!({"enum": ["card", "ach"]}))],
            &candidate
        )
        .is_empty()
    );
}

#[test]
fn recursive_schemas_compare_without_looping() {
    let tree = json!({
        "$defs": {"node": {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}, "name": {"type": "string"}}}},
        "$ref": "#/$defs/node"
    });
    let mut narrowed = tree.clone();
    narrowed["$defs"]["node"]["properties"]["name"]["maxLength"] = json!(3);
    assert!(check(&tree, &tree.clone(), Direction::Backward).is_empty());
    let found = check(&tree, &narrowed, Direction::Backward);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].rule, "max-length-added");
}

// Property test: the checker never calls a pair compatible when a document says otherwise.

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({"type": "string"})),
        (1u64..6).prop_map(|limit| json!({"type": "string", "maxLength": limit})),
        Just(json!({"type": "integer"})),
        (-5i64..5, 0i64..10).prop_map(
            |(low, span)| json!({"type": "integer", "minimum": low, "maximum": low + span})
        ),
        Just(json!({"type": "number"})),
        Just(json!({"type": "boolean"})),
        Just(json!({"type": ["string", "integer"]})),
        proptest::sample::subsequence(vec!["x", "y", "z"], 1..=3)
            .prop_map(|values| json!({"enum": values})),
        Just(json!({})),
    ]
}

fn object_schema(depth: u32) -> BoxedStrategy<Value> {
    let property = if depth == 0 {
        leaf().boxed()
    } else {
        prop_oneof![3 => leaf(), 1 => object_schema(depth - 1)].boxed()
    };
    (
        proptest::collection::btree_map(proptest::sample::select(NAMES.to_vec()), property, 0..=4),
        proptest::collection::btree_set(proptest::sample::select(NAMES.to_vec()), 0..=2),
        prop_oneof![Just(None), Just(Some(true)), Just(Some(false))],
    )
        .prop_map(|(properties, required, additional)| {
            let properties: serde_json::Map<String, Value> = properties
                .into_iter()
                .map(|(name, schema)| (name.to_owned(), schema))
                .collect();
            let mut schema =
                json!({"type": "object", "properties": properties, "required": required});
            if let Some(additional) = additional {
                schema["additionalProperties"] = json!(additional);
            }
            schema
        })
        .boxed()
}

/// Values of every kind, used where a schema admits anything (and to try near misses).
fn any_value() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(json!(null)),
        any::<bool>().prop_map(Value::from),
        (-12i64..12).prop_map(Value::from),
        Just(json!(2.5)),
        proptest::sample::select(vec!["", "x", "y", "z", "ab", "abcdefg"]).prop_map(Value::from),
        Just(json!({"a": 1})),
        Just(json!([1, "x"])),
    ]
    .boxed()
}

/// Values shaped after `schema` (mostly valid under it), with some values of any kind.
fn value_for(schema: &Value) -> BoxedStrategy<Value> {
    let shaped = if schema.get("properties").is_some() {
        document_for(schema)
    } else if let Some(Value::Array(values)) = schema.get("enum") {
        proptest::sample::select(values.clone()).boxed()
    } else {
        match schema.get("type").and_then(Value::as_str) {
            Some("string") => proptest::sample::select(vec!["", "x", "abc", "abcdefg"])
                .prop_map(Value::from)
                .boxed(),
            Some("integer") => (-12i64..12).prop_map(Value::from).boxed(),
            Some("number") => {
                prop_oneof![(-12i64..12).prop_map(Value::from), Just(json!(0.5))].boxed()
            }
            Some("boolean") => any::<bool>().prop_map(Value::from).boxed(),
            _ => any_value(),
        }
    };
    prop_oneof![4 => shaped, 1 => any_value()].boxed()
}

/// Objects shaped after an object schema: its properties (some left out), and for an open
/// model, other names with values of any kind.
fn document_for(schema: &Value) -> BoxedStrategy<Value> {
    let properties = schema["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let closed = schema.get("additionalProperties") == Some(&json!(false));
    let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = NAMES
        .iter()
        .map(|name| {
            let name = (*name).to_owned();
            let value = match properties.get(&name) {
                Some(property) => value_for(property),
                None if closed => return Just(None).boxed(),
                None => any_value(),
            };
            proptest::option::weighted(0.7, value.prop_map(move |value| (name.clone(), value)))
                .boxed()
        })
        .collect();
    fields
        .prop_map(|fields| Value::Object(fields.into_iter().flatten().collect()))
        .boxed()
}

/// `schema` with one edit: a property removed, added or replaced, a name made required or
/// optional, or the content model changed.
fn edited(schema: Value) -> BoxedStrategy<Value> {
    (
        0usize..5,
        proptest::sample::select(NAMES.to_vec()),
        leaf(),
        prop_oneof![Just(None), Just(Some(true)), Just(Some(false))],
    )
        .prop_map(move |(edit, name, replacement, additional)| {
            let mut schema = schema.clone();
            let object = schema.as_object_mut().expect("an object schema");
            match edit {
                0 => {
                    if let Some(Value::Object(properties)) = object.get_mut("properties") {
                        properties.remove(name);
                    }
                }
                1 | 2 => {
                    if let Some(Value::Object(properties)) = object.get_mut("properties") {
                        properties.insert(name.to_owned(), replacement);
                    }
                }
                3 => {
                    if let Some(Value::Array(required)) = object.get_mut("required") {
                        let name = json!(name);
                        if let Some(position) = required.iter().position(|known| *known == name) {
                            required.remove(position);
                        } else {
                            required.push(name);
                        }
                    }
                }
                _ => match additional {
                    Some(additional) => {
                        object.insert("additionalProperties".into(), json!(additional));
                    }
                    None => {
                        object.remove("additionalProperties");
                    }
                },
            }
            schema
        })
        .boxed()
}

/// Two schemas, the second often an edit of the first, and documents shaped after each.
fn pair_with_documents() -> impl Strategy<Value = (Value, Value, Vec<Value>, Vec<Value>)> {
    object_schema(1)
        .prop_flat_map(|old| {
            let new = prop_oneof![1 => object_schema(1), 3 => edited(old.clone())];
            (Just(old), new)
        })
        .prop_flat_map(|(old, new)| {
            let old_documents = proptest::collection::vec(document_for(&old), 24);
            let new_documents = proptest::collection::vec(document_for(&new), 24);
            (Just(old), Just(new), old_documents, new_documents)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// Backward-compatible: every document valid under the old schema validates under the new
    /// one; forward-compatible: the reverse.
    #[test]
    fn what_the_checker_calls_compatible_accepts_every_generated_document(
        (old, new, old_documents, new_documents) in pair_with_documents()
    ) {
        let old_validator = jsonschema::draft202012::new(&old).expect("a valid schema");
        let new_validator = jsonschema::draft202012::new(&new).expect("a valid schema");
        if check(&old, &new, Direction::Backward).is_empty() {
            for document in old_documents.iter().filter(|document| old_validator.is_valid(document)) {
                prop_assert!(
                    new_validator.is_valid(document),
                    "called backward compatible, yet {document} (valid under {old}) fails {new}"
                );
            }
        }
        if check(&old, &new, Direction::Forward).is_empty() {
            for document in new_documents.iter().filter(|document| new_validator.is_valid(document)) {
                prop_assert!(
                    old_validator.is_valid(document),
                    "called forward compatible, yet {document} (valid under {new}) fails {old}"
                );
            }
        }
    }
}
