use super::*;

const BASE: i64 = 1_795_273_200_000_000; // 2026-11-21T15:00:00Z

fn events(count: usize) -> Vec<ApiCall> {
    (0..count)
        .map(|index| ApiCall {
            ts_us: BASE + (index as i64 * 7_919_000) % (2 * MICROS_PER_HOUR),
            merchant: format!("M{}", index % 13),
            api: format!("/v1/api{}", index % 4),
            status: [200u16, 201, 404, 500][index % 4],
            latency_ms: index as f64 / 8.0,
            corr_id: format!("corr-{index:06}"),
            partner: (index % 3 == 0).then(|| "P1".to_owned()),
            method: Some("POST".into()),
            path: Some(format!("/v1/things/{index}")),
            host: None,
            region: Some("eu-west-1".into()),
            attributes: (index % 2 == 0).then(|| format!("{{\"sdk\":\"rust\",\"n\":{index}}}")),
        })
        .collect()
}

fn payload(events: &[ApiCall]) -> Arc<Vec<u8>> {
    let borrowed: Vec<mm_model::ApiCallRef<'_>> = events.iter().map(ApiCall::as_ref).collect();
    Arc::new(wal::encode_batch(borrowed.iter()))
}

fn everything() -> RowQuery<'static> {
    RowQuery {
        corr_id: None,
        merchant: None,
        from_us: i64::MIN,
        to_us: i64::MAX,
    }
}

fn sorted(mut found: Vec<ApiCall>) -> Vec<ApiCall> {
    found.sort_by(|left, right| left.corr_id.cmp(&right.corr_id));
    found
}

#[test]
fn events_are_found_in_memory_and_after_flush_with_every_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = Archive::open(dir.path(), ArchiveConfig::default()).expect("opens");
    let all = events(5_000);
    for (lsn, chunk) in all.chunks(1_000).enumerate() {
        archive
            .append(lsn as u64 + 1, payload(chunk))
            .expect("appends");
    }
    let probe = &all[1_234];
    let query = RowQuery {
        corr_id: Some(&probe.corr_id),
        merchant: None,
        from_us: BASE - 1,
        to_us: BASE + 3 * MICROS_PER_HOUR,
    };
    assert_eq!(
        archive.find(&query).expect("finds"),
        vec![probe.clone()],
        "hot tail"
    );
    assert_eq!(archive.flush().expect("flushes"), 5_000);
    assert_eq!(archive.hot_events(), 0);
    assert_eq!(archive.archived_lsn(), 5);
    assert_eq!(
        archive.find(&query).expect("finds"),
        vec![probe.clone()],
        "segment"
    );
    assert_eq!(
        sorted(archive.find(&everything()).expect("finds")),
        sorted(all.clone())
    );

    let merchant = RowQuery {
        corr_id: None,
        merchant: Some("M3"),
        from_us: BASE,
        to_us: BASE + MICROS_PER_HOUR,
    };
    let want: Vec<ApiCall> = all
        .iter()
        .filter(|event| event.merchant == "M3" && event.ts_us < BASE + MICROS_PER_HOUR)
        .cloned()
        .collect();
    assert_eq!(
        sorted(archive.find(&merchant).expect("finds")),
        sorted(want)
    );
    let missing = RowQuery {
        corr_id: Some("corr-none"),
        ..everything()
    };
    assert!(archive.find(&missing).expect("finds").is_empty());

    // Segments are one per hour, and the manifest survives a reopen.
    let (segments, bytes) = archive.size();
    assert_eq!(segments, 2);
    assert!(bytes > 0);
    drop(archive);
    let reopened = Archive::open(dir.path(), ArchiveConfig::default()).expect("reopens");
    assert_eq!(reopened.archived_lsn(), 5);
    assert_eq!(reopened.find(&query).expect("finds"), vec![probe.clone()]);
}

#[test]
fn files_no_manifest_lists_are_removed_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = Archive::open(dir.path(), ArchiveConfig::default()).expect("opens");
    archive.append(1, payload(&events(10))).expect("appends");
    archive.flush().expect("flushes");
    drop(archive);
    let hour = dir.path().join("2026-11-21T15");
    let orphan = hour.join("seg-00000000000000000099.parquet");
    std::fs::write(&orphan, b"half a segment").expect("writes");
    let archive = Archive::open(dir.path(), ArchiveConfig::default()).expect("reopens");
    assert!(!orphan.exists());
    assert_eq!(
        sorted(archive.find(&everything()).expect("finds")).len(),
        10
    );
}

