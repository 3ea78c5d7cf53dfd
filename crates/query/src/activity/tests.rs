use mm_model::rollup::WindowKey;
use mm_storage::rollups::{CheckpointBatch, RollupStore};

use super::*;

const MINUTE: i64 = 29_921_220; // an hour boundary: 2026-11-21T15:00Z

/// (merchant, api, minute, calls as (status, latency)).
type Window<'a> = (&'a str, &'a str, i64, &'a [(u16, f64)]);

fn store_with(windows: &[Window<'_>]) -> (tempfile::TempDir, RollupStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RollupStore::open(dir.path()).expect("opens");
    let mut finals = Vec::new();
    let mut totals: BTreeMap<(String, i64), Rollup> = BTreeMap::new();
    for (merchant, api, minute, calls) in windows {
        let mut rollup = Rollup::default();
        calls
            .iter()
            .for_each(|(status, latency)| rollup.record(*status, *latency));
        totals
            .entry((merchant.to_string(), *minute))
            .or_default()
            .merge(&rollup);
        finals.push((
            WindowKey {
                merchant: merchant.to_string(),
                api: api.to_string(),
                minute: *minute,
            },
            rollup,
        ));
    }
    for ((merchant, minute), rollup) in totals {
        finals.push((
            WindowKey {
                merchant,
                api: String::new(),
                minute,
            },
            rollup,
        ));
    }
    let prepared = store
        .prepare(CheckpointBatch {
            finals,
            ..CheckpointBatch::default()
        })
        .expect("prepares");
    store.commit(prepared).expect("commits");
    (dir, store)
}

fn period(from_minute: i64, to_minute: i64) -> Period {
    Period {
        from_us: from_minute * MICROS_PER_MINUTE,
        to_us: to_minute * MICROS_PER_MINUTE,
    }
}

#[test]
fn activity_fills_empty_minutes_and_merges_steps() {
    let (_dir, store) = store_with(&[
        ("M", "a", MINUTE + 1, &[(200, 10.0), (500, 20.0)]),
        ("M", "b", MINUTE + 1, &[(404, 5.0)]),
        ("M", "a", MINUTE + 7, &[(200, 30.0)]),
        ("Other", "a", MINUTE + 1, &[(200, 1.0)]),
    ]);
    let minutes = activity(
        &store,
        "M",
        None,
        period(MINUTE, MINUTE + 10),
        Step::OneMinute,
    )
    .expect("answers");
    assert_eq!(minutes.buckets.len(), 10);
    assert_eq!(minutes.buckets[0].calls, 0);
    assert_eq!(minutes.buckets[0].p99_ms, None);
    assert_eq!(minutes.buckets[1].calls, 3);
    assert_eq!(minutes.buckets[1].status_5xx, 1);
    assert_eq!(minutes.buckets[1].status_4xx, 1);
    assert_eq!(
        minutes.buckets[1].start,
        time::format_rfc3339((MINUTE + 1) * MICROS_PER_MINUTE)
    );
    assert_eq!(minutes.buckets[7].max_ms, Some(30.0));

    let fives = activity(
        &store,
        "M",
        Some("a"),
        period(MINUTE, MINUTE + 10),
        Step::FiveMinutes,
    )
    .expect("answers");
    assert_eq!(fives.buckets.len(), 2);
    assert_eq!(fives.buckets[0].calls, 2);
    assert_eq!(fives.buckets[1].calls, 1);
    assert!((fives.buckets[0].error_rate - 0.5).abs() < 1e-12);

    let too_many = activity(
        &store,
        "M",
        None,
        period(MINUTE, MINUTE + 40_000),
        Step::OneMinute,
    );
    assert!(matches!(too_many, Err(QueryError::InvalidParameter(_))));
}

#[test]
fn api_table_counts_each_status_code() {
    let (_dir, store) = store_with(&[
        (
            "M",
            "a",
            MINUTE + 1,
            &[(200, 10.0), (500, 20.0), (500, 25.0)],
        ),
        ("M", "a", MINUTE + 2, &[(200, 10.0)]),
        ("M", "b", MINUTE + 1, &[(404, 5.0)]),
        ("M", "a", MINUTE + 30, &[(200, 10.0)]),
    ]);
    let table = apis(&store, "M", period(MINUTE, MINUTE + 10), ApiSort::Calls).expect("answers");
    assert_eq!(table.apis.len(), 2);
    assert_eq!(table.apis[0].api, "a");
    assert_eq!(table.apis[0].calls, 4);
    assert_eq!(table.apis[0].status.get("200"), Some(&2));
    assert_eq!(table.apis[0].status.get("500"), Some(&2));
    assert_eq!(table.apis[0].max_ms, Some(25.0));
    assert_eq!(table.apis[1].status.get("404"), Some(&1));
    let by_name = apis(&store, "M", period(MINUTE, MINUTE + 10), ApiSort::Errors).expect("answers");
    assert_eq!(by_name.apis[0].api, "a");
}

#[test]
fn merchants_rank_by_the_chosen_measure() {
    let (_dir, store) = store_with(&[
        (
            "Busy",
            "a",
            MINUTE + 1,
            &[(200, 1.0), (200, 1.0), (200, 1.0), (500, 1.0)],
        ),
        ("Broken", "a", MINUTE + 61, &[(500, 1.0), (503, 1.0)]),
        ("Quiet", "a", MINUTE + 90, &[(200, 1.0)]),
    ]);
    let by_calls = merchants(
        &store,
        period(MINUTE, MINUTE + 120),
        MerchantSort::Calls,
        10,
    )
    .expect("answers");
    let names: Vec<&str> = by_calls
        .merchants
        .iter()
        .map(|row| row.merchant.as_str())
        .collect();
    assert_eq!(names, vec!["Busy", "Broken", "Quiet"]);
    let by_rate = merchants(
        &store,
        period(MINUTE, MINUTE + 120),
        MerchantSort::ErrorRate,
        1,
    )
    .expect("answers");
    assert_eq!(by_rate.merchants[0].merchant, "Broken");
    assert_eq!(by_rate.merchants[0].errors, 2);
    assert_eq!(by_rate.merchants.len(), 1);
}
