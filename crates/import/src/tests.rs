use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use mm_archive::RowQuery;
use mm_model::ApiCall;
use mm_model::rollup::{Rollup, WindowKey};
use mm_model::time::{MICROS_PER_MINUTE, now_us};
use mm_testkit::{calls, ndjson_line, oracle};

use super::*;

const MERCHANTS: usize = 8;

fn options(data_dir: &Path, unit_bytes: u64) -> ImportOptions {
    ImportOptions {
        data_dir: data_dir.to_owned(),
        mapping: FieldMapping::default(),
        retention: Duration::from_secs(30 * 86_400),
        max_clock_skew: Duration::from_secs(300),
        max_record_bytes: 64 * 1024,
        grace: Duration::from_secs(180),
        threads: 2,
        report_dir: None,
        unit_bytes,
    }
}

/// Events over the last six hours, as NDJSON with a bad line every 997th; returns the file,
/// the good events and the bad lines' numbers.
fn input(dir: &Path, count: usize) -> (PathBuf, Vec<ApiCall>, Vec<u64>) {
    let events = calls(
        11,
        count,
        MERCHANTS,
        &["/v1/payments", "/v1/refunds"],
        now_us() - MICROS_PER_MINUTE,
        360,
    );
    let mut text = String::new();
    let mut bad = Vec::new();
    for (index, event) in events.iter().enumerate() {
        if index % 997 == 500 {
            text.push_str("{\"merchant_account\": \"broken\"\n");
            bad.push(text.lines().count() as u64);
        }
        text.push_str(&ndjson_line(event));
    }
    let path = dir.join("calls.ndjson");
    std::fs::write(&path, text).expect("input written");
    (path, events, bad)
}

fn assert_store_matches(store: &RollupStore, events: &[ApiCall]) {
    let expected: BTreeMap<WindowKey, Rollup> = oracle(events);
    for (key, want) in &expected {
        let mut got = None;
        store
            .scan_series(
                &key.merchant,
                &key.api,
                key.minute,
                key.minute + 1,
                |_, view| {
                    got = view.to_rollup().ok();
                },
            )
            .expect("reads");
        assert_eq!(got.as_ref(), Some(want), "{key:?}");
    }
}

fn assert_archive_matches(archive: &Archive, events: &[ApiCall]) {
    let mut want: Vec<&str> = events.iter().map(|event| event.corr_id.as_str()).collect();
    want.sort_unstable();
    let mut got = Vec::new();
    for merchant in 0..MERCHANTS {
        let merchant = format!("m{merchant}");
        let found = archive
            .find(&RowQuery {
                corr_id: None,
                merchant: Some(&merchant),
                from_us: i64::MIN,
                to_us: i64::MAX,
            })
            .expect("reads");
        got.extend(found.into_iter().map(|event| event.corr_id));
    }
    got.sort_unstable();
    assert_eq!(got.len(), want.len(), "every accepted event archived once");
    assert!(got.iter().map(String::as_str).eq(want.iter().copied()));
}

/// The line numbers a rejection report lists, in its order.
fn reported_lines(report: &Path) -> Vec<u64> {
    std::fs::read_to_string(report)
        .expect("report")
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).expect("json")["line"]
                .as_u64()
                .expect("line")
        })
        .collect()
}

#[test]
fn an_import_stores_the_fold_of_its_events_archives_each_once_and_reports_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, bad) = input(dir.path(), 20_000);
    let data = dir.path().join("data");
    let (store, archive) = open(&data).expect("opens");
    let source = Source::new(&path).expect("source");
    let outcome = import_file(
        &source,
        &options(&data, UNIT_BYTES),
        &store,
        &archive,
        &Progress::default(),
    )
    .expect("imports");
    assert_eq!(outcome.progress.accepted, events.len() as u64);
    assert_eq!(outcome.progress.rejected, bad.len() as u64);
    assert!(outcome.progress.done);
    assert_store_matches(&store, &events);
    assert_archive_matches(&archive, &events);
    let lines = reported_lines(&outcome.report);
    assert_eq!(lines, bad, "each bad line reported with its line number");
    // Importing the same file again changes nothing.
    let again = import_file(
        &source,
        &options(&data, UNIT_BYTES),
        &store,
        &archive,
        &Progress::default(),
    )
    .expect("imports");
    assert!(again.already_done);
    assert_store_matches(&store, &events);
}

#[test]
fn an_interrupted_import_continues_where_it_stopped_without_counting_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, bad) = input(dir.path(), 40_000);
    let data = dir.path().join("data");
    let source = Source::new(&path).expect("source");
    let options = options(&data, 1 << 20);
    let mut runs = 0;
    loop {
        runs += 1;
        // A fresh process each time: the store and archive are opened again.
        let (store, archive) = open(&data).expect("opens");
        let progress = Progress::default();
        // Stops after the first unit it commits.
        progress.stop.store(true, Ordering::Release);
        match import_file(&source, &options, &store, &archive, &progress) {
            Err(ImportError::Interrupted) => continue,
            Ok(outcome) => {
                let size = std::fs::metadata(&path).expect("size").len();
                assert!(
                    runs > 2,
                    "the file is several units long: {size} bytes, {runs} runs"
                );
                assert_eq!(outcome.progress.accepted, events.len() as u64);
                assert_eq!(outcome.progress.rejected, bad.len() as u64);
                assert_store_matches(&store, &events);
                assert_archive_matches(&archive, &events);
                let report = std::fs::read_to_string(&outcome.report).expect("report");
                assert_eq!(
                    report.lines().count(),
                    bad.len(),
                    "each bad line reported once"
                );
                break;
            }
            Err(error) => panic!("{error}"),
        }
    }
}

