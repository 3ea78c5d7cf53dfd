//! Cluster-mode settings and the librdkafka client configurations built from them.

use std::collections::BTreeMap;

#[cfg(feature = "client")]
use rdkafka::ClientConfig;
use serde::Deserialize;

/// The `[kafka]` section of the configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    /// The topic of API-call logs (JSON, mapped with `[mapping]`).
    pub input_topic: String,
    /// The consumer group the instances share.
    pub group_id: String,
    /// Where one record per closed (merchant, api, minute) goes.
    #[serde(default = "default_activity_topic")]
    pub activity_topic: String,
    /// Where records that cannot be parsed or fail validation go.
    #[serde(default = "default_dlq_topic")]
    pub dlq_topic: String,
    /// The internal topic records are re-keyed into; default `<group_id>-repartition`.
    #[serde(default)]
    pub repartition_topic: Option<String>,
    /// `true` when every producer of the input topic keys records by merchant account with
    /// the Java client's default partitioner: the repartition step is then skipped.
    #[serde(default)]
    pub input_keyed: bool,
    /// Create missing topics at start-up with this many partitions (0: do not create).
    #[serde(default = "default_partitions")]
    pub create_topics_partitions: i32,
    /// Replication factor of created topics.
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// Records a consumer may hold fetched but unprocessed before librdkafka stops fetching,
    /// in kilobytes per partition queue (librdkafka `queued.max.messages.kbytes`).
    #[serde(default = "default_queued_kbytes")]
    pub max_queued_kbytes: u32,
    /// Guard every consumer against brokers that answer a fetch starting inside a record
    /// batch with the next batch (the test broker, tansu 0.6, does; see `guard.rs`). Apache
    /// Kafka and Redpanda do not need it: `false` saves a few re-reads per quiet partition.
    #[serde(default = "default_fetch_guard")]
    pub fetch_guard: bool,
    /// Aggregation consumers this instance runs, each a member of the aggregation group on
    /// its own thread (like Kafka Streams' `num.stream.threads`): the group spreads the
    /// partitions over them, so one instance parses and aggregates on more than one core.
    #[serde(default = "default_aggregation_threads")]
    pub aggregation_threads: usize,
    /// Passed to librdkafka as is: `security.protocol`, `sasl.*`, `ssl.*`, …
    #[serde(default)]
    pub client: BTreeMap<String, String>,
}

fn default_fetch_guard() -> bool {
    true
}

fn default_aggregation_threads() -> usize {
    1
}

fn default_activity_topic() -> String {
    "merchant-activity".to_owned()
}

fn default_dlq_topic() -> String {
    "merchant-monitor-dlq".to_owned()
}

fn default_partitions() -> i32 {
    12
}

fn default_replication() -> i32 {
    1
}

fn default_queued_kbytes() -> u32 {
    // librdkafka's own default; a quarter of it cut consumption from the test broker to a
    // quarter (measured with `bench --only kafka`).
    64 * 1024
}

impl KafkaSettings {
    /// The settings for the command-line essentials; everything else at its default.
    pub fn new(brokers: &str, input_topic: &str, group_id: &str) -> Self {
        Self {
            brokers: brokers.to_owned(),
            input_topic: input_topic.to_owned(),
            group_id: group_id.to_owned(),
            activity_topic: default_activity_topic(),
            dlq_topic: default_dlq_topic(),
            repartition_topic: None,
            input_keyed: false,
            create_topics_partitions: default_partitions(),
            replication_factor: default_replication(),
            max_queued_kbytes: default_queued_kbytes(),
            fetch_guard: default_fetch_guard(),
            aggregation_threads: default_aggregation_threads(),
            client: BTreeMap::new(),
        }
    }

    /// The aggregation threads an instance may run.
    pub const AGGREGATION_THREADS: std::ops::RangeInclusive<usize> = 1..=64;

    /// Checks what the types cannot: the aggregation thread count is within
    /// [`Self::AGGREGATION_THREADS`].
    pub fn validate(&self) -> Result<(), String> {
        if Self::AGGREGATION_THREADS.contains(&self.aggregation_threads) {
            Ok(())
        } else {
            Err(format!(
                "kafka.aggregation_threads must be between {} and {}, not {}",
                Self::AGGREGATION_THREADS.start(),
                Self::AGGREGATION_THREADS.end(),
                self.aggregation_threads
            ))
        }
    }

