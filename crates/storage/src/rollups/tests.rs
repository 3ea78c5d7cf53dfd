use super::*;
use crate::codec::RollupState;

fn key(merchant: &str, api: &str, minute: i64) -> WindowKey {
    WindowKey {
        merchant: merchant.into(),
        api: api.into(),
        minute,
    }
}

fn rollup(calls: &[(u16, f64)]) -> Rollup {
    let mut rollup = Rollup::default();
    calls
        .iter()
        .for_each(|(status, latency)| rollup.record(*status, *latency));
    rollup
}

const MINUTE: i64 = 29_921_224; // 2026-11-21T15:04Z

fn commit(store: &RollupStore, batch: CheckpointBatch) -> PreparedCheckpoint {
    let prepared = store.prepare(batch).expect("prepares");
    let summary = PreparedCheckpoint {
        batch: store.store().expect("open").db.batch(),
        finals: prepared.finals.clone(),
        corrected: prepared.corrected.clone(),
        applied: Applied::default(),
    };
    store.commit(prepared).expect("commits");
    summary
}

fn counts(store: &RollupStore, from: i64, to: i64) -> BTreeMap<String, Counts> {
    store
        .merchant_counts(from, to)
        .expect("ranks")
        .into_iter()
        .map(|entry| (entry.merchant.to_string(), entry.counts))
        .collect()
}

#[test]
fn checkpoint_open_windows_and_finals_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = RollupStore::open(dir.path()).expect("opens");
        assert_eq!(store.load_checkpoint().expect("reads"), None);
        commit(
            &store,
            CheckpointBatch {
                finals: vec![(key("M", "a", MINUTE), rollup(&[(200, 1.0)]))],
                open: vec![
                    (key("M", "a", MINUTE + 1), rollup(&[(500, 2.0)])),
                    (key("M", "", MINUTE + 1), rollup(&[(500, 2.0)])),
                ],
                checkpoint: Checkpoint {
                    lsn: 7,
                    watermark_us: 42,
                    partitions: vec![(0, 99)],
                },
                ..CheckpointBatch::default()
            },
        );
    }
    let store = RollupStore::open(dir.path()).expect("reopens");
    let checkpoint = store.load_checkpoint().expect("reads").expect("present");
    assert_eq!(checkpoint.lsn, 7);
    assert_eq!(checkpoint.partitions, vec![(0, 99)]);
    let mut open = store.load_open().expect("loads");
    open.sort_by(|left, right| left.0.cmp(&right.0));
    assert_eq!(open.len(), 2);
    assert_eq!(open[1].0, key("M", "a", MINUTE + 1));

    // Closing the open window removes its open marker.
    commit(
        &store,
        CheckpointBatch {
            finals: vec![(key("M", "a", MINUTE + 1), rollup(&[(500, 2.0), (200, 3.0)]))],
            ..CheckpointBatch::default()
        },
    );
    let open = store.load_open().expect("loads");
    assert_eq!(open.len(), 1, "only the merchant-wide window is still open");

    let mut seen = Vec::new();
    store
        .scan_series("M", "a", MINUTE, MINUTE + 2, |minute, view| {
            seen.push((minute, view.calls, view.state))
        })
        .expect("scans");
    assert_eq!(
        seen,
        vec![
            (MINUTE, 1, RollupState::Final),
            (MINUTE + 1, 2, RollupState::Final)
        ]
    );
}

