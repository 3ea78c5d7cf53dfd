//! `import`: the command line of `mm-import` (settings from the server's configuration, a
//! progress bar, Ctrl-C, the summary).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mm_import::{FileError, ImportError, ImportOptions, Imports, Progress, Source};

use crate::serve::{ServerArgs, load_config};

#[derive(Debug, Args, Clone)]
pub struct ImportArgs {
    /// Files of API calls, imported in order: NDJSON (plain, gzip or zstd) or Parquet with the
    /// same fields.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The server's configuration file (field mapping, retention, clock skew, grace).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The data directory to import into; its server must be stopped [default: ./data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Parser threads [default: available cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where the reports of rejected lines go [default: <data dir>/import].
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,
    /// Input per committed unit, in MiB: what an interruption can cost again, and about what
    /// a unit holds in memory (an import continued may use another).
    #[arg(long, default_value_t = mm_import::UNIT_BYTES >> 20)]
    pub unit_mib: u64,
    /// No progress bar (a line per file only).
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let config = load_config(&ServerArgs {
        config: args.config.clone(),
        listen: None,
        grpc_listen: None,
        data_dir: args.data_dir.clone(),
        log_json: false,
        kafka_brokers: None,
        input_topic: None,
        group_id: None,
        activity_topic: None,
        dlq_topic: None,
    })?;
    let mut options = import_options(&config);
    if let Some(threads) = args.threads {
        options.threads = threads;
    }
    options.report_dir = args.report_dir.clone();
    options.unit_bytes = args.unit_mib.max(1) << 20;
    let sources = args
        .files
        .iter()
        .map(|path| Source::new(path))
        .collect::<Result<Vec<_>, _>>()?;
    let (store, archive) = mm_import::open(&config.data_dir)?;
    let mut imports = Imports::new(&store)?;
    let progress = Arc::new(Progress::default());
    watch_ctrl_c(progress.clone());
    let started = Instant::now();
    let bar = progress_bar(&sources, &progress, args.quiet);
    let printer = bar.as_ref().map(|(bar, _)| bar.clone());
    let mut total = 0u64;
    let result = imports.import_files(
        &sources,
        &options,
        (&store, &archive),
        &progress,
        &mut |file, outcome| {
            if !outcome.already_done {
                total += outcome.imported_now;
            }
            for line in describe(&sources[file], &outcome) {
                // On standard output above the bar (whether or not the bar is drawn).
                match &printer {
                    Some(bar) => bar.suspend(|| println!("{line}")),
                    None => println!("{line}"),
                }
            }
        },
    );
    if let Some((bar, ticker)) = bar {
        ticker.store(true, Ordering::Release);
        bar.finish_and_clear();
    }
    match result {
        Ok(()) => {}
        Err(FileError {
            file,
            error: ImportError::Interrupted,
        }) => {
            imports.finish(&store)?;
            println!(
                "{}: interrupted; what was committed stays, and the same command continues from there",
                sources[file].path.display()
            );
            std::process::exit(130);
        }
        Err(FileError { file, error }) => {
            // What the files before committed is written whole; an error in that is the
            // lesser news.
            if let Err(finishing) = imports.finish(&store) {
                eprintln!("warning: writing the hour rollups of the files imported: {finishing}");
            }
            return Err(error)
                .with_context(|| format!("importing {}", sources[file].path.display()));
        }
    }
    imports.finish(&store)?;
    drop(archive);
    // Everything imported is durable by now (each unit's store batch synced, its segments
    // fsynced); dropping the store would only free its memtable node by node, a sixth of a
    // second for a few million windows, before the process exits and the system takes the
    // memory back whole. The next open reads the synced journal, as after any exit.
    std::mem::forget(store);
    if sources.len() > 1 {
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "{} files: {total} events imported in {elapsed:.1} s ({:.0} events/s)",
            sources.len(),
            total as f64 / elapsed.max(1e-9)
        );
    }
    Ok(())
}

