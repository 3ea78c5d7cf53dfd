//! One Parquet segment: the events of one UTC hour, sorted by (merchant, ts).

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, TimestampMicrosecondType};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int32Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use mm_model::{ApiCall, ApiCallRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
    RowFilter, RowSelection,
};
use parquet::basic::{Compression, ZstdLevel};
use parquet::bloom_filter::Sbbf;
use parquet::file::metadata::{KeyValue, PageIndexPolicy, ParquetMetaData};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::Statistics;
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
/// several times over).
fn strings<'e>(values: impl Iterator<Item = Option<&'e str>> + Clone) -> ArrayRef {
    let (rows, bytes) = values.clone().fold((0, 0), |(rows, bytes), value| {
        (rows + 1, bytes + value.map_or(0, str::len))
    });
    let mut builder = StringBuilder::with_capacity(rows, bytes);
    for value in values {
        builder.append_option(value);
    }
    Arc::new(builder.finish())
}

fn to_batch(events: &[ApiCallRef<'_>], order: &[u32]) -> Result<RecordBatch, ArchiveError> {
    let rows = || order.iter().map(|index| &events[*index as usize]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows().map(|event| event.ts_us))
                .with_timezone("UTC"),
        ),
        strings(rows().map(|event| Some(event.merchant.as_ref()))),
        strings(rows().map(|event| Some(event.api.as_ref()))),
        Arc::new(Int32Array::from_iter_values(
            rows().map(|event| i32::from(event.status)),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows().map(|event| event.latency_ms),
        )),
        strings(rows().map(|event| Some(event.corr_id.as_ref()))),
        strings(rows().map(|event| event.partner.as_deref())),
        strings(rows().map(|event| event.method.as_deref())),
        strings(rows().map(|event| event.path.as_deref())),
        strings(rows().map(|event| event.host.as_deref())),
        strings(rows().map(|event| event.region.as_deref())),
        strings(rows().map(|event| event.attributes.as_deref())),
    ];
    RecordBatch::try_new(schema(), columns)
        .map_err(|error| ArchiveError::Parquet(error.to_string()))
}

