//! Kafka adapters for cluster mode: client settings, the Java-compatible murmur2 partitioner,
//! partition checkpoints carried in committed-offset metadata, dead-letter records and
//! consumer lag. The wiring (which thread consumes what) lives in the server crate.

pub mod checkpoint;
pub mod murmur2;
pub mod settings;

pub use checkpoint::{CheckpointError, PartitionCheckpoint};
pub use murmur2::{murmur2, partition_for};
pub use settings::KafkaSettings;
