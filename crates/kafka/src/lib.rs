//! Kafka adapters for cluster mode: client settings, the Java-compatible murmur2 partitioner,
//! partition checkpoints carried in committed-offset metadata, a delivery-tracking producer,
//! dead-letter records. The wiring (which thread consumes what) lives in the server crate.

pub mod checkpoint;
pub mod dead_letter;
pub mod delivery;
pub mod murmur2;
pub mod settings;

pub use checkpoint::{CheckpointError, PartitionCheckpoint};
pub use dead_letter::DeadLetter;
pub use delivery::{DeliveryError, DeliveryTracker, TrackedProducer};
pub use murmur2::{murmur2, partition_for};
pub use settings::KafkaSettings;

/// Header names of the records Merchant Monitor writes.
pub mod header {
    /// Activity records: the same for every delivery of the same record.
    pub const DEDUPE_KEY: &str = "dedupe_key";
    /// Activity records: the window's rollup in the store's binary encoding (sketch included).
    pub const ROLLUP: &str = "mm.rollup";
    /// Activity records: `partition:offset` of the aggregation topic the rollup covers.
    pub const COVERS: &str = "mm.covers";
    /// Repartitioned records: where the record was read from.
    pub const SOURCE_PARTITION: &str = "mm.source.partition";
    pub const SOURCE_OFFSET: &str = "mm.source.offset";
}
