//! A checkpoint of every owned partition, handed to the checkpoint writer, and what becomes
//! of it: the commit once the writer has the checkpoint on the broker (see the parent module
//! and `writer.rs`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mm_kafka::delivery::delivered_offsets;
use mm_telemetry::KindLabel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::Worker;
use super::partition::Outgoing;
use crate::error::{ClusterError, Result};
use crate::group::GroupContext;
use crate::writer::{CheckpointJob, JobResult};
use mm_model::time::now_us;

impl Worker {
    /// Takes the checkpoint writer's results: commits what a written checkpoint covers (for
    /// the partitions still owned) and counts what was emitted. `Ok(false)` when a job failed:
    /// the caller starts over from the last checkpoints.
    pub(super) fn collect(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
        mode: CommitMode,
    ) -> Result<bool> {
        while let Some(result) = self.writer.try_result() {
            let (commit, finals, corrections, prepared) = match result {
                JobResult::Written {
                    commit,
                    finals,
                    corrections,
                    prepared,
                } => (commit, finals, corrections, prepared),
                JobResult::Failed(error) => {
                    // Something sent since the last checkpoint may be missing downstream.
                    tracing::error!(%error, "activity or dead-letter delivery failed; rebuilding from the last checkpoint");
                    return Ok(false);
                }
                JobResult::Skipped => continue,
            };
            let metrics = &self.options.metrics;
            metrics.window_closed.inc_by(finals);
            metrics.window_corrections.inc_by(corrections);
            metrics
                .activity_records
                .get_or_create(&KindLabel { kind: "final" })
                .inc_by(finals);
            metrics
                .activity_records
                .get_or_create(&KindLabel { kind: "correction" })
                .inc_by(corrections);
            let mut list = TopicPartitionList::new();
            for (partition, next) in &commit {
                if self.tasks.contains_key(partition) {
                    list.add_partition_offset(&self.topic, *partition, Offset::Offset(*next))
                        .map_err(ClusterError::kafka("building the commit"))?;
                }
            }
            if list.count() == 0 {
                continue;
            }
            match consumer.commit(&list, mode) {
                Ok(()) => {
                    for (partition, next) in &commit {
                        if let Some(state) = self.tasks.get_mut(partition) {
                            state.committed = Some(*next);
                        }
                    }
                    metrics.kafka_checkpoints.inc();
                    metrics
                        .kafka_checkpoint_seconds
                        .observe(prepared.elapsed().as_secs_f64());
                    self.report(consumer, now_us());
                }
                // Not fatal: the next checkpoint commits further, or a new owner rebuilds.
                Err(error) => tracing::warn!(%error, "committing a checkpoint"),
            }
        }
        Ok(true)
    }

    /// Prepares a checkpoint and hands it to the writer (see `writer.rs`). `Ok(false)` when
    /// the broker did not take what an earlier checkpoint covered: the caller starts over from
    /// the last checkpoints.
    pub(super) fn checkpoint(&mut self, consumer: &BaseConsumer<GroupContext>) -> Result<bool> {
        let started = std::time::Instant::now();
        if !self.collect(consumer, CommitMode::Async)? {
            return Ok(false);
        }
        let now = now_us();
        let mut finals: Vec<Outgoing> = Vec::new();
        let mut snapshots: Vec<Outgoing> = Vec::new();
        for state in self.tasks.values_mut() {
            let round = state.round(now);
            finals.extend(round.finals);
            snapshots.extend(round.open);
        }
        let mut corrections: Vec<Outgoing> = Vec::new();
        let mut corrections_deferred = false;
        if self.tasks.values().any(|state| state.has_pending()) {
            // Corrections add to the replicated rollup: it must hold this instance's own
            // earlier records first, so every earlier checkpoint must be written.
            self.writer.wait_idle();
            if !self.collect(consumer, CommitMode::Async)? {
                return Ok(false);
            }
            let targets: BTreeMap<i32, i64> = delivered_offsets(
                &self.options.producer,
                &self.options.settings.activity_topic,
            )
            .into_iter()
            .map(|(partition, offset)| (partition, offset + 1))
            .collect();
            if self
                .options
                .progress
                .wait_for(&targets, Duration::from_secs(30))
            {
                for state in self.tasks.values_mut() {
                    corrections.extend(state.corrections(&*self.options.store)?);
                }
            } else {
                // Late calls still pending must not fall behind a checkpoint (a rebuild
                // would skip them): this round emits its finals but writes no checkpoint.
                tracing::warn!(
                    "the activity replica is behind; corrections and the checkpoint wait for the next round"
                );
                corrections_deferred = true;
            }
        }
        let (final_count, correction_count) = (finals.len() as u64, corrections.len() as u64);
        let mut records = finals;
        records.append(&mut corrections);
        // Snapshots of the windows still open that changed, for every instance's queries.
        records.append(&mut snapshots);
        let mut checkpoints = Vec::new();
        let mut commit = Vec::new();
        if !corrections_deferred {
            for state in self.tasks.values_mut() {
                let checkpoint = state.checkpoint();
                tracing::debug!(
                    partition = state.partition,
                    next = checkpoint.next,
                    replay = checkpoint.replay,
                    watermark_us = checkpoint.watermark_us,
                    "checkpoint prepared"
                );
                let encoded = checkpoint
                    .encode()
                    .map_err(|source| ClusterError::Checkpoint {
                        location: format!("of partition {}", state.partition),
                        source,
                    })?;
                checkpoints.push((state.partition, encoded));
                commit.push((state.partition, state.next));
            }
        }
        for record in records.iter().filter(|record| !record.open) {
            tracing::trace!(
                partition = record.partition,
                covers = record.covers,
                merchant = %record.key.merchant,
                api = %record.key.api,
                minute = record.key.minute,
                calls = record.rollup.calls,
                correction = record.correction,
                "activity record"
            );
        }
        self.writer.submit(CheckpointJob {
            records,
            checkpoints,
            commit,
            finals: final_count,
            corrections: correction_count,
            prepared: started,
        })?;
        self.report(consumer, now);
        Ok(true)
    }

    /// Gauges and the consumer status (lag) after a checkpoint.
    fn report(&mut self, consumer: &BaseConsumer<GroupContext>, now: i64) {
        let metrics = &self.options.metrics;
        let open: usize = self
            .tasks
            .values()
            .map(|state| state.aggregator.open_windows())
            .sum();
        let watermark = self
            .tasks
            .values()
            .map(|state| state.aggregator.watermark_us())
            .filter(|watermark| *watermark > i64::MIN)
            .min()
            .unwrap_or(i64::MIN);
        // Over every aggregation thread of this instance.
        let (open, watermark) =
            self.options
                .members
                .report(self.options.member, open as i64, watermark);
        metrics.window_open.set(open);
        if let Some(watermark) = watermark {
            metrics
                .window_watermark_delay_seconds
                .set((now - watermark) as f64 / 1e6);
        }
        // The partitions' ends need a round trip each: every few seconds is enough.
        let refresh_ends = self.last_report.elapsed() >= Duration::from_secs(3);
        if refresh_ends {
            self.last_report = Instant::now();
        }
        let positions = self
            .tasks
            .values()
            .map(|state| (state.partition, (state.next, state.committed)))
            .collect();
        crate::group::report(
            &self.options.status,
            (crate::ConsumerRole::Aggregate, self.options.member),
            &self.group,
            &self.topic,
            consumer,
            &positions,
            false,
            refresh_ends,
            metrics,
        );
    }
}
