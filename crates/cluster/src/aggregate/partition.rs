//! One owned partition of the aggregation topic: the pure part of the aggregation consumer.
//!
//! [`PartitionState`] decides what each record does ([`PartitionState::process`]), builds the
//! records and the checkpoint of a round ([`PartitionState::round`],
//! [`PartitionState::corrections`], [`PartitionState::checkpoint`]) and starts from a
//! checkpoint ([`PartitionState::restored`]). It does no I/O: the consumer loop hands it
//! records and the wall clock, and reads the replicated activity records for it through
//! [`Replica`], so the exactly-once logic is tested against an in-memory log
//! (`model_tests.rs`) as well as end to end.
//!
//! Invariants (ARCHITECTURE.md, "Checkpoints and exactly-once effect"):
//! 1. Records are processed in offset order, each once (`next` is the next offset expected).
//! 2. A repartitioned record whose source offset is not above the highest counted from its
//!    source partition is a duplicate and changes nothing.
//! 3. While rebuilding (`offset < replay_until`), a call of a window the checkpoint's
//!    watermark had closed is already downstream and is not counted again.
//! 4. A late call is collected only for windows whose replicated record does not cover its
//!    offset; a correction is the replicated rollup plus the late calls after what it covers.
//! 5. The checkpoint's `replay` is a checkpoint offset at or before the first offset counted
//!    in any window still open, with the deduplication state as it was there.

use std::collections::{BTreeMap, VecDeque};

use mm_kafka::PartitionCheckpoint;
use mm_model::ApiCallRef;
use mm_model::rollup::{Rollup, WindowKey};
use mm_model::time::minute_of;
use mm_storage::StorageError;
use mm_window::{Aggregator, Call, Origin, WindowConfig, WindowRollup};
use rustc_hash::FxHashMap;

use crate::error::ClusterError;

/// One record of the aggregation topic, as the partition logic sees it.
#[derive(Debug, Clone, Copy)]
pub struct InputRecord<'a> {
    pub offset: i64,
    /// The record's own timestamp (ms): the reference for its time bounds, so a rebuild
    /// decides as the first pass did.
    pub timestamp_ms: Option<i64>,
    pub payload: Option<&'a [u8]>,
    /// For a repartitioned record: its source partition and offset.
    pub source: Option<(i32, i64)>,
    /// The value is the call in the binary event encoding (parsed once, by the repartitioner).
    pub binary: bool,
}

/// Turns a record into an API call, or says why it cannot be one.
pub trait Decode {
    fn decode<'a>(&self, record: &InputRecord<'a>) -> Result<ApiCallRef<'a>, Rejected>;
}

/// Why a record is not an API call: an error class and a message, for the dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub class: &'static str,
    pub message: String,
}

/// What the partition logic reads of the replicated activity records.
pub trait Replica {
    /// The aggregation partition and offset the replicated record of `key` covers.
    fn covers(&self, key: &WindowKey) -> Result<Option<(i32, i64)>, StorageError>;
    /// The replicated record of `key`: its rollup, partition and what it covers.
    fn replicated(&self, key: &WindowKey) -> Result<Option<(Rollup, i32, i64)>, StorageError>;
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Counted,
    Late,
    Duplicate,
    /// Re-read while rebuilding, and already downstream.
    Rebuilt,
    Dead(Rejected),
}

/// A window's rollup on its way out.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub key: WindowKey,
    pub rollup: Rollup,
    /// A correction (the new total of a window already emitted).
    pub correction: bool,
    /// The aggregation partition, and the last offset of it the rollup covers.
    pub partition: i32,
    pub covers: i64,
    /// A snapshot of a window still open, for the open-window topic.
    pub open: bool,
}

/// The records of one round of one partition, before corrections.
#[derive(Debug, Default)]
pub struct RoundRecords {
    pub finals: Vec<Outgoing>,
    pub open: Vec<Outgoing>,
}

