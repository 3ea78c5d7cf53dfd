//! Model-based tests of the aggregation consumer's partition logic.
//!
//! One partition of the aggregation topic is an in-memory log of repartitioned records (with
//! duplicates, as a repartitioner that crashed re-produces them) cut into record batches. A
//! consumer reads it the way the test broker answers: a fetch that starts inside a batch gets
//! the *next* batch (inside the last batch: nothing), guarded by [`Continuity`] as the real
//! consumer is. Owners process records, run checkpoint rounds and deliver what a round
//! produces to the real replica store ([`RollupStore::apply_replicated`]); a round's records
//! then its checkpoint, as the checkpoint writer does. Owners crash at every step of a
//! checkpoint (before any record, after a random part of them, after all of them, after the
//! checkpoint) or lose the partition in a rebalance at any record; the next owner restores from
//! the last checkpoint written. At the end every window must hold exactly what a plain fold
//! over the unique calls gives, and be final.

use mm_kafka::PartitionCheckpoint;
use mm_model::mapping::{EventParser, FieldMapping};
use mm_model::rollup::{MERCHANT_TOTAL_API, Rollup, WindowKey};
use mm_model::time::{MICROS_PER_MINUTE, MICROS_PER_SECOND, minute_of};
use mm_storage::rollups::{Replicated, RollupStore};
use mm_window::WindowConfig;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::partition::{InputRecord, Outcome, Outgoing, PartitionState};
use crate::decode::RecordDecoder;

mod log;

use log::{Call, Log, LogRecord, Reader, Xorshift, generate, in_order};

const BASE: i64 = 1_795_791_600_000_000;

const PARTITION: i32 = 3;

/// Where an owner stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Crashes in a checkpoint before any of its records is delivered.
    BeforeRecords,
    /// Crashes after some of its records (each kept with this probability in percent).
    AmidRecords(u8),
    /// Crashes after all of its records, before the checkpoint.
    BeforeCheckpoint,
    /// Crashes right after the checkpoint is written (nothing committed yet).
    AfterCheckpoint,
    /// Loses the partition in a rebalance after processing this many more records (the
    /// checkpoints handed over are written first, as the revoke hook waits for them).
    Rebalance(usize),
}

/// The downstream side: the replica store and the checkpoint topic's partition.
struct Downstream {
    store: RollupStore,
    checkpoints: Vec<PartitionCheckpoint>,
    delivered: u64,
    _dir: tempfile::TempDir,
}

impl Downstream {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = RollupStore::open(dir.path()).expect("store");
        Self {
            store,
            checkpoints: Vec::new(),
            delivered: 0,
            _dir: dir,
        }
    }

    /// Delivers records to the replica, as it applies what it read: in one batch.
    fn deliver<'a>(&mut self, records: impl IntoIterator<Item = &'a Outgoing>) {
        let batch: Vec<Replicated> = records
            .into_iter()
            .map(|record| Replicated {
                key: record.key.clone(),
                rollup: record.rollup.clone(),
                partition: record.partition,
                covers: record.covers,
                open: record.open,
            })
            .collect();
        self.delivered += batch.len() as u64;
        self.store
            .apply_replicated(batch, "activity", &[])
            .expect("replica write");
    }
}

fn config() -> WindowConfig {
    WindowConfig {
        grace_us: 30 * MICROS_PER_SECOND,
        idle_timeout_us: 10 * MICROS_PER_SECOND,
    }
}

fn decoder() -> RecordDecoder {
    RecordDecoder {
        parser: Arc::new(EventParser::new(&FieldMapping::default(), false).expect("mapping")),
        retention_us: i64::MAX / 4,
        max_skew_us: i64::MAX / 4,
    }
}

fn input(record: &LogRecord) -> InputRecord<'_> {
    InputRecord {
        offset: record.offset,
        timestamp_ms: Some(record.arrival_us / 1000),
        payload: Some(&record.payload),
        source: Some(record.source),
        binary: true,
    }
}

/// Every window of the unique calls, merchant-wide ones included.
fn fold(calls: &[Call]) -> BTreeMap<WindowKey, Rollup> {
    let mut expected: BTreeMap<WindowKey, Rollup> = BTreeMap::new();
    for call in calls {
        for api in [call.api.as_str(), MERCHANT_TOTAL_API] {
            expected
                .entry(WindowKey {
                    merchant: call.merchant.clone(),
                    api: api.to_owned(),
                    minute: minute_of(call.ts_us),
                })
                .or_default()
                .record(call.status, call.latency_ms);
        }
    }
    expected
}

