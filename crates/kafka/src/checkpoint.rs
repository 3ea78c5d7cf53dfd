//! A partition checkpoint: one record in the checkpoint topic, in the partition of the same
//! number as the aggregation partition it describes, written once the activity records it
//! covers are on the broker. The last record of a checkpoint-topic partition is therefore the
//! latest complete checkpoint of that aggregation partition.
//!
//! `next` says "every record before it is reflected downstream"; the rest says how to rebuild
//! the windows still open there: re-read `[replay, next)`, skipping duplicates with `sources`
//! (the deduplication state as of `replay`), and keep only the calls whose window the
//! watermark `watermark_us` had not closed. See ARCHITECTURE.md.
//!
//! (Committed-offset metadata would carry the same in the commit itself, but not every
//! Kafka-protocol broker keeps it; the test broker does not.)

use serde::{Deserialize, Serialize};

/// Largest encoded checkpoint; the deduplication state grows with the input's partitions.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

/// What a committed offset carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionCheckpoint {
    /// Format version.
    pub v: u32,
    /// The aggregation-topic offset the checkpoint covers up to (exclusive).
    pub next: i64,
    /// Where to start re-reading to rebuild the open windows (≤ the committed offset).
    pub replay: i64,
    /// The partition's watermark at the committed offset (µs).
    #[serde(rename = "wm")]
    pub watermark_us: i64,
    /// The largest event time seen at the committed offset (µs).
    #[serde(rename = "max")]
    pub max_event_us: i64,
    /// For a repartitioned input: per source partition, the highest source offset applied
    /// before `replay`. Records at or below it are duplicates.
    #[serde(rename = "src", default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<(i32, i64)>,
}

/// A checkpoint that cannot be stored or read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    #[error("a checkpoint of {0} bytes exceeds the {MAX_METADATA_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("not a Merchant Monitor checkpoint: {0}")]
    Foreign(String),
}

impl PartitionCheckpoint {
    pub const VERSION: u32 = 1;

    /// The metadata string to commit.
    pub fn encode(&self) -> Result<String, CheckpointError> {
        let text = serde_json::to_string(self).expect("a checkpoint always serializes");
        if text.len() > MAX_METADATA_BYTES {
            return Err(CheckpointError::TooLarge(text.len()));
        }
        Ok(text)
    }

    /// Reads committed metadata; `Ok(None)` for an empty string (an offset committed by
    /// something else, or before any checkpoint).
    pub fn decode(metadata: &str) -> Result<Option<Self>, CheckpointError> {
        if metadata.is_empty() {
            return Ok(None);
        }
        let checkpoint: Self = serde_json::from_str(metadata)
            .map_err(|error| CheckpointError::Foreign(error.to_string()))?;
        if checkpoint.v != Self::VERSION {
            return Err(CheckpointError::Foreign(format!(
                "version {} (this build reads {})",
                checkpoint.v,
                Self::VERSION
            )));
        }
        Ok(Some(checkpoint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(replay in 0i64..i64::MAX, watermark in any::<i64>(), max in any::<i64>(),
                       sources in proptest::collection::vec((0i32..1000, 0i64..i64::MAX), 0..40)) {
            let checkpoint = PartitionCheckpoint { v: 1, next: replay.saturating_add(7), replay, watermark_us: watermark, max_event_us: max, sources };
            let text = checkpoint.encode().expect("fits");
            prop_assert_eq!(PartitionCheckpoint::decode(&text).expect("reads"), Some(checkpoint));
        }
    }

    #[test]
    fn empty_metadata_is_no_checkpoint_and_foreign_metadata_is_an_error() {
        assert_eq!(PartitionCheckpoint::decode(""), Ok(None));
        assert!(matches!(
            PartitionCheckpoint::decode("committed by a script"),
            Err(CheckpointError::Foreign(_))
        ));
        assert!(matches!(
            PartitionCheckpoint::decode(r#"{"v":9,"next":0,"replay":0,"wm":0,"max":0}"#),
            Err(CheckpointError::Foreign(message)) if message.contains("version 9")
        ));
    }

    #[test]
    fn too_many_sources_are_refused_not_truncated() {
        let checkpoint = PartitionCheckpoint {
            v: 1,
            next: 2,
            replay: 1,
            watermark_us: 1,
            max_event_us: 1,
            sources: (0..4000).map(|partition| (partition, i64::MAX)).collect(),
        };
        assert!(matches!(
            checkpoint.encode(),
            Err(CheckpointError::TooLarge(_))
        ));
    }
}