/// Runs one unit of `source` into `store` and `archive` and stops.
fn one_unit(source: &Source, options: &ImportOptions, store: &RollupStore, archive: &Archive) {
    let progress = Progress::default();
    progress.stop.store(true, Ordering::Release);
    assert!(matches!(
        import_file(source, options, store, archive, &progress),
        Err(ImportError::Interrupted)
    ));
}

/// One unit of `source` into both sides of `data`, then one side alone `units` units further
/// (to the end of the file with `None`), the other side's writes going to a copy thrown
/// away: the state a crash between the two writes of a unit leaves.
fn ahead_after_a_crash(
    source: &Source,
    data: &Path,
    scratch: &Path,
    archive_ahead: bool,
    units: Option<usize>,
) {
    let options = options(data, 1 << 20);
    let (store, archive) = open(data).expect("opens");
    one_unit(source, &options, &store, &archive);
    let (scratch_store, scratch_archive) = open(scratch).expect("opens");
    let (store, archive) = match archive_ahead {
        true => (&scratch_store, &archive),
        false => (&store, &scratch_archive),
    };
    match units {
        Some(units) => (0..units).for_each(|_| one_unit(source, &options, store, archive)),
        None => {
            import_file(source, &options, store, archive, &Progress::default()).expect("imports");
        }
    }
}

/// Where the store and the archive of `data` have `source`.
fn sides(source: &Source, data: &Path) -> (u64, u64) {
    let (store, archive) = open(data).expect("opens");
    let stored = store
        .import_progress(&source.id)
        .expect("reads")
        .map_or(0, |bytes| {
            serde_json::from_slice::<FileProgress>(&bytes)
                .expect("json")
                .position
        });
    (stored, archive.imported(&source.id))
}

/// One side (archive or store) two units ahead of the other, as after a crash between the
/// two writes of a unit; then the import run again to the end, into both.
fn crash_between(archive_ahead: bool) {
    crash_between_then_units_of(archive_ahead, 1 << 20);
}

/// [`crash_between`], continued in units of `unit_bytes` (the first run's are 1 MiB).
fn crash_between_then_units_of(archive_ahead: bool, unit_bytes: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, _) = input(dir.path(), 40_000);
    let data = dir.path().join("data");
    let source = Source::new(&path).expect("source");
    ahead_after_a_crash(
        &source,
        &data,
        &dir.path().join("scratch"),
        archive_ahead,
        Some(2),
    );
    let (stored, archived) = sides(&source, &data);
    assert!(if archive_ahead {
        archived > stored
    } else {
        stored > archived
    });
    import_in_units(&path, &data, unit_bytes).expect("imports");
    assert_data_matches(&data, &events);
}

#[test]
fn a_crash_between_archive_and_store_is_made_good_by_the_next_run() {
    crash_between(true);
}

#[test]
fn a_crash_between_store_and_archive_is_made_good_by_the_next_run() {
    crash_between(false);
}

#[test]
fn an_import_continued_with_another_unit_size_counts_and_archives_each_record_once() {
    // Units smaller and larger than the first run's, the store or the archive ahead.
    for (archive_ahead, unit_bytes) in [
        (true, 300 << 10),
        (true, 3 << 20),
        (false, 300 << 10),
        (false, 3 << 20),
    ] {
        crash_between_then_units_of(archive_ahead, unit_bytes);
    }
    // Stopped after every unit, each run with units of another size.
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, bad) = input(dir.path(), 40_000);
    let data = dir.path().join("data");
    let source = Source::new(&path).expect("source");
    let sizes = [1 << 20, 300 << 10, 700 << 10, 400 << 10];
    for run in 0.. {
        let (store, archive) = open(&data).expect("opens");
        let progress = Progress::default();
        progress.stop.store(true, Ordering::Release);
        let options = options(&data, sizes[run % sizes.len()]);
        match import_file(&source, &options, &store, &archive, &progress) {
            Err(ImportError::Interrupted) => continue,
            Ok(outcome) => {
                assert!(run >= 3, "every size ends a unit: {} runs", run + 1);
                assert_eq!(outcome.progress.accepted, events.len() as u64);
                assert_eq!(reported_lines(&outcome.report), bad);
                assert_store_matches(&store, &events);
                assert_archive_matches(&archive, &events);
                break;
            }
            Err(error) => panic!("{error}"),
        }
    }
}

#[test]
fn an_archive_left_behind_a_finished_store_is_completed_by_the_next_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, _) = input(dir.path(), 40_000);
    let data = dir.path().join("data");
    let source = Source::new(&path).expect("source");
    ahead_after_a_crash(&source, &data, &dir.path().join("scratch"), false, None);
    let (stored, archived) = sides(&source, &data);
    assert!(stored > archived);
    import_in_units(&path, &data, 1 << 20).expect("imports");
    assert_data_matches(&data, &events);
}

