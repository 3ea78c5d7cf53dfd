//! Reading a segment: the rows a [`RowQuery`] wants, with row groups pruned by statistics and
//! the bloom filter, and pages by the merchant column's page index.

use std::fs::File;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, TimestampMicrosecondType};
use arrow_array::{Array, BooleanArray, RecordBatch, StringArray};
use mm_model::ApiCall;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
    RowFilter, RowSelection,
};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::statistics::Statistics;

use super::MetadataCache;
use crate::ArchiveError;

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
