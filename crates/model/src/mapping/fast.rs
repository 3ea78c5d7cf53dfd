//! A scanner for flat records: one JSON object whose mapped fields are all top-level keys,
//! with plain strings and scalar values, which is what API gateways write.
//!
//! It reads such a record in one pass without the serde machinery and yields exactly what the
//! serde path would. Whenever a record is anything else (an escape sequence, a nested object
//! or array, a malformed token, trailing bytes), it returns `None` and the caller parses the
//! record with the serde path, which also produces the precise error. The two paths are
//! checked against each other by a property test.
//!
//! Strings are searched eight bytes at a time (SWAR: a quote, a backslash and a control byte
//! are found with a few word operations per eight bytes), and plain decimals take the exact
//! fast path below instead of the general float parser.

use std::borrow::Cow;

use super::{Entry, Node, Scalar, Slots};

fn skip_whitespace(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(at) {
        at += 1;
    }
    at
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `word` that is below `limit` (`limit <= 0x80`). Bytes above
/// the lowest flagged one may be flagged wrongly (borrows), so only the lowest counts.
fn bytes_below(word: u64, limit: u8) -> u64 {
    word.wrapping_sub(ONES * u64::from(limit)) & !word & HIGHS
}

/// High bit set in each byte of `word` equal to `byte`, with the same caveat.
fn bytes_equal(word: u64, byte: u8) -> u64 {
    bytes_below(word ^ (ONES * u64::from(byte)), 1)
}

/// Index of the closing quote of a string starting at `start` (just after its opening quote),
/// or `None` if the string has an escape or a control character before it.
fn plain_string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut at = start;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let special = bytes_equal(word, b'"') | bytes_equal(word, b'\\') | bytes_below(word, 0x20);
        if special != 0 {
            at += (special.trailing_zeros() / 8) as usize;
            return (bytes[at] == b'"').then_some(at);
        }
        at += 8;
    }
    while let Some(&byte) = bytes.get(at) {
        if byte == b'"' {
            return Some(at);
        }
        if byte == b'\\' || byte < 0x20 {
            return None;
        }
        at += 1;
    }
    None
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

/// Powers of ten that are exact in an `f64`.
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A non-negative decimal without exponent (`123.456`, already checked against the grammar)
/// whose digits fit in 2^53: the digits and the power of ten are exact doubles, so one
/// division gives the correctly rounded value, the same one the general parser returns.
/// `None` for anything else.
fn plain_decimal(literal: &[u8]) -> Option<f64> {
    let mut mantissa = 0u64;
    let mut fraction_digits = None;
    for &byte in literal {
        match byte {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(byte - b'0');
                if mantissa >= 1 << 53 {
                    return None;
                }
                fraction_digits = fraction_digits.map(|count: usize| count + 1);
            }
            b'.' => fraction_digits = Some(0),
            _ => return None,
        }
    }
    let power = EXACT_POWERS_OF_TEN.get(fraction_digits.unwrap_or(0))?;
    Some(mantissa as f64 / power)
}

/// A non-negative integer of at most 19 digits (already checked against the grammar).
fn small_integer(literal: &[u8]) -> Option<u64> {
    if literal.len() > 19 {
        return None;
    }
    Some(
        literal
            .iter()
            .fold(0u64, |value, byte| value * 10 + u64::from(byte - b'0')),
    )
}

fn scan_value(text: &str, at: usize) -> Option<(Scalar<'_>, usize)> {
    let bytes = text.as_bytes();
    match bytes.get(at)? {
        b'"' => {
            let end = plain_string_end(bytes, at + 1)?;
            Some((Scalar::Str(Cow::Borrowed(text.get(at + 1..end)?)), end + 1))
        }
        b'-' | b'0'..=b'9' => {
            let (end, integer) = number_end(bytes, at)?;
            let literal = &text[at..end];
            // serde_json reads `-0` as a float, to keep its sign.
            let value = if !integer || literal == "-0" {
                match plain_decimal(literal.as_bytes()) {
                    Some(value) => Scalar::Float(value),
                    None => Scalar::Float(literal.parse().ok()?),
                }
            } else if bytes[at] == b'-' {
                Scalar::Int(literal.parse().ok()?)
            } else {
                match small_integer(literal.as_bytes()) {
                    Some(value) => Scalar::UInt(value),
                    None => Scalar::UInt(literal.parse().ok()?),
                }
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
            let at_key = at;
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
                // A plain key (no escape, no control byte) is its own JSON form, quotes
                // included, the text serde_json would write for it.
                None if keep_attributes => slots.push_attribute_text(
                    &text[at_key..key_end + 1],
                    &text[value_start..value_end],
                    text.len(),
                ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The byte-at-a-time definition the word-at-a-time search must agree with.
    fn plain_string_end_bytewise(bytes: &[u8], start: usize) -> Option<usize> {
        let offset = bytes[start..]
            .iter()
            .position(|byte| matches!(byte, b'"' | b'\\') || *byte < 0x20)?;
        (bytes[start + offset] == b'"').then_some(start + offset)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn string_end_agrees_with_the_bytewise_search(
            // Quotes, backslashes, control and high bytes often, in any position.
            bytes in prop::collection::vec(
                prop_oneof![
                    8 => 0x20u8..0x7f,
                    1 => Just(b'"'),
                    1 => Just(b'\\'),
                    1 => 0u8..0x20,
                    2 => 0x80u8..=0xff,
                ],
                0..40,
            ),
            start in 0usize..8,
        ) {
            let start = start.min(bytes.len());
            prop_assert_eq!(
                plain_string_end(&bytes, start),
                plain_string_end_bytewise(&bytes, start)
            );
        }

        #[test]
        fn plain_decimals_equal_the_general_parser(
            integer in 0u64..10_000_000_000,
            fraction in 0u64..1_000_000_000,
            fraction_digits in 0usize..10,
        ) {
            let text = if fraction_digits == 0 {
                format!("{integer}")
            } else {
                let fraction = format!("{fraction:09}");
                format!("{integer}.{}", &fraction[..fraction_digits])
            };
            let parsed: f64 = text.parse().expect("a decimal");
            match plain_decimal(text.as_bytes()) {
                Some(fast) => prop_assert_eq!(fast.to_bits(), parsed.to_bits(), "{}", text),
                // Only digits beyond 2^53 are left to the general parser.
                None => prop_assert!(text.len() - usize::from(fraction_digits > 0) > 15, "{}", text),
            }
        }
    }

    #[test]
    fn decimals_beyond_exact_doubles_are_left_to_the_general_parser() {
        assert_eq!(plain_decimal(b"9007199254740993"), None);
        assert_eq!(plain_decimal(b"0.00000000000000000000001"), None);
        assert_eq!(plain_decimal(b"1.5e3"), None);
        assert_eq!(plain_decimal(b"-1.5"), None);
        assert_eq!(plain_decimal(b"0.1"), Some(0.1));
        assert_eq!(small_integer(b"18446744073709551615"), None);
        assert_eq!(small_integer(b"201"), Some(201));
    }
}
