use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;
use crate::event_type::{Category, EventTypeDefinition};
use crate::{Gateway, PartitionStrategy};

fn refund_definition(strategy: Option<PartitionStrategy>, partitions: u32) -> EventTypeDefinition {
    EventTypeDefinition {
        owning_application: "refunds".into(),
        category: Category::Business,
        schema: json!({
            "type": "object",
            "properties": {
                "order_id": {"type": "string"},
                "amount": {"type": "number", "minimum": 0},
                "currency": {"enum": ["EUR", "USD"]},
                "customer": {
                    "type": "object",
                    "properties": {"country": {"type": "string", "maxLength": 2}},
                    "required": ["country"]
                }
            },
            "required": ["order_id", "amount"],
            "additionalProperties": false
        }),
        compatibility_mode: None,
        partition_strategy: strategy,
        partition_key_fields: if strategy == Some(PartitionStrategy::UserDefined) {
            vec![]
        } else {
            vec!["/order_id".into()]
        },
        partitions: Some(partitions),
    }
}

fn eid(number: u64) -> String {
    format!("00000000-0000-4000-8000-{number:012x}")
}

fn event(number: u64, order: &str, amount: Value) -> Value {
    json!({
        "metadata": {"eid": eid(number), "occurred_at": "2026-12-01T10:00:00Z"},
        "order_id": order,
        "amount": amount,
        "currency": "EUR"
    })
}

fn options(atomic: bool) -> PublishOptions {
    PublishOptions {
        atomic,
        flow_id: "flow-1".into(),
        now_us: 1_800_000_000_000_000,
        trace: None,
    }
}

fn ndjson(events: &[Value]) -> Vec<u8> {
    events
        .iter()
        .map(|event| format!("{event}\n"))
        .collect::<String>()
        .into_bytes()
}

fn gateway() -> (tempfile::TempDir, Gateway) {
    let dir = tempfile::tempdir().expect("a directory");
    let gateway = Gateway::open_embedded(dir.path()).expect("the gateway");
    (dir, gateway)
}

/// Appends what `prepared` holds and waits for the offsets.
fn append(gateway: &Gateway, name: &str, prepared: Prepared) -> Vec<u64> {
    let registered = gateway.registry.get(name).expect("registered");
    crate::block_on(
        gateway
            .log
            .append(&registered.event_type, prepared.records, &prepared.context),
    )
    .expect("durable")
}

