use std::collections::{BTreeMap, BTreeSet};

use mm_model::rollup::{MERCHANT_TOTAL_API, Rollup, WindowKey};

use super::held::PENDING_PREFIX;
use super::{HOUR_TAG, HOURS_BUILT_KEY, Series, hour_of};
use crate::rollups::{CheckpointBatch, Replicated, RollupStore, rollup_key, unsortable};

/// 2026-11-21T23:00Z: the hours straddle a UTC day boundary.
const HOUR: i64 = 29_921_700;
const APIS: [&str; 3] = ["/v1/payments", "/v1/refunds", "/v1/tokens"];

fn key(merchant: &str, api: &str, minute: i64) -> WindowKey {
    WindowKey {
        merchant: merchant.into(),
        api: api.into(),
        minute,
    }
}

/// A small deterministic generator.
struct Calls(u64);

impl Calls {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }

    fn rollup(&mut self) -> Rollup {
        let mut rollup = Rollup::default();
        for _ in 0..1 + self.next(4) {
            let status = [200, 201, 404, 500, 503][self.next(5) as usize];
            rollup.record(status, self.next(200_000) as f64 / 100.0);
        }
        rollup
    }
}

/// The calls of `series` in `[from, to)` per (api, bucket of `bucket` minutes), read through
/// hour rollups.
fn by_hours(
    store: &RollupStore,
    series: Series<'_>,
    from: i64,
    to: i64,
    bucket: i64,
) -> BTreeMap<(String, i64), Rollup> {
    let mut buckets: BTreeMap<(String, i64), Rollup> = BTreeMap::new();
    store
        .scan_hours("M", series, from, to, |api, minute, view| {
            buckets
                .entry((api.to_owned(), minute.div_euclid(bucket) * bucket))
                .or_default()
                .merge(&view.to_rollup().expect("decodes"));
        })
        .expect("scans hours");
    buckets.retain(|_, rollup| rollup.calls > 0);
    buckets
}

/// The same from the minute rollups alone.
fn by_minutes(
    store: &RollupStore,
    series: Series<'_>,
    from: i64,
    to: i64,
    bucket: i64,
) -> BTreeMap<(String, i64), Rollup> {
    let apis: Vec<&str> = match series {
        Series::One(api) => vec![api],
        Series::EveryApi => APIS.to_vec(),
    };
    let mut buckets: BTreeMap<(String, i64), Rollup> = BTreeMap::new();
    for api in apis {
        store
            .scan_series("M", api, from, to, |minute, view| {
                buckets
                    .entry((api.to_owned(), minute.div_euclid(bucket) * bucket))
                    .or_default()
                    .merge(&view.to_rollup().expect("decodes"));
            })
            .expect("scans minutes");
    }
    buckets.retain(|_, rollup| rollup.calls > 0);
    buckets
}

/// Every range shape a query asks for: aligned hours and days, partial hours at either end,
/// within one hour, across the day boundary. Returns how many calls were compared.
fn assert_hours_match_minutes(store: &RollupStore, what: &str) -> u64 {
    let mut compared = 0;
    let ranges = [
        (HOUR - 60, HOUR + 180, 60),
        (HOUR - 1440, HOUR + 1440, 1440),
        (HOUR - 37, HOUR + 95, 60),
        (HOUR + 7, HOUR + 52, 60),
        (HOUR + 59, HOUR + 61, 60),
    ];
    for (from, to, bucket) in ranges {
        for series in [
            Series::One(MERCHANT_TOTAL_API),
            Series::One(APIS[0]),
            Series::EveryApi,
        ] {
            let minutes = by_minutes(store, series, from, to, bucket);
            compared += minutes.values().map(|rollup| rollup.calls).sum::<u64>();
            assert_eq!(
                by_hours(store, series, from, to, bucket),
                minutes,
                "{what}: {series:?} over {from}..{to} by {bucket} minutes"
            );
        }
    }
    compared
}

/// Windows of every series of merchant `M` over three hours around the day boundary.
fn windows(calls: &mut Calls, minutes: std::ops::Range<i64>) -> Vec<(WindowKey, Rollup)> {
    let mut windows = Vec::new();
    for minute in minutes {
        let mut total = Rollup::default();
        for api in APIS {
            if calls.next(3) == 0 {
                continue;
            }
            let rollup = calls.rollup();
            total.merge(&rollup);
            windows.push((key("M", api, minute), rollup));
        }
        if total.calls > 0 {
            windows.push((key("M", MERCHANT_TOTAL_API, minute), total));
        }
    }
    windows
}

