//! Cluster mode against a real Kafka-protocol broker (tansu): consume, repartition, aggregate,
//! emit the activity topic and dead letters; crashes of instances and of the broker. Broker
//! restarts run against librdkafka's mock cluster ([`MockKafka`]), which survives them.
#[path = "support/cluster.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use mm_kafka::TrackedProducer;
use mm_kafka::delivery::flush;
use mm_model::ApiCall;
use mm_testkit::{Broker, MockKafka, ServerProcess, eventually, get, ndjson_line};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use support::{
    assert_activity_converges, assert_rollups_converge, events, expected_windows, header,
    latest_by_window, metric, owned_partitions, produce, producer, read_all, read_all_positions,
    records, send, write_cluster_config, write_config, write_config_with_grace,
};

const EXE: &str = env!("CARGO_BIN_EXE_merchant-monitor");

#[test]
fn consumed_events_with_disorder_and_poison_become_exact_rollups_activity_and_dead_letters() {
    let broker = Broker::in_memory();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &broker, "e2e");
    let server = ServerProcess::start(EXE, &dir.path().join("a"), &["--config", &config], &[]);
    let good = events(11, 6_000, 5);
    let mut input = records(&good);
    // Poison interleaved: every kind of unusable record, at known places.
    let poison: Vec<(&str, &[u8])> = vec![
        ("invalid_json", b"{not json"),
        ("missing_field", br#"{"ts":"2026-11-21T10:00:00Z","api":"/x","status":200,"latency_ms":1,"corr_id":"p1"}"#),
        ("invalid_value", br#"{"ts":"2026-11-21T10:00:00Z","merchant":"m0","api":"/x","status":"two hundred","latency_ms":1,"corr_id":"p2"}"#),
        ("invalid_utf8", b"{\"merchant\":\"\xff\xfe\"}"),
    ];
    for (index, (_, value)) in poison.iter().enumerate() {
        input.insert(
            index * 1_000 + 7,
            (format!("poison-{index}"), value.to_vec()),
        );
    }
    produce(&producer(&broker), "calls", &input);

    assert_rollups_converge(&server, &good, 5);

    // The activity topic: per window, the record covering most has the fold's count.
    assert_activity_converges(&broker, &good);

    // Dead letters: every poison record, with where it came from and why.
    let letters = read_all(&broker, "dead-letters");
    assert_eq!(
        letters.len(),
        poison.len(),
        "one dead letter per poison record"
    );
    for (headers, value) in &letters {
        let header = |name: &str| header(headers, name, "dead letter");
        assert_eq!(header("mm.dlq.original.topic"), "calls");
        assert!(header("mm.dlq.original.partition").parse::<i32>().is_ok());
        assert!(header("mm.dlq.original.offset").parse::<i64>().is_ok());
        assert_eq!(header("mm.dlq.consumer.group"), "e2e");
        assert!(!header("mm.dlq.error.message").is_empty());
        let class = header("mm.dlq.error.class");
        let (expected_class, _) = poison
            .iter()
            .find(|(_, bytes)| *bytes == value.as_slice())
            .unwrap_or_else(|| panic!("dead letter {value:?} is not a poison record"));
        assert_eq!(&class, expected_class, "error class of {value:?}");
    }
    for (class, _) in &poison {
        let name = format!("mm_kafka_dead_letters_total{{error_class=\"{class}\"}}");
        assert_eq!(metric(&server, &name), Some(1.0), "{name}");
    }
    for partition in 0..4 {
        let lag = format!(
            "mm_kafka_consumer_lag{{group=\"e2e\",topic=\"calls\",partition=\"{partition}\"}}"
        );
        assert!(metric(&server, &lag).is_some_and(|lag| lag >= 0.0), "{lag}");
    }
    let consumers = get(server.address, "/v1/admin/consumers").json();
    let roles: Vec<&str> = consumers["consumers"]
        .as_array()
        .expect("consumers")
        .iter()
        .filter_map(|consumer| consumer["role"].as_str())
        .collect();
    assert_eq!(roles, ["aggregate", "repartition"]);
    assert!(server.terminate(), "graceful leave");
}

#[test]
fn http_ingest_in_cluster_mode_acknowledges_after_the_broker_and_counts_exactly() {
    let broker = Broker::in_memory();
    let dir = tempfile::tempdir().expect("tempdir");
    // A grace longer than the test: every window stays open, so what the queries show comes
    // from the open-window snapshots every instance replicates.
    let config = write_config_with_grace(dir.path(), &broker, "http", "30m");
    let server = ServerProcess::start(EXE, &dir.path().join("a"), &["--config", &config], &[]);
    let good = events(21, 3_000, 3);
    for chunk in good.chunks(1_000) {
        let body: String = chunk.iter().map(ndjson_line).collect();
        let response = mm_testkit::ingest(server.address, body.as_bytes()).expect("answers");
        assert_eq!(
            response.status,
            200,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        assert_eq!(response.json()["accepted"], 1_000);
    }
    // Acknowledged means on the broker: the input topic holds every record already.
    let input = read_all(&broker, "calls");
    assert_eq!(input.len(), good.len());
    assert_rollups_converge(&server, &good, 3);
    assert!(server.terminate());
}

#[test]
fn an_instance_killed_mid_stream_is_taken_over_and_nothing_is_lost_or_doubled() {
    let broker = Broker::in_memory();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &broker, "pair");
    let first = ServerProcess::start(EXE, &dir.path().join("a"), &["--config", &config], &[]);
    let mut second = ServerProcess::start(EXE, &dir.path().join("b"), &["--config", &config], &[]);
    let all = events(31, 25_000, 6);
    let producer = producer(&broker);
    let parts: Vec<&[ApiCall]> = all.chunks(5_000).collect();
    produce(&producer, "calls", &records(parts[0]));
    // Both instances own partitions of both stages. (The first may have counted everything
    // produced so far before the second joined: the second counts what comes next.)
    let shared = eventually(Duration::from_secs(60), || {
        let owned = [&first, &second].map(owned_partitions);
        owned
            .iter()
            .flatten()
            .all(|partitions| !partitions.is_empty())
            .then_some(())
    });
    assert!(shared.is_some(), "the two instances share the partitions");
    produce(&producer, "calls", &records(parts[1]));
    let counted_before = eventually(Duration::from_secs(60), || {
        let counted = metric(&second, "mm_kafka_records_processed_total")?;
        (counted > 0.0).then_some(counted)
    })
    .expect("the second instance counts records of its partitions");
    produce(&producer, "calls", &records(parts[2]));
    // SIGKILL the second instance mid-stream, while it owns partitions and counts records;
    // the first takes its partitions over.
    let counting = eventually(Duration::from_secs(60), || {
        let counted = metric(&second, "mm_kafka_records_processed_total")?;
        (counted > counted_before).then(|| owned_partitions(&second))
    });
    let [aggregating, _] = counting.expect("the second instance goes on counting");
    assert!(!aggregating.is_empty(), "the killed instance aggregates");
    second.kill9();
    produce(&producer, "calls", &records(parts[3]));
    let every_partition: Vec<i64> = (0..4).collect();
    let took_over = eventually(Duration::from_secs(60), || {
        let owned = owned_partitions(&first);
        owned
            .iter()
            .all(|owned| *owned == every_partition)
            .then_some(())
    });
    assert!(
        took_over.is_some(),
        "the first instance takes every partition over: {:?}",
        owned_partitions(&first)
    );
    // Restart it: the partitions spread again.
    second = ServerProcess::start(EXE, &dir.path().join("b"), &["--config", &config], &[]);
    produce(&producer, "calls", &records(parts[4]));
    assert_rollups_converge(&first, &all, 6);
    // The finals (not only the open-window snapshots) are exact, and the stores hold them.
    assert_activity_converges(&broker, &all);
    assert_rollups_converge(&first, &all, 6);
    assert_rollups_converge(&second, &all, 6);
    assert!(first.terminate());
    assert!(second.terminate());
}

/// The group's input offsets committed inside record batches, as after a restart: the test
/// broker answers a fetch from inside a batch with the next batch (or nothing, inside the last
/// one), and the consumer must notice the records it was not handed and read them (it once
/// lost them silently).
#[test]
fn two_aggregation_threads_join_the_group_as_two_members_and_count_exactly() {
    let broker = Broker::in_memory();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &broker, "threads");
    // The last section of the file is [kafka].
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str("aggregation_threads = 2\n");
    std::fs::write(&config, text).expect("config");
    let server = ServerProcess::start(EXE, &dir.path().join("a"), &["--config", &config], &[]);
    let good = events(71, 12_000, 5);
    produce(&producer(&broker), "calls", &records(&good));

    assert_rollups_converge(&server, &good, 5);
    assert_activity_converges(&broker, &good);

    // Two members of the aggregation group, one per thread, and the instance shows one
    // aggregation consumer with every partition.
    let observer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("observer");
    // (The test broker does not keep members' client ids; their member ids differ.)
    let members = eventually(Duration::from_secs(60), || {
        let groups = observer
            .fetch_group_list(Some("threads.aggregate"), Duration::from_secs(5))
            .ok()?;
        let members: std::collections::BTreeSet<String> = groups
            .groups()
            .iter()
            .flat_map(|group| group.members())
            .map(|member| member.id().to_owned())
            .collect();
        (members.len() == 2).then_some(members)
    });
    assert!(
        members.is_some(),
        "two members in the aggregation group within 60 s"
    );
    assert_eq!(owned_partitions(&server)[0], [0, 1, 2, 3]);
    assert!(server.terminate(), "graceful leave");
}

