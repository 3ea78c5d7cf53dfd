//! The event gateway in cluster mode, against a real Kafka-protocol broker (tansu): instances
//! share the registry through its topic, publish to one topic per event type, read each
//! other's events, and an independent client (the pure-Python `kafka-python`) consumes the
//! topics as ordinary Kafka topics.
// Only the configuration writer of the cluster tests' helpers is used here.
#[allow(dead_code)]
#[path = "support/cluster.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use mm_testkit::{Broker, Response, ServerProcess, eventually, get, request};
use serde_json::{Value, json};
use support::write_cluster_config;

const EXE: &str = env!("CARGO_BIN_EXE_merchant-monitor");
const TYPE: &str = "order.refund-requested";
const PARTITIONS: u32 = 3;

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

fn refund_type(extra_properties: Value) -> Value {
    let mut properties = json!({
        "order_id": {"type": "string"},
        "sequence": {"type": "integer"},
        "amount": {"type": "number", "minimum": 0}
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
            "required": ["order_id", "sequence", "amount"],
            "additionalProperties": false
        },
        "partition_key_fields": ["/order_id"],
        "partitions": PARTITIONS
    })
}

fn eid(number: u64) -> String {
    format!("00000000-0000-4000-8000-{number:012x}")
}

fn refund(number: u64, order: &str, sequence: u64, amount: Value) -> Value {
    json!({
        "metadata": {"eid": eid(number), "occurred_at": "2026-12-01T10:00:00Z"},
        "order_id": order,
        "sequence": sequence,
        "amount": amount
    })
}

/// The current version of the type on an instance, once it has the type.
fn version_on(address: SocketAddr) -> Option<String> {
    let answer = get(address, &format!("/v1/event-types/{TYPE}"));
    (answer.status == 200).then(|| answer.json()["version"].as_str().unwrap_or("").to_owned())
}

/// Every event of every partition, read page by page through an instance's API.
fn read_all(address: SocketAddr) -> Vec<Value> {
    let mut events = Vec::new();
    for partition in 0..PARTITIONS {
        let mut offset = 0;
        loop {
            let page = get(
                address,
                &format!(
                    "/v1/event-types/{TYPE}/events?partition={partition}&offset={offset}&limit=300"
                ),
            );
            assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.body));
            let page = page.json();
            let batch = page["events"].as_array().expect("events").clone();
            if batch.is_empty() {
                break;
            }
            for event in &batch {
                assert_eq!(event["metadata"]["partition"], json!(partition));
                assert_eq!(
                    event["metadata"]["offset"],
                    json!(offset),
                    "offsets unbroken"
                );
                offset += 1;
            }
            assert_eq!(page["next_offset"], json!(offset));
            events.extend(batch);
        }
    }
    events
}

