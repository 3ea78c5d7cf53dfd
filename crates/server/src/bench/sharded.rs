//! Parse + aggregate with the aggregation sharded by merchant across the worker threads.
//!
//! Every worker parses whole chunks of the input and splits the parsed events by merchant
//! (hash modulo the worker count); worker `s` aggregates shard `s`, taking its parts of the
//! chunks strictly in input order. So each key's events are aggregated in input order, the
//! merchant-wide series lives with its merchant, and both cores parse and aggregate. Each
//! shard's watermark follows the events of its own merchants (a watermark per key group, as
//! a stream task has per partition group), which changes when windows close, never what they
//! count.

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};

use anyhow::Context;
use mm_model::mapping::{EventParser, TimeBounds};
use mm_model::rollup::{Rollup, WindowKey};
use mm_window::{Aggregator, Call, Origin, WindowConfig};

use super::handoff;

/// Bytes read per chunk.
pub const READ_CHUNK_BYTES: usize = 256 * 1024;

/// The non-empty lines of a chunk.
pub fn lines(chunk: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', chunk)
        .chain(std::iter::once(chunk.len()))
        .filter_map(move |end| {
            let line = &chunk[start..end];
            start = end + 1;
            (!line.is_empty()).then_some(line)
        })
}

/// Parts of parsed chunks waiting for their shard, keyed by chunk index.
#[derive(Default)]
struct ShardInbox {
    parts: BTreeMap<usize, Vec<u8>>,
    next: usize,
}

fn shard_of(merchant: &str, shards: usize) -> usize {
    let mut hasher = rustc_hash::FxHasher::default();
    hasher.write(merchant.as_bytes());
    (hasher.finish() % shards as u64) as usize
}

/// Final rollups plus merged corrections per window: what a store would hold.
pub type Collected = Mutex<BTreeMap<WindowKey, Rollup>>;

fn absorb(aggregator: &mut Aggregator, collect: Option<&Collected>) {
    let round = aggregator.checkpoint(i64::MIN);
    let (closed, corrections) = (round.finals, round.corrections);
    let Some(collect) = collect else {
        std::hint::black_box((closed, corrections));
        return;
    };
    if let Ok(mut store) = collect.lock() {
        for window in closed {
            store.entry(window.key).or_default().merge(&window.rollup);
        }
        for correction in corrections {
            store
                .entry(correction.key)
                .or_default()
                .merge(&correction.late);
        }
    }
}

/// Reads `input` into line-aligned chunks of about [`READ_CHUNK_BYTES`], numbered from 0 in
/// input order, reusing the buffers that come back on `free_rx`. A line longer than a chunk
/// is carried into the next read. Returns how many chunks were sent.
pub fn read_line_chunks(
    input: &mut impl Read,
    raw_tx: &mpsc::SyncSender<(usize, Vec<u8>)>,
    free_rx: &mpsc::Receiver<Vec<u8>>,
) -> anyhow::Result<usize> {
    let mut carry: Vec<u8> = Vec::new();
    let mut index = 0;
    loop {
        let mut buffer = free_rx
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(READ_CHUNK_BYTES * 2));
        buffer.clear();
        buffer.append(&mut carry);
        let start = buffer.len();
        buffer.resize(start + READ_CHUNK_BYTES, 0);
        let read = input.read(&mut buffer[start..]).context("reading input")?;
        buffer.truncate(start + read);
        if read == 0 {
            if !buffer.is_empty() && raw_tx.send((index, buffer)).is_ok() {
                index += 1;
            }
            return Ok(index);
        }
        match buffer.iter().rposition(|byte| *byte == b'\n') {
            Some(last_newline) => {
                carry.extend_from_slice(&buffer[last_newline + 1..]);
                buffer.truncate(last_newline + 1);
            }
            None => {
                carry = buffer;
                continue;
            }
        }
        if raw_tx.send((index, buffer)).is_err() {
            return Ok(index);
        }
        index += 1;
    }
}