#[test]
fn reading_from_offsets_inside_record_batches_skips_nothing() {
    let broker = Broker::in_memory();
    broker.create_topic("calls", 4);
    let all = events(61, 8_000, 4);
    // Batches of a few hundred records (the broker's quirk needs a batch after the one a
    // fetch starts in).
    let producer: TrackedProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("enable.idempotence", "true")
        .set("linger.ms", "200")
        .create_with_context(mm_kafka::DeliveryTracker::default())
        .expect("test producer");
    for chunk in all.chunks(500) {
        produce(&producer, "calls", &records(chunk));
    }

    // Where each event landed, and a commit inside a batch of each partition.
    let by_corr_id: BTreeMap<&str, &ApiCall> = all
        .iter()
        .map(|event| (event.corr_id.as_str(), event))
        .collect();
    let landed: Vec<(i32, i64, &ApiCall)> = read_all_positions(&broker, "calls")
        .into_iter()
        .map(|(partition, offset, key)| (partition, offset, by_corr_id[key.as_str()]))
        .collect();
    assert_eq!(landed.len(), all.len(), "every test record read back once");
    let mut starts = BTreeMap::new();
    for partition in 0..4 {
        let count = landed.iter().filter(|(p, ..)| *p == partition).count() as i64;
        assert!(count > 100, "partition {partition} has {count} records");
        // Partition 0 from inside its last batch: nothing comes after it to be handed over.
        let start = if partition == 0 {
            count - 3
        } else {
            count / 2 + 7
        };
        starts.insert(partition, start);
    }
    let committer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "inside")
        .set("enable.auto.commit", "false")
        .create()
        .expect("committer");
    let mut commit = TopicPartitionList::new();
    for (partition, offset) in &starts {
        commit
            .add_partition_offset("calls", *partition, Offset::Offset(*offset))
            .expect("partition");
    }
    committer
        .commit(&commit, rdkafka::consumer::CommitMode::Sync)
        .expect("commit inside the batches");
    drop(committer);

    let expected: Vec<ApiCall> = landed
        .iter()
        .filter(|(partition, offset, _)| *offset >= starts[partition])
        .map(|(.., event)| (*event).clone())
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &broker, "inside");
    let server = ServerProcess::start(EXE, &dir.path().join("a"), &["--config", &config], &[]);
    assert_rollups_converge(&server, &expected, 4);
    let rereads = metric(&server, "mm_kafka_fetch_gaps_total")
        .expect("mm_kafka_fetch_gaps_total in /metrics");
    assert!(
        rereads >= 1.0,
        "the consumer started inside batches and never had to read again: {rereads}"
    );
    assert!(server.terminate());
}