/// One side at the end of the file and the other behind, as a crash leaves them; then the
/// file grows and is imported again.
fn grown_after_a_crash_between(archive_ahead: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, bad) = input(dir.path(), 40_000);
    let whole = std::fs::read_to_string(&path).expect("input");
    std::fs::write(&path, first_lines(&whole, 24_000)).expect("written");
    let data = dir.path().join("data");
    let source = Source::new(&path).expect("source");
    ahead_after_a_crash(
        &source,
        &data,
        &dir.path().join("scratch"),
        archive_ahead,
        None,
    );
    let (stored, archived) = sides(&source, &data);
    let end = std::fs::metadata(&path).expect("file").len();
    assert_eq!(if archive_ahead { archived } else { stored }, end);
    std::fs::write(&path, &whole).expect("written");
    let outcome = import_in_units(&path, &data, 1 << 20).expect("imports");
    assert_eq!(outcome.progress.accepted, events.len() as u64);
    assert_eq!(reported_lines(&outcome.report), bad);
    assert_data_matches(&data, &events);
}

#[test]
fn a_file_that_grew_after_a_crash_between_archive_and_store_is_continued_exactly() {
    grown_after_a_crash_between(true);
}

#[test]
fn a_file_that_grew_after_a_crash_between_store_and_archive_is_continued_exactly() {
    grown_after_a_crash_between(false);
}

#[test]
fn parquet_files_with_the_same_fields_import_like_ndjson() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, _) = input(dir.path(), 20_000);
    let first = dir.path().join("first");
    import_once(&path, &first).expect("imports");
    let segments = segments_of(&first);
    assert!(!segments.is_empty());
    let second = dir.path().join("second");
    let (store, archive) = open(&second).expect("opens");
    let mut accepted = 0;
    for segment in &segments {
        let source = Source::new(segment).expect("source");
        let outcome = import_file(
            &source,
            &options(&second, UNIT_BYTES),
            &store,
            &archive,
            &Progress::default(),
        )
        .expect("imports");
        assert_eq!(
            outcome.progress.rejected, 0,
            "{:?}",
            outcome.progress.rejected_by_code
        );
        accepted += outcome.progress.accepted;
    }
    assert_eq!(accepted, events.len() as u64);
    assert_store_matches(&store, &events);
    assert_archive_matches(&archive, &events);
}

/// Imports `path` into `data` (opened afresh, as a new process would).
fn import_once(path: &Path, data: &Path) -> Result<FileOutcome, ImportError> {
    import_in_units(path, data, UNIT_BYTES)
}

/// Imports `path` into `data` in units of `unit_bytes` (opened afresh).
fn import_in_units(path: &Path, data: &Path, unit_bytes: u64) -> Result<FileOutcome, ImportError> {
    let (store, archive) = open(data).expect("opens");
    let source = Source::new(path).expect("source");
    import_file(
        &source,
        &options(data, unit_bytes),
        &store,
        &archive,
        &Progress::default(),
    )
}

/// The store and archive of `data` hold exactly `events`.
fn assert_data_matches(data: &Path, events: &[ApiCall]) {
    let (store, archive) = open(data).expect("opens");
    assert_store_matches(&store, events);
    assert_archive_matches(&archive, events);
}

/// The first `lines` lines of `text`.
fn first_lines(text: &str, lines: usize) -> String {
    text.split_inclusive('\n').take(lines).collect()
}

#[test]
fn a_file_that_grew_since_its_import_is_continued_with_its_new_lines_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, bad) = input(dir.path(), 20_000);
    let whole = std::fs::read_to_string(&path).expect("input");
    // The file as it was at the first import: its first 12,000 lines.
    let cut = 12_000;
    let bad_before = bad.iter().filter(|line| **line <= cut as u64).count();
    let good_before = cut - bad_before;
    std::fs::write(&path, first_lines(&whole, cut)).expect("written");
    let data = dir.path().join("data");
    let first = import_once(&path, &data).expect("imports");
    assert_eq!(first.imported_now, good_before as u64);
    assert_data_matches(&data, &events[..good_before]);
    // Appended to since.
    std::fs::write(&path, &whole).expect("written");
    let second = import_once(&path, &data).expect("imports");
    assert!(!second.already_done);
    assert_eq!(second.imported_now, (events.len() - good_before) as u64);
    assert_eq!(second.progress.accepted, events.len() as u64);
    assert_eq!(second.progress.rejected, bad.len() as u64);
    assert_data_matches(&data, &events);
    let lines = reported_lines(&second.report);
    assert_eq!(
        lines, bad,
        "every bad line reported once, numbered in the whole file"
    );
    // Nothing added since: skipped.
    assert!(import_once(&path, &data).expect("imports").already_done);
    assert_data_matches(&data, &events);
}

#[test]
fn a_copy_of_an_imported_file_under_another_name_or_compressed_is_known_as_imported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, _) = input(dir.path(), 20_000);
    let data = dir.path().join("data");
    import_once(&path, &data).expect("imports");
    let copy = dir.path().join("copy-of-calls.ndjson");
    std::fs::copy(&path, &copy).expect("copied");
    let compressed = dir.path().join("calls.ndjson.zst");
    let text = std::fs::read(&path).expect("input");
    std::fs::write(&compressed, zstd::encode_all(&text[..], 1).expect("zstd")).expect("written");
    for other in [&copy, &compressed] {
        let outcome = import_once(other, &data).expect("imports");
        assert!(outcome.already_done, "{}", other.display());
        assert_eq!(outcome.imported_now, 0);
        assert_eq!(outcome.progress.path, path.display().to_string());
    }
    assert_data_matches(&data, &events);
}

