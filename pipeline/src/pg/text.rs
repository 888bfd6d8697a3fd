//! Arrow values in PostgreSQL's text format, and the PostgreSQL type of each Arrow type.
//!
//! Decimals are written from their unscaled integer and scale (never through a float), so
//! a `Decimal128(38, 9)` keeps all 38 digits; timestamps with a time zone are written as
//! instants in UTC (`2026-10-26 04:06:37.362+00`, the server's `TimeZone` being UTC),
//! with at most 6 fractional digits (PostgreSQL's precision; nanoseconds are truncated).
//! Types without a native mapping are cast to text by Arrow and sent as `text`.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal32Type, Decimal64Type, Decimal128Type, Decimal256Type,
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::error::ArrowError;
use pgwire::api::Type;
use std::fmt::Write;
use std::sync::Arc;

/// The PostgreSQL type a column of `data_type` is described as.
pub fn pg_type(data_type: &DataType) -> Type {
    match data_type {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 => Type::INT8,
        DataType::UInt64 => Type::NUMERIC,
        DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => Type::NUMERIC,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Type::BYTEA,
        DataType::Dictionary(_, value) => pg_type(value),
        _ => Type::TEXT,
    }
}

/// The Arrow type a parameter declared as `pg` by the client is bound as, when the query
/// itself does not determine it.
pub fn arrow_type(pg: &Type) -> DataType {
    match *pg {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::NUMERIC => om_model::schema::DECIMAL,
        Type::TIMESTAMPTZ => om_model::schema::timestamp(),
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::DATE => DataType::Date32,
        _ => DataType::Utf8,
    }
}

/// A column ready for [`write_value`]: natively written types as they are, dictionaries
/// as their values, anything else cast to text.
pub fn prepare(column: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    match column.data_type() {
        DataType::Dictionary(_, value) => prepare(&cast(column, value)?),
        DataType::Null
        | DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..)
        | DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Timestamp(..)
        | DataType::Date32
        | DataType::Date64
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView => Ok(Arc::clone(column)),
        _ => cast(column, &DataType::Utf8),
    }
}

/// Appends the text of `column[row]` (not null, and [`prepare`]d) to `out`.
pub fn write_value(column: &dyn Array, row: usize, out: &mut String) -> Result<(), ArrowError> {
    let bad = |what: &str| ArrowError::InvalidArgumentError(format!("{what} out of range"));
    match column.data_type() {
        DataType::Boolean => out.push(if column.as_boolean().value(row) {
            't'
        } else {
            'f'
        }),
        DataType::Int8 => display(column.as_primitive::<Int8Type>().value(row), out),
        DataType::Int16 => display(column.as_primitive::<Int16Type>().value(row), out),
        DataType::Int32 => display(column.as_primitive::<Int32Type>().value(row), out),
        DataType::Int64 => display(column.as_primitive::<Int64Type>().value(row), out),
        DataType::UInt8 => display(column.as_primitive::<UInt8Type>().value(row), out),
        DataType::UInt16 => display(column.as_primitive::<UInt16Type>().value(row), out),
        DataType::UInt32 => display(column.as_primitive::<UInt32Type>().value(row), out),
        DataType::UInt64 => display(column.as_primitive::<UInt64Type>().value(row), out),
        DataType::Float32 => float(
            f64::from(column.as_primitive::<Float32Type>().value(row)),
            out,
        ),
        DataType::Float64 => float(column.as_primitive::<Float64Type>().value(row), out),
        DataType::Decimal32(_, s) => {
            decimal(&column.as_primitive::<Decimal32Type>().value(row), *s, out)
        }
        DataType::Decimal64(_, s) => {
            decimal(&column.as_primitive::<Decimal64Type>().value(row), *s, out)
        }
        DataType::Decimal128(_, s) => {
            decimal(&column.as_primitive::<Decimal128Type>().value(row), *s, out)
        }
        DataType::Decimal256(_, s) => {
            decimal(&column.as_primitive::<Decimal256Type>().value(row), *s, out)
        }
        DataType::Utf8 => out.push_str(column.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => out.push_str(column.as_string::<i64>().value(row)),
        DataType::Utf8View => out.push_str(column.as_string_view().value(row)),
        DataType::Timestamp(unit, tz) => {
            let v = match unit {
                TimeUnit::Second => column.as_primitive::<TimestampSecondType>().value(row),
                TimeUnit::Millisecond => {
                    column.as_primitive::<TimestampMillisecondType>().value(row)
                }
                TimeUnit::Microsecond => {
                    column.as_primitive::<TimestampMicrosecondType>().value(row)
                }
                TimeUnit::Nanosecond => column.as_primitive::<TimestampNanosecondType>().value(row),
            };
            timestamp(v, *unit, tz.is_some(), out).ok_or_else(|| bad("timestamp"))?
        }
        DataType::Date32 => {
            let days = column.as_primitive::<Date32Type>().value(row);
            date(i64::from(days) * 86_400_000, out).ok_or_else(|| bad("date"))?
        }
        DataType::Date64 => {
            date(column.as_primitive::<Date64Type>().value(row), out).ok_or_else(|| bad("date"))?
        }
        DataType::Binary => bytea(column.as_binary::<i32>().value(row), out),
        DataType::LargeBinary => bytea(column.as_binary::<i64>().value(row), out),
        DataType::BinaryView => bytea(column.as_binary_view().value(row), out),
        other => {
            return Err(ArrowError::NotYetImplemented(format!(
                "text format of {other} (not prepared)"
            )));
        }
    }
    Ok(())
}

fn display(v: impl std::fmt::Display, out: &mut String) {
    write!(out, "{v}").expect("writing to a String");
}

/// PostgreSQL's spelling of the special values; otherwise the shortest text that reads
/// back as the same float.
fn float(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        write!(out, "{v}").expect("writing to a String");
    }
}

