//! Ingest, independent of HTTP: decode a body, validate each record, append the accepted ones
//! to the write-ahead log and wait until they are durable.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

use crate::{BodyError, IngestLimits, RejectedRecord, Rejections, decode_body, process_body};
use mm_http::Reservation;
use mm_model::mapping::RejectReason;
use mm_model::mapping::{EventParser, TimeBounds};
use mm_storage::idempotency::{Claim, RequestRegistry};
use mm_storage::rollups::StoredRequest;
use mm_storage::wal::{self, AppendError, Wal};
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
    /// The first rejected records (up to `ingest.max_reported_errors`), in body order; absent
    /// when none was.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<RejectedRecord>,
    /// Rejected records not listed in `errors`; absent when every one is.
    #[serde(skip_serializing_if = "is_zero")]
    pub errors_omitted: usize,
    /// Every rejected record, counted by code; absent when none was.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rejected_by_code: BTreeMap<RejectReason, usize>,
}

fn is_zero(count: &usize) -> bool {
    *count == 0
}

/// What a request is answered.
#[derive(Debug)]
pub enum IngestAnswer {
    /// Processed now.
    Fresh(IngestReply),
    /// A retry of a request answered before (same `Idempotency-Key`, same body): its first
    /// answer, as it was sent; nothing was stored again.
    Replayed { status: u16, body: Arc<[u8]> },
}

/// A fingerprint of a request body and its encoding, to tell a retry from another request
/// that reuses a key.
fn fingerprint(content_encoding: Option<&str>, body: &[u8]) -> u64 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(content_encoding.unwrap_or_default().as_bytes());
    hasher.update(&[0]);
    hasher.update(body);
    (u64::from(hasher.finalize()) << 32) | (body.len() as u64 & 0xffff_ffff)
}

impl IngestReply {
    /// 200 when every record was accepted, 207 otherwise.
    pub fn status(&self) -> u16 {
        if self.rejected == 0 { 200 } else { 207 }
    }

    fn new(accepted: usize, rejected: Rejections) -> Self {
        Self {
            accepted,
            rejected: rejected.total,
            errors_omitted: rejected.omitted(),
            errors: rejected.listed,
            rejected_by_code: rejected.by_code,
        }
    }
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
    /// Storage cannot write for now (the disk is full, or a write failed); nothing of the
    /// request was stored and ingest resumes by itself once writes succeed again.
    #[error("{}", storage_unavailable_message(*disk_full, detail))]
    StorageUnavailable { disk_full: bool, detail: String },
    #[error("the ingest task stopped before it finished")]
    Aborted,
    #[error("a request with this Idempotency-Key is in progress; retry shortly")]
    KeyInProgress,
    #[error(
        "this Idempotency-Key was used for a different request (another body); use a new key for a new request"
    )]
    KeyConflict,
    #[error(
        "Idempotency-Key is honoured in embedded mode only; this instance runs in cluster mode"
    )]
    KeysUnsupported,
}