    /// The topic windows are aggregated from: the input when it is keyed, else the internal
    /// repartition topic.
    pub fn aggregation_topic(&self) -> String {
        if self.input_keyed {
            self.input_topic.clone()
        } else {
            self.repartition_topic()
        }
    }

    pub fn repartition_topic(&self) -> String {
        self.repartition_topic
            .clone()
            .unwrap_or_else(|| format!("{}-repartition", self.group_id))
    }

    /// Where the aggregation consumer's partition checkpoints go (one partition per
    /// aggregation partition).
    pub fn checkpoint_topic(&self) -> String {
        format!("{}.checkpoints", self.aggregation_group())
    }

    /// Where the aggregation consumer publishes snapshots of windows still open, so that
    /// every instance shows the current minutes too (one partition per aggregation partition).
    pub fn open_windows_topic(&self) -> String {
        format!("{}.open-windows", self.aggregation_group())
    }

    /// The group that aggregates the repartition topic (the user's group reads the input).
    pub fn aggregation_group(&self) -> String {
        if self.input_keyed {
            self.group_id.clone()
        } else {
            format!("{}.aggregate", self.group_id)
        }
    }
}

/// The librdkafka client configurations.
#[cfg(feature = "client")]
impl KafkaSettings {
    fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config
    }

    /// The user's `[kafka.client]` settings, applied last so that they win.
    fn with_client(&self, mut config: ClientConfig) -> ClientConfig {
        for (key, value) in &self.client {
            config.set(key, value);
        }
        config
    }

    /// An idempotent producer that waits for every in-sync replica.
    pub fn producer(&self, client_id: &str) -> ClientConfig {
        let mut config = self.base();
        config
            .set("client.id", client_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "zstd")
            .set("queue.buffering.max.kbytes", "65536")
            .set("partitioner", "murmur2_random");
        self.with_client(config)
    }

    /// A group member: cooperative-sticky assignment, manual commits, no offset auto-store.
    pub fn group_consumer(&self, group: &str, client_id: &str) -> ClientConfig {
        let mut config = self.base();
        config
            .set("group.id", group)
            .set("client.id", client_id)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            // Nothing here writes transactionally; and a broker that mis-tracks the stable
            // offset after a restart (the test broker) must not stall consumption.
            .set("isolation.level", "read_uncommitted")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set(
                "queued.max.messages.kbytes",
                self.max_queued_kbytes.to_string(),
            );
        Self::fetch_settings(&mut config);
        self.with_client(config)
    }

    /// Fetch sizes and waits for the consumers. A broker may hold a fetch for the whole
    /// `fetch.wait.max.ms` when some of its partitions have nothing new (the test broker does,
    /// at the 500 ms default, which capped a consumer at about 240k records/s); 50 ms keeps
    /// records flowing at the cost of a few more requests when idle. Larger partition fetches
    /// mean fewer round trips; `queued.max.messages.kbytes` still bounds what is held.
    ///
    /// When a partition's queue is over `queued.min.messages`, librdkafka postpones its next
    /// fetch by `fetch.queue.backoff.ms`, 1 s by default: a consumer slower than its fetches
    /// empties the queue and then waits out the rest of that second, again and again (the
    /// aggregation consumer spent 23 % of its time waiting so, and ran at half the rate,
    /// measured with `bench --only kafka`). 10 ms keeps the queue topped up.
    fn fetch_settings(config: &mut ClientConfig) {
        config
            .set("fetch.queue.backoff.ms", "10")
            .set("fetch.wait.max.ms", "50")
            .set("max.partition.fetch.bytes", (8 * 1024 * 1024).to_string());
    }

    /// A reader outside any group, positioned by hand.
    pub fn reader(&self, client_id: &str) -> ClientConfig {
        let mut config = self.base();
        config
            .set("group.id", format!("{}.reader", self.group_id))
            .set("client.id", client_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_uncommitted")
            .set(
                "queued.max.messages.kbytes",
                self.max_queued_kbytes.to_string(),
            );
        Self::fetch_settings(&mut config);
        self.with_client(config)
    }
}
