//! Event types: what a producer registers (`PUT /v1/event-types/{name}`) and what the registry
//! keeps of it.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::schema::{CompatibilityMode, SchemaVersion};

/// Partitions of a new event type when its definition does not say.
pub const DEFAULT_PARTITIONS: u32 = 4;
/// The most partitions an event type may have.
pub const MAX_PARTITIONS: u32 = 1024;
/// The longest event type name.
pub const MAX_NAME_LENGTH: usize = 255;

/// What kind of events a type carries (Nakadi's categories).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Something that happened in the business (a refund was requested).
    Business,
    /// A change of a data entity.
    Data,
    Undefined,
}

/// How events are spread over the type's partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PartitionStrategy {
    /// By the Java client's murmur2 of the key fields' values: one key, one partition, in order.
    Hash,
    /// Any partition.
    Random,
    /// The producer names the partition in `metadata.partition`.
    UserDefined,
}

/// The body of `PUT /v1/event-types/{name}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventTypeDefinition {
    /// The application that owns the type and publishes its events.
    pub owning_application: String,
    pub category: Category,
    /// JSON Schema (draft 2020-12) of the events, without their `metadata`.
    #[schema(value_type = Object)]
    pub schema: Value,
    /// How the schema may evolve [default: `backward_transitive`].
    #[serde(default)]
    pub compatibility_mode: Option<CompatibilityMode>,
    /// [default: `hash` when key fields are given, otherwise `random`]
    #[serde(default)]
    pub partition_strategy: Option<PartitionStrategy>,
    /// JSON pointers of the fields that make the partition key (`/order_id`), for `hash`.
    #[serde(default)]
    pub partition_key_fields: Vec<String>,
    /// Partitions of the type's log [default: 4]; fixed once created (changing it would move
    /// keys between partitions and break their order).
    #[serde(default)]
    pub partitions: Option<u32>,
}

/// An event type as registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventType {
    pub name: String,
    pub owning_application: String,
    pub category: Category,
    /// The current schema.
    #[schema(value_type = Object)]
    pub schema: Value,
    pub compatibility_mode: CompatibilityMode,
    pub partition_strategy: PartitionStrategy,
    pub partition_key_fields: Vec<String>,
    pub partitions: u32,
    /// The current schema's version.
    #[schema(value_type = String, example = "1.1.0")]
    pub version: SchemaVersion,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Owned by the server (`merchant.api-call`): read-only here.
    #[serde(default)]
    pub built_in: bool,
}

/// Checks an event type name against Nakadi's pattern: dot-separated parts of letters, digits,
/// `-` and `_`, the first starting with a letter and the others with a letter or digit
/// (`order.refund-requested`).
pub fn check_name(name: &str) -> Result<(), String> {
    let problem = |detail: &str| {
        Err(format!(
            "event type name {name:?} {detail}; names are dot-separated parts of letters, digits, '-' and '_' (e.g. order.refund-requested)"
        ))
    };
    if name.is_empty() {
        return problem("is empty");
    }
    if name.len() > MAX_NAME_LENGTH {
        return problem(&format!("is longer than {MAX_NAME_LENGTH} bytes"));
    }
    for (index, part) in name.split('.').enumerate() {
        let mut characters = part.chars();
        let Some(first) = characters.next() else {
            return problem("has an empty part");
        };
        let first_ok = if index == 0 {
            first.is_ascii_alphabetic()
        } else {
            first.is_ascii_alphanumeric()
        };
        if !first_ok {
            return problem(&format!("has a part starting with {first:?}"));
        }
        if let Some(bad) = characters.find(|character| {
            !(character.is_ascii_alphanumeric() || *character == '-' || *character == '_')
        }) {
            return problem(&format!("contains {bad:?}"));
        }
    }
    Ok(())
}

/// The built-in type of the API-call log: its records arrive through `/v1/ingest`.
pub const API_CALL_TYPE: &str = "merchant.api-call";

/// The built-in API-call type for the records `schema` (the field mapping's) describes.
pub fn api_call_definition(schema: Value) -> EventTypeDefinition {
    EventTypeDefinition {
        owning_application: "merchant-monitor".into(),
        category: Category::Data,
        schema,
        compatibility_mode: None,
        partition_strategy: Some(PartitionStrategy::Random),
        partition_key_fields: Vec::new(),
        partitions: Some(1),
    }
}

/// Whether a JSON pointer names a property the schema declares (through `properties`).
pub fn schema_declares(schema: &Value, pointer: &str) -> bool {
    let Some(rest) = pointer.strip_prefix('/') else {
        return false;
    };
    let mut current = schema;
    for token in rest.split('/') {
        let name = token.replace("~1", "/").replace("~0", "~");
        match current
            .get("properties")
            .and_then(|properties| properties.get(&name))
        {
            Some(next) => current = next,
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_follow_the_dotted_pattern_and_say_what_is_wrong() {
        for good in ["order.refund-requested", "a", "payout_failed.v2", "x.1st"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("", "is empty"),
            ("1order", "starting with '1'"),
            ("order..x", "empty part"),
            ("order/x", "contains '/'"),
            ("order.", "empty part"),
        ] {
            let error = check_name(bad).expect_err(bad);
            assert!(error.contains(says), "{bad}: {error}");
        }
        assert!(check_name(&"a".repeat(256)).is_err());
    }

    #[test]
    fn key_fields_must_be_declared_properties() {
        let schema =
            json!({"properties": {"order": {"properties": {"id": {"type": "string"}}}, "a/b": {}}});
        assert!(schema_declares(&schema, "/order/id"));
        assert!(schema_declares(&schema, "/a~1b"));
        assert!(!schema_declares(&schema, "/order/missing"));
        assert!(!schema_declares(&schema, "order"));
    }
}
