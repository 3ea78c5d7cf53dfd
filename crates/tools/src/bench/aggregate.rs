//! The in-process benchmarks: window aggregation alone (`aggregate`), parse + aggregate of a
//! file with parser threads (`parse`), and the single-threaded cost of each stage (`stages`).

use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use anyhow::Context;
use mm_model::mapping::{EventParser, FieldMapping, TimeBounds};
use mm_model::time::now_us;
use mm_storage::{codec, wal};
use mm_traffic::{TrafficConfig, TrafficGenerator};
use mm_window::{Aggregator, Call, Origin, WindowConfig};

use super::chunks::{READ_CHUNK_BYTES, lines, read_line_chunks};
use super::{BenchArgs, dataset, handoff, median};

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

pub(super) fn bench_aggregate(args: &BenchArgs) -> anyhow::Result<()> {
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

/// Single-threaded cost of each stage of parse + aggregate, on the file held in memory.
pub(super) fn bench_stages(args: &BenchArgs, work_dir: &Path) -> anyhow::Result<()> {
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

pub(super) fn bench_parse(args: &BenchArgs, work_dir: &Path) -> anyhow::Result<()> {
    let path = match &args.input {
        Some(path) => path.clone(),
        None => dataset(work_dir, args.events)?,
    };
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
        let file = crate::dataset::open_input(&path)?;
        let (events, late, rejected) = parse_and_aggregate(file, &parser, threads)?;
        rates.push(events as f64 / started.elapsed().as_secs_f64());
        summary = (events, late, rejected);
    }
    println!(
        "parse+aggregate of {}: {} events ({:.0} bytes/event on disk, {} rejected, {} late), {threads} parser threads feeding one aggregator, {} runs: median {:.0} events/s",
        path.display(),
        summary.0,
        size as f64 / summary.0.max(1) as f64,
        summary.2,
        summary.1,
        args.runs,
        median(&mut rates),
    );
    Ok(())
}
