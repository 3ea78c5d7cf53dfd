//! Binary encodings: events in WAL batches, rollups in the store.
//!
//! Both are little formats of our own, chosen for decode speed and size:
//!
//! **Event** (inside a WAL batch): `ts_us` i64 LE, `status` u16 LE, `latency_ms` f64 LE, then
//! `merchant`, `api`, `corr_id` as (varint length, UTF-8 bytes), a presence byte (bit 0 partner,
//! 1 method, 2 path, 3 host, 4 region, 5 attributes) and the present optional strings in that
//! order. Decoding borrows every string from the buffer.
//!
//! **Rollup** (store value): version byte `1`, state byte (`0` open, `1` final), varints
//! `calls`, `latency_sum_us`, `latency_min_us`, `latency_max_us`, the number of status codes and
//! `(code, count)` pairs, the sketch's zero count, its number of bins, then each bin as a
//! zig-zag varint delta from the previous bin index (the first from 0) and its count.
//!
//! Decoders never panic on bad input: they return [`CodecError`].

use std::borrow::Cow;

use mm_model::event::ApiCallRef;
use mm_model::rollup::Rollup;
use mm_model::sketch::LatencySketch;
use thiserror::Error;

/// Input that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("invalid {0}")]
    Invalid(&'static str),
}

pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_bytes(out, text.as_bytes());
}

/// Appends a length (varint) and the bytes.
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Reads values off a byte slice.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.at >= self.bytes.len()
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.at
    }

    fn take(&mut self, count: usize, what: &'static str) -> Result<&'a [u8], CodecError> {
        let end = self
            .at
            .checked_add(count)
            .ok_or(CodecError::Truncated(what))?;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or(CodecError::Truncated(what))?;
        self.at = end;
        Ok(slice)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        Ok(self.take(1, what)?[0])
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub fn varint(&mut self, what: &'static str) -> Result<u64, CodecError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8(what)?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError::Invalid(what))
    }

    /// A length (varint) and that many bytes, as [`put_bytes`] writes them.
    pub fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], CodecError> {
        let length = usize::try_from(self.varint(what)?).map_err(|_| CodecError::Invalid(what))?;
        self.take(length, what)
    }

    pub fn str(&mut self, what: &'static str) -> Result<&'a str, CodecError> {
        std::str::from_utf8(self.bytes(what)?).map_err(|_| CodecError::Invalid(what))
    }

    pub fn u64_le(&mut self, what: &'static str) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub fn i64_le(&mut self, what: &'static str) -> Result<i64, CodecError> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    pub fn u16_le(&mut self, what: &'static str) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
}

const OPTIONAL_FIELDS: usize = 6;

/// Appends one event.
pub fn encode_event(event: &ApiCallRef<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(&event.ts_us.to_le_bytes());
    out.extend_from_slice(&event.status.to_le_bytes());
    out.extend_from_slice(&event.latency_ms.to_le_bytes());
    put_str(out, &event.merchant);
    put_str(out, &event.api);
    put_str(out, &event.corr_id);
    let optional: [Option<&str>; OPTIONAL_FIELDS] = [
        event.partner.as_deref(),
        event.method.as_deref(),
        event.path.as_deref(),
        event.host.as_deref(),
        event.region.as_deref(),
        event.attributes.as_deref(),
    ];
    let presence = optional.iter().enumerate().fold(0u8, |bits, (bit, value)| {
        if value.is_some() {
            bits | (1 << bit)
        } else {
            bits
        }
    });
    out.push(presence);
    for value in optional.into_iter().flatten() {
        put_str(out, value);
    }
}

/// Reads one event, borrowing its strings from the reader's buffer.
pub fn decode_event<'a>(reader: &mut Reader<'a>) -> Result<ApiCallRef<'a>, CodecError> {
    let ts_us = i64::from_le_bytes(reader.array("event timestamp")?);
    let status = u16::from_le_bytes(reader.array("event status")?);
    let latency_ms = f64::from_le_bytes(reader.array("event latency")?);
    let merchant = reader.str("event merchant")?;
    let api = reader.str("event api")?;
    let corr_id = reader.str("event corr_id")?;
    let presence = reader.u8("event presence")?;
    if presence >> OPTIONAL_FIELDS != 0 {
        return Err(CodecError::Invalid("event presence bits"));
    }
    let mut optional: [Option<Cow<'a, str>>; OPTIONAL_FIELDS] = Default::default();
    for (bit, slot) in optional.iter_mut().enumerate() {
        if presence & (1 << bit) != 0 {
            *slot = Some(Cow::Borrowed(reader.str("event optional field")?));
        }
    }
    let [partner, method, path, host, region, attributes] = optional;
    Ok(ApiCallRef {
        ts_us,
        merchant: Cow::Borrowed(merchant),
        api: Cow::Borrowed(api),
        status,
        latency_ms,
        corr_id: Cow::Borrowed(corr_id),
        partner,
        method,
        path,
        host,
        region,
        attributes,
    })
}

/// Whether a stored rollup belongs to a window that is still open or has closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollupState {
    Open,
    Final,
}

const ROLLUP_VERSION: u8 = 1;

/// Appends a rollup value.
pub fn encode_rollup(rollup: &Rollup, state: RollupState, out: &mut Vec<u8>) {
    out.push(ROLLUP_VERSION);
    out.push(match state {
        RollupState::Open => 0,
        RollupState::Final => 1,
    });
    put_varint(out, rollup.calls);
    put_varint(out, rollup.latency_sum_us);
    put_varint(out, rollup.latency_min_us);
    put_varint(out, rollup.latency_max_us);
    put_varint(out, rollup.status.len() as u64);
    for (code, count) in &rollup.status {
        put_varint(out, u64::from(*code));
        put_varint(out, *count);
    }
    put_varint(out, rollup.sketch.zero_count());
    put_varint(out, rollup.sketch.bin_count() as u64);
    let mut previous = 0i64;
    for (bin, count) in rollup.sketch.bins() {
        put_varint(out, zigzag(i64::from(bin) - previous));
        put_varint(out, count);
        previous = i64::from(bin);
    }
}