/// The lines that say how a file's import went.
fn describe(source: &Source, outcome: &mm_import::FileOutcome) -> Vec<String> {
    let file = &outcome.progress;
    let mut lines = Vec::new();
    if outcome.already_done {
        let shown = source.path.display().to_string();
        lines.push(format!(
            "{shown}: already imported{} ({} events); skipped",
            if file.path == shown {
                String::new()
            } else {
                format!(" as {}", file.path)
            },
            file.accepted
        ));
    } else {
        let rate = outcome.imported_now as f64 / outcome.elapsed.as_secs_f64().max(1e-9);
        let by_code = file
            .rejected_by_code
            .iter()
            .map(|(code, count)| format!("{code} {count}"))
            .collect::<Vec<_>>()
            .join(", ");
        lines.push(format!(
            "{}: {} records, {} imported, {} rejected{} ({} imported by this run in {:.1} s, {:.0} events/s)",
            source.path.display(),
            file.records,
            file.accepted,
            file.rejected,
            if by_code.is_empty() {
                String::new()
            } else {
                format!(" ({by_code})")
            },
            outcome.imported_now,
            outcome.elapsed.as_secs_f64(),
            rate,
        ));
        if file.rejected > 0 {
            lines.push(format!(
                "  rejected lines, with reasons: {}",
                outcome.report.display()
            ));
        }
    }
    lines.extend(unfinished(outcome));
    lines
}

/// The file's last line, unfinished, left for an import after it grows.
fn unfinished(outcome: &mm_import::FileOutcome) -> Option<String> {
    (outcome.progress.unfinished > 0).then(|| {
        format!(
            "  its last line is unfinished ({} bytes, no newline, not JSON): left for an import after the file grows",
            outcome.progress.unfinished
        )
    })
}

/// What an import into `config`'s data directory accepts, as its server would: one parser
/// thread per core, reports in the data directory, units of [`mm_import::UNIT_BYTES`].
pub fn import_options(config: &crate::config::Config) -> ImportOptions {
    ImportOptions {
        data_dir: config.data_dir.clone(),
        mapping: config.mapping.clone(),
        retention: config.retention,
        max_clock_skew: config.max_clock_skew,
        max_record_bytes: config.max_record_bytes,
        grace: config.grace,
        threads: std::thread::available_parallelism().map_or(2, |cores| cores.get()),
        report_dir: None,
        unit_bytes: mm_import::UNIT_BYTES,
    }
}

/// A bar of the files' bytes read, with events/s; ticks from a thread of its own.
fn progress_bar(
    sources: &[Source],
    progress: &Arc<Progress>,
    quiet: bool,
) -> Option<(ProgressBar, Arc<std::sync::atomic::AtomicBool>)> {
    if quiet {
        return None;
    }
    let bar = ProgressBar::new(sources.iter().map(|source| source.size).sum());
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {msg} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(match sources {
        [source] => source.path.display().to_string(),
        _ => format!("{} files", sources.len()),
    });
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ticker_bar, ticker_done, progress) = (bar.clone(), done.clone(), progress.clone());
    let started = Instant::now();
    let accepted_before = progress.accepted.load(Ordering::Relaxed);
    std::thread::spawn(move || {
        while !ticker_done.load(Ordering::Acquire) {
            ticker_bar.set_position(
                progress.read_on_disk.load(Ordering::Relaxed)
                    + progress.skipped_on_disk.load(Ordering::Relaxed),
            );
            let events = progress.accepted.load(Ordering::Relaxed) - accepted_before;
            ticker_bar.set_message(format!(
                "{events} events, {:.0}/s",
                events as f64 / started.elapsed().as_secs_f64().max(1e-9)
            ));
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    Some((bar, done))
}

/// Ctrl-C stops the import at the end of the unit being built.
fn watch_ctrl_c(progress: Arc<Progress>) {
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        if runtime.block_on(tokio::signal::ctrl_c()).is_ok() {
            eprintln!("stopping after the unit being imported…");
            progress.stop.store(true, Ordering::Release);
        }
    });
}