#[test]
fn corrections_merge_into_stored_finals_or_into_this_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RollupStore::open(dir.path()).expect("opens");
    commit(
        &store,
        CheckpointBatch {
            finals: vec![(key("M", "a", MINUTE), rollup(&[(200, 1.0)]))],
            ..CheckpointBatch::default()
        },
    );
    let summary = commit(
        &store,
        CheckpointBatch {
            finals: vec![(key("M", "b", MINUTE), rollup(&[(200, 1.0)]))],
            corrections: vec![
                (key("M", "a", MINUTE), rollup(&[(503, 9.0)])),
                (key("M", "b", MINUTE), rollup(&[(404, 4.0)])),
                (key("N", "c", MINUTE - 600), rollup(&[(200, 4.0)])),
            ],
            ..CheckpointBatch::default()
        },
    );
    assert_eq!(summary.finals.len(), 1);
    assert_eq!(
        summary.finals[0].1.calls, 2,
        "late call folded into the closing window"
    );
    assert_eq!(summary.corrected.len(), 2);
    let corrected_a = summary
        .corrected
        .iter()
        .find(|(window, _)| window.api == "a")
        .expect("a corrected");
    assert_eq!(corrected_a.1.status, vec![(200, 1), (503, 1)]);
    let stored = store
        .store()
        .expect("open")
        .stored_rollup(&key("M", "a", MINUTE))
        .expect("reads")
        .expect("present");
    assert_eq!(stored, corrected_a.1);
    let stored = store
        .store()
        .expect("open")
        .stored_rollup(&key("N", "c", MINUTE - 600))
        .expect("reads")
        .expect("present");
    assert_eq!(
        stored.calls, 1,
        "a correction for a window never stored creates it"
    );
}

#[test]
fn merchant_counts_use_hours_and_minutes_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RollupStore::open(dir.path()).expect("opens");
    let start = MINUTE - MINUTE % 60 - 90; // 1.5 hours before an hour boundary
    let mut expected: BTreeMap<(String, i64), u64> = BTreeMap::new();
    let mut finals = Vec::new();
    for offset in 0..240 {
        for (merchant, every) in [("A", 1), ("B", 7), ("C", 60)] {
            if offset % every == 0 {
                let calls = 1 + (offset % 5) as usize;
                let rollup = rollup(&vec![(500, 1.0); calls]);
                expected.insert((merchant.to_owned(), start + offset), calls as u64);
                finals.push((key(merchant, "", start + offset), rollup));
            }
        }
    }
    // Write half as open windows first, then everything final: hour entries must not double.
    let open: Vec<_> = finals.iter().step_by(2).cloned().collect();
    commit(
        &store,
        CheckpointBatch {
            open,
            ..CheckpointBatch::default()
        },
    );
    commit(
        &store,
        CheckpointBatch {
            finals,
            ..CheckpointBatch::default()
        },
    );
    for (from, to) in [
        (start, start + 240),
        (start + 13, start + 200),
        (start + 30, start + 31),
        (start + 90, start + 150),
    ] {
        let totals = counts(&store, from, to);
        for merchant in ["A", "B", "C"] {
            let want: u64 = expected
                .range((merchant.to_owned(), from)..(merchant.to_owned(), to))
                .map(|(_, calls)| calls)
                .sum();
            let got = totals.get(merchant).map_or(0, |entry| entry.calls);
            assert_eq!(got, want, "{merchant} over [{from}, {to})");
            let errors = totals.get(merchant).map_or(0, |entry| entry.errors);
            assert_eq!(errors, want);
        }
    }
}

#[test]
fn retention_drops_whole_days() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RollupStore::open(dir.path()).expect("opens");
    let today = MINUTE;
    let old = MINUTE - 3 * MINUTES_PER_DAY;
    commit(
        &store,
        CheckpointBatch {
            finals: vec![
                (key("M", "a", today), rollup(&[(200, 1.0)])),
                (key("M", "a", old), rollup(&[(200, 1.0)])),
            ],
            open: vec![(key("M", "b", old), rollup(&[(200, 1.0)]))],
            ..CheckpointBatch::default()
        },
    );
    assert_eq!(
        store
            .enforce_retention(today - MINUTES_PER_DAY)
            .expect("drops"),
        1
    );
    let mut minutes = Vec::new();
    store
        .scan_series("M", "a", old - 10, today + 10, |minute, _| {
            minutes.push(minute)
        })
        .expect("scans");
    assert_eq!(minutes, vec![today]);
    assert!(store.load_open().expect("loads").is_empty());
}