/// The segment order of `events` (hour, merchant, ts, corr_id) as indices into it; events
/// are not moved. Each distinct merchant is compared only while sorting the distinct
/// merchants, and events are then ordered by the merchant's rank.
pub fn segment_order(events: &[ApiCallRef<'_>]) -> Vec<u32> {
    let mut ids: rustc_hash::FxHashMap<&str, u32> = rustc_hash::FxHashMap::default();
    let merchant_ids: Vec<u32> = events
        .iter()
        .map(|event| {
            let next = ids.len() as u32;
            *ids.entry(event.merchant.as_ref()).or_insert(next)
        })
        .collect();
    let mut distinct: Vec<(&str, u32)> = ids.into_iter().collect();
    distinct.sort_unstable();
    let mut rank_of_id = vec![0u32; distinct.len()];
    for (rank, (_, id)) in distinct.iter().enumerate() {
        rank_of_id[*id as usize] = rank as u32;
    }
    let mut keyed: Vec<(i64, u32, i64, u32)> = events
        .iter()
        .zip(&merchant_ids)
        .enumerate()
        .map(|(index, (event, id))| {
            (
                event.ts_us.div_euclid(3_600_000_000),
                rank_of_id[*id as usize],
                event.ts_us,
                index as u32,
            )
        })
        .collect();
    keyed.sort_unstable_by(|left, right| {
        (left.0, left.1, left.2)
            .cmp(&(right.0, right.1, right.2))
            .then_with(|| {
                events[left.3 as usize]
                    .corr_id
                    .cmp(&events[right.3 as usize].corr_id)
            })
    });
    keyed.into_iter().map(|(_, _, _, index)| index).collect()
}

/// Writes the `events` that `order` lists, in that order (all of one hour, in
/// [`segment_order`]), to `path`, fsynced.
pub fn write(
    path: &Path,
    hour: i64,
    events: &[ApiCallRef<'_>],
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
    let rows = || order.iter().map(|index| &events[*index as usize]);
    Ok(SegmentInfo {
        crc32,
        file: path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        hour,
        rows: order.len() as u64,
        bytes,
        min_ts_us: rows().map(|event| event.ts_us).min().unwrap_or_default(),
        max_ts_us: rows().map(|event| event.ts_us).max().unwrap_or_default(),
        min_merchant: rows()
            .next()
            .map(|event| event.merchant.to_string())
            .unwrap_or_default(),
        max_merchant: rows()
            .next_back()
            .map(|event| event.merchant.to_string())
            .unwrap_or_default(),
    })
}

/// Footers (and page indexes) of recently read segments, so a lookup does not parse them
/// again, and the correlation-id bloom filters of their row groups, so a lookup does not read
/// them again. Bounded: past [`METADATA_CACHE_ENTRIES`] footers the footers start over; past
/// [`BLOOM_CACHE_BYTES`] of bloom filters the segments cached first are dropped.
#[derive(Debug, Default)]
pub struct MetadataCache {
    entries: std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, ArrowReaderMetadata>>,
    blooms: std::sync::Mutex<BloomCache>,
}

/// Bloom filters by segment, then row group (`None` inside: read, and the row group has none).
/// Past its budget the segment cached first goes first.
#[derive(Debug, Default)]
struct BloomCache {
    segments: std::collections::HashMap<std::path::PathBuf, Vec<Option<Option<Arc<Sbbf>>>>>,
    order: std::collections::VecDeque<std::path::PathBuf>,
    bytes: usize,
}

impl BloomCache {
    fn segment_bytes(slots: &[Option<Option<Arc<Sbbf>>>]) -> usize {
        slots
            .iter()
            .flatten()
            .flatten()
            .map(|bloom| bloom_bytes(bloom))
            .sum()
    }

    fn remove(&mut self, path: &Path) {
        if let Some(removed) = self.segments.remove(path) {
            self.bytes = self.bytes.saturating_sub(Self::segment_bytes(&removed));
            self.order.retain(|cached| cached != path);
        }
    }

    fn make_room(&mut self, size: usize) {
        while self.bytes + size > BLOOM_CACHE_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(removed) = self.segments.remove(&oldest) {
                self.bytes = self.bytes.saturating_sub(Self::segment_bytes(&removed));
            }
        }
    }
}

const METADATA_CACHE_ENTRIES: usize = 512;
/// A day of 50 million events has about 100 MB of correlation-id bloom filters.
const BLOOM_CACHE_BYTES: usize = 256 * 1024 * 1024;

impl MetadataCache {
    fn get(&self, path: &Path) -> Option<ArrowReaderMetadata> {
        self.entries.lock().ok()?.get(path).cloned()
    }

    fn insert(&self, path: &Path, metadata: ArrowReaderMetadata) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= METADATA_CACHE_ENTRIES {
                entries.clear();
            }
            entries.insert(path.to_owned(), metadata);
        }
    }

    /// Parses and keeps a segment's footer, page index and correlation-id bloom filters
    /// ahead of the first lookup.
    pub fn preload(&self, path: &Path) -> Result<(), ArchiveError> {
        let corrupt = |error: parquet::errors::ParquetError| ArchiveError::Corrupt {
            path: path.to_owned(),
            detail: error.to_string(),
        };
        let file =
            File::open(path).map_err(|source| ArchiveError::io("open segment", path, source))?;
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let loaded = ArrowReaderMetadata::load(&file, options).map_err(corrupt)?;
        self.insert(path, loaded.clone());
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, loaded);
        let row_groups = builder.metadata().num_row_groups();
        let Some(corr_column) = builder
            .parquet_schema()
            .columns()
            .iter()
            .position(|column| column.name() == "corr_id")
        else {
            return Ok(());
        };
        for row_group in 0..row_groups {
            self.bloom_or_load(&builder, path, row_group, corr_column)
                .map_err(corrupt)?;
        }
        Ok(())
    }

    /// The correlation-id bloom filter of a row group, from memory or else read from the file
    /// and kept.
    fn bloom_or_load(
        &self,
        builder: &ParquetRecordBatchReaderBuilder<File>,
        path: &Path,
        row_group: usize,
        corr_column: usize,
    ) -> Result<Option<Arc<Sbbf>>, parquet::errors::ParquetError> {
        if let Some(cached) = self.bloom(path, row_group) {
            return Ok(cached);
        }
        let loaded = builder
            .get_row_group_column_bloom_filter(row_group, corr_column)?
            .map(Arc::new);
        let row_groups = builder.metadata().num_row_groups();
        self.insert_bloom(path, row_group, row_groups, loaded.clone());
        Ok(loaded)
    }

    /// Forgets a segment that is gone or replaced.
    pub fn remove(&self, path: &Path) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(path);
        }
        if let Ok(mut blooms) = self.blooms.lock() {
            blooms.remove(path);
        }
    }

    /// The bloom filter of a row group, if it was read before: `Some(None)` when the row
    /// group has none.
    fn bloom(&self, path: &Path, row_group: usize) -> Option<Option<Arc<Sbbf>>> {
        self.blooms
            .lock()
            .ok()?
            .segments
            .get(path)?
            .get(row_group)?
            .clone()
    }

    fn insert_bloom(
        &self,
        path: &Path,
        row_group: usize,
        row_groups: usize,
        bloom: Option<Arc<Sbbf>>,
    ) {
        let Ok(mut blooms) = self.blooms.lock() else {
            return;
        };
        let size = bloom.as_deref().map_or(0, bloom_bytes);
        blooms.make_room(size);
        if !blooms.segments.contains_key(path) {
            blooms.order.push_back(path.to_owned());
        }
        let slots = blooms
            .segments
            .entry(path.to_owned())
            .or_insert_with(|| vec![None; row_groups]);
        if let Some(slot) = slots.get_mut(row_group)
            && slot.is_none()
        {
            *slot = Some(bloom);
            blooms.bytes += size;
        }
    }
}

