//! Parquet input: each row becomes the JSON object of its columns (column name → value, in
//! the byte order of the names, null values left out), one per line, so it goes through the
//! same field mapping and validation as NDJSON.
//!
//! The archive's own segments (their metadata names their hour) are read back as the records
//! they were written from: their `attributes` column, the JSON object of a record's unmapped
//! fields, gives its members back to the line instead of becoming one text field, and their
//! columns are the event's fields by name (the import reads them with the default mapping).

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::ImportError;

/// The four bytes a Parquet file starts with.
pub const MAGIC: &[u8; 4] = b"PAR1";

/// The archive's column of a record's unmapped fields (as a JSON object's text).
const ATTRIBUTES: &str = "attributes";

/// How rows are written as lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lines {
    /// Every column a field (the archive's `attributes` one too): files that are not archive
    /// segments, and archive segments as versions before this one converted them (their
    /// identity then).
    Columns,
    /// An archive segment's rows as the records they were: `attributes` spliced.
    Records,
}

/// A Parquet file opened for reading, and whether the archive wrote it.
pub(crate) struct Opened {
    batches: ParquetRecordBatchReader,
    rows: u64,
    pub(crate) segment: bool,
}

fn parquet_error(path: &Path) -> impl Fn(parquet::errors::ParquetError) -> ImportError + '_ {
    move |error| ImportError::Input {
        path: path.to_owned(),
        detail: format!("reading Parquet: {error}"),
    }
}

/// Opens the Parquet file at `path`.
pub(crate) fn open(path: &Path) -> Result<Opened, ImportError> {
    let file =
        std::fs::File::open(path).map_err(|error| ImportError::io("opening", path, error))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_error(path))?;
    let metadata = builder.metadata().file_metadata();
    let rows = metadata.num_rows().max(1) as u64;
    let segment = metadata.key_value_metadata().is_some_and(|pairs| {
        pairs
            .iter()
            .any(|pair| pair.key == mm_archive::HOUR_METADATA_KEY)
    });
    let batches = builder
        .with_batch_size(8_192)
        .build()
        .map_err(parquet_error(path))?;
    Ok(Opened {
        batches,
        rows,
        segment,
    })
}

/// The rows of the Parquet file at `path` as NDJSON (archive segments as their records, unless
/// `as_earlier` asks for the lines versions before this one made of them), written by a thread
/// into a pipe; `read` advances with the rows converted (as a share of the file's size).
pub(crate) fn ndjson(
    path: &Path,
    size: u64,
    read: Arc<AtomicU64>,
    as_earlier: bool,
) -> Result<Converted, ImportError> {
    let opened = open(path)?;
    let lines = match opened.segment && !as_earlier {
        true => Lines::Records,
        false => Lines::Columns,
    };
    let (pipe, mut writer) =
        std::io::pipe().map_err(|error| ImportError::io("opening a pipe for", path, error))?;
    let failure = Arc::new(Mutex::new(None));
    let failed = failure.clone();
    std::thread::spawn(move || {
        let mut done = 0u64;
        let mut out = Vec::with_capacity(1 << 20);
        // Said before the pipe closes (the writer goes with the thread): the reader finds it
        // at the end of the lines.
        let fail = |reason: String| {
            if let Ok(mut slot) = failed.lock() {
                *slot = Some(reason);
            }
        };
        for batch in opened.batches {
            let batch = match batch {
                Ok(batch) => batch,
                Err(error) => return fail(format!("unreadable Parquet: {error}")),
            };
            out.clear();
            if let Err(detail) = write_rows(&batch, lines, &mut out) {
                return fail(detail);
            }
            if writer.write_all(&out).is_err() {
                return;
            }
            done += batch.num_rows() as u64;
            read.store(size * done / opened.rows, Ordering::Relaxed);
        }
    });
    Ok(Converted { pipe, failure })
}

/// The lines of a Parquet file as its converting thread writes them. A file whose rows cannot
/// all be converted ends in an error, the reason, once the lines written before it are read:
/// the import stops there, not taking the file for read whole.
pub(crate) struct Converted {
    pipe: std::io::PipeReader,
    failure: Arc<Mutex<Option<String>>>,
}

impl std::io::Read for Converted {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.pipe.read(buffer)?;
        if read == 0 && !buffer.is_empty() {
            let failure = match self.failure.lock() {
                Ok(slot) => slot.clone(),
                Err(_) => Some("the Parquet conversion panicked".into()),
            };
            if let Some(reason) = failure {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, reason));
            }
        }
        Ok(read)
    }
}