#[test]
fn each_invalid_event_is_answered_with_its_pointer_and_rule_and_the_valid_ones_are_read_back_once()
{
    let (_dir, gateway) = gateway();
    let name = "order.refund-requested";
    gateway
        .registry
        .put(name, refund_definition(None, 3), 1)
        .expect("registered");
    let registered = gateway.registry.get(name).expect("the type");
    let mut with_received_at = event(4, "o4", json!(1));
    with_received_at["metadata"]["received_at"] = json!("2026-12-01T10:00:00Z");
    let mut bad_nested = event(5, "o5", json!(1));
    bad_nested["customer"] = json!({"country": "DEU"});
    let body = ndjson(&[
        event(1, "o1", json!(10.5)),
        event(2, "o2", json!(-1)),
        json!({"metadata": {"eid": "not-a-uuid", "occurred_at": "2026-12-01T10:00:00Z"}, "order_id": "o3", "amount": 1}),
        with_received_at,
        bad_nested,
        event(6, "o6", json!(2)),
    ]);
    let mut body = body;
    body.extend_from_slice(b"{not json\n");
    let prepared = prepare(&registered, &body, &options(false)).expect("a batch");
    let statuses: Vec<(PublishingStatus, Step)> = prepared
        .items
        .iter()
        .map(|item| (item.publishing_status, item.step))
        .collect();
    use PublishingStatus::{Failed, Submitted};
    assert_eq!(
        statuses,
        [
            (Submitted, Step::None),
            (Failed, Step::Validating),
            (Failed, Step::Validating),
            (Failed, Step::Validating),
            (Failed, Step::Validating),
            (Submitted, Step::None),
            (Failed, Step::Validating),
        ]
    );
    let detail = |index: usize| prepared.items[index].detail.clone();
    assert!(
        detail(1).starts_with("/amount:") && detail(1).contains("(minimum)"),
        "{}",
        detail(1)
    );
    assert!(detail(2).starts_with("/metadata/eid:"), "{}", detail(2));
    assert!(
        detail(3).contains("/metadata/received_at: set by the gateway"),
        "{}",
        detail(3)
    );
    assert!(
        detail(4).starts_with("/customer/country:") && detail(4).contains("(maxLength)"),
        "{}",
        detail(4)
    );
    assert!(detail(6).contains("not JSON"), "{}", detail(6));
    assert_eq!(prepared.items[1].eid, eid(2));

    let offsets = append(&gateway, name, prepared);
    assert_eq!(offsets.len(), 2);
    let mut found = Vec::new();
    for partition in 0..3 {
        let (events, next) = gateway.log.read(name, partition, 0, 100).expect("read");
        assert_eq!(next, events.last().map_or(0, |(offset, _)| offset + 1));
        for (_, bytes) in events {
            let stored: Value = serde_json::from_slice(&bytes).expect("JSON");
            assert_eq!(stored["metadata"]["partition"], json!(partition));
            assert_eq!(stored["metadata"]["version"], "1.0.0");
            assert_eq!(stored["metadata"]["flow_id"], "flow-1");
            assert_eq!(stored["metadata"]["event_type"], name);
            assert!(stored["metadata"]["received_at"].is_string());
            found.push(stored["order_id"].as_str().expect("order id").to_owned());
        }
    }
    found.sort();
    assert_eq!(
        found,
        ["o1", "o6"],
        "every valid event once, no invalid one"
    );
}

#[test]
fn an_atomic_batch_with_one_failure_publishes_nothing_and_aborts_the_innocent() {
    let (_dir, gateway) = gateway();
    let name = "order.refunded";
    gateway
        .registry
        .put(name, refund_definition(None, 2), 1)
        .expect("registered");
    let registered = gateway.registry.get(name).expect("the type");
    let body = serde_json::to_vec(&json!([
        event(1, "o1", json!(1)),
        event(2, "o2", json!("x"))
    ]))
    .expect("JSON");
    let prepared = prepare(&registered, &body, &options(true)).expect("a batch");
    assert!(prepared.records.is_empty());
    assert_eq!(
        prepared.items[0].publishing_status,
        PublishingStatus::Aborted
    );
    assert_eq!(
        prepared.items[1].publishing_status,
        PublishingStatus::Failed
    );
    assert!(
        prepared.items[1].detail.starts_with("/amount:"),
        "{}",
        prepared.items[1].detail
    );
    // Without atomic the valid one goes.
    let prepared = prepare(&registered, &body, &options(false)).expect("a batch");
    assert_eq!(prepared.records.len(), 1);
}

