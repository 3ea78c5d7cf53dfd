//! A seeded, realistic generator of payment-platform API-call logs.
//!
//! [`TrafficGenerator`] is an endless iterator of [`GeneratedEvent`]s: calls of thousands of
//! merchant accounts to a dozen APIs, as the platform's gateways log them. [`write_dataset`]
//! writes a given number of them as NDJSON (about 310 bytes a line), fast enough to make
//! a million lines in about half a second.
//!
//! What the traffic looks like:
//! - merchant volume follows Zipf's law (index 0 of [`TrafficGenerator::merchant_names`] is
//!   the busiest); about 20% of merchants belong to one of 20 partner platforms;
//! - each API has its own share of traffic, method, log-normal latency profile and slow tail
//!   (tokens ~25 ms, payments ~180 ms, payouts ~600 ms);
//! - statuses are mostly 200/201, with the usual 400, 401, 402, 404, 409, 422 and 429, and a
//!   0.3% baseline of 5xx; now and then a (merchant, API) pair has an error burst of a few
//!   minutes in which 30–60% of its calls fail with 5xx and all of them are slower;
//! - event times form a Poisson process at `events_per_second`; every call arrives up to
//!   `jitter_us` after its event time, a `late_fraction` of them up to `max_lateness_us`.
//!
//! Guarantees:
//! - the same [`TrafficConfig`] (seed included) gives the same events and byte-identical NDJSON;
//! - events come in arrival order: `arrival_us` never decreases (ties in draw order);
//! - `ts_us <= arrival_us <= ts_us + max(jitter_us, max_lateness_us)` for every event;
//! - `corr_id` is 32 hex characters of fresh randomness per event;
//! - memory stays bounded by the calls of one lateness window.
//!
//! Because output is in arrival order, the first `n` events are the first `n` to *arrive*:
//! late calls of the last `max_lateness_us` of event time are still in flight, so the late
//! share of a short dataset is below `late_fraction`.
//!
//! ```
//! use mm_traffic::{TrafficConfig, TrafficGenerator, write_dataset};
//!
//! let config = TrafficConfig { seed: 7, merchants: 100, ..TrafficConfig::default() };
//! let generator = TrafficGenerator::new(config.clone());
//! for event in generator.take(3) {
//!     assert!(event.ts_us <= event.arrival_us);
//! }
//!
//! let mut ndjson = Vec::new();
//! let bytes = write_dataset(config, 1_000, &mut ndjson)?;
//! assert_eq!(bytes, ndjson.len() as u64);
//! assert_eq!(ndjson.iter().filter(|&&byte| byte == b'\n').count(), 1_000);
//! # Ok::<(), std::io::Error>(())
//! ```

mod arrival_queue;
mod behaviour;
mod catalog;
mod config;
mod event;
mod generator;
mod sampling;

use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};

pub use config::TrafficConfig;
pub use event::{GeneratedEvent, NdjsonWriter};
pub use generator::TrafficGenerator;

/// Bytes gathered before a chunk is handed to the writing thread.
const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks generated ahead of the writer: enough to ride out a slow write, little memory.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Writes the first `count` events of `TrafficGenerator::new(config)` to `out` as NDJSON
/// and flushes it. Returns the number of bytes written.
///
/// A helper thread generates while the calling thread writes, in chunks of 256 KiB whose
/// buffers are reused, so the events render without allocating and disk time overlaps
/// generation.
///
/// # Panics
///
/// When `config` is out of range, as [`TrafficGenerator::new`] does.
pub fn write_dataset(
    config: TrafficConfig,
    count: u64,
    out: &mut impl Write,
) -> std::io::Result<u64> {
    // Built here so that a bad config panics on the caller's thread, with its message.
    let generator = TrafficGenerator::new(config);
    let (full_chunk_tx, full_chunk_rx) = sync_channel(CHUNKS_IN_FLIGHT);
    let (empty_chunk_tx, empty_chunk_rx) = channel();
    std::thread::scope(|scope| {
        scope.spawn(move || generate_chunks(generator, count, full_chunk_tx, empty_chunk_rx));
        let mut written = 0u64;
        // Ends when the generator is done and drops its sender. On a write error, returning
        // drops the receiver, which stops the generator at its next send.
        for chunk in full_chunk_rx {
            out.write_all(&chunk)?;
            written += chunk.len() as u64;
            // The generator may already be done and gone; then the buffer is simply freed.
            let _ = empty_chunk_tx.send(chunk);
        }
        out.flush()?;
        Ok(written)
    })
}

