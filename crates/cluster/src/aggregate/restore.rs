//! A newly assigned partition: rebuilt from its last checkpoint before any of its records is
//! processed (see the parent module).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mm_kafka::PartitionCheckpoint;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::Worker;
use super::partition::PartitionState;
use crate::decode::input_record;
use crate::error::{ClusterError, Result};
use crate::group::GroupContext;
use mm_kafka::guard::FetchGuard;
use mm_model::time::now_us;

impl Worker {
    /// Rebuilds `partitions` from their committed checkpoints.
    pub(super) fn restore(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
        partitions: &[i32],
    ) -> Result<()> {
        if partitions.is_empty() {
            return Ok(());
        }
        // Records an earlier owner emitted must be in the replica before late calls are
        // checked against it.
        let mut targets = BTreeMap::new();
        for partition in 0..self.activity_partitions as i32 {
            if let Ok((_, high)) = self.reader.fetch_watermarks(
                &self.options.settings.activity_topic,
                partition,
                Duration::from_secs(5),
            ) {
                targets.insert(partition, high);
            }
        }
        if !self.options.progress.wait_until_settled(
            &targets,
            Duration::from_secs(60),
            Duration::from_secs(2),
        ) {
            return Err(ClusterError::Timeout(
                "waiting 60 s for the activity replica to catch up".into(),
            ));
        }
        let mut list = TopicPartitionList::new();
        for partition in partitions {
            list.add_partition(&self.topic, *partition);
        }
        let committed = consumer
            .committed_offsets(list, Duration::from_secs(10))
            .map_err(ClusterError::kafka("reading committed offsets"))?;
        for partition in partitions.iter().copied() {
            let committed = committed
                .find_partition(&self.topic, partition)
                .and_then(|element| match element.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                });
            let mut state = match self.last_checkpoint(partition)? {
                Some(checkpoint) => {
                    tracing::debug!(
                        partition,
                        ?committed,
                        ?checkpoint,
                        "restoring from a checkpoint"
                    );
                    let mut state = PartitionState::restored(
                        partition,
                        self.options.window,
                        self.repartitioned,
                        &checkpoint,
                        now_us(),
                    );
                    self.rebuild(&mut state)?;
                    state.next = checkpoint.next;
                    // The group's offset may trail the checkpoint (a commit that failed after
                    // the checkpoint was written): start reading where the checkpoint ends.
                    if committed != Some(checkpoint.next) {
                        let _ = consumer.seek(
                            &self.topic,
                            partition,
                            Offset::Offset(checkpoint.next),
                            Duration::from_secs(5),
                        );
                    }
                    state
                }
                None => {
                    if let Some(committed) = committed {
                        tracing::warn!(
                            partition,
                            committed,
                            "offset committed without a checkpoint: starting there with no open windows"
                        );
                    }
                    PartitionState::new(
                        partition,
                        self.options.window,
                        self.repartitioned,
                        committed.unwrap_or(0),
                    )
                }
            };
            state.committed = committed;
            tracing::info!(
                partition,
                next = state.next,
                open_windows = state.aggregator.open_windows(),
                "partition restored"
            );
            self.guard.forget(partition);
            self.tasks.insert(partition, state);
        }
        Ok(())
    }

    /// The last record of the checkpoint topic's partition `partition`: the latest complete
    /// checkpoint of that aggregation partition.
    fn last_checkpoint(&self, partition: i32) -> Result<Option<PartitionCheckpoint>> {
        let topic = self.options.settings.checkpoint_topic();
        let (low, high) = self
            .reader
            .fetch_watermarks(&topic, partition, Duration::from_secs(10))
            .map_err(ClusterError::kafka(format!(
                "reading the end of {topic} partition {partition}"
            )))?;
        if high <= low {
            return Ok(None);
        }
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&topic, partition, Offset::Offset(high - 1))
            .map_err(ClusterError::kafka("positioning the checkpoint reader"))?;
        self.reader
            .assign(&list)
            .map_err(ClusterError::kafka("assigning the checkpoint reader"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let found = loop {
            match self.reader.poll(Duration::from_millis(500)) {
                // Only this partition's last record: the reader is shared, and every
                // partition of the checkpoint topic has as many records as the others.
                Some(Ok(message))
                    if message.topic() == topic
                        && message.partition() == partition
                        && message.offset() == high - 1 =>
                {
                    let text = message
                        .payload()
                        .and_then(|payload| std::str::from_utf8(payload).ok())
                        .unwrap_or_default();
                    break PartitionCheckpoint::decode(text).map_err(|source| {
                        ClusterError::Checkpoint {
                            location: format!(
                                "at {topic} partition {partition} offset {}",
                                high - 1
                            ),
                            source,
                        }
                    })?;
                }
                Some(Ok(_)) | None => {
                    if Instant::now() >= deadline {
                        return Err(ClusterError::Timeout(
                            format!("reading the last checkpoint of partition {partition}").into(),
                        ));
                    }
                }
                Some(Err(error)) => tracing::warn!(%error, "checkpoint reader"),
            }
        };
        self.reader
            .unassign()
            .map_err(ClusterError::kafka("releasing the checkpoint reader"))?;
        Ok(found)
    }

    /// Re-reads `[state.next, state.replay_until)` into the partition.
    fn rebuild(&mut self, state: &mut PartitionState) -> Result<()> {
        if !state.rebuilding() {
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.topic, state.partition, Offset::Offset(state.next))
            .map_err(ClusterError::kafka("positioning the rebuild reader"))?;
        self.reader
            .assign(&list)
            .map_err(ClusterError::kafka("assigning the rebuild reader"))?;
        let started = Instant::now();
        let mut replayed = 0u64;
        let mut guard = FetchGuard::new(
            &self.topic,
            self.options.settings.fetch_guard,
            self.options.metrics.kafka_fetch_gaps.clone(),
        );
        let mut heard = Instant::now();
        while state.next < state.replay_until {
            match self.reader.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => {
                    // Only this partition's records, in order, from where the rebuild stands.
                    if message.topic() != self.topic || message.partition() != state.partition {
                        continue;
                    }
                    heard = Instant::now();
                    if !guard.admit(&self.reader, state.partition, state.next, message.offset()) {
                        continue;
                    }
                    if message.offset() >= state.replay_until {
                        break;
                    }
                    let now = self.clock.now_us();
                    state.process(
                        &input_record(&message, self.repartitioned),
                        &self.decoder,
                        &*self.options.store,
                        now,
                    )?;
                    replayed += 1;
                }
                Some(Err(error)) => tracing::warn!(%error, "rebuild reader"),
                // Nothing comes: read again from before the expected offset, until a read from
                // before it finds nothing past it.
                None if heard.elapsed() >= Duration::from_secs(1) => {
                    if guard.stalled(&self.reader, state.partition, state.next) {
                        heard = Instant::now();
                        continue;
                    }
                    // Without the guard, a slow broker gets longer before the records count
                    // as gone.
                    if guard.enabled() || heard.elapsed() >= Duration::from_secs(10) {
                        tracing::warn!(
                            partition = state.partition,
                            from = state.next,
                            to = state.replay_until,
                            "records to rebuild open windows from are gone (retention): the windows lack them"
                        );
                        break;
                    }
                }
                None => {}
            }
        }
        self.reader
            .unassign()
            .map_err(ClusterError::kafka("releasing the rebuild reader"))?;
        self.options.metrics.kafka_replayed_records.inc_by(replayed);
        tracing::info!(
            partition = state.partition,
            replayed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "open windows rebuilt"
        );
        Ok(())
    }
}
