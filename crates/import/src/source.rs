//! An input file: its identity (so an interrupted import continues where it stopped), its
//! decompressed bytes, and the line-aligned chunks the parser threads take.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ImportError;

/// Bytes of input per chunk (one parser thread's unit of work), before line alignment.
pub const CHUNK_BYTES: usize = 1 << 20;

/// A file's first bytes (decompressed) identify it: its first record or two, with their times
/// and ids. Fewer would make files that begin alike one file more often (continued, or refused
/// when they differ further on: never counted twice); more would make a file that begins with
/// another's first few records a new one, imported whole.
const FINGERPRINT_BYTES: usize = 256;

/// One input file.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    /// Size on disk (compressed, when it is).
    pub size: u64,
    /// Modification time, ns since the epoch (0 when the system has none).
    pub modified_ns: u64,
    /// The file's identity: its first records (its first 256 bytes, decompressed), so a file
    /// that grew since it was imported is continued, and a copy or a compressed version of it
    /// is known, under any name.
    pub id: String,
    /// The identity earlier versions gave the file (its path, modification time and size):
    /// an import they made is continued under it.
    pub legacy_id: String,
    /// For an archive segment, the identity versions before this one gave it (they read its
    /// `attributes` as one text field, so its lines began otherwise): an import they made is
    /// found under it.
    pub(crate) earlier_id: Option<String>,
    /// The archive wrote the file (a Parquet segment): its columns are the event's fields by
    /// name, whatever mapping the server has.
    pub archive_segment: bool,
    /// Read as versions before this one read archive segments (every column a field, the
    /// server's mapping): to continue an import one of them began, whose positions are in
    /// those lines.
    pub(crate) as_earlier: bool,
    /// The bytes the identity is of.
    pub(crate) head: Vec<u8>,
    /// The file's absolute path, whatever it was named by.
    pub(crate) canonical: String,
}

/// What an archive segment's identity is of, before its first bytes: the records it holds,
/// as this version reads them.
const SEGMENT_RECORDS: &[u8] = b"archive segment, records\n";

/// The identity of a file that begins with `head` (its first 256 bytes, or all of it).
pub(crate) fn identity(head: &[u8]) -> String {
    format!("f{:08x}{:x}", crc32fast::hash(head), head.len())
}