fn commit(store: &RollupStore, batch: CheckpointBatch) {
    let prepared = store.prepare(batch).expect("prepares");
    store.commit(prepared).expect("commits");
}

#[test]
fn hours_read_like_their_minutes_through_snapshots_closes_corrections_and_imports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RollupStore::open(dir.path()).expect("opens");
    let mut calls = Calls(0x9e37_79b9_7f4a_7c15);
    // Windows that open, take more calls in later snapshots, then close in slices.
    let first = windows(&mut calls, HOUR - 60..HOUR + 120);
    commit(
        &store,
        CheckpointBatch {
            open: first.clone(),
            ..CheckpointBatch::default()
        },
    );
    assert!(assert_hours_match_minutes(&store, "all open") > 0);
    let mut grown = first.clone();
    for (_, rollup) in grown.iter_mut().step_by(3) {
        rollup.merge(&calls.rollup());
    }
    commit(
        &store,
        CheckpointBatch {
            open: grown.clone(),
            ..CheckpointBatch::default()
        },
    );
    for cut in [HOUR - 20, HOUR + 45, HOUR + 120] {
        let (closing, open): (Vec<_>, Vec<_>) =
            grown.iter().cloned().partition(|(key, _)| key.minute < cut);
        commit(
            &store,
            CheckpointBatch {
                finals: closing,
                open,
                ..CheckpointBatch::default()
            },
        );
        grown.retain(|(key, _)| key.minute >= cut);
        assert_hours_match_minutes(&store, &format!("closed up to {cut}"));
    }
    // Late calls into closed windows, some of them closing in the same batch.
    let late: Vec<(WindowKey, Rollup)> = first
        .iter()
        .step_by(4)
        .map(|(key, _)| (key.clone(), calls.rollup()))
        .collect();
    commit(
        &store,
        CheckpointBatch {
            corrections: late,
            finals: windows(&mut calls, HOUR + 120..HOUR + 130),
            ..CheckpointBatch::default()
        },
    );
    assert_hours_match_minutes(&store, "corrected");
    // An import adding to final windows, to no window, to windows left open, and reopening
    // final windows a starting server would still count into.
    commit(
        &store,
        CheckpointBatch {
            open: windows(&mut calls, HOUR + 130..HOUR + 140),
            ..CheckpointBatch::default()
        },
    );
    let imported = windows(&mut calls, HOUR - 90..HOUR + 140);
    let mut memo = store.import_memo().expect("memo");
    store
        .import(&imported, HOUR + 125, &[("test", b"done")], &mut memo)
        .expect("imports");
    assert_hours_match_minutes(&store, "imported");
    drop(store);
    let store = RollupStore::open(dir.path()).expect("reopens");
    assert_hours_match_minutes(&store, "reopened");
}

fn replicated(api: &str, minute: i64, rollup: Rollup, partition: i32, covers: i64) -> Replicated {
    Replicated {
        key: key("M", api, minute),
        rollup,
        partition,
        covers,
        open: false,
    }
}

#[test]
fn replicated_finals_move_their_hour_by_the_calls_they_gained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RollupStore::open(dir.path()).expect("opens");
    let mut calls = Calls(0x2545_f491_4f6c_dd1d);
    let minute = HOUR + 10;
    let mut window = calls.rollup();
    let mut neighbour = calls.rollup();
    let apply = |records: Vec<Replicated>| {
        store
            .apply_replicated(records, "activity", &[])
            .expect("applies");
    };
    // A snapshot, then the final covering more, and a final for another minute of the hour.
    let mut snapshot = replicated(MERCHANT_TOTAL_API, minute, window.clone(), 0, 5);
    snapshot.open = true;
    apply(vec![snapshot]);
    assert_hours_match_minutes(&store, "snapshot");
    window.merge(&calls.rollup());
    apply(vec![
        replicated(MERCHANT_TOTAL_API, minute, window.clone(), 0, 9),
        replicated(MERCHANT_TOTAL_API, minute + 1, neighbour.clone(), 0, 9),
    ]);
    assert_hours_match_minutes(&store, "final");
    // Corrections: finals covering more, holding the earlier finals.
    window.merge(&calls.rollup());
    neighbour.merge(&calls.rollup());
    apply(vec![
        replicated(MERCHANT_TOTAL_API, minute, window.clone(), 0, 12),
        replicated(MERCHANT_TOTAL_API, minute + 1, neighbour.clone(), 0, 12),
    ]);
    assert_hours_match_minutes(&store, "corrected");
    let hour = by_hours(&store, Series::One(MERCHANT_TOTAL_API), HOUR, HOUR + 60, 60);
    let mut expected = window.clone();
    expected.merge(&neighbour);
    assert_eq!(
        hour.get(&(String::new(), HOUR)),
        Some(&expected),
        "the hour holds both corrected minutes once"
    );
    // A re-partitioned topic: a final from another partition that does not hold the stored one.
    apply(vec![replicated(
        MERCHANT_TOTAL_API,
        minute,
        calls.rollup(),
        1,
        1,
    )]);
    assert!(assert_hours_match_minutes(&store, "replaced by another partition's final") > 0);
}

