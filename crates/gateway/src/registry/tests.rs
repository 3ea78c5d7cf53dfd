use serde_json::{Value, json};

use super::*;
use crate::event_type::Category;

fn definition(schema: Value) -> EventTypeDefinition {
    EventTypeDefinition {
        owning_application: "refunds".into(),
        category: Category::Business,
        schema,
        compatibility_mode: None,
        partition_strategy: None,
        partition_key_fields: vec!["/order_id".into()],
        partitions: Some(3),
    }
}

fn refund(extra: Value) -> Value {
    let mut properties = json!({
        "order_id": {"type": "string"},
        "amount": {"type": "number", "minimum": 0},
        "currency": {"enum": ["EUR", "USD"]}
    });
    properties
        .as_object_mut()
        .expect("an object")
        .extend(extra.as_object().expect("an object").clone());
    json!({
        "type": "object",
        "properties": properties,
        "required": ["order_id", "amount"],
        "additionalProperties": false
    })
}

fn open_registry(dir: &std::path::Path) -> Registry {
    let database = open_database(dir).expect("the gateway database");
    Registry::open(Box::new(EmbeddedLog::new(&database).expect("the keyspace")))
        .expect("the registry")
}

#[test]
fn a_type_evolves_through_versions_and_is_there_after_reopening() {
    let dir = tempfile::tempdir().expect("a directory");
    let registry = open_registry(dir.path());
    let name = "order.refund-requested";
    let (outcome, created) = registry
        .put(name, definition(refund(json!({}))), 1_000_000)
        .expect("created");
    assert_eq!(
        (outcome, created.version.to_string()),
        (PutOutcome::Created, "1.0.0".into())
    );
    assert_eq!(
        created.compatibility_mode,
        CompatibilityMode::BackwardTransitive
    );
    assert_eq!(created.partition_strategy, PartitionStrategy::Hash);

    // A description: patch. An optional property in a closed model: minor. The same again:
    // nothing new.
    let mut described = refund(json!({}));
    described["description"] = json!("a customer asked for money back");
    let (outcome, patched) = registry
        .put(name, definition(described), 2_000_000)
        .expect("patched");
    assert_eq!(
        (outcome, patched.version.to_string()),
        (PutOutcome::Evolved, "1.0.1".into())
    );
    let added = refund(json!({"reason": {"type": "string"}}));
    let (_, minor) = registry
        .put(name, definition(added.clone()), 3_000_000)
        .expect("minor");
    assert_eq!(minor.version.to_string(), "1.1.0");
    let (outcome, same) = registry
        .put(name, definition(added), 4_000_000)
        .expect("unchanged");
    assert_eq!(
        (outcome, same.version.to_string()),
        (PutOutcome::Unchanged, "1.1.0".into())
    );

    drop(registry);
    let registry = open_registry(dir.path());
    let versions: Vec<String> = registry
        .schemas(name)
        .expect("the schemas")
        .iter()
        .map(|record| record.version.to_string())
        .collect();
    assert_eq!(versions, ["1.1.0", "1.0.1", "1.0.0"], "newest first");
    let kept = registry.get(name).expect("the type");
    assert_eq!(kept.event_type.version.to_string(), "1.1.0");
    assert_eq!(
        kept.event_type.created_at,
        mm_model::time::format_rfc3339(1_000_000)
    );
    assert_eq!(
        kept.event_type.updated_at,
        mm_model::time::format_rfc3339(4_000_000)
    );
    assert!(
        kept.validator
            .is_valid(&json!({"order_id": "o1", "amount": 3, "reason": "late"}))
    );
    assert_eq!(
        registry.schema(name, "1.0.0").expect("one version").version,
        SchemaVersion::FIRST
    );
    assert!(matches!(
        registry.schema(name, "9.0.0"),
        Err(RegistryError::UnknownVersion { .. })
    ));
}

