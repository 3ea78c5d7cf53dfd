//! `bench --only kafka`: consume → aggregate → store in cluster mode, against a bare
//! rdkafka consumer reading the same topic and discarding the records, in the same run.
//!
//! The input is produced keyed by merchant (the Java default partitioner), so the aggregation
//! consumer reads it directly (`input_keyed`). Both sides are timed by one rule: from the
//! moment their consumer is created until the last input record is processed.
//! - Start: the bare consumer is created and subscribed in a fresh group, with the settings of
//!   the aggregation consumer's group; the pipeline is `Cluster::start`, which creates and
//!   subscribes its aggregation consumer in a fresh group. Each side's group join (and first
//!   fetch) is inside its time, and reported on its own as the time to its first record.
//! - End: the bare consumer has received the last record; the pipeline has processed every
//!   partition up to its end, as counted while producing (`Cluster::aggregation` positions,
//!   which each aggregation thread updates after every turn of at most 1,024 records; watched
//!   every 5 ms).
//! - Rate: input records over that time. Every input record is processed and accepted: the
//!   run fails if the pipeline dead-letters or skips any. With several aggregation threads
//!   (`--aggregation-threads`), partitions change hands while the threads join the group and
//!   are processed again from their last checkpoint; the run reports how many records that was.
//!
//! What the pipeline does after the last record (the checkpoint that covers it committed, the
//! replica storing the activity records) is timed and reported separately, not in the rate.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mm_kafka::{KafkaSettings, partition_for};
use mm_model::mapping::{EventParser, FieldMapping};
use mm_telemetry::Metrics;
use mm_traffic::{TrafficConfig, TrafficGenerator};
use mm_window::WindowConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::BenchArgs;
use mm_cluster::{Cluster, ClusterOptions};
use mm_model::time::now_us;

const PARTITIONS: i32 = 4;
/// Events per second of event time in the input.
const EVENT_TIME_RATE: f64 = 200_000.0;

pub fn bench_kafka(args: &BenchArgs, work_dir: &std::path::Path) -> anyhow::Result<()> {
    // Without one given, a local in-memory broker for the run (stopped when it ends).
    let (brokers, _local_broker) = match args.kafka_brokers.clone() {
        Some(brokers) => (brokers, None),
        None => {
            let broker = mm_testkit::Broker::try_in_memory().map_err(|error| {
                anyhow::anyhow!("{error}; or pass --kafka-brokers HOST:PORT (a local broker)")
            })?;
            println!(
                "kafka: started a local in-memory tansu broker on {} (--kafka-brokers runs against another)",
                broker.bootstrap()
            );
            (broker.bootstrap(), Some(broker))
        }
    };
    let run = std::process::id();
    let mut settings = KafkaSettings::new(
        &brokers,
        &format!("bench-calls-{run}"),
        &format!("bench-{run}"),
    );
    settings.input_keyed = true;
    settings.activity_topic = format!("bench-activity-{run}");
    settings.dlq_topic = format!("bench-dlq-{run}");
    settings.create_topics_partitions = PARTITIONS;
    if let Some(threads) = args.aggregation_threads {
        settings.aggregation_threads = threads;
    }
    settings.validate().map_err(anyhow::Error::msg)?;
    for pair in &args.kafka_client {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--kafka-client {pair:?}: expected KEY=VALUE"))?;
        settings.client.insert(key.to_owned(), value.to_owned());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    runtime.block_on(mm_cluster::create_topics(&settings))?;

    // The input: realistic traffic ending now, keyed by merchant.
    let events = args.events;
    println!(
        "kafka: producing {events} events to {} ({PARTITIONS} partitions)",
        settings.input_topic
    );
    let producer: BaseProducer = settings
        .producer("bench-producer")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .create()
        .context("bench producer")?;
    // Event time runs at the target consumption rate and ends now: windows open, fill and
    // close as with live traffic at that rate (a backlog of days read at this speed would close
    // windows much faster; that is a catch-up, not the steady state measured here).
    let config = TrafficConfig {
        seed: 11,
        start_ts_us: now_us() - (events as f64 / EVENT_TIME_RATE * 1e6) as i64,
        events_per_second: EVENT_TIME_RATE,
        ..TrafficConfig::default()
    };
    let generator = TrafficGenerator::new(config);
    let started = Instant::now();
    let mut writer = mm_traffic::NdjsonWriter::default();
    let mut line = Vec::with_capacity(512);
    // Records per partition: where each partition ends (the topic is new and its producer
    // idempotent, so its offsets run from 0 without gaps). Asking the test broker instead can
    // give the start of a partition's last batch.
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for event in generator.take(events as usize) {
        line.clear();
        writer.write(&event, &mut line);
        let key = event.merchant.as_bytes();
        let partition = partition_for(key, PARTITIONS as u32);
        *ends.entry(partition).or_default() += 1;
        let mut record = BaseRecord::to(&settings.input_topic)
            .key(key)
            .payload(line.trim_ascii_end())
            .partition(partition);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, returned)) => {
                    record = returned;
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(300))
        .context("the broker did not take the bench input")?;
    println!(
        "kafka: produced in {:.1} s ({:.0} events/s)",
        started.elapsed().as_secs_f64(),
        events as f64 / started.elapsed().as_secs_f64()
    );

    let mut bare = Vec::new();
    let mut pipeline = Vec::new();
    for round in 0..args.runs.clamp(1, 3) {
        let (rate, first) = bare_consumer(&settings, events, round)?;
        println!(
            "kafka: round {round}: bare consumer {rate:.0} events/s (first record {:.1} s after the consumer was created: group join, first fetch)",
            first.as_secs_f64()
        );
        bare.push(rate);
        let (rate, first) = aggregation_pipeline(&settings, &ends, work_dir, round)?;
        println!(
            "kafka: round {round}: consume → aggregate {rate:.0} events/s with {} aggregation thread(s) (first record counted {:.1} s after the start: group join, first fetch)",
            settings.aggregation_threads,
            first.as_secs_f64()
        );
        pipeline.push(rate);
    }
    let bare = super::median(&mut bare);
    let pipeline = super::median(&mut pipeline);
    println!(
        "kafka: median bare consumer {bare:.0} events/s; consume → aggregate {pipeline:.0} events/s; ratio {:.2} (each from its consumer's creation to its last record)",
        pipeline / bare
    );
    Ok(())
}