impl Source {
    pub fn new(path: &Path) -> Result<Self, ImportError> {
        let io = |source| ImportError::io("reading", path, source);
        let metadata = std::fs::metadata(path).map_err(io)?;
        let canonical = std::fs::canonicalize(path).map_err(io)?;
        let modified_ns = metadata
            .modified()
            .ok()
            .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |since| {
                u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
            });
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(canonical.to_string_lossy().as_bytes());
        hasher.update(&u128::from(modified_ns).to_le_bytes());
        let mut source = Self {
            path: path.to_owned(),
            size: metadata.len(),
            modified_ns,
            id: String::new(),
            legacy_id: format!("{:08x}{:x}", hasher.finalize(), metadata.len()),
            earlier_id: None,
            archive_segment: false,
            as_earlier: false,
            head: Vec::with_capacity(FINGERPRINT_BYTES),
            canonical: canonical.to_string_lossy().into_owned(),
        };
        // Appending does not change them, even to a file whose last line was not finished;
        // only a file shorter than that is known by less (see `stored_progress`).
        let mut head = Vec::with_capacity(FINGERPRINT_BYTES);
        source
            .open(Arc::default())?
            .take(FINGERPRINT_BYTES as u64)
            .read_to_end(&mut head)
            .map_err(|error| ImportError::io("reading", path, error))?;
        source.id = identity(&head);
        source.head = head;
        if source.is_parquet()? {
            let opened = crate::parquet::open(path)?;
            if opened.segment {
                source.archive_segment = true;
                // Its lines as this version reads it can begin as they did when versions
                // before read it (a first record without unmapped fields) and differ further
                // on: its identity says which reading an import made.
                source.id = identity(&[SEGMENT_RECORDS, &source.head].concat());
                // Unreadable, it has no earlier identity; its import says why.
                source.earlier_id = crate::parquet::earlier_head(opened, FINGERPRINT_BYTES)
                    .ok()
                    .map(|head| identity(&head));
            }
        }
        Ok(source)
    }

    /// Whether the file is Parquet (by its magic bytes).
    fn is_parquet(&self) -> Result<bool, ImportError> {
        use std::io::Read as _;
        let mut magic = Vec::with_capacity(4);
        std::fs::File::open(&self.path)
            .and_then(|file| file.take(4).read_to_end(&mut magic))
            .map_err(|source| ImportError::io("reading", &self.path, source))?;
        Ok(magic == crate::parquet::MAGIC)
    }

    /// The file's records as NDJSON: gzip and zstd are decompressed and Parquet rows converted
    /// (each recognised by its magic bytes);
    /// `read_on_disk` counts the bytes read from the file itself, for progress.
    pub fn open(&self, read_on_disk: Arc<AtomicU64>) -> Result<Box<dyn Read + Send>, ImportError> {
        let file = std::fs::File::open(&self.path)
            .map_err(|source| ImportError::io("opening", &self.path, source))?;
        let mut reader = BufReader::with_capacity(
            1 << 20,
            Counting {
                inner: file,
                read: read_on_disk.clone(),
            },
        );
        let head = reader
            .fill_buf()
            .map_err(|source| ImportError::io("reading", &self.path, source))?;
        if head.starts_with(crate::parquet::MAGIC) {
            drop(reader);
            return Ok(Box::new(crate::parquet::ndjson(
                &self.path,
                self.size,
                read_on_disk,
                self.as_earlier,
            )?));
        }
        Ok(match head {
            [0x1f, 0x8b, ..] => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Box::new(
                zstd::stream::read::Decoder::with_buffer(reader)
                    .map_err(|source| ImportError::io("decompressing", &self.path, source))?,
            ),
            _ => Box::new(reader),
        })
    }
}

struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.read.fetch_add(read as u64, Ordering::Relaxed);
        Ok(read)
    }
}

