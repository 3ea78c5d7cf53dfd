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
    assert_eq!(names, ["merchant.api-call", "order.refund-requested"]);
    let built_in = get(address, "/v1/event-types/merchant.api-call").json();
    assert_eq!(built_in["built_in"], true);
    assert_eq!(
        built_in["schema"]["required"],
        json!(["ts", "merchant", "api", "status", "latency_ms", "corr_id"])
    );
    let refused = send(
        address,
        "POST",
        "/v1/event-types/merchant.api-call/events",
        &json!([]),
    );
    assert_eq!(
        (refused.status, refused.json()["error"]["code"].clone()),
        (409, json!("built_in_event_type"))
    );
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

/// Registers `name` with the refund schema (a new type: 201).
fn register_refunds(address: SocketAddr, name: &str) {
    let created = send(
        address,
        "PUT",
        &format!("/v1/event-types/{name}"),
        &refund_type(json!({}), &["order_id", "amount"]),
    );
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
}

fn eid(number: u64) -> String {
    format!("00000000-0000-4000-8000-{number:012x}")
}

fn refund(number: u64, order: &str, amount: Value) -> Value {
    json!({
        "metadata": {"eid": eid(number), "occurred_at": "2026-12-01T10:00:00Z"},
        "order_id": order,
        "amount": amount,
        "currency": "EUR"
    })
}

