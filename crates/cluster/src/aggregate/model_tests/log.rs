//! The in-memory log of the model tests: generated calls, the aggregation partition's records
//! (with re-produced duplicates) cut into batches, fetches answered the test broker's way,
//! and a consumer guarded like the real one.

use mm_kafka::guard::{Continuity, Position};
use mm_model::ApiCallRef;
use mm_model::time::{MICROS_PER_MINUTE, MICROS_PER_SECOND};

use super::BASE;
use crate::decode::encode_binary;

/// The seeded random source of a scenario.
pub(super) struct Xorshift(Box<dyn FnMut() -> u64>);

impl Xorshift {
    pub(super) fn new(seed: u64) -> Self {
        Self(Box::new(mm_testkit::xorshift(seed)))
    }

    /// A number in `0..bound`.
    pub(super) fn below(&mut self, bound: u64) -> u64 {
        (self.0)() % bound
    }
}

/// One API call as generated.
#[derive(Debug, Clone)]
pub(super) struct Call {
    pub(super) ts_us: i64,
    pub(super) arrival_us: i64,
    pub(super) merchant: String,
    pub(super) api: String,
    pub(super) status: u16,
    pub(super) latency_ms: f64,
}

/// One record of the aggregation partition.
#[derive(Debug, Clone)]
pub(super) struct LogRecord {
    pub(super) offset: i64,
    /// Wall clock when it arrives at the consumer.
    pub(super) arrival_us: i64,
    pub(super) payload: Vec<u8>,
    pub(super) source: (i32, i64),
}

/// The partition: records in offset order, cut into batches.
pub(super) struct Log {
    pub(super) records: Vec<LogRecord>,
    /// First offset of each batch, ascending, starting at 0.
    pub(super) batch_starts: Vec<i64>,
}

impl Log {
    /// What a fetch from `from` returns: the batch holding `from`, or, the test broker's way
    /// (`quirk`), the batch after it when `from` is inside a batch (nothing when it is the
    /// last).
    pub(super) fn fetch(&self, from: i64, quirk: bool) -> &[LogRecord] {
        let end = self.records.len() as i64;
        if from >= end {
            return &[];
        }
        let index = match self.batch_starts.binary_search(&from) {
            Ok(index) => index,
            Err(index) if quirk => index,
            Err(index) => index - 1,
        };
        let Some(start) = self.batch_starts.get(index) else {
            return &[];
        };
        let stop = self.batch_starts.get(index + 1).copied().unwrap_or(end);
        &self.records[*start as usize..stop as usize]
    }
}

/// A consumer of the log at some position, guarded like the real one.
pub(super) struct Reader<'a> {
    pub(super) log: &'a Log,
    pub(super) position: i64,
    pub(super) continuity: Continuity,
    pub(super) quirk: bool,
    pub(super) buffered: std::collections::VecDeque<LogRecord>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(log: &'a Log, position: i64, quirk: bool) -> Self {
        Self {
            log,
            position,
            continuity: Continuity::default(),
            quirk,
            buffered: std::collections::VecDeque::new(),
        }
    }

    /// The next record to process when `expected` is due, or `None` at the end of the log.
    pub(super) fn next(&mut self, expected: i64) -> Option<LogRecord> {
        loop {
            let Some(record) = self.buffered.pop_front() else {
                let batch = self.log.fetch(self.position, self.quirk);
                match batch.last() {
                    Some(last) => {
                        self.position = last.offset + 1;
                        self.buffered.extend(batch.iter().cloned());
                    }
                    // Nothing comes: read again from before the expected offset, until a
                    // read from before it finds nothing past it.
                    None => match self.continuity.stalled(expected) {
                        Some(to) => self.position = to,
                        None => return None,
                    },
                }
                continue;
            };
            match self.continuity.check(expected, record.offset) {
                Position::Next | Position::Gap => return Some(record),
                Position::Behind => {}
                Position::Reread(to) => {
                    self.buffered.clear();
                    self.position = to;
                }
            }
        }
    }
}

/// Generates calls (some late), the log (with re-produced duplicates) and its batches.
pub(super) fn generate(seed: u64, calls: usize) -> (Vec<Call>, Log) {
    let mut random = Xorshift::new(seed);
    let mut generated: Vec<Call> = (0..calls)
        .map(|index| {
            let ts_us = BASE + random.below(12 * MICROS_PER_MINUTE as u64) as i64;
            let delay = match random.below(10) {
                0 => random.below(4 * MICROS_PER_MINUTE as u64) as i64,
                _ => random.below(3 * MICROS_PER_SECOND as u64) as i64,
            };
            Call {
                ts_us,
                arrival_us: ts_us + delay + index as i64,
                merchant: format!("M{}", random.below(3)),
                api: format!("/v1/api{}", random.below(3)),
                status: [200, 201, 404, 500, 503][random.below(5) as usize],
                latency_ms: (random.below(200_000) as f64) / 1000.0,
            }
        })
        .collect();
    generated.sort_by_key(|call| call.arrival_us);
    let mut records: Vec<LogRecord> = Vec::new();
    let mut next_source = [0i64; 2];
    for (index, call) in generated.iter().enumerate() {
        let source_partition = random.below(2) as usize;
        let source = (source_partition as i32, next_source[source_partition]);
        next_source[source_partition] += 1;
        records.push(LogRecord {
            offset: records.len() as i64,
            arrival_us: call.arrival_us,
            payload: payload(call, index),
            source,
        });
        // Now and then a repartitioner that crashed re-produces its last few records.
        if random.below(40) == 0 {
            let again: Vec<LogRecord> = records
                .iter()
                .rev()
                .take(1 + random.below(6) as usize)
                .rev()
                .cloned()
                .collect();
            for mut copy in again {
                copy.offset = records.len() as i64;
                copy.arrival_us = call.arrival_us;
                records.push(copy);
            }
        }
    }
    let mut batch_starts = vec![0];
    let mut at = 0i64;
    while at < records.len() as i64 {
        at += 1 + random.below(12) as i64;
        if at < records.len() as i64 {
            batch_starts.push(at);
        }
    }
    (
        generated,
        Log {
            records,
            batch_starts,
        },
    )
}

/// A record's value: the call as the repartitioner forwards it (binary event encoding).
pub(super) fn payload(call: &Call, index: usize) -> Vec<u8> {
    encode_binary(&ApiCallRef {
        ts_us: call.ts_us,
        merchant: call.merchant.as_str().into(),
        api: call.api.as_str().into(),
        status: call.status,
        latency_ms: call.latency_ms,
        corr_id: format!("c{index}").into(),
        partner: None,
        method: None,
        path: None,
        host: None,
        region: None,
        attributes: None,
    })
}

/// The log of `calls` in the given order, one source partition, batches of five.
pub(super) fn in_order(calls: &[Call]) -> Log {
    Log {
        records: calls
            .iter()
            .enumerate()
            .map(|(index, call)| LogRecord {
                offset: index as i64,
                arrival_us: call.arrival_us,
                payload: payload(call, index),
                source: (0, index as i64),
            })
            .collect(),
        batch_starts: (0..calls.len() as i64).step_by(5).collect(),
    }
}