#[test]
fn a_store_written_before_hour_rollups_gets_them_built_when_opened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut calls = Calls(0x1234_5678_9abc_def1);
    {
        let store = RollupStore::open(dir.path()).expect("opens");
        commit(
            &store,
            CheckpointBatch {
                finals: windows(&mut calls, HOUR - 60..HOUR + 100),
                open: windows(&mut calls, HOUR + 100..HOUR + 120),
                ..CheckpointBatch::default()
            },
        );
        // What a store of an earlier version holds: no hour rollups, no marker.
        let inner = store.store().expect("open");
        let mut erase = inner.db.batch();
        for (_, day) in inner.days_between(HOUR - 1440, HOUR + 1440) {
            for guard in day.index.prefix([HOUR_TAG]) {
                erase.remove(&day.index, guard.key().expect("key"));
            }
        }
        erase.remove(&inner.meta, HOURS_BUILT_KEY);
        erase.commit().expect("erases");
        let read = by_hours(&store, Series::EveryApi, HOUR - 60, HOUR + 120, 60);
        assert_ne!(
            read,
            by_minutes(&store, Series::EveryApi, HOUR - 60, HOUR + 120, 60),
            "without hour rollups whole hours read as empty"
        );
    }
    let store = RollupStore::open(dir.path()).expect("reopens");
    assert!(assert_hours_match_minutes(&store, "built at open") > 0);
    assert_eq!(hour_of(HOUR + 59), HOUR);
}

#[test]
fn a_window_closing_while_a_reader_reads_is_counted_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RollupStore::open(dir.path()).expect("opens");
    let mut calls = Calls(0x0dd_b1a5_e5ca_1ab1);
    let open = windows(&mut calls, HOUR..HOUR + 30);
    commit(
        &store,
        CheckpointBatch {
            open: open.clone(),
            ..CheckpointBatch::default()
        },
    );
    commit(
        &store,
        CheckpointBatch {
            finals: open.clone(),
            ..CheckpointBatch::default()
        },
    );
    // The moment between a close's commit and its leaving the open set, held still: the
    // windows are final in the store and in their hour, and still listed as open.
    let inner = store.store().expect("open");
    inner.open_keys.write().expect("lock").extend(
        open.iter()
            .map(|(key, _)| rollup_key(key).into_boxed_slice()),
    );
    assert!(assert_hours_match_minutes(&store, "closing") > 0);
}

