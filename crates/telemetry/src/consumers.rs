//! The consumer status behind `GET /v1/admin/consumers`: per consumer of this instance, each
//! partition's position, committed offset, end and lag, and the operator's backpressure
//! setting. Cluster mode publishes it; the HTTP API reads it. Plain data, so the API and its
//! document are the same in every build.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

/// One consumed partition, as `GET /v1/admin/consumers` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PartitionStatus {
    pub partition: i32,
    /// Next offset this instance will process.
    pub position: i64,
    /// Offset committed with the last checkpoint; null before the first.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub committed: Option<i64>,
    /// End of the partition when last asked.
    pub high_watermark: i64,
    /// Records between the position and the end.
    pub lag: i64,
    /// Whether the consumer has paused the partition (backpressure).
    pub paused: bool,
}

/// What a consumer of this instance does.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConsumerRole {
    /// Reads the repartitioned topic into windows and the rollup store.
    Aggregate,
    /// Reads the input topic and writes each record to its merchant's partition.
    Repartition,
}

/// One consumer of this instance.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsumerStatus {
    pub role: ConsumerRole,
    /// Kafka consumer group.
    pub group: String,
    pub topic: String,
    pub partitions: Vec<PartitionStatus>,
}

/// The status of this instance's consumers, and the operator's backpressure setting.
#[derive(Debug)]
pub struct ClusterStatus {
    consumers: Mutex<BTreeMap<ConsumerRole, ConsumerStatus>>,
    /// Records the repartitioner may have in flight to the broker before it pauses its
    /// partitions; adjustable at runtime.
    pub max_in_flight: AtomicUsize,
}

impl ClusterStatus {
    pub fn new(max_in_flight: usize) -> Self {
        Self {
            consumers: Mutex::new(BTreeMap::new()),
            max_in_flight: AtomicUsize::new(max_in_flight),
        }
    }

    /// Every consumer's status, by role.
    pub fn snapshot(&self) -> Vec<ConsumerStatus> {
        self.consumers
            .lock()
            .map(|consumers| consumers.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::Relaxed)
    }

    /// The last published status of the consumer with `role`.
    pub fn consumer(&self, role: ConsumerRole) -> Option<ConsumerStatus> {
        self.consumers
            .lock()
            .ok()
            .and_then(|consumers| consumers.get(&role).cloned())
    }

    /// Replaces the status of the consumer with `status.role`; returns the one it replaces.
    pub fn publish(&self, status: ConsumerStatus) -> Option<ConsumerStatus> {
        self.consumers
            .lock()
            .ok()
            .and_then(|mut consumers| consumers.insert(status.role, status))
    }
}