/// Reads until `buffer` is full or the input ends; returns the bytes read.
fn fill(input: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match input.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Reads the first `bytes` of `input` (an import continuing where it stopped); returns the
/// CRC-32 of what it read, or `None` when the input is shorter.
pub fn skip(input: &mut impl Read, bytes: u64) -> std::io::Result<Option<crc32fast::Hasher>> {
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let want = buffer
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        match input.read(&mut buffer[..want]) {
            Ok(0) => return Ok(None),
            Ok(read) => {
                hasher.update(&buffer[..read]);
                left -= read as u64;
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(Some(hasher))
}

/// Splits `input` into chunks of whole lines, calling `send` with each: a chunk is the lines
/// that end within [`CHUNK_BYTES`] of its start (a longer line makes a longer chunk), and a
/// chunk ends at `cut_at` bytes from the input's start when it reaches that far. Where a chunk
/// ends depends only on the bytes from its start, not on how reads return them, so an import
/// that continues from a chunk end cuts the rest as the first run did; `cut_at` is where an
/// earlier run ended a unit that a chunk of this one could otherwise run past (the end of a
/// file that has grown since). `send` is told whether the input ended inside the chunk (not
/// so for a chunk ended at `cut_at` just as the input ends); it stops the split early by
/// returning false.
pub fn chunks(
    input: &mut impl Read,
    cut_at: Option<u64>,
    mut send: impl FnMut(Vec<u8>, bool) -> bool,
) -> std::io::Result<()> {
    let mut carry: Vec<u8> = Vec::new();
    let mut sent = 0u64;
    loop {
        let forced = cut_at
            .and_then(|at| at.checked_sub(sent))
            .filter(|left| *left > 0);
        let mut buffer = Vec::with_capacity(CHUNK_BYTES.max(carry.len()) + 1);
        buffer.append(&mut carry);
        let mut ended = false;
        // The window from the chunk's start, widened until a line ends in it.
        let mut window = CHUNK_BYTES;
        let cut = loop {
            let exact = forced
                .and_then(|left| usize::try_from(left).ok())
                .filter(|left| *left <= window);
            if let Some(exact) = exact {
                window = exact;
            }
            let start = buffer.len();
            if start < window {
                buffer.resize(window, 0);
                let read = fill(input, &mut buffer[start..])?;
                buffer.truncate(start + read);
                ended = buffer.len() < window;
            }
            if ended {
                break buffer.len();
            }
            if exact.is_some() {
                break window;
            }
            match memchr::memrchr(b'\n', &buffer) {
                Some(last_newline) => break last_newline + 1,
                None => window += CHUNK_BYTES,
            }
        };
        carry.extend_from_slice(&buffer[cut..]);
        buffer.truncate(cut);
        sent += cut as u64;
        if !buffer.is_empty() && !send(buffer, ended) {
            return Ok(());
        }
        if ended && carry.is_empty() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns at most `step` bytes per read, as decompressors do.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
            let count = self.step.min(buffer.len()).min(self.data.len());
            buffer[..count].copy_from_slice(&self.data[..count]);
            self.data = &self.data[count..];
            Ok(count)
        }
    }

    fn cut(data: &[u8], step: usize) -> Vec<Vec<u8>> {
        cut_at(data, step, None)
    }

    fn cut_at(data: &[u8], step: usize, at: Option<u64>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        chunks(&mut Trickle { data, step }, at, |chunk, _| {
            out.push(chunk);
            true
        })
        .expect("reads");
        out
    }

    #[test]
    fn chunks_are_whole_lines_and_do_not_depend_on_read_sizes() {
        let mut data = Vec::new();
        for index in 0..200_000 {
            data.extend_from_slice(
                format!(
                    "{{\"line\":{index},\"pad\":\"{}\"}}\n",
                    "x".repeat(index % 37)
                )
                .as_bytes(),
            );
        }
        data.extend_from_slice(b"{\"last\":\"no newline\"}");
        let whole = cut(&data, usize::MAX);
        assert!(whole.len() > 3);
        assert_eq!(whole.concat(), data);
        for chunk in &whole[..whole.len() - 1] {
            assert_eq!(chunk.last(), Some(&b'\n'));
        }
        assert!(whole == cut(&data, 4_093), "same cuts with short reads");
        // Continuing from a chunk end cuts the rest the same way.
        let first = whole[0].len() as u64;
        let mut rest = &data[..];
        let skipped = skip(&mut rest, first).expect("reads").expect("long enough");
        assert_eq!(skipped.finalize(), crc32fast::hash(&whole[0]));
        assert!(cut(rest, 777) == whole[1..], "the rest cut as before");
    }

    #[test]
    fn a_chunk_ends_where_told_and_the_rest_is_cut_as_from_there() {
        let mut data = Vec::new();
        for index in 0..100_000 {
            data.extend_from_slice(format!("{{\"line\":{index}}}\n").as_bytes());
        }
        let whole = cut(&data, usize::MAX);
        // Inside the second chunk, in the middle of a line (the end of a file that then grew).
        let at = whole[0].len() + whole[1].len() / 2 + 3;
        assert_ne!(data[at - 1], b'\n', "in the middle of a line");
        for step in [usize::MAX, 65_521] {
            let told = cut_at(&data, step, Some(at as u64));
            assert_eq!(told.concat(), data);
            let ends: Vec<usize> = told
                .iter()
                .scan(0, |end, chunk| {
                    *end += chunk.len();
                    Some(*end)
                })
                .collect();
            assert!(ends.contains(&at), "a chunk ends at {at}: {ends:?}");
            let after = ends.iter().position(|end| *end == at).expect("there") + 1;
            assert!(told[after..] == cut(&data[at..], usize::MAX)[..]);
        }
    }
}
