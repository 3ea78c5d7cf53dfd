//! The import benchmark: `import` of an NDJSON file into a fresh data directory (parse,
//! validate, aggregate, archive segments, rollup store), against DuckDB's batch `GROUP BY` of
//! the same file (`read_json`, counts per status class and latency quantiles per merchant, api
//! and minute, two threads), alternating in one run; and against DuckDB doing the work an
//! import does (the events and the windows kept on disk), reported in all and step by step.
//! The same calls cut into [`PIECES`] files (a directory of rotated logs) are imported too,
//! in one command and file by file, against the one file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mm_import::{ImportOptions, Progress, Source};
use mm_model::mapping::FieldMapping;
use mm_traffic::TrafficConfig;

use super::{BenchArgs, median};

/// A generated file whose events end about now (import validates them against the clock).
fn recent_dataset(work_dir: &Path, events: u64) -> anyhow::Result<PathBuf> {
    let path = work_dir.join(format!("import-{events}.ndjson"));
    let rate = 2_000.0;
    let start = mm_model::time::now_us() - (events as f64 / rate * 1e6) as i64 - 60_000_000;
    let config = TrafficConfig {
        start_ts_us: start,
        seed: 13,
        events_per_second: rate,
        ..TrafficConfig::default()
    };
    crate::dataset::write_gen(config, events, &path)?;
    Ok(path)
}

/// Files the input is cut into for the several-files measurement.
const PIECES: usize = 40;