/// The state of one owned partition.
#[derive(Debug)]
pub struct PartitionState {
    pub partition: i32,
    pub aggregator: Aggregator,
    /// Next offset to process.
    pub next: i64,
    /// Offsets below this are being rebuilt: calls of closed windows are already downstream.
    pub replay_until: i64,
    /// The last offset committed for the group (lag reporting).
    pub committed: Option<i64>,
    /// Whether records carry their source position (repartitioned input).
    repartitioned: bool,
    /// Per minute with open windows, the first offset counted in them.
    first_offset: BTreeMap<i64, i64>,
    /// Repartitioned input: per source partition, the highest source offset counted.
    sources: BTreeMap<i32, i64>,
    /// At each checkpoint offset, `sources` as it was there; the oldest still needed first.
    snapshots: VecDeque<(i64, BTreeMap<i32, i64>)>,
    /// Late calls not yet emitted, per window, with the last offset among them.
    pending: FxHashMap<WindowKey, (Rollup, i64)>,
}

impl PartitionState {
    /// A partition with no checkpoint, starting at `start` (its committed offset, or 0).
    pub fn new(partition: i32, window: WindowConfig, repartitioned: bool, start: i64) -> Self {
        let mut snapshots = VecDeque::new();
        snapshots.push_back((start, BTreeMap::new()));
        Self {
            partition,
            aggregator: Aggregator::new(window),
            next: start,
            replay_until: start,
            committed: None,
            repartitioned,
            first_offset: BTreeMap::new(),
            sources: BTreeMap::new(),
            snapshots,
            pending: FxHashMap::default(),
        }
    }

    /// A partition to rebuild from `checkpoint`: process the records of `[next, replay_until)`
    /// (they rebuild the open windows), then go on from `replay_until` as new.
    pub fn restored(
        partition: i32,
        window: WindowConfig,
        repartitioned: bool,
        checkpoint: &PartitionCheckpoint,
        now_wall_us: i64,
    ) -> Self {
        let mut state = Self::new(partition, window, repartitioned, checkpoint.replay);
        state.aggregator.restore_watermark(checkpoint.watermark_us);
        state
            .aggregator
            .restore_clock(0, checkpoint.max_event_us, now_wall_us);
        state.sources = checkpoint.sources.iter().copied().collect();
        state.snapshots = VecDeque::from([(checkpoint.replay, state.sources.clone())]);
        state.replay_until = checkpoint.next;
        state
    }

    /// Whether records below `replay_until` remain to be re-read.
    pub fn rebuilding(&self) -> bool {
        self.next < self.replay_until
    }

    /// Processes the record at `record.offset`, which must be `self.next` or later (a real
    /// hole in the log); `now_wall_us` is the wall clock at arrival.
    pub fn process(
        &mut self,
        record: &InputRecord<'_>,
        decoder: &impl Decode,
        replica: &impl Replica,
        now_wall_us: i64,
    ) -> crate::Result<Outcome> {
        let offset = record.offset;
        self.next = offset + 1;
        let rebuilding = offset < self.replay_until;
        if self.repartitioned
            && let Some((source_partition, source_offset)) = record.source
        {
            if self
                .sources
                .get(&source_partition)
                .is_some_and(|seen| source_offset <= *seen)
            {
                tracing::trace!(
                    partition = self.partition,
                    offset,
                    source_partition,
                    source_offset,
                    "duplicate skipped"
                );
                return Ok(Outcome::Duplicate);
            }
            self.sources.insert(source_partition, source_offset);
        }
        let call = match decoder.decode(record) {
            Ok(call) => call,
            Err(_) if rebuilding => return Ok(Outcome::Rebuilt),
            Err(rejected) => return Ok(Outcome::Dead(rejected)),
        };
        let call = Call::from(&call);
        let minute = minute_of(call.ts_us);
        if !self.aggregator.is_closed(minute) {
            self.aggregator.ingest(
                Origin {
                    partition: 0,
                    position: offset,
                },
                call,
                now_wall_us,
            );
            self.first_offset.entry(minute).or_insert(offset);
            return Ok(Outcome::Counted);
        }
        if rebuilding {
            return Ok(Outcome::Rebuilt);
        }
        // Already in a record an earlier owner emitted?
        let partition = self.partition;
        let mut failure = None;
        self.aggregator.add_late(offset, call, |key| {
            match replica.covers(key) {
                Ok(covers) => covers.is_some_and(|(owner, covers)| {
                    let covered = owner == partition && offset <= covers;
                    if covered {
                        tracing::trace!(partition, offset, merchant = %key.merchant, api = %key.api, minute = key.minute, "late call already emitted");
                    }
                    covered
                }),
                Err(error) => {
                    failure.get_or_insert(error);
                    false
                }
            }
        });
        if let Some(error) = failure {
            return Err(ClusterError::storage(
                "reading what a replicated record covers",
            )(error));
        }
        tracing::trace!(partition, offset, merchant = %call.merchant, minute, "late call pending");
        Ok(Outcome::Late)
    }

