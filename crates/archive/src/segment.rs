//! One Parquet segment: the events of one UTC hour, sorted by (merchant, ts).

mod cache;
mod lookup;
mod rows;

pub use cache::MetadataCache;
pub use lookup::{RowQuery, read};
pub use rows::{EventColumns, Optional, Rows, Series, Text};

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, Float64Array, Int32Array, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::ArchiveError;

/// Rows per row group: small enough that merchant statistics and the bloom filter prune well.
const ROW_GROUP_ROWS: usize = 16 * 1024;
/// Rows per data page at most: the page index then tells apart spans of a few thousand rows,
/// so a lookup with a merchant reads the pages of that merchant, not whole row groups.
const PAGE_ROWS: usize = 4096;

/// The key of a segment's Parquet metadata that holds its UTC hour: what tells the archive's
/// own files apart (their `attributes` column is the JSON object of a record's other fields).
pub const HOUR_METADATA_KEY: &str = "merchant_monitor.hour";

/// What the manifest records about a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentInfo {
    /// File name inside the hour directory.
    pub file: String,
    /// The UTC hour (hours since the epoch) all its events belong to.
    pub hour: i64,
    pub rows: u64,
    pub bytes: u64,
    pub min_ts_us: i64,
    pub max_ts_us: i64,
    pub min_merchant: String,
    pub max_merchant: String,
    /// CRC-32 of the whole file, checked when the archive opens.
    #[serde(default)]
    pub crc32: u32,
}

/// CRC-32 of a file's bytes.
pub fn file_crc32(path: &Path) -> Result<(u32, u64), ArchiveError> {
    use std::io::Read as _;
    let mut file =
        File::open(path).map_err(|source| ArchiveError::io("open segment", path, source))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut length = 0u64;
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|source| ArchiveError::io("read segment", path, source))?;
        if read == 0 {
            return Ok((hasher.finalize(), length));
        }
        hasher.update(&buffer[..read]);
        length += read as u64;
    }
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The archive's Parquet schema.
pub fn schema() -> SchemaRef {
    let optional = |name: &str| Field::new(name, DataType::Utf8, true);
    Arc::new(Schema::new(vec![
        Field::new("ts", timestamp_type(), false),
        Field::new("merchant", DataType::Utf8, false),
        Field::new("api", DataType::Utf8, false),
        Field::new("status", DataType::Int32, false),
        Field::new("latency_ms", DataType::Float64, false),
        Field::new("corr_id", DataType::Utf8, false),
        optional("partner"),
        optional("method"),
        optional("path"),
        optional("host"),
        optional("region"),
        optional("attributes"),
    ]))
}

fn writer_properties(rows: usize, hour: i64) -> Result<WriterProperties, ArchiveError> {
    let corr_id = ColumnPath::from("corr_id");
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).map_err(|error| ArchiveError::Parquet(error.to_string()))?,
        ))
        .set_dictionary_enabled(true)
        .set_column_dictionary_enabled(corr_id.clone(), false)
        .set_column_dictionary_enabled(ColumnPath::from("path"), false)
        .set_column_dictionary_enabled(ColumnPath::from("attributes"), false)
        // Timestamps and latencies are nearly all distinct within a row group: a dictionary
        // is built for each page only to fall back to plain, and plain is smaller (a 2M-event
        // import: 16.4 against 20.4 MB for the two columns) and cheaper to write.
        .set_column_dictionary_enabled(ColumnPath::from("ts"), false)
        .set_column_dictionary_enabled(ColumnPath::from("latency_ms"), false)
        // Page statistics where they prune: time and merchant (lookups read them), status and
        // latency (numbers, nearly free). The range of a page's other texts prunes nothing
        // (rows are sorted by merchant and time, so a page holds most APIs, methods, hosts
        // and regions; lookups by id use the bloom filter), and the writer compares every
        // row's text to find it.
        .set_statistics_enabled(EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::from("ts"), EnabledStatistics::Page)
        .set_column_statistics_enabled(ColumnPath::from("merchant"), EnabledStatistics::Page)
        .set_column_statistics_enabled(ColumnPath::from("status"), EnabledStatistics::Page)
        .set_column_statistics_enabled(ColumnPath::from("latency_ms"), EnabledStatistics::Page)
        .set_column_bloom_filter_enabled(corr_id.clone(), true)
        .set_column_bloom_filter_fpp(corr_id.clone(), 0.01)
        .set_column_bloom_filter_max_ndv(corr_id, rows.clamp(1, ROW_GROUP_ROWS) as u64)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_data_page_size_limit(128 * 1024)
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            HOUR_METADATA_KEY.into(),
            hour.to_string(),
        )]))
        .build())
}

/// A string column built in one buffer sized up front (growing it would copy the column
/// several times over). The values are looked up once: in segment order they are scattered
/// over the events, and a row group's references fit in the cache.
fn strings<'e>(values: impl Iterator<Item = Option<&'e str>>) -> ArrayRef {
    let values: Vec<Option<&str>> = values.collect();
    let bytes = values.iter().map(|value| value.map_or(0, str::len)).sum();
    let mut builder = StringBuilder::with_capacity(values.len(), bytes);
    for value in values {
        builder.append_option(value);
    }
    Arc::new(builder.finish())
}

