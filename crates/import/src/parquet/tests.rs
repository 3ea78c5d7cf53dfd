//! The Parquet conversion's tests.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int8Array, Int64Array, LargeStringArray,
    StringArray, StringViewArray, TimestampMillisecondArray, TimestampNanosecondArray, UInt16Array,
    UInt64Array,
};
use arrow_schema::{Field as SchemaField, Schema};
use serde_json::{Map, Value};

use super::*;

/// A value as versions before this one made it: a JSON value per row and column.
fn as_a_value(column: &dyn Array, row: usize) -> Value {
    use arrow_array::types::*;
    match column.data_type() {
        DataType::Utf8 => Value::from(column.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => Value::from(column.as_string::<i64>().value(row)),
        DataType::Utf8View => Value::from(column.as_string_view().value(row)),
        DataType::Boolean => Value::from(column.as_boolean().value(row)),
        DataType::Int8 => Value::from(column.as_primitive::<Int8Type>().value(row)),
        DataType::Int32 => Value::from(column.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => Value::from(column.as_primitive::<Int64Type>().value(row)),
        DataType::UInt16 => Value::from(column.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt64 => Value::from(column.as_primitive::<UInt64Type>().value(row)),
        DataType::Float32 => {
            Value::from(f64::from(column.as_primitive::<Float32Type>().value(row)))
        }
        DataType::Float64 => Value::from(column.as_primitive::<Float64Type>().value(row)),
        DataType::Timestamp(TimeUnit::Second, _) => Value::from(mm_model::time::format_rfc3339(
            column
                .as_primitive::<TimestampSecondType>()
                .value(row)
                .saturating_mul(1_000_000),
        )),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Value::from(mm_model::time::format_rfc3339(
                column.as_primitive::<TimestampMicrosecondType>().value(row),
            ))
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            Value::from(mm_model::time::format_rfc3339(
                column
                    .as_primitive::<TimestampMillisecondType>()
                    .value(row)
                    .saturating_mul(1_000),
            ))
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            Value::from(mm_model::time::format_rfc3339(
                column.as_primitive::<TimestampNanosecondType>().value(row) / 1_000,
            ))
        }
        other => panic!("the test has no column of type {other}"),
    }
}

/// The lines as versions before this one wrote them: a JSON map per row (keys in byte
/// order, a later column of a name replacing an earlier one), serialized.
fn as_a_map_writes_them(batch: &RecordBatch) -> Vec<u8> {
    let mut out = Vec::new();
    let schema = batch.schema();
    for row in 0..batch.num_rows() {
        let mut object = Map::new();
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            if !column.is_null(row) {
                object.insert(field.name().clone(), as_a_value(column.as_ref(), row));
            }
        }
        serde_json::to_writer(&mut out, &object).expect("serialized");
        out.push(b'\n');
    }
    out
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let fields: Vec<SchemaField> = columns
        .iter()
        .map(|(name, array)| SchemaField::new(*name, array.data_type().clone(), true))
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns.into_iter().map(|(_, array)| array).collect(),
    )
    .expect("batch")
}

