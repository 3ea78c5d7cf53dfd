//! The import benchmark: `import` of an NDJSON file into a fresh data directory (parse,
//! validate, aggregate, archive segments, rollup store), against DuckDB's batch `GROUP BY` of
//! the same file (`read_json`, counts per status class and latency quantiles per merchant, api
//! and minute, two threads), alternating in one run.

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

/// Runs DuckDB's aggregation of `path` once; returns its time and the windows it found.
fn duckdb_once(path: &Path) -> anyhow::Result<Option<(Duration, u64)>> {
    let script = r#"
import sys, time
try:
    import duckdb
except ImportError:
    print("missing")
    sys.exit(0)
path = sys.argv[1]
con = duckdb.connect()
con.execute("SET threads=2")
con.execute("SET enable_progress_bar=false")
started = time.perf_counter()
windows = con.execute(f"""
    SELECT count(*) FROM (
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
      FROM read_json('{path}', format = 'newline_delimited')
      GROUP BY ALL)
""").fetchone()[0]
print(time.perf_counter() - started, windows)
"#;
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .context("running python3 for DuckDB")?;
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
    Ok(Some((Duration::from_secs_f64(seconds), windows)))
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
    let mut theirs = Vec::new();
    let mut accepted = 0;
    let mut windows = 0;
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
        let started = Instant::now();
        let (store, archive) = mm_import::open(&data)?;
        let outcome =
            mm_import::import_file(&source, &options, &store, &archive, &Progress::default())?;
        drop((store, archive));
        let elapsed = started.elapsed();
        accepted = outcome.progress.accepted;
        ours.push(accepted as f64 / elapsed.as_secs_f64());
        let _ = std::fs::remove_dir_all(&data);
        match duckdb_once(&path)? {
            Some((elapsed, found)) => {
                windows = found;
                theirs.push(outcome.progress.records as f64 / elapsed.as_secs_f64());
            }
            None if run == 0 => println!(
                "import: DuckDB is not installed for python3 (pip install duckdb): reporting import alone"
            ),
            None => {}
        }
    }
    let ours = median(&mut ours);
    println!(
        "import of {}: {accepted} events, {threads} parser threads, rollups + archive segments written, {} runs: median {ours:.0} events/s",
        path.display(),
        args.runs
    );
    if !theirs.is_empty() {
        let theirs = median(&mut theirs);
        println!(
            "import: DuckDB read_json + GROUP BY merchant, api, minute ({windows} windows, threads=2), same file, alternating: median {theirs:.0} events/s; ratio import/DuckDB {:.2}",
            ours / theirs
        );
    }
    Ok(())
}
