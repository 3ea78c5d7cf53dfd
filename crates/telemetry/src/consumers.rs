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
///
/// A role may have several members in one instance (`[kafka] aggregation_threads`): each
/// publishes its own partitions, and readers see one status per role with all of them.
#[derive(Debug)]
pub struct ClusterStatus {
    consumers: Mutex<BTreeMap<(ConsumerRole, u32), ConsumerStatus>>,
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

    /// Every consumer's status, one per role, its members' partitions merged in order.
    pub fn snapshot(&self) -> Vec<ConsumerStatus> {
        let Ok(consumers) = self.consumers.lock() else {
            return Vec::new();
        };
        let mut merged: Vec<ConsumerStatus> = Vec::new();
        for ((role, _), status) in consumers.iter() {
            match merged.last_mut() {
                Some(last) if last.role == *role => {
                    last.partitions.extend(status.partitions.iter().cloned());
                }
                _ => merged.push(status.clone()),
            }
        }
        for status in &mut merged {
            status
                .partitions
                .sort_by_key(|partition| partition.partition);
        }
        merged
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::Relaxed)
    }

    /// The last published status of the consumer with `role`, all its members merged.
    pub fn consumer(&self, role: ConsumerRole) -> Option<ConsumerStatus> {
        self.snapshot()
            .into_iter()
            .find(|status| status.role == role)
    }

    /// Replaces the status member `member` of `status.role` published last; returns it.
    pub fn publish(&self, member: u32, status: ConsumerStatus) -> Option<ConsumerStatus> {
        self.consumers
            .lock()
            .ok()
            .and_then(|mut consumers| consumers.insert((status.role, member), status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(partition: i32, lag: i64) -> PartitionStatus {
        PartitionStatus {
            partition,
            position: 10,
            committed: Some(10),
            high_watermark: 10 + lag,
            lag,
            paused: false,
        }
    }

    fn aggregate(partitions: Vec<PartitionStatus>) -> ConsumerStatus {
        ConsumerStatus {
            role: ConsumerRole::Aggregate,
            group: "g".to_owned(),
            topic: "t".to_owned(),
            partitions,
        }
    }

    #[test]
    fn members_of_a_role_show_as_one_consumer_and_each_replaces_only_its_own_partitions() {
        let status = ClusterStatus::new(10);
        status.publish(1, aggregate(vec![partition(2, 5), partition(0, 1)]));
        status.publish(2, aggregate(vec![partition(1, 3)]));
        let shown = status.snapshot();
        assert_eq!(shown.len(), 1);
        let numbers: Vec<i32> = shown[0].partitions.iter().map(|p| p.partition).collect();
        assert_eq!(numbers, [0, 1, 2]);
        // Member 1 gave partition 2 away; member 2's partition stays.
        let previous = status.publish(1, aggregate(vec![partition(0, 0)]));
        assert_eq!(previous.map(|p| p.partitions.len()), Some(2));
        let shown = status.consumer(ConsumerRole::Aggregate).expect("aggregate");
        let numbers: Vec<(i32, i64)> = shown
            .partitions
            .iter()
            .map(|p| (p.partition, p.lag))
            .collect();
        assert_eq!(numbers, [(0, 0), (1, 3)]);
    }
}
