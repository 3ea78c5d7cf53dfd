//! The aggregator against a plain fold over the same events.

use std::collections::BTreeMap;

use mm_model::rollup::{MERCHANT_TOTAL_API, Rollup, WindowKey};
use mm_model::time::{MICROS_PER_MINUTE, MICROS_PER_SECOND, minute_of};
use proptest::prelude::*;

use crate::{Aggregator, Call as WindowCall, Disposition, Origin, Round, WindowConfig};

#[derive(Debug, Clone)]
struct Call {
    partition: u32,
    ts_us: i64,
    arrival_us: i64,
    merchant: String,
    api: String,
    status: u16,
    latency_ms: f64,
}

const BASE: i64 = 1_795_791_600_000_000;

impl Call {
    fn as_window_call(&self) -> WindowCall<'_> {
        WindowCall {
            ts_us: self.ts_us,
            merchant: &self.merchant,
            api: &self.api,
            status: self.status,
            latency_ms: self.latency_ms,
        }
    }
}

/// Counts a call (merchant `M`) at `position` of partition 0.
fn count(
    aggregator: &mut Aggregator,
    position: i64,
    ts_us: i64,
    api: &str,
    status: u16,
    now_wall_us: i64,
) -> Disposition {
    count_on(
        aggregator,
        0,
        position,
        ts_us,
        ("M", api),
        status,
        now_wall_us,
    )
}

fn count_on(
    aggregator: &mut Aggregator,
    partition: u32,
    position: i64,
    ts_us: i64,
    (merchant, api): (&str, &str),
    status: u16,
    now_wall_us: i64,
) -> Disposition {
    aggregator.ingest(
        Origin {
            partition,
            position,
        },
        WindowCall {
            ts_us,
            merchant,
            api,
            status,
            latency_ms: 1.0 + f64::from(status % 7),
        },
        now_wall_us,
    )
}

fn call_strategy() -> impl Strategy<Value = Call> {
    (
        0u32..3,
        0i64..(20 * MICROS_PER_MINUTE),
        prop_oneof![8 => 0i64..(5 * MICROS_PER_SECOND), 2 => 0i64..(8 * MICROS_PER_MINUTE)],
        0usize..4,
        0usize..3,
        prop::sample::select(vec![200u16, 201, 400, 404, 429, 500, 503]),
        0.0f64..2_000.0,
    )
        .prop_map(
            |(partition, offset, delay, merchant, api, status, latency_ms)| Call {
                partition,
                ts_us: BASE + offset,
                arrival_us: BASE + offset + delay,
                merchant: format!("M{merchant}"),
                api: format!("/v1/api{api}"),
                status,
                latency_ms: (latency_ms * 1000.0).round() / 1000.0,
            },
        )
}

fn oracle(calls: &[Call]) -> BTreeMap<WindowKey, Rollup> {
    let mut expected = BTreeMap::new();
    for call in calls {
        for api in [call.api.as_str(), MERCHANT_TOTAL_API] {
            let key = WindowKey {
                merchant: call.merchant.clone(),
                api: api.to_owned(),
                minute: minute_of(call.ts_us),
            };
            expected
                .entry(key)
                .or_insert_with(Rollup::default)
                .record(call.status, call.latency_ms);
        }
    }
    expected
}