#[test]
fn a_different_file_beginning_with_the_same_records_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, _) = input(dir.path(), 20_000);
    let data = dir.path().join("data");
    import_once(&path, &data).expect("imports");
    let whole = std::fs::read_to_string(&path).expect("input");
    // The same first records, then others: continued, the first ones would count twice.
    let other = dir.path().join("other.ndjson");
    let mut text = first_lines(&whole, 5);
    let rest: String = whole.split_inclusive('\n').skip(10).collect();
    text.push_str(&rest);
    text.push_str(&rest);
    std::fs::write(&other, text).expect("written");
    let error = import_once(&other, &data).expect_err("refused").to_string();
    assert!(
        error.contains("begins with the same records as") && error.contains("calls.ndjson"),
        "{error}"
    );
    // And one cut shorter than what was imported of it.
    std::fs::write(&other, first_lines(&whole, 1_000)).expect("written");
    let error = import_once(&other, &data).expect_err("refused").to_string();
    assert!(error.contains("shorter than the"), "{error}");
    assert_data_matches(&data, &events);
    let reports: Vec<_> = std::fs::read_dir(data.join("import"))
        .expect("reports")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(
        reports.len(),
        1,
        "only the imported file's report: {reports:?}"
    );
}

/// `path` as earlier versions identified it: by its path, size and modification time.
fn as_earlier_versions_knew_it(path: &Path) -> Source {
    let mut source = Source::new(path).expect("source");
    source.id = source.legacy_id.clone();
    source
}

/// The progress record under `id` as versions that knew files by their path, size and time
/// wrote it: without what later ones add.
fn forget_what_later_versions_record(store: &RollupStore, id: &str) {
    let record = store.import_progress(id).expect("reads").expect("some");
    let mut record: serde_json::Value = serde_json::from_slice(&record).expect("json");
    for added in [
        "prefix_crc",
        "size_on_disk",
        "modified_ns",
        "canonical",
        "unfinished",
    ] {
        record.as_object_mut().expect("object").remove(added);
    }
    let record = serde_json::to_vec(&record).expect("json");
    let mut memo = store.import_memo().expect("memo");
    store
        .import(&[], i64::MAX, &[(id, &record)], &mut memo)
        .expect("written");
}

#[test]
fn a_file_imported_by_an_earlier_version_is_continued_under_the_identity_it_gave_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, _) = input(dir.path(), 40_000);
    let data = dir.path().join("data");
    let legacy = as_earlier_versions_knew_it(&path);
    {
        let (store, archive) = open(&data).expect("opens");
        one_unit(&legacy, &options(&data, 1 << 20), &store, &archive);
        forget_what_later_versions_record(&store, &legacy.id);
    }
    let outcome = import_in_units(&path, &data, 1 << 20).expect("imports");
    assert!(outcome.progress.done);
    let report = outcome.report.display().to_string();
    assert!(report.contains(&legacy.legacy_id), "{report}");
    assert_data_matches(&data, &events);
    // Done, under that identity: skipped.
    assert!(
        import_in_units(&path, &data, 1 << 20)
            .expect("imports")
            .already_done
    );
}

#[test]
fn an_archive_an_earlier_version_wrote_before_the_store_is_continued_not_repeated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, _) = input(dir.path(), 40_000);
    let data = dir.path().join("data");
    {
        // A crash after the first unit's archive write, before its store write.
        let legacy = as_earlier_versions_knew_it(&path);
        let (_, archive) = open(&data).expect("opens");
        let (scratch, _) = open(&dir.path().join("scratch")).expect("opens");
        one_unit(&legacy, &options(&data, 1 << 20), &scratch, &archive);
        assert!(archive.imported(&legacy.id) > 0);
    }
    import_in_units(&path, &data, 1 << 20).expect("imports");
    assert_data_matches(&data, &events);
}

#[test]
fn a_file_beginning_with_a_byte_order_mark_imports_every_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, bad) = input(dir.path(), 2_000);
    let mut text = b"\xEF\xBB\xBF".to_vec();
    text.extend(std::fs::read(&path).expect("input"));
    std::fs::write(&path, text).expect("written");
    let data = dir.path().join("data");
    let outcome = import_once(&path, &data).expect("imports");
    assert_eq!(outcome.progress.accepted, events.len() as u64);
    assert_eq!(outcome.progress.rejected, bad.len() as u64);
    assert_data_matches(&data, &events);
}

