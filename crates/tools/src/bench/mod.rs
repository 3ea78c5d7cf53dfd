//! `bench`: the benchmarks behind the performance targets, printing medians.
//!
//! - `aggregate`: window aggregation in process, one thread (target ≥ 1,000,000 events/s).
//! - `parse`: parse + aggregate a generated 2M-event NDJSON file, no HTTP (target ≥ 1.5M/s).
//! - `query`: one merchant over 24 h at 1-minute step with 10,000 merchants stored (p99 ≤ 10 ms).
//! - `ingest`: HTTP ingest end to end against a child server, batches of 1,000, durable acks,
//!   rollups written (target ≥ 200,000 events/s sustained), with the server's peak RSS.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use mm_model::mapping::{EventParser, FieldMapping, TimeBounds};
use mm_model::rollup::{Rollup, WindowKey};
use mm_model::time::MICROS_PER_MINUTE;
use mm_query::{ApiSort, MerchantSort, Period, Step};
use mm_storage::rollups::{CheckpointBatch, RollupStore};
use mm_storage::{codec, wal};
use mm_traffic::{TrafficConfig, TrafficGenerator};
use mm_window::{Aggregator, Call, Origin, WindowConfig};

use mm_model::time::now_us;

mod chunks;
mod handoff;
#[cfg(feature = "kafka")]
mod kafka;
use chunks::{READ_CHUNK_BYTES, lines, read_line_chunks};

#[derive(Debug, Args, Clone)]
pub struct BenchArgs {
    /// Benchmarks to run, comma-separated: aggregate, parse, stages, query, ingest, archive,
    /// lookup, kafka (needs --kafka-brokers).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "aggregate,parse,query,ingest"
    )]
    pub only: Vec<String>,
    /// Events in the generated datasets.
    #[arg(long, default_value_t = 2_000_000)]
    pub events: u64,
    /// Repetitions of each in-process benchmark (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Duration of the ingest benchmark.
    #[arg(long, default_value_t = 60)]
    pub ingest_seconds: u64,
    /// Events archived for the lookup benchmark (spread over 24 hours).
    #[arg(long, default_value_t = 50_000_000)]
    pub lookup_events: u64,
    /// Parser threads for the parse benchmark [default: available cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// A local Kafka broker for the `kafka` benchmark.
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka_brokers: Option<String>,
    /// librdkafka settings for every client of the `kafka` benchmark, applied last, e.g.
    /// `fetch.wait.max.ms=500` (comma-separated or repeated).
    #[arg(long, value_name = "KEY=VALUE", value_delimiter = ',')]
    pub kafka_client: Vec<String>,
    /// Directory for datasets and stores [default: a fresh temporary directory].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let work_dir = match &args.work_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("mm-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;
    println!("work directory: {}", work_dir.display());
    for name in &args.only {
        match name.as_str() {
            "aggregate" => bench_aggregate(&args)?,
            "parse" => bench_parse(&args, &work_dir)?,
            "stages" => bench_stages(&args, &work_dir)?,
            "archive" => bench_archive(&args, &work_dir)?,
            "lookup" => bench_lookup(&args, &work_dir)?,
            "query" => bench_query(&args, &work_dir)?,
            "ingest" => bench_ingest(&args, &work_dir)?,
            #[cfg(feature = "kafka")]
            "kafka" => kafka::bench_kafka(&args, &work_dir)?,
            #[cfg(not(feature = "kafka"))]
            "kafka" => bail!("the kafka benchmark needs a build with the `kafka` feature"),
            other => bail!(
                "unknown benchmark {other:?} (aggregate, parse, stages, query, ingest, archive, lookup, kafka)"
            ),
        }
    }
    if args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    Ok(())
}

/// The benchmarks' traffic: 2,000 events per second of event time, ending now, so that a
/// 2M-event dataset spans about 17 minutes and its late events include true corrections.
fn traffic(events: u64) -> TrafficConfig {
    TrafficConfig {
        seed: 11,
        start_ts_us: now_us() - (events as f64 / 2_000.0 * 1e6) as i64,
        events_per_second: 2_000.0,
        ..TrafficConfig::default()
    }
}

