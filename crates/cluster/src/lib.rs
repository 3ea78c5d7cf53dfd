//! Cluster mode: several instances share the work through Kafka.
//!
//! ```text
//! HTTP ingest ──▶ input topic ──▶ repartition consumer (group G) ──▶ <G>-repartition topic
//!   (idempotent      (any JSON       parse, dead letters, re-key         keyed by merchant,
//!    producer)        producer)      by merchant (murmur2)                murmur2
//!                                                                              │
//!              aggregation consumer (group G.aggregate): one window aggregator per partition,
//!              checkpoints = activity records delivered, then offsets + state committed
//!                                                                              │
//!                                                   activity topic (key merchant|api) ◀──┘
//!                                                              │
//!                       every instance: replica of the activity topic in its rollup store
//!                                                              │
//!                                                        query API, SSE
//! ```
//!
//! With `input_keyed = true` the repartition step is skipped and the input topic is
//! aggregated directly (its producers key by merchant with the Java default partitioner).

mod aggregate;
pub use aggregate::Members;
mod decode;
mod error;
mod group;
mod repartition;
mod replica;
mod writer;

pub use error::{ClusterError, Result};
pub use group::{ClusterStatus, ConsumerRole, ConsumerStatus, PartitionStatus};
pub use replica::ReplicaProgress;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use mm_kafka::{DeliveryTracker, KafkaSettings, TrackedProducer};
use mm_model::mapping::EventParser;
use mm_storage::health::StorageHealth;
use mm_storage::rollups::RollupStore;
use mm_telemetry::Metrics;
use mm_window::WindowConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureProducer;
use tokio::sync::broadcast;

use mm_model::activity::ActivityRecord;

/// What cluster mode needs besides the Kafka settings.
pub struct ClusterOptions {
    pub settings: KafkaSettings,
    pub data_dir: std::path::PathBuf,
    pub window: WindowConfig,
    pub checkpoint_interval: Duration,
    pub retention: Duration,
    pub max_clock_skew: Duration,
    pub parser: Arc<EventParser>,
    /// Records in flight to the broker before the repartition consumer pauses.
    pub max_in_flight: usize,
}