/// Text `column`: as the rows build it (see [`Rows::array`]), else gathered value by value.
fn text<'e, R: Rows + ?Sized>(
    events: &'e R,
    column: Text,
    order: &[u32],
    values: impl Fn(usize) -> Option<&'e str>,
) -> Result<ArrayRef, ArchiveError> {
    match events.array(column, order) {
        Some(array) => array.map_err(|error| ArchiveError::Parquet(error.to_string())),
        None => Ok(strings(order.iter().map(|row| values(*row as usize)))),
    }
}

/// Column `index` (in [`schema`] order) of the rows `order` lists.
fn column<R: Rows + ?Sized>(
    events: &R,
    order: &[u32],
    index: usize,
) -> Result<ArrayRef, ArchiveError> {
    let rows = || order.iter().map(|row| *row as usize);
    let optional = |column| {
        text(events, Text::Optional(column), order, move |row| {
            events.optional(column, row)
        })
    };
    Ok(match index {
        0 => Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows().map(|row| events.ts_us(row)))
                .with_timezone("UTC"),
        ),
        1 => text(events, Text::Merchant, order, |row| {
            Some(events.merchant(row))
        })?,
        2 => text(events, Text::Api, order, |row| Some(events.api(row)))?,
        3 => Arc::new(Int32Array::from_iter_values(
            rows().map(|row| i32::from(events.status(row))),
        )),
        4 => Arc::new(Float64Array::from_iter_values(
            rows().map(|row| events.latency_ms(row)),
        )),
        5 => text(events, Text::CorrId, order, |row| Some(events.corr_id(row)))?,
        6 => optional(Optional::Partner)?,
        7 => optional(Optional::Method)?,
        8 => optional(Optional::Path)?,
        9 => optional(Optional::Host)?,
        10 => optional(Optional::Region)?,
        11 => optional(Optional::Attributes)?,
        _ => {
            return Err(ArchiveError::Parquet(format!(
                "the archive has no column {index}"
            )));
        }
    })
}

/// Columns in the order threads take them up, the costliest first (corr_id, attributes,
/// path, ts, latency, merchant, …), so that no thread is left alone with a long one at the end.
const ENCODING_ORDER: [usize; 12] = [5, 11, 8, 0, 4, 1, 9, 10, 2, 3, 6, 7];

fn parquet_error(error: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Parquet(error.to_string())
}

/// Writes the rows `order` lists as the next row group: each column gathered and encoded by
/// one of `threads` threads (this one included), then appended in schema order. The file is
/// the same whatever the number of threads.
fn write_row_group<R: Rows + Sync + ?Sized>(
    file: &mut SerializedFileWriter<File>,
    factory: &ArrowRowGroupWriterFactory,
    events: &R,
    order: &[u32],
    threads: usize,
) -> Result<(), ArchiveError> {
    let schema = schema();
    let writers = factory
        .create_column_writers(file.flushed_row_groups().len())
        .map_err(parquet_error)?;
    let mut jobs: Vec<(usize, ArrowColumnWriter)> = writers.into_iter().enumerate().collect();
    // Taken from the end: the costliest last.
    jobs.sort_by_key(|(index, _)| {
        std::cmp::Reverse(ENCODING_ORDER.iter().position(|column| column == index))
    });
    let jobs = Mutex::new(jobs);
    let chunks = Mutex::new(Vec::with_capacity(ENCODING_ORDER.len()));
    let poisoned = || ArchiveError::Parquet("a column encoder panicked".into());
    let work = || -> Result<(), ArchiveError> {
        loop {
            let job = jobs.lock().map_err(|_| poisoned())?.pop();
            let Some((index, mut writer)) = job else {
                return Ok(());
            };
            let array = column(events, order, index)?;
            for leaf in compute_leaves(schema.field(index), &array).map_err(parquet_error)? {
                writer.write(&leaf).map_err(parquet_error)?;
            }
            let chunk = writer.close().map_err(parquet_error)?;
            chunks.lock().map_err(|_| poisoned())?.push((index, chunk));
        }
    };
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads.max(1)).map(|_| scope.spawn(work)).collect();
        let mine = work();
        // Every helper joined before the first error is returned: a helper left to the scope
        // would turn its panic into this thread's.
        let joined: Vec<_> = helpers
            .into_iter()
            .map(|helper| helper.join().unwrap_or_else(|_| Err(poisoned())))
            .collect();
        joined
            .into_iter()
            .chain([mine])
            .collect::<Result<(), ArchiveError>>()
    })?;
    let mut chunks = chunks.into_inner().map_err(|_| poisoned())?;
    chunks.sort_by_key(|(index, _)| *index);
    let mut row_group = file.next_row_group().map_err(parquet_error)?;
    for (_, chunk) in chunks {
        chunk
            .append_to_row_group(&mut row_group)
            .map_err(parquet_error)?;
    }
    row_group.close().map_err(parquet_error)?;
    Ok(())
}