/// Runs calls in arrival order, in batches, with wall-clock ticks between them, and plays the
/// part of the store: final rollups plus merged corrections. Also checks that each window
/// closes once.
fn run(
    calls: &mut [Call],
    batch: usize,
    config: WindowConfig,
) -> (BTreeMap<WindowKey, Rollup>, u64) {
    calls.sort_by_key(|call| call.arrival_us);
    let mut aggregator = Aggregator::new(config);
    let mut store: BTreeMap<WindowKey, Rollup> = BTreeMap::new();
    // Provisional values of open windows, as a checkpoint would write them.
    let mut provisional: BTreeMap<WindowKey, Rollup> = BTreeMap::new();
    let mut late = 0;
    let absorb = |round: Round,
                  store: &mut BTreeMap<WindowKey, Rollup>,
                  provisional: &mut BTreeMap<WindowKey, Rollup>| {
        for closed in round.finals {
            let previous = store.insert(closed.key.clone(), closed.rollup);
            assert!(previous.is_none(), "window {:?} closed twice", closed.key);
        }
        for correction in round.corrections {
            store
                .entry(correction.key)
                .or_default()
                .merge(&correction.late);
        }
        let mut totals = Vec::new();
        for changed in round.open {
            if changed.key.api == MERCHANT_TOTAL_API {
                totals.push((changed.key, changed.rollup));
            } else {
                provisional.insert(changed.key, changed.rollup);
            }
        }
        for (key, total) in totals {
            let mut merged = Rollup::default();
            for (_, rollup) in provisional.iter().filter(|(api_key, _)| {
                api_key.merchant == key.merchant && api_key.minute == key.minute
            }) {
                merged.merge(rollup);
            }
            assert_eq!(total, merged, "provisional merchant total of {key:?}");
        }
    };
    for (position, chunk) in calls.chunks(batch.max(1)).enumerate() {
        for call in chunk {
            let disposition = aggregator.ingest(
                Origin {
                    partition: call.partition,
                    position: position as i64,
                },
                call.as_window_call(),
                call.arrival_us,
            );
            if disposition == Disposition::Late {
                late += 1;
            }
        }
        let now = chunk.last().map_or(BASE, |call| call.arrival_us);
        let round = aggregator.checkpoint(now);
        absorb(round, &mut store, &mut provisional);
    }
    // Traffic stops: wall-clock time alone must close every remaining window.
    let end = calls
        .iter()
        .map(|call| call.arrival_us)
        .max()
        .unwrap_or(BASE);
    aggregator.advance(end + 1);
    let round = aggregator
        .checkpoint(end + config.idle_timeout_us + config.grace_us + 2 * MICROS_PER_MINUTE);
    absorb(round, &mut store, &mut provisional);
    assert_eq!(
        aggregator.open_windows(),
        0,
        "idle time must close every window"
    );
    assert_eq!(aggregator.stats().late_events, late);
    (store, late)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn closed_rollups_plus_corrections_equal_the_fold(
        mut calls in prop::collection::vec(call_strategy(), 0..600),
        batch in 1usize..50,
        grace_seconds in 0i64..240,
    ) {
        let config = WindowConfig { grace_us: grace_seconds * MICROS_PER_SECOND, idle_timeout_us: 10 * MICROS_PER_SECOND };
        let expected = oracle(&calls);
        let (stored, _late) = run(&mut calls, batch, config);
        prop_assert_eq!(stored.len(), expected.len());
        for (key, rollup) in &expected {
            prop_assert_eq!(stored.get(key), Some(rollup), "window {:?}", key);
        }
    }

    #[test]
    fn percentiles_stay_within_the_sketch_bound(mut calls in prop::collection::vec(call_strategy(), 1..300)) {
        let (stored, _) = run(&mut calls, 7, WindowConfig::default());
        for (key, rollup) in &stored {
            let mut latencies: Vec<f64> = calls
                .iter()
                .filter(|call| call.merchant == key.merchant && minute_of(call.ts_us) == key.minute)
                .filter(|call| key.api == MERCHANT_TOTAL_API || call.api == key.api)
                .map(|call| (call.latency_ms * 1000.0).round() / 1000.0)
                .collect();
            latencies.sort_by(f64::total_cmp);
            for q in [0.5, 0.95, 0.99] {
                let truth = latencies[(q * (latencies.len() - 1) as f64).floor() as usize];
                let estimate = rollup.quantile_ms(q).expect("non-empty window");
                prop_assert!((estimate - truth).abs() <= 0.01 * truth + 1e-9, "{key:?} q={q}: {estimate} vs {truth}");
            }
        }
    }
}

#[test]
fn late_events_become_corrections_not_drops() {
    let minute = MICROS_PER_MINUTE;
    let config = WindowConfig {
        grace_us: minute,
        idle_timeout_us: 10 * MICROS_PER_SECOND,
    };
    let mut aggregator = Aggregator::new(config);
    count(&mut aggregator, 1, BASE, "a", 200, BASE);
    count(
        &mut aggregator,
        2,
        BASE + 3 * minute,
        "a",
        200,
        BASE + 3 * minute,
    );
    let round = aggregator.checkpoint(BASE + 3 * minute);
    assert!(
        round
            .finals
            .iter()
            .any(|window| window.key.minute == minute_of(BASE))
    );
    let disposition = count(&mut aggregator, 7, BASE + 1, "a", 500, BASE + 3 * minute);
    assert_eq!(disposition, Disposition::Late);
    let disposition = count(&mut aggregator, 5, BASE + 2, "a", 200, BASE + 3 * minute);
    assert_eq!(disposition, Disposition::Late);
    assert!(aggregator.has_corrections());
    let round = aggregator.checkpoint(BASE + 3 * minute);
    assert_eq!(
        round.corrections.len(),
        2,
        "the API window and the merchant total"
    );
    for correction in &round.corrections {
        assert_eq!(correction.key.minute, minute_of(BASE));
        assert_eq!(correction.late.calls, 2, "only the late calls");
        assert_eq!(
            correction.last_position, 7,
            "the largest position among them"
        );
    }
    assert!(!aggregator.has_corrections());
    assert!(
        aggregator
            .checkpoint(BASE + 3 * minute)
            .corrections
            .is_empty()
    );
}