#[test]
fn an_import_in_units_adds_each_unit_to_what_the_store_and_its_earlier_units_hold() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = RollupStore::open(dir.path()).expect("opens");
    let mut calls = Calls(0x5eed_1234);
    let mut expected: BTreeMap<WindowKey, Rollup> = BTreeMap::new();
    let mut add = |windows: &[(WindowKey, Rollup)]| {
        for (key, rollup) in windows {
            expected.entry(key.clone()).or_default().merge(rollup);
        }
    };
    // The day before the boundary is held before the import begins; the one after is not.
    let held = windows(&mut calls, HOUR - 90..HOUR - 10);
    add(&held);
    commit(
        &store,
        CheckpointBatch {
            finals: held,
            ..CheckpointBatch::default()
        },
    );
    let mut memo = store.import_memo().expect("memo");
    // Units that revisit each other's windows on both days, as the ends of units do.
    for (unit, minutes) in [
        HOUR - 120..HOUR + 30,
        HOUR - 30..HOUR + 90,
        HOUR + 20..HOUR + 100,
        HOUR - 50..HOUR + 60,
    ]
    .into_iter()
    .enumerate()
    {
        let imported = windows(&mut calls, minutes);
        add(&imported);
        store
            .import(
                &imported,
                HOUR + 1_000,
                &[("test", format!("{unit}").as_bytes())],
                &mut memo,
            )
            .expect("imports");
    }
    let check = |store: &RollupStore, what: &str| {
        for api in APIS.into_iter().chain([MERCHANT_TOTAL_API]) {
            let mut stored = BTreeMap::new();
            store
                .scan_series("M", api, HOUR - 200, HOUR + 200, |minute, view| {
                    stored.insert(key("M", api, minute), view.to_rollup().expect("decodes"));
                })
                .expect("scans");
            let wanted: BTreeMap<WindowKey, Rollup> = expected
                .iter()
                .filter(|(key, _)| key.api == api)
                .map(|(key, rollup)| (key.clone(), rollup.clone()))
                .collect();
            assert_eq!(
                stored, wanted,
                "{what}: every window of {api} holds all its calls"
            );
        }
        let ranked: u64 = store
            .merchant_counts(HOUR - 200, HOUR + 200)
            .expect("ranks")
            .iter()
            .map(|entry| entry.counts.calls)
            .sum();
        let total: u64 = expected
            .iter()
            .filter(|(key, _)| key.api == MERCHANT_TOTAL_API)
            .map(|(_, rollup)| rollup.calls)
            .sum();
        assert_eq!(ranked, total, "{what}: the ranking counts every call");
        assert_hours_match_minutes(store, what);
    };
    check(&store, "imported");
    drop(store);
    check(&RollupStore::open(dir.path()).expect("reopens"), "reopened");
}

/// The hours with a series-hour marked unknown, and how many hours are marked pending.
fn unknown_hours(store: &RollupStore) -> (BTreeSet<i64>, usize) {
    let inner = store.store().expect("open");
    let mut unknown = BTreeSet::new();
    for (_, day) in inner.days_between(HOUR - 1440, HOUR + 1440) {
        for guard in day.index.prefix([HOUR_TAG]) {
            let (key, value) = guard.into_inner().expect("entry");
            if value.is_empty() {
                unknown.insert(unsortable(&key[key.len() - 8..]).expect("an hour"));
            }
        }
    }
    (unknown, inner.meta.prefix(PENDING_PREFIX).count())
}

/// A store in `dir` holding final windows over `minutes`.
fn store_holding(
    dir: &std::path::Path,
    calls: &mut Calls,
    minutes: std::ops::Range<i64>,
) -> RollupStore {
    let store = RollupStore::open(dir).expect("opens");
    commit(
        &store,
        CheckpointBatch {
            finals: windows(calls, minutes),
            ..CheckpointBatch::default()
        },
    );
    store
}

/// Imports `units` (all final) with `memo`, checking after each that the hours read exactly
/// like their minutes and that the hours `unknown_after` names are the ones marked unknown.
fn import_units(
    store: &RollupStore,
    memo: &mut crate::rollups::ImportMemo,
    calls: &mut Calls,
    units: &[(std::ops::Range<i64>, &[i64])],
) {
    for (unit, (minutes, unknown_after)) in units.iter().enumerate() {
        let imported = windows(calls, minutes.clone());
        store
            .import(&imported, HOUR + 1_000, &[("test", &[unit as u8])], memo)
            .expect("imports");
        let what = format!("after unit {unit}");
        assert!(assert_hours_match_minutes(store, &what) > 0);
        let (unknown, pending) = unknown_hours(store);
        let wanted: BTreeSet<i64> = unknown_after.iter().copied().collect();
        assert_eq!(unknown, wanted, "{what}: the hours held back");
        assert_eq!(pending, wanted.len(), "{what}: each marked pending");
    }
}