const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// The segment order of `events` (hour, merchant, ts, corr_id) as indices into it; events
/// are not moved. Each distinct merchant is compared only while sorting the distinct
/// merchants; events are then placed by (hour, merchant rank) with a counting sort, and each
/// such group (in input order, which is mostly time order) sorted by time.
pub fn segment_order<R: Rows + ?Sized>(events: &R) -> Vec<u32> {
    let rows = events.rows();
    let mut ids: rustc_hash::FxHashMap<&str, u32> = rustc_hash::FxHashMap::default();
    let merchant_ids: Vec<u32> = (0..rows)
        .map(|row| {
            let next = ids.len() as u32;
            *ids.entry(events.merchant(row)).or_insert(next)
        })
        .collect();
    let mut distinct: Vec<(&str, u32)> = ids.into_iter().collect();
    distinct.sort_unstable();
    let mut rank_of_id = vec![0u32; distinct.len()];
    for (rank, (_, id)) in distinct.iter().enumerate() {
        rank_of_id[*id as usize] = rank as u32;
    }
    let hour = |row: usize| events.ts_us(row).div_euclid(MICROS_PER_HOUR);
    let by_time = |left: &u32, right: &u32| {
        let (left, right) = (*left as usize, *right as usize);
        events
            .ts_us(left)
            .cmp(&events.ts_us(right))
            .then_with(|| events.corr_id(left).cmp(events.corr_id(right)))
    };
    let (first_hour, last_hour) = (0..rows)
        .map(hour)
        .fold((i64::MAX, i64::MIN), |(low, high), hour| {
            (low.min(hour), high.max(hour))
        });
    let groups = usize::try_from(last_hour.saturating_sub(first_hour).saturating_add(1))
        .ok()
        .and_then(|hours| hours.checked_mul(distinct.len()))
        .filter(|groups| *groups <= 2 * rows + 1024);
    let Some(groups) = groups.filter(|_| rows > 0) else {
        // Events over too many hours for a group each: one comparison sort.
        let mut order: Vec<u32> = (0..rows as u32).collect();
        order.sort_unstable_by(|left, right| {
            let key = |row: u32| {
                (
                    hour(row as usize),
                    rank_of_id[merchant_ids[row as usize] as usize],
                )
            };
            key(*left)
                .cmp(&key(*right))
                .then_with(|| by_time(left, right))
        });
        return order;
    };
    let group_of = |row: usize| {
        (hour(row) - first_hour) as usize * distinct.len()
            + rank_of_id[merchant_ids[row] as usize] as usize
    };
    let mut starts = vec![0u32; groups + 1];
    for row in 0..rows {
        starts[group_of(row) + 1] += 1;
    }
    for group in 0..groups {
        starts[group + 1] += starts[group];
    }
    let mut order = vec![0u32; rows];
    let mut next = starts.clone();
    for row in 0..rows {
        let slot = &mut next[group_of(row)];
        order[*slot as usize] = row as u32;
        *slot += 1;
    }
    for group in starts.windows(2) {
        order[group[0] as usize..group[1] as usize].sort_by(by_time);
    }
    order
}

/// Writes the `events` that `order` lists, in that order (all of one hour, in
/// [`segment_order`]), to `path`, fsynced; each row group's columns encoded on `threads`
/// threads.
pub fn write<R: Rows + Sync + ?Sized>(
    path: &Path,
    hour: i64,
    events: &R,
    order: &[u32],
    threads: usize,
) -> Result<SegmentInfo, ArchiveError> {
    let file =
        File::create(path).map_err(|source| ArchiveError::io("create segment", path, source))?;
    // The Arrow writer sets the file up (the Arrow schema in its metadata); its row groups are
    // written column by column.
    let (mut writer, factory) =
        ArrowWriter::try_new(file, schema(), Some(writer_properties(order.len(), hour)?))
            .and_then(ArrowWriter::into_serialized_writer)
            .map_err(parquet_error)?;
    for rows in order.chunks(ROW_GROUP_ROWS) {
        write_row_group(&mut writer, &factory, events, rows, threads)?;
    }
    writer.finish().map_err(parquet_error)?;
    writer
        .inner()
        .sync_all()
        .map_err(|source| ArchiveError::io("fsync segment", path, source))?;
    drop(writer);
    let (crc32, bytes) = file_crc32(path)?;
    let rows = || order.iter().map(|index| *index as usize);
    Ok(SegmentInfo {
        crc32,
        file: path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        hour,
        rows: order.len() as u64,
        bytes,
        min_ts_us: rows()
            .map(|row| events.ts_us(row))
            .min()
            .unwrap_or_default(),
        max_ts_us: rows()
            .map(|row| events.ts_us(row))
            .max()
            .unwrap_or_default(),
        min_merchant: rows()
            .next()
            .map(|row| events.merchant(row).to_owned())
            .unwrap_or_default(),
        max_merchant: rows()
            .next_back()
            .map(|row| events.merchant(row).to_owned())
            .unwrap_or_default(),
    })
}