#[test]
fn keys_split_back_into_their_parts() {
    let window = key("Merchant 1", "/v1/payments", -5);
    let bytes = rollup_key(&window);
    assert_eq!(
        split_rollup_key(&bytes),
        Some(("Merchant 1", "/v1/payments", -5))
    );
    assert!(sortable(-1) < sortable(0) && sortable(0) < sortable(1));
}

#[test]
fn merchants_are_found_by_prefix_ignoring_case() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RollupStore::open(dir.path()).expect("opens");
    let finals = ["AcmeShop", "acme-eu", "Globex", "ACMEX"]
        .iter()
        .map(|merchant| (key(merchant, "", MINUTE), rollup(&[(200, 1.0)])))
        .collect();
    commit(
        &store,
        CheckpointBatch {
            finals,
            ..CheckpointBatch::default()
        },
    );
    assert_eq!(
        store.search_merchants("acme", 10).expect("searches"),
        vec!["acme-eu", "AcmeShop", "ACMEX"]
    );
    assert_eq!(
        store.search_merchants("ACME", 2).expect("searches").len(),
        2
    );
    assert_eq!(store.search_merchants("", 10).expect("searches").len(), 4);
    assert!(
        store
            .search_merchants("zzz", 10)
            .expect("searches")
            .is_empty()
    );
}

fn replicated(merchant: &str, api: &str, calls: &[(u16, f64)], covers: i64) -> Replicated {
    Replicated {
        key: key(merchant, api, MINUTE),
        rollup: rollup(calls),
        partition: 3,
        covers,
        open: false,
    }
}

#[test]
fn replicated_rollups_keep_the_version_that_covers_most() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RollupStore::open(dir.path()).expect("opens");
    let first = [(200, 1.0), (500, 2.0)];
    let more = [(200, 1.0), (500, 2.0), (200, 3.0)];
    // A final, the same final delivered twice, and a correction covering more.
    let written = store
        .apply_replicated(
            vec![
                replicated("M", "", &first, 10),
                replicated("M", "", &first, 10),
            ],
            "activity",
            &[(0, 11)],
        )
        .expect("applies");
    assert_eq!(written, 1);
    let totals = counts(&store, MINUTE, MINUTE + 1);
    assert_eq!(totals["M"].calls, 2);
    assert_eq!(
        store
            .apply_replicated(vec![replicated("M", "", &more, 25)], "activity", &[(0, 12)])
            .expect("applies"),
        1
    );
    // A re-emitted older version (an instance re-deriving it after a crash) changes nothing,
    // and neither does the same version again.
    assert_eq!(
        store
            .apply_replicated(
                vec![
                    replicated("M", "", &first, 10),
                    replicated("M", "", &more, 25)
                ],
                "activity",
                &[(0, 14)]
            )
            .expect("applies"),
        0
    );
    let (stored, partition, covers) = store
        .replicated(&key("M", "", MINUTE))
        .expect("reads")
        .expect("present");
    assert_eq!((stored.calls, partition, covers), (3, 3, 25));
    // The ranking index moved by the difference only: 3 calls, one of them a 5xx.
    let totals = counts(&store, MINUTE, MINUTE + 60);
    assert_eq!(totals["M"].calls, 3);
    assert_eq!(totals["M"].errors, 1);
    assert_eq!(
        store.replica_positions("activity").expect("positions"),
        BTreeMap::from([(0, 14)])
    );
    drop(store);
    let reopened = RollupStore::open(dir.path()).expect("reopens");
    assert_eq!(
        reopened.replica_positions("activity").expect("positions"),
        BTreeMap::from([(0, 14)])
    );
}