/// `path` (decompressed) cut into [`PIECES`] files of consecutive lines in a directory of
/// `work_dir` named after the file's identity and size (made once per input; the pieces of
/// other inputs are removed).
fn pieces(path: &Path, work_dir: &Path) -> anyhow::Result<Vec<Source>> {
    use std::io::{BufRead, BufReader, Write};
    let source = Source::new(path)?;
    let name = format!("import-pieces-{}-{}", source.id, source.size);
    for entry in std::fs::read_dir(work_dir)? {
        let entry = entry?;
        let other = entry.file_name().to_string_lossy().into_owned();
        if other.starts_with("import-pieces") && other != name {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    let dir = &work_dir.join(name);
    let names: Vec<PathBuf> = (0..PIECES)
        .map(|index| dir.join(format!("piece-{index:02}.ndjson")))
        .collect();
    if !names.iter().all(|name| name.exists()) {
        std::fs::create_dir_all(dir)?;
        let open = || -> anyhow::Result<_> {
            Ok(BufReader::with_capacity(
                1 << 20,
                Source::new(path)?.open(Default::default())?,
            ))
        };
        let lines = open()?.split(b'\n').count();
        let per_piece = lines.div_ceil(PIECES).max(1);
        let mut input = open()?;
        for name in &names {
            let mut piece = std::io::BufWriter::new(std::fs::File::create(name)?);
            let mut line = Vec::new();
            for _ in 0..per_piece {
                line.clear();
                if input.read_until(b'\n', &mut line)? == 0 {
                    break;
                }
                piece.write_all(&line)?;
            }
            piece.flush()?;
        }
    }
    Ok(names
        .iter()
        .map(|name| Source::new(name))
        .collect::<Result<_, _>>()?)
}

/// Writes out what the previous job left dirty in the page cache, so that no job's fsyncs wait
/// for another's writes (the first import after writing the dataset ran a fifth slower).
fn settle_disk() {
    let _ = Command::new("sync").status();
}

/// What DuckDB is asked to do with the file.
#[derive(Clone, Copy, PartialEq)]
enum DuckJob {
    /// The issue's reference: `read_json` and the `GROUP BY`, in memory, nothing written.
    GroupBy,
    /// The work an import does: the windows and the events, both kept on disk (a database
    /// file with the events and the windows, the events sorted by merchant and time in a
    /// zstd Parquet file, checkpointed).
    SameWork,
}

/// The steps of [`DuckJob::SameWork`], in order, as the report names them.
const SAME_WORK_STEPS: [&str; 4] = [
    "reading every field into a table",
    "the windows' GROUP BY from that table",
    "writing the events sorted by merchant and time as zstd Parquet",
    "checkpointing the database file",
];

/// What one DuckDB job took: in all, and per step (the steps of [`DuckJob::SameWork`]).
struct DuckRun {
    elapsed: Duration,
    windows: u64,
    steps: Vec<f64>,
}

/// Runs one DuckDB job on `path` (in the directory `out` for [`DuckJob::SameWork`]); returns
/// what it took and the windows it found, or `None` when DuckDB is not installed for python3.
fn duckdb_once(path: &Path, job: DuckJob, out: &Path) -> anyhow::Result<Option<DuckRun>> {
    if job == DuckJob::SameWork {
        let _ = std::fs::remove_dir_all(out);
        std::fs::create_dir_all(out)?;
    }
    let script = r#"
import sys, time
try:
    import duckdb
except ImportError:
    print("missing")
    sys.exit(0)
path, out, same_work = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
quote = lambda text: "'" + text.replace("'", "''") + "'"
read_json = f"read_json({quote(path)}, format = 'newline_delimited')"
# Counts per status class and latency quantiles per merchant, api and minute.
windows_of = lambda source: f"""
    SELECT merchant, api, date_trunc('minute', CAST(ts AS TIMESTAMP)) AS minute,
           count(*) AS calls,
           count(*) FILTER (WHERE status BETWEEN 100 AND 199) AS s1xx,
           count(*) FILTER (WHERE status BETWEEN 200 AND 299) AS s2xx,
           count(*) FILTER (WHERE status BETWEEN 300 AND 399) AS s3xx,
           count(*) FILTER (WHERE status BETWEEN 400 AND 499) AS s4xx,
           count(*) FILTER (WHERE status BETWEEN 500 AND 599) AS s5xx,
           approx_quantile(latency_ms, 0.5) AS p50,
           approx_quantile(latency_ms, 0.95) AS p95,
           approx_quantile(latency_ms, 0.99) AS p99,
           max(latency_ms) AS max_ms
    FROM {source}
    GROUP BY ALL"""
con = duckdb.connect(out + "/import.duckdb" if same_work else ":memory:")
con.execute("SET threads=2")
con.execute("SET enable_progress_bar=false")
started = time.perf_counter()
steps = []
def step():
    steps.append(time.perf_counter() - started - sum(steps))
if same_work:
    con.execute(f"CREATE TABLE events AS SELECT * FROM {read_json}")
    step()
    con.execute(f"CREATE TABLE windows AS {windows_of('events')}")
    step()
    parquet = quote(out + "/events.parquet")
    con.execute(f"COPY (SELECT * FROM events ORDER BY merchant, ts) TO {parquet} (FORMAT parquet, COMPRESSION zstd)")
    step()
    con.execute("CHECKPOINT")
    windows = con.execute("SELECT count(*) FROM windows").fetchone()[0]
    step()
else:
    windows = con.execute(f"SELECT count(*) FROM ({windows_of(read_json)})").fetchone()[0]
con.close()
print(time.perf_counter() - started, windows, *steps)
"#;
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .arg(out)
        .arg(if job == DuckJob::SameWork { "1" } else { "0" })
        .output()
        .context("running python3 for DuckDB")?;
    if job == DuckJob::SameWork {
        let _ = std::fs::remove_dir_all(out);
    }
    if !output.status.success() {
        bail!(
            "DuckDB failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let text = stdout.lines().last().unwrap_or_default();
    if text.trim() == "missing" {
        return Ok(None);
    }
    let mut fields = text.split_whitespace();
    let seconds: f64 = fields.next().context("DuckDB's time")?.parse()?;
    let windows: u64 = fields.next().context("DuckDB's windows")?.parse()?;
    let steps = fields
        .map(|field| field.parse::<f64>().context("DuckDB's step time"))
        .collect::<anyhow::Result<Vec<f64>>>()?;
    Ok(Some(DuckRun {
        elapsed: Duration::from_secs_f64(seconds),
        windows,
        steps,
    }))
}

pub(super) fn bench_import(args: &BenchArgs, work_dir: &Path) -> anyhow::Result<()> {
    let path = match &args.input {
        Some(path) => path.clone(),
        None => recent_dataset(work_dir, args.events)?,
    };
    let source = Source::new(&path)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |cores| cores.get()))
        .max(1);
    let mut ours = Vec::new();
    let mut group_by = Vec::new();
    let mut same_work = Vec::new();
    let mut same_work_steps: Vec<Vec<f64>> = vec![Vec::new(); SAME_WORK_STEPS.len()];
    let mut accepted = 0;
    let mut windows = 0;
    let duck_dir = work_dir.join("import-duckdb");
    let pieces = pieces(&path, work_dir)?;
    let (mut in_one_command, mut file_by_file) = (Vec::new(), Vec::new());
    for run in 0..args.runs {
        let data = work_dir.join(format!("import-data-{run}"));
        let _ = std::fs::remove_dir_all(&data);
        let options = ImportOptions {
            data_dir: data.clone(),
            mapping: FieldMapping::default(),
            retention: Duration::from_secs(30 * 86_400),
            max_clock_skew: Duration::from_secs(300),
            max_record_bytes: 64 * 1024,
            grace: Duration::from_secs(180),
            threads,
            report_dir: None,
            unit_bytes: mm_import::UNIT_BYTES,
        };
        settle_disk();
        let started = Instant::now();
        let (store, archive) = mm_import::open(&data)?;
        let outcome =
            mm_import::import_file(&source, &options, &store, &archive, &Progress::default())?;
        drop(archive);
        // Timed as the CLI runs: it exits once the import returns, without freeing the store
        // (everything is durable by then).
        let elapsed = started.elapsed();
        drop(store);
        accepted = outcome.progress.accepted;
        let rate = accepted as f64 / elapsed.as_secs_f64();
        ours.push(rate);
        let _ = std::fs::remove_dir_all(&data);
        let mut line = format!("import: run {}: import {rate:.0} events/s", run + 1);
        for (job, rates, name) in [
            (DuckJob::GroupBy, &mut group_by, "DuckDB GROUP BY"),
            (DuckJob::SameWork, &mut same_work, "DuckDB same work"),
        ] {
            settle_disk();
            match duckdb_once(&path, job, &duck_dir)? {
                Some(run) => {
                    windows = run.windows;
                    let rate = outcome.progress.records as f64 / run.elapsed.as_secs_f64();
                    line.push_str(&format!(", {name} {rate:.0} events/s"));
                    rates.push(rate);
                    if job == DuckJob::SameWork {
                        for (times, seconds) in same_work_steps.iter_mut().zip(run.steps) {
                            times.push(seconds);
                        }
                    }
                }
                None if run == 0 && job == DuckJob::GroupBy => println!(
                    "import: DuckDB is not installed for python3 (pip install duckdb): reporting import alone"
                ),
                None => {}
            }
        }
        for (one_command, rates, name) in [
            (true, &mut in_one_command, "in one command"),
            (false, &mut file_by_file, "file by file"),
        ] {
            settle_disk();
            let started = Instant::now();
            let (store, archive) = mm_import::open(&data)?;
            let mut imports = mm_import::Imports::new(&store)?;
            let mut imported = 0;
            match one_command {
                true => imports
                    .import_files(
                        &pieces,
                        &options,
                        (&store, &archive),
                        &Progress::default(),
                        &mut |_, outcome| imported += outcome.imported_now,
                    )
                    .map_err(|failed| failed.error)?,
                false => {
                    for piece in &pieces {
                        imported += imports
                            .import_file(piece, &options, &store, &archive, &Progress::default())?
                            .imported_now;
                    }
                }
            }
            imports.finish(&store)?;
            drop(archive);
            let elapsed = started.elapsed();
            drop(store);
            let _ = std::fs::remove_dir_all(&data);
            let rate = imported as f64 / elapsed.as_secs_f64();
            line.push_str(&format!(", {PIECES} files {name} {rate:.0} events/s"));
            rates.push(rate);
        }
        println!("{line}");
    }
    let ours = median(&mut ours);
    let (several, one_by_one) = (median(&mut in_one_command), median(&mut file_by_file));
    println!(
        "import: the same calls in {PIECES} files of consecutive lines: in one command median {several:.0} events/s ({:.2} of the one file), file by file (a pipeline each) {one_by_one:.0} events/s ({:.2}); one command against file by file {:.2}",
        several / ours,
        one_by_one / ours,
        several / one_by_one
    );
    println!(
        "import of {}: {accepted} events, {threads} parser threads, rollups + archive segments written, {} runs: median {ours:.0} events/s",
        path.display(),
        args.runs
    );
    if !group_by.is_empty() {
        let theirs = median(&mut group_by);
        println!(
            "import: DuckDB read_json + GROUP BY merchant, api, minute in memory ({windows} windows, threads=2), same file, alternating: median {theirs:.0} events/s; ratio import/DuckDB {:.2}",
            ours / theirs
        );
    }
    if !same_work.is_empty() {
        let theirs = median(&mut same_work);
        println!(
            "import: DuckDB doing an import's work (events and windows into a database file, events sorted by merchant and time into zstd Parquet, checkpointed; threads=2): median {theirs:.0} events/s; ratio import/DuckDB {:.2}",
            ours / theirs
        );
        // Its steps one by one, beside the import's whole run: the GROUP BY reference reads
        // only the five fields it groups and counts; an import reads every field and writes
        // the archive too.
        let steps: Vec<String> = SAME_WORK_STEPS
            .iter()
            .zip(&mut same_work_steps)
            .filter(|(_, times)| !times.is_empty())
            .map(|(name, times)| format!("{name} {:.2} s", median(times)))
            .collect();
        if !steps.is_empty() {
            println!(
                "import: DuckDB's same work step by step (medians): {}; the import's whole run {:.2} s",
                steps.join(", "),
                accepted as f64 / ours
            );
        }
    }
    Ok(())
}
