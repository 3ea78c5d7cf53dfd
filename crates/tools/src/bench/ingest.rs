//! The ingest benchmark: HTTP ingest end to end against a child server, with the server's
//! peak RSS.

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use mm_model::time::now_us;
use mm_traffic::TrafficConfig;

use super::BenchArgs;

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub(super) fn bench_ingest(args: &BenchArgs, work_dir: &Path) -> anyhow::Result<()> {
    let data_dir = work_dir.join("ingest-data");
    let _ = std::fs::remove_dir_all(&data_dir);
    // Event time runs at about the rate the server ingests and ends now; each repetition of
    // the file is shifted forward by its span (`replay --shift-time`). So event time keeps
    // pace with the wall clock, as in live traffic: windows open, fill and close minute by
    // minute, and only the generator's own late share arrives late.
    let dataset = work_dir.join("ingest-dataset.ndjson");
    let rate = 200_000.0;
    let config = TrafficConfig {
        seed: 11,
        start_ts_us: now_us() - (args.events as f64 / rate * 1e6) as i64,
        events_per_second: rate,
        ..TrafficConfig::default()
    };
    crate::dataset::write_gen(config, args.events, &dataset)?;
    let executable = std::env::current_exe().context("locating this executable")?;
    let mut child = std::process::Command::new(executable)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .env("MM_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting the server")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut first_line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut first_line)
        .context("reading the server's address")?;
    let address = first_line
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .context("server did not print its address")?
        .to_owned();
    let replay_args = crate::replay::ReplayArgs {
        file: dataset,
        to: address,
        batch: 1_000,
        concurrency: 8,
        token: None,
        duration: Some(args.ingest_seconds),
        repeat: true,
        shift_time: true,
        quiet: true,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(crate::replay::replay(&replay_args));
    let peak = peak_rss_kib(child.id());
    // SIGTERM for a graceful drain; fall back to kill.
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let (stats, elapsed) = outcome?;
    let sent = stats
        .sent_records
        .load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "ingest: {sent} events over {:.1} s in batches of 1000, 8 in flight: {:.0} events/s sustained ({} accepted, {} rejected); server peak RSS {} MiB; retried requests {}",
        elapsed.as_secs_f64(),
        sent as f64 / elapsed.as_secs_f64(),
        stats.accepted.load(std::sync::atomic::Ordering::Relaxed),
        stats.rejected.load(std::sync::atomic::Ordering::Relaxed),
        peak.map_or("?".to_owned(), |kib| (kib / 1024).to_string()),
        stats.retries.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(())
}