#[test]
fn open_window_snapshots_give_way_to_the_final_that_covers_more() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RollupStore::open(dir.path()).expect("opens");
    let snapshot = |calls: &[(u16, f64)], covers| Replicated {
        open: true,
        ..replicated("M", "a", calls, covers)
    };
    store
        .apply_replicated(vec![snapshot(&[(200, 1.0)], 5)], "open", &[(3, 6)])
        .expect("applies");
    assert_eq!(store.load_open().expect("loads").len(), 1, "stored as open");
    let final_calls = [(200, 1.0), (500, 2.0)];
    store
        .apply_replicated(
            vec![replicated("M", "a", &final_calls, 9)],
            "activity",
            &[(3, 1)],
        )
        .expect("applies");
    // A snapshot that covers less, arriving late, changes nothing.
    assert_eq!(
        store
            .apply_replicated(vec![snapshot(&[(200, 1.0)], 7)], "open", &[(3, 8)])
            .expect("applies"),
        0
    );
    let (stored, _, covers) = store
        .replicated(&key("M", "a", MINUTE))
        .expect("reads")
        .expect("present");
    assert_eq!((stored.calls, covers), (2, 9));
    assert!(store.load_open().expect("loads").is_empty(), "final now");
    assert_eq!(
        store.replica_positions("open").expect("positions"),
        BTreeMap::from([(3, 8)])
    );
    assert_eq!(
        store.replica_positions("activity").expect("positions"),
        BTreeMap::from([(3, 1)])
    );
}

#[test]
fn a_final_replaces_the_snapshot_covering_as_much_when_a_partition_went_idle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RollupStore::open(dir.path()).expect("opens");
    let calls = [(200, 1.0), (404, 3.0)];
    let snapshot = Replicated {
        open: true,
        ..replicated("M", "a", &calls, 5)
    };
    store
        .apply_replicated(vec![snapshot.clone()], "open", &[(3, 6)])
        .expect("applies");
    assert!(store.is_open(&key("M", "a", MINUTE)).expect("reads"));
    // The partition received nothing more: the wall clock closed the window at offset 5.
    assert_eq!(
        store
            .apply_replicated(vec![replicated("M", "a", &calls, 5)], "activity", &[(3, 6)])
            .expect("applies"),
        1
    );
    assert!(
        !store.is_open(&key("M", "a", MINUTE)).expect("reads"),
        "final now"
    );
    assert!(store.load_open().expect("loads").is_empty());
    // The snapshot delivered again changes nothing: a final is never reopened at equal cover.
    assert_eq!(
        store
            .apply_replicated(vec![snapshot], "open", &[(3, 6)])
            .expect("applies"),
        0
    );
    assert!(!store.is_open(&key("M", "a", MINUTE)).expect("reads"));
}

fn open_windows(merchants: usize, lsn: u64) -> CheckpointBatch {
    CheckpointBatch {
        open: (0..merchants)
            .map(|index| {
                let merchant = format!("merchant-{index:05}-{}", "x".repeat(40));
                (key(&merchant, "a", MINUTE), rollup(&[(200, 1.0)]))
            })
            .collect(),
        checkpoint: Checkpoint {
            lsn,
            ..Checkpoint::default()
        },
        ..CheckpointBatch::default()
    }
}