    /// Advances the watermark and takes the round's final records (covering the partition up
    /// to the current position) and snapshots of the open windows that changed; the late
    /// calls wait in `pending` for [`Self::corrections`].
    pub fn round(&mut self, now_wall_us: i64) -> RoundRecords {
        let round = self.aggregator.checkpoint(now_wall_us);
        let covers = self.next - 1;
        let outgoing = |window: WindowRollup, open: bool| Outgoing {
            key: window.key,
            rollup: window.rollup,
            correction: false,
            partition: self.partition,
            covers,
            open,
        };
        let records = RoundRecords {
            finals: round
                .finals
                .into_iter()
                .map(|window| outgoing(window, false))
                .collect(),
            open: round
                .open
                .into_iter()
                .map(|window| outgoing(window, true))
                .collect(),
        };
        for correction in round.corrections {
            let (late, last) = self
                .pending
                .entry(correction.key)
                .or_insert_with(|| (Rollup::default(), correction.last_position));
            late.merge(&correction.late);
            *last = (*last).max(correction.last_position);
        }
        let aggregator = &self.aggregator;
        self.first_offset
            .retain(|minute, _| !aggregator.is_closed(*minute));
        records
    }

    /// Whether late calls wait to be emitted as corrections.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The correction records of the pending late calls: each the replicated rollup plus the
    /// late calls after what it covers. The replica must hold this partition's own earlier
    /// records (the caller waits for that).
    pub fn corrections(&mut self, replica: &impl Replica) -> crate::Result<Vec<Outgoing>> {
        let mut pending: Vec<(WindowKey, (Rollup, i64))> = self.pending.drain().collect();
        pending.sort_unstable_by(|left, right| left.0.cmp(&right.0));
        let mut records = Vec::with_capacity(pending.len());
        for (key, (late, covers)) in pending {
            let mut total = match replica
                .replicated(&key)
                .map_err(ClusterError::storage("reading a replicated rollup"))?
            {
                Some((stored, partition, stored_covers)) if partition == self.partition => {
                    if covers <= stored_covers {
                        continue;
                    }
                    stored
                }
                _ => Rollup::default(),
            };
            total.merge(&late);
            records.push(Outgoing {
                key,
                rollup: total,
                correction: true,
                partition: self.partition,
                covers,
                open: false,
            });
        }
        Ok(records)
    }