/// One owner's checkpoint round; returns `false` when the owner crashed in it.
fn checkpoint_round(
    state: &mut PartitionState,
    downstream: &mut Downstream,
    now: i64,
    crash: Option<Stop>,
    random: &mut Xorshift,
) -> bool {
    let round = state.round(now);
    let mut records = round.finals;
    if state.has_pending() {
        // The replica holds every earlier record of this owner: they were delivered in order.
        records.extend(state.corrections(&downstream.store).expect("replica read"));
    }
    records.extend(round.open);
    let checkpoint = state.checkpoint();
    match crash {
        Some(Stop::BeforeRecords) => return false,
        Some(Stop::AmidRecords(kept_percent)) => {
            let kept: Vec<&Outgoing> = records
                .iter()
                .filter(|_| random.below(100) < u64::from(kept_percent))
                .collect();
            downstream.deliver(kept);
            return false;
        }
        _ => {}
    }
    downstream.deliver(&records);
    if crash == Some(Stop::BeforeCheckpoint) {
        return false;
    }
    downstream.checkpoints.push(checkpoint);
    crash != Some(Stop::AfterCheckpoint)
}

/// A new owner: restored from the last checkpoint and rebuilt, as `restore.rs` does.
fn take_over(log: &Log, downstream: &Downstream, quirk: bool, now: i64) -> PartitionState {
    let decoder = decoder();
    let Some(checkpoint) = downstream.checkpoints.last() else {
        return PartitionState::new(PARTITION, config(), true, 0);
    };
    let mut state = PartitionState::restored(PARTITION, config(), true, checkpoint, now);
    let mut reader = Reader::new(log, state.next, quirk);
    while state.rebuilding() {
        let Some(record) = reader.next(state.next) else {
            break;
        };
        if record.offset >= state.replay_until {
            break;
        }
        state
            .process(&input(&record), &decoder, &downstream.store, now)
            .expect("rebuild");
    }
    state.next = checkpoint.next;
    state
}

/// How many owners stop as a schedule says; the ones after them run to the end of the log.
const MAX_STOPPED_OWNERS: usize = 6;

/// Runs the log through owners that stop as `stops` says (one per checkpoint round, cycled,
/// for the first [`MAX_STOPPED_OWNERS`] owners), checkpointing every `every` records; then a
/// last owner finishes, checkpoints, and idles until every window closed. Returns the
/// downstream side.
fn run(log: &Log, stops: &[Option<Stop>], every: usize, quirk: bool, seed: u64) -> Downstream {
    let decoder = decoder();
    let mut random = Xorshift::new(seed);
    let mut downstream = Downstream::new();
    let mut stops = stops.iter().copied().cycle();
    let mut now = BASE;
    let mut owners = 0;
    'owners: loop {
        owners += 1;
        if owners > MAX_STOPPED_OWNERS {
            const RUN_TO_THE_END: &[Option<Stop>] = &[None];
            stops = RUN_TO_THE_END.iter().copied().cycle();
        }
        let mut state = take_over(log, &downstream, quirk, now);
        let mut reader = Reader::new(log, state.next, quirk);
        let mut stop = stops.next().flatten();
        // Owners' rounds fall at different records, as their timers would.
        let mut since_checkpoint = 0;
        let mut round_after = every + 7 * ((owners - 1) % 3);
        loop {
            let Some(record) = reader.next(state.next) else {
                break 'owners;
            };
            now = now.max(record.arrival_us);
            let outcome = state
                .process(&input(&record), &decoder, &downstream.store, now)
                .expect("process");
            assert!(!matches!(outcome, Outcome::Dead(_)), "{outcome:?}");
            if let Some(Stop::Rebalance(left)) = &mut stop {
                if *left == 0 {
                    // The partition goes: what was handed over is written, the rest is not.
                    continue 'owners;
                }
                *left -= 1;
            }
            since_checkpoint += 1;
            if since_checkpoint >= round_after {
                since_checkpoint = 0;
                round_after = every;
                let crash = stop.filter(|stop| !matches!(stop, Stop::Rebalance(_)));
                if !checkpoint_round(&mut state, &mut downstream, now, crash, &mut random) {
                    continue 'owners;
                }
                stop = stops.next().flatten();
            }
        }
    }
    // The last owner: whatever it had not checkpointed, then idle time closes every window.
    let mut state = take_over(log, &downstream, quirk, now);
    let mut reader = Reader::new(log, state.next, quirk);
    while let Some(record) = reader.next(state.next) {
        now = now.max(record.arrival_us);
        state
            .process(&input(&record), &decoder, &downstream.store, now)
            .expect("process");
    }
    // A round at the end of the input (snapshots of the open windows, covering the last
    // offset), then the partition idles: wall-clock time closes every window, and the finals
    // cover what the snapshots did.
    for step in 0..=3 {
        let later = now + step * 10 * MICROS_PER_MINUTE;
        assert!(checkpoint_round(
            &mut state,
            &mut downstream,
            later,
            None,
            &mut random
        ));
    }
    assert_eq!(state.aggregator.open_windows(), 0);
    downstream
}

