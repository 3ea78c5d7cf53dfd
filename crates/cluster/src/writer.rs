//! The checkpoint writer: a thread that sends what a checkpoint of the aggregation consumer
//! produces and waits for the broker, so that consuming goes on meanwhile.
//!
//! The aggregation thread prepares a [`CheckpointJob`] (the activity records and open-window
//! snapshots to send, each partition's checkpoint, the offsets to commit) and hands it over.
//! The writer takes jobs one at a time and in order, and for each:
//! 1. sends every record and waits until the broker has all of them;
//! 2. only then sends the checkpoints and waits for them;
//! 3. only then reports the offsets as committable; the aggregation thread commits them.
//!
//! So a checkpoint is never on the broker before everything it covers, exactly as when the
//! aggregation thread waited itself. After a job fails, the writer skips every job until
//! [`CheckpointWriter::reset`]: a later checkpoint would cover records that never arrived.
//! At most one job waits while one is written; a slower broker makes the aggregation thread
//! wait at its next checkpoint, so nothing piles up.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use mm_kafka::delivery::{flush, send_blocking};
use mm_kafka::{TrackedProducer, encode_window, header, partition_for};
use mm_storage::codec::{self, RollupState};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::BaseRecord;

use super::aggregate::partition::Outgoing;
use crate::error::{ClusterError, Result};
use mm_model::activity::ActivityRecord;

/// Everything one checkpoint sends.
pub struct CheckpointJob {
    pub records: Vec<Outgoing>,
    /// Per partition, its encoded checkpoint; empty when this round writes none.
    pub checkpoints: Vec<(i32, String)>,
    /// Per partition, the next offset to commit once the checkpoints are on the broker.
    pub commit: Vec<(i32, i64)>,
    pub finals: u64,
    pub corrections: u64,
    /// When the checkpoint was prepared.
    pub prepared: std::time::Instant,
}

/// What became of a job.
pub enum JobResult {
    /// The records are on the broker; with `commit` non-empty, the checkpoints too.
    Written {
        commit: Vec<(i32, i64)>,
        finals: u64,
        corrections: u64,
        /// When the job's checkpoint was prepared.
        prepared: std::time::Instant,
    },
    /// A record may be missing downstream: start over from the last checkpoints.
    Failed(String),
    /// Not written, because an earlier job failed.
    Skipped,
}

enum Order {
    Job(CheckpointJob),
    Reset,
}

/// Jobs handed over and not yet reported back.
#[derive(Default)]
pub struct Outstanding {
    count: Mutex<usize>,
    changed: Condvar,
}

impl Outstanding {
    fn add(&self) {
        if let Ok(mut count) = self.count.lock() {
            *count += 1;
        }
    }

    fn done(&self) {
        if let Ok(mut count) = self.count.lock() {
            *count = count.saturating_sub(1);
        }
        self.changed.notify_all();
    }

    /// Blocks until every job handed over has been reported back.
    pub fn wait_idle(&self) {
        let Ok(mut count) = self.count.lock() else {
            return;
        };
        while *count > 0 {
            match self.changed.wait(count) {
                Ok(guard) => count = guard,
                Err(_) => return,
            }
        }
    }
}

/// Where records go.
#[derive(Clone)]
pub struct Emitter {
    pub producer: Arc<TrackedProducer>,
    pub activity_topic: String,
    pub open_topic: String,
    pub activity_partitions: u32,
}

impl Emitter {
    /// Produces a final or correction record to the activity topic, or a snapshot of an open
    /// window to the open-window topic (partition: the aggregation partition).
    fn emit(&self, outgoing: &Outgoing) -> Result<()> {
        let Outgoing {
            key,
            rollup,
            correction,
            partition,
            covers,
            open,
        } = outgoing;
        let mut encoded = Vec::with_capacity(128);
        codec::encode_rollup(rollup, RollupState::Final, &mut encoded);
        let covers_text = format!("{partition}:{covers}");
        let window = encode_window(&key.merchant, &key.api, key.minute);
        let headers = OwnedHeaders::new_with_capacity(4)
            .insert(rdkafka::message::Header {
                key: header::ROLLUP,
                value: Some(encoded.as_slice()),
            })
            .insert(rdkafka::message::Header {
                key: header::COVERS,
                value: Some(covers_text.as_bytes()),
            })
            .insert(rdkafka::message::Header {
                key: header::WINDOW,
                value: Some(window.as_slice()),
            });
        let record_key = format!("{}|{}", key.merchant, key.api);
        // Snapshots are for replicas only, which read the headers: no JSON value.
        let (topic, target, headers, value) = if *open {
            (self.open_topic.as_str(), *partition, headers, Vec::new())
        } else {
            let record = ActivityRecord::new(key, rollup, *correction);
            let value = serde_json::to_vec(&record)?;
            let headers = headers.insert(rdkafka::message::Header {
                key: header::DEDUPE_KEY,
                value: Some(record.dedupe_key.as_bytes()),
            });
            (
                self.activity_topic.as_str(),
                partition_for(record_key.as_bytes(), self.activity_partitions),
                headers,
                value,
            )
        };
        send_blocking(
            &self.producer,
            BaseRecord::to(topic)
                .key(record_key.as_bytes())
                .payload(value.as_slice())
                .partition(target)
                .headers(headers),
        )
        .map_err(ClusterError::delivery("producing an activity record"))?;
        Ok(())
    }
}