#[test]
fn a_store_whose_write_failed_reopens_itself_and_takes_the_batch_again() {
    let Some(disk) = mm_testkit::SmallDisk::mount(16) else {
        return;
    };
    let dir = disk.path().join("store");
    let store = RollupStore::open(&dir).expect("opens");
    commit(&store, open_windows(10, 1));
    let filler = disk.fill();

    // The journal write cannot fit: fjall refuses this and, from now on, every write of this
    // database handle.
    let batch = open_windows(5_000, 2);
    let prepared = store.prepare(batch.clone()).expect("prepares in memory");
    let error = store.commit(prepared).expect_err("the disk is full");
    assert!(error.is_disk_full(), "{error}");
    assert_eq!(
        store
            .load_checkpoint()
            .expect("reads")
            .map(|checkpoint| checkpoint.lsn),
        Some(1),
        "reads answer what was committed"
    );
    // Still full: the reopen itself may fail or the write may; either way, an error.
    assert!(commit_result(&store, batch.clone()).is_err());

    std::fs::remove_file(filler).expect("room again");
    commit_result(&store, batch).expect("written after the store reopened itself");
    assert!(store.reopens() >= 1);
    assert_eq!(store.load_open().expect("loads").len(), 5_000);
    assert_eq!(
        store
            .load_checkpoint()
            .expect("reads")
            .map(|checkpoint| checkpoint.lsn),
        Some(2)
    );
    drop(store);
    let store = RollupStore::open(&dir).expect("opens after a restart");
    assert_eq!(store.load_open().expect("loads").len(), 5_000);
}

fn commit_result(store: &RollupStore, batch: CheckpointBatch) -> Result<(), StorageError> {
    let prepared = store.prepare(batch)?;
    store.commit(prepared)
}

/// Four days of minutes: rankings over whole days, hours and ragged minutes, also minutes older
/// than the memory's horizon (read from disk), equal the per-minute fold, before and after a
/// reopen (which rebuilds the memory from disk), and with corrections.
#[test]
fn merchant_counts_over_days_match_the_minutes_before_and_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = MINUTE - MINUTE % 1440 - 3 * 1440 - 77;
    let end = MINUTE + 1;
    let mut expected: BTreeMap<(String, i64), (u64, u64)> = BTreeMap::new();
    let mut finals = Vec::new();
    for minute in (start..end).step_by(13) {
        for (merchant, every) in [("A", 1), ("B", 3)] {
            if (minute / 13) % every == 0 {
                let calls = 1 + (minute % 4) as usize;
                let calls: Vec<(u16, f64)> = (0..calls)
                    .map(|index| (if index == 0 { 503 } else { 200 }, 1.0))
                    .collect();
                expected.insert((merchant.to_owned(), minute), (calls.len() as u64, 1));
                finals.push((key(merchant, "", minute), rollup(&calls)));
            }
        }
    }
    let corrections: Vec<_> = finals
        .iter()
        .step_by(5)
        .map(|(window, _)| {
            let entry = expected
                .get_mut(&(window.merchant.clone(), window.minute))
                .expect("known");
            entry.0 += 2;
            (window.clone(), rollup(&[(200, 1.0), (200, 2.0)]))
        })
        .collect();
    let check = |store: &RollupStore| {
        for (from, to) in [
            (start, end),
            (start + 5, end),
            (start + 1440 + 61, end - 600),
            (end - 1440, end),
            (end - 2 * 1440 - 17, end - 1440 + 3),
            (start + 200, start + 230),
        ] {
            let totals = counts(store, from, to);
            for merchant in ["A", "B"] {
                let want = expected
                    .range((merchant.to_owned(), from)..(merchant.to_owned(), to))
                    .fold((0, 0), |sum, (_, (calls, errors))| {
                        (sum.0 + calls, sum.1 + errors)
                    });
                let got = totals
                    .get(merchant)
                    .map_or((0, 0), |entry| (entry.calls, entry.errors));
                assert_eq!(got, want, "{merchant} over [{from}, {to})");
            }
        }
    };
    {
        let store = RollupStore::open(dir.path()).expect("opens");
        for chunk in finals.chunks(500) {
            commit(
                &store,
                CheckpointBatch {
                    finals: chunk.to_vec(),
                    ..CheckpointBatch::default()
                },
            );
        }
        commit(
            &store,
            CheckpointBatch {
                corrections,
                ..CheckpointBatch::default()
            },
        );
        check(&store);
    }
    check(&RollupStore::open(dir.path()).expect("reopens"));
}