#[test]
fn hash_partitions_agree_with_the_java_client_and_keep_per_key_order_over_ten_thousand_events() {
    let (_dir, gateway) = gateway();
    let name = "order.paid";
    gateway
        .registry
        .put(name, refund_definition(Some(PartitionStrategy::Hash), 4), 1)
        .expect("registered");
    let registered = gateway.registry.get(name).expect("the type");
    // Partitions from the Java client's own murmur2 vectors (`UtilsTest.testMurmur2`):
    // (murmur2(key) & 0x7fffffff) % 4.
    for (key, expected) in [
        ("21", 0),
        ("foobar", 2),
        ("abc", 3),
        ("a-little-bit-long-string", 0),
    ] {
        let prepared = prepare(
            &registered,
            &ndjson(&[event(1, key, json!(1))]),
            &options(false),
        )
        .expect("a batch");
        assert_eq!(prepared.records[0].partition, expected, "key {key:?}");
        assert_eq!(prepared.records[0].key.as_deref(), Some(key));
    }
    // 10,000 events over 50 keys, in batches of 500: each key's sequence numbers come back in
    // order within its partition, and every key stays on one partition.
    let mut sequence = 0u64;
    for batch in 0..20 {
        let events: Vec<Value> = (0..500)
            .map(|index| {
                sequence += 1;
                let order = format!("order-{}", (batch * 500 + index) % 50);
                event(sequence, &order, json!(sequence))
            })
            .collect();
        let prepared = prepare(&registered, &ndjson(&events), &options(false)).expect("a batch");
        assert!(prepared.all_valid());
        append(&gateway, name, prepared);
    }
    let mut last_by_key: BTreeMap<String, (u32, f64)> = BTreeMap::new();
    let mut total = 0;
    for partition in 0..4 {
        let (events, _) = gateway.log.read(name, partition, 0, 20_000).expect("read");
        for (index, (offset, bytes)) in events.iter().enumerate() {
            assert_eq!(*offset, index as u64, "offsets count from 0 without gaps");
            let stored: Value = serde_json::from_slice(bytes).expect("JSON");
            let key = stored["order_id"].as_str().expect("a key").to_owned();
            let amount = stored["amount"].as_f64().expect("a number");
            if let Some((kept_partition, previous)) = last_by_key.get(&key) {
                assert_eq!(*kept_partition, partition, "{key} moved partition");
                assert!(amount > *previous, "{key}: {amount} after {previous}");
            }
            last_by_key.insert(key, (partition, amount));
            total += 1;
        }
    }
    assert_eq!(total, 10_000);
    assert_eq!(last_by_key.len(), 50);
}

#[test]
fn user_defined_partitions_come_from_the_metadata_and_are_checked() {
    let (_dir, gateway) = gateway();
    let name = "order.routed";
    gateway
        .registry
        .put(
            name,
            refund_definition(Some(PartitionStrategy::UserDefined), 2),
            1,
        )
        .expect("registered");
    let registered = gateway.registry.get(name).expect("the type");
    let mut first = event(1, "o1", json!(1));
    first["metadata"]["partition"] = json!(1);
    let mut outside = event(2, "o2", json!(1));
    outside["metadata"]["partition"] = json!(7);
    let missing = event(3, "o3", json!(1));
    let prepared = prepare(
        &registered,
        &ndjson(&[first, outside, missing]),
        &options(false),
    )
    .expect("a batch");
    assert_eq!(prepared.records.len(), 1);
    assert_eq!(prepared.records[0].partition, 1);
    assert_eq!(prepared.items[1].step, Step::Partitioning);
    assert!(
        prepared.items[1].detail.contains("not a partition"),
        "{}",
        prepared.items[1].detail
    );
    assert_eq!(prepared.items[2].step, Step::Partitioning);
}

#[test]
fn appended_events_survive_reopening_and_offsets_continue() {
    let dir = tempfile::tempdir().expect("a directory");
    let name = "order.kept";
    {
        let gateway = Gateway::open_embedded(dir.path()).expect("the gateway");
        gateway
            .registry
            .put(
                name,
                refund_definition(Some(PartitionStrategy::Random), 1),
                1,
            )
            .expect("registered");
        let registered = gateway.registry.get(name).expect("the type");
        let prepared = prepare(
            &registered,
            &ndjson(&[event(1, "a", json!(1)), event(2, "b", json!(2))]),
            &options(false),
        )
        .expect("a batch");
        assert_eq!(append(&gateway, name, prepared), [0, 1]);
    }
    let gateway = Gateway::open_embedded(dir.path()).expect("the gateway again");
    let registered = gateway.registry.get(name).expect("the type");
    assert_eq!(gateway.log.end(name, 0).expect("the end"), 2);
    let prepared = prepare(
        &registered,
        &ndjson(&[event(3, "c", json!(3))]),
        &options(false),
    )
    .expect("a batch");
    assert_eq!(append(&gateway, name, prepared), [2]);
    let (events, next) = gateway.log.read(name, 0, 1, 10).expect("read");
    assert_eq!((events.len(), next), (2, 3));
}

