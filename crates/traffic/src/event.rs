//! One generated API call and its NDJSON form.
//!
//! Line format (fields in this order, `partner` and `idempotency_key` omitted when absent):
//!
//! ```text
//! {"ts":"2026-11-21T15:00:00.000050Z","merchant":"AcmeShop042ECOM","api":"/v1/payments",
//!  "method":"POST","path":"/v1/payments","status":201,"latency_ms":183.427,
//!  "corr_id":"<32 hex>","partner":"CartForge","host":"gw-euw1-a01","region":"eu-west-1",
//!  "sdk_version":"java/4.2.1","idempotency_key":"<uuid>"}
//! ```
//!
//! `ts` always carries six fraction digits; `latency_ms` always three.

use mm_model::time::{MICROS_PER_SECOND, write_rfc3339};

/// One API call as the platform logged it.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedEvent {
    /// Event time: when the call was made, in microseconds since the Unix epoch.
    pub ts_us: i64,
    /// When the log line reaches the pipeline (`>= ts_us`); generators yield in this order.
    pub arrival_us: i64,
    /// Merchant account name, unique per merchant.
    pub merchant: String,
    /// Route template, e.g. `/v1/payments/{id}/captures`.
    pub api: &'static str,
    pub method: &'static str,
    /// Concrete request path, e.g. `/v1/payments/pay_k3j9x0q2m8zt/captures`.
    pub path: String,
    pub status: u16,
    /// Latency in milliseconds with microsecond precision (three decimals).
    pub latency_ms: f64,
    /// Correlation id, 32 lowercase hex characters, unique per event.
    pub corr_id: String,
    /// Platform the merchant belongs to, if any (stable per merchant).
    pub partner: Option<String>,
    /// Gateway host that served the call.
    pub host: &'static str,
    pub region: &'static str,
    /// Client library and version: a free-form attribute.
    pub sdk: &'static str,
    /// Client-chosen idempotency key: a free-form attribute, on about half of the POSTs.
    pub idempotency_key: Option<String>,
}

impl GeneratedEvent {
    /// An event with empty fields, to be filled in place (reusing its buffers).
    pub(crate) fn empty() -> GeneratedEvent {
        GeneratedEvent {
            ts_us: 0,
            arrival_us: 0,
            merchant: String::new(),
            api: "",
            method: "",
            path: String::new(),
            status: 0,
            latency_ms: 0.0,
            corr_id: String::new(),
            partner: None,
            host: "",
            region: "",
            sdk: "",
            idempotency_key: None,
        }
    }

    /// Appends one NDJSON line (with trailing `'\n'`); see the module docs for the format.
    pub fn write_ndjson(&self, out: &mut Vec<u8>) {
        NdjsonWriter::default().write(self, out);
    }
}

/// Writes events as NDJSON, remembering the formatted date of the last day so that the
/// calendar arithmetic runs once a day rather than once a line.
#[derive(Debug, Default)]
pub struct NdjsonWriter {
    cached_day: Option<i64>,
    /// `YYYY-MM-DDT` of `cached_day`.
    cached_date: String,
}

impl NdjsonWriter {
    pub fn write(&mut self, event: &GeneratedEvent, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"ts\":\"");
        self.write_timestamp(event.ts_us, out);
        out.extend_from_slice(b"\",\"merchant\":");
        write_json_string(&event.merchant, out);
        out.extend_from_slice(b",\"api\":");
        write_json_string(event.api, out);
        out.extend_from_slice(b",\"method\":");
        write_json_string(event.method, out);
        out.extend_from_slice(b",\"path\":");
        write_json_string(&event.path, out);
        out.extend_from_slice(b",\"status\":");
        write_u64(u64::from(event.status), out);
        out.extend_from_slice(b",\"latency_ms\":");
        write_millis(event.latency_ms, out);
        out.extend_from_slice(b",\"corr_id\":");
        write_json_string(&event.corr_id, out);
        if let Some(partner) = &event.partner {
            out.extend_from_slice(b",\"partner\":");
            write_json_string(partner, out);
        }
        out.extend_from_slice(b",\"host\":");
        write_json_string(event.host, out);
        out.extend_from_slice(b",\"region\":");
        write_json_string(event.region, out);
        out.extend_from_slice(b",\"sdk_version\":");
        write_json_string(event.sdk, out);
        if let Some(key) = &event.idempotency_key {
            out.extend_from_slice(b",\"idempotency_key\":");
            write_json_string(key, out);
        }
        out.extend_from_slice(b"}\n");
    }

    /// RFC 3339 in UTC with exactly six fraction digits.
    fn write_timestamp(&mut self, ts_us: i64, out: &mut Vec<u8>) {
        const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;
        let day = ts_us.div_euclid(MICROS_PER_DAY);
        let micros_of_day = ts_us.rem_euclid(MICROS_PER_DAY);
        if self.cached_day != Some(day) {
            self.cached_date.clear();
            write_rfc3339(day.saturating_mul(MICROS_PER_DAY), &mut self.cached_date);
            // Keep the date and the `T`; the time of day is written below.
            let time_at = self
                .cached_date
                .find('T')
                .map_or(self.cached_date.len(), |at| at + 1);
            self.cached_date.truncate(time_at);
            self.cached_day = Some(day);
        }
        out.extend_from_slice(self.cached_date.as_bytes());
        let second_of_day = micros_of_day / MICROS_PER_SECOND;
        write_zero_padded((second_of_day / 3_600) as u64, 2, out);
        out.push(b':');
        write_zero_padded((second_of_day / 60 % 60) as u64, 2, out);
        out.push(b':');
        write_zero_padded((second_of_day % 60) as u64, 2, out);
        out.push(b'.');
        write_zero_padded((micros_of_day % MICROS_PER_SECOND) as u64, 6, out);
        out.push(b'Z');
    }
}

