//! A scanner for flat records: one JSON object whose mapped fields are all top-level keys,
//! with plain strings and scalar values, which is what API gateways write.
//!
//! It reads such a record in one pass without the serde machinery and yields exactly what the
//! serde path would. Whenever a record is anything else (an escape sequence, a nested object
//! or array, a malformed token, trailing bytes), it returns `None` and the caller parses the
//! record with the serde path, which also produces the precise error. The two paths are
//! checked against each other by a property test.

use std::borrow::Cow;

use super::{Entry, Node, Scalar, Slots};

fn skip_whitespace(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(at) {
        at += 1;
    }
    at
}

/// Index of the closing quote of a string starting at `start` (just after its opening quote),
/// or `None` if the string has an escape or a control character before it.
fn plain_string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let rest = bytes.get(start..)?;
    let offset = memchr::memchr2(b'"', b'\\', rest)?;
    if rest[offset] != b'"' || has_control_byte(&rest[..offset]) {
        return None;
    }
    Some(start + offset)
}

/// Whether `bytes` holds a byte below 0x20 (not allowed raw inside a JSON string). Written as
/// a fold so the compiler vectorizes it.
fn has_control_byte(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .fold(false, |found, byte| found | (*byte < 0x20))
}

/// End of a JSON number starting at `start`, checking the JSON number grammar.
fn number_end(bytes: &[u8], start: usize) -> Option<(usize, bool)> {
    let digits = |mut at: usize| {
        let first = at;
        while bytes.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        (at > first).then_some(at)
    };
    let mut at = start;
    if bytes.get(at) == Some(&b'-') {
        at += 1;
    }
    match bytes.get(at) {
        Some(b'0') => at += 1,
        Some(b'1'..=b'9') => at = digits(at)?,
        _ => return None,
    }
    let mut integer = true;
    if bytes.get(at) == Some(&b'.') {
        integer = false;
        at = digits(at + 1)?;
    }
    if let Some(b'e' | b'E') = bytes.get(at) {
        integer = false;
        at += 1;
        if let Some(b'+' | b'-') = bytes.get(at) {
            at += 1;
        }
        at = digits(at)?;
    }
    Some((at, integer))
}

fn scan_value(text: &str, at: usize) -> Option<(Scalar<'_>, usize)> {
    let bytes = text.as_bytes();
    match bytes.get(at)? {
        b'"' => {
            let end = plain_string_end(bytes, at + 1)?;
            Some((Scalar::Str(Cow::Borrowed(&text[at + 1..end])), end + 1))
        }
        b'-' | b'0'..=b'9' => {
            let (end, integer) = number_end(bytes, at)?;
            let literal = &text[at..end];
            // serde_json reads `-0` as a float, to keep its sign.
            let value = if !integer || literal == "-0" {
                Scalar::Float(literal.parse().ok()?)
            } else if bytes[at] == b'-' {
                Scalar::Int(literal.parse().ok()?)
            } else {
                Scalar::UInt(literal.parse().ok()?)
            };
            Some((value, end))
        }
        b't' if bytes.get(at..at + 4) == Some(b"true") => Some((Scalar::Bool, at + 4)),
        b'f' if bytes.get(at..at + 5) == Some(b"false") => Some((Scalar::Bool, at + 5)),
        b'n' if bytes.get(at..at + 4) == Some(b"null") => Some((Scalar::Null, at + 4)),
        _ => None,
    }
}

/// Reads a flat record into slots, or `None` to leave it to the serde path.
pub(super) fn scan<'a>(text: &'a str, root: &Node, keep_attributes: bool) -> Option<Slots<'a>> {
    let bytes = text.as_bytes();
    let mut at = skip_whitespace(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    let mut slots = Slots::default();
    at = skip_whitespace(bytes, at + 1);
    if bytes.get(at) == Some(&b'}') {
        at += 1;
    } else {
        loop {
            at = skip_whitespace(bytes, at);
            if bytes.get(at) != Some(&b'"') {
                return None;
            }
            let key_end = plain_string_end(bytes, at + 1)?;
            let key = &text[at + 1..key_end];
            at = skip_whitespace(bytes, key_end + 1);
            if bytes.get(at) != Some(&b':') {
                return None;
            }
            let value_start = skip_whitespace(bytes, at + 1);
            let (value, value_end) = scan_value(text, value_start)?;
            match root.find(key) {
                Some((_, Entry::Leaf(field))) => slots.values[*field as usize] = value,
                Some((_, Entry::Branch(_))) => return None,
                None if keep_attributes => {
                    slots.push_attribute_text(key, &text[value_start..value_end])
                }
                None => {}
            }
            at = skip_whitespace(bytes, value_end);
            match bytes.get(at) {
                Some(b',') => at += 1,
                Some(b'}') => {
                    at += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    if skip_whitespace(bytes, at) != bytes.len() {
        return None;
    }
    if keep_attributes {
        slots.close_attributes();
    }
    Some(slots)
}