/// Which rows of a segment a query wants.
#[derive(Debug, Clone, Default)]
pub struct RowQuery<'a> {
    pub corr_id: Option<&'a str>,
    pub merchant: Option<&'a str>,
    pub from_us: i64,
    pub to_us: i64,
}

fn byte_range(statistics: Option<&Statistics>) -> Option<(Vec<u8>, Vec<u8>)> {
    match statistics {
        Some(Statistics::ByteArray(values)) => Some((
            values.min_opt()?.data().to_vec(),
            values.max_opt()?.data().to_vec(),
        )),
        _ => None,
    }
}

fn i64_range(statistics: Option<&Statistics>) -> Option<(i64, i64)> {
    match statistics {
        Some(Statistics::Int64(values)) => Some((*values.min_opt()?, *values.max_opt()?)),
        _ => None,
    }
}

/// Reads the rows of `path` that match `query`: row groups are pruned by merchant and time
/// statistics and by the correlation-id bloom filter, then only matching rows are decoded.
pub fn read(
    path: &Path,
    query: &RowQuery<'_>,
    cache: &MetadataCache,
) -> Result<Vec<ApiCall>, ArchiveError> {
    let parquet_error = |error: parquet::errors::ParquetError| ArchiveError::Corrupt {
        path: path.to_owned(),
        detail: error.to_string(),
    };
    let file = File::open(path).map_err(|source| ArchiveError::io("open segment", path, source))?;
    let reader_metadata = match cache.get(path) {
        Some(cached) => cached,
        None => {
            let options =
                ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
            let loaded = ArrowReaderMetadata::load(&file, options).map_err(parquet_error)?;
            cache.insert(path, loaded.clone());
            loaded
        }
    };
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, reader_metadata);
    let metadata = builder.metadata().clone();
    let descriptor = builder.parquet_schema();
    let column = |name: &str| {
        descriptor
            .columns()
            .iter()
            .position(|column| column.name() == name)
    };
    let (Some(ts_column), Some(merchant_column), Some(corr_column)) =
        (column("ts"), column("merchant"), column("corr_id"))
    else {
        return Err(ArchiveError::Corrupt {
            path: path.to_owned(),
            detail: "segment lacks the archive columns".into(),
        });
    };
    let mut row_groups = Vec::new();
    for (index, row_group) in metadata.row_groups().iter().enumerate() {
        if let Some((low, high)) = i64_range(row_group.column(ts_column).statistics())
            && (high < query.from_us || low >= query.to_us)
        {
            continue;
        }
        if let Some(merchant) = query.merchant
            && let Some((low, high)) = byte_range(row_group.column(merchant_column).statistics())
            && (merchant.as_bytes() < low.as_slice() || merchant.as_bytes() > high.as_slice())
        {
            continue;
        }
        if let Some(corr_id) = query.corr_id {
            let bloom = cache
                .bloom_or_load(&builder, path, index, corr_column)
                .map_err(parquet_error)?;
            if bloom.is_some_and(|bloom| !bloom.check(corr_id)) {
                continue;
            }
        }
        row_groups.push(index);
    }
    if row_groups.is_empty() {
        return Ok(Vec::new());
    }
    let selection = query
        .merchant
        .map(|merchant| merchant_pages(&metadata, &row_groups, merchant_column, merchant));
    // The correlation id first: it keeps one row in thousands, so time and merchant are
    // then decoded only in the pages of the rows it kept.
    let mut predicates: Vec<Box<dyn parquet::arrow::arrow_reader::ArrowPredicate>> = Vec::new();
    if let Some(wanted) = query.corr_id.map(str::to_owned) {
        let mask = ProjectionMask::leaves(descriptor, [corr_column]);
        predicates.push(Box::new(ArrowPredicateFn::new(
            mask,
            move |batch: RecordBatch| {
                let corr_ids = batch.column(0).as_string::<i32>();
                Ok(corr_ids
                    .iter()
                    .map(|value| Some(value == Some(wanted.as_str())))
                    .collect::<BooleanArray>())
            },
        )));
    }
    let wanted_merchant = query.merchant.map(str::to_owned);
    let (from_us, to_us) = (query.from_us, query.to_us);
    let mask = ProjectionMask::leaves(descriptor, [ts_column, merchant_column]);
    predicates.push(Box::new(ArrowPredicateFn::new(
        mask,
        move |batch: RecordBatch| {
            let ts = batch.column(0).as_primitive::<TimestampMicrosecondType>();
            let merchants = batch.column(1).as_string::<i32>();
            Ok((0..batch.num_rows())
                .map(|row| {
                    let in_time = (from_us..to_us).contains(&ts.value(row));
                    let merchant_ok = wanted_merchant
                        .as_deref()
                        .is_none_or(|merchant| merchants.value(row) == merchant);
                    Some(in_time && merchant_ok)
                })
                .collect::<BooleanArray>())
        },
    )));
    let mut builder = builder
        .with_row_groups(row_groups)
        .with_row_filter(RowFilter::new(predicates));
    if let Some(selection) = selection {
        builder = builder.with_row_selection(selection);
    }
    let reader = builder.build().map_err(parquet_error)?;
    let mut events = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|error| ArchiveError::Corrupt {
            path: path.to_owned(),
            detail: error.to_string(),
        })?;
        append_events(&batch, &mut events).map_err(|detail| ArchiveError::Corrupt {
            path: path.to_owned(),
            detail,
        })?;
    }
    Ok(events)
}

