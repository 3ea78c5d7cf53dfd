//! What the aggregator needs of a parsed event, packed for the hand-over from a parser thread
//! to an aggregator thread: event time, latency, status, merchant and API, nothing else.
//!
//! The file being parsed is the durable copy here, so the full write-ahead-log record (with
//! correlation id, optional fields and attributes) would be copied and decoded for nothing.

use mm_model::event::ApiCallRef;

/// One packed event, borrowed from a part.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Packed<'a> {
    pub ts_us: i64,
    pub latency_ms: f64,
    pub status: u16,
    pub merchant: &'a str,
    pub api: &'a str,
}

/// Appends `event` to a part.
pub fn pack(event: &ApiCallRef<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(&event.ts_us.to_le_bytes());
    out.extend_from_slice(&event.latency_ms.to_le_bytes());
    out.extend_from_slice(&event.status.to_le_bytes());
    // Identifiers are at most `MAX_ID_BYTES` (256) long: two bytes hold any length.
    for text in [&event.merchant, &event.api] {
        out.extend_from_slice(&(text.len() as u16).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
}

fn take<'a>(part: &'a [u8], at: &mut usize, length: usize) -> Option<&'a [u8]> {
    let bytes = part.get(*at..*at + length)?;
    *at += length;
    Some(bytes)
}

fn take_array<const N: usize>(part: &[u8], at: &mut usize) -> Option<[u8; N]> {
    take(part, at, N)?.try_into().ok()
}

fn take_str<'a>(part: &'a [u8], at: &mut usize) -> Option<&'a str> {
    let length = u16::from_le_bytes(take_array(part, at)?);
    std::str::from_utf8(take(part, at, usize::from(length))?).ok()
}

/// Calls `visit` for every event of a part; returns how many there were, or `None` if the
/// part is not a sequence of packed events.
pub fn unpack<'a>(part: &'a [u8], mut visit: impl FnMut(Packed<'a>)) -> Option<usize> {
    let mut at = 0;
    let mut count = 0;
    while at < part.len() {
        let ts_us = i64::from_le_bytes(take_array(part, &mut at)?);
        let latency_ms = f64::from_le_bytes(take_array(part, &mut at)?);
        let status = u16::from_le_bytes(take_array(part, &mut at)?);
        let merchant = take_str(part, &mut at)?;
        let api = take_str(part, &mut at)?;
        visit(Packed {
            ts_us,
            latency_ms,
            status,
            merchant,
            api,
        });
        count += 1;
    }
    Some(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mm_model::mapping::{EventParser, FieldMapping, TimeBounds};

    #[test]
    fn packed_events_come_back_equal() {
        let parser = EventParser::new(&FieldMapping::default(), false).expect("mapping");
        let lines = [
            r#"{"ts":1795273200000,"merchant":"Müller GmbH","api":"/v1/payments","status":503,"latency_ms":12.25,"corr_id":"a"}"#,
            r#"{"ts":"2026-11-21T15:00:00.5Z","merchant":"M2","api":"/v1/refunds","status":200,"latency_ms":0,"corr_id":"b"}"#,
        ];
        let mut part = Vec::new();
        let events: Vec<_> = lines
            .iter()
            .map(|line| {
                parser
                    .parse(line.as_bytes(), TimeBounds::UNBOUNDED)
                    .expect("valid")
            })
            .collect();
        for event in &events {
            pack(event, &mut part);
        }
        let mut unpacked = Vec::new();
        assert_eq!(unpack(&part, |event| unpacked.push(event)), Some(2));
        for (event, packed) in events.iter().zip(&unpacked) {
            assert_eq!(
                *packed,
                Packed {
                    ts_us: event.ts_us,
                    latency_ms: event.latency_ms,
                    status: event.status,
                    merchant: &event.merchant,
                    api: &event.api,
                }
            );
        }
        assert_eq!(unpack(&part[..part.len() - 1], |_| {}), None, "a cut part");
    }
}
