//! The group-commit writer thread.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{FRAME_HEADER_BYTES, frame_crc, list_segments, segment_name};
use crate::StorageError;
use crate::health::StorageHealth;

/// Called with the duration of every fsync, for metrics.
pub type SyncObserver = Arc<dyn Fn(Duration, usize) + Send + Sync>;

/// Called with each batch once it is durable and before it is acknowledged, in LSN order.
pub type DurableObserver = Arc<dyn Fn(u64, &Arc<Vec<u8>>) + Send + Sync>;

/// Told the log's size on disk (every segment) after each group commit.
pub type SizeObserver = Arc<dyn Fn(u64) + Send + Sync>;

/// Writer settings.
#[derive(Clone)]
pub struct WalConfig {
    /// Directory of the segment files.
    pub dir: PathBuf,
    /// Roll to a new segment past this many bytes.
    pub segment_bytes: u64,
    /// Appends waiting for the writer before new ones are refused as overload.
    pub queue_capacity: usize,
    /// Most payload bytes written under one fsync.
    pub max_group_bytes: usize,
    /// Observes fsync latency and group size.
    pub on_sync: Option<SyncObserver>,
    /// Sees every batch after it is durable and before its append is acknowledged.
    pub on_durable: Option<DurableObserver>,
    /// Told the log's size on disk.
    pub on_size: Option<SizeObserver>,
    /// Told when a write fails and when writes succeed again.
    pub health: Option<Arc<StorageHealth>>,
}

impl std::fmt::Debug for WalConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("WalConfig")
            .field("dir", &self.dir)
            .field("segment_bytes", &self.segment_bytes)
            .field("queue_capacity", &self.queue_capacity)
            .finish_non_exhaustive()
    }
}

impl WalConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes: 64 * 1024 * 1024,
            queue_capacity: 256,
            max_group_bytes: 8 * 1024 * 1024,
            on_sync: None,
            on_durable: None,
            on_size: None,
            health: None,
        }
    }
}

/// A batch that is durable, handed to the consumer in LSN order.
#[derive(Debug, Clone)]
pub struct CommittedBatch {
    pub lsn: u64,
    pub payload: Arc<Vec<u8>>,
}

/// Why an append was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("the write-ahead log queue is full")]
    Overloaded,
    #[error("the write-ahead log is closed")]
    Closed,
    /// A write failed and was undone: nothing of the batch is stored, and the log takes
    /// appends again once the cause is gone (the disk has room again).
    #[error("the write-ahead log could not write: {detail}")]
    Unavailable { disk_full: bool, detail: String },
    /// A write failed and could not be undone: the log takes no more appends.
    #[error("the write-ahead log failed: {0}")]
    Failed(String),
}

struct Request {
    payload: Arc<Vec<u8>>,
    done: oneshot::Sender<Result<u64, AppendError>>,
    /// The span that appended (a request's): the fsync span links to it.
    span: tracing::Span,
}

/// Handle to the writer thread; cheap to clone. The thread stops when every handle is gone.
#[derive(Clone)]
pub struct Wal {
    request_tx: SyncSender<Request>,
    thread: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Wal").finish_non_exhaustive()
    }
}

impl Wal {
    /// Starts the writer. New frames get LSNs from `next_lsn` on. Durable batches go to
    /// `committed_tx`; segments entirely at or below `checkpointed_lsn` are deleted on roll.
    pub fn start(
        config: WalConfig,
        next_lsn: u64,
        committed_tx: SyncSender<CommittedBatch>,
        checkpointed_lsn: Arc<AtomicU64>,
    ) -> Result<Self, StorageError> {
        std::fs::create_dir_all(&config.dir)
            .map_err(|source| StorageError::io("create wal directory", &config.dir, source))?;
        let (request_tx, request_rx) = std::sync::mpsc::sync_channel(config.queue_capacity);
        let segment = Segment::create(&config.dir, next_lsn)?;
        let mut writer = Writer {
            config,
            next_lsn,
            segment,
            committed_tx,
            checkpointed_lsn,
            buffer: Vec::with_capacity(1 << 20),
            closed_bytes: 0,
        };
        writer.closed_bytes = writer.closed_segment_bytes();
        if let Some(observer) = &writer.config.on_size {
            observer(writer.closed_bytes);
        }
        let thread = std::thread::Builder::new()
            .name("mm-wal".into())
            .spawn(move || writer.run(request_rx))
            .map_err(|source| StorageError::io("spawn wal thread", Path::new("."), source))?;
        Ok(Self {
            request_tx,
            thread: Arc::new(std::sync::Mutex::new(Some(thread))),
        })
    }

