//! The archive benchmarks: bytes stored per event and write rate (`archive`), and
//! correlation-id lookups over a day of archived events (`lookup`).

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use mm_model::mapping::{EventParser, FieldMapping, TimeBounds};
use mm_model::time::now_us;
use mm_storage::{codec, wal};
use mm_traffic::{TrafficConfig, TrafficGenerator};

use super::{BenchArgs, dataset, median, percentile};

/// The archive on the generator's realistic traffic: bytes stored per event, and two rates
/// per run, both on one thread and each timed on its own:
/// - *prepare*: what ingest does before the archive sees a batch: parse every NDJSON line of
///   the data set (already in memory) and encode the accepted events into WAL batch payloads
///   of up to 1000 events;
/// - *write*: what the archive does with them: `Archive::append` of every payload into a new,
///   empty archive and the flushes (every 500k events and once at the end: decode the
///   payloads, sort, Parquet encoding with zstd and the bloom filters, fsync of each segment,
///   the manifest written and fsynced), until the last flush returns.
///
/// Both rates count the accepted events only; reading the data set from disk is not timed.
pub(super) fn bench_archive(args: &BenchArgs, work_dir: &Path) -> anyhow::Result<()> {
    let path = dataset(work_dir, args.events)?;
    let data = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let parser = EventParser::new(&FieldMapping::default(), true).context("default mapping")?;
    let lines: Vec<&[u8]> = data
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .collect();
    let mut prepare_rates = Vec::new();
    let mut write_rates = Vec::new();
    let mut stored = 0u64;
    let mut events = 0usize;
    for run in 0..args.runs.max(1) {
        // Prepare: parse and encode, as ingest does.
        let started = Instant::now();
        let mut payloads = Vec::with_capacity(lines.len() / 1000 + 1);
        events = 0;
        for chunk in lines.chunks(1000) {
            let mut batch = Vec::new();
            let mut count = 0;
            for line in chunk {
                if let Ok(event) = parser.parse(line, TimeBounds::UNBOUNDED) {
                    codec::encode_event(&event, &mut batch);
                    count += 1;
                }
            }
            let mut payload = Vec::with_capacity(batch.len() + 10);
            wal::begin_batch(count, &mut payload);
            payload.extend_from_slice(&batch);
            payloads.push(std::sync::Arc::new(payload));
            events += count;
        }
        prepare_rates.push(events as f64 / started.elapsed().as_secs_f64());

        // Write: append and flush into an empty archive.
        let dir = work_dir.join(format!("archive-bench-{run}"));
        let _ = std::fs::remove_dir_all(&dir);
        let archive = mm_archive::Archive::open(&dir, mm_archive::ArchiveConfig::default())?;
        let started = Instant::now();
        for (lsn, payload) in payloads.iter().enumerate() {
            archive.append(lsn as u64 + 1, payload.clone())?;
            if archive.flush_due() {
                archive.flush()?;
            }
        }
        archive.flush()?;
        write_rates.push(events as f64 / started.elapsed().as_secs_f64());
        stored = archive.size().1;
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!(
        "archive: {events} events ({:.0} bytes/event as NDJSON) stored in {:.1} MB of Parquet = {:.1} bytes/event; median rates on one thread: prepare (parse + WAL encoding) {:.0} events/s, write (append + flushes: Parquet/zstd, bloom filters, fsync; flush every 500k events) {:.0} events/s",
        data.len() as f64 / events.max(1) as f64,
        stored as f64 / 1e6,
        stored as f64 / events.max(1) as f64,
        median(&mut prepare_rates),
        median(&mut write_rates)
    );
    Ok(())
}

/// Correlation-id lookup over (by default) 50 million archived events spread over 24 hours, with and
/// without a merchant, after compaction (one segment per hour).
pub(super) fn bench_lookup(args: &BenchArgs, work_dir: &Path) -> anyhow::Result<()> {
    let lookup_events = args.lookup_events.max(1000);
    let dir = work_dir.join(format!("lookup-archive-{lookup_events}"));
    let marker = dir.join("built-until-us");
    let parser = EventParser::new(&FieldMapping::default(), true).context("default mapping")?;
    let end_us = match std::fs::read_to_string(&marker)
        .ok()
        .and_then(|text| text.trim().parse::<i64>().ok())
    {
        Some(end_us) => end_us,
        None => {
            let _ = std::fs::remove_dir_all(&dir);
            let archive = mm_archive::Archive::open(&dir, mm_archive::ArchiveConfig::default())?;
            let end_us = now_us();
            let config = TrafficConfig {
                seed: 31,
                start_ts_us: end_us - 24 * 3_600_000_000,
                events_per_second: lookup_events as f64 / 86_400.0,
                ..TrafficConfig::default()
            };
            let started = Instant::now();
            let progress = indicatif::ProgressBar::new(lookup_events);
            let mut generator = TrafficGenerator::new(config);
            let mut line = Vec::with_capacity(512);
            for lsn in 1..=lookup_events / 1000 {
                let mut batch = Vec::with_capacity(1000 * 160);
                for event in generator.by_ref().take(1000) {
                    line.clear();
                    event.write_ndjson(&mut line);
                    let parsed = parser
                        .parse(&line[..line.len() - 1], TimeBounds::UNBOUNDED)
                        .map_err(|error| anyhow::anyhow!("{error}"))?;
                    codec::encode_event(&parsed, &mut batch);
                }
                let mut payload = Vec::with_capacity(batch.len() + 10);
                wal::begin_batch(1000, &mut payload);
                payload.extend_from_slice(&batch);
                archive.append(lsn, std::sync::Arc::new(payload))?;
                if archive.flush_due() {
                    archive.flush()?;
                }
                progress.inc(1000);
            }
            archive.flush()?;
            let compacted = archive.compact(i64::MAX, 2, u64::MAX)?;
            progress.finish_and_clear();
            println!(
                "lookup: archived {lookup_events} events in {:.0} s ({} hours compacted, {:.1} GB)",
                started.elapsed().as_secs_f64(),
                compacted,
                archive.size().1 as f64 / 1e9
            );
            std::fs::write(&marker, end_us.to_string())?;
            end_us
        }
    };
    let archive = mm_archive::Archive::open(&dir, mm_archive::ArchiveConfig::default())?;
    // Probe ids: a sample of archived events, regenerated from the same seed.
    let config = TrafficConfig {
        seed: 31,
        start_ts_us: end_us - 24 * 3_600_000_000,
        events_per_second: lookup_events as f64 / 86_400.0,
        ..TrafficConfig::default()
    };
    let probes: Vec<(String, String)> = TrafficGenerator::new(config)
        .take(lookup_events as usize)
        .step_by((lookup_events / 200) as usize)
        .map(|event| (event.corr_id, event.merchant))
        .collect();
    let from_us = end_us - 24 * 3_600_000_000;
    let to_us = end_us + 1;
    for (label, with_merchant) in [("with merchant", true), ("without merchant", false)] {
        let mut timings = Vec::new();
        for (corr_id, merchant) in &probes {
            let query = mm_archive::RowQuery {
                corr_id: Some(corr_id),
                merchant: with_merchant.then_some(merchant.as_str()),
                from_us,
                to_us,
            };
            let started = Instant::now();
            let found = archive.find(&query)?;
            timings.push(started.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(
                found.len() == 1,
                "corr_id {corr_id} found {} times",
                found.len()
            );
        }
        let first = timings.first().copied().unwrap_or_default();
        timings.sort_by(f64::total_cmp);
        println!(
            "lookup {label}, {lookup_events} events over 24 h: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms, first {first:.1} ms ({} lookups, each found once)",
            percentile(&timings, 0.5),
            percentile(&timings, 0.9),
            percentile(&timings, 0.99),
            timings.last().copied().unwrap_or_default(),
            timings.len()
        );
    }
    Ok(())
}