/// Every event of every partition of `name`, read page by page.
fn read_all(address: SocketAddr, name: &str, partitions: u32) -> Vec<Value> {
    let mut events = Vec::new();
    for partition in 0..partitions {
        let mut offset = 0;
        loop {
            let page = get(
                address,
                &format!(
                    "/v1/event-types/{name}/events?partition={partition}&offset={offset}&limit=500"
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
                assert_eq!(event["metadata"]["offset"], json!(offset));
                offset += 1;
            }
            assert_eq!(page["next_offset"], json!(offset));
            events.extend(batch);
        }
    }
    events
}

#[test]
fn published_batches_answer_per_event_and_read_back_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(EXE, &dir.path().join("data"), &[], &[]);
    let address = server.address;
    let name = "order.refund-requested";
    register_refunds(address, name);
    let events_path = format!("/v1/event-types/{name}/events");

    // All valid, as a JSON array: 200.
    let all_good = send(
        address,
        "POST",
        &events_path,
        &json!([refund(1, "o1", json!(5)), refund(2, "o2", json!(6))]),
    );
    assert_eq!(
        all_good.status,
        200,
        "{}",
        String::from_utf8_lossy(&all_good.body)
    );

    // Mixed, as NDJSON with a flow id: 207, each answered in input order.
    let body = format!(
        "{}\n{}\n{}\n",
        refund(3, "o3", json!(7)),
        refund(4, "o4", json!(-1)),
        refund(5, "o1", json!(8))
    );
    let mixed = request(
        address,
        "POST",
        &events_path,
        &[
            ("Content-Type", "application/x-ndjson"),
            ("X-Flow-Id", "flow-abc"),
        ],
        body.as_bytes(),
    )
    .expect("server answers");
    assert_eq!(mixed.status, 207);
    let items = mixed.json();
    let statuses: Vec<&str> = items
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|item| item["publishing_status"].as_str())
        .collect();
    assert_eq!(statuses, ["submitted", "failed", "submitted"]);
    assert_eq!(items[1]["eid"], eid(4));
    assert_eq!(items[1]["step"], "validating");
    assert!(
        items[1]["detail"]
            .as_str()
            .is_some_and(|detail| detail.starts_with("/amount:")),
        "{items}"
    );

    // Atomic with a failure: 422, nothing published, the innocent aborted.
    let atomic = send(
        address,
        "POST",
        &format!("{events_path}?atomic=true"),
        &json!([refund(6, "o6", json!(1)), refund(7, "o7", json!("x"))]),
    );
    assert_eq!(atomic.status, 422);
    assert_eq!(atomic.json()[0]["publishing_status"], "aborted");
    assert_eq!(atomic.json()[1]["publishing_status"], "failed");

    // A gateway field set by the producer is refused with the reason.
    let mut meddling = refund(8, "o8", json!(1));
    meddling["metadata"]["received_at"] = json!("2026-12-01T10:00:00Z");
    let refused = send(address, "POST", &events_path, &json!([meddling]));
    assert_eq!(refused.status, 422);
    assert!(
        refused.json()[0]["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("received_at"))
    );

    let stored = read_all(address, name, 3);
    let mut eids: Vec<&str> = stored
        .iter()
        .filter_map(|event| event["metadata"]["eid"].as_str())
        .collect();
    eids.sort_unstable();
    assert_eq!(
        eids,
        [eid(1), eid(2), eid(3), eid(5)]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    let third = stored
        .iter()
        .find(|event| event["metadata"]["eid"] == eid(3))
        .expect("event 3");
    assert_eq!(third["metadata"]["flow_id"], "flow-abc");
    assert_eq!(third["metadata"]["version"], "1.0.0");
    // Key o1 holds its order: event 1 before event 5 in their partition.
    let order_one: Vec<&str> = stored
        .iter()
        .filter(|event| event["order_id"] == "o1")
        .filter_map(|event| event["metadata"]["eid"].as_str())
        .collect();
    assert_eq!(order_one, [eid(1), eid(5)]);

    // Counted: 4 published; the refusals by step and reason.
    let metrics = String::from_utf8(get(address, "/metrics").body).expect("text");
    let value = |name: &str| mm_testkit::metric_value(&metrics, name);
    assert_eq!(
        value(&format!(
            "mm_gateway_published_events_total{{event_type=\"{name}\"}}"
        )),
        Some(4.0),
        "{metrics}"
    );
    assert_eq!(
        value(&format!(
            "mm_gateway_rejected_events_total{{event_type=\"{name}\",step=\"validating\",reason=\"minimum\"}}"
        )),
        Some(1.0)
    );
    assert_eq!(
        value(&format!(
            "mm_gateway_rejected_events_total{{event_type=\"{name}\",step=\"validating\",reason=\"type\"}}"
        )),
        Some(1.0)
    );
    assert_eq!(
        value(&format!(
            "mm_gateway_rejected_events_total{{event_type=\"{name}\",step=\"none\",reason=\"aborted\"}}"
        )),
        Some(1.0)
    );
    assert_eq!(
        value(&format!(
            "mm_gateway_rejected_events_total{{event_type=\"{name}\",step=\"validating\",reason=\"metadata\"}}"
        )),
        Some(1.0)
    );
    assert_eq!(
        value("mm_gateway_event_types"),
        Some(2.0),
        "the built-in type and this one"
    );
    assert_eq!(value("mm_gateway_publish_seconds_count"), Some(4.0));
    let stats = get(address, &format!("/v1/event-types/{name}/stats")).json();
    assert_eq!(
        (stats["published"].clone(), stats["rejected"].clone()),
        (json!(4), json!(4))
    );
    assert!(
        stats["publish_rate"]
            .as_f64()
            .is_some_and(|rate| rate > 0.0)
    );
    assert_eq!(
        stats["latest_rejects"][0]["reason"], "metadata",
        "the newest first: {stats}"
    );
    assert_eq!(stats["latest_rejects"][3]["eid"], eid(4));

    let unknown = send(
        address,
        "POST",
        "/v1/event-types/order.none/events",
        &json!([refund(9, "o", json!(1))]),
    );
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.json()["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("order.none"))
    );
    assert_eq!(
        get(address, &format!("{events_path}?partition=3")).status,
        400
    );
}

#[test]
fn a_publisher_killed_mid_stream_loses_no_acknowledged_event_and_duplicates_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = ServerProcess::start(EXE, &data, &[], &[]);
    let address = server.address;
    let name = "order.paid";
    register_refunds(address, name);
    let path = format!("/v1/event-types/{name}/events");
    // Two publishers send batches of 200 until the server dies; each remembers what was
    // acknowledged.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let sent_batches = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let publishers: Vec<_> = (0..2u64)
        .map(|publisher| {
            let (acknowledged, sent_batches, path) =
                (acknowledged.clone(), sent_batches.clone(), path.clone());
            std::thread::spawn(move || {
                for batch in 0u64.. {
                    let first = (publisher << 40) | (batch * 200);
                    let events: Vec<Value> = (first..first + 200)
                        .map(|number| {
                            refund(number, &format!("o{}", number % 97), json!(number % 1000))
                        })
                        .collect();
                    match request(
                        address,
                        "POST",
                        &path,
                        &[("Content-Type", "application/json")],
                        Value::Array(events).to_string().as_bytes(),
                    ) {
                        Ok(response) if response.status == 200 => {
                            acknowledged
                                .lock()
                                .expect("lock")
                                .extend(first..first + 200);
                            sent_batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(response) => panic!(
                            "unexpected {}: {}",
                            response.status,
                            String::from_utf8_lossy(&response.body)
                        ),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    mm_testkit::eventually(std::time::Duration::from_secs(60), || {
        (sent_batches.load(std::sync::atomic::Ordering::Relaxed) >= 20).then_some(())
    })
    .expect("20 batches acknowledged within a minute");
    server.kill9();
    for publisher in publishers {
        publisher.join().expect("a publisher");
    }
    let server = ServerProcess::start(EXE, &data, &[], &[]);
    let stored = read_all(server.address, name, 3);
    let mut numbers: Vec<u64> = stored
        .iter()
        .map(|event| {
            let eid = event["metadata"]["eid"].as_str().expect("an eid");
            u64::from_str_radix(&eid[24..], 16).expect("hex")
        })
        .collect();
    let total = numbers.len();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), total, "an event is stored twice");
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(acknowledged.len() >= 4000);
    let missing: Vec<&u64> = acknowledged
        .iter()
        .filter(|number| numbers.binary_search(number).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[test]
fn a_subscription_reads_from_its_committed_cursors_across_a_restart_and_is_named_as_a_consumer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = ServerProcess::start(EXE, &data, &[], &[]);
    let address = server.address;
    let name = "order.refund-requested";
    register_refunds(address, name);
    let events: Vec<Value> = (1..=6)
        .map(|number| refund(number, &format!("o{number}"), json!(number)))
        .collect();
    assert_eq!(
        send(
            address,
            "POST",
            &format!("/v1/event-types/{name}/events"),
            &Value::Array(events)
        )
        .status,
        200
    );

    let request_body =
        json!({"consumer_group": "billing", "event_types": [name], "read_from": "begin"});
    let created = send(address, "POST", "/v1/subscriptions", &request_body);
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let id = created.json()["id"].as_str().expect("an id").to_owned();
    let again = send(address, "POST", "/v1/subscriptions", &request_body);
    assert_eq!((again.status, again.json()["id"].clone()), (200, json!(id)));

    let page = get(address, &format!("/v1/subscriptions/{id}/events?limit=4")).json();
    assert_eq!(page["events"].as_array().map(Vec::len), Some(4));
    let committed = send(
        address,
        "POST",
        &format!("/v1/subscriptions/{id}/cursors"),
        &json!({"cursors": page["cursors"]}),
    );
    assert_eq!(
        committed.status,
        204,
        "{}",
        String::from_utf8_lossy(&committed.body)
    );
    let beyond = send(
        address,
        "POST",
        &format!("/v1/subscriptions/{id}/cursors"),
        &json!({"cursors": [{"event_type": name, "partition": 0, "offset": 999}]}),
    );
    assert_eq!(beyond.status, 422);

    let check = send(
        address,
        "POST",
        &format!("/v1/event-types/{name}/compatibility"),
        &json!({"schema": {"type": "object"}}),
    );
    assert_eq!(
        check.json()["consumers"],
        json!([format!("billing ({id})")])
    );

    assert!(server.terminate(), "a clean shutdown");
    let server = ServerProcess::start(EXE, &data, &[], &[]);
    let rest = get(
        server.address,
        &format!("/v1/subscriptions/{id}/events?limit=100"),
    )
    .json();
    let first: Vec<&str> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|event| event["metadata"]["eid"].as_str())
        .collect();
    let mut seen: Vec<&str> = rest["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|event| event["metadata"]["eid"].as_str())
        .collect();
    assert_eq!(
        seen.len(),
        2,
        "the two events not committed, and only them: {rest}"
    );
    seen.extend(first);
    seen.sort_unstable();
    assert_eq!(seen, (1..=6).map(eid).collect::<Vec<_>>());
    assert_eq!(get(server.address, "/v1/subscriptions/nope").status, 404);
}

#[test]
fn following_a_partition_streams_what_is_there_then_each_new_event_as_it_is_published() {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(EXE, &dir.path().join("data"), &[], &[]);
    let address = server.address;
    let name = "order.followed";
    let mut definition = refund_type(json!({}), &["order_id", "amount"]);
    definition["partitions"] = json!(1);
    assert_eq!(
        send(
            address,
            "PUT",
            &format!("/v1/event-types/{name}"),
            &definition
        )
        .status,
        201
    );
    let events_path = format!("/v1/event-types/{name}/events");
    assert_eq!(
        send(
            address,
            "POST",
            &events_path,
            &json!([refund(1, "a", json!(1)), refund(2, "b", json!(2))])
        )
        .status,
        200
    );

    let mut stream = std::net::TcpStream::connect(address).expect("connected");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout set");
    write!(
        stream,
        "GET {events_path}?partition=0&offset=1&follow=true HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .expect("request sent");
    let mut reader = BufReader::new(stream);
    let mut eids = Vec::new();
    let mut publish_once = Some(());
    let mut line = String::new();
    // Chunked NDJSON: the lines holding a '{' are events; the rest is framing.
    while eids.len() < 3 {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .expect("the stream stays open and delivers");
        assert!(read > 0, "the server ended the stream");
        if line.starts_with('{') {
            let event: Value = serde_json::from_str(line.trim()).expect("an event");
            eids.push(
                event["metadata"]["eid"]
                    .as_str()
                    .expect("an eid")
                    .to_owned(),
            );
            assert_eq!(event["metadata"]["offset"], json!(eids.len()));
            // The one already there arrived: publish a new one, which must follow.
            if publish_once.take().is_some() {
                let more = json!([refund(3, "c", json!(3)), refund(4, "d", json!(4))]);
                assert_eq!(send(address, "POST", &events_path, &more).status, 200);
            }
        }
    }
    assert_eq!(eids, [eid(2), eid(3), eid(4)]);
}