#[test]
fn an_unfinished_last_line_is_left_for_the_import_after_the_file_grows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, bad) = input(dir.path(), 20_000);
    let whole = std::fs::read_to_string(&path).expect("input");
    // Read while a writer was in the middle of a line: the first 12,000 lines and half of
    // the next one.
    let lines: Vec<&str> = whole.split_inclusive('\n').collect();
    let (done, next) = (lines[..12_000].concat(), lines[12_000]);
    assert!(!bad.contains(&12_001), "the line cut is a record");
    let bad_before = bad.iter().filter(|line| **line <= 12_000).count();
    let good_before = 12_000 - bad_before;
    std::fs::write(&path, format!("{done}{}", &next[..next.len() / 2])).expect("written");
    let data = dir.path().join("data");
    let first = import_once(&path, &data).expect("imports");
    assert_eq!(first.progress.accepted, good_before as u64);
    assert_eq!(
        reported_lines(&first.report).len(),
        bad_before,
        "the cut line not rejected"
    );
    assert_eq!(first.progress.unfinished, (next.len() / 2) as u64);
    assert_eq!(first.progress.position, done.len() as u64);
    // The writer finished the line and went on.
    std::fs::write(&path, &whole).expect("written");
    let second = import_once(&path, &data).expect("imports");
    assert_eq!(second.progress.accepted, events.len() as u64);
    assert_eq!(second.progress.unfinished, 0);
    assert_eq!(reported_lines(&second.report), bad);
    assert_data_matches(&data, &events);
}

#[test]
fn a_last_line_without_its_newline_that_is_a_record_is_imported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, bad) = input(dir.path(), 2_000);
    let whole = std::fs::read_to_string(&path).expect("input");
    std::fs::write(&path, whole.trim_end()).expect("written");
    let data = dir.path().join("data");
    let outcome = import_once(&path, &data).expect("imports");
    assert_eq!(outcome.progress.unfinished, 0);
    assert_eq!(outcome.progress.accepted, events.len() as u64);
    assert_eq!(reported_lines(&outcome.report), bad);
    assert_data_matches(&data, &events);
}

#[test]
fn a_file_shorter_than_its_fingerprint_that_grows_is_continued() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, bad) = input(dir.path(), 2_000);
    let whole = std::fs::read_to_string(&path).expect("input");
    // A log just started: one record and half the next, fewer bytes than the fingerprint.
    let lines: Vec<&str> = whole.split_inclusive('\n').collect();
    let start = format!("{}{}", lines[0], &lines[1][..lines[1].len() / 2]);
    assert!(start.len() < 256, "{} bytes", start.len());
    std::fs::write(&path, &start).expect("written");
    let data = dir.path().join("data");
    let first = import_once(&path, &data).expect("imports");
    assert_eq!(first.progress.accepted, 1);
    assert!(first.progress.unfinished > 0);
    std::fs::write(&path, &whole).expect("written");
    let second = import_once(&path, &data).expect("imports");
    assert_eq!(second.imported_now, events.len() as u64 - 1);
    assert_eq!(reported_lines(&second.report), bad);
    assert_data_matches(&data, &events);
}

#[test]
fn a_whole_last_record_without_its_newline_that_fails_a_check_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, mut bad) = input(dir.path(), 2_000);
    let mut text = std::fs::read_to_string(&path).expect("input");
    text.push_str(r#"{"merchant":"m1","api":"/v1/payments"}"#);
    bad.push(text.lines().count() as u64);
    std::fs::write(&path, text).expect("written");
    let data = dir.path().join("data");
    let outcome = import_once(&path, &data).expect("imports");
    assert_eq!(outcome.progress.unfinished, 0);
    assert_eq!(outcome.progress.accepted, events.len() as u64);
    assert_eq!(reported_lines(&outcome.report), bad);
    assert!(outcome.progress.done);
}

#[test]
fn an_unchanged_file_named_another_way_is_skipped_without_reading_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, _) = input(dir.path(), 20_000);
    let data = dir.path().join("data");
    import_once(&path, &data).expect("imports");
    let (store, archive) = open(&data).expect("opens");
    let other_name = dir.path().join(".").join("calls.ndjson");
    let source = Source::new(&other_name).expect("source");
    let progress = Progress::default();
    let outcome = import_file(
        &source,
        &options(&data, UNIT_BYTES),
        &store,
        &archive,
        &progress,
    )
    .expect("imports");
    assert!(outcome.already_done);
    assert_eq!(progress.read_on_disk.load(Ordering::Relaxed), 0, "not read");
    assert_store_matches(&store, &events);
}

/// The archive segments under `data`.
fn segments_of(data: &Path) -> Vec<PathBuf> {
    let mut segments = Vec::new();
    for hour in std::fs::read_dir(data.join("archive")).expect("archive") {
        let hour = hour.expect("entry").path();
        if hour.is_dir() {
            for file in std::fs::read_dir(&hour).expect("hour") {
                segments.push(file.expect("entry").path());
            }
        }
    }
    segments.sort();
    segments
}

/// Every event `data`'s archive holds, by correlation id.
fn archived(data: &Path) -> Vec<ApiCall> {
    let (_, archive) = open(data).expect("opens");
    let mut events = archive
        .find(&RowQuery {
            corr_id: None,
            merchant: None,
            from_us: i64::MIN,
            to_us: i64::MAX,
        })
        .expect("reads");
    events.sort_by(|left, right| left.corr_id.cmp(&right.corr_id));
    events
}

/// Adds optional fields and unmapped ones (escapes, non-ASCII, a nested object) to most of
/// the lines of the file at `path`.
fn with_more_fields(path: &Path) {
    let text: String = std::fs::read_to_string(path)
        .expect("input")
        .lines()
        .enumerate()
        .map(|(index, line)| match (index % 3, line.strip_suffix('}')) {
            (0, Some(open)) => format!(
                "{open},\"method\":\"POST\",\"host\":\"gw-{index}\",\"sdk_version\":\"go/1.{index}\",\"note\":\"a \\\"quoted\\\" ü\",\"ctx\":{{\"try\":{index}}}}}\n"
            ),
            (1, Some(open)) => format!("{open},\"region\":\"eu\",\"retry\":true}}\n"),
            _ => format!("{line}\n"),
        })
        .collect();
    std::fs::write(path, text).expect("written");
}