/// A rollup value as stored; the sketch stays encoded until asked for, so merging many
/// rollups can add their bins straight into an accumulator.
#[derive(Debug, Clone)]
pub struct RollupView<'a> {
    pub state: RollupState,
    pub calls: u64,
    pub latency_sum_us: u64,
    pub latency_min_us: u64,
    pub latency_max_us: u64,
    status: &'a [u8],
    status_count: usize,
    pub zero_count: u64,
    bins: &'a [u8],
    bin_count: usize,
}

/// Reads the header of a stored rollup value.
pub fn view_rollup(bytes: &[u8]) -> Result<RollupView<'_>, CodecError> {
    let mut reader = Reader::new(bytes);
    if reader.u8("rollup version")? != ROLLUP_VERSION {
        return Err(CodecError::Invalid("rollup version"));
    }
    let state = match reader.u8("rollup state")? {
        0 => RollupState::Open,
        1 => RollupState::Final,
        _ => return Err(CodecError::Invalid("rollup state")),
    };
    let calls = reader.varint("rollup calls")?;
    let latency_sum_us = reader.varint("rollup latency sum")?;
    let latency_min_us = reader.varint("rollup latency min")?;
    let latency_max_us = reader.varint("rollup latency max")?;
    let status_count = reader.varint("rollup status count")? as usize;
    let status_start = reader.at;
    for _ in 0..status_count {
        reader.varint("rollup status code")?;
        reader.varint("rollup status calls")?;
    }
    let status = &bytes[status_start..reader.at];
    let zero_count = reader.varint("rollup zero count")?;
    let bin_count = reader.varint("rollup bin count")? as usize;
    let bins = &bytes[reader.at..];
    Ok(RollupView {
        state,
        calls,
        latency_sum_us,
        latency_min_us,
        latency_max_us,
        status,
        status_count,
        zero_count,
        bins,
        bin_count,
    })
}

impl RollupView<'_> {
    /// The `(code, calls)` pairs.
    pub fn status(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        let mut reader = Reader::new(self.status);
        (0..self.status_count).map_while(move |_| {
            let code = reader.varint("status code").ok()?;
            let count = reader.varint("status calls").ok()?;
            Some((u16::try_from(code).ok()?, count))
        })
    }

    /// The `(bin, count)` pairs of the sketch.
    pub fn bins(&self) -> impl Iterator<Item = (i16, u64)> + '_ {
        let mut reader = Reader::new(self.bins);
        let mut previous = 0i64;
        (0..self.bin_count).map_while(move |_| {
            let delta = unzigzag(reader.varint("bin").ok()?);
            let count = reader.varint("bin count").ok()?;
            previous += delta;
            Some((i16::try_from(previous).ok()?, count))
        })
    }

    /// The whole rollup.
    pub fn to_rollup(&self) -> Result<Rollup, CodecError> {
        let status: Vec<(u16, u64)> = self.status().collect();
        let bins: Vec<(i16, u64)> = self.bins().collect();
        if status.len() != self.status_count || bins.len() != self.bin_count {
            return Err(CodecError::Invalid("rollup body"));
        }
        let sketch = LatencySketch::from_parts(self.zero_count, bins)
            .ok_or(CodecError::Invalid("sketch bins"))?;
        Ok(Rollup {
            calls: self.calls,
            status,
            latency_sum_us: self.latency_sum_us,
            latency_min_us: self.latency_min_us,
            latency_max_us: self.latency_max_us,
            sketch,
        })
    }
}

/// Decodes a whole stored rollup.
pub fn decode_rollup(bytes: &[u8]) -> Result<(Rollup, RollupState), CodecError> {
    let view = view_rollup(bytes)?;
    Ok((view.to_rollup()?, view.state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn rollups_round_trip(calls in prop::collection::vec((100u16..600, 0.0f64..50_000.0), 0..200), closed: bool) {
            let mut rollup = Rollup::default();
            calls.iter().for_each(|(status, latency)| rollup.record(*status, *latency));
            let state = if closed { RollupState::Final } else { RollupState::Open };
            let mut bytes = Vec::new();
            encode_rollup(&rollup, state, &mut bytes);
            prop_assert_eq!(decode_rollup(&bytes), Ok((rollup, state)));
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_rollup(&bytes);
            let _ = decode_event(&mut Reader::new(&bytes));
        }

        #[test]
        fn events_round_trip(
            ts in any::<i64>(), status in 100u16..600, latency in 0.0f64..1e6,
            merchant in "[a-zA-Z0-9é]{1,20}", partner in proptest::option::of("[a-z]{0,5}"),
            attributes in proptest::option::of("\\{\"k\":[0-9]{1,4}\\}"),
        ) {
            let event = ApiCallRef {
                ts_us: ts, merchant: Cow::Owned(merchant), api: Cow::Borrowed("/v1/x"), status, latency_ms: latency,
                corr_id: Cow::Borrowed("c"), partner: partner.map(Cow::Owned), method: None, path: Some(Cow::Borrowed("/p")),
                host: None, region: Some(Cow::Borrowed("eu")), attributes: attributes.map(Cow::Owned),
            };
            let mut bytes = Vec::new();
            encode_event(&event, &mut bytes);
            let mut reader = Reader::new(&bytes);
            prop_assert_eq!(decode_event(&mut reader), Ok(event));
            prop_assert!(reader.is_empty());
        }
    }
}