/// The first `bytes` bytes of the lines an archive segment's rows became in versions before
/// this one (every column a field): the identity they imported it under.
pub(crate) fn earlier_head(opened: Opened, bytes: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for batch in opened.batches {
        let batch = batch.map_err(|error| error.to_string())?;
        write_rows(&batch, Lines::Columns, &mut out)?;
        if out.len() >= bytes {
            break;
        }
    }
    out.truncate(bytes);
    Ok(out)
}

/// One column's values, typed once per batch.
enum Values<'a> {
    Text(Box<dyn Fn(usize) -> &'a str + 'a>),
    Bool(&'a arrow_array::BooleanArray),
    Signed(Box<dyn Fn(usize) -> i64 + 'a>),
    Unsigned(Box<dyn Fn(usize) -> u64 + 'a>),
    Float(Box<dyn Fn(usize) -> f64 + 'a>),
    /// Microseconds since the epoch, written as RFC 3339 text.
    Time(Box<dyn Fn(usize) -> i64 + 'a>),
    Unsupported(&'a DataType),
}

fn values(column: &dyn Array) -> Values<'_> {
    fn signed<'a, T>(column: &'a dyn Array) -> Values<'a>
    where
        T: arrow_array::ArrowPrimitiveType,
        T::Native: Into<i64>,
    {
        let array = column.as_primitive::<T>();
        Values::Signed(Box::new(move |row| array.value(row).into()))
    }
    fn unsigned<'a, T>(column: &'a dyn Array) -> Values<'a>
    where
        T: arrow_array::ArrowPrimitiveType,
        T::Native: Into<u64>,
    {
        let array = column.as_primitive::<T>();
        Values::Unsigned(Box::new(move |row| array.value(row).into()))
    }
    fn micros<'a, T>(column: &'a dyn Array, to_micros: fn(i64) -> i64) -> Values<'a>
    where
        T: arrow_array::ArrowPrimitiveType<Native = i64>,
    {
        let array = column.as_primitive::<T>();
        Values::Time(Box::new(move |row| to_micros(array.value(row))))
    }
    match column.data_type() {
        DataType::Utf8 => {
            let array = column.as_string::<i32>();
            Values::Text(Box::new(move |row| array.value(row)))
        }
        DataType::LargeUtf8 => {
            let array = column.as_string::<i64>();
            Values::Text(Box::new(move |row| array.value(row)))
        }
        DataType::Utf8View => {
            let array = column.as_string_view();
            Values::Text(Box::new(move |row| array.value(row)))
        }
        DataType::Boolean => Values::Bool(column.as_boolean()),
        DataType::Int8 => signed::<Int8Type>(column),
        DataType::Int16 => signed::<Int16Type>(column),
        DataType::Int32 => signed::<Int32Type>(column),
        DataType::Int64 => signed::<Int64Type>(column),
        DataType::UInt8 => unsigned::<UInt8Type>(column),
        DataType::UInt16 => unsigned::<UInt16Type>(column),
        DataType::UInt32 => unsigned::<UInt32Type>(column),
        DataType::UInt64 => unsigned::<UInt64Type>(column),
        DataType::Float32 => {
            let array = column.as_primitive::<Float32Type>();
            Values::Float(Box::new(move |row| f64::from(array.value(row))))
        }
        DataType::Float64 => {
            let array = column.as_primitive::<Float64Type>();
            Values::Float(Box::new(move |row| array.value(row)))
        }
        DataType::Timestamp(TimeUnit::Second, _) => {
            micros::<TimestampSecondType>(column, |value| value.saturating_mul(1_000_000))
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            micros::<TimestampMillisecondType>(column, |value| value.saturating_mul(1_000))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            micros::<TimestampMicrosecondType>(column, |value| value)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            micros::<TimestampNanosecondType>(column, |value| value / 1_000)
        }
        other => Values::Unsupported(other),
    }
}

/// One field of the lines: its name as JSON with the colon after it, and its column.
struct Field<'a> {
    name: &'a str,
    key: Vec<u8>,
    column: &'a dyn Array,
    values: Values<'a>,
}

/// The members of an archived record's attributes (the text inside its braces), or `None`
/// when the text is not an object's.
fn members(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    Some(inner.trim())
}

/// The top-level keys of a JSON object's text.
fn object_keys(text: &str) -> Option<Vec<String>> {
    use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                keys.push(key);
            }
            Ok(keys)
        }
    }
    serde_json::Deserializer::from_str(text)
        .deserialize_map(Keys)
        .ok()
}