#[test]
fn a_breaking_change_is_refused_with_its_violations_unless_the_mode_is_none() {
    let dir = tempfile::tempdir().expect("a directory");
    let registry = open_registry(dir.path());
    let name = "payout.failed";
    registry
        .put(name, definition(refund(json!({}))), 1)
        .expect("created");
    // USD dropped from the enum, a required field added.
    let mut breaking = refund(json!({"iban": {"type": "string"}}));
    breaking["properties"]["currency"] = json!({"enum": ["EUR"]});
    breaking["required"] = json!(["order_id", "amount", "iban"]);
    let Err(RegistryError::Incompatible {
        violations, mode, ..
    }) = registry.put(name, definition(breaking.clone()), 2)
    else {
        panic!("a breaking change was accepted");
    };
    assert_eq!(mode, "backward_transitive");
    let rules: Vec<&str> = violations.iter().map(|found| found.rule.as_str()).collect();
    assert!(rules.contains(&"enum-value-removed"), "{rules:?}");
    assert!(rules.contains(&"required-added"), "{rules:?}");
    assert_eq!(
        registry.get(name).expect("the type").event_type.version,
        SchemaVersion::FIRST
    );

    // The dry run says the same, and under none that it would be 2.0.0.
    let report = registry
        .compatibility(name, &breaking, None)
        .expect("a report");
    assert!(!report.compatible);
    assert_eq!(report.next_version, None);
    assert_eq!(report.violations.len(), violations.len());
    let report = registry
        .compatibility(name, &breaking, Some(CompatibilityMode::None))
        .expect("a report");
    assert!(report.compatible);
    assert_eq!(
        report.next_version.map(|version| version.to_string()),
        Some("2.0.0".into())
    );

    let mut with_none = definition(breaking);
    with_none.compatibility_mode = Some(CompatibilityMode::None);
    let (_, major) = registry
        .put(name, with_none, 3)
        .expect("allowed under none");
    assert_eq!(major.version.to_string(), "2.0.0");
}

#[test]
fn bad_definitions_are_refused_with_the_field_and_partitioning_is_fixed() {
    let dir = tempfile::tempdir().expect("a directory");
    let registry = open_registry(dir.path());
    assert!(matches!(
        registry.put("9lives", definition(refund(json!({}))), 1),
        Err(RegistryError::InvalidName(_))
    ));
    let Err(RegistryError::InvalidSchema(invalid)) = registry.put(
        "order.x",
        definition(json!({"type": "object", "properties": {"a": {"type": "strin"}}})),
        1,
    ) else {
        panic!("an invalid schema was accepted");
    };
    assert!(
        invalid.location.starts_with("#/properties/a"),
        "{invalid:?}"
    );
    let mut unknown_key = definition(refund(json!({})));
    unknown_key.partition_key_fields = vec!["/customer".into()];
    assert!(matches!(
        registry.put("order.x", unknown_key, 1),
        Err(RegistryError::InvalidDefinition {
            field: "partition_key_fields",
            ..
        })
    ));
    let mut no_key = definition(refund(json!({})));
    no_key.partition_key_fields.clear();
    no_key.partition_strategy = Some(PartitionStrategy::Hash);
    assert!(matches!(
        registry.put("order.x", no_key, 1),
        Err(RegistryError::InvalidDefinition {
            field: "partition_key_fields",
            ..
        })
    ));

    registry
        .put("order.x", definition(refund(json!({}))), 1)
        .expect("created");
    let mut more_partitions = definition(refund(json!({})));
    more_partitions.partitions = Some(6);
    assert!(matches!(
        registry.put("order.x", more_partitions, 2),
        Err(RegistryError::Fixed {
            field: "partitions",
            ..
        })
    ));
    assert!(matches!(
        registry.get("order.y"),
        Err(RegistryError::UnknownType(_))
    ));
    assert_eq!(registry.list().len(), 1);
}

#[test]
fn the_built_in_type_follows_its_definition_and_refuses_producers() {
    use crate::event_type::{API_CALL_TYPE, api_call_definition};
    let dir = tempfile::tempdir().expect("a directory");
    let registry = open_registry(dir.path());
    let schema = mm_model::mapping::FieldMapping::default().json_schema();
    let first = registry
        .ensure_built_in(API_CALL_TYPE, api_call_definition(schema.clone()), 1)
        .expect("registered");
    assert!(first.built_in);
    assert_eq!(first.version, SchemaVersion::FIRST);
    // The same again: nothing new. Another mapping: a new version, whatever the change.
    let same = registry
        .ensure_built_in(API_CALL_TYPE, api_call_definition(schema.clone()), 2)
        .expect("kept");
    assert_eq!(same.version, SchemaVersion::FIRST);
    let mapping = mm_model::mapping::FieldMapping {
        merchant: "/account".into(),
        ..mm_model::mapping::FieldMapping::default()
    };
    let moved = registry
        .ensure_built_in(API_CALL_TYPE, api_call_definition(mapping.json_schema()), 3)
        .expect("evolved");
    assert_eq!(
        moved.version.major, 2,
        "a moved required field breaks old records"
    );
    assert!(matches!(
        registry.put(API_CALL_TYPE, api_call_definition(schema.clone()), 4),
        Err(RegistryError::BuiltIn(_))
    ));
    // A record as /v1/ingest takes it validates under the schema.
    let validator = crate::schema::compile(&schema).expect("valid JSON Schema");
    let record = json!({"ts": "2026-12-01T10:00:00Z", "merchant": "m1", "api": "/v1/payments", "status": 201, "latency_ms": 12.5, "corr_id": "c1", "region": "eu-west-1"});
    assert!(validator.is_valid(&record));
    assert!(!validator.is_valid(&json!({"merchant": "m1"})));
}