/// Joins a fresh group with the aggregation consumer's settings, reads every partition from
/// the start and discards the records. Returns the rate from the consumer's creation to the
/// last record, and the time to the first record.
fn bare_consumer(
    settings: &KafkaSettings,
    events: u64,
    round: usize,
) -> anyhow::Result<(f64, Duration)> {
    let started = Instant::now();
    let consumer: BaseConsumer = settings
        .group_consumer(
            &format!("{}-bare-round{round}", settings.group_id),
            "bench-bare",
        )
        .create()
        .context("bare consumer")?;
    consumer.subscribe(&[&settings.input_topic])?;
    let mut first = None;
    let mut seen = 0u64;
    let mut bytes = 0usize;
    let mut last_record = Instant::now();
    while seen < events {
        // A zero-timeout poll while records are flowing; wait only when none is ready. A poll
        // also returns empty after serving a group event (the assignment), so give up only
        // after a quiet spell: a minute before the first record (the group join), 10 s after.
        let polled = match consumer.poll(Duration::ZERO) {
            Some(result) => Some(result),
            None => consumer.poll(Duration::from_millis(100)),
        };
        match polled {
            Some(Ok(message)) => {
                bytes += message.payload().map_or(0, <[u8]>::len);
                seen += 1;
                first.get_or_insert_with(|| started.elapsed());
                last_record = Instant::now();
            }
            Some(Err(error)) => bail!("bare consumer: {error}"),
            None => {
                let patience = Duration::from_secs(if first.is_some() { 10 } else { 60 });
                if last_record.elapsed() > patience {
                    bail!("bare consumer: no records for {patience:?} after {seen}");
                }
            }
        }
    }
    let elapsed = started.elapsed();
    std::hint::black_box(bytes);
    Ok((
        events as f64 / elapsed.as_secs_f64(),
        first.unwrap_or(elapsed),
    ))
}

