//! Reading an NDJSON input in line-aligned chunks, for the parser threads of the `parse`
//! benchmark.

use std::io::Read;
use std::sync::mpsc;

use anyhow::Context;

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
