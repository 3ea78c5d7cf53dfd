//! Several files in one command: units that span files, each file's own progress.

use super::*;

/// `path`'s lines cut into `count` files of consecutive lines, named in order.
fn pieces(path: &Path, count: usize) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(path).expect("input");
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let per_file = lines.len().div_ceil(count);
    lines
        .chunks(per_file)
        .enumerate()
        .map(|(index, lines)| {
            let piece = path.with_file_name(format!("piece-{index:02}.ndjson"));
            std::fs::write(&piece, lines.concat()).expect("written");
            piece
        })
        .collect()
}

fn sources(paths: &[PathBuf]) -> Vec<Source> {
    paths
        .iter()
        .map(|path| Source::new(path).expect("source"))
        .collect()
}

/// Imports `sources` into `data` in one command; returns each file's outcome, by index.
fn import_all(
    sources: &[Source],
    data: &Path,
    unit_bytes: u64,
    progress: &Progress,
) -> (BTreeMap<usize, FileOutcome>, Result<(), FileError>) {
    let (store, archive) = open(data).expect("opens");
    let mut imports = Imports::new(&store).expect("memo");
    let mut outcomes = BTreeMap::new();
    let mut order = Vec::new();
    let result = imports.import_files(
        sources,
        &options(data, unit_bytes),
        (&store, &archive),
        progress,
        &mut |file, outcome| {
            order.push(file);
            outcomes.insert(file, outcome);
        },
    );
    imports.finish(&store).expect("hours written");
    assert!(order.is_sorted(), "outcomes in the files' order: {order:?}");
    (outcomes, result)
}

#[test]
fn small_files_of_one_command_make_units_and_segments_as_one_large_file_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, bad) = input(dir.path(), 30_000);
    let whole = dir.path().join("whole");
    import_in_units(&path, &whole, UNIT_BYTES).expect("imports");
    let files = pieces(&path, 12);
    let data = dir.path().join("data");
    let (outcomes, result) = import_all(&sources(&files), &data, UNIT_BYTES, &Progress::default());
    result.expect("imports");
    assert_eq!(outcomes.len(), files.len());
    let mut rejected = 0;
    for (index, outcome) in &outcomes {
        assert!(outcome.progress.done, "file {index}");
        assert_eq!(outcome.imported_now, outcome.progress.accepted);
        rejected += outcome.progress.rejected;
    }
    assert_eq!(rejected, bad.len() as u64);
    assert_data_matches(&data, &events);
    // One unit for all twelve: a segment per hour, as for the file they were cut from.
    assert_eq!(segments_of(&data).len(), segments_of(&whole).len());
    // Each file's own progress and report.
    let (store, _) = open(&data).expect("opens");
    for (source, outcome) in sources(&files).iter().zip(outcomes.values()) {
        let stored = store
            .import_progress(&source.id)
            .expect("reads")
            .expect("a record per file");
        let stored: FileProgress = serde_json::from_slice(&stored).expect("json");
        assert_eq!(stored, outcome.progress);
        assert_eq!(
            reported_lines(&outcome.report).len() as u64,
            outcome.progress.rejected
        );
    }
}

/// One unit of `sources` committed (the command stopped after it).
fn one_unit(
    sources: &[Source],
    options: &ImportOptions,
    (store, archive): &(RollupStore, Archive),
) {
    let progress = Progress::default();
    progress.stop.store(true, Ordering::Release);
    let mut imports = Imports::new(store).expect("memo");
    let stopped = imports.import_files(
        sources,
        options,
        (store, archive),
        &progress,
        &mut |_, _| {},
    );
    imports.finish(store).expect("hours written");
    assert!(matches!(
        stopped,
        Err(FileError {
            error: ImportError::Interrupted,
            ..
        })
    ));
}

/// Files cut from one input, a unit spanning several of them committed into both sides of
/// `data`, then one side (the archive, or the store) a unit further, as a crash between the
/// two writes of a unit leaves it (the first of the two runs on that side commits the first
/// unit again to the other side's throwaway copy); then the command run again to the end.
fn crash_between_across_files(archive_ahead: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, bad) = input(dir.path(), 40_000);
    let files = sources(&pieces(&path, 24));
    let data = dir.path().join("data");
    let options = options(&data, 1 << 20);
    one_unit(&files, &options, &open(&data).expect("opens"));
    let begun = files
        .iter()
        .filter(|source| sides(source, &data).0 > 0)
        .count();
    assert!(begun >= 2, "the first unit spans files ({begun})");
    {
        let (store, archive) = open(&data).expect("opens");
        let (scratch_store, scratch_archive) = open(&dir.path().join("scratch")).expect("opens");
        let sides = match archive_ahead {
            true => (scratch_store, archive),
            false => (store, scratch_archive),
        };
        for _ in 0..2 {
            one_unit(&files, &options, &sides);
        }
    }
    let apart = files
        .iter()
        .filter(|source| {
            let (stored, archived) = sides(source, &data);
            match archive_ahead {
                true => archived > stored,
                false => stored > archived,
            }
        })
        .count();
    assert!(apart >= 2, "one side ahead in several files ({apart})");
    let (outcomes, result) = import_all(&files, &data, 1 << 20, &Progress::default());
    result.expect("imports");
    assert_eq!(outcomes.len(), files.len());
    let (store, _) = open(&data).expect("opens");
    let rejected: u64 = files
        .iter()
        .map(|source| {
            let bytes = store
                .import_progress(&source.id)
                .expect("reads")
                .expect("recorded");
            serde_json::from_slice::<FileProgress>(&bytes)
                .expect("json")
                .rejected
        })
        .sum();
    assert_eq!(rejected, bad.len() as u64);
    drop(store);
    assert_data_matches(&data, &events);
}

