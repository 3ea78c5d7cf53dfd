//! Ingest, independent of HTTP: decode a body, validate each record, append the accepted ones
//! to the write-ahead log and wait until they are durable.

use std::sync::Arc;
use std::time::Duration;

use crate::{BodyError, IngestLimits, RejectedRecord, decode_body, process_body};
use mm_model::mapping::{EventParser, TimeBounds};
use mm_storage::wal::{AppendError, Wal};
use mm_telemetry::Metrics;
use serde::Serialize;
use tokio::sync::Semaphore;

use mm_model::time::now_us;

/// The outcome of a readable body.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IngestReply {
    /// Records accepted (durable when the answer arrives).
    pub accepted: usize,
    /// Records rejected.
    pub rejected: usize,
    /// One entry per rejected record; absent when none was.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<RejectedRecord>,
}

/// Why a whole request was refused.
#[derive(Debug, thiserror::Error)]
pub enum IngestFailure {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("the body holds no records")]
    Empty,
    #[error("too many ingest requests in flight; retry shortly")]
    TooManyRequests,
    #[error("the write-ahead log is saturated; retry shortly")]
    Overloaded,
    #[error("the raw-event archive is writing a backlog to disk; retry shortly")]
    ArchiveBehind,
    #[error("the Kafka producer's queue is full; retry shortly")]
    BrokerBusy,
    #[error("the broker did not take the records: {0}")]
    Broker(String),
    #[error("the server is shutting down")]
    Closed,
    #[error("storage failed: {0}")]
    Storage(String),
}

/// Where accepted records go.
pub enum IngestSink {
    /// The embedded write-ahead log: a batch is acknowledged once fsynced. New batches are
    /// refused while the archive is backlogged, so its memory stays bounded.
    Wal {
        wal: Wal,
        archive: Arc<mm_archive::Archive>,
    },
    /// Cluster mode: each record, as received, to the input topic keyed by merchant
    /// (idempotent producer, acks=all); acknowledged once the broker has every one.
    #[cfg(feature = "kafka")]
    Kafka {
        producer: rdkafka::producer::FutureProducer,
        topic: String,
    },
}

/// Shared ingest state.
pub struct Ingestor {
    parser: EventParser,
    sink: IngestSink,
    metrics: Arc<Metrics>,
    limits: IngestLimits,
    retention_us: i64,
    max_skew_us: i64,
    inflight: Semaphore,
}

impl std::fmt::Debug for Ingestor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Ingestor")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Ingestor {
    pub fn new(
        parser: EventParser,
        sink: IngestSink,
        metrics: Arc<Metrics>,
        limits: IngestLimits,
        retention: Duration,
        max_skew: Duration,
        max_inflight: usize,
    ) -> Self {
        Self {
            parser,
            sink,
            metrics,
            limits,
            retention_us: retention.as_micros() as i64,
            max_skew_us: max_skew.as_micros() as i64,
            inflight: Semaphore::new(max_inflight),
        }
    }

    /// A place among the requests in flight, held while a request's body is read and
    /// ingested; refused at once when all are taken (the caller answers 429).
    pub fn try_admit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, IngestFailure> {
        self.inflight
            .try_acquire()
            .map_err(|_| IngestFailure::TooManyRequests)
    }

    /// Ingests one request body; resolves once accepted records are durable.
    pub async fn ingest(
        &self,
        content_encoding: Option<&str>,
        body: &[u8],
    ) -> Result<IngestReply, IngestFailure> {
        let _permit = self.try_admit()?;
        self.ingest_admitted(content_encoding, body).await
    }

    /// [`Ingestor::ingest`] for a caller that already holds a place from
    /// [`Ingestor::try_admit`].
    pub async fn ingest_admitted(
        &self,
        content_encoding: Option<&str>,
        body: &[u8],
    ) -> Result<IngestReply, IngestFailure> {
        if let IngestSink::Wal { archive, .. } = &self.sink
            && archive.backlogged()
        {
            return Err(IngestFailure::ArchiveBehind);
        }
        self.metrics.ingest_bytes.inc_by(body.len() as u64);
        let decoded = decode_body(content_encoding, body, self.limits.max_decoded_bytes)?;
        let bounds = TimeBounds::around(now_us(), self.retention_us, self.max_skew_us);
        let (accepted, rejected) = match &self.sink {
            IngestSink::Wal { wal, .. } => {
                let processed = process_body(&self.parser, &decoded, bounds, &self.limits)?;
                drop(decoded);
                if processed.records == 0 {
                    return Err(IngestFailure::Empty);
                }
                self.count_rejections(&processed.rejected);
                if processed.accepted > 0 {
                    let ticket =
                        wal.try_append(processed.payload)
                            .map_err(|error| match error {
                                AppendError::Overloaded => IngestFailure::Overloaded,
                                AppendError::Closed => IngestFailure::Closed,
                                AppendError::Failed(detail) => IngestFailure::Storage(detail),
                            })?;
                    match ticket.await {
                        Ok(Ok(_lsn)) => {}
                        Ok(Err(AppendError::Failed(detail))) => {
                            return Err(IngestFailure::Storage(detail));
                        }
                        Ok(Err(_)) | Err(_) => return Err(IngestFailure::Closed),
                    }
                }
                (processed.accepted, processed.rejected)
            }
            #[cfg(feature = "kafka")]
            IngestSink::Kafka { producer, topic } => {
                self.send_to_topic(producer, topic, decoded, bounds).await?
            }
        };
        if accepted > 0 {
            self.metrics.ingest_events.inc_by(accepted as u64);
        }
        Ok(IngestReply {
            accepted,
            rejected: rejected.len(),
            errors: rejected,
        })
    }

    /// Cluster mode: each accepted record, as received, to the input topic keyed by merchant;
    /// returns once the broker has every one.
    #[cfg(feature = "kafka")]
    async fn send_to_topic(
        &self,
        producer: &rdkafka::producer::FutureProducer,
        topic: &str,
        decoded: std::borrow::Cow<'_, [u8]>,
        bounds: TimeBounds,
    ) -> Result<(usize, Vec<RejectedRecord>), IngestFailure> {
        let mut deliveries = Vec::new();
        let mut refused = None;
        let (records, rejected) = crate::for_each_record(
            &self.parser,
            &decoded,
            bounds,
            &self.limits,
            |event, raw| {
                if refused.is_some() {
                    return;
                }
                let record = rdkafka::producer::FutureRecord::to(topic)
                    .key(event.merchant.as_bytes())
                    .payload(raw);
                match producer.send_result(record) {
                    Ok(delivery) => deliveries.push(delivery),
                    Err((error, _)) => refused = Some(error),
                }
            },
        )?;
        drop(decoded);
        if records == 0 {
            return Err(IngestFailure::Empty);
        }
        self.count_rejections(&rejected);
        let accepted = deliveries.len();
        let mut failure = refused.map(|error| match error {
            rdkafka::error::KafkaError::MessageProduction(
                rdkafka::types::RDKafkaErrorCode::QueueFull,
            ) => IngestFailure::BrokerBusy,
            other => IngestFailure::Broker(other.to_string()),
        });
        // Every record sent must be on the broker before anything is acknowledged.
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => {
                    failure.get_or_insert(IngestFailure::Broker(error.to_string()));
                }
                Err(_) => {
                    failure.get_or_insert(IngestFailure::Closed);
                }
            }
        }
        if let Some(failure) = failure {
            return Err(failure);
        }
        Ok((accepted, rejected))
    }

    fn count_rejections(&self, rejected: &[RejectedRecord]) {
        for record in rejected {
            self.metrics.reject(record.code);
        }
    }
}
