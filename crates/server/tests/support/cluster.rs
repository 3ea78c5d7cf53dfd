//! Helpers of the cluster-mode tests (`tests/cluster.rs`): configurations, test producers and
//! events, reading topics back, and waiting for the rollups and the activity topic to match
//! the fold.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use mm_kafka::TrackedProducer;
use mm_kafka::delivery::{flush, send_blocking};
use mm_model::ApiCall;
use mm_model::rollup::{MERCHANT_TOTAL_API, Rollup, WindowKey};
use mm_model::time::{MICROS_PER_MINUTE, format_rfc3339, minute_of};
use mm_testkit::{
    Broker, KafkaCluster, ServerProcess, calls, eventually, get, metric_value, ndjson_line, now_us,
    oracle, xorshift,
};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};

/// A record read back: its headers (name, value as text) and its value.
pub type Record = (Vec<(String, String)>, Vec<u8>);

const APIS: [&str; 3] = ["/v1/payments", "/v1/refunds", "/v1/tokens"];

/// A cluster-mode configuration with short windows, so that tests see windows close.
pub fn write_config(dir: &Path, broker: &Broker, group: &str) -> String {
    write_config_with_grace(dir, broker, group, "2s")
}

pub fn write_config_with_grace(dir: &Path, broker: &Broker, group: &str, grace: &str) -> String {
    write_cluster_config(dir, &broker.bootstrap(), group, grace, 4, "")
}

/// `create_topics_partitions = 0` when the topics exist already; `client`, when not empty, is
/// the `[kafka.client]` section (header included).
pub fn write_cluster_config(
    dir: &Path,
    bootstrap: &str,
    group: &str,
    grace: &str,
    create_topics_partitions: u32,
    client: &str,
) -> String {
    let path = dir.join(format!("{group}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
[window]
grace = "{grace}"
idle_timeout = "2s"
checkpoint_interval = "300ms"

[kafka]
brokers = "{}"
input_topic = "calls"
group_id = "{group}"
activity_topic = "activity"
dlq_topic = "dead-letters"
create_topics_partitions = {create_topics_partitions}
{}
"#,
            bootstrap,
            kafka_client(client),
            grace = grace,
        ),
    )
    .expect("write config");
    path.to_str().expect("utf-8").to_owned()
}

/// The `[kafka.client]` section: `client` when not empty, else `MM_TEST_KAFKA_CLIENT`.
pub fn kafka_client(client: &str) -> String {
    if client.is_empty() {
        return std::env::var("MM_TEST_KAFKA_CLIENT").unwrap_or_default();
    }
    client.to_owned()
}

pub fn producer(broker: &impl KafkaCluster) -> TrackedProducer {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set(
            "enable.idempotence",
            std::env::var("MM_TEST_IDEMPOTENT").unwrap_or("true".into()),
        )
        .set("linger.ms", "5")
        .create_with_context(mm_kafka::DeliveryTracker::default())
        .expect("test producer")
}

/// Produces records (keyed by correlation id, so not by merchant) and waits until the broker
/// has every one; a failed delivery fails the test (the input would not be what the fold
/// assumes).
pub fn produce(producer: &TrackedProducer, topic: &str, records: &[(String, Vec<u8>)]) {
    send(producer, topic, records);
    flush(producer, Duration::from_secs(60)).expect("the broker takes the test records");
}

/// Hands records to the producer without waiting for the broker.
pub fn send(producer: &TrackedProducer, topic: &str, records: &[(String, Vec<u8>)]) {
    for (key, value) in records {
        send_blocking(
            producer,
            BaseRecord::to(topic)
                .key(key.as_bytes())
                .payload(value.as_slice()),
        )
        .expect("queued");
    }
}

/// Events spread over ten minutes that ended two minutes ago, in shuffled order: every window
/// closes within seconds, and some calls are later than grace.
pub fn events(seed: u64, count: usize, merchants: usize) -> Vec<ApiCall> {
    let end = now_us() - 2 * MICROS_PER_MINUTE;
    let mut events = calls(seed, count, merchants, &APIS, end, 10);
    // Deterministic shuffle.
    let mut random = xorshift(seed);
    for index in (1..events.len()).rev() {
        events.swap(index, (random() % (index as u64 + 1)) as usize);
    }
    events
}