/// Renders `count` events into chunks and sends them to the writer; stops early when the
/// writer hangs up.
fn generate_chunks(
    mut generator: TrafficGenerator,
    count: u64,
    full_chunk_tx: SyncSender<Vec<u8>>,
    empty_chunk_rx: Receiver<Vec<u8>>,
) {
    let new_chunk = || Vec::with_capacity(CHUNK_BYTES + 1_024);
    let mut event = GeneratedEvent::empty();
    let mut writer = event::NdjsonWriter::default();
    let mut chunk = new_chunk();
    for _ in 0..count {
        let call = generator.next_call();
        generator.render(&call, &mut event);
        writer.write(&event, &mut chunk);
        if chunk.len() >= CHUNK_BYTES {
            let mut next_chunk = empty_chunk_rx.try_recv().unwrap_or_else(|_| new_chunk());
            next_chunk.clear();
            if full_chunk_tx
                .send(std::mem::replace(&mut chunk, next_chunk))
                .is_err()
            {
                return;
            }
        }
    }
    if !chunk.is_empty() {
        // Nothing left to do if the writer hung up.
        let _ = full_chunk_tx.send(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mm_model::time::{MICROS_PER_MILLI, MICROS_PER_SECOND, parse_rfc3339};
    use serde_json::Value;

    fn small_config(seed: u64) -> TrafficConfig {
        TrafficConfig {
            seed,
            ..TrafficConfig::default()
        }
    }

    #[test]
    fn same_seed_gives_the_same_bytes() {
        let dataset = |seed| {
            let mut out = Vec::new();
            write_dataset(small_config(seed), 20_000, &mut out).expect("writing to a Vec");
            out
        };
        let first = dataset(7);
        assert_eq!(first, dataset(7));
        assert_ne!(first, dataset(8));
    }

    #[test]
    fn default_start_is_a_readable_minute() {
        let start = TrafficConfig::default().start_ts_us;
        assert_eq!(
            mm_model::time::format_rfc3339(start),
            "2026-11-21T15:00:00.000Z"
        );
    }

    /// Accepts `capacity` bytes, then fails every write.
    struct FailingWriter {
        capacity: usize,
    }

    impl Write for FailingWriter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if bytes.len() > self.capacity {
                return Err(std::io::Error::other("disk full"));
            }
            self.capacity -= bytes.len();
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_errors_stop_generation_and_come_back() {
        let mut out = FailingWriter {
            capacity: 1_000_000,
        };
        let result = write_dataset(small_config(1), 1_000_000, &mut out);
        assert_eq!(
            result.map_err(|error| error.to_string()),
            Err("disk full".to_owned())
        );
    }

    #[test]
    fn iterator_and_dataset_agree() {
        let mut lines = Vec::new();
        for event in TrafficGenerator::new(small_config(3)).take(2_000) {
            event.write_ndjson(&mut lines);
        }
        let mut dataset = Vec::new();
        write_dataset(small_config(3), 2_000, &mut dataset).expect("writing to a Vec");
        assert_eq!(lines, dataset);
    }

    #[test]
    fn arrivals_never_decrease_and_delays_stay_bounded() {
        let config = small_config(11);
        let max_delay = config.max_delay_us();
        let start = config.start_ts_us;
        let mut previous_arrival = i64::MIN;
        for event in TrafficGenerator::new(config).take(100_000) {
            assert!(
                event.arrival_us >= previous_arrival,
                "arrival went backwards"
            );
            assert!(event.ts_us >= start);
            assert!(event.ts_us <= event.arrival_us);
            assert!(event.arrival_us <= event.ts_us + max_delay);
            previous_arrival = event.arrival_us;
        }
    }

    #[test]
    fn late_share_matches_late_fraction() {
        // A short lateness window, so that 100k events are mostly past their window: count
        // the calls made in the first five seconds once everything up to then has arrived.
        let config = TrafficConfig {
            jitter_us: 50 * MICROS_PER_MILLI,
            max_lateness_us: 2 * MICROS_PER_SECOND,
            ..small_config(5)
        };
        let cutoff = config.start_ts_us + 5 * MICROS_PER_SECOND;
        let settled = cutoff + config.max_lateness_us;
        let (jitter_us, late_fraction) = (config.jitter_us, config.late_fraction);
        let (mut calls, mut late) = (0u32, 0u32);
        for event in TrafficGenerator::new(config) {
            if event.arrival_us > settled {
                break;
            }
            if event.ts_us < cutoff {
                calls += 1;
                late += u32::from(event.arrival_us - event.ts_us >= jitter_us);
            }
        }
        assert!((95_000..105_000).contains(&calls), "{calls} calls");
        // A late delay is uniform over 0..=2 s, so 1/40 of late calls look on time.
        let expected = late_fraction * (1.0 - 1.0 / 40.0);
        let observed = f64::from(late) / f64::from(calls);
        assert!(
            (observed - expected).abs() < 0.004,
            "{observed} vs {expected}"
        );
    }

    #[test]
    fn ndjson_lines_round_trip() {
        let mut total_bytes = 0;
        let mut with_partner = 0;
        let mut with_key = 0;
        let count = 5_000;
        for event in TrafficGenerator::new(small_config(21)).take(count) {
            let mut line = Vec::new();
            event.write_ndjson(&mut line);
            total_bytes += line.len();
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(line.iter().filter(|&&byte| byte == b'\n').count(), 1);
            let value: Value = serde_json::from_slice(&line).expect("each line is JSON");
            let text = |field: &str| value[field].as_str().expect(field).to_owned();
            assert_eq!(parse_rfc3339(&text("ts")), Ok(event.ts_us));
            assert_eq!(text("merchant"), event.merchant);
            assert_eq!(text("api"), event.api);
            assert_eq!(text("method"), event.method);
            assert_eq!(text("path"), event.path);
            assert_eq!(value["status"].as_u64(), Some(u64::from(event.status)));
            let latency = value["latency_ms"].as_f64().expect("latency_ms");
            assert!((latency - event.latency_ms).abs() < 1e-9);
            let micros = event.latency_ms * 1_000.0;
            assert!(
                (micros - micros.round()).abs() < 1e-6,
                "three decimals at most"
            );
            assert_eq!(text("corr_id"), event.corr_id);
            assert_eq!(event.corr_id.len(), 32);
            assert_eq!(value["partner"].as_str(), event.partner.as_deref());
            assert_eq!(text("host"), event.host);
            assert_eq!(text("region"), event.region);
            assert_eq!(text("sdk_version"), event.sdk);
            assert_eq!(
                value["idempotency_key"].as_str(),
                event.idempotency_key.as_deref()
            );
            with_partner += usize::from(event.partner.is_some());
            with_key += usize::from(event.idempotency_key.is_some());
            if event.method == "GET" {
                assert!(event.idempotency_key.is_none());
            }
        }
        let average = total_bytes / count;
        assert!((280..=340).contains(&average), "{average} bytes a line");
        assert!(with_partner > 0 && with_key > 0);
    }

    #[test]
    fn busiest_merchant_dwarfs_the_median_one() {
        let generator = TrafficGenerator::new(small_config(31));
        let names: Vec<String> = generator.merchant_names().to_vec();
        assert_eq!(names.len(), 5_000);
        let index_of: std::collections::HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(index, name)| (name.as_str(), index))
            .collect();
        let mut counts = vec![0u32; names.len()];
        for event in generator.take(100_000) {
            counts[index_of[event.merchant.as_str()]] += 1;
        }
        let busiest = counts.iter().copied().max().unwrap_or(0);
        assert_eq!(counts[0], busiest, "index 0 is the busiest");
        let mut sorted = counts.clone();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2].max(1);
        assert!(busiest > 100 * median, "busiest {busiest}, median {median}");
    }

    #[test]
    fn server_errors_appear_at_a_low_baseline() {
        let mut statuses = std::collections::BTreeMap::new();
        let count = 100_000;
        for event in TrafficGenerator::new(small_config(41)).take(count) {
            *statuses.entry(event.status).or_insert(0u32) += 1;
        }
        let server_errors: u32 = statuses.range(500..600).map(|(_, calls)| calls).sum();
        let share = f64::from(server_errors) / count as f64;
        assert!((0.001..0.02).contains(&share), "{share}");
        for status in [
            200, 201, 400, 401, 402, 404, 409, 422, 429, 500, 502, 503, 504,
        ] {
            assert!(
                statuses.contains_key(&status),
                "no {status} in {statuses:?}"
            );
        }
    }
}