/// `count` events with [`with_more_fields`] imported into `dir/first`; returns it and the
/// events its archive holds.
fn archived_with_more_fields(dir: &Path, count: usize) -> (PathBuf, Vec<ApiCall>) {
    let (path, calls, _) = input(dir, count);
    with_more_fields(&path);
    // Each hour's segment begins with two records without unmapped fields (merchant `a0`
    // sorts first): its lines begin alike whether its attributes are read as fields or as
    // one text, and differ further on.
    let hours: std::collections::BTreeSet<i64> = calls
        .iter()
        .map(|call| call.ts_us.div_euclid(3_600_000_000))
        .collect();
    let mut text = std::fs::read_to_string(&path).expect("input");
    for hour in hours {
        for at in 1..=2 {
            text.push_str(&ndjson_line(&ApiCall {
                ts_us: hour * 3_600_000_000 + at,
                merchant: "a0".into(),
                corr_id: format!("a0-{hour}-{at}"),
                ..calls[0].clone()
            }));
        }
    }
    std::fs::write(&path, text).expect("written");
    let first = dir.join("first");
    import_once(&path, &first).expect("imports");
    let events = archived(&first);
    (first, events)
}

#[test]
fn archive_segments_imported_again_hold_the_same_records_whatever_the_mapping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, before) = archived_with_more_fields(dir.path(), 6_000);
    assert!(
        before.iter().any(|event| event
            .attributes
            .as_deref()
            .is_some_and(|text| text.contains("sdk_version"))),
        "the input has unmapped fields"
    );
    // Re-imported under a mapping that reads the merchant from elsewhere: the segments'
    // columns are the event's own fields.
    let second = dir.path().join("second");
    let (store, archive) = open(&second).expect("opens");
    let mut mapped = options(&second, UNIT_BYTES);
    mapped.mapping = FieldMapping {
        merchant: "/req/account".into(),
        ..FieldMapping::default()
    };
    for segment in segments_of(&first) {
        let source = Source::new(&segment).expect("source");
        assert!(source.archive_segment);
        let outcome =
            import_file(&source, &mapped, &store, &archive, &Progress::default()).expect("imports");
        assert_eq!(
            outcome.progress.rejected, 0,
            "{:?}",
            outcome.progress.rejected_by_code
        );
    }
    drop((store, archive));
    assert_eq!(
        archived(&second),
        before,
        "every field of every record as it was"
    );
    let (store, _) = open(&second).expect("opens");
    assert_store_matches(&store, &before);
}

#[test]
fn an_archive_segment_an_earlier_version_imported_is_not_imported_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, events) = archived_with_more_fields(dir.path(), 4_000);
    let segments = segments_of(&first);
    let second = dir.path().join("second");
    {
        // Imported under the identity earlier versions gave it.
        let (store, archive) = open(&second).expect("opens");
        for segment in &segments {
            let mut source = Source::new(segment).expect("source");
            source.id = source.earlier_id.clone().expect("an archive segment");
            source.as_earlier = true;
            import_file(
                &source,
                &options(&second, UNIT_BYTES),
                &store,
                &archive,
                &Progress::default(),
            )
            .expect("imports");
        }
    }
    for segment in &segments {
        let outcome = import_in_units(segment, &second, UNIT_BYTES).expect("imports");
        assert!(outcome.already_done, "{}", segment.display());
    }
    // Nothing counted or archived twice (as that version read them).
    assert_counted_and_archived_once(&second, &events);
}

/// `data` holds the windows of `events` and each of them archived once (by correlation id:
/// a version reading segments otherwise archived their attributes otherwise).
fn assert_counted_and_archived_once(data: &Path, events: &[ApiCall]) {
    let ids = |events: &[ApiCall]| -> Vec<String> {
        events.iter().map(|event| event.corr_id.clone()).collect()
    };
    assert_eq!(ids(&archived(data)), ids(events), "each archived once");
    let (store, _) = open(data).expect("opens");
    assert_store_matches(&store, events);
}

#[test]
fn a_half_imported_archive_segment_is_continued_as_the_version_that_began_it_read_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, events) = archived_with_more_fields(dir.path(), 6_000);
    let alike = segments_of(&first)
        .iter()
        .filter(|segment| {
            let source = Source::new(segment).expect("source");
            source.earlier_id == Some(source::identity(&source.head))
        })
        .count();
    assert!(alike > 0, "no segment begins alike in both readings");
    // Each segment half imported as an earlier version read it, or as this one reads it;
    // then imported again.
    // By versions that knew files by their first records (read as columns), by their path,
    // size and time (read as columns, no checksum recorded), and by this one.
    for (into, earlier, by_path) in [
        ("earlier", true, false),
        ("by path", true, true),
        ("this", false, false),
    ] {
        let data = dir.path().join(into);
        let unit_bytes = 64 << 10;
        let mut interrupted = 0;
        for segment in segments_of(&first) {
            {
                // Its first unit imported, then interrupted (a segment of one unit is
                // imported whole).
                let (store, archive) = open(&data).expect("opens");
                let mut began = Source::new(&segment).expect("source");
                began.as_earlier = earlier;
                if earlier {
                    began.id = match by_path {
                        true => began.legacy_id.clone(),
                        false => began.earlier_id.clone().expect("an archive segment"),
                    };
                }
                let progress = Progress::default();
                progress.stop.store(true, Ordering::Release);
                let options = options(&data, unit_bytes);
                match import_file(&began, &options, &store, &archive, &progress) {
                    Err(ImportError::Interrupted) => interrupted += 1,
                    Ok(outcome) => assert!(outcome.progress.done),
                    Err(error) => panic!("{error}"),
                }
                if by_path {
                    forget_what_later_versions_record(&store, &began.id);
                }
            }
            let outcome = import_in_units(&segment, &data, unit_bytes).expect("imports");
            assert!(outcome.progress.done);
            assert_eq!(outcome.progress.rejected, 0);
        }
        assert!(interrupted > 0, "no segment was left half imported");
        assert_counted_and_archived_once(&data, &events);
    }
}

