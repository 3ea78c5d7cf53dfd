//! What the line splitters of request bodies and files share.

/// The UTF-8 byte order mark some editors and Windows tools begin a text file with.
pub const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

/// `text` without a UTF-8 byte order mark before it: not part of a JSON text, it is skipped
/// before a body and before each of its lines (files written by Windows tools, and such files
/// concatenated).
pub fn without_byte_order_mark(text: &[u8]) -> &[u8] {
    text.strip_prefix(BYTE_ORDER_MARK).unwrap_or(text)
}