#[test]
fn a_broker_outage_mid_stream_loses_and_doubles_nothing() {
    let broker = Broker::in_memory();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &broker, "outage");
    let server = ServerProcess::start(EXE, &dir.path().join("a"), &["--config", &config], &[]);
    let all = events(41, 12_000, 4);
    let (before, after) = all.split_at(6_000);
    let producer = producer(&broker);
    produce(&producer, "calls", &records(before));
    // Mid-stream: the instance has counted and checkpointed part of the input.
    let counting = eventually(Duration::from_secs(60), || {
        let counted = metric(&server, "mm_kafka_records_processed_total")?;
        let checkpoints = metric(&server, "mm_kafka_checkpoints_total")?;
        (counted > 0.0 && checkpoints > 0.0).then_some(())
    });
    assert!(counting.is_some(), "the instance counts and checkpoints");
    // The broker stops answering mid-stream (shorter than the session timeout, so that the
    // group survives it), then comes back.
    broker.freeze();
    std::thread::sleep(Duration::from_secs(7));
    broker.thaw();
    produce(&producer, "calls", &records(after));
    assert_rollups_converge(&server, &all, 4);
    assert_activity_converges(&broker, &all);
    assert_rollups_converge(&server, &all, 4);
    assert!(server.terminate());
}

