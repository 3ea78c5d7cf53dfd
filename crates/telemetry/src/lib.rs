//! Every metric Merchant Monitor exposes, defined in one place.
//!
//! Names follow `mm_<component>_<what>_<unit>`; counters get `_total` on exposition. The
//! [`Metrics`] value is created once by the binary and passed to each component; there are
//! no global registries.
//!
//! ```
//! let metrics = mm_telemetry::Metrics::new();
//! metrics.ingest_events.inc_by(3);
//! assert!(metrics.render().contains("mm_ingest_events_total 3"));
//! ```

pub mod consumers;

use std::sync::atomic::AtomicU64;

use mm_model::mapping::RejectReason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label of a rejection counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Label of an activity-stream counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// Label of an HTTP refusal counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: u16,
}

/// Labels of a Kafka partition gauge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PartitionLabel {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

/// Label of a dead-letter counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ErrorClassLabel {
    pub error_class: &'static str,
}

/// Label of an event gateway counter of one event type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct EventTypeLabel {
    pub event_type: String,
}

/// Labels of an event gateway rejection: the type, the step that failed and why (a schema
/// keyword such as `required` or `enum`, or `metadata`, `not_json`, `partition_key`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct GatewayRejectLabel {
    pub event_type: String,
    pub step: &'static str,
    pub reason: String,
}

/// Labels of an HTTP request: the route as declared (`/v1/merchants/{merchant}/activity`),
/// the method and the status class (`2xx`, `4xx`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HttpRequestLabel {
    pub route: String,
    pub method: String,
    pub status: &'static str,
}