#[test]
fn a_backlog_is_reported_until_a_flush_writes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = Archive::open(
        dir.path(),
        ArchiveConfig {
            flush_max_events: 100,
            flush_max_age: Duration::from_secs(3600),
            max_backlog_events: 30,
        },
    )
    .expect("opens");
    archive.append(1, payload(&events(20))).expect("appends");
    assert!(!archive.backlogged());
    assert!(!archive.flush_due(), "below both limits");
    archive.append(2, payload(&events(10))).expect("appends");
    assert!(archive.backlogged());
    assert!(
        archive.flush_due(),
        "a backlog is flushed even below the size limit"
    );
    assert_eq!(archive.flush().expect("flushes"), 30);
    assert!(!archive.backlogged());
    assert_eq!(archive.find(&everything()).expect("finds").len(), 30);
}

#[test]
fn flush_is_due_by_count_or_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ArchiveConfig {
        flush_max_events: 10,
        flush_max_age: Duration::from_secs(3600),
        max_backlog_events: 1000,
    };
    let archive = Archive::open(dir.path(), config).expect("opens");
    archive.append(1, payload(&events(9))).expect("appends");
    assert!(!archive.flush_due());
    archive.append(2, payload(&events(1))).expect("appends");
    assert!(archive.flush_due());
    let aged = Archive::open(
        &dir.path().join("aged"),
        ArchiveConfig {
            flush_max_events: 1000,
            flush_max_age: Duration::ZERO,
            max_backlog_events: 2000,
        },
    )
    .expect("opens");
    aged.append(1, payload(&events(1))).expect("appends");
    assert!(aged.flush_due());
}

#[test]
fn hour_directories_are_named_by_utc_hour() {
    assert_eq!(hour_directory(hour_of(BASE + 5)), "2026-11-21T15");
}

#[test]
fn a_corrupt_segment_is_quarantined_and_the_rest_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = Archive::open(dir.path(), ArchiveConfig::default()).expect("opens");
    let all = events(3_000);
    archive.append(1, payload(&all[..1_500])).expect("appends");
    archive.flush().expect("flushes");
    archive.append(2, payload(&all[1_500..])).expect("appends");
    archive.flush().expect("flushes");
    drop(archive);
    // Flip bytes in the middle of one segment of the first flush.
    let hour = dir.path().join("2026-11-21T15");
    let victim = hour.join("seg-00000000000000000001.parquet");
    let mut bytes = std::fs::read(&victim).expect("reads");
    let middle = bytes.len() / 2;
    bytes[middle..middle + 8]
        .iter_mut()
        .for_each(|byte| *byte ^= 0x5a);
    std::fs::write(&victim, &bytes).expect("writes");

    let archive =
        Archive::open(dir.path(), ArchiveConfig::default()).expect("opens despite the corruption");
    assert_eq!(archive.quarantined(), 1);
    assert!(!victim.exists());
    assert!(
        dir.path()
            .join("quarantine")
            .join("2026-11-21T15-seg-00000000000000000001.parquet")
            .exists()
    );
    let found = archive.find(&everything()).expect("serves the rest");
    let lost: usize = all[..1_500]
        .iter()
        .filter(|event| hour_of(event.ts_us) == hour_of(BASE))
        .count();
    assert_eq!(
        found.len(),
        all.len() - lost,
        "only the quarantined segment's events are missing"
    );
    // Reopening again finds nothing more to quarantine.
    drop(archive);
    assert_eq!(
        Archive::open(dir.path(), ArchiveConfig::default())
            .expect("opens")
            .quarantined(),
        0
    );
}