/// The writer thread and the two channels to it.
pub struct CheckpointWriter {
    orders: Option<SyncSender<Order>>,
    results: Receiver<JobResult>,
    outstanding: Arc<Outstanding>,
    thread: Option<JoinHandle<()>>,
}

impl CheckpointWriter {
    pub fn start(emitter: Emitter, checkpoint_topic: String) -> Result<Self> {
        // One job waiting while one is written.
        let (orders_tx, orders_rx) = sync_channel::<Order>(1);
        let (results_tx, results) = std::sync::mpsc::channel();
        let outstanding = Arc::new(Outstanding::default());
        let done = outstanding.clone();
        let thread = std::thread::Builder::new()
            .name("mm-checkpoint".into())
            .spawn(move || {
                let mut failed = false;
                for order in orders_rx {
                    let job = match order {
                        Order::Reset => {
                            failed = false;
                            continue;
                        }
                        Order::Job(job) => job,
                    };
                    let result = if failed {
                        JobResult::Skipped
                    } else {
                        write(&emitter, &checkpoint_topic, job)
                    };
                    failed |= matches!(result, JobResult::Failed(_));
                    let _ = results_tx.send(result);
                    done.done();
                }
            })
            .map_err(|source| ClusterError::Spawn {
                thread: "checkpoint writer".to_owned(),
                source,
            })?;
        Ok(Self {
            orders: Some(orders_tx),
            results,
            outstanding,
            thread: Some(thread),
        })
    }

    /// Hands a job over; waits while another job is already waiting.
    pub fn submit(&self, job: CheckpointJob) -> Result<()> {
        let orders = self.orders.as_ref().ok_or(ClusterError::WriterStopped)?;
        self.outstanding.add();
        if orders.send(Order::Job(job)).is_err() {
            self.outstanding.done();
            return Err(ClusterError::WriterStopped);
        }
        Ok(())
    }

    /// The next result, if one is ready.
    pub fn try_result(&self) -> Option<JobResult> {
        self.results.try_recv().ok()
    }

    /// Blocks until every job handed over has been written (or skipped).
    pub fn wait_idle(&self) {
        self.outstanding.wait_idle();
    }

    /// For a rebalance callback: waits until every job handed over is written.
    pub fn outstanding(&self) -> Arc<Outstanding> {
        self.outstanding.clone()
    }

    /// After a failure, once its results are taken: write jobs again.
    pub fn reset(&self) {
        if let Some(orders) = &self.orders {
            let _ = orders.send(Order::Reset);
        }
    }
}

impl Drop for CheckpointWriter {
    fn drop(&mut self) {
        drop(self.orders.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write(emitter: &Emitter, checkpoint_topic: &str, job: CheckpointJob) -> JobResult {
    let span = tracing::info_span!(
        "checkpoint",
        otel.name = "cluster checkpoint",
        records = job.records.len() as i64,
        partitions = job.checkpoints.len() as i64,
    );
    let _entered = span.enter();
    for outgoing in &job.records {
        if let Err(error) = emitter.emit(outgoing) {
            return JobResult::Failed(error.to_string());
        }
    }
    if let Err(error) = flush(&emitter.producer, Duration::from_secs(60)) {
        return JobResult::Failed(error.to_string());
    }
    let written = |commit| JobResult::Written {
        commit,
        finals: job.finals,
        corrections: job.corrections,
        prepared: job.prepared,
    };
    if job.checkpoints.is_empty() {
        return written(Vec::new());
    }
    for (partition, encoded) in &job.checkpoints {
        let key = partition.to_string();
        let sent = send_blocking(
            &emitter.producer,
            BaseRecord::to(checkpoint_topic)
                .key(key.as_bytes())
                .payload(encoded.as_bytes())
                .partition(*partition),
        );
        if let Err(error) = sent {
            tracing::warn!(%error, "producing a checkpoint");
            return written(Vec::new());
        }
    }
    if let Err(error) = flush(&emitter.producer, Duration::from_secs(60)) {
        // The activity is out; a checkpoint that did not make it only means a longer
        // rebuild from the previous one.
        tracing::warn!(%error, "writing checkpoints");
        return written(Vec::new());
    }
    tracing::debug!(commit = ?job.commit, "checkpoints written");
    written(job.commit.clone())
}