#[test]
fn a_crash_between_archive_and_store_in_units_spanning_files_is_made_good_by_the_next_run() {
    crash_between_across_files(true);
}

#[test]
fn a_crash_between_store_and_archive_in_units_spanning_files_is_made_good_by_the_next_run() {
    crash_between_across_files(false);
}

#[test]
fn a_file_named_twice_or_its_copy_in_one_command_is_imported_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, _) = input(dir.path(), 20_000);
    let copy = dir.path().join("copy-of-calls.ndjson");
    std::fs::copy(&path, &copy).expect("copied");
    let data = dir.path().join("data");
    let files = sources(&[path.clone(), copy, path.clone()]);
    // The archive writes each unit after the store has: a file looked up once the store
    // alone has the one before it would be archived again.
    ARCHIVE_DELAY_MS.store(300, Ordering::Relaxed);
    let (outcomes, result) = import_all(&files, &data, UNIT_BYTES, &Progress::default());
    result.expect("imports");
    assert!(!outcomes[&0].already_done);
    assert_eq!(outcomes[&0].imported_now, events.len() as u64);
    for later in [1, 2] {
        assert!(outcomes[&later].already_done, "file {later}");
        assert_eq!(outcomes[&later].imported_now, 0);
    }
    assert_data_matches(&data, &events);
}

#[test]
fn a_file_that_fails_stops_the_command_after_the_files_before_it_are_committed() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, _) = input(dir.path(), 60_000);
    let mut files = pieces(&path, 3);
    // The second file gzip-compressed and cut short: it decompresses part of the way.
    let text = std::fs::read(&files[1]).expect("piece");
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(&text).expect("compressed");
    let gzip = gzip.finish().expect("compressed");
    let cut = dir.path().join("piece-01.ndjson.gz");
    std::fs::write(&cut, &gzip[..gzip.len() * 4 / 5]).expect("written");
    files[1] = cut.clone();
    let data = dir.path().join("data");
    let (outcomes, result) = import_all(&sources(&files), &data, UNIT_BYTES, &Progress::default());
    let failed = result.expect_err("a cut stream");
    assert_eq!(failed.file, 1);
    assert!(
        matches!(failed.error, ImportError::Io { .. }),
        "{}",
        failed.error
    );
    assert_eq!(outcomes.keys().copied().collect::<Vec<_>>(), vec![0]);
    assert!(outcomes[&0].progress.done);
    let cut_source = Source::new(&cut).expect("source");
    assert!(
        sides(&cut_source, &data).0 > 0,
        "what was read of it is kept"
    );
    assert_eq!(
        sides(&Source::new(&files[2]).expect("source"), &data),
        (0, 0)
    );
    // Whole again: the same command finishes the second file and imports the third.
    std::fs::write(&cut, &gzip).expect("written");
    let (outcomes, result) = import_all(&sources(&files), &data, UNIT_BYTES, &Progress::default());
    result.expect("imports");
    assert!(outcomes[&0].already_done);
    assert!(!outcomes[&1].already_done && outcomes[&1].progress.done);
    assert!(outcomes[&2].progress.done);
    assert_data_matches(&data, &events);
}

#[test]
fn a_parser_that_panics_fails_the_command_instead_of_hanging_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, events, _) = input(dir.path(), 20_000);
    let copy = dir.path().join("copy-of-calls.ndjson");
    std::fs::copy(&path, &copy).expect("copied");
    let data = dir.path().join("data");
    // The copy makes the reader wait for the first file, whose second chunk never parses.
    PANIC_AT_CHUNK.store(2, Ordering::Relaxed);
    let files = sources(&[path.clone(), copy]);
    let (outcomes, result) = import_all(&files, &data, UNIT_BYTES, &Progress::default());
    let failed = result.expect_err("a parser fault");
    assert_eq!(failed.file, 0);
    assert!(
        failed.error.to_string().contains("the parser panicked"),
        "{}",
        failed.error
    );
    assert!(outcomes.is_empty());
    // Nothing counted twice: the same command, run again, imports the rest.
    let (outcomes, result) = import_all(&files, &data, UNIT_BYTES, &Progress::default());
    result.expect("imports");
    assert!(outcomes[&1].already_done);
    assert_data_matches(&data, &events);
}