#[test]
fn retention_drops_whole_segments_by_age_and_by_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = Archive::open(dir.path(), ArchiveConfig::default()).expect("opens");
    let all = events(4_000);
    for (lsn, chunk) in all.chunks(1_000).enumerate() {
        archive
            .append(lsn as u64 + 1, payload(chunk))
            .expect("appends");
        archive.flush().expect("flushes");
    }
    let (segments, bytes) = archive.size();
    assert_eq!(segments, 8, "four flushes over two hours");
    // By age: everything of the first hour goes.
    let dropped = archive
        .enforce_retention(BASE + MICROS_PER_HOUR, None)
        .expect("enforces");
    assert_eq!(dropped, 4);
    assert!(
        archive
            .find(&everything())
            .expect("finds")
            .iter()
            .all(|event| event.ts_us >= BASE + MICROS_PER_HOUR)
    );
    // By size: keep at most about half of what is left.
    let (_, left) = archive.size();
    let dropped = archive
        .enforce_retention(i64::MIN, Some(left / 2))
        .expect("enforces");
    assert!(dropped >= 2);
    assert!(archive.size().1 <= left / 2);
    assert!(bytes > left);
    // Dropped files are gone from disk.
    let files = std::fs::read_dir(dir.path().join("2026-11-21T15"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert_eq!(files, 0);
}

#[test]
fn compaction_merges_an_hours_segments_without_losing_or_doubling_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = Archive::open(dir.path(), ArchiveConfig::default()).expect("opens");
    let all = events(6_000);
    for (lsn, chunk) in all.chunks(1_000).enumerate() {
        archive
            .append(lsn as u64 + 1, payload(chunk))
            .expect("appends");
        archive.flush().expect("flushes");
    }
    assert_eq!(archive.size().0, 12);
    // Only hours before the second one are compacted.
    assert_eq!(
        archive
            .compact(hour_of(BASE) + 1, 4, u64::MAX)
            .expect("compacts"),
        1
    );
    assert_eq!(
        archive.size().0,
        7,
        "six segments of the first hour became one"
    );
    assert_eq!(
        sorted(archive.find(&everything()).expect("finds")),
        sorted(all.clone())
    );
    let probe = &all[4_321];
    let query = RowQuery {
        corr_id: Some(&probe.corr_id),
        ..everything()
    };
    assert_eq!(archive.find(&query).expect("finds"), vec![probe.clone()]);
    // The replaced files are gone once the manifest no longer lists them and the archive reopens.
    drop(archive);
    let reopened = Archive::open(dir.path(), ArchiveConfig::default()).expect("reopens");
    let files = std::fs::read_dir(dir.path().join("2026-11-21T15"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert_eq!(files, 1);
    assert_eq!(
        sorted(reopened.find(&everything()).expect("finds")),
        sorted(all)
    );
}

#[test]
fn lookups_with_a_merchant_use_page_ranges_and_miss_nothing() {
    // More rows than a row group, many merchants: each merchant's rows span a few pages,
    // some of them pages shared with its neighbours in sort order.
    let all: Vec<ApiCall> = events(100_000)
        .into_iter()
        .enumerate()
        .map(|(index, mut event)| {
            event.merchant = format!("M{:03}", (index * 11) % 301);
            event.ts_us = BASE + (index as i64 * 35_000) % MICROS_PER_HOUR;
            event
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = Archive::open(dir.path(), ArchiveConfig::default()).expect("opens");
    for (lsn, chunk) in all.chunks(10_000).enumerate() {
        archive
            .append(lsn as u64 + 1, payload(chunk))
            .expect("appends");
    }
    archive.flush().expect("flushes");
    for probe in all.iter().step_by(997) {
        let query = RowQuery {
            corr_id: Some(&probe.corr_id),
            merchant: Some(&probe.merchant),
            from_us: BASE,
            to_us: BASE + MICROS_PER_HOUR,
        };
        assert_eq!(
            archive.find(&query).expect("finds"),
            vec![probe.clone()],
            "{}",
            probe.corr_id
        );
    }
    for merchant in ["M000", "M150", "M300"] {
        let query = RowQuery {
            merchant: Some(merchant),
            ..everything()
        };
        let want: Vec<ApiCall> = all
            .iter()
            .filter(|event| event.merchant == merchant)
            .cloned()
            .collect();
        assert!(want.len() > 300);
        assert_eq!(
            sorted(archive.find(&query).expect("finds")),
            sorted(want),
            "{merchant}"
        );
    }
}
