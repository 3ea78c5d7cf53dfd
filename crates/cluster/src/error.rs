//! Cluster mode's errors: each says which step failed and keeps its cause.

use std::borrow::Cow;

use mm_kafka::CheckpointError;
use mm_kafka::DeliveryError;
use mm_storage::StorageError;
use rdkafka::error::KafkaError;

/// Why a cluster-mode thread or set-up step failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A Kafka client call failed.
    #[error("{action}: {source}")]
    Kafka {
        action: Cow<'static, str>,
        #[source]
        source: KafkaError,
    },
    /// A record could not be delivered to the broker.
    #[error("{action}: {source}")]
    Delivery {
        action: &'static str,
        #[source]
        source: DeliveryError,
    },
    /// The local replica store failed.
    #[error("{action}: {source}")]
    Storage {
        action: &'static str,
        #[source]
        source: StorageError,
    },
    /// A checkpoint could not be encoded, or one read back is not ours.
    #[error("checkpoint {location}: {source}")]
    Checkpoint {
        location: String,
        #[source]
        source: CheckpointError,
    },
    /// An activity record could not be encoded.
    #[error("encoding an activity record: {0}")]
    Encode(#[from] serde_json::Error),
    /// A topic is missing, could not be created or is partitioned wrongly.
    #[error("topic {topic}: {detail}")]
    Topic { topic: String, detail: String },
    /// A step that waits on the broker or the replica did not finish in time.
    #[error("{0} timed out")]
    Timeout(Cow<'static, str>),
    /// The checkpoint writer thread is gone (it logged why).
    #[error("the checkpoint writer stopped")]
    WriterStopped,
    /// A cluster thread could not start.
    #[error("spawning the {thread} thread: {source}")]
    Spawn {
        thread: String,
        #[source]
        source: std::io::Error,
    },
    /// A cluster thread failed.
    #[error("the {thread} thread: {source}")]
    Thread {
        thread: String,
        #[source]
        source: Box<ClusterError>,
    },
    /// A cluster thread panicked; its panic message is in the log.
    #[error("the {0} thread panicked")]
    Panicked(String),
}

impl ClusterError {
    pub(crate) fn kafka(action: impl Into<Cow<'static, str>>) -> impl FnOnce(KafkaError) -> Self {
        let action = action.into();
        move |source| ClusterError::Kafka { action, source }
    }

    pub(crate) fn delivery(action: &'static str) -> impl FnOnce(DeliveryError) -> Self {
        move |source| ClusterError::Delivery { action, source }
    }

    pub(crate) fn storage(action: &'static str) -> impl FnOnce(StorageError) -> Self {
        move |source| ClusterError::Storage { action, source }
    }
}

/// Results of cluster mode.
pub type Result<T, E = ClusterError> = std::result::Result<T, E>;