    /// Queues a batch payload. The receiver resolves with its LSN once it is durable.
    /// Refuses at once, without waiting, when the queue is full.
    pub fn try_append(
        &self,
        payload: Vec<u8>,
    ) -> Result<oneshot::Receiver<Result<u64, AppendError>>, AppendError> {
        let (done, receiver) = oneshot::channel();
        let request = Request {
            payload: Arc::new(payload),
            done,
            span: tracing::Span::current(),
        };
        match self.request_tx.try_send(request) {
            Ok(()) => Ok(receiver),
            Err(TrySendError::Full(_)) => Err(AppendError::Overloaded),
            Err(TrySendError::Disconnected(_)) => Err(AppendError::Closed),
        }
    }

    /// Queues a batch, waiting for room (for replay tools and tests, not request handlers).
    pub fn append_blocking(
        &self,
        payload: Vec<u8>,
    ) -> Result<oneshot::Receiver<Result<u64, AppendError>>, AppendError> {
        let (done, receiver) = oneshot::channel();
        self.request_tx
            .send(Request {
                payload: Arc::new(payload),
                done,
                span: tracing::Span::current(),
            })
            .map_err(|_| AppendError::Closed)?;
        Ok(receiver)
    }

    /// Drops this handle and waits for the writer to finish if it was the last one.
    pub fn shutdown(self) {
        let thread = self.thread.clone();
        drop(self);
        if Arc::strong_count(&thread) == 1
            && let Some(handle) = thread.lock().ok().and_then(|mut guard| guard.take())
        {
            let _ = handle.join();
        }
    }
}

struct Segment {
    file: File,
    path: PathBuf,
    first_lsn: u64,
    bytes: u64,
}

impl Segment {
    fn create(dir: &Path, first_lsn: u64) -> Result<Self, StorageError> {
        let path = dir.join(segment_name(first_lsn));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| StorageError::io("create wal segment", &path, source))?;
        let bytes = file
            .metadata()
            .map_err(|source| StorageError::io("stat wal segment", &path, source))?
            .len();
        // Make the new file's directory entry durable too.
        if let Ok(directory) = File::open(dir) {
            let _ = directory.sync_all();
        }
        Ok(Self {
            file,
            path,
            first_lsn,
            bytes,
        })
    }
}

struct Writer {
    config: WalConfig,
    next_lsn: u64,
    segment: Segment,
    committed_tx: SyncSender<CommittedBatch>,
    checkpointed_lsn: Arc<AtomicU64>,
    buffer: Vec<u8>,
    /// Bytes of the segments before the current one still on disk.
    closed_bytes: u64,
}

impl Writer {
    fn run(&mut self, request_rx: Receiver<Request>) {
        let mut group: Vec<Request> = Vec::new();
        while let Ok(first) = request_rx.recv() {
            let mut group_bytes = first.payload.len();
            group.push(first);
            while group_bytes < self.config.max_group_bytes {
                match request_rx.try_recv() {
                    Ok(request) => {
                        group_bytes += request.payload.len();
                        group.push(request);
                    }
                    Err(_) => break,
                }
            }
            let first_lsn = self.next_lsn;
            match self.commit_group(&mut group) {
                Ok(()) => {
                    if let Some(health) = &self.config.health
                        && health.report_recovered("wal")
                    {
                        tracing::info!("write-ahead log writes again");
                    }
                }
                Err(error) => {
                    if let Err(fatal) = self.undo_group(first_lsn, &error, &mut group) {
                        tracing::error!(%error, %fatal, "write-ahead log write failed and could not be undone; refusing further appends");
                        let message = fatal.to_string();
                        for request in group.drain(..) {
                            let _ = request.done.send(Err(AppendError::Failed(message.clone())));
                        }
                        // Fail everything still queued, then stop: the log's tail is in doubt.
                        while let Ok(request) = request_rx.try_recv() {
                            let _ = request.done.send(Err(AppendError::Failed(message.clone())));
                        }
                        return;
                    }
                    continue;
                }
            }
            if self.segment.bytes >= self.config.segment_bytes
                && let Err(error) = self.roll()
            {
                // The current segment stays in use; the next roll tries again.
                tracing::warn!(%error, "could not start a new write-ahead log segment");
            }
        }
        let _ = self.segment.file.sync_all();
    }