/// Imports every archive segment of `from` into `into` (with the default mapping); returns
/// the events `into`'s archive then holds.
fn segments_imported(from: &Path, into: &Path) -> Vec<ApiCall> {
    for segment in segments_of(from) {
        let outcome = import_in_units(&segment, into, UNIT_BYTES).expect("imports");
        assert_eq!(
            outcome.progress.rejected, 0,
            "{:?}",
            outcome.progress.rejected_by_code
        );
    }
    archived(into)
}

/// `after` is `before`, but for their attributes.
fn assert_equal_but_attributes(after: ApiCall, before: ApiCall) {
    let without = |event: ApiCall| ApiCall {
        attributes: None,
        ..event
    };
    assert_eq!(without(after), without(before));
}

#[test]
fn an_archived_record_whose_unmapped_value_spans_lines_is_read_back_as_one_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, _) = input(dir.path(), 500);
    // A pretty-printed JSON array: the nested value keeps its line breaks in `attributes`.
    let records: Vec<serde_json::Value> = events
        .iter()
        .map(|event| {
            let mut record: serde_json::Value =
                serde_json::from_str(&ndjson_line(event)).expect("json");
            record["ctx"] = serde_json::json!({"try": 1, "tags": ["a", "b"]});
            record
        })
        .collect();
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&records).expect("serialized"),
    )
    .expect("written");
    let first = dir.path().join("first");
    import_once(&path, &first).expect("imports");
    let before = archived(&first);
    assert!(
        before[0]
            .attributes
            .as_deref()
            .is_some_and(|text| text.contains('\n')),
        "{:?}",
        before[0].attributes
    );
    let after = segments_imported(&first, &dir.path().join("second"));
    assert_eq!(after.len(), before.len());
    for (after, before) in after.into_iter().zip(before) {
        let attributes = |event: &ApiCall| -> serde_json::Value {
            serde_json::from_str(event.attributes.as_deref().expect("attributes")).expect("json")
        };
        assert_eq!(attributes(&after), attributes(&before), "the same value");
        assert_equal_but_attributes(after, before);
    }
}

#[test]
fn an_archived_record_with_an_unmapped_key_named_like_a_field_keeps_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, _) = input(dir.path(), 500);
    // Read with a mapping that takes the host from elsewhere: the top-level `host` is an
    // unmapped field, kept in `attributes`.
    let text: String = std::fs::read_to_string(&path)
        .expect("input")
        .lines()
        .map(|line| {
            let open = line.strip_suffix('}').expect("an object");
            format!("{open},\"host\":\"top\",\"gw\":{{\"host\":\"real\"}}}}\n")
        })
        .collect();
    std::fs::write(&path, text).expect("written");
    let first = dir.path().join("first");
    {
        let (store, archive) = open(&first).expect("opens");
        let mut mapped = options(&first, UNIT_BYTES);
        mapped.mapping.host = "/gw/host".into();
        let source = Source::new(&path).expect("source");
        import_file(&source, &mapped, &store, &archive, &Progress::default()).expect("imports");
    }
    let before = archived(&first);
    assert_eq!(before.len(), events.len());
    let after = segments_imported(&first, &dir.path().join("second"));
    assert_eq!(after.len(), before.len());
    for (after, before) in after.into_iter().zip(before) {
        assert_eq!(after.host.as_deref(), Some("real"), "the mapped host");
        // The unmapped one is not taken for it: the attributes are kept whole, as a field.
        let kept: serde_json::Value =
            serde_json::from_str(after.attributes.as_deref().expect("attributes")).expect("json");
        assert_eq!(kept["attributes"].as_str(), before.attributes.as_deref());
        assert_equal_but_attributes(after, before);
    }
}

