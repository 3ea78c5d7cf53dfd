//! One Parquet segment: the events of one UTC hour, sorted by (merchant, ts).

mod cache;
mod lookup;
mod rows;

pub use cache::MetadataCache;
pub use lookup::{RowQuery, read};
pub use rows::{EventColumns, Optional, Rows, Series, Text};

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, Float64Array, Int32Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::ArchiveError;

/// Rows per row group: small enough that merchant statistics and the bloom filter prune well.
const ROW_GROUP_ROWS: usize = 16 * 1024;
/// Rows per data page at most: the page index then tells apart spans of a few thousand rows,
/// so a lookup with a merchant reads the pages of that merchant, not whole row groups.
const PAGE_ROWS: usize = 4096;

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
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_column_bloom_filter_enabled(corr_id.clone(), true)
        .set_column_bloom_filter_fpp(corr_id.clone(), 0.01)
        .set_column_bloom_filter_max_ndv(corr_id, rows.clamp(1, ROW_GROUP_ROWS) as u64)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_data_page_size_limit(128 * 1024)
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "merchant_monitor.hour".into(),
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

fn to_batch<R: Rows + ?Sized>(events: &R, order: &[u32]) -> Result<RecordBatch, ArchiveError> {
    let rows = || order.iter().map(|index| *index as usize);
    let optional = |column| {
        text(events, Text::Optional(column), order, move |row| {
            events.optional(column, row)
        })
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows().map(|row| events.ts_us(row)))
                .with_timezone("UTC"),
        ),
        text(events, Text::Merchant, order, |row| {
            Some(events.merchant(row))
        })?,
        text(events, Text::Api, order, |row| Some(events.api(row)))?,
        Arc::new(Int32Array::from_iter_values(
            rows().map(|row| i32::from(events.status(row))),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows().map(|row| events.latency_ms(row)),
        )),
        text(events, Text::CorrId, order, |row| Some(events.corr_id(row)))?,
        optional(Optional::Partner)?,
        optional(Optional::Method)?,
        optional(Optional::Path)?,
        optional(Optional::Host)?,
        optional(Optional::Region)?,
        optional(Optional::Attributes)?,
    ];
    // The batch's own schema says which columns are dictionaries; the writer's is the
    // archive's.
    let fields: Vec<Field> = schema()
        .fields()
        .iter()
        .zip(&columns)
        .map(|(field, column)| {
            field
                .as_ref()
                .clone()
                .with_data_type(column.data_type().clone())
        })
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|error| ArchiveError::Parquet(error.to_string()))
}

/// The segment order of `events` (hour, merchant, ts, corr_id) as indices into it; events
/// are not moved. Each distinct merchant is compared only while sorting the distinct
/// merchants, and events are then ordered by the merchant's rank.
pub fn segment_order<R: Rows + ?Sized>(events: &R) -> Vec<u32> {
    let mut ids: rustc_hash::FxHashMap<&str, u32> = rustc_hash::FxHashMap::default();
    let merchant_ids: Vec<u32> = (0..events.rows())
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
    let mut keyed: Vec<(i64, u32, i64, u32)> = merchant_ids
        .iter()
        .enumerate()
        .map(|(row, id)| {
            let ts_us = events.ts_us(row);
            (
                ts_us.div_euclid(3_600_000_000),
                rank_of_id[*id as usize],
                ts_us,
                row as u32,
            )
        })
        .collect();
    keyed.sort_unstable_by(|left, right| {
        (left.0, left.1, left.2)
            .cmp(&(right.0, right.1, right.2))
            .then_with(|| {
                events
                    .corr_id(left.3 as usize)
                    .cmp(events.corr_id(right.3 as usize))
            })
    });
    keyed.into_iter().map(|(_, _, _, index)| index).collect()
}

/// Writes the `events` that `order` lists, in that order (all of one hour, in
/// [`segment_order`]), to `path`, fsynced.
pub fn write<R: Rows + ?Sized>(
    path: &Path,
    hour: i64,
    events: &R,
    order: &[u32],
) -> Result<SegmentInfo, ArchiveError> {
    let file =
        File::create(path).map_err(|source| ArchiveError::io("create segment", path, source))?;
    let mut writer =
        ArrowWriter::try_new(file, schema(), Some(writer_properties(order.len(), hour)?))
            .map_err(|error| ArchiveError::Parquet(error.to_string()))?;
    for chunk in order.chunks(ROW_GROUP_ROWS) {
        writer
            .write(&to_batch(events, chunk)?)
            .map_err(|error| ArchiveError::Parquet(error.to_string()))?;
    }
    writer
        .finish()
        .map_err(|error| ArchiveError::Parquet(error.to_string()))?;
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