/// The running cluster-mode pipeline of this instance.
pub struct Cluster {
    pub store: Arc<RollupStore>,
    /// Whether the replica store takes writes (the replicas report to it).
    pub health: Arc<StorageHealth>,
    pub status: Arc<ClusterStatus>,
    pub progress: Arc<ReplicaProgress>,
    /// What the aggregation threads report together (positions processed, gauges).
    pub aggregation: Arc<aggregate::Members>,
    /// For HTTP ingest: produces accepted records to the input topic.
    pub ingest_producer: FutureProducer,
    pub settings: KafkaSettings,
    stop: Arc<AtomicBool>,
    threads: Vec<(String, JoinHandle<Result<()>>)>,
    healthy: Arc<AtomicBool>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Cluster")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Creates missing topics (when configured), opens the local replica store and starts the
    /// replica, repartition and aggregation threads.
    pub fn start(
        options: ClusterOptions,
        metrics: Arc<Metrics>,
        activity: broadcast::Sender<Arc<ActivityRecord>>,
    ) -> Result<Self> {
        let settings = options.settings.clone();
        let store = Arc::new(
            RollupStore::open(&options.data_dir.join("replica"))
                .map_err(ClusterError::storage("opening the replica rollup store"))?,
        );
        let instance = format!("merchant-monitor-{}", std::process::id());
        let ingest_producer: FutureProducer = settings
            .producer(&format!("{instance}-ingest"))
            .create()
            .map_err(ClusterError::kafka("creating the ingest producer"))?;
        let tracked = |role: &str| -> Result<Arc<TrackedProducer>> {
            Ok(Arc::new(
                settings
                    .producer(&format!("{instance}-{role}"))
                    .create_with_context(DeliveryTracker::default())
                    .map_err(ClusterError::kafka(format!("creating the {role} producer")))?,
            ))
        };
        let health = StorageHealth::new();
        let status = Arc::new(ClusterStatus::new(options.max_in_flight));
        let progress = Arc::new(ReplicaProgress::default());
        let stop = Arc::new(AtomicBool::new(false));
        let healthy = Arc::new(AtomicBool::new(true));
        let mut threads = Vec::new();
        let spawn = |name: String,
                     healthy: Arc<AtomicBool>,
                     work: Box<dyn FnOnce() -> Result<()> + Send>|
         -> Result<(String, JoinHandle<Result<()>>)> {
            let thread = name.clone();
            let handle = std::thread::Builder::new()
                .name(format!("mm-{name}"))
                .spawn(move || {
                    let result = work();
                    if let Err(error) = &result {
                        tracing::error!(%thread, %error, "cluster thread failed");
                        healthy.store(false, Ordering::Release);
                    }
                    result
                })
                .map_err(|source| ClusterError::Spawn {
                    thread: name.clone(),
                    source,
                })?;
            Ok((name, handle))
        };
        threads.push(spawn("replica".to_owned(), healthy.clone(), {
            let (settings, store, stop) = (settings.clone(), store.clone(), stop.clone());
            let source = replica::ReplicaSource {
                topic: settings.activity_topic.clone(),
                open: false,
                progress: Some(progress.clone()),
                activity: Some(activity),
                metrics: metrics.clone(),
                health: health.clone(),
            };
            Box::new(move || replica::run(settings, source, store, stop))
        })?);
        threads.push(spawn("open-windows".to_owned(), healthy.clone(), {
            let (settings, store, stop) = (settings.clone(), store.clone(), stop.clone());
            let source = replica::ReplicaSource {
                topic: settings.open_windows_topic(),
                open: true,
                progress: None,
                activity: None,
                metrics: metrics.clone(),
                health: health.clone(),
            };
            Box::new(move || replica::run(settings, source, store, stop))
        })?);
        let retention_us = options.retention.as_micros() as i64;
        let max_skew_us = options.max_clock_skew.as_micros() as i64;
        if !settings.input_keyed {
            let repartition = repartition::RepartitionOptions {
                settings: settings.clone(),
                commit_interval: options.checkpoint_interval,
                retention_us,
                max_skew_us,
                parser: options.parser.clone(),
                metrics: metrics.clone(),
                status: status.clone(),
                producer: tracked("repartition")?,
                stop: stop.clone(),
                client_id: format!("{instance}-repartition"),
            };
            threads.push(spawn(
                "repartition".to_owned(),
                healthy.clone(),
                Box::new(move || repartition::run(repartition)),
            )?);
        }
        // One group member per aggregation thread; the group spreads the partitions over them.
        // (At least one: `KafkaSettings::validate` refuses 0 before this.)
        let count = settings.aggregation_threads.max(1);
        let members = Arc::new(aggregate::Members::new(count));
        for thread in 1..=count {
            let name = if count > 1 {
                format!("aggregate-{thread}")
            } else {
                "aggregate".to_owned()
            };
            let aggregate = aggregate::AggregateOptions {
                settings: settings.clone(),
                window: options.window,
                checkpoint_interval: options.checkpoint_interval,
                retention_us,
                max_skew_us,
                parser: options.parser.clone(),
                store: store.clone(),
                progress: progress.clone(),
                metrics: metrics.clone(),
                status: status.clone(),
                producer: tracked(&name)?,
                stop: stop.clone(),
                client_id: format!("{instance}-{name}"),
                member: (thread - 1) as u32,
                members: members.clone(),
            };
            threads.push(spawn(
                name,
                healthy.clone(),
                Box::new(move || aggregate::run(aggregate)),
            )?);
        }
        Ok(Self {
            aggregation: members,
            store,
            health,
            status,
            progress,
            ingest_producer,
            settings,
            stop,
            threads,
            healthy,
        })
    }

    /// False once a cluster thread has failed.
    pub fn healthy(&self) -> Arc<AtomicBool> {
        self.healthy.clone()
    }