fn bench_aggregate(args: &BenchArgs) -> anyhow::Result<()> {
    struct Compact {
        ts_us: i64,
        arrival_us: i64,
        merchant: u32,
        api: &'static str,
        status: u16,
        latency_ms: f64,
    }
    let mut names: Vec<String> = Vec::new();
    let mut index = std::collections::HashMap::new();
    let events: Vec<Compact> = TrafficGenerator::new(traffic(args.events))
        .take(args.events as usize)
        .map(|event| {
            let next = names.len() as u32;
            let merchant = *index.entry(event.merchant.clone()).or_insert_with(|| {
                names.push(event.merchant.clone());
                next
            });
            Compact {
                ts_us: event.ts_us,
                arrival_us: event.arrival_us,
                merchant,
                api: event.api,
                status: event.status,
                latency_ms: event.latency_ms,
            }
        })
        .collect();
    let mut rates = Vec::new();
    let mut late = 0;
    for _ in 0..args.runs {
        let mut aggregator = Aggregator::new(WindowConfig::default());
        let started = Instant::now();
        let mut next_checkpoint = Instant::now() + Duration::from_secs(1);
        for chunk in events.chunks(1000) {
            let now = chunk.last().map_or(0, |event| event.arrival_us);
            for event in chunk {
                aggregator.ingest(
                    Origin {
                        partition: 0,
                        position: 0,
                    },
                    Call {
                        ts_us: event.ts_us,
                        merchant: &names[event.merchant as usize],
                        api: event.api,
                        status: event.status,
                        latency_ms: event.latency_ms,
                    },
                    now,
                );
            }
            aggregator.advance(now);
            if Instant::now() >= next_checkpoint {
                // What a server checkpoint takes out of the aggregator.
                std::hint::black_box(aggregator.checkpoint(now));
                next_checkpoint = Instant::now() + Duration::from_secs(1);
            }
        }
        aggregator.close_all();
        std::hint::black_box(aggregator.checkpoint(i64::MAX));
        let elapsed = started.elapsed().as_secs_f64();
        late = aggregator.stats().late_events;
        rates.push(events.len() as f64 / elapsed);
    }
    println!(
        "aggregate: {} events, {} merchants, {} late; median {:.0} events/s on one thread (runs: {})",
        events.len(),
        names.len(),
        late,
        median(&mut rates),
        args.runs
    );
    Ok(())
}

fn dataset(work_dir: &Path, events: u64) -> anyhow::Result<PathBuf> {
    // 2,000 events per second of event time: a 2M-event file spans about 17 minutes, so the
    // 5% of events that arrive up to 5 minutes late include true corrections.
    let path = work_dir.join(format!("dataset-{events}-r2000.ndjson"));
    if !path.exists() {
        let config = TrafficConfig {
            start_ts_us: 1_795_273_200_000_000,
            seed: 11,
            events_per_second: 2_000.0,
            ..TrafficConfig::default()
        };
        crate::dataset::write_gen(config, events, &path)?;
    }
    Ok(path)
}