#[test]
fn late_calls_already_counted_downstream_are_not_collected_again() {
    let minute = MICROS_PER_MINUTE;
    let mut aggregator = Aggregator::new(WindowConfig::default());
    count(&mut aggregator, 1, BASE, "a", 200, BASE);
    let round = aggregator.checkpoint(BASE + 10 * minute);
    assert_eq!(round.finals.len(), 2);
    assert!(aggregator.is_closed(minute_of(BASE)));
    // A record downstream holds this call for the API window, not for the merchant total.
    let call = WindowCall {
        ts_us: BASE + 5,
        merchant: "M",
        api: "a",
        status: 500,
        latency_ms: 3.0,
    };
    let collected = aggregator.add_late(9, call, |key| key.api == "a");
    assert!(collected);
    let round = aggregator.checkpoint(BASE + 10 * minute);
    assert_eq!(round.corrections.len(), 1);
    assert_eq!(round.corrections[0].key.api, MERCHANT_TOTAL_API);
    assert_eq!(round.corrections[0].last_position, 9);
    assert!(!aggregator.add_late(10, call, |_| true));
    assert!(
        aggregator
            .checkpoint(BASE + 10 * minute)
            .corrections
            .is_empty()
    );
}

#[test]
fn a_round_hands_out_changed_open_windows_once() {
    let mut aggregator = Aggregator::new(WindowConfig::default());
    count(&mut aggregator, 1, BASE, "a", 200, BASE);
    count(&mut aggregator, 1, BASE, "b", 404, BASE);
    let round = aggregator.checkpoint(BASE);
    assert!(round.finals.is_empty());
    let mut keys: Vec<&str> = round
        .open
        .iter()
        .map(|window| window.key.api.as_str())
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, [MERCHANT_TOTAL_API, "a", "b"]);
    let total = round
        .open
        .iter()
        .find(|window| window.key.api == MERCHANT_TOTAL_API)
        .expect("merchant total");
    assert_eq!(total.rollup.calls, 2);
    assert!(
        aggregator.checkpoint(BASE).is_empty(),
        "nothing changed since"
    );
    count(&mut aggregator, 2, BASE, "b", 200, BASE);
    let round = aggregator.checkpoint(BASE);
    let mut keys: Vec<&str> = round
        .open
        .iter()
        .map(|window| window.key.api.as_str())
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, [MERCHANT_TOTAL_API, "b"], "only what changed");
}

#[test]
fn an_idle_partition_does_not_hold_back_the_watermark_forever() {
    let mut aggregator = Aggregator::new(WindowConfig::default());
    count_on(&mut aggregator, 0, 1, BASE, ("M", "a"), 200, BASE);
    let later = BASE + 10 * MICROS_PER_MINUTE;
    count_on(&mut aggregator, 1, 1, later, ("M", "a"), 200, later);
    let round = aggregator.checkpoint(later);
    // Partition 0 has been idle for ten minutes of wall time: it follows the wall clock.
    assert_eq!(aggregator.watermark_us(), BASE + 7 * MICROS_PER_MINUTE);
    assert!(
        round
            .finals
            .iter()
            .any(|window| window.key.minute == minute_of(BASE))
    );
}

#[test]
fn future_timestamps_do_not_run_the_watermark_ahead_of_the_wall_clock() {
    let mut aggregator = Aggregator::new(WindowConfig::default());
    count(
        &mut aggregator,
        1,
        BASE + 60 * MICROS_PER_MINUTE,
        "a",
        200,
        BASE,
    );
    count(&mut aggregator, 2, BASE, "a", 200, BASE);
    aggregator.advance(BASE);
    assert_eq!(aggregator.watermark_us(), BASE - 3 * MICROS_PER_MINUTE);
    assert_eq!(aggregator.stats().late_events, 0);
}

#[test]
fn compacting_series_keeps_open_windows_and_their_totals() {
    let mut aggregator = Aggregator::new(WindowConfig::default());
    count_on(&mut aggregator, 0, 1, BASE, ("Gone", "a"), 200, BASE);
    let later = BASE + 10 * MICROS_PER_MINUTE;
    assert_eq!(aggregator.checkpoint(later).finals.len(), 2);
    count_on(&mut aggregator, 0, 2, later, ("Kept", "b"), 500, later);
    assert_eq!(aggregator.compact_series(), 2);
    count_on(&mut aggregator, 0, 3, later, ("Kept", "b"), 200, later);
    let finals = aggregator.checkpoint(BASE + 30 * MICROS_PER_MINUTE).finals;
    assert_eq!(finals.len(), 2);
    assert!(finals.iter().all(|window| window.rollup.calls == 2));
}
