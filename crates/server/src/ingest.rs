//! Ingest, independent of HTTP: decode a body, validate each record, append the accepted ones
//! to the write-ahead log and wait until they are durable.

use std::sync::Arc;
use std::time::Duration;

use mm_gateway::{BodyError, IngestLimits, RejectedRecord, decode_body, process_body};
use mm_model::mapping::{EventParser, TimeBounds};
use mm_storage::wal::{AppendError, Wal};
use mm_telemetry::Metrics;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::pipeline::now_us;

/// The outcome of a readable body.
#[derive(Debug, Serialize)]
pub struct IngestReply {
    pub accepted: usize,
    pub rejected: usize,
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
    #[error("the server is shutting down")]
    Closed,
    #[error("storage failed: {0}")]
    Storage(String),
}

/// Shared ingest state.
pub struct Ingestor {
    parser: EventParser,
    wal: Wal,
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
        wal: Wal,
        metrics: Arc<Metrics>,
        limits: IngestLimits,
        retention: Duration,
        max_skew: Duration,
        max_inflight: usize,
    ) -> Self {
        Self {
            parser,
            wal,
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
        self.metrics.ingest_bytes.inc_by(body.len() as u64);
        let decoded = decode_body(content_encoding, body, self.limits.max_decoded_bytes)?;
        let now = now_us();
        let bounds = TimeBounds {
            min_ts_us: now - self.retention_us,
            max_ts_us: now + self.max_skew_us,
        };
        let processed = process_body(&self.parser, &decoded, bounds, &self.limits)?;
        drop(decoded);
        if processed.records == 0 {
            return Err(IngestFailure::Empty);
        }
        for rejected in &processed.rejected {
            self.metrics.reject(rejected.code);
        }
        if processed.accepted > 0 {
            let ticket = self
                .wal
                .try_append(processed.payload)
                .map_err(|error| match error {
                    AppendError::Overloaded => IngestFailure::Overloaded,
                    AppendError::Closed => IngestFailure::Closed,
                    AppendError::Failed(detail) => IngestFailure::Storage(detail),
                })?;
            match ticket.await {
                Ok(Ok(_lsn)) => {}
                Ok(Err(AppendError::Failed(detail))) => return Err(IngestFailure::Storage(detail)),
                Ok(Err(_)) | Err(_) => return Err(IngestFailure::Closed),
            }
            self.metrics.ingest_events.inc_by(processed.accepted as u64);
        }
        Ok(IngestReply {
            accepted: processed.accepted,
            rejected: processed.rejected.len(),
            errors: processed.rejected,
        })
    }
}
