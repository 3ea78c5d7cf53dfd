//! The event gateway over gRPC, driven by an independent client: Python's grpcio with stubs
//! generated from the repository's proto by grpcio-tools (`tests/grpc/client.py`).

use std::process::Command;

use mm_testkit::{ServerProcess, get};
use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_merchant-monitor");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

fn python_has_grpc() -> bool {
    Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .status()
        .is_ok_and(|status| status.success())
}

#[test]
fn an_independent_grpc_client_registers_publishes_and_sees_health_and_reflection() {
    if !python_has_grpc() {
        eprintln!(
            "\n!!! SKIPPED: python3 has no grpcio/grpcio-tools (pip install grpcio grpcio-tools; .ci/run installs them) !!!\n"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let grpc_address = format!("127.0.0.1:{}", free_port());
    let server = ServerProcess::start(
        EXE,
        &dir.path().join("data"),
        &["--grpc-listen", &grpc_address],
        &[],
    );
    let proto_root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc/client.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(proto_root)
        .arg(&grpc_address)
        .arg(dir.path())
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(
        output
            .stdout
            .split(|byte| *byte == b'\n')
            .rfind(|line| !line.is_empty())
            .expect("a line"),
    )
    .expect("the client's JSON");
    assert_eq!(seen["health"], "0801", "SERVING: {seen}");
    assert_eq!(seen["reflected_gateway"], true);
    assert_eq!(seen["reflected_types"], true);
    assert_eq!(
        (seen["created"].clone(), seen["version"].clone()),
        (Value::Bool(true), Value::from("1.0.0"))
    );
    assert_eq!(
        seen["listed"],
        serde_json::json!(["merchant.api-call", "order.grpc"])
    );
    assert_eq!(seen["unary"]["submitted"], 1);
    assert_eq!(seen["unary"]["failed"], 1);
    assert_eq!(
        seen["unary"]["statuses"],
        serde_json::json!(["PUBLISHING_STATUS_SUBMITTED", "PUBLISHING_STATUS_FAILED"])
    );
    assert!(
        seen["unary"]["detail"]
            .as_str()
            .is_some_and(|detail| detail.starts_with("/amount:")),
        "{seen}"
    );
    assert_eq!(
        (
            seen["stream"]["submitted"].clone(),
            seen["stream"]["items"].clone()
        ),
        (Value::from(3), Value::from(3))
    );
    assert_eq!(seen["compatible"], false);
    assert_eq!(seen["rules"], serde_json::json!(["type-changed"]));
    assert_eq!(seen["unknown"], "NOT_FOUND");
    // A log level that is not one is refused before anything is published.
    assert_eq!(seen["bad_level"], "INVALID_ARGUMENT", "{seen}");
    assert!(
        seen["bad_level_message"]
            .as_str()
            .is_some_and(|message| message.contains("log_level")),
        "{seen}"
    );

    // What gRPC published is read back over HTTP: four events, the flow id on the first.
    let mut eids = Vec::new();
    for partition in 0..2 {
        let page = get(
            server.address,
            &format!("/v1/event-types/order.grpc/events?partition={partition}"),
        )
        .json();
        for event in page["events"].as_array().expect("events") {
            if event["order_id"] == "o1" {
                assert_eq!(event["metadata"]["flow_id"], "grpc-flow");
                // The caller's trace context, passed on as received.
                assert_eq!(
                    event["metadata"]["traceparent"],
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                );
            }
            eids.push(
                event["metadata"]["eid"]
                    .as_str()
                    .expect("an eid")
                    .to_owned(),
            );
        }
    }
    eids.sort();
    let expected: Vec<String> = [1u64, 3, 4, 5]
        .iter()
        .map(|number| format!("00000000-0000-4000-8000-{number:012x}"))
        .collect();
    assert_eq!(eids, expected);
}