/// Runs the pipeline (a fresh group) over the whole topic. Returns the rate from
/// `Cluster::start` to the last record counted, and the time to the first record counted; the
/// commit and the replica's store after the last record are reported here, not counted.
fn aggregation_pipeline(
    settings: &KafkaSettings,
    ends: &BTreeMap<i32, i64>,
    work_dir: &std::path::Path,
    round: usize,
) -> anyhow::Result<(f64, Duration)> {
    let events = ends.values().sum::<i64>() as u64;
    let mut settings = settings.clone();
    settings.group_id = format!("{}-round{round}", settings.group_id);
    settings.create_topics_partitions = 0;
    let data_dir = work_dir.join(format!("kafka-round{round}"));
    // A fresh store each round: one left by an earlier run in the same --work-dir would be
    // opened and restored first, and that time counted as the pipeline's.
    let _ = std::fs::remove_dir_all(&data_dir);
    let options = ClusterOptions {
        settings: settings.clone(),
        data_dir,
        window: WindowConfig::default(),
        checkpoint_interval: Duration::from_secs(2),
        retention: Duration::from_secs(30 * 86_400),
        max_clock_skew: Duration::from_secs(300),
        parser: Arc::new(EventParser::new(&FieldMapping::default(), false)?),
        max_in_flight: 100_000,
    };
    let (activity, _) = tokio::sync::broadcast::channel(16);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")?
        .block_on(mm_cluster::ensure_checkpoint_topic(&settings))?;
    let metrics = Arc::new(Metrics::new());
    let started = Instant::now();
    let cluster = Cluster::start(options, metrics.clone(), activity)?;
    let status = cluster.status.clone();
    let processed = || metrics.kafka_records_processed.get();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first = None;
    loop {
        let count = processed();
        anyhow::ensure!(
            Instant::now() < deadline,
            "the pipeline did not finish in 600 s: {count} of {events} records processed; positions {:?}",
            aggregate_partitions(&status)
                .iter()
                .map(|partition| (partition.partition, partition.position, partition.committed))
                .collect::<Vec<_>>()
        );
        if count > 0 {
            first.get_or_insert_with(|| started.elapsed());
        }
        let positions = cluster.aggregation.positions();
        if ends
            .iter()
            .all(|(partition, end)| positions.get(partition).is_some_and(|at| at >= end))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let all_processed = Instant::now();
    let elapsed = all_processed.duration_since(started);
    // Every record processed, and accepted; a partition that changed hands (several
    // aggregation threads joining the group one after the other) is processed again from its
    // last checkpoint, which the covers rule makes count once.
    let rendered = metrics.render();
    let dead_letters: f64 = rendered
        .lines()
        .filter(|line| line.starts_with("mm_kafka_dead_letters_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let duplicates = metrics.kafka_duplicates_skipped.get();
    anyhow::ensure!(
        processed() >= events && dead_letters == 0.0 && duplicates == 0,
        "the pipeline processed {} records for {events} ({dead_letters} dead letters, {duplicates} skipped as duplicates)",
        processed()
    );
    if processed() > events {
        println!(
            "kafka: {} records processed again after partitions changed hands",
            processed() - events
        );
    }
    // Then committed: a checkpoint covers every record.
    loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the pipeline did not commit in 600 s"
        );
        let committed: i64 = aggregate_partitions(&status)
            .iter()
            .map(|partition| partition.committed.unwrap_or(0))
            .sum();
        if committed as u64 >= events {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Stored: the replica has every activity record produced so far.
    let targets = partition_ends(&settings, &settings.activity_topic)?;
    anyhow::ensure!(
        cluster
            .progress
            .wait_for(&targets, Duration::from_secs(120)),
        "the replica did not store the activity records"
    );
    let stored = Instant::now();
    cluster.shutdown()?;
    println!(
        "kafka: last record processed → committed and stored: {:.2} s (checkpoint every 2 s)",
        stored.duration_since(all_processed).as_secs_f64()
    );
    Ok((
        events as f64 / elapsed.as_secs_f64(),
        first.unwrap_or(elapsed),
    ))
}

/// The end offset of each of the benchmark's partitions of `topic`.
fn partition_ends(settings: &KafkaSettings, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    let reader: BaseConsumer = settings.reader("bench-watermarks").create()?;
    let mut ends = BTreeMap::new();
    for partition in 0..PARTITIONS {
        let (_, high) = reader.fetch_watermarks(topic, partition, Duration::from_secs(5))?;
        ends.insert(partition, high);
    }
    Ok(ends)
}

/// The aggregation consumer's partitions, as the cluster reports them.
fn aggregate_partitions(status: &mm_cluster::ClusterStatus) -> Vec<mm_cluster::PartitionStatus> {
    status
        .snapshot()
        .into_iter()
        .filter(|consumer| consumer.role == mm_cluster::ConsumerRole::Aggregate)
        .flat_map(|consumer| consumer.partitions)
        .collect()
}