pub fn records(events: &[ApiCall]) -> Vec<(String, Vec<u8>)> {
    events
        .iter()
        .map(|event| {
            (
                event.corr_id.clone(),
                ndjson_line(event).trim_end().as_bytes().to_vec(),
            )
        })
        .collect()
}

/// Reads every record of `topic` (all partitions) until no more arrive for two seconds.
pub fn read_all(broker: &impl KafkaCluster, topic: &str) -> Vec<Record> {
    let mut out = Vec::new();
    each_record(broker, topic, |message| {
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|header| {
                        (
                            header.key.to_owned(),
                            String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push((headers, message.payload().unwrap_or_default().to_vec()));
    });
    out
}

/// Calls `visit` with every record of `topic`, from the beginning of each partition, until no
/// more arrive for two seconds.
pub fn each_record(
    broker: &impl KafkaCluster,
    topic: &str,
    mut visit: impl FnMut(&BorrowedMessage<'_>),
) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", format!("test-reader-{}", now_us()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("test consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition_offset(topic, partition, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&list).expect("assign");
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(2) {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            visit(&message);
            last = Instant::now();
        }
    }
}

pub fn period(events: &[ApiCall]) -> (String, String) {
    let from = events
        .iter()
        .map(|event| event.ts_us)
        .min()
        .expect("events");
    let to = events
        .iter()
        .map(|event| event.ts_us)
        .max()
        .expect("events");
    (
        format_rfc3339(minute_of(from) * MICROS_PER_MINUTE),
        format_rfc3339((minute_of(to) + 1) * MICROS_PER_MINUTE),
    )
}

/// Waits until the instance's per-minute merchant series equal the fold, exactly (calls,
/// classes, p50, max); panics with the last difference otherwise.
pub fn assert_rollups_converge(
    server: &ServerProcess,
    expected_events: &[ApiCall],
    merchants: usize,
) {
    let expected = oracle(expected_events);
    let (from, to) = period(expected_events);
    let mut last_difference = String::new();
    let converged = eventually(Duration::from_secs(90), || {
        for merchant in 0..merchants {
            let merchant = format!("m{merchant}");
            let answer = get(
                server.address,
                &format!("/v1/merchants/{merchant}/activity?from={from}&to={to}&step=1m"),
            )
            .json();
            for bucket in answer["buckets"].as_array()? {
                let start = mm_model::time::parse_rfc3339(bucket["start"].as_str()?).ok()?;
                let key = WindowKey {
                    merchant: merchant.clone(),
                    api: MERCHANT_TOTAL_API.into(),
                    minute: minute_of(start),
                };
                let want = expected.get(&key).cloned().unwrap_or_default();
                let got = (
                    bucket["calls"].as_u64(),
                    bucket["status_5xx"].as_u64(),
                    bucket["p50_ms"].as_f64(),
                    bucket["max_ms"].as_f64(),
                );
                let round = |value: f64| (value * 1000.0).round() / 1000.0;
                let wanted = (
                    Some(want.calls),
                    Some(want.classes().status_5xx),
                    want.quantile_ms(0.5).map(round),
                    (want.calls > 0).then(|| round(want.max_ms())),
                );
                if got != wanted {
                    last_difference =
                        format!("{merchant} at {start}: got {got:?}, want {wanted:?}");
                    return None;
                }
            }
        }
        Some(())
    });
    if converged.is_none() {
        let consumers =
            String::from_utf8_lossy(&get(server.address, "/v1/admin/consumers").body).into_owned();
        panic!("rollups never matched the fold: {last_difference}\nconsumers: {consumers}");
    }
}

/// The value of header `name` of a record read back; panics naming `what` when it is missing.
pub fn header(headers: &[(String, String)], name: &str, what: &str) -> String {
    headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.clone())
        .unwrap_or_else(|| panic!("{what} without {name}"))
}

