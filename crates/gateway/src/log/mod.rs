//! The event log: every event type's partitions, append-only, offsets from 0.
//!
//! One interface, two backends:
//! - [`embedded`]: one machine, the gateway database in the data directory (group commit with
//!   fsync);
//! - [`crate::kafka::events`] (cluster mode): one Kafka topic per event type, with as many
//!   partitions as the type; the record key is the event's partition key, the value the event
//!   as the embedded log stores it, and the metadata is also in headers, so any Kafka client
//!   can consume the topics.
//!
//! Either way an append is answered only once its events are durable (fsynced, or acknowledged
//! by every in-sync replica), and a full queue refuses at once ([`LogError::Busy`]).

pub mod embedded;

use thiserror::Error;

#[derive(Debug, Error, Clone)]
pub enum LogError {
    #[error("the event log is busy: too many batches are waiting to be written")]
    Busy,
    #[error("writing the event log: {0}")]
    Storage(String),
    #[error("the event log has stopped")]
    Stopped,
}

/// One event of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: u32,
    /// The partition key (`hash` strategy): the Kafka record key in cluster mode.
    pub key: Option<String>,
    pub eid: String,
    pub occurred_at: String,
    /// The event as stored: its fields as published, then the enriched metadata.
    pub bytes: Vec<u8>,
}

/// What every event of one append shares: the metadata headers of cluster mode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchContext {
    /// The schema version the events were validated with.
    pub version: String,
    pub received_at: String,
    pub flow_id: String,
    /// The W3C trace context of the batch, stored in each event's metadata and Kafka headers.
    pub trace: Option<mm_trace::context::TraceHeaders>,
}

/// A read event: its offset and bytes.
pub type Stored = (u64, Vec<u8>);

enum Backend {
    Embedded(embedded::Embedded),
    #[cfg(feature = "kafka")]
    Kafka(Box<crate::kafka::events::KafkaEvents>),
}

/// The event log of this deployment.
pub struct EventLog {
    backend: Backend,
}

impl EventLog {
    /// The embedded log in `database`; starts its writer.
    pub fn open(database: &fjall::Database) -> Result<Self, LogError> {
        Ok(Self {
            backend: Backend::Embedded(embedded::Embedded::open(database)?),
        })
    }

    /// The log of cluster mode.
    #[cfg(feature = "kafka")]
    pub fn kafka(events: crate::kafka::events::KafkaEvents) -> Self {
        Self {
            backend: Backend::Kafka(Box::new(events)),
        }
    }

    /// Makes a type's storage ready before its first event (cluster mode: creates its topic,
    /// so consumers can subscribe before anything is published).
    pub async fn prepare(&self, event_type: &crate::EventType) -> Result<(), LogError> {
        #[cfg(not(feature = "kafka"))]
        let _ = event_type;
        match &self.backend {
            Backend::Embedded(_) => Ok(()),
            #[cfg(feature = "kafka")]
            Backend::Kafka(kafka) => {
                kafka
                    .ensure_topic(&event_type.name, event_type.partitions)
                    .await
            }
        }
    }

    /// Appends `records` of `event_type` and resolves with their offsets once they are
    /// durable. Fails as a whole: on an error none of the records counts as published.
    pub async fn append(
        &self,
        event_type: &crate::EventType,
        records: Vec<Record>,
        context: &BatchContext,
    ) -> Result<Vec<u64>, LogError> {
        match &self.backend {
            Backend::Embedded(embedded) => {
                let _ = context;
                embedded
                    .append(&event_type.name, records)?
                    .await
                    .map_err(|_| LogError::Stopped)?
            }
            #[cfg(feature = "kafka")]
            Backend::Kafka(kafka) => kafka.append(event_type, records, context).await,
        }
    }

    /// Up to `limit` events of a partition from `offset` on, and the offset to read next.
    /// Blocking.
    pub fn read(
        &self,
        event_type: &str,
        partition: u32,
        offset: u64,
        limit: usize,
    ) -> Result<(Vec<Stored>, u64), LogError> {
        match &self.backend {
            Backend::Embedded(embedded) => embedded.read(event_type, partition, offset, limit),
            #[cfg(feature = "kafka")]
            Backend::Kafka(kafka) => kafka.read(event_type, partition, offset, limit),
        }
    }

    /// The next offset of a partition. Blocking.
    pub fn end(&self, event_type: &str, partition: u32) -> Result<u64, LogError> {
        match &self.backend {
            Backend::Embedded(embedded) => embedded.end(event_type, partition),
            #[cfg(feature = "kafka")]
            Backend::Kafka(kafka) => kafka.end(event_type, partition),
        }
    }

    /// Removes the events of a partition received before `cutoff_us` (the newest stays).
    /// In cluster mode the topics' own retention applies and this removes nothing.
    pub fn expire(
        &self,
        event_type: &str,
        partition: u32,
        cutoff_us: i64,
    ) -> Result<u64, LogError> {
        match &self.backend {
            Backend::Embedded(embedded) => embedded.expire(event_type, partition, cutoff_us),
            #[cfg(feature = "kafka")]
            Backend::Kafka(_) => Ok(0),
        }
    }

    /// Changes when events may have become readable: after every durable append here, and
    /// in cluster mode also periodically (other instances publish too).
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        match &self.backend {
            Backend::Embedded(embedded) => embedded.watch(),
            #[cfg(feature = "kafka")]
            Backend::Kafka(kafka) => kafka.watch(),
        }
    }

    /// Stops the log after what is queued.
    pub fn close(&self) {
        match &self.backend {
            Backend::Embedded(embedded) => embedded.close(),
            #[cfg(feature = "kafka")]
            Backend::Kafka(kafka) => kafka.close(),
        }
    }
}