/// A histogram family of request latencies.
pub type LatencyFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// Handles to every metric.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Events accepted by ingest (durable).
    pub ingest_events: Counter,
    /// Request body bytes received by ingest (before decompression).
    pub ingest_bytes: Counter,
    /// Records rejected by ingest, by reason.
    pub ingest_rejected: Family<ReasonLabel, Counter>,
    /// Ingest requests refused whole (400, 401, 413, 429, 503), by status.
    pub ingest_refused: Family<StatusLabel, Counter>,
    /// Events whose window had already closed (applied as corrections).
    pub window_late_events: Counter,
    /// Windows closed and written final.
    pub window_closed: Counter,
    /// Correction records written and emitted.
    pub window_corrections: Counter,
    /// Open windows, merchant-wide series included.
    pub window_open: Gauge,
    /// Wall clock minus watermark, in seconds.
    pub window_watermark_delay_seconds: Gauge<f64, AtomicU64>,
    /// WAL fsync latency.
    pub wal_fsync_seconds: Histogram,
    /// Batches per WAL fsync (group commit size).
    pub wal_group_batches: Histogram,
    /// Last checkpointed WAL position.
    pub wal_checkpointed_lsn: Gauge,
    /// The newest durable WAL position: less the checkpointed one, the batches a restart
    /// would replay (the checkpoint lag).
    pub wal_durable_lsn: Gauge,
    /// Bytes of write-ahead log segments on disk.
    pub wal_bytes: Gauge,
    /// Rollup store checkpoint commit latency.
    pub store_write_seconds: Histogram,
    /// Records emitted on the activity stream, by kind (final, correction).
    pub activity_records: Family<KindLabel, Counter>,
    /// Archive segments found corrupt and moved to quarantine.
    pub archive_quarantined_segments: Gauge,
    /// Bytes of Parquet segments in the archive.
    pub archive_bytes: Gauge,
    /// Events held in memory, not yet in a segment.
    pub archive_hot_events: Gauge,
    /// Records behind the end of each consumed partition (cluster mode).
    pub kafka_consumer_lag: Family<PartitionLabel, Gauge>,
    /// Records sent to the dead-letter topic, by error class.
    pub kafka_dead_letters: Family<ErrorClassLabel, Counter>,
    /// Repartitioned records skipped as duplicates of ones already counted.
    pub kafka_duplicates_skipped: Counter,
    /// Records of the aggregation topic processed as new (not re-read to rebuild).
    pub kafka_records_processed: Counter,
    /// Records re-read to rebuild open windows after an assignment.
    pub kafka_replayed_records: Counter,
    /// Times a consumer read a partition again from before the next offset it expected (it
    /// was handed a record past it, or the partition made no progress).
    pub kafka_fetch_gaps: Counter,
    /// Checkpoints committed (activity delivered, offsets with state committed).
    pub kafka_checkpoints: Counter,
    /// Cluster mode: from a checkpoint prepared to its offsets committed (activity records,
    /// checkpoint records and the commit).
    pub kafka_checkpoint_seconds: Histogram,
    /// Partitions paused for backpressure.
    pub kafka_paused_partitions: Gauge,
    /// HTTP connections open.
    pub http_connections_open: Gauge,
    /// HTTP connections refused at the connection cap (answered 503 and closed).
    pub http_connections_refused: Counter,
    /// HTTP connections closed by a timeout, by phase (`header`, `idle`).
    pub http_connections_timed_out: Family<KindLabel, Counter>,
    /// Bytes requests in flight hold of the request memory budget.
    pub http_request_memory_bytes: Gauge,
    /// 1 while storage takes writes, 0 while a write is failing (in cluster mode: the replica
    /// store).
    pub storage_writable: Gauge,
    /// Times the rollup store was reopened after a failed write.
    pub storage_store_reopens: Counter,
    /// 1 while storage cannot write because the disk is full.
    pub storage_disk_full: Gauge,
    /// Events the gateway published (durable), by event type.
    pub gateway_published: Family<EventTypeLabel, Counter>,
    /// Events the gateway did not publish, by event type, step and reason.
    pub gateway_rejected: Family<GatewayRejectLabel, Counter>,
    /// Event types in the registry.
    pub gateway_event_types: Gauge,
    /// Publish requests, from the body read to the durable answer.
    pub gateway_publish_seconds: Histogram,
    /// HTTP requests by route, method and status class: from routing to the answer's head.
    pub http_request_seconds: LatencyFamily<HttpRequestLabel>,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ]
    .into_iter()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Self {
            ingest_events: Counter::default(),
            ingest_bytes: Counter::default(),
            ingest_rejected: Family::default(),
            ingest_refused: Family::default(),
            window_late_events: Counter::default(),
            window_closed: Counter::default(),
            window_corrections: Counter::default(),
            window_open: Gauge::default(),
            window_watermark_delay_seconds: Gauge::default(),
            wal_fsync_seconds: Histogram::new(latency_buckets()),
            wal_group_batches: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
            wal_checkpointed_lsn: Gauge::default(),
            wal_durable_lsn: Gauge::default(),
            wal_bytes: Gauge::default(),
            store_write_seconds: Histogram::new(latency_buckets()),
            activity_records: Family::default(),
            archive_quarantined_segments: Gauge::default(),
            archive_bytes: Gauge::default(),
            archive_hot_events: Gauge::default(),
            kafka_consumer_lag: Family::default(),
            kafka_dead_letters: Family::default(),
            kafka_duplicates_skipped: Counter::default(),
            kafka_records_processed: Counter::default(),
            kafka_replayed_records: Counter::default(),
            kafka_fetch_gaps: Counter::default(),
            kafka_checkpoints: Counter::default(),
            kafka_checkpoint_seconds: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            kafka_paused_partitions: Gauge::default(),
            http_connections_open: Gauge::default(),
            http_connections_refused: Counter::default(),
            http_connections_timed_out: Family::default(),
            http_request_memory_bytes: Gauge::default(),
            storage_writable: Gauge::default(),
            storage_disk_full: Gauge::default(),
            storage_store_reopens: Counter::default(),
            gateway_published: Family::default(),
            gateway_rejected: Family::default(),
            gateway_event_types: Gauge::default(),
            gateway_publish_seconds: Histogram::new(latency_buckets()),
            http_request_seconds: Family::new_with_constructor(latency_histogram),
            registry: Registry::default(),
        };
        registry.register(
            "mm_http_request_seconds",
            "HTTP requests by route, method and status class, from routing to the answer's head",
            metrics.http_request_seconds.clone(),
        );
        registry.register(
            "mm_gateway_published_events",
            "Events the gateway published (durable), by event type",
            metrics.gateway_published.clone(),
        );
        registry.register(
            "mm_gateway_rejected_events",
            "Events the gateway did not publish, by event type, step and reason",
            metrics.gateway_rejected.clone(),
        );
        registry.register(
            "mm_gateway_event_types",
            "Event types in the registry",
            metrics.gateway_event_types.clone(),
        );
        registry.register(
            "mm_gateway_publish_seconds",
            "Publish requests, from the body read to the durable answer",
            metrics.gateway_publish_seconds.clone(),
        );
        registry.register(
            "mm_http_connections_open",
            "HTTP connections open",
            metrics.http_connections_open.clone(),
        );
        registry.register(
            "mm_http_connections_refused",
            "HTTP connections refused at the connection cap",
            metrics.http_connections_refused.clone(),
        );
        registry.register(
            "mm_http_connections_timed_out",
            "HTTP connections closed by a timeout, by phase (header, idle)",
            metrics.http_connections_timed_out.clone(),
        );
        registry.register(
            "mm_http_request_memory_bytes",
            "Bytes requests in flight hold of the request memory budget",
            metrics.http_request_memory_bytes.clone(),
        );
        registry.register(
            "mm_storage_writable",
            "1 while storage takes writes, 0 while a write is failing",
            metrics.storage_writable.clone(),
        );
        registry.register(
            "mm_storage_disk_full",
            "1 while storage cannot write because the disk is full",
            metrics.storage_disk_full.clone(),
        );
        registry.register(
            "mm_storage_store_reopens",
            "Times the rollup store was reopened after a failed write",
            metrics.storage_store_reopens.clone(),
        );
        registry.register(
            "mm_ingest_events",
            "Events accepted by ingest (durable)",
            metrics.ingest_events.clone(),
        );
        registry.register(
            "mm_ingest_bytes",
            "Request body bytes received by ingest",
            metrics.ingest_bytes.clone(),
        );
        registry.register(
            "mm_ingest_rejected",
            "Records rejected by ingest, by reason",
            metrics.ingest_rejected.clone(),
        );
        registry.register(
            "mm_ingest_refused",
            "Ingest requests refused whole, by HTTP status",
            metrics.ingest_refused.clone(),
        );
        registry.register(
            "mm_window_late_events",
            "Events later than grace, applied as corrections",
            metrics.window_late_events.clone(),
        );
        registry.register(
            "mm_window_closed",
            "Windows closed and written final",
            metrics.window_closed.clone(),
        );
        registry.register(
            "mm_window_corrections",
            "Correction records written and emitted",
            metrics.window_corrections.clone(),
        );
        registry.register(
            "mm_window_open",
            "Open windows",
            metrics.window_open.clone(),
        );
        registry.register(
            "mm_window_watermark_delay_seconds",
            "Wall clock minus the watermark",
            metrics.window_watermark_delay_seconds.clone(),
        );
        registry.register(
            "mm_wal_fsync_seconds",
            "Write-ahead log fsync latency",
            metrics.wal_fsync_seconds.clone(),
        );
        registry.register(
            "mm_wal_group_batches",
            "Batches made durable by one fsync",
            metrics.wal_group_batches.clone(),
        );
        registry.register(
            "mm_wal_checkpointed_lsn",
            "Last checkpointed WAL position",
            metrics.wal_checkpointed_lsn.clone(),
        );
        registry.register(
            "mm_wal_durable_lsn",
            "Newest durable WAL position (less mm_wal_checkpointed_lsn: the checkpoint lag)",
            metrics.wal_durable_lsn.clone(),
        );
        registry.register(
            "mm_wal_bytes",
            "Bytes of write-ahead log segments on disk",
            metrics.wal_bytes.clone(),
        );
        registry.register(
            "mm_store_write_seconds",
            "Rollup store checkpoint commit latency",
            metrics.store_write_seconds.clone(),
        );
        registry.register(
            "mm_activity_records",
            "Activity records emitted, by kind",
            metrics.activity_records.clone(),
        );
        registry.register(
            "mm_archive_quarantined_segments",
            "Archive segments found corrupt and moved to quarantine",
            metrics.archive_quarantined_segments.clone(),
        );
        registry.register(
            "mm_archive_bytes",
            "Bytes of Parquet segments in the archive",
            metrics.archive_bytes.clone(),
        );
        registry.register(
            "mm_kafka_consumer_lag",
            "Records behind the end of each consumed partition",
            metrics.kafka_consumer_lag.clone(),
        );
        registry.register(
            "mm_kafka_dead_letters",
            "Records sent to the dead-letter topic, by error class",
            metrics.kafka_dead_letters.clone(),
        );
        registry.register(
            "mm_kafka_duplicates_skipped",
            "Repartitioned records skipped as duplicates",
            metrics.kafka_duplicates_skipped.clone(),
        );
        registry.register(
            "mm_kafka_records_processed",
            "Records of the aggregation topic processed as new (not re-read to rebuild)",
            metrics.kafka_records_processed.clone(),
        );
        registry.register(
            "mm_kafka_replayed_records",
            "Records re-read to rebuild open windows after an assignment",
            metrics.kafka_replayed_records.clone(),
        );
        registry.register(
            "mm_kafka_fetch_gaps",
            "Re-reads from before the next expected offset (a record past it came, or no progress)",
            metrics.kafka_fetch_gaps.clone(),
        );
        registry.register(
            "mm_kafka_checkpoints",
            "Checkpoints committed in cluster mode",
            metrics.kafka_checkpoints.clone(),
        );
        registry.register(
            "mm_kafka_checkpoint_seconds",
            "Cluster mode: from a checkpoint prepared to its offsets committed",
            metrics.kafka_checkpoint_seconds.clone(),
        );
        registry.register(
            "mm_kafka_paused_partitions",
            "Partitions paused for backpressure",
            metrics.kafka_paused_partitions.clone(),
        );
        registry.register(
            "mm_archive_hot_events",
            "Archived events held in memory, not yet in a segment",
            metrics.archive_hot_events.clone(),
        );
        // Pre-create every rejection reason so dashboards see zeros, not gaps.
        for reason in RejectReason::ALL {
            let _ = metrics.ingest_rejected.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
        Self {
            registry,
            ..metrics
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Encoding into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Counts a rejected record.
    pub fn reject(&self, reason: RejectReason) {
        self.reject_many(reason, 1);
    }

    /// Counts `count` rejected records of one reason.
    pub fn reject_many(&self, reason: RejectReason, count: u64) {
        self.ingest_rejected
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc_by(count);
    }

    /// Counts what a publish request to the event gateway did: `submitted` events published,
    /// and each other one by its step and reason.
    pub fn count_published<'a>(
        &self,
        event_type: &str,
        submitted: usize,
        others: impl IntoIterator<Item = (&'static str, &'a str)>,
    ) {
        self.gateway_published
            .get_or_create(&EventTypeLabel {
                event_type: event_type.to_owned(),
            })
            .inc_by(submitted as u64);
        for (step, reason) in others {
            self.gateway_rejected
                .get_or_create(&GatewayRejectLabel {
                    event_type: event_type.to_owned(),
                    step,
                    reason: reason.to_owned(),
                })
                .inc();
        }
    }

    /// Counts a refused request.
    pub fn refuse(&self, status: u16) {
        self.ingest_refused
            .get_or_create(&StatusLabel { status })
            .inc();
    }
}