/// The rows of `row_groups` (in that order, numbered across them) that lie in pages of the
/// merchant column whose value range holds `merchant`, from the page index. A row group
/// without a page index is selected whole.
fn merchant_pages(
    metadata: &ParquetMetaData,
    row_groups: &[usize],
    merchant_column: usize,
    merchant: &str,
) -> RowSelection {
    let wanted = merchant.as_bytes();
    let mut ranges = Vec::new();
    let mut first_row = 0usize;
    for &row_group in row_groups {
        let rows = metadata.row_group(row_group).num_rows() as usize;
        let page_index = metadata.page_index_for_row_group(row_group);
        let pages = match (
            page_index.column_index(merchant_column),
            page_index.offset_index(merchant_column),
        ) {
            (Some(ColumnIndexMetaData::BYTE_ARRAY(values)), Some(offsets)) => {
                Some((values, offsets))
            }
            _ => None,
        };
        let Some((values, offsets)) = pages else {
            ranges.push(first_row..first_row + rows);
            first_row += rows;
            continue;
        };
        let locations = offsets.page_locations();
        for (page, location) in locations.iter().enumerate() {
            let start = location.first_row_index as usize;
            let end = locations
                .get(page + 1)
                .map_or(rows, |next| next.first_row_index as usize);
            let holds = match (values.min_value(page), values.max_value(page)) {
                (Some(low), Some(high)) => low <= wanted && wanted <= high,
                // No statistics for the page: it may hold the merchant.
                _ => !values.is_null_page(page),
            };
            if holds && start < end {
                ranges.push(first_row + start..first_row + end);
            }
        }
        first_row += rows;
    }
    RowSelection::from_consecutive_ranges(ranges.into_iter(), first_row)
}

fn append_events(batch: &RecordBatch, events: &mut Vec<ApiCall>) -> Result<(), String> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| format!("missing column {name}"))
    };
    let ts = column("ts")?.as_primitive::<TimestampMicrosecondType>();
    let merchant = column("merchant")?.as_string::<i32>();
    let api = column("api")?.as_string::<i32>();
    let status = column("status")?.as_primitive::<Int32Type>();
    let latency = column("latency_ms")?.as_primitive::<Float64Type>();
    let corr_id = column("corr_id")?.as_string::<i32>();
    let optional: Vec<&arrow_array::StringArray> =
        ["partner", "method", "path", "host", "region", "attributes"]
            .iter()
            .map(|name| column(name).map(|array| array.as_string::<i32>()))
            .collect::<Result<_, _>>()?;
    let text = |array: &StringArray, row: usize| {
        (!array.is_null(row)).then(|| array.value(row).to_owned())
    };
    for row in 0..batch.num_rows() {
        events.push(ApiCall {
            ts_us: ts.value(row),
            merchant: merchant.value(row).to_owned(),
            api: api.value(row).to_owned(),
            status: u16::try_from(status.value(row))
                .map_err(|_| "status out of range".to_owned())?,
            latency_ms: latency.value(row),
            corr_id: corr_id.value(row).to_owned(),
            partner: text(optional[0], row),
            method: text(optional[1], row),
            path: text(optional[2], row),
            host: text(optional[3], row),
            region: text(optional[4], row),
            attributes: text(optional[5], row),
        });
    }
    Ok(())
}

fn bloom_bytes(bloom: &Sbbf) -> usize {
    // A block is eight 32-bit words.
    bloom.num_blocks() * 32
}