/// `unscaled * 10^-scale` with exactly `scale` fractional digits (as PostgreSQL prints a
/// `numeric(p, s)`).
fn decimal(unscaled: &dyn std::fmt::Display, scale: i8, out: &mut String) {
    let text = unscaled.to_string();
    let (sign, digits) = match text.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", text.as_str()),
    };
    out.push_str(sign);
    if scale <= 0 {
        out.push_str(digits);
        if digits != "0" {
            out.extend(std::iter::repeat_n('0', usize::from(scale.unsigned_abs())));
        }
        return;
    }
    let scale = usize::from(scale.unsigned_abs());
    if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', scale - digits.len()));
        out.push_str(digits);
    }
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]`, trailing fractional zeros dropped, `+00` when `utc`.
fn timestamp(v: i64, unit: TimeUnit, utc: bool, out: &mut String) -> Option<()> {
    let (per_second, nanos_per_unit) = match unit {
        TimeUnit::Second => (1, 0),
        TimeUnit::Millisecond => (1_000, 1_000_000),
        TimeUnit::Microsecond => (1_000_000, 1_000),
        TimeUnit::Nanosecond => (1_000_000_000, 1),
    };
    let secs = v.div_euclid(per_second);
    let nanos = u32::try_from(v.rem_euclid(per_second) * nanos_per_unit).ok()?;
    let t = chrono::DateTime::from_timestamp(secs, nanos)?;
    write!(out, "{}", t.format("%Y-%m-%d %H:%M:%S")).ok()?;
    let micros = nanos / 1_000;
    if micros != 0 {
        let frac = format!("{micros:06}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    if utc {
        out.push_str("+00");
    }
    Some(())
}

/// `YYYY-MM-DD` of a time in milliseconds since the epoch.
fn date(millis: i64, out: &mut String) -> Option<()> {
    let t = chrono::DateTime::from_timestamp_millis(millis)?;
    write!(out, "{}", t.format("%Y-%m-%d")).ok()
}

/// PostgreSQL's hex format: `\x` and two lowercase digits per byte.
fn bytea(bytes: &[u8], out: &mut String) {
    out.push_str("\\x");
    for b in bytes {
        write!(out, "{b:02x}").expect("writing to a String");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BinaryArray, BooleanArray, Date32Array, Decimal128Array, DictionaryArray, Float64Array,
        Int32Array, StringViewArray, TimestampMicrosecondArray, TimestampNanosecondArray,
    };

    fn texts(column: ArrayRef) -> Vec<Option<String>> {
        let column = prepare(&column).unwrap();
        (0..column.len())
            .map(|i| {
                column.is_valid(i).then(|| {
                    let mut s = String::new();
                    write_value(column.as_ref(), i, &mut s).unwrap();
                    s
                })
            })
            .collect()
    }

    fn some(values: &[&str]) -> Vec<Option<String>> {
        values.iter().map(|v| Some(v.to_string())).collect()
    }

    #[test]
    fn decimals_keep_every_digit() {
        let column = Decimal128Array::from(vec![
            12_500_000_000,
            -1,
            0,
            i128::MAX / 10,
            -1_234_567_890_123_456_789_012_345_678_901_234_567,
        ])
        .with_precision_and_scale(38, 9)
        .unwrap();
        assert_eq!(
            texts(Arc::new(column)),
            some(&[
                "12.500000000",
                "-0.000000001",
                "0.000000000",
                "17014118346046923173168730371.588410572",
                "-1234567890123456789012345678.901234567",
            ])
        );
        let negative_scale = Decimal128Array::from(vec![12, 0])
            .with_precision_and_scale(10, -3)
            .unwrap();
        assert_eq!(texts(Arc::new(negative_scale)), some(&["12000", "0"]));
        assert_eq!(pg_type(&DataType::Decimal128(38, 9)), Type::NUMERIC);
    }

    #[test]
    fn timestamps_are_utc_instants_with_microseconds() {
        let utc = TimestampMicrosecondArray::from(vec![
            Some(1_792_987_239_447_000),
            Some(0),
            Some(-1),
            None,
        ])
        .with_timezone("UTC");
        assert_eq!(
            texts(Arc::new(utc)),
            vec![
                Some("2026-10-26 04:00:39.447+00".to_string()),
                Some("1970-01-01 00:00:00+00".to_string()),
                Some("1969-12-31 23:59:59.999999+00".to_string()),
                None,
            ]
        );
        let naive = TimestampNanosecondArray::from(vec![1_500_000_123]);
        assert_eq!(texts(Arc::new(naive)), some(&["1970-01-01 00:00:01.5"]));
        assert_eq!(pg_type(&om_model::schema::timestamp()), Type::TIMESTAMPTZ);
        assert_eq!(
            pg_type(&DataType::Timestamp(TimeUnit::Nanosecond, None)),
            Type::TIMESTAMP
        );
    }

    #[test]
    fn other_types() {
        assert_eq!(
            texts(Arc::new(BooleanArray::from(vec![true, false]))),
            some(&["t", "f"])
        );
        assert_eq!(
            texts(Arc::new(Int32Array::from(vec![-7, 42]))),
            some(&["-7", "42"])
        );
        assert_eq!(
            texts(Arc::new(Float64Array::from(vec![
                0.1,
                -2.5e300,
                f64::NAN,
                f64::NEG_INFINITY
            ]))),
            some(&["0.1", &(-2.5e300f64).to_string(), "NaN", "-Infinity"])
        );
        assert_eq!(
            texts(Arc::new(StringViewArray::from(vec!["a b", ""]))),
            some(&["a b", ""])
        );
        assert_eq!(
            texts(Arc::new(Date32Array::from(vec![20_000, -1]))),
            some(&["2024-10-04", "1969-12-31"])
        );
        assert_eq!(
            texts(Arc::new(BinaryArray::from(vec![&[0u8, 171][..]]))),
            some(&["\\x00ab"])
        );
        let dict: DictionaryArray<Int32Type> = vec!["x", "y", "x"].into_iter().collect();
        assert_eq!(pg_type(dict.data_type()), Type::TEXT);
        assert_eq!(texts(Arc::new(dict)), some(&["x", "y", "x"]));
        assert_eq!(pg_type(&DataType::UInt64), Type::NUMERIC);
        assert_eq!(pg_type(&DataType::Int64), Type::INT8);
    }
}