/// Appends `text` as a JSON string literal, escaping quotes, backslashes and control
/// characters. Everything else (including non-ASCII UTF-8) is copied as is.
pub(crate) fn write_json_string(text: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = text.as_bytes();
    // Nearly every string is clean: check all bytes without branching (this vectorises), then
    // copy them in one go.
    let needs_escape = bytes.iter().fold(false, |found, &byte| {
        found | (byte < 0x20) | (byte == b'"') | (byte == b'\\')
    });
    if !needs_escape {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut clean_from = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[clean_from..index]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        clean_from = index + 1;
    }
    out.extend_from_slice(&bytes[clean_from..]);
    out.push(b'"');
}

/// Appends the decimal digits of `value`.
pub(crate) fn write_u64(mut value: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Appends `value` as exactly `width` decimal digits (`value` must fit).
fn write_zero_padded(mut value: u64, width: usize, out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Appends a millisecond figure with exactly three decimals (`183.427`, `25.040`).
fn write_millis(latency_ms: f64, out: &mut Vec<u8>) {
    if !latency_ms.is_finite() || latency_ms < 0.0 {
        // Generated latencies are never negative; keep the line valid JSON regardless.
        out.extend_from_slice(b"0.000");
        return;
    }
    let micros = (latency_ms * 1_000.0).round() as u64;
    write_u64(micros / 1_000, out);
    out.push(b'.');
    write_zero_padded(micros % 1_000, 3, out);
}

/// Appends `value` as 32 lowercase hex digits.
pub(crate) fn write_hex_u128(value: u128, out: &mut String) {
    out.push_str(std::str::from_utf8(&hex_digits(value)).expect("hex digits are ASCII"));
}

/// The 32 lowercase hex digits of `value`, most significant first.
pub(crate) fn hex_digits(value: u128) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 32];
    for (index, digit) in digits.iter_mut().enumerate() {
        *digit = HEX[((value >> ((31 - index) * 4)) & 0xf) as usize];
    }
    digits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_string(text: &str) -> String {
        let mut out = Vec::new();
        write_json_string(text, &mut out);
        String::from_utf8(out).expect("the escaper writes UTF-8")
    }

    #[test]
    fn escaper_matches_serde_json() {
        for text in [
            "",
            "plain",
            "quote\"back\\slash",
            "line\nfeed\ttab\r",
            "\u{1}\u{1f}\u{7f}",
            "é€😀",
        ] {
            let written = json_string(text);
            let parsed: String = serde_json::from_str(&written).expect("escaped string parses");
            assert_eq!(parsed, text);
        }
        assert_eq!(json_string("a\u{1}b"), "\"a\\u0001b\"");
    }

    #[test]
    fn numbers_are_formatted_exactly() {
        let mut out = Vec::new();
        write_u64(0, &mut out);
        out.push(b' ');
        write_u64(u64::MAX, &mut out);
        out.push(b' ');
        write_millis(25.04, &mut out);
        out.push(b' ');
        write_millis(0.0004, &mut out);
        out.push(b' ');
        write_millis(30_000.5, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "0 18446744073709551615 25.040 0.000 30000.500"
        );

        let mut hex = String::new();
        write_hex_u128(0xabc, &mut hex);
        assert_eq!(hex, "00000000000000000000000000000abc");
    }

    #[test]
    fn timestamps_have_six_fraction_digits_and_parse_back() {
        let mut writer = NdjsonWriter::default();
        for ts_us in [
            0,
            1_795_791_600_000_000,
            1_795_791_600_000_050,
            1_795_791_659_999_999,
            -1,
        ] {
            let mut out = Vec::new();
            writer.write_timestamp(ts_us, &mut out);
            let text = String::from_utf8(out).expect("timestamps are ASCII");
            assert_eq!(text.len(), 27, "{text}");
            assert_eq!(mm_model::time::parse_rfc3339(&text), Ok(ts_us), "{text}");
        }
    }
}