#[test]
fn files_of_one_command_that_share_days_and_hours_count_each_call_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, bad) = input(dir.path(), 60_000);
    // The logs of three hosts: each line in one of them, all over the same hours.
    let text = std::fs::read_to_string(&path).expect("input");
    let hosts: Vec<PathBuf> = (0..3)
        .map(|host| {
            let lines: String = text.split_inclusive('\n').skip(host).step_by(3).collect();
            let path = dir.path().join(format!("gw{host}.ndjson"));
            std::fs::write(&path, lines).expect("written");
            path
        })
        .collect();
    let data = dir.path().join("data");
    let mut rejected = 0;
    {
        let (store, archive) = open(&data).expect("opens");
        let mut imports = Imports::new(&store).expect("memo");
        let options = options(&data, 1 << 20);
        // The second host's import stops after a unit (Ctrl-C); the command writes what it
        // holds and ends.
        for (index, host) in hosts.iter().enumerate().take(2) {
            let source = Source::new(host).expect("source");
            let progress = Progress::default();
            progress.stop.store(index == 1, Ordering::Release);
            match imports.import_file(&source, &options, &store, &archive, &progress) {
                Ok(outcome) if index == 0 => rejected += outcome.progress.rejected,
                Err(ImportError::Interrupted) if index == 1 => {}
                other => panic!("file {index}: {:?}", other.map(|outcome| outcome.progress)),
            }
        }
        imports.finish(&store).expect("hours written");
    }
    {
        // The same command again: the first file is done, the others continue.
        let (store, archive) = open(&data).expect("opens");
        let mut imports = Imports::new(&store).expect("memo");
        for host in &hosts {
            let source = Source::new(host).expect("source");
            let outcome = imports
                .import_file(
                    &source,
                    &options(&data, 1 << 20),
                    &store,
                    &archive,
                    &Progress::default(),
                )
                .expect("imports");
            if !outcome.already_done {
                rejected += outcome.progress.rejected;
            }
        }
        imports.finish(&store).expect("hours written");
    }
    assert_eq!(rejected, bad.len() as u64);
    assert_data_matches(&data, &events);
    // The hours, read whole (a server answers long ranges from them).
    let (store, _) = open(&data).expect("opens");
    let expected: BTreeMap<WindowKey, Rollup> = oracle(&events);
    let mut per_hour: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for (key, rollup) in expected
        .iter()
        .filter(|(key, _)| key.api != mm_model::rollup::MERCHANT_TOTAL_API)
    {
        *per_hour
            .entry((key.merchant.clone(), key.minute.div_euclid(60)))
            .or_default() += rollup.calls;
    }
    for ((merchant, hour), calls) in per_hour {
        for series in [
            mm_storage::rollups::Series::EveryApi,
            mm_storage::rollups::Series::One(mm_model::rollup::MERCHANT_TOTAL_API),
        ] {
            let mut got = 0;
            store
                .scan_hours(
                    &merchant,
                    series,
                    hour * 60,
                    hour * 60 + 60,
                    |_, _, view| got += view.calls,
                )
                .expect("reads");
            assert_eq!(got, calls, "{merchant} hour {hour}");
        }
    }
}

#[test]
fn a_parquet_file_whose_rows_cannot_be_read_is_refused_naming_it_and_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, _) = archived_with_more_fields(dir.path(), 2_000);
    let segment = segments_of(&first).remove(0);
    // Its first page header overwritten; the footer, and so the metadata, intact.
    let mut bytes = std::fs::read(&segment).expect("segment");
    bytes[4..68].fill(0xff);
    let broken = dir.path().join("broken.parquet");
    std::fs::write(&broken, bytes).expect("written");
    // Not a file of one rejected line (the reason), taken for imported whole.
    let error = Source::new(&broken).expect_err("rows unreadable");
    let message = error.to_string();
    assert!(
        message.contains("unreadable Parquet") && message.contains("broken.parquet"),
        "{message}"
    );
}

#[test]
fn a_file_whose_reading_fails_midway_keeps_what_was_read_and_is_not_taken_for_done() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, _) = input(dir.path(), 40_000);
    let text = std::fs::read(&path).expect("input");
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(&text).expect("compressed");
    let gzip = gzip.finish().expect("compressed");
    // The stream cut short: it decompresses part of the way, then fails.
    let cut = dir.path().join("cut.ndjson.gz");
    std::fs::write(&cut, &gzip[..gzip.len() * 2 / 3]).expect("written");
    let data = dir.path().join("data");
    for _ in 0..2 {
        let error = import_in_units(&cut, &data, 1 << 20).expect_err("a cut stream");
        assert!(matches!(error, ImportError::Io { .. }), "{error}");
    }
    let (stored, _) = sides(&Source::new(&cut).expect("source"), &data);
    assert!(stored > 0, "what was read before is kept");
    // The whole file, once it is there, is continued from where the cut one stopped.
    std::fs::write(&cut, &gzip).expect("written");
    let outcome = import_in_units(&cut, &data, 1 << 20).expect("imports");
    assert!(outcome.progress.done);
    assert!(
        outcome.imported_now < events.len() as u64,
        "continued, not repeated"
    );
    assert_data_matches(&data, &events);
}

/// Milliseconds the archive thread waits before each write: a test makes the archive the
/// slower side with it (a test runs in a process of its own).
static ARCHIVE_DELAY_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub(crate) fn slow_archive() {
    let delay = ARCHIVE_DELAY_MS.load(Ordering::Relaxed);
    if delay > 0 {
        std::thread::sleep(Duration::from_millis(delay));
    }
}

/// Chunks the parsers take before one panics (0: none does).
static PANIC_AT_CHUNK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub(crate) fn parser_fault() {
    let at = PANIC_AT_CHUNK.load(Ordering::Relaxed);
    if at > 0 && PANIC_AT_CHUNK.fetch_sub(1, Ordering::Relaxed) == 1 {
        panic!("a parser fault");
    }
}

mod files;