#[test]
fn rows_are_written_as_earlier_versions_wrote_them_so_imported_files_keep_their_identity() {
    let batch = batch(vec![
        (
            "zeta",
            Arc::new(Int8Array::from(vec![Some(-3), None, Some(7)])),
        ),
        (
            "text",
            Arc::new(StringArray::from(vec![
                Some("plain"),
                Some("quote \" backslash \\ tab \t bell \u{7} é ☃"),
                None,
            ])),
        ),
        (
            "large",
            Arc::new(LargeStringArray::from(vec![Some("a"), None, Some("b")])),
        ),
        (
            "view",
            Arc::new(StringViewArray::from(vec![
                Some("a view longer than twelve bytes"),
                Some(""),
                None,
            ])),
        ),
        (
            "flag",
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
        ),
        (
            "big",
            Arc::new(Int64Array::from(vec![
                Some(i64::MIN),
                Some(i64::MAX),
                Some(0),
            ])),
        ),
        (
            "ubig",
            Arc::new(UInt64Array::from(vec![Some(u64::MAX), None, Some(1)])),
        ),
        (
            "small",
            Arc::new(UInt16Array::from(vec![Some(201), Some(503), None])),
        ),
        (
            "latency",
            Arc::new(Float64Array::from(vec![
                Some(516.86),
                Some(f64::NAN),
                Some(1e300),
            ])),
        ),
        (
            "single",
            Arc::new(Float32Array::from(vec![
                Some(0.1),
                Some(f32::INFINITY),
                None,
            ])),
        ),
        (
            "ms",
            Arc::new(
                TimestampMillisecondArray::from(vec![Some(1_764_000_000_123), None, Some(0)])
                    .with_timezone("UTC"),
            ),
        ),
        (
            "ns",
            Arc::new(TimestampNanosecondArray::from(vec![
                Some(1_764_000_000_123_456_789),
                Some(-1_500),
                None,
            ])),
        ),
        // The archive's own types.
        (
            "status",
            Arc::new(arrow_array::Int32Array::from(vec![
                Some(201),
                None,
                Some(-1),
            ])),
        ),
        (
            "ts",
            Arc::new(
                arrow_array::TimestampMicrosecondArray::from(vec![
                    Some(1_764_000_000_123_456),
                    Some(i64::MAX),
                    None,
                ])
                .with_timezone("UTC"),
            ),
        ),
        (
            "secs",
            Arc::new(arrow_array::TimestampSecondArray::from(vec![
                Some(1_764_000_000),
                None,
                Some(i64::MIN),
            ])),
        ),
        // Named alike: the later one not null wins, as in a map.
        (
            "text",
            Arc::new(StringArray::from(vec![None, Some("later"), None])),
        ),
        (
            "attributes",
            Arc::new(StringArray::from(vec![Some(r#"{"sdk":"go"}"#), None, None])),
        ),
    ]);
    let mut fast = Vec::new();
    write_rows(&batch, Lines::Columns, &mut fast).expect("written");
    assert_eq!(
        String::from_utf8(fast).expect("utf-8"),
        String::from_utf8(as_a_map_writes_them(&batch)).expect("utf-8")
    );
}

#[test]
fn an_archived_records_attributes_become_its_fields_again() {
    let batch = batch(vec![
        (
            "merchant",
            Arc::new(StringArray::from(vec![
                "m1", "m2", "m3", "m4", "m5", "m6", "m7",
            ])),
        ),
        (
            "attributes",
            Arc::new(StringArray::from(vec![
                Some(r#"{"sdk_version":"java/4.2.1","note":"a \"quoted\" ü"}"#),
                None,
                Some("{}"),
                Some("not an object"),
                // A key named like a column: kept whole, as a field.
                Some(r#"{"api":"/shadow","x":1}"#),
                // Named so only inside a string: spliced.
                Some(r#"{"note":"say \"api\": no"}"#),
                // A nested value kept pretty-printed: one line still.
                Some("{\"ctx\":{\n  \"a\": 1\r\n}}"),
            ])),
        ),
        (
            "api",
            Arc::new(StringArray::from(vec![
                "/a", "/b", "/c", "/d", "/e", "/f", "/g",
            ])),
        ),
    ]);
    let mut out = Vec::new();
    write_rows(&batch, Lines::Records, &mut out).expect("written");
    let lines: Vec<&str> = std::str::from_utf8(&out).expect("utf-8").lines().collect();
    assert_eq!(
        lines,
        [
            r#"{"sdk_version":"java/4.2.1","note":"a \"quoted\" ü","api":"/a","merchant":"m1"}"#,
            r#"{"api":"/b","merchant":"m2"}"#,
            r#"{"api":"/c","merchant":"m3"}"#,
            r#"{"api":"/d","attributes":"not an object","merchant":"m4"}"#,
            r#"{"api":"/e","attributes":"{\"api\":\"/shadow\",\"x\":1}","merchant":"m5"}"#,
            r#"{"note":"say \"api\": no","api":"/f","merchant":"m6"}"#,
            r#"{"ctx":{   "a": 1  },"api":"/g","merchant":"m7"}"#,
        ]
    );
    // Each line is JSON.
    for line in lines {
        serde_json::from_str::<Value>(line).expect(line);
    }
}

#[test]
fn an_unsupported_column_fails_only_where_it_has_a_value() {
    let dates = |values: Vec<Option<i32>>| {
        batch(vec![(
            "when",
            Arc::new(arrow_array::Date32Array::from(values)) as ArrayRef,
        )])
    };
    // Null throughout: nothing to write, as earlier versions had it.
    let mut out = Vec::new();
    write_rows(&dates(vec![None, None]), Lines::Columns, &mut out).expect("all null");
    assert_eq!(out, b"{}\n{}\n");
    let error =
        write_rows(&dates(vec![None, Some(1)]), Lines::Columns, &mut out).expect_err("a date");
    assert_eq!(error, "column when: type Date32 is not supported");
}