/// Streams `input` in line-aligned chunks to `threads` parser threads; one aggregator takes
/// the parsed chunks in input order, exactly as a single reader would. Chunk buffers are
/// recycled, so memory stays at a few megabytes whatever the file size.
/// Returns (events, late events, rejected records).
pub fn parse_and_aggregate(
    mut input: impl std::io::Read + Send,
    parser: &EventParser,
    threads: usize,
) -> anyhow::Result<(usize, u64, u64)> {
    let (raw_tx, raw_rx) = sync_channel::<(usize, Vec<u8>)>(threads * 2);
    let raw_rx = std::sync::Mutex::new(raw_rx);
    let (free_tx, free_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let (parsed_tx, parsed_rx) = sync_channel::<(usize, Vec<u8>, u64)>(threads * 2);
    std::thread::scope(|scope| {
        let reader =
            scope.spawn(move || read_line_chunks(&mut input, &raw_tx, &free_rx).map(|_| ()));
        for _ in 0..threads {
            let (parsed_tx, free_tx, raw_rx) = (parsed_tx.clone(), free_tx.clone(), &raw_rx);
            scope.spawn(move || {
                let mut events = Vec::with_capacity(READ_CHUNK_BYTES);
                loop {
                    let next = raw_rx.lock().map(|receiver| receiver.recv());
                    let Ok(Ok((index, chunk))) = next else { return };
                    events.clear();
                    let mut rejected = 0u64;
                    for line in lines(&chunk) {
                        match parser.parse(line, TimeBounds::UNBOUNDED) {
                            Ok(event) => handoff::pack(&event, &mut events),
                            Err(_) => rejected += 1,
                        }
                    }
                    let _ = free_tx.send(chunk);
                    let payload =
                        std::mem::replace(&mut events, Vec::with_capacity(READ_CHUNK_BYTES));
                    if parsed_tx.send((index, payload, rejected)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(parsed_tx);
        drop(free_tx);
        let mut aggregator = Aggregator::new(WindowConfig::default());
        let mut waiting = std::collections::BTreeMap::new();
        let mut expected = 0usize;
        let mut events = 0usize;
        let mut rejected = 0u64;
        for (index, payload, chunk_rejected) in parsed_rx {
            waiting.insert(index, (payload, chunk_rejected));
            while let Some((payload, chunk_rejected)) = waiting.remove(&expected) {
                rejected += chunk_rejected;
                let mut last_ts = i64::MIN;
                let decoded = handoff::unpack(&payload, |event| {
                    last_ts = last_ts.max(event.ts_us);
                    aggregator.ingest(
                        Origin {
                            partition: 0,
                            position: 0,
                        },
                        Call {
                            ts_us: event.ts_us,
                            merchant: event.merchant,
                            api: event.api,
                            status: event.status,
                            latency_ms: event.latency_ms,
                        },
                        i64::MAX,
                    );
                })
                .context("a parsed chunk is cut short")?;
                events += decoded;
                // The file's own clock: time advances with the data.
                aggregator.advance(last_ts);
                expected += 1;
            }
        }
        reader
            .join()
            .map_err(|_| anyhow::anyhow!("reader thread panicked"))??;
        aggregator.close_all();
        std::hint::black_box(aggregator.checkpoint(i64::MAX));
        Ok((events, aggregator.stats().late_events, rejected))
    })
}

/// The archive on the generator's realistic traffic: bytes stored per event and write rate
/// (parse, WAL-batch encoding, Parquet encoding with zstd and the bloom filter, fsync).
fn bench_archive(args: &BenchArgs, work_dir: &Path) -> anyhow::Result<()> {
    let path = dataset(work_dir, args.events)?;
    let data = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let parser = EventParser::new(&FieldMapping::default(), true).context("default mapping")?;
    let mut payloads = Vec::new();
    let mut events = 0usize;
    for chunk in data
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .chunks(1000)
    {
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
    let mut rates = Vec::new();
    let mut stored = 0u64;
    for run in 0..args.runs.max(1) {
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
        rates.push(events as f64 / started.elapsed().as_secs_f64());
        stored = archive.size().1;
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!(
        "archive: {events} events ({:.0} bytes/event as NDJSON) stored in {:.1} MB of Parquet = {:.1} bytes/event; median write {:.0} events/s on one thread (flush every 500k events)",
        data.len() as f64 / events.max(1) as f64,
        stored as f64 / 1e6,
        stored as f64 / events.max(1) as f64,
        median(&mut rates)
    );
    Ok(())
}

/// Correlation-id lookup over (by default) 50 million archived events spread over 24 hours, with and
/// without a merchant, after compaction (one segment per hour).
fn bench_lookup(args: &BenchArgs, work_dir: &Path) -> anyhow::Result<()> {
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

/// Single-threaded cost of each stage of parse + aggregate, on the file held in memory.
fn bench_stages(args: &BenchArgs, work_dir: &Path) -> anyhow::Result<()> {
    let path = dataset(work_dir, args.events)?;
    let data = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let lines: Vec<&[u8]> = data
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .collect();
    let parser = EventParser::new(&FieldMapping::default(), false).context("default mapping")?;
    let per_event = |elapsed: Duration| elapsed.as_nanos() as f64 / lines.len() as f64;

    let started = Instant::now();
    let mut valid = 0usize;
    for line in &lines {
        valid += usize::from(std::str::from_utf8(line).is_ok());
    }
    let utf8 = per_event(started.elapsed());

    let started = Instant::now();
    let mut parsed = 0usize;
    for line in &lines {
        parsed += usize::from(parser.parse(line, TimeBounds::UNBOUNDED).is_ok());
    }
    let parse = per_event(started.elapsed());

    let started = Instant::now();
    let mut encoded = Vec::with_capacity(data.len() / 2);
    for line in &lines {
        if let Ok(event) = parser.parse(line, TimeBounds::UNBOUNDED) {
            codec::encode_event(&event, &mut encoded);
        }
    }
    let parse_encode = per_event(started.elapsed());
    let mut payload = Vec::with_capacity(encoded.len() + 10);
    wal::begin_batch(parsed, &mut payload);
    payload.extend_from_slice(&encoded);

    let started = Instant::now();
    let mut decoded = 0usize;
    wal::decode_batch(&payload, |event| decoded += usize::from(event.status > 0))
        .context("decoding")?;
    let decode = per_event(started.elapsed());

    let started = Instant::now();
    let mut aggregator = Aggregator::new(WindowConfig::default());
    let mut last_ts = i64::MIN;
    let mut count = 0usize;
    wal::decode_batch(&payload, |event| {
        last_ts = last_ts.max(event.ts_us);
        aggregator.ingest(
            Origin {
                partition: 0,
                position: 0,
            },
            Call {
                ts_us: event.ts_us,
                merchant: &event.merchant,
                api: &event.api,
                status: event.status,
                latency_ms: event.latency_ms,
            },
            i64::MAX,
        );
        count += 1;
        if count.is_multiple_of(1000) {
            aggregator.advance(last_ts);
        }
    })
    .context("decoding")?;
    aggregator.close_all();
    std::hint::black_box(aggregator.checkpoint(i64::MAX));
    let decode_aggregate = per_event(started.elapsed());
    std::hint::black_box((valid, decoded));
    println!(
        "stages (one thread, ns/event): utf-8 check {utf8:.0}, parse {parse:.0}, parse+encode {parse_encode:.0}, decode {decode:.0}, decode+aggregate {decode_aggregate:.0}"
    );
    Ok(())
}

fn bench_parse(args: &BenchArgs, work_dir: &Path) -> anyhow::Result<()> {
    let path = dataset(work_dir, args.events)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |cores| cores.get()))
        .max(1);
    let parser = EventParser::new(&FieldMapping::default(), false).context("default mapping")?;
    let size = std::fs::metadata(&path).map_or(0, |meta| meta.len());
    let mut rates = Vec::new();
    let mut summary = (0usize, 0u64, 0u64);
    for _ in 0..args.runs {
        let started = Instant::now();
        let file =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let (events, late, rejected) = parse_and_aggregate(file, &parser, threads)?;
        rates.push(events as f64 / started.elapsed().as_secs_f64());
        summary = (events, late, rejected);
    }
    println!(
        "parse+aggregate: {} events ({:.0} bytes/event, {} rejected, {} late), {threads} parser threads feeding one aggregator, {} runs: median {:.0} events/s",
        summary.0,
        size as f64 / summary.0.max(1) as f64,
        summary.2,
        summary.1,
        args.runs,
        median(&mut rates),
    );
    Ok(())
}

const QUERY_MERCHANTS: usize = 10_000;
const APIS: [&str; 12] = [
    "/v1/payments",
    "/v1/payments/captures",
    "/v1/refunds",
    "/v1/payouts",
    "/v1/authorizations",
    "/v1/tokens",
    "/v1/customers",
    "/v1/balance",
    "/v1/disputes",
    "/v1/webhooks",
    "/v1/payment_methods",
    "/v1/sessions",
];

/// Fills a store with 24 h of rollups for 10,000 merchants: the busiest have every minute of
/// every API, the tail a thinning share of minutes. Returns the end minute of the data.
fn build_query_store(store: &RollupStore, end_minute: i64) -> anyhow::Result<u64> {
    let mut template = Rollup::default();
    for (index, latency) in [12.0, 35.5, 80.0, 150.0, 180.0, 210.0, 400.0, 1200.0]
        .iter()
        .enumerate()
    {
        template.record(if index == 7 { 503 } else { 200 }, *latency);
    }
    let mut stored = 0u64;
    let mut finals = Vec::new();
    let flush = |finals: &mut Vec<(WindowKey, Rollup)>| -> anyhow::Result<()> {
        let prepared = store.prepare(CheckpointBatch {
            finals: std::mem::take(finals),
            ..CheckpointBatch::default()
        })?;
        store.commit(prepared)?;
        Ok(())
    };
    for rank in 0..QUERY_MERCHANTS {
        let merchant = format!("merchant-{rank:05}");
        let every = 1 + rank / 50;
        let api_count = if rank < 50 { APIS.len() } else { 3 };
        for minute in (end_minute - 1440..end_minute).step_by(every) {
            let mut total = Rollup::default();
            for api in &APIS[..api_count] {
                total.merge(&template);
                finals.push((
                    WindowKey {
                        merchant: merchant.clone(),
                        api: (*api).to_owned(),
                        minute,
                    },
                    template.clone(),
                ));
            }
            finals.push((
                WindowKey {
                    merchant: merchant.clone(),
                    api: String::new(),
                    minute,
                },
                total,
            ));
            stored += api_count as u64 + 1;
        }
        if finals.len() > 50_000 {
            flush(&mut finals)?;
        }
    }
    flush(&mut finals)?;
    Ok(stored)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn bench_query(args: &BenchArgs, work_dir: &Path) -> anyhow::Result<()> {
    let dir = work_dir.join("query-store");
    let marker = dir.join("built-until-minute");
    let end_minute = match std::fs::read_to_string(&marker)
        .ok()
        .and_then(|text| text.trim().parse::<i64>().ok())
    {
        Some(minute) => minute,
        None => {
            let _ = std::fs::remove_dir_all(&dir);
            let store = RollupStore::open(&dir)?;
            let end_minute = mm_model::time::minute_of(now_us());
            let started = Instant::now();
            let stored = build_query_store(&store, end_minute)?;
            println!(
                "query: stored {stored} rollups for {QUERY_MERCHANTS} merchants in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            drop(store);
            std::fs::write(&marker, end_minute.to_string())?;
            end_minute
        }
    };
    let store = RollupStore::open(&dir)?;
    let period = Period {
        from_us: (end_minute - 1440) * MICROS_PER_MINUTE,
        to_us: end_minute * MICROS_PER_MINUTE,
    };
    let iterations = 100 * args.runs.max(1);
    let measure = |name: &str,
                   mut query: Box<dyn FnMut(usize) -> anyhow::Result<usize> + '_>|
     -> anyhow::Result<()> {
        let mut timings = Vec::with_capacity(iterations);
        let mut size = 0;
        for iteration in 0..iterations {
            let started = Instant::now();
            size = query(iteration)?;
            timings.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        timings.sort_by(f64::total_cmp);
        println!(
            "query {name}: p50 {:.2} ms, p99 {:.2} ms ({iterations} runs, {size} rows)",
            percentile(&timings, 0.5),
            percentile(&timings, 0.99)
        );
        Ok(())
    };
    measure(
        "activity 24h step=1m (busiest merchants)",
        Box::new(|iteration| {
            let merchant = format!("merchant-{:05}", iteration % 50);
            Ok(
                mm_query::activity(&store, &merchant, None, period, Step::OneMinute)?
                    .buckets
                    .len(),
            )
        }),
    )?;
    measure(
        "activity 24h step=1m api=/v1/payments",
        Box::new(|iteration| {
            let merchant = format!("merchant-{:05}", iteration % 50);
            Ok(mm_query::activity(
                &store,
                &merchant,
                Some("/v1/payments"),
                period,
                Step::OneMinute,
            )?
            .buckets
            .len())
        }),
    )?;
    measure(
        "apis 24h (busiest merchants)",
        Box::new(|iteration| {
            let merchant = format!("merchant-{:05}", iteration % 50);
            Ok(mm_query::apis(&store, &merchant, period, ApiSort::Calls)?
                .apis
                .len())
        }),
    )?;
    measure(
        "merchants 24h top 50",
        Box::new(|_| {
            Ok(
                mm_query::merchants(&store, period, MerchantSort::Calls, 50)?
                    .merchants
                    .len(),
            )
        }),
    )?;
    Ok(())
}

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

fn bench_ingest(args: &BenchArgs, work_dir: &Path) -> anyhow::Result<()> {
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