#[test]
fn keys_of_several_fields_are_their_texts_joined_with_a_bar() {
    let body = json!({"order": {"id": "o-1"}, "attempt": 3, "retry": true, "note": null});
    let fields: Vec<String> = ["/order/id", "/attempt", "/retry", "/note"]
        .map(String::from)
        .to_vec();
    assert_eq!(partition_key(&body, &fields), Ok("o-1|3|true|null".into()));
    let missing = partition_key(&body, &["/customer".to_owned()]).expect_err("no such field");
    assert!(missing.starts_with("/customer:"), "{missing}");
}

#[test]
fn expiry_removes_old_events_oldest_first_and_keeps_the_newest_so_offsets_continue() {
    let dir = tempfile::tempdir().expect("a directory");
    let name = "order.expiring";
    let hour = 3_600_000_000i64;
    {
        let gateway = Gateway::open_embedded(dir.path()).expect("the gateway");
        gateway
            .registry
            .put(
                name,
                refund_definition(Some(PartitionStrategy::Random), 1),
                1,
            )
            .expect("registered");
        let registered = gateway.registry.get(name).expect("the type");
        // Three events received at hour 1, two at hour 5, then one more at hour 1 again
        // (received later than a newer one: expiry stops at the first it keeps).
        for (first, received_hour, count) in [(1, 1, 3), (4, 5, 2), (6, 1, 1)] {
            let events: Vec<Value> = (first..first + count)
                .map(|number| event(number, "k", json!(1)))
                .collect();
            let options = PublishOptions {
                now_us: received_hour * hour,
                ..options(false)
            };
            let prepared = prepare(&registered, &ndjson(&events), &options).expect("a batch");
            append(&gateway, name, prepared);
        }
        assert_eq!(
            gateway
                .expire(std::time::Duration::from_secs(2 * 3600), 6 * hour)
                .expect("expired"),
            3
        );
        let (left, _) = gateway.log.read(name, 0, 0, 100).expect("read");
        assert_eq!(
            left.iter().map(|(offset, _)| *offset).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        // Everything is old now, but the newest event stays.
        assert_eq!(
            gateway
                .expire(std::time::Duration::from_secs(0), 100 * hour)
                .expect("expired"),
            2
        );
        let (left, _) = gateway.log.read(name, 0, 0, 100).expect("read");
        assert_eq!(
            left.iter().map(|(offset, _)| *offset).collect::<Vec<_>>(),
            [5]
        );
    }
    let gateway = Gateway::open_embedded(dir.path()).expect("the gateway again");
    assert_eq!(
        gateway.log.end(name, 0).expect("the end"),
        6,
        "offsets continue after a restart"
    );
}

/// `registered` without its fast path: every event through the full validator.
fn without_fast_path(registered: &Registered) -> Registered {
    Registered {
        revision: registered.revision,
        event_type: registered.event_type.clone(),
        schemas: registered.schemas.clone(),
        validator: crate::schema::compile(&registered.event_type.schema).expect("compiles"),
        fast: None,
    }
}

#[test]
fn the_fast_and_the_full_path_store_the_same_events_on_the_same_partitions() {
    let (_dir, gateway) = gateway();
    for (name, strategy, key_fields) in [
        ("order.hashed", None, vec!["/order_id"]),
        ("order.chosen", Some(PartitionStrategy::UserDefined), vec![]),
        // A key below the top level and a number: read as values on the fast path too.
        (
            "order.by-country",
            None,
            vec!["/customer/country", "/amount"],
        ),
    ] {
        let mut definition = refund_definition(strategy, 7);
        if !key_fields.is_empty() {
            definition.partition_key_fields =
                key_fields.iter().map(|field| (*field).into()).collect();
        }
        gateway
            .registry
            .put(name, definition, 1)
            .expect("registered");
        let registered = gateway.registry.get(name).expect("registered");
        assert!(registered.fast.is_some());
        let slow = without_fast_path(&registered);
        let partition = if strategy.is_some() {
            r#", "partition": 5"#
        } else {
            ""
        };
        let metadata = format!(
            r#"{{"eid": "{}", "occurred_at": "2026-12-01T10:00:00Z", "trace": [1, {{"a": null}}]{partition}}}"#,
            eid(1)
        );
        let events = [
            format!(r#"{{"order_id": "o-1", "amount": 5, "metadata": {metadata}}}"#),
            format!(r#"{{"metadata": {metadata}, "order_id": "o\"2\u00e9", "amount": 1.50}}"#),
            format!(
                "{{ \"amount\" : 0 ,\"customer\": {{\"country\": \"NL\"}}, \"order_id\":\"o-3\" , \"metadata\" : {metadata} }}\r"
            ),
            // Invalid: both paths refuse it the same way.
            format!(r#"{{"order_id": "o-4", "amount": -1, "metadata": {metadata}}}"#),
        ];
        let body = events.join("\n");
        let fast = prepare(&registered, body.as_bytes(), &options(false)).expect("a batch");
        let full = prepare(&slow, body.as_bytes(), &options(false)).expect("a batch");
        assert_eq!(fast.items, full.items, "{name}");
        // Events without a customer have no key for the type keyed by its country.
        let placed = if name == "order.by-country" { 1 } else { 3 };
        assert_eq!(fast.records.len(), placed, "{name}");
        assert_eq!(full.records.len(), placed, "{name}");
        for (fast, full) in fast.records.iter().zip(&full.records) {
            let parsed = |record: &Record| -> Value {
                serde_json::from_slice(&record.bytes).expect("stored JSON")
            };
            assert_eq!(parsed(fast), parsed(full), "{name}");
            assert_eq!(
                (fast.partition, &fast.key, &fast.eid, &fast.occurred_at),
                (full.partition, &full.key, &full.eid, &full.occurred_at),
                "{name}"
            );
        }
        // The valid events are placed by the fast path itself.
        let context = BatchContext {
            version: "1.0.0".into(),
            received_at: "t".into(),
            flow_id: "f".into(),
            trace: None,
        };
        let enrichment = metadata::Enrichment::new(&context, name);
        let members = if strategy.is_some() {
            Vec::new()
        } else {
            key_members(&registered.event_type.partition_key_fields)
        };
        let members: Vec<&str> = members.iter().map(String::as_str).collect();
        let fast_placed = events[..3]
            .iter()
            .filter(|event| {
                place_fast(&registered, event.as_bytes(), &enrichment, &members).is_some()
            })
            .count();
        assert_eq!(fast_placed, placed, "{name}");
        match name {
            "order.chosen" => assert!(fast.records.iter().all(|record| record.partition == 5)),
            "order.hashed" => assert_eq!(fast.records[1].key.as_deref(), Some("o\"2é")),
            _ => assert_eq!(fast.records[0].key.as_deref(), Some("NL|0")),
        }
    }
}

#[test]
fn byte_order_marks_before_a_batch_and_its_lines_are_not_part_of_the_events() {
    let mark = "\u{FEFF}";
    let event = r#"{"order_id":"o1"}"#;
    for body in [
        format!("{mark}{event}\n{mark}{event}\r\n{event}"),
        format!("{mark}[{event},{event},{event}]"),
    ] {
        let events = split_batch(body.as_bytes()).expect("readable");
        assert_eq!(events.len(), 3, "{body:?}");
        for text in events {
            let text = std::str::from_utf8(text).expect("text");
            assert_eq!(text.trim_end(), event, "{body:?}");
        }
    }
}