    /// The checkpoint for the current position; records the snapshot it refers to.
    pub fn checkpoint(&mut self) -> PartitionCheckpoint {
        self.snapshots.push_back((self.next, self.sources.clone()));
        let needed = self
            .first_offset
            .values()
            .copied()
            .min()
            .unwrap_or(self.next);
        // The latest snapshot at or before the first offset still needed.
        while self.snapshots.len() > 1 && self.snapshots[1].0 <= needed {
            self.snapshots.pop_front();
        }
        let (replay, sources) = self.snapshots.front().cloned().unwrap_or_default();
        PartitionCheckpoint {
            v: PartitionCheckpoint::VERSION,
            next: self.next,
            replay,
            watermark_us: self.aggregator.watermark_us(),
            max_event_us: self
                .aggregator
                .partition_clocks()
                .first()
                .map_or(i64::MIN, |(_, max)| *max),
            sources: sources.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use mm_model::time::MICROS_PER_MINUTE;

    use super::*;

    const BASE: i64 = 1_795_791_600_000_000;

    /// Reads `merchant|minute` records; no replicated record covers anything.
    struct Plain;

    impl Decode for Plain {
        fn decode<'a>(&self, record: &InputRecord<'a>) -> Result<ApiCallRef<'a>, Rejected> {
            let text =
                std::str::from_utf8(record.payload.unwrap_or_default()).map_err(|_| Rejected {
                    class: "invalid_utf8",
                    message: String::new(),
                })?;
            let (merchant, minute) = text.split_once('|').ok_or(Rejected {
                class: "invalid_value",
                message: text.to_owned(),
            })?;
            let minute: i64 = minute.parse().map_err(|_| Rejected {
                class: "invalid_value",
                message: text.to_owned(),
            })?;
            Ok(ApiCallRef {
                ts_us: BASE + minute * MICROS_PER_MINUTE,
                merchant: merchant.into(),
                api: "/v1/a".into(),
                status: 200,
                latency_ms: 1.0,
                corr_id: "c".into(),
                partner: None,
                method: None,
                path: None,
                host: None,
                region: None,
                attributes: None,
            })
        }
    }

    impl Replica for Plain {
        fn covers(&self, _key: &WindowKey) -> Result<Option<(i32, i64)>, StorageError> {
            Ok(None)
        }

        fn replicated(&self, _key: &WindowKey) -> Result<Option<(Rollup, i32, i64)>, StorageError> {
            Ok(None)
        }
    }

    fn record(offset: i64, payload: &'static str, source: i64) -> InputRecord<'static> {
        InputRecord {
            offset,
            timestamp_ms: Some(BASE / 1000),
            payload: Some(payload.as_bytes()),
            source: Some((0, source)),
            binary: false,
        }
    }

    #[test]
    fn a_rebuild_skips_calls_of_windows_the_checkpoint_had_closed() {
        let checkpoint = PartitionCheckpoint {
            v: PartitionCheckpoint::VERSION,
            next: 10,
            replay: 5,
            // Minutes 0 and 1 closed.
            watermark_us: BASE + 2 * MICROS_PER_MINUTE,
            max_event_us: BASE + 2 * MICROS_PER_MINUTE,
            sources: vec![(0, 4)],
        };
        let mut state =
            PartitionState::restored(1, WindowConfig::default(), true, &checkpoint, BASE);
        assert!(state.rebuilding());
        let decode = |state: &mut PartitionState, record| {
            state
                .process(&record, &Plain, &Plain, BASE)
                .expect("no replica errors")
        };
        assert_eq!(decode(&mut state, record(5, "M|0", 4)), Outcome::Duplicate);
        assert_eq!(decode(&mut state, record(6, "M|1", 5)), Outcome::Rebuilt);
        assert_eq!(decode(&mut state, record(7, "M|3", 6)), Outcome::Counted);
        assert_eq!(
            decode(&mut state, record(8, "not a call", 7)),
            Outcome::Rebuilt
        );
        // Past the checkpoint: a call of a closed window is late, a bad record dead.
        assert_eq!(decode(&mut state, record(10, "M|1", 8)), Outcome::Late);
        assert!(matches!(
            decode(&mut state, record(11, "bad", 9)),
            Outcome::Dead(_)
        ));
        assert_eq!(state.next, 12);
        let round = state.round(BASE);
        assert!(round.finals.is_empty());
        assert_eq!(round.open.len(), 2, "minute 3 and its merchant total");
        assert!(round.open.iter().all(|window| window.covers == 11));
        let corrections = state.corrections(&Plain).expect("no replica errors");
        assert_eq!(corrections.len(), 2, "minute 1 and its merchant total");
        assert!(
            corrections
                .iter()
                .all(|record| record.covers == 10 && record.correction && record.rollup.calls == 1)
        );
        // The checkpoint's replay point is at or before minute 3's first call (offset 7).
        let checkpoint = state.checkpoint();
        assert_eq!((checkpoint.next, checkpoint.replay), (12, 5));
    }
}