    /// Takes back a group whose write failed: the segment is cut back to its last durable
    /// length and the group's LSNs are given to the next appends; every request of the group
    /// is told nothing was stored.
    fn undo_group(
        &mut self,
        first_lsn: u64,
        error: &StorageError,
        group: &mut Vec<Request>,
    ) -> Result<(), StorageError> {
        let path = self.segment.path.clone();
        self.segment
            .file
            .set_len(self.segment.bytes)
            .and_then(|()| self.segment.file.sync_all())
            .map_err(|source| StorageError::io("cut back wal segment", &path, source))?;
        self.next_lsn = first_lsn;
        let disk_full = error.is_disk_full();
        let detail = if disk_full {
            format!("the disk is full ({error})")
        } else {
            error.to_string()
        };
        let news = self
            .config
            .health
            .as_ref()
            .is_none_or(|health| health.report_failure("wal", disk_full, detail.clone()));
        if news {
            tracing::error!(%error, "write-ahead log write failed; undone, refusing appends until writes succeed");
        }
        for request in group.drain(..) {
            let _ = request.done.send(Err(AppendError::Unavailable {
                disk_full,
                detail: detail.clone(),
            }));
        }
        Ok(())
    }

    fn commit_group(&mut self, group: &mut Vec<Request>) -> Result<(), StorageError> {
        // One span per group commit, linked to the spans that appended to it.
        let span = tracing::info_span!(
            parent: None,
            "wal.fsync",
            otel.name = "wal fsync",
            wal.batches = group.len() as i64,
            wal.bytes = tracing::field::Empty,
        );
        if !span.is_disabled() {
            for request in group.iter() {
                span.follows_from(&request.span);
            }
        }
        let _entered = span.enter();
        self.buffer.clear();
        let first_lsn = self.next_lsn;
        for request in group.iter() {
            let lsn = self.next_lsn;
            self.next_lsn += 1;
            let payload = &request.payload;
            self.buffer
                .extend_from_slice(&(payload.len() as u32).to_le_bytes());
            self.buffer
                .extend_from_slice(&frame_crc(lsn, payload).to_le_bytes());
            self.buffer.extend_from_slice(&lsn.to_le_bytes());
            self.buffer.extend_from_slice(payload);
        }
        debug_assert!(self.buffer.len() >= FRAME_HEADER_BYTES * group.len());
        span.record("wal.bytes", self.buffer.len() as i64);
        self.segment
            .file
            .write_all(&self.buffer)
            .map_err(|source| StorageError::io("write wal segment", &self.segment.path, source))?;
        let started = Instant::now();
        self.segment
            .file
            .sync_data()
            .map_err(|source| StorageError::io("fsync wal segment", &self.segment.path, source))?;
        if let Some(observer) = &self.config.on_sync {
            observer(started.elapsed(), group.len());
        }
        self.segment.bytes += self.buffer.len() as u64;
        if let Some(observer) = &self.config.on_size {
            observer(self.closed_bytes + self.segment.bytes);
        }
        for (offset, request) in group.drain(..).enumerate() {
            let lsn = first_lsn + offset as u64;
            if let Some(observer) = &self.config.on_durable {
                observer(lsn, &request.payload);
            }
            // The consumer may be slower than the disk: waiting here pushes back on
            // appenders through the bounded queue instead of buffering without limit.
            let forwarded = self.committed_tx.send(CommittedBatch {
                lsn,
                payload: request.payload,
            });
            let outcome = match forwarded {
                Ok(()) => Ok(lsn),
                Err(_) => Err(AppendError::Closed),
            };
            let _ = request.done.send(outcome);
        }
        Ok(())
    }

    fn roll(&mut self) -> Result<(), StorageError> {
        self.segment
            .file
            .sync_all()
            .map_err(|source| StorageError::io("fsync wal segment", &self.segment.path, source))?;
        self.segment = Segment::create(&self.config.dir, self.next_lsn)?;
        self.delete_checkpointed();
        self.closed_bytes = self.closed_segment_bytes();
        Ok(())
    }

    /// The size of every segment but the current one.
    fn closed_segment_bytes(&self) -> u64 {
        list_segments(&self.config.dir)
            .map(|segments| {
                segments
                    .iter()
                    .filter(|(first_lsn, _)| *first_lsn != self.segment.first_lsn)
                    .filter_map(|(_, path)| std::fs::metadata(path).ok())
                    .map(|metadata| metadata.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Deletes segments whose every frame is covered by the checkpoint.
    fn delete_checkpointed(&self) {
        let checkpointed = self.checkpointed_lsn.load(Ordering::Acquire);
        let Ok(segments) = list_segments(&self.config.dir) else {
            return;
        };
        for pair in segments.windows(2) {
            let ((_, path), (next_first_lsn, _)) = (&pair[0], &pair[1]);
            // The segment holds LSNs below the next segment's first LSN.
            if next_first_lsn.saturating_sub(1) <= checkpointed
                && *next_first_lsn <= self.segment.first_lsn
                && let Err(error) = std::fs::remove_file(path)
            {
                tracing::warn!(%error, segment = %path.display(), "could not delete checkpointed wal segment");
            }
        }
    }
}
