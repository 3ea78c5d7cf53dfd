//! The event gateway: event types with versioned JSON Schemas, compatibility checks between
//! versions, and (built on them) validation, partitioning and the event log.
//!
//! - [`schema`]: JSON Schema checks, the compatibility checker (our own: which changes keep
//!   old events readable, or old consumers working), modes and semver versions.
//! - [`event_type`]: what a producer registers.
//! - [`registry`]: the master list of types and their versions, persisted through a
//!   [`registry::RegistryLog`].
//! - [`publish`]: a batch's events checked, placed on partitions and enriched, each with its
//!   own answer.
//! - [`log`]: the embedded event log (per type and partition, durable group commit).
//! - [`subscriptions`]: consumer groups reading types from cursors they commit.
//! - [`stats`]: each type's publish and reject rates and latest rejects, for the dashboard.
//!
//! On one machine everything lives in the data directory's `gateway` database
//! ([`Gateway::open_embedded`]).

pub mod event_type;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod log;
pub mod publish;
pub mod registry;
pub mod schema;
pub mod stats;
pub mod subscriptions;

use std::path::Path;

pub use event_type::{Category, EventType, EventTypeDefinition, PartitionStrategy};
pub use log::{BatchContext, EventLog, LogError, Record};
pub use publish::{Prepared, PublishItem, PublishOptions, PublishingStatus, Step};
pub use registry::{
    CompatibilityReport, EmbeddedLog, PutOutcome, Registry, RegistryError, SchemaRecord,
};
pub use schema::{CompatibilityMode, SchemaVersion, Violation};

/// The gateway of one machine: the registry and the event log in one database.
pub struct Gateway {
    pub registry: Registry,
    pub log: EventLog,
    pub subscriptions: subscriptions::Subscriptions,
    pub stats: stats::Stats,
}

impl Gateway {
    /// Opens (or creates) the gateway database in `dir`.
    pub fn open_embedded(dir: &Path) -> Result<Self, RegistryError> {
        let database = registry::open_database(dir)?;
        let registry = Registry::open(Box::new(EmbeddedLog::new(&database)?))?;
        let log =
            EventLog::open(&database).map_err(|error| RegistryError::Storage(error.to_string()))?;
        let subscriptions = subscriptions::Subscriptions::open(&database)
            .map_err(|error| RegistryError::Storage(error.to_string()))?;
        Ok(Self {
            registry,
            log,
            subscriptions,
            stats: stats::Stats::default(),
        })
    }

    /// Opens the gateway of cluster mode: the registry on its topic (created when missing,
    /// then read to its end) and one topic per event type. Blocking.
    #[cfg(feature = "kafka")]
    pub fn open_kafka(
        settings: &mm_kafka::KafkaSettings,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Self, RegistryError> {
        // A shared table's topic: one partition, compacted; created when missing unless
        // `create_topics_partitions` is 0 (topics are then the operator's to create).
        let table = |topic: String| -> Result<kafka::table::Table, RegistryError> {
            if settings.create_topics_partitions > 0 {
                runtime
                    .block_on(kafka::create_topic(
                        settings,
                        &topic,
                        1,
                        &[("cleanup.policy", "compact")],
                    ))
                    .map_err(|error| RegistryError::Storage(error.to_string()))?;
            }
            kafka::table::Table::open(settings, &topic).map_err(RegistryError::Storage)
        };
        let registry = Registry::open(Box::new(table(kafka::registry_topic(settings))?))?;
        let log = EventLog::kafka(
            kafka::events::KafkaEvents::open(settings)
                .map_err(|error| RegistryError::Storage(error.to_string()))?,
        );
        let subscriptions = subscriptions::Subscriptions::with_store(Box::new(
            kafka::subscriptions::KafkaSubscriptions::new(
                settings,
                table(kafka::subscriptions_topic(settings))?,
            ),
        ));
        Ok(Self {
            registry,
            log,
            subscriptions,
            stats: stats::Stats::default(),
        })
    }

    /// The type a batch is published to: registered, and not built in.
    pub fn publishable(
        &self,
        name: &str,
    ) -> Result<std::sync::Arc<registry::Registered>, RegistryError> {
        let registered = self.registry.get(name)?;
        if registered.event_type.built_in {
            return Err(RegistryError::BuiltIn(name.to_owned()));
        }
        Ok(registered)
    }

    /// Appends the events `prepared` submits, waits until they are durable, and records the
    /// batch's answers in the stats. Returns the events submitted. On an error nothing of the
    /// batch is published.
    pub async fn commit(&self, name: &str, prepared: &mut Prepared) -> Result<usize, LogError> {
        if !prepared.records.is_empty() {
            let registered = self
                .registry
                .get(name)
                .map_err(|error| LogError::Storage(error.to_string()))?;
            let records = std::mem::take(&mut prepared.records);
            self.log
                .append(&registered.event_type, records, &prepared.context)
                .await?;
        }
        self.stats
            .record(name, &prepared.items, mm_model::time::now_us());
        Ok(prepared.record_items.len())
    }

    /// Removes the events every type received more than `retention` before `now_us` (the
    /// newest of each partition stays). Returns the events removed.
    pub fn expire(&self, retention: std::time::Duration, now_us: i64) -> Result<u64, LogError> {
        let cutoff = now_us.saturating_sub(retention.as_micros() as i64);
        let mut removed = 0;
        for event_type in self.registry.list() {
            for partition in 0..event_type.partitions {
                removed += self.log.expire(&event_type.name, partition, cutoff)?;
            }
        }
        Ok(removed)
    }

    /// The registry's dry-run check, with the subscriptions that read the type.
    pub fn compatibility(
        &self,
        name: &str,
        candidate: &serde_json::Value,
        mode: Option<CompatibilityMode>,
    ) -> Result<CompatibilityReport, RegistryError> {
        let mut report = self.registry.compatibility(name, candidate, mode)?;
        report.consumers = self
            .subscriptions
            .readers_of(name)
            .map_err(|error| RegistryError::Storage(error.to_string()))?;
        Ok(report)
    }
}

/// Runs `future` to completion on this thread (parking it while the future waits): for the
/// few places that wait for an asynchronous answer outside any runtime, such as a registry
/// change waiting for its delivery report in a blocking task.
#[cfg(any(test, feature = "kafka"))]
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut context = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}