/// Returns (events, late events, rejected records). With `collect`, every closed window and
/// correction is merged into it (for tests); without, outputs are discarded (benchmarks).
pub fn parse_and_aggregate_sharded(
    mut input: impl Read + Send,
    parser: &EventParser,
    workers: usize,
    collect: Option<&Collected>,
) -> anyhow::Result<(usize, u64, u64)> {
    let workers = workers.max(1);
    let (raw_tx, raw_rx) = mpsc::sync_channel::<(usize, Vec<u8>)>(workers * 2);
    let raw_rx = Mutex::new(raw_rx);
    let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
    let inboxes: Vec<Mutex<ShardInbox>> = (0..workers)
        .map(|_| Mutex::new(ShardInbox::default()))
        .collect();
    let total_chunks = AtomicUsize::new(usize::MAX);
    // Part buffers go back here once aggregated, so steady state allocates nothing large.
    let spare_parts: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    let rejected_total = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let total_chunks_ref = &total_chunks;
        let reader = scope.spawn(move || -> anyhow::Result<()> {
            let sent = read_line_chunks(&mut input, &raw_tx, &free_rx);
            // Also on error: the workers must not wait for chunks that will never come.
            total_chunks_ref.store(*sent.as_ref().unwrap_or(&0), Ordering::Release);
            sent.map(|_| ())
        });
        let mut handles = Vec::new();
        for shard in 0..workers {
            let (raw_rx, free_tx, inboxes, total_chunks, rejected_total, spare_parts) = (
                &raw_rx,
                free_tx.clone(),
                &inboxes,
                &total_chunks,
                &rejected_total,
                &spare_parts,
            );
            handles.push(scope.spawn(move || -> anyhow::Result<(usize, u64)> {
                let mut aggregator = Aggregator::new(WindowConfig::default());
                let mut parts: Vec<Vec<u8>> = (0..workers).map(|_| Vec::new()).collect();
                let mut events = 0usize;
                let mut aggregate =
                    |aggregator: &mut Aggregator, part: &[u8]| -> anyhow::Result<()> {
                        let mut last_ts = i64::MIN;
                        events += handoff::unpack(part, |event| {
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
                        .context("a parsed part is cut short")?;
                        if last_ts > i64::MIN {
                            aggregator.advance(last_ts);
                        }
                        absorb(aggregator, collect);
                        Ok(())
                    };
                let drain_own =
                    |aggregator: &mut Aggregator,
                     aggregate: &mut dyn FnMut(&mut Aggregator, &[u8]) -> anyhow::Result<()>|
                     -> anyhow::Result<()> {
                        loop {
                            let part = {
                                let mut inbox = inboxes[shard]
                                    .lock()
                                    .map_err(|_| anyhow::anyhow!("inbox poisoned"))?;
                                let next = inbox.next;
                                match inbox.parts.remove(&next) {
                                    Some(part) => {
                                        inbox.next += 1;
                                        part
                                    }
                                    None => return Ok(()),
                                }
                            };
                            aggregate(aggregator, &part)?;
                            if let Ok(mut spare) = spare_parts.lock() {
                                spare.push(part);
                            }
                        }
                    };
                loop {
                    let next = raw_rx.lock().map(|receiver| receiver.recv());
                    let Ok(Ok((index, chunk))) = next else { break };
                    for part in parts.iter_mut() {
                        part.clear();
                    }
                    let mut rejected = 0usize;
                    for line in lines(&chunk) {
                        match parser.parse(line, TimeBounds::UNBOUNDED) {
                            Ok(event) => handoff::pack(
                                &event,
                                &mut parts[shard_of(&event.merchant, workers)],
                            ),
                            Err(_) => rejected += 1,
                        }
                    }
                    let _ = free_tx.send(chunk);
                    rejected_total.fetch_add(rejected, Ordering::Relaxed);
                    for (target, part) in parts.iter_mut().enumerate() {
                        let spare = spare_parts
                            .lock()
                            .ok()
                            .and_then(|mut spare| spare.pop())
                            .unwrap_or_default();
                        inboxes[target]
                            .lock()
                            .map_err(|_| anyhow::anyhow!("inbox poisoned"))?
                            .parts
                            .insert(index, std::mem::replace(part, spare));
                    }
                    drain_own(&mut aggregator, &mut aggregate)?;
                }
                // Input is exhausted: wait for the other workers' last parts of this shard.
                loop {
                    drain_own(&mut aggregator, &mut aggregate)?;
                    let done = inboxes[shard]
                        .lock()
                        .map(|inbox| inbox.next)
                        .unwrap_or(usize::MAX);
                    if done >= total_chunks.load(Ordering::Acquire) {
                        break;
                    }
                    std::thread::yield_now();
                }
                aggregator.close_all();
                absorb(&mut aggregator, collect);
                Ok((events, aggregator.stats().late_events))
            }));
        }
        drop(free_tx);
        reader
            .join()
            .map_err(|_| anyhow::anyhow!("reader thread panicked"))??;
        let mut events = 0;
        let mut late = 0;
        for handle in handles {
            let (shard_events, shard_late) = handle
                .join()
                .map_err(|_| anyhow::anyhow!("worker panicked"))??;
            events += shard_events;
            late += shard_late;
        }
        Ok((events, late, rejected_total.load(Ordering::Relaxed) as u64))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mm_model::mapping::FieldMapping;
    use mm_model::rollup::MERCHANT_TOTAL_API;
    use mm_model::time::minute_of;
    use mm_traffic::{TrafficConfig, TrafficGenerator};

    #[test]
    fn sharded_aggregation_equals_the_fold() {
        let config = TrafficConfig {
            seed: 5,
            merchants: 300,
            events_per_second: 40.0,
            late_fraction: 0.1,
            ..TrafficConfig::default()
        };
        let mut input = Vec::new();
        let mut expected: BTreeMap<WindowKey, Rollup> = BTreeMap::new();
        for event in TrafficGenerator::new(config).take(40_000) {
            event.write_ndjson(&mut input);
            for api in [event.api, MERCHANT_TOTAL_API] {
                let key = WindowKey {
                    merchant: event.merchant.clone(),
                    api: api.to_owned(),
                    minute: minute_of(event.ts_us),
                };
                expected
                    .entry(key)
                    .or_default()
                    .record(event.status, event.latency_ms);
            }
        }
        input.extend_from_slice(b"{broken\n");
        let parser = EventParser::new(&FieldMapping::default(), false).expect("mapping");
        for workers in [1, 2, 3] {
            let collected = Collected::default();
            let (events, late, rejected) =
                parse_and_aggregate_sharded(input.as_slice(), &parser, workers, Some(&collected))
                    .expect("runs");
            assert_eq!(events, 40_000);
            assert_eq!(rejected, 1);
            assert!(late > 0, "the dataset has late events");
            let collected = collected.into_inner().expect("lock");
            assert_eq!(collected.len(), expected.len(), "{workers} workers");
            assert!(
                collected == expected,
                "{workers} workers: rollups differ from the fold"
            );
        }
    }

    #[test]
    fn a_line_longer_than_a_chunk_is_read_whole_by_both_engines() {
        let config = TrafficConfig {
            seed: 9,
            merchants: 20,
            ..TrafficConfig::default()
        };
        let mut input = Vec::new();
        for event in TrafficGenerator::new(config.clone()).take(2_000) {
            event.write_ndjson(&mut input);
        }
        input.extend_from_slice(
            format!("{{\"huge\":\"{}\"}}\n", "x".repeat(READ_CHUNK_BYTES + 1000)).as_bytes(),
        );
        for event in TrafficGenerator::new(TrafficConfig { seed: 10, ..config }).take(2_000) {
            event.write_ndjson(&mut input);
        }
        let parser = EventParser::new(&FieldMapping::default(), false).expect("mapping");
        let (events, _, rejected) =
            parse_and_aggregate_sharded(input.as_slice(), &parser, 2, None).expect("sharded runs");
        assert_eq!((events, rejected), (4_000, 1));
        let (events, _, rejected) =
            super::super::parse_and_aggregate(input.as_slice(), &parser, 2).expect("ordered runs");
        assert_eq!(
            (events, rejected),
            (4_000, 1),
            "the ordered engine used to skip a chunk number here and wait forever"
        );
    }
}
