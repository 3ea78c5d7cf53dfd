//! The aggregator against a plain fold over the same events.

use std::collections::BTreeMap;

use mm_model::rollup::{MERCHANT_TOTAL_API, Rollup, WindowKey};
use mm_model::time::{MICROS_PER_MINUTE, MICROS_PER_SECOND, minute_of};
use proptest::prelude::*;

use crate::{Aggregator, Disposition, WindowConfig};

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
    let absorb = |aggregator: &mut Aggregator, store: &mut BTreeMap<WindowKey, Rollup>| {
        for closed in aggregator.take_closed() {
            let previous = store.insert(closed.key.clone(), closed.rollup);
            assert!(previous.is_none(), "window {:?} closed twice", closed.key);
        }
        for (key, delta) in aggregator.take_corrections() {
            store.entry(key).or_default().merge(&delta);
        }
    };
    for chunk in calls.chunks(batch.max(1)) {
        for call in chunk {
            let disposition = aggregator.ingest(
                call.partition,
                call.ts_us,
                &call.merchant,
                &call.api,
                call.status,
                call.latency_ms,
                call.arrival_us,
            );
            if disposition == Disposition::Late {
                late += 1;
            }
        }
        let now = chunk.last().map_or(BASE, |call| call.arrival_us);
        aggregator.advance(0, now);
        absorb(&mut aggregator, &mut store);
        let mut totals = Vec::new();
        aggregator.drain_dirty(|merchant, api, minute, rollup| {
            let key = WindowKey {
                merchant: merchant.to_owned(),
                api: api.to_owned(),
                minute,
            };
            if api == MERCHANT_TOTAL_API {
                totals.push((key, rollup.clone()));
            } else {
                provisional.insert(key, rollup.clone());
            }
        });
        for (key, total) in totals {
            let mut merged = Rollup::default();
            for (_, rollup) in provisional.iter().filter(|(api_key, _)| {
                api_key.merchant == key.merchant && api_key.minute == key.minute
            }) {
                merged.merge(rollup);
            }
            assert_eq!(total, merged, "provisional merchant total of {key:?}");
        }
    }
    // Traffic stops: wall-clock time alone must close every remaining window.
    let end = calls
        .iter()
        .map(|call| call.arrival_us)
        .max()
        .unwrap_or(BASE);
    aggregator.advance(0, end + 1);
    aggregator.advance(
        0,
        end + config.idle_timeout_us + config.grace_us + 2 * MICROS_PER_MINUTE,
    );
    absorb(&mut aggregator, &mut store);
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
    aggregator.ingest(0, BASE, "M", "a", 200, 1.0, BASE);
    aggregator.ingest(0, BASE + 3 * minute, "M", "a", 200, 1.0, BASE + 3 * minute);
    aggregator.advance(0, BASE + 3 * minute);
    let closed = aggregator.take_closed();
    assert!(
        closed
            .iter()
            .any(|window| window.key.minute == minute_of(BASE))
    );
    let disposition = aggregator.ingest(0, BASE + 1, "M", "a", 500, 9.0, BASE + 3 * minute);
    assert_eq!(disposition, Disposition::Late);
    let corrections = aggregator.take_corrections();
    assert_eq!(
        corrections.len(),
        2,
        "the API window and the merchant total"
    );
    assert!(
        corrections
            .iter()
            .all(|(key, delta)| key.minute == minute_of(BASE) && delta.calls == 1)
    );
}

#[test]
fn an_idle_partition_does_not_hold_back_the_watermark_forever() {
    let config = WindowConfig::default();
    let mut aggregator = Aggregator::new(config);
    aggregator.ingest(0, BASE, "M", "a", 200, 1.0, BASE);
    aggregator.ingest(
        1,
        BASE + 10 * MICROS_PER_MINUTE,
        "M",
        "a",
        200,
        1.0,
        BASE + 10 * MICROS_PER_MINUTE,
    );
    aggregator.advance(0, BASE + 10 * MICROS_PER_MINUTE);
    // Partition 0 has been idle for ten minutes of wall time: it follows the wall clock.
    assert_eq!(aggregator.watermark_us(), BASE + 7 * MICROS_PER_MINUTE);
    assert!(
        aggregator
            .take_closed()
            .iter()
            .any(|window| window.key.minute == minute_of(BASE))
    );
}

#[test]
fn future_timestamps_do_not_run_the_watermark_ahead_of_the_wall_clock() {
    let mut aggregator = Aggregator::new(WindowConfig::default());
    aggregator.ingest(0, BASE + 60 * MICROS_PER_MINUTE, "M", "a", 200, 1.0, BASE);
    aggregator.ingest(0, BASE, "M", "a", 200, 1.0, BASE);
    aggregator.advance(0, BASE);
    assert_eq!(aggregator.watermark_us(), BASE - 3 * MICROS_PER_MINUTE);
    assert_eq!(aggregator.stats().late_events, 0);
}

#[test]
fn compacting_series_keeps_open_windows_and_their_totals() {
    let mut aggregator = Aggregator::new(WindowConfig::default());
    aggregator.ingest(0, BASE, "Gone", "a", 200, 1.0, BASE);
    aggregator.advance(0, BASE + 10 * MICROS_PER_MINUTE);
    assert_eq!(aggregator.take_closed().len(), 2);
    aggregator.ingest(
        0,
        BASE + 10 * MICROS_PER_MINUTE,
        "Kept",
        "b",
        500,
        2.0,
        BASE + 10 * MICROS_PER_MINUTE,
    );
    assert_eq!(aggregator.compact_series(), 2);
    aggregator.ingest(
        0,
        BASE + 10 * MICROS_PER_MINUTE,
        "Kept",
        "b",
        200,
        3.0,
        BASE + 10 * MICROS_PER_MINUTE,
    );
    aggregator.advance(0, BASE + 30 * MICROS_PER_MINUTE);
    let closed = aggregator.take_closed();
    assert_eq!(closed.len(), 2);
    assert!(closed.iter().all(|window| window.rollup.calls == 2));
}
