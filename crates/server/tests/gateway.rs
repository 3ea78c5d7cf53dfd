//! The event gateway's registry through the running server: create, evolve, refuse a breaking
//! change with its violations, dry-run a candidate, and find it all again after a restart.

use std::net::SocketAddr;

use mm_testkit::{Response, ServerProcess, get, request};
use serde_json::{Value, json};

const EXE: &str = env!("CARGO_BIN_EXE_merchant-monitor");

fn send(address: SocketAddr, method: &str, path: &str, body: &Value) -> Response {
    request(
        address,
        method,
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .expect("server answers")
}

fn refund_type(extra_properties: Value, required: &[&str]) -> Value {
    let mut properties = json!({
        "order_id": {"type": "string"},
        "amount": {"type": "number", "minimum": 0},
        "currency": {"enum": ["EUR", "USD"]}
    });
    properties
        .as_object_mut()
        .expect("an object")
        .extend(extra_properties.as_object().expect("an object").clone());
    json!({
        "owning_application": "refunds",
        "category": "business",
        "schema": {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false
        },
        "partition_key_fields": ["/order_id"],
        "partitions": 3
    })
}

#[test]
fn event_types_are_created_evolved_checked_and_kept_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = ServerProcess::start(EXE, &data, &[], &[]);
    let address = server.address;
    let path = "/v1/event-types/order.refund-requested";

    let created = send(
        address,
        "PUT",
        path,
        &refund_type(json!({}), &["order_id", "amount"]),
    );
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    assert_eq!(created.header("location"), Some(path));
    let body = created.json();
    assert_eq!(body["version"], "1.0.0");
    assert_eq!(body["compatibility_mode"], "backward_transitive");
    assert_eq!(body["partition_strategy"], "hash");
    assert_eq!(body["partitions"], 3);
    assert!(
        body["created_at"]
            .as_str()
            .is_some_and(|at| at.ends_with('Z'))
    );

    // An optional property in a closed model: a minor version.
    let evolved = send(
        address,
        "PUT",
        path,
        &refund_type(
            json!({"reason": {"type": "string"}}),
            &["order_id", "amount"],
        ),
    );
    assert_eq!(evolved.status, 200);
    assert_eq!(evolved.json()["version"], "1.1.0");

    // A breaking change: 409 with every violation, and nothing changes.
    let breaking = refund_type(
        json!({"reason": {"type": "string"}, "iban": {"type": "string"}}),
        &["order_id", "amount", "iban"],
    );
    let refused = send(address, "PUT", path, &breaking);
    assert_eq!(refused.status, 409);
    let error = &refused.json()["error"];
    assert_eq!(error["code"], "incompatible_schema");
    let violations = error["violations"].as_array().expect("violations");
    assert_eq!(violations.len(), 1, "{violations:#?}");
    assert_eq!(violations[0]["rule"], "required-added");
    assert_eq!(violations[0]["path"], "#/required");
    assert!(
        violations[0]["hint"]
            .as_str()
            .is_some_and(|hint| !hint.is_empty())
    );

    // The dry run agrees, and says what the version would be under none.
    let check = send(
        address,
        "POST",
        &format!("{path}/compatibility"),
        &json!({"schema": breaking["schema"]}),
    );
    assert_eq!(check.status, 200);
    let report = check.json();
    assert_eq!(report["compatible"], false);
    assert_eq!(report["next_version"], Value::Null);
    assert_eq!(report["violations"].as_array().map(Vec::len), Some(1));
    let under_none = send(
        address,
        "POST",
        &format!("{path}/compatibility"),
        &json!({"schema": breaking["schema"], "compatibility_mode": "none"}),
    )
    .json();
    assert_eq!(
        (
            under_none["compatible"].clone(),
            under_none["next_version"].clone()
        ),
        (json!(true), json!("2.0.0"))
    );

    // Not JSON Schema: 422 with the location of the problem.
    let mut invalid = refund_type(json!({}), &["order_id"]);
    invalid["schema"]["properties"]["amount"]["type"] = json!("money");
    let refused = send(address, "PUT", "/v1/event-types/order.other", &invalid);
    assert_eq!(refused.status, 422);
    assert_eq!(refused.json()["error"]["code"], "invalid_schema");
    assert_eq!(
        refused.json()["error"]["location"],
        "#/schema/properties/amount/type"
    );

    let unknown = get(address, "/v1/event-types/order.nothing");
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.json()["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("order.nothing"))
    );
    assert_eq!(
        send(
            address,
            "PUT",
            "/v1/event-types/9bad",
            &refund_type(json!({}), &[])
        )
        .status,
        422
    );

    assert!(server.terminate(), "a clean shutdown");
    let server = ServerProcess::start(EXE, &data, &[], &[]);
    let address = server.address;
    let listed = get(address, "/v1/event-types").json();
    let names: Vec<&str> = listed["event_types"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|event_type| event_type["name"].as_str())
        .collect();
    assert_eq!(names, ["order.refund-requested"]);
    assert_eq!(get(address, path).json()["version"], "1.1.0");
    let schemas = get(address, &format!("{path}/schemas")).json();
    let versions: Vec<&str> = schemas["schemas"]
        .as_array()
        .expect("schemas")
        .iter()
        .filter_map(|record| record["version"].as_str())
        .collect();
    assert_eq!(versions, ["1.1.0", "1.0.0"]);
    let first = get(address, &format!("{path}/schemas/1.0.0")).json();
    assert!(first["schema"]["properties"].get("reason").is_none());
    assert_eq!(get(address, &format!("{path}/schemas/3.0.0")).status, 404);
}