    /// Checkpoints, leaves the groups and stops every thread.
    pub fn shutdown(self) -> Result<()> {
        self.stop.store(true, Ordering::Release);
        let mut failed = None;
        for (name, handle) in self.threads {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    failed = Some(ClusterError::Thread {
                        thread: name,
                        source: Box::new(error),
                    })
                }
                Err(_) => failed = Some(ClusterError::Panicked(name)),
            }
        }
        match failed {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Creates the input, repartition, activity and dead-letter topics that do not exist, when
/// `create_topics_partitions` asks for it.
pub async fn create_topics(settings: &KafkaSettings) -> Result<()> {
    if settings.create_topics_partitions <= 0 {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = settings
        .producer("merchant-monitor-admin")
        .create()
        .map_err(ClusterError::kafka("creating the admin client"))?;
    let mut names = vec![
        settings.input_topic.clone(),
        settings.activity_topic.clone(),
        settings.dlq_topic.clone(),
    ];
    if !settings.input_keyed {
        names.push(settings.repartition_topic());
    }
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                settings.create_topics_partitions,
                TopicReplication::Fixed(settings.replication_factor),
            )
        })
        .collect();
    let results = admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .map_err(ClusterError::kafka("creating topics"))?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, "topic created"),
            Err((name, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic = %name, "topic exists")
            }
            Err((name, code)) => return Err(topic_not_created(name, code)),
        }
    }
    Ok(())
}

/// Creates the checkpoint and open-window topics with one partition per aggregation partition,
/// waiting for the aggregation topic to exist; refuses one with fewer partitions.
pub async fn ensure_checkpoint_topic(settings: &KafkaSettings) -> Result<()> {
    ensure_partitioned_like_aggregation(settings, &settings.checkpoint_topic()).await?;
    ensure_partitioned_like_aggregation(settings, &settings.open_windows_topic()).await
}

async fn ensure_partitioned_like_aggregation(
    settings: &KafkaSettings,
    checkpoints: &str,
) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = settings
        .producer("merchant-monitor-admin")
        .create()
        .map_err(ClusterError::kafka("creating the admin client"))?;
    let aggregation = settings.aggregation_topic();
    let count = |topic: &str| -> Result<usize> {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(ClusterError::kafka(format!("fetching metadata of {topic}")))?;
        Ok(metadata
            .topics()
            .iter()
            .find(|found| found.name() == topic && found.error().is_none())
            .map_or(0, |found| found.partitions().len()))
    };
    let mut waited = 0;
    let partitions = loop {
        match count(&aggregation)? {
            0 if waited < 60 => {
                if waited == 0 {
                    tracing::info!(topic = %aggregation, "waiting for the aggregation topic to exist");
                }
                waited += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            0 => {
                return Err(ClusterError::Topic {
                    topic: aggregation,
                    detail: "does not exist: create it, or set kafka.create_topics_partitions"
                        .into(),
                });
            }
            partitions => break partitions,
        }
    };
    match count(checkpoints)? {
        0 => {
            let topic = NewTopic::new(
                checkpoints,
                partitions as i32,
                TopicReplication::Fixed(settings.replication_factor),
            );
            let results = admin
                .create_topics(
                    [&topic],
                    &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
                )
                .await
                .map_err(ClusterError::kafka(format!("creating {checkpoints}")))?;
            for result in results {
                match result {
                    Ok(name) => {
                        tracing::info!(topic = %name, partitions, "checkpoint topic created")
                    }
                    Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((name, code)) => return Err(topic_not_created(name, code)),
                }
            }
            Ok(())
        }
        existing if existing < partitions => Err(ClusterError::Topic {
            topic: checkpoints.to_owned(),
            detail: format!(
                "has {existing} partitions but {aggregation} has {partitions}: it needs at least as many"
            ),
        }),
        _ => Ok(()),
    }
}

fn topic_not_created(name: String, code: rdkafka::types::RDKafkaErrorCode) -> ClusterError {
    ClusterError::Topic {
        topic: name,
        detail: format!("could not be created: {code}"),
    }
}