/// Waits until, per window, the activity record covering most has the fold's count. (Queries
/// show open minutes from snapshots; the activity topic gets each window once it closes, a
/// few seconds later.)
pub fn assert_activity_converges(broker: &impl KafkaCluster, events: &[ApiCall]) {
    let expected = expected_windows(events);
    let mut got = BTreeMap::new();
    let closed = eventually(Duration::from_secs(90), || {
        got = latest_activity(&read_all(broker, "activity"))
            .into_iter()
            .map(|(key, (_, calls))| (key, calls))
            .collect();
        (got == expected).then_some(())
    });
    assert!(closed.is_some(), "activity records per window: {got:?}");
}

/// Per window, the activity record covering most, as the replica keeps it.
pub fn latest_activity(records: &[Record]) -> BTreeMap<(String, String, String), (i64, u64)> {
    let mut latest: BTreeMap<(String, String, String), (i64, u64)> = BTreeMap::new();
    for (headers, value) in records {
        let header = |name: &str| header(headers, name, "activity record");
        assert!(!header("dedupe_key").is_empty());
        let covers: i64 = header("mm.covers")
            .split_once(':')
            .and_then(|(_, offset)| offset.parse().ok())
            .expect("covers");
        let record: serde_json::Value = serde_json::from_slice(value).expect("JSON value");
        let key = (
            record["merchant"].as_str().expect("merchant").to_owned(),
            record["api"].as_str().expect("api").to_owned(),
            record["window_start"].as_str().expect("start").to_owned(),
        );
        let calls = record["calls"].as_u64().expect("calls");
        let entry = latest.entry(key).or_insert((covers, calls));
        if covers >= entry.0 {
            *entry = (covers, calls);
        }
    }
    latest
}

pub fn expected_windows(events: &[ApiCall]) -> BTreeMap<(String, String, String), u64> {
    oracle(events)
        .into_iter()
        .map(|(key, rollup): (WindowKey, Rollup)| {
            (
                (
                    key.merchant,
                    key.api,
                    format_rfc3339(key.minute * MICROS_PER_MINUTE),
                ),
                rollup.calls,
            )
        })
        .collect()
}

/// (partition, offset, key) of every record of `topic`.
pub fn read_all_positions(broker: &Broker, topic: &str) -> Vec<(i32, i64, String)> {
    let mut out = Vec::new();
    each_record(broker, topic, |message| {
        let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        out.push((message.partition(), message.offset(), key));
    });
    out
}

/// Per window (merchant, api, start), the activity record with the most calls, as JSON
/// without the `correction` flag (whether a window's last record is a final or a correction
/// depends on when each deployment's watermark passed it).
pub fn latest_by_window(
    records: impl IntoIterator<Item = serde_json::Value>,
) -> BTreeMap<(String, String, String), serde_json::Value> {
    let mut latest: BTreeMap<(String, String, String), serde_json::Value> = BTreeMap::new();
    for mut record in records {
        let key = (
            record["merchant"].as_str().expect("merchant").to_owned(),
            record["api"].as_str().expect("api").to_owned(),
            record["window_start"].as_str().expect("start").to_owned(),
        );
        record
            .as_object_mut()
            .expect("an object")
            .remove("correction")
            .expect("a correction flag");
        let calls = record["calls"].as_u64().expect("calls");
        match latest.get(&key) {
            Some(held) if held["calls"].as_u64() >= Some(calls) => {}
            _ => {
                latest.insert(key, record);
            }
        }
    }
    latest
}

/// A sample of an instance's `/metrics`, by its exact name and labels.
pub fn metric(server: &ServerProcess, name_with_labels: &str) -> Option<f64> {
    let text = String::from_utf8(get(server.address, "/metrics").body).expect("utf-8");
    metric_value(&text, name_with_labels)
}

/// The partitions an instance's aggregation and repartition consumers own, sorted, as its
/// last published status (`GET /v1/admin/consumers`) says.
pub fn owned_partitions(server: &ServerProcess) -> [Vec<i64>; 2] {
    let consumers = get(server.address, "/v1/admin/consumers").json();
    ["aggregate", "repartition"].map(|role| {
        let mut owned: Vec<i64> = consumers["consumers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|consumer| consumer["role"] == role)
            .flat_map(|consumer| {
                consumer["partitions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|partition| partition["partition"].as_i64())
            .collect();
        owned.sort_unstable();
        owned
    })
}