/// Where accepted records go.
pub enum IngestSink {
    /// The embedded write-ahead log: a batch is acknowledged once fsynced. New batches are
    /// refused while the archive is backlogged, so its memory stays bounded.
    Wal {
        wal: Wal,
        archive: Arc<mm_archive::Archive>,
        health: Arc<mm_storage::health::StorageHealth>,
        /// Requests answered once (`Idempotency-Key`).
        requests: Arc<RequestRegistry>,
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
    inflight: Arc<Semaphore>,
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
            inflight: Arc::new(Semaphore::new(max_inflight)),
        }
    }

    /// A place among the requests in flight, held while a request's body is read and
    /// ingested; refused at once when all are taken (the caller answers 429).
    pub fn try_admit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, IngestFailure> {
        self.inflight
            .try_acquire()
            .map_err(|_| IngestFailure::TooManyRequests)
    }

    /// Ingests one request body; resolves once accepted records are durable. Buffers the
    /// body needs are reserved from `reservation`.
    pub async fn ingest(
        &self,
        content_encoding: Option<&str>,
        body: &[u8],
        reservation: &mut Reservation,
    ) -> Result<IngestAnswer, IngestFailure> {
        let _permit = self.try_admit()?;
        self.ingest_admitted(content_encoding, body, reservation, None)
            .await
    }

    /// Ingests one request body to the end even if the caller goes away (a client that
    /// closes its connection right after sending): what is appended is always counted, and
    /// its answer is always known. Holds a place among the requests in flight and the
    /// body's reservation until done.
    ///
    /// `key` is the request's `Idempotency-Key`, scoped to the caller: a request whose key
    /// was answered within the idempotency window gets that answer and stores nothing.
    pub async fn ingest_detached(
        self: &Arc<Self>,
        content_encoding: Option<String>,
        body: bytes::Bytes,
        mut reservation: Reservation,
        key: Option<String>,
    ) -> Result<IngestAnswer, IngestFailure> {
        let permit = self.clone().try_admit_owned()?;
        let ingestor = self.clone();
        // The task goes on inside the request's span.
        let task = tokio::spawn(
            async move {
                let _permit = permit;
                ingestor
                    .ingest_admitted(
                        content_encoding.as_deref(),
                        &body,
                        &mut reservation,
                        key.as_deref(),
                    )
                    .await
            }
            .instrument(tracing::Span::current()),
        );
        task.await.map_err(|_| IngestFailure::Aborted)?
    }

    /// [`Ingestor::try_admit`] for a place that moves into a task.
    pub fn try_admit_owned(
        self: Arc<Self>,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, IngestFailure> {
        self.inflight
            .clone()
            .try_acquire_owned()
            .map_err(|_| IngestFailure::TooManyRequests)
    }

    /// [`Ingestor::ingest`] for a caller that already holds a place from
    /// [`Ingestor::try_admit`].
    pub async fn ingest_admitted(
        &self,
        content_encoding: Option<&str>,
        body: &[u8],
        reservation: &mut Reservation,
        key: Option<&str>,
    ) -> Result<IngestAnswer, IngestFailure> {
        if let IngestSink::Wal { archive, .. } = &self.sink
            && archive.backlogged()
        {
            return Err(IngestFailure::ArchiveBehind);
        }
        self.metrics.ingest_bytes.inc_by(body.len() as u64);
        let decoded = decode_body(
            content_encoding,
            body,
            self.limits.max_decoded_bytes,
            reservation,
        )?;
        let now = now_us();
        let bounds = TimeBounds::around(now, self.retention_us, self.max_skew_us);
        let reply = match &self.sink {
            IngestSink::Wal {
                wal,
                health,
                requests,
                ..
            } => {
                // Storage that cannot write refuses at once: nothing would be kept.
                if !health.writable() {
                    let failures = health.failures();
                    let first = failures.first();
                    return Err(IngestFailure::StorageUnavailable {
                        disk_full: first.is_some_and(|failure| failure.disk_full),
                        detail: first.map_or_else(String::new, |failure| failure.detail.clone()),
                    });
                }
                let claim = match key {
                    None => None,
                    Some(key) => {
                        let fingerprint = fingerprint(content_encoding, body);
                        match requests
                            .claim(key, fingerprint, now)
                            .map_err(|error| IngestFailure::Storage(error.to_string()))?
                        {
                            Claim::Fresh(guard) => Some((guard, fingerprint)),
                            Claim::Answered(stored) => {
                                return Ok(IngestAnswer::Replayed {
                                    status: stored.status,
                                    body: stored.reply,
                                });
                            }
                            Claim::InProgress => return Err(IngestFailure::KeyInProgress),
                            Claim::Conflict => return Err(IngestFailure::KeyConflict),
                        }
                    }
                };
                let processed =
                    process_body(&self.parser, &decoded, bounds, &self.limits, reservation)?;
                drop(decoded);
                if processed.records == 0 {
                    return Err(IngestFailure::Empty);
                }
                self.count_rejections(&processed.rejected);
                let reply = IngestReply::new(processed.accepted, processed.rejected);
                if processed.accepted > 0 {
                    let mut payload = processed.payload;
                    // The answer travels with the events: durable exactly when they are.
                    let record = match claim {
                        Some((guard, fingerprint)) => {
                            let stored = StoredRequest {
                                key: guard.key().to_owned(),
                                fingerprint,
                                at_us: now,
                                status: reply.status(),
                                reply: Arc::from(
                                    serde_json::to_vec(&reply).expect("a reply serializes"),
                                ),
                            };
                            wal::key_batch(&mut payload, &stored.as_record())
                                .map_err(|error| IngestFailure::Storage(error.to_string()))?;
                            Some((guard, stored))
                        }
                        None => None,
                    };
                    let span = tracing::info_span!(
                        "wal.append",
                        otel.name = "wal append",
                        wal.bytes = payload.len() as i64,
                        wal.events = processed.accepted as i64,
                        wal.lsn = tracing::field::Empty,
                    );
                    let ticket = span
                        .in_scope(|| wal.try_append(payload))
                        .map_err(append_failure)?;
                    let lsn = match ticket.instrument(span.clone()).await {
                        Ok(Ok(lsn)) => lsn,
                        Ok(Err(error)) => return Err(append_failure(error)),
                        Err(_) => return Err(IngestFailure::Closed),
                    };
                    span.record("wal.lsn", lsn as i64);
                    if let Some((guard, stored)) = record {
                        guard.answered(stored, lsn);
                    }
                }
                reply
            }
            #[cfg(feature = "kafka")]
            IngestSink::Kafka { producer, topic } => {
                if key.is_some() {
                    return Err(IngestFailure::KeysUnsupported);
                }
                let (accepted, rejected) =
                    self.send_to_topic(producer, topic, decoded, bounds).await?;
                IngestReply::new(accepted, rejected)
            }
        };
        if reply.accepted > 0 {
            self.metrics.ingest_events.inc_by(reply.accepted as u64);
        }
        Ok(IngestAnswer::Fresh(reply))
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
    ) -> Result<(usize, Rejections), IngestFailure> {
        let mut deliveries = Vec::new();
        let mut refused = None;
        // Traced: each record carries the request's trace context, so the aggregating
        // consumer's span continues it.
        let span = tracing::info_span!(
            "kafka.produce",
            otel.name = format!("{topic} publish"),
            otel.kind = "producer",
            messaging.system = "kafka",
            messaging.operation.type = "publish",
            messaging.destination.name = topic,
        );
        let trace = if mm_trace::exporting() {
            mm_trace::context::outgoing(&span, None)
        } else {
            None
        };
        let (records, rejected) = span.in_scope(|| {
            crate::for_each_record(
                &self.parser,
                &decoded,
                bounds,
                &self.limits,
                |event, raw| {
                    if refused.is_some() {
                        return;
                    }
                    let mut record = rdkafka::producer::FutureRecord::to(topic)
                        .key(event.merchant.as_bytes())
                        .payload(raw);
                    if trace.is_some() {
                        record = record.headers(mm_kafka::trace::with_context(
                            rdkafka::message::OwnedHeaders::new_with_capacity(2),
                            trace.as_ref(),
                        ));
                    }
                    match producer.send_result(record) {
                        Ok(delivery) => deliveries.push(delivery),
                        Err((error, _)) => refused = Some(error),
                    }
                },
            )
        })?;
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
        // Every record sent must be on the broker before anything is acknowledged (inside the
        // producer span: it ends when the broker has them).
        async {
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
        }
        .instrument(span)
        .await;
        if let Some(failure) = failure {
            return Err(failure);
        }
        Ok((accepted, rejected))
    }

    fn count_rejections(&self, rejected: &Rejections) {
        for (code, count) in &rejected.by_code {
            self.metrics.reject_many(*code, *count as u64);
        }
    }
}

fn append_failure(error: AppendError) -> IngestFailure {
    match error {
        AppendError::Overloaded => IngestFailure::Overloaded,
        AppendError::Closed => IngestFailure::Closed,
        AppendError::Unavailable { disk_full, detail } => {
            IngestFailure::StorageUnavailable { disk_full, detail }
        }
        AppendError::Failed(detail) => IngestFailure::Storage(detail),
    }
}

fn storage_unavailable_message(disk_full: bool, detail: &str) -> String {
    if disk_full {
        format!(
            "the server's disk is full: nothing of this request was stored; ingest resumes by itself once space is freed ({detail})"
        )
    } else {
        format!(
            "the server cannot write to its storage: nothing of this request was stored; ingest resumes by itself once writes succeed ({detail})"
        )
    }
}