/// Brokers restarted mid-stream with clients attached, their log kept: a rolling restart of
/// three brokers, one at a time. The test broker (tansu 0.6) cannot serve this test: it does
/// not survive a restart with clients attached (with its SQLite engine, the first produce of an
/// idempotent producer connected before the restart panics its storage task,
/// `idempotent_message_check` in `tansu-storage`'s `lite.rs`; with idempotence off its group
/// coordinator panics in `update_group` and assigns no partitions). So this one runs against
/// librdkafka's own mock cluster ([`MockKafka`]), which keeps every topic, record, committed
/// offset and group across a broker's restart.
///
/// Each broker goes down as the next part of the input is on its way, and stays down longer
/// than the instance's delivery timeout (`message.timeout.ms`, short here) but shorter than its
/// consumers' session timeout: records bound for the partitions it leads fail, so the consumers
/// take the broker-loss path (the repartition consumer reads the input again from its last
/// commit, the aggregation consumer rebuilds every partition from its last checkpoint) while
/// the other brokers' partitions go on. After each broker's return the rollups equal the plain
/// fold of the input so far, and at the end the activity topic does too. A repartition commit
/// that ignores a failed delivery, or a checkpoint written after its activity records failed,
/// makes it fail. The mock cluster cannot create topics for clients (no CreateTopics API), so
/// the test creates them; a down broker's partitions do not move to another leader, they wait
/// for it.
#[test]
fn a_broker_restart_mid_stream_loses_and_doubles_nothing() {
    /// Shorter than the broker's downtime, so that deliveries to it fail.
    const DELIVERY_TIMEOUT_MS: u32 = 1_500;
    /// Longer than the delivery timeout, shorter than the consumers' 10 s session timeout
    /// (the groups keep their members; only the lost deliveries are recovered).
    const DOWNTIME: Duration = Duration::from_secs(4);
    let mut kafka = MockKafka::start(3);
    let settings = mm_kafka::KafkaSettings::new(&kafka.bootstrap(), "calls", "restart");
    for topic in [
        settings.input_topic.clone(),
        "activity".to_owned(),
        "dead-letters".to_owned(),
        settings.repartition_topic(),
        settings.checkpoint_topic(),
        settings.open_windows_topic(),
    ] {
        kafka.create_topic(&topic, 4, 3);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_cluster_config(
        dir.path(),
        &kafka.bootstrap(),
        "restart",
        "2s",
        0,
        &format!("[kafka.client]\n\"message.timeout.ms\" = \"{DELIVERY_TIMEOUT_MS}\"\n"),
    );
    let server = ServerProcess::start(EXE, &dir.path().join("a"), &["--config", &config], &[]);
    let all = events(41, 12_000, 4);
    let (before, after) = all.split_at(6_000);
    let producer = producer(&kafka);
    produce(&producer, "calls", &records(before));
    // Mid-stream: the instance has counted and checkpointed part of the input.
    let checkpointed = eventually(Duration::from_secs(60), || {
        let consumers = get(server.address, "/v1/admin/consumers").json();
        let aggregate = consumers["consumers"]
            .as_array()?
            .iter()
            .find(|consumer| consumer["role"] == "aggregate")?;
        aggregate["partitions"]
            .as_array()?
            .iter()
            .any(|partition| partition["committed"].as_i64() > Some(0))
            .then_some(())
    });
    assert!(checkpointed.is_some(), "the instance never checkpointed");
    let brokers: Vec<i32> = kafka.brokers().collect();
    let chunks = after.chunks(after.len().div_ceil(brokers.len()));
    let mut sent = before.len();
    for (broker, chunk) in brokers.into_iter().zip(chunks) {
        // The next part of the input is on its way as the broker goes down. The test's
        // producer waits for it (its delivery timeout is the default five minutes), so the
        // input is exactly `all`.
        send(&producer, "calls", &records(chunk));
        kafka.broker_down(broker);
        std::thread::sleep(DOWNTIME);
        kafka.broker_up(broker);
        flush(&producer, Duration::from_secs(60)).expect("the brokers take the test records");
        sent += chunk.len();
        // Nothing lost or doubled so far, and the instance consumes again before the next
        // broker goes.
        assert_rollups_converge(&server, &all[..sent], 4);
    }
    assert_activity_converges(&kafka, &all);
    assert!(server.terminate(), "graceful leave");
}

/// An independent client, the pure-Python `kafka-python`, produces the input and reads the
/// activity topic and the dead letters; its murmur2 partitioner agrees with ours.
#[test]
fn kafka_python_produces_the_input_and_reads_activity_and_dead_letters() {
    let broker = Broker::in_memory();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &broker, "interop");
    let server = ServerProcess::start(EXE, &dir.path().join("a"), &["--config", &config], &[]);
    let good = events(51, 2_000, 3);
    let input = dir.path().join("input.ndjson");
    let mut lines: String = good.iter().map(ndjson_line).collect();
    lines.push_str("{\"merchant\": \"m0\", \"broken\n");
    lines.push_str("{\"ts\":\"2026-11-21T10:00:00Z\",\"merchant\":\"m0\",\"api\":\"/x\",\"latency_ms\":1,\"corr_id\":\"p\"}\n");
    std::fs::write(&input, lines).expect("write input");

    let produce = format!(
        r#"
import sys
from kafka import KafkaProducer
from kafka.partitioner.default import murmur2
producer = KafkaProducer(bootstrap_servers="{broker}", acks="all")
for line in open(sys.argv[1], "rb"):
    producer.send("calls", value=line.rstrip(b"\n"))
producer.flush()
producer.close()
for key in (b"m0", b"m1", b"AcmeShop042ECOM", b"a-little-bit-long-string"):
    print(key.decode(), (murmur2(key) & 0x7fffffff) % 12)
"#,
        broker = broker.bootstrap()
    );
    let output = std::process::Command::new("python3")
        .args(["-c", &produce])
        .arg(&input)
        .output()
        .expect("python3 runs (kafka-python is installed by .ci/run)");
    assert!(
        output.status.success(),
        "kafka-python producer: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let (key, partition) = line.split_once(' ').expect("key partition");
        assert_eq!(
            mm_kafka::partition_for(key.as_bytes(), 12).to_string(),
            partition,
            "murmur2 partition of {key}"
        );
    }

    assert_rollups_converge(&server, &good, 3);

    let read = format!(
        r#"
import json
from kafka import KafkaConsumer
def read(topic):
    consumer = KafkaConsumer(topic, bootstrap_servers="{broker}", auto_offset_reset="earliest",
                             consumer_timeout_ms=4000, enable_auto_commit=False)
    records = [dict(headers={{k: v.decode("utf-8", "replace") for k, v in m.headers}}, value=m.value.decode("utf-8", "replace"), key=(m.key or b"").decode())
               for m in consumer]
    consumer.close()
    return records
print(json.dumps(dict(activity=read("activity"), dlq=read("dead-letters"))))
"#,
        broker = broker.bootstrap()
    );
    // Each window reaches the activity topic once it closes, a few seconds after the queries
    // show it (from the open-window snapshots): read until every one is there.
    let read_back = || -> (serde_json::Value, BTreeMap<(String, String, String), u64>) {
        let output = std::process::Command::new("python3")
            .args(["-c", &read])
            .output()
            .expect("python3 runs");
        assert!(
            output.status.success(),
            "kafka-python consumer: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let seen: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
        let activity = seen["activity"].as_array().expect("activity");
        let mut calls_by_window: BTreeMap<(String, String, String), (i64, u64)> = BTreeMap::new();
        for record in activity {
            let value: serde_json::Value =
                serde_json::from_str(record["value"].as_str().expect("value")).expect("JSON value");
            let key = record["key"].as_str().expect("key");
            assert_eq!(
                key,
                format!(
                    "{}|{}",
                    value["merchant"].as_str().unwrap_or_default(),
                    value["api"].as_str().unwrap_or_default()
                ),
                "activity key is merchant|api"
            );
            let dedupe = record["headers"]["dedupe_key"]
                .as_str()
                .expect("dedupe_key header");
            assert_eq!(
                dedupe,
                value["dedupe_key"].as_str().expect("dedupe_key field")
            );
            let covers: i64 = record["headers"]["mm.covers"]
                .as_str()
                .and_then(|text| text.split_once(':'))
                .and_then(|(_, offset)| offset.parse().ok())
                .expect("covers header");
            let window = (
                value["merchant"].as_str().expect("merchant").to_owned(),
                value["api"].as_str().expect("api").to_owned(),
                value["window_start"].as_str().expect("start").to_owned(),
            );
            let calls = value["calls"].as_u64().expect("calls");
            let entry = calls_by_window.entry(window).or_insert((covers, calls));
            if covers >= entry.0 {
                *entry = (covers, calls);
            }
        }
        let got: BTreeMap<_, _> = calls_by_window
            .into_iter()
            .map(|(window, (_, calls))| (window, calls))
            .collect();
        (seen, got)
    };
    let expected = expected_windows(&good);
    let mut last = BTreeMap::new();
    let seen = eventually(Duration::from_secs(60), || {
        let (seen, got) = read_back();
        let complete = got == expected;
        last = got;
        complete.then_some(seen)
    })
    .unwrap_or_else(|| panic!("activity read by kafka-python: {last:?}"));
    let dlq = seen["dlq"].as_array().expect("dlq");
    assert_eq!(dlq.len(), 2, "both poison records in the dead-letter topic");
    let mut classes: Vec<&str> = dlq
        .iter()
        .map(|record| {
            record["headers"]["mm.dlq.error.class"]
                .as_str()
                .expect("class")
        })
        .collect();
    classes.sort_unstable();
    assert_eq!(classes, ["invalid_json", "missing_field"]);
    for record in dlq {
        assert_eq!(record["headers"]["mm.dlq.original.topic"], "calls");
        assert_eq!(record["headers"]["mm.dlq.consumer.group"], "interop");
    }
    assert!(server.terminate());
}

#[test]
fn both_deployments_emit_the_same_activity_records_for_the_same_input() {
    let broker = Broker::in_memory();
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster_config = write_config(dir.path(), &broker, "same");
    let embedded_config = dir.path().join("embedded.toml");
    std::fs::write(
        &embedded_config,
        "[window]\ngrace = \"2s\"\nidle_timeout = \"2s\"\ncheckpoint_interval = \"300ms\"\n[activity]\nfile = \"activity.ndjson\"\n",
    )
    .expect("config written");
    let cluster = ServerProcess::start(
        EXE,
        &dir.path().join("cluster"),
        &["--config", &cluster_config],
        &[],
    );
    let embedded_data = dir.path().join("embedded");
    let embedded = ServerProcess::start(
        EXE,
        &embedded_data,
        &["--config", embedded_config.to_str().expect("utf-8")],
        &[],
    );
    let good = events(41, 2_000, 3);
    for server in [&cluster, &embedded] {
        for chunk in good.chunks(500) {
            let body: String = chunk.iter().map(ndjson_line).collect();
            let response = mm_testkit::ingest(server.address, body.as_bytes()).expect("answers");
            assert_eq!(response.status, 200);
        }
    }
    // Both streams end with one record per window, merchant-wide ones included, holding the
    // fold's count.
    let expected = expected_windows(&good);
    let activity_file = embedded_data.join("activity.ndjson");
    let embedded_records = eventually(Duration::from_secs(90), || {
        let text = std::fs::read_to_string(&activity_file).ok()?;
        let latest = latest_by_window(
            text.lines()
                .map(|line| serde_json::from_str(line).expect("JSON line")),
        );
        let counts: BTreeMap<_, _> = latest
            .iter()
            .map(|(key, record)| (key.clone(), record["calls"].as_u64().unwrap_or(0)))
            .collect();
        (counts == expected).then_some(latest)
    })
    .expect("the embedded activity file converges on the fold");
    assert_activity_converges(&broker, &good);
    let cluster_records = latest_by_window(read_all(&broker, "activity").into_iter().map(
        |(headers, value)| {
            let record: serde_json::Value = serde_json::from_slice(&value).expect("JSON value");
            assert_eq!(
                header(&headers, "dedupe_key", "activity record"),
                record["dedupe_key"].as_str().expect("dedupe key"),
                "the header and the value carry the same dedupe key"
            );
            record
        },
    ));
    assert!(expected.keys().any(|(_, api, _)| api.is_empty()));
    assert_eq!(cluster_records.len(), embedded_records.len());
    for (window, record) in &embedded_records {
        assert_eq!(
            cluster_records.get(window),
            Some(record),
            "the record of window {window:?}"
        );
    }
    assert!(cluster.terminate());
    assert!(embedded.terminate());
}

#[test]
fn a_replica_store_that_cannot_write_recovers_by_itself_and_loses_nothing() {
    let Some(disk) = mm_testkit::SmallDisk::mount(64) else {
        return;
    };
    let broker = Broker::in_memory();
    let dir = tempfile::tempdir().expect("tempdir");
    // Every window stays open: the open-window replica writes the store at every snapshot.
    let config = write_config_with_grace(dir.path(), &broker, "full", "30m");
    let data = disk.path().join("a");
    let server = ServerProcess::start(EXE, &data, &["--config", &config], &[]);
    let send_events = |events: &[ApiCall]| {
        for chunk in events.chunks(1_000) {
            let body: String = chunk.iter().map(ndjson_line).collect();
            let response = mm_testkit::ingest(server.address, body.as_bytes()).expect("answers");
            assert_eq!(
                response.status, 200,
                "ingest goes to the broker, not the disk"
            );
        }
    };
    let mut sent = events(31, 2_000, 20);
    send_events(&sent);
    assert_rollups_converge(&server, &sent, 20);

    let filler = disk.fill();
    // Replicated rollups keep coming; the store fails a write once its journal buffer meets
    // the full disk.
    let mut seed = 100;
    let failing = eventually(Duration::from_secs(120), || {
        seed += 1;
        let more = events(seed, 2_000, 20);
        send_events(&more);
        sent.extend(more);
        (metric(&server, "mm_storage_writable") == Some(0.0)).then_some(())
    });
    assert!(
        failing.is_some(),
        "the replica store never met the full disk"
    );
    let ready = get(server.address, "/readyz");
    assert_eq!(
        ready.status, 503,
        "not ready while the replica store cannot write"
    );
    let health = get(server.address, "/healthz");
    assert_eq!(
        health.status, 200,
        "alive: the state is left without a restart"
    );
    assert_eq!(health.json()["status"], "degraded");

    std::fs::remove_file(filler).expect("room again");
    assert_rollups_converge(&server, &sent, 20);
    let recovered = eventually(Duration::from_secs(30), || {
        (metric(&server, "mm_storage_writable") == Some(1.0)).then_some(())
    });
    assert!(
        recovered.is_some(),
        "the replicas report the store writable again"
    );
    assert!(metric(&server, "mm_storage_store_reopens_total").unwrap_or(0.0) >= 1.0);
    assert_eq!(get(server.address, "/readyz").status, 200);
    assert!(server.terminate());

    // What the store holds after that is exact too.
    let server = ServerProcess::start(EXE, &data, &["--config", &config], &[]);
    assert_rollups_converge(&server, &sent, 20);
    assert!(server.terminate());
}