#[test]
fn an_import_writes_an_hour_whole_once_a_unit_reaches_a_later_hour_or_it_finishes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut calls = Calls(0xfeed_0123);
    // Stored before the import: the held hours start from these.
    let store = store_holding(dir.path(), &mut calls, HOUR - 70..HOUR + 20);
    let mut memo = store.import_memo().expect("memo");
    import_units(
        &store,
        &mut memo,
        &mut calls,
        &[
            (HOUR - 60..HOUR - 20, &[HOUR - 60]),
            // Reaches the next hour: the one before is written whole.
            (HOUR - 30..HOUR + 30, &[HOUR]),
            (HOUR + 10..HOUR + 50, &[HOUR]),
            // A unit going back to a written hour adds to it as stored.
            (HOUR - 40..HOUR + 55, &[HOUR]),
        ],
    );
    store.finish_import(&mut memo).expect("finishes");
    assert_eq!(unknown_hours(&store), (BTreeSet::new(), 0), "all written");
    assert!(assert_hours_match_minutes(&store, "finished") > 0);
    drop(store);
    let store = RollupStore::open(dir.path()).expect("reopens");
    assert_eq!(unknown_hours(&store), (BTreeSet::new(), 0));
    assert!(assert_hours_match_minutes(&store, "reopened") > 0);
}

#[test]
fn the_hours_an_import_left_held_when_it_stopped_are_rebuilt_when_the_store_opens() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let mut calls = Calls(0xdead_4567);
        let store = store_holding(dir.path(), &mut calls, HOUR - 10..HOUR + 40);
        let mut memo = store.import_memo().expect("memo");
        import_units(
            &store,
            &mut memo,
            &mut calls,
            &[
                (HOUR - 60..HOUR - 5, &[HOUR - 60]),
                (HOUR - 50..HOUR + 45, &[HOUR]),
            ],
        );
        // Stopped here: no finish.
    }
    let store = RollupStore::open(dir.path()).expect("reopens");
    assert_eq!(unknown_hours(&store), (BTreeSet::new(), 0), "rebuilt");
    assert!(assert_hours_match_minutes(&store, "rebuilt") > 0);
}

#[test]
fn an_import_holding_too_many_hours_writes_them_whole_with_each_unit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = RollupStore::open(dir.path()).expect("opens");
    let mut calls = Calls(0xbeef_89ab);
    let mut memo = store.import_memo().expect("memo");
    memo.hours.max_held = 3;
    import_units(
        &store,
        &mut memo,
        &mut calls,
        &[(HOUR - 60..HOUR - 20, &[]), (HOUR - 30..HOUR + 30, &[])],
    );
}

/// Imports over `store` (already holding finals) units that reopen stored finals and write
/// open windows (from `HOUR + 80` on), across the day boundary, into an hour that was unknown
/// before the import; checks that every range reads exactly after each unit.
fn import_reopening(store: &RollupStore, calls: &mut Calls) -> crate::rollups::ImportMemo {
    // An hour unknown before the import begins.
    let inner = store.store().expect("open");
    let day = inner.day_or_create(super::day_of(HOUR + 60)).expect("day");
    let mut mark = inner.db.batch();
    mark.insert(&day.index, super::hour_key("M", APIS[0], HOUR + 60), []);
    mark.commit().expect("marks");
    let mut memo = store.import_memo().expect("memo");
    for (unit, minutes) in [
        HOUR - 40..HOUR + 30,
        HOUR + 20..HOUR + 100,
        HOUR + 70..HOUR + 110,
    ]
    .into_iter()
    .enumerate()
    {
        let imported = windows(calls, minutes);
        store
            .import(&imported, HOUR + 80, &[("test", &[unit as u8])], &mut memo)
            .expect("imports");
        assert!(assert_hours_match_minutes(store, &format!("after unit {unit}")) > 0);
    }
    memo
}

#[test]
fn an_import_reopening_finals_and_writing_open_windows_reads_exactly_finished_or_rebuilt() {
    for finish in [true, false] {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let mut calls = Calls(0xc0ff_ee00 + u64::from(finish));
            let store = store_holding(dir.path(), &mut calls, HOUR - 30..HOUR + 90);
            let mut memo = import_reopening(&store, &mut calls);
            if finish {
                store.finish_import(&mut memo).expect("finishes");
                assert_eq!(unknown_hours(&store).1, 0, "no hour left pending");
                assert!(assert_hours_match_minutes(&store, "finished") > 0);
            }
        }
        let store = RollupStore::open(dir.path()).expect("reopens");
        assert_eq!(
            unknown_hours(&store).1,
            0,
            "finish {finish}: no hour left pending"
        );
        assert!(assert_hours_match_minutes(&store, &format!("finish {finish}: reopened")) > 0);
    }
}