/// What an archived record's attributes give its line: their members, or nothing when they
/// cannot be the line's own fields (the text is not an object's, or one of its keys is the
/// name of a column: a record written under a mapping that left such a key unmapped, which
/// the default mapping would read as that field). Line breaks between its tokens (a nested
/// value kept as it was sent, pretty-printed) become spaces, so the record stays one line.
fn spliced<'t>(text: &'t str, columns: &[&str]) -> Option<std::borrow::Cow<'t, str>> {
    let inner = members(text)?;
    if may_name(inner.as_bytes(), columns)
        && object_keys(text)?
            .iter()
            .any(|key| columns.contains(&key.as_str()))
    {
        return None;
    }
    Some(match inner.contains(['\n', '\r']) {
        true => inner.replace(['\n', '\r'], " ").into(),
        false => inner.into(),
    })
}

/// Whether some key of the JSON text `members` (at any depth) may be one of `names`: each
/// quote right before a colon ends a key (inside a string a quote is escaped), which starts
/// after the quote before it. A key with escapes may be taken for another; the caller reads
/// the keys to be sure.
fn may_name(members: &[u8], names: &[&str]) -> bool {
    memchr::memchr_iter(b':', members).any(|colon| {
        let Some(end) = colon.checked_sub(1).filter(|end| members[*end] == b'"') else {
            return false;
        };
        memchr::memrchr(b'"', &members[..end]).is_some_and(|start| {
            names
                .iter()
                .any(|name| name.as_bytes() == &members[start + 1..end])
        })
    })
}

/// Appends each row of `batch` as a JSON object and a newline: the columns in the byte order
/// of their names (of columns named alike, the last one not null), null values left out,
/// numbers and text as serde_json writes them. With [`Lines::Records`], the `attributes`
/// text's members come first (see [`spliced`]).
fn write_rows(batch: &RecordBatch, lines: Lines, out: &mut Vec<u8>) -> Result<(), String> {
    let schema = batch.schema();
    let mut fields: Vec<Field<'_>> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| {
            let mut key = Vec::with_capacity(field.name().len() + 3);
            serde_json::to_writer(&mut key, field.name()).map_err(|error| error.to_string())?;
            key.push(b':');
            Ok(Field {
                name: field.name().as_str(),
                key,
                column: column.as_ref(),
                values: values(column.as_ref()),
            })
        })
        .collect::<Result<_, String>>()?;
    // Stable: columns named alike stay in schema order.
    fields.sort_by(|left, right| left.name.cmp(right.name));
    let splice = match lines {
        Lines::Records => fields
            .iter()
            .position(|field| field.name == ATTRIBUTES && matches!(field.values, Values::Text(_))),
        Lines::Columns => None,
    };
    // The other columns' names (for `spliced`).
    let columns: Vec<&str> = fields
        .iter()
        .map(|field| field.name)
        .filter(|name| *name != ATTRIBUTES)
        .collect();
    let mut time = String::with_capacity(32);
    for row in 0..batch.num_rows() {
        out.push(b'{');
        let mut first = true;
        let mut spliced_at = None;
        if let Some(index) = splice
            && let (false, Values::Text(text)) =
                (fields[index].column.is_null(row), &fields[index].values)
            && let Some(members) = spliced(text(row), &columns)
        {
            spliced_at = Some(index);
            if !members.is_empty() {
                out.extend_from_slice(members.as_bytes());
                first = false;
            }
        }
        let mut index = 0;
        while index < fields.len() {
            // Columns named alike: the last one not null in this row, as a map keeps it.
            let mut end = index + 1;
            while end < fields.len() && fields[end].name == fields[index].name {
                end += 1;
            }
            let chosen = (index..end)
                .rev()
                .find(|at| !fields[*at].column.is_null(row));
            index = end;
            let Some(at) = chosen else { continue };
            if spliced_at == Some(at) {
                continue;
            }
            let field = &fields[at];
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(&field.key);
            write_value(&field.values, field.name, row, out, &mut time)?;
        }
        out.extend_from_slice(b"}\n");
    }
    Ok(())
}

fn write_value(
    values: &Values<'_>,
    name: &str,
    row: usize,
    out: &mut Vec<u8>,
    time: &mut String,
) -> Result<(), String> {
    let written = match values {
        Values::Text(text) => serde_json::to_writer(&mut *out, text(row)),
        Values::Bool(array) => serde_json::to_writer(&mut *out, &array.value(row)),
        Values::Signed(value) => serde_json::to_writer(&mut *out, &value(row)),
        Values::Unsigned(value) => serde_json::to_writer(&mut *out, &value(row)),
        // Not finite: `null`, as a JSON value of it is.
        Values::Float(value) => serde_json::to_writer(&mut *out, &value(row)),
        Values::Time(micros) => {
            time.clear();
            mm_model::time::write_rfc3339(micros(row), time);
            serde_json::to_writer(&mut *out, time.as_str())
        }
        Values::Unsupported(other) => {
            return Err(format!("column {name}: type {other} is not supported"));
        }
    };
    written.map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests;
