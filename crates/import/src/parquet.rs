//! Parquet input: each row becomes the JSON object of its columns (column name → value), one
//! per line, so it goes through the same field mapping and validation as NDJSON. Files the
//! archive wrote (and anything with the same column names) import as they are.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value};

use crate::ImportError;

/// The four bytes a Parquet file starts with.
pub const MAGIC: &[u8; 4] = b"PAR1";

/// The rows of the Parquet file at `path` as NDJSON, written by a thread into a pipe; `read`
/// advances with the rows converted (as a share of the file's size).
pub fn ndjson(
    path: &Path,
    size: u64,
    read: Arc<AtomicU64>,
) -> Result<std::io::PipeReader, ImportError> {
    let io = |action, error| ImportError::io(action, path, error);
    let file = std::fs::File::open(path).map_err(|error| io("opening", error))?;
    let parquet = |error: parquet::errors::ParquetError| ImportError::Input {
        path: path.to_owned(),
        detail: format!("reading Parquet: {error}"),
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet)?;
    let rows = builder.metadata().file_metadata().num_rows().max(1) as u64;
    let batches = builder.with_batch_size(8_192).build().map_err(parquet)?;
    let (reader, mut writer) = std::io::pipe().map_err(|error| io("opening a pipe for", error))?;
    let path = path.to_owned();
    std::thread::spawn(move || {
        let mut done = 0u64;
        let mut out = Vec::with_capacity(1 << 20);
        for batch in batches {
            let batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    // A line no parser accepts ends the import with the reason.
                    let _ = writeln!(
                        writer,
                        "\u{0}unreadable Parquet in {}: {error}",
                        path.display()
                    );
                    return;
                }
            };
            out.clear();
            if let Err(detail) = write_rows(&batch, &mut out) {
                let _ = writeln!(writer, "\u{0}{}: {detail}", path.display());
                return;
            }
            if writer.write_all(&out).is_err() {
                return;
            }
            done += batch.num_rows() as u64;
            read.store(size * done / rows, Ordering::Relaxed);
        }
    });
    Ok(reader)
}

/// Appends each row of `batch` as a JSON object and a newline.
fn write_rows(batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), String> {
    let schema = batch.schema();
    let columns: Vec<(&str, &dyn Array)> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| (field.name().as_str(), column.as_ref()))
        .collect();
    for row in 0..batch.num_rows() {
        let mut object = Map::with_capacity(columns.len());
        for (name, column) in &columns {
            if column.is_null(row) {
                continue;
            }
            object.insert((*name).to_owned(), value(*column, row, name)?);
        }
        serde_json::to_writer(&mut *out, &object).map_err(|error| error.to_string())?;
        out.push(b'\n');
    }
    Ok(())
}

fn value(column: &dyn Array, row: usize, name: &str) -> Result<Value, String> {
    Ok(match column.data_type() {
        DataType::Utf8 => Value::from(column.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => Value::from(column.as_string::<i64>().value(row)),
        DataType::Utf8View => Value::from(column.as_string_view().value(row)),
        DataType::Boolean => Value::from(column.as_boolean().value(row)),
        DataType::Int8 => Value::from(column.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => Value::from(column.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => Value::from(column.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => Value::from(column.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => Value::from(column.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => Value::from(column.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => Value::from(column.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => Value::from(column.as_primitive::<UInt64Type>().value(row)),
        DataType::Float32 => {
            Value::from(f64::from(column.as_primitive::<Float32Type>().value(row)))
        }
        DataType::Float64 => Value::from(column.as_primitive::<Float64Type>().value(row)),
        DataType::Timestamp(unit, _) => {
            use arrow_array::types::{
                TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
                TimestampSecondType,
            };
            let micros = match unit {
                TimeUnit::Second => column
                    .as_primitive::<TimestampSecondType>()
                    .value(row)
                    .saturating_mul(1_000_000),
                TimeUnit::Millisecond => column
                    .as_primitive::<TimestampMillisecondType>()
                    .value(row)
                    .saturating_mul(1_000),
                TimeUnit::Microsecond => {
                    column.as_primitive::<TimestampMicrosecondType>().value(row)
                }
                TimeUnit::Nanosecond => {
                    column.as_primitive::<TimestampNanosecondType>().value(row) / 1_000
                }
            };
            Value::from(mm_model::time::format_rfc3339(micros))
        }
        other => return Err(format!("column {name}: type {other} is not supported")),
    })
}
