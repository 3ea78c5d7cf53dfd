//! The ingest benchmark: HTTP ingest end to end against a child server, with the server's
//! peak RSS.

use std::path::Path;

use mm_model::time::now_us;
use mm_traffic::TrafficConfig;

use super::BenchArgs;
use super::child::ChildServer;

pub(super) fn bench_ingest(args: &BenchArgs, work_dir: &Path) -> anyhow::Result<()> {
    let dataset = dataset(args, work_dir)?;
    let run = ingest_run(args, work_dir, &dataset, false)?;
    println!(
        "ingest: {} events sent over {:.1} s in batches of 1000, 8 in flight: {:.0} accepted events/s sustained ({} accepted, {} rejected); server peak RSS {} MiB; retried requests {}",
        run.sent,
        run.seconds,
        run.rate(),
        run.accepted,
        run.rejected,
        run.peak_rss_mib
            .map_or("?".to_owned(), |mib| mib.to_string()),
        run.retries
    );
    Ok(())
}

/// `bench --only ingest-keys`: the ingest benchmark without and with an `Idempotency-Key` on
/// every batch, alternating `--runs` times (at most 3 each) in one run; medians and ratio.
pub(super) fn bench_ingest_keys(args: &BenchArgs, work_dir: &Path) -> anyhow::Result<()> {
    let dataset = dataset(args, work_dir)?;
    let mut without = Vec::new();
    let mut with = Vec::new();
    for round in 0..args.runs.clamp(1, 3) {
        for keyed in [false, true] {
            let run = ingest_run(args, work_dir, &dataset, keyed)?;
            println!(
                "ingest-keys: round {round}, keys {}: {:.0} accepted events/s ({} retried requests)",
                if keyed { "on" } else { "off" },
                run.rate(),
                run.retries
            );
            if keyed { &mut with } else { &mut without }.push(run.rate());
        }
    }
    let without = super::median(&mut without);
    let with = super::median(&mut with);
    println!(
        "ingest-keys: median without keys {without:.0} events/s, with a key on every batch {with:.0} events/s; ratio {:.2}",
        with / without
    );
    Ok(())
}

/// The dataset: event time runs at about the rate the server ingests and ends now; each
/// repetition of the file is shifted forward by its span (`replay --shift-time`). So event
/// time keeps pace with the wall clock, as in live traffic: windows open, fill and close
/// minute by minute, and only the generator's own late share arrives late.
fn dataset(args: &BenchArgs, work_dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let dataset = work_dir.join("ingest-dataset.ndjson");
    let rate = 200_000.0;
    let config = TrafficConfig {
        seed: 11,
        start_ts_us: now_us() - (args.events as f64 / rate * 1e6) as i64,
        events_per_second: rate,
        ..TrafficConfig::default()
    };
    crate::dataset::write_gen(config, args.events, &dataset)?;
    Ok(dataset)
}

/// One ingest run against a fresh server.
struct IngestRun {
    sent: u64,
    accepted: u64,
    rejected: u64,
    retries: u64,
    seconds: f64,
    peak_rss_mib: Option<u64>,
}

impl IngestRun {
    /// Records the server accepted (durable) per second; rejected ones do not count.
    fn rate(&self) -> f64 {
        self.accepted as f64 / self.seconds
    }
}

fn ingest_run(
    args: &BenchArgs,
    work_dir: &Path,
    dataset: &Path,
    idempotency_keys: bool,
) -> anyhow::Result<IngestRun> {
    let data_dir = work_dir.join("ingest-data");
    let _ = std::fs::remove_dir_all(&data_dir);
    let server = ChildServer::start(&data_dir, None)?;
    let replay_args = crate::replay::ReplayArgs {
        file: dataset.to_owned(),
        to: server.url.clone(),
        batch: 1_000,
        concurrency: 8,
        token: None,
        duration: Some(args.ingest_seconds),
        repeat: true,
        shift_time: true,
        quiet: true,
        idempotency_keys,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(crate::replay::replay(&replay_args));
    let peak_rss_mib = server.peak_rss_kib().map(|kib| kib / 1024);
    server.stop()?;
    let (stats, elapsed) = outcome?;
    let load =
        |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    Ok(IngestRun {
        sent: load(&stats.sent_records),
        accepted: load(&stats.accepted),
        rejected: load(&stats.rejected),
        retries: load(&stats.retries),
        seconds: elapsed.as_secs_f64(),
        peak_rss_mib,
    })
}