#[test]
fn instances_share_the_registry_and_read_each_others_events_which_kafka_python_consumes_too() {
    let broker = Broker::in_memory();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_cluster_config(dir.path(), &broker.bootstrap(), "gw", "2s", 4, "");
    // Two instances start together: both bring the built-in type up to date, one wins.
    let a = ServerProcess::start(EXE, &dir.path().join("a"), &["--config", &config], &[]);
    let b = ServerProcess::start(EXE, &dir.path().join("b"), &["--config", &config], &[]);
    for server in [&a, &b] {
        let built_in = get(server.address, "/v1/event-types/merchant.api-call");
        assert_eq!(
            built_in.status,
            200,
            "{}",
            String::from_utf8_lossy(&built_in.body)
        );
        assert_eq!(built_in.json()["built_in"], true);
    }

    // Created on one instance, seen by the other; evolved there, seen back here.
    let created = send(
        a.address,
        "PUT",
        &format!("/v1/event-types/{TYPE}"),
        &refund_type(json!({})),
    );
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    assert_eq!(
        eventually(Duration::from_secs(30), || version_on(b.address)).as_deref(),
        Some("1.0.0")
    );
    let evolved = send(
        b.address,
        "PUT",
        &format!("/v1/event-types/{TYPE}"),
        &refund_type(json!({"reason": {"type": "string"}})),
    );
    assert_eq!(
        evolved.status,
        200,
        "{}",
        String::from_utf8_lossy(&evolved.body)
    );
    assert_eq!(evolved.json()["version"], "1.1.0");
    assert_eq!(
        eventually(Duration::from_secs(30), || version_on(a.address)
            .filter(|version| version == "1.1.0")),
        Some("1.1.0".to_owned())
    );
    // A breaking change is refused on either instance, with its violations.
    let breaking = send(
        a.address,
        "PUT",
        &format!("/v1/event-types/{TYPE}"),
        &refund_type(json!({"reason": {"type": "integer"}})),
    );
    assert_eq!(
        breaking.status,
        409,
        "{}",
        String::from_utf8_lossy(&breaking.body)
    );
    assert_eq!(breaking.json()["error"]["code"], "incompatible_schema");

    // Publish to both instances: 40 orders, each order's events numbered in publish order;
    // one invalid event per batch is answered with its pointer and nothing else fails.
    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut number = 0;
    for batch in 0..10u64 {
        let mut events = Vec::new();
        for index in 0..100u64 {
            number += 1;
            let order = format!("order-{}", (batch * 100 + index) % 40);
            let sequence = batch * 100 + index;
            events.push(refund(number, &order, sequence, json!(index)));
            expected.entry(order).or_default().push(sequence);
        }
        number += 1;
        events.push(refund(number, "order-0", 99_999, json!(-1)));
        let target = if batch % 2 == 0 { &a } else { &b };
        let answer = send(
            target.address,
            "POST",
            &format!("/v1/event-types/{TYPE}/events"),
            &Value::Array(events),
        );
        assert_eq!(
            answer.status,
            207,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        let items = answer.json();
        let items = items.as_array().expect("items");
        assert_eq!(items.len(), 101);
        assert!(
            items[..100]
                .iter()
                .all(|item| item["publishing_status"] == "submitted")
        );
        assert_eq!(items[100]["publishing_status"], "failed");
        assert!(
            items[100]["detail"]
                .as_str()
                .is_some_and(|detail| detail.starts_with("/amount:")),
            "{}",
            items[100]
        );
    }

    // Read back through the instance that published only half of them: every event once, on
    // the partition of its key, each order's events in publish order.
    let events = read_all(b.address);
    assert_eq!(events.len(), 1_000);
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for event in &events {
        let order = event["order_id"].as_str().expect("order_id");
        assert_eq!(
            event["metadata"]["partition"],
            json!(mm_kafka::partition_for(order.as_bytes(), PARTITIONS) as u32),
            "{event}"
        );
        assert_eq!(event["metadata"]["event_type"], TYPE);
        assert_eq!(event["metadata"]["version"], "1.1.0");
        seen.entry(order.to_owned())
            .or_default()
            .push(event["sequence"].as_u64().expect("sequence"));
    }
    assert_eq!(seen, expected);
    // A read from inside the log starts exactly there.
    let page = get(
        a.address,
        &format!("/v1/event-types/{TYPE}/events?partition=1&offset=137&limit=5"),
    )
    .json();
    let offsets: Vec<&Value> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| &event["metadata"]["offset"])
        .collect();
    assert_eq!(offsets, [137, 138, 139, 140, 141]);

    // The topic is an ordinary Kafka topic: kafka-python reads key, headers and value.
    let topic = format!("gw.events.{TYPE}");
    let script = format!(
        r#"
import json
from kafka import KafkaConsumer
consumer = KafkaConsumer("{topic}", bootstrap_servers="{broker}", auto_offset_reset="earliest",
                         consumer_timeout_ms=5000, enable_auto_commit=False)
records = [dict(partition=m.partition, offset=m.offset, key=(m.key or b"").decode(),
                headers={{k: v.decode() for k, v in m.headers}}, value=json.loads(m.value))
           for m in consumer]
consumer.close()
print(json.dumps(records))
"#,
        broker = broker.bootstrap()
    );
    let output = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs (kafka-python is installed by .ci/run)");
    assert!(
        output.status.success(),
        "kafka-python consumer: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let records: Vec<Value> = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(records.len(), 1_000);
    let mut by_kafka: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for record in &records {
        let value = &record["value"];
        let key = record["key"].as_str().expect("key");
        assert_eq!(
            value["order_id"], key,
            "the record key is the partition key"
        );
        assert_eq!(record["partition"], value["metadata"]["partition"]);
        let headers = &record["headers"];
        assert_eq!(headers["mm.eid"], value["metadata"]["eid"]);
        assert_eq!(headers["mm.event_type"], TYPE);
        assert_eq!(headers["mm.version"], "1.1.0");
        assert_eq!(headers["mm.occurred_at"], "2026-12-01T10:00:00Z");
        assert_eq!(headers["mm.received_at"], value["metadata"]["received_at"]);
        assert_eq!(headers["mm.flow_id"], value["metadata"]["flow_id"]);
        by_kafka
            .entry(key.to_owned())
            .or_default()
            .push(value["sequence"].as_u64().expect("sequence"));
    }
    assert_eq!(by_kafka, expected);

    // A subscription created on one instance reads and commits on the other; its cursors are
    // the committed offsets of a Kafka consumer group, which kafka-python sees too.
    let created = send(
        a.address,
        "POST",
        "/v1/subscriptions",
        &json!({"consumer_group": "billing", "event_types": [TYPE], "read_from": "begin"}),
    );
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let id = created.json()["id"].as_str().expect("id").to_owned();
    let again = send(
        b.address,
        "POST",
        "/v1/subscriptions",
        &json!({"consumer_group": "billing", "event_types": [TYPE], "read_from": "end"}),
    );
    assert_eq!(
        again.status,
        200,
        "{}",
        String::from_utf8_lossy(&again.body)
    );
    assert_eq!(again.json()["id"], id.as_str());
    let first = get(
        b.address,
        &format!("/v1/subscriptions/{id}/events?limit=400"),
    )
    .json();
    assert_eq!(first["events"].as_array().expect("events").len(), 400);
    let committed = send(
        b.address,
        "POST",
        &format!("/v1/subscriptions/{id}/cursors"),
        &json!({"cursors": first["cursors"]}),
    );
    assert_eq!(
        committed.status,
        204,
        "{}",
        String::from_utf8_lossy(&committed.body)
    );
    let rest = get(
        a.address,
        &format!("/v1/subscriptions/{id}/events?limit=1000"),
    )
    .json();
    let rest_events = rest["events"].as_array().expect("events");
    assert_eq!(
        rest_events.len(),
        600,
        "the rest, from the cursors committed on the other instance"
    );
    let mut eids: Vec<&Value> = first["events"]
        .as_array()
        .expect("events")
        .iter()
        .chain(rest_events)
        .map(|event| &event["metadata"]["eid"])
        .collect();
    eids.sort_by_key(|eid| eid.as_str().unwrap_or_default().to_owned());
    eids.dedup();
    assert_eq!(eids.len(), 1_000, "every event once");
    let offsets_script = format!(
        r#"
import json
from kafka import KafkaConsumer, TopicPartition
consumer = KafkaConsumer(bootstrap_servers="{broker}", group_id="gw.subscription.{id}",
                         enable_auto_commit=False)
print(json.dumps({{str(p): consumer.committed(TopicPartition("{topic}", p)) for p in range({PARTITIONS})}}))
consumer.close()
"#,
        broker = broker.bootstrap()
    );
    let output = std::process::Command::new("python3")
        .args(["-c", &offsets_script])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "kafka-python committed offsets: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    for cursor in first["cursors"].as_array().expect("cursors") {
        assert_eq!(
            seen[cursor["partition"].to_string()],
            cursor["offset"],
            "the committed offset of partition {}",
            cursor["partition"]
        );
    }

    // Following a partition on one instance streams what another instance publishes.
    {
        use std::io::{BufRead, BufReader, Write};
        let partition = mm_kafka::partition_for(b"order-0", PARTITIONS) as u32;
        let end = events
            .iter()
            .filter(|event| event["metadata"]["partition"] == json!(partition))
            .count();
        let mut stream = std::net::TcpStream::connect(b.address).expect("connected");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout set");
        write!(
            stream,
            "GET /v1/event-types/{TYPE}/events?partition={partition}&offset={end}&follow=true HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        .expect("request sent");
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        // The response head arrives first, so the follower is in place before the publish.
        while line != "\r\n" {
            line.clear();
            reader.read_line(&mut line).expect("the response head");
        }
        let published = send(
            a.address,
            "POST",
            &format!("/v1/event-types/{TYPE}/events"),
            &json!([refund(50_000, "order-0", 7_777, json!(1))]),
        );
        assert_eq!(
            published.status,
            200,
            "{}",
            String::from_utf8_lossy(&published.body)
        );
        let followed = loop {
            line.clear();
            let read = reader
                .read_line(&mut line)
                .expect("the stream stays open and delivers");
            assert!(read > 0, "the server ended the stream");
            if line.starts_with('{') {
                break serde_json::from_str::<Value>(line.trim()).expect("an event");
            }
        };
        assert_eq!(followed["sequence"], 7_777);
        assert_eq!(followed["metadata"]["offset"], json!(end));
    }

    // An instance started later loads every version from the registry topic.
    let c = ServerProcess::start(EXE, &dir.path().join("c"), &["--config", &config], &[]);
    let schemas = get(c.address, &format!("/v1/event-types/{TYPE}/schemas")).json();
    let versions: Vec<&Value> = schemas["schemas"]
        .as_array()
        .expect("schemas")
        .iter()
        .map(|schema| &schema["version"])
        .collect();
    assert_eq!(versions, ["1.1.0", "1.0.0"]);
}

#[test]
fn changes_made_at_once_on_two_instances_end_in_one_history_on_both() {
    let broker = Broker::in_memory();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_cluster_config(dir.path(), &broker.bootstrap(), "race", "2s", 4, "");
    let a = ServerProcess::start(EXE, &dir.path().join("a"), &["--config", &config], &[]);
    let b = ServerProcess::start(EXE, &dir.path().join("b"), &["--config", &config], &[]);
    let created = send(
        a.address,
        "PUT",
        &format!("/v1/event-types/{TYPE}"),
        &refund_type(json!({})),
    );
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    eventually(Duration::from_secs(30), || version_on(b.address)).expect("b has the type");

    // Each round, both instances add a different optional property to the current schema at
    // the same moment.
    let current = |address: SocketAddr| get(address, &format!("/v1/event-types/{TYPE}")).json();
    let mut accepted = 0;
    for round in 0..4 {
        let agreed = eventually(Duration::from_secs(30), || {
            let (on_a, on_b) = (current(a.address), current(b.address));
            (on_a["version"] == on_b["version"]).then_some(on_a)
        })
        .expect("the instances agree before the round");
        let answers: Vec<Response> = std::thread::scope(|scope| {
            let handles: Vec<_> = [(&a, "a"), (&b, "b")]
                .into_iter()
                .map(|(server, side)| {
                    let mut definition = refund_type(json!({}));
                    definition["schema"] = agreed["schema"].clone();
                    definition["schema"]["properties"][format!("{side}{round}")] =
                        json!({"type": "string"});
                    let address = server.address;
                    scope.spawn(move || {
                        send(
                            address,
                            "PUT",
                            &format!("/v1/event-types/{TYPE}"),
                            &definition,
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().expect("thread"))
                .collect()
        });
        let mut accepted_now = 0;
        for answer in &answers {
            match answer.status {
                200 => accepted_now += 1,
                // Refused because the other change came first (either the log decided, or
                // the loser checked against the winner's version, which has a property the
                // loser's lacks: a removal from a closed model).
                409 => assert!(
                    ["concurrent_change", "incompatible_schema"]
                        .contains(&answer.json()["error"]["code"].as_str().unwrap_or("")),
                    "{}",
                    String::from_utf8_lossy(&answer.body)
                ),
                other => panic!("{other}: {}", String::from_utf8_lossy(&answer.body)),
            }
        }
        assert_eq!(
            accepted_now, 1,
            "exactly one change of round {round} applies"
        );
        accepted += accepted_now;
    }
    // Both instances end with the same history, one version per accepted change.
    let history = |address: SocketAddr| {
        get(address, &format!("/v1/event-types/{TYPE}/schemas")).json()["schemas"].clone()
    };
    let agreed = eventually(Duration::from_secs(30), || {
        let (on_a, on_b) = (history(a.address), history(b.address));
        (on_a == on_b
            && on_a
                .as_array()
                .is_some_and(|list| list.len() == accepted + 1))
        .then_some(on_a)
    });
    assert!(
        agreed.is_some(),
        "a: {}\nb: {}",
        history(a.address),
        history(b.address)
    );
}

#[test]
fn without_its_topics_the_gateway_answers_503_with_the_reason_and_ingest_goes_on() {
    let broker = Broker::in_memory();
    // Topics are the operator's (`create_topics_partitions = 0`): the core's exist, the
    // gateway's do not.
    for topic in ["calls", "activity", "dead-letters", "bare-repartition"] {
        broker.create_topic(topic, 2);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_cluster_config(dir.path(), &broker.bootstrap(), "bare", "2s", 0, "");
    let server = ServerProcess::start(EXE, &dir.path().join("a"), &["--config", &config], &[]);
    let answer = get(server.address, "/v1/event-types");
    assert_eq!(
        answer.status,
        503,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let error = answer.json();
    assert_eq!(error["error"]["code"], "gateway_unavailable");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("bare.event-types")),
        "{error}"
    );
    let line = r#"{"ts":"2026-12-01T10:00:00Z","merchant":"m0","api":"/v1/payments","status":200,"latency_ms":5,"corr_id":"c1"}"#;
    let ingested =
        mm_testkit::ingest(server.address, format!("{line}\n").as_bytes()).expect("answers");
    assert_eq!(
        ingested.status,
        200,
        "{}",
        String::from_utf8_lossy(&ingested.body)
    );
}