/// Every window downstream equals the fold, and is final.
fn assert_exact(downstream: &Downstream, calls: &[Call], label: &str) {
    let expected = fold(calls);
    for (key, rollup) in &expected {
        let replicated = downstream.store.replicated(key).expect("replica read");
        let Some((stored, partition, _)) = replicated else {
            panic!("{label}: window {key:?} is missing downstream");
        };
        assert_eq!(partition, PARTITION);
        assert_eq!(
            stored.calls, rollup.calls,
            "{label}: calls of window {key:?}"
        );
        assert_eq!(&stored, rollup, "{label}: rollup of window {key:?}");
        assert!(
            !downstream.store.is_open(key).expect("replica read"),
            "{label}: window {key:?} is still open downstream"
        );
    }
}

#[test]
fn without_crashes_every_window_is_exact_and_final() {
    let (calls, log) = generate(7, 400);
    assert!(log.records.len() > calls.len(), "the log has duplicates");
    let downstream = run(&log, &[None], 25, false, 1);
    assert_exact(&downstream, &calls, "no crash");
}

#[test]
fn fetches_inside_a_batch_answered_with_the_next_batch_lose_nothing() {
    let (calls, log) = generate(11, 400);
    // Rebalances land inside batches: the new owner's first fetch gets the next batch.
    let stops = [
        None,
        Some(Stop::Rebalance(3)),
        None,
        Some(Stop::Rebalance(7)),
    ];
    let downstream = run(&log, &stops, 20, true, 2);
    assert_exact(&downstream, &calls, "test-broker fetches");
}

#[test]
fn a_crash_at_every_step_of_a_checkpoint_loses_and_doubles_nothing() {
    let (calls, log) = generate(23, 500);
    for stop in [
        Stop::BeforeRecords,
        Stop::AmidRecords(30),
        Stop::AmidRecords(70),
        Stop::BeforeCheckpoint,
        Stop::AfterCheckpoint,
    ] {
        for quirk in [false, true] {
            let stops = [None, None, Some(stop), None, Some(stop)];
            let downstream = run(&log, &stops, 17, quirk, 3);
            assert_exact(&downstream, &calls, &format!("{stop:?}, quirk {quirk}"));
        }
    }
}

#[test]
fn a_rebalance_at_every_record_loses_and_doubles_nothing() {
    let (calls, log) = generate(31, 160);
    for at in 0..12 {
        let stops = [None, Some(Stop::Rebalance(at))];
        let downstream = run(&log, &stops, 12, true, 4);
        assert_exact(
            &downstream,
            &calls,
            &format!("rebalance after {at} records"),
        );
    }
}

#[test]
fn a_late_call_emitted_before_a_crash_is_not_counted_again_by_the_next_owner() {
    let call = |second: i64, arrival_second: i64, status| Call {
        ts_us: BASE + second * MICROS_PER_SECOND,
        arrival_us: BASE + arrival_second * MICROS_PER_SECOND,
        merchant: "M".into(),
        api: "/v1/payments".into(),
        status,
        latency_ms: 5.0,
    };
    // Offsets 0..20: minute 0 on time; 20..30: minute 3, whose time closes minute 0 at the
    // first round (after offset 24); 30: a late call for minute 0 (a correction at the second
    // round, after offset 49, whose owner crashes before its checkpoint); 51: another late
    // call for minute 0, in the same round as the first for the next owner (its first round
    // comes after offset 56), which must add only this one to the emitted correction.
    let mut calls: Vec<Call> = (0..20).map(|second| call(second, second, 200)).collect();
    calls.extend((0..10).map(|index| call(180 + index, 180 + index, 200)));
    calls.push(call(30, 191, 500));
    calls.extend((0..20).map(|index| call(191 + index, 192 + index, 200)));
    calls.push(call(40, 213, 503));
    calls.extend((0..30).map(|index| call(213 + index, 214 + index, 200)));
    let log = in_order(&calls);
    let stops = [None, Some(Stop::BeforeCheckpoint), None];
    let downstream = run(&log, &stops, 25, false, 5);
    assert_exact(&downstream, &calls, "late calls around a crash");
}

fn stop_strategy() -> impl Strategy<Value = Option<Stop>> {
    prop_oneof![
        4 => Just(None),
        1 => Just(Some(Stop::BeforeRecords)),
        1 => (0u8..=100).prop_map(|kept| Some(Stop::AmidRecords(kept))),
        1 => Just(Some(Stop::BeforeCheckpoint)),
        1 => Just(Some(Stop::AfterCheckpoint)),
        1 => (0usize..30).prop_map(|after| Some(Stop::Rebalance(after))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn crashes_and_rebalances_anywhere_keep_every_window_exact(
        seed in 1u64..u64::MAX,
        calls in 50usize..300,
        stops in prop::collection::vec(stop_strategy(), 1..8),
        every in 3usize..40,
        quirk in any::<bool>(),
    ) {
        let (generated, log) = generate(seed, calls);
        let downstream = run(&log, &stops, every, quirk, seed);
        assert_exact(&downstream, &generated, "generated schedule");
        prop_assert!(downstream.delivered > 0);
    }
}
