//! Parameters sent in PostgreSQL's binary format (psycopg sends some types so, e.g.
//! `datetime`): decoded by the type the client declared into a DataFusion value, which the
//! caller casts to the type the query needs. Binary result columns are not produced.

use datafusion::common::ScalarValue;
use pgwire::api::Type;

/// Microseconds from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

/// The value of a binary parameter declared as `ty`; `Err` names what is wrong.
pub fn value(ty: &Type, bytes: &[u8]) -> Result<ScalarValue, String> {
    let fixed = |n: usize| -> Result<&[u8], String> {
        if bytes.len() == n {
            Ok(bytes)
        } else {
            Err(format!("{} bytes for a binary {}", bytes.len(), ty.name()))
        }
    };
    let be8 = |b: &[u8]| -> [u8; 8] { b.try_into().expect("length checked") };
    let be4 = |b: &[u8]| -> [u8; 4] { b.try_into().expect("length checked") };
    Ok(match *ty {
        Type::BOOL => ScalarValue::Boolean(Some(fixed(1)?[0] != 0)),
        Type::INT2 => ScalarValue::Int16(Some(i16::from_be_bytes([fixed(2)?[0], bytes[1]]))),
        Type::INT4 => ScalarValue::Int32(Some(i32::from_be_bytes(be4(fixed(4)?)))),
        Type::INT8 => ScalarValue::Int64(Some(i64::from_be_bytes(be8(fixed(8)?)))),
        Type::FLOAT4 => ScalarValue::Float32(Some(f32::from_be_bytes(be4(fixed(4)?)))),
        Type::FLOAT8 => ScalarValue::Float64(Some(f64::from_be_bytes(be8(fixed(8)?)))),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            ScalarValue::Utf8(Some(
                std::str::from_utf8(bytes)
                    .map_err(|_| "not valid UTF-8".to_string())?
                    .to_string(),
            ))
        }
        Type::TIMESTAMPTZ | Type::TIMESTAMP => {
            let micros = i64::from_be_bytes(be8(fixed(8)?))
                .checked_add(PG_EPOCH_MICROS)
                .ok_or("timestamp out of range")?;
            let tz = (*ty == Type::TIMESTAMPTZ).then(|| "UTC".into());
            ScalarValue::TimestampMicrosecond(Some(micros), tz)
        }
        Type::DATE => {
            let days = i32::from_be_bytes(be4(fixed(4)?))
                .checked_add(PG_EPOCH_DAYS)
                .ok_or("date out of range")?;
            ScalarValue::Date32(Some(days))
        }
        Type::NUMERIC => ScalarValue::Utf8(Some(numeric(bytes)?)),
        _ => {
            return Err(format!(
                "binary {} parameters are not supported; send it in text format",
                ty.name()
            ));
        }
    })
}

/// The decimal text of a binary `numeric`: `ndigits`, `weight`, `sign`, `dscale` (16 bits
/// each), then `ndigits` base-10000 digits, the first worth `10000^weight`.
fn numeric(bytes: &[u8]) -> Result<String, String> {
    let word = |i: usize| -> Result<u16, String> {
        bytes
            .get(2 * i..2 * i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated binary numeric".to_string())
    };
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(word(1)? as i16);
    let sign = word(2)?;
    let dscale = usize::from(word(3)?);
    if bytes.len() != 8 + 2 * ndigits {
        return Err("binary numeric of the wrong length".to_string());
    }
    let negative = match sign {
        0x0000 => false,
        0x4000 => true,
        _ => return Err("NaN and infinite numerics are not supported".to_string()),
    };
    let mut int = String::new();
    let mut frac = String::new();
    if weight < 0 {
        frac.push_str(&"0000".repeat(usize::try_from(-weight - 1).unwrap_or(0)));
    }
    for i in 0..ndigits {
        let digit = word(4 + i)?;
        if digit > 9999 {
            return Err("binary numeric digit above 9999".to_string());
        }
        let position = weight - i as i64;
        if position >= 0 {
            if int.is_empty() {
                int.push_str(&digit.to_string());
            } else {
                int.push_str(&format!("{digit:04}"));
            }
        } else {
            frac.push_str(&format!("{digit:04}"));
        }
    }
    // Groups between the last digit and the decimal point are zeros.
    let trailing = weight + 1 - ndigits as i64;
    if trailing > 0 && !int.is_empty() {
        int.push_str(&"0000".repeat(usize::try_from(trailing).unwrap_or(0)));
    }
    if int.is_empty() {
        int.push('0');
    }
    frac.truncate(dscale);
    while frac.len() < dscale {
        frac.push('0');
    }
    let sign = if negative { "-" } else { "" };
    Ok(if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_bytes(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut out = Vec::new();
        for w in [digits.len() as u16, weight as u16, sign, dscale]
            .into_iter()
            .chain(digits.iter().copied())
        {
            out.extend_from_slice(&w.to_be_bytes());
        }
        out
    }

    #[test]
    fn numerics() {
        // 12345.678 = 1|2345.6780, weight 1
        assert_eq!(
            numeric(&numeric_bytes(1, 0, 3, &[1, 2345, 6780])).unwrap(),
            "12345.678"
        );
        // -0.00012 = 0.0001|2000, weight -1
        assert_eq!(
            numeric(&numeric_bytes(-1, 0x4000, 5, &[1, 2000])).unwrap(),
            "-0.00012"
        );
        // 0.000001 = 0.0000|0100, weight -2
        assert_eq!(
            numeric(&numeric_bytes(-2, 0, 6, &[100])).unwrap(),
            "0.000001"
        );
        // 50000000 = 5000|0000, weight 1, one digit
        assert_eq!(
            numeric(&numeric_bytes(1, 0, 0, &[5000])).unwrap(),
            "50000000"
        );
        assert_eq!(numeric(&numeric_bytes(0, 0, 2, &[])).unwrap(), "0.00");
        assert!(numeric(&numeric_bytes(0, 0xC000, 0, &[])).is_err());
        assert!(numeric(&[0, 1]).is_err());
    }

    #[test]
    fn fixed_width_values() {
        assert_eq!(
            value(&Type::INT8, &(-5i64).to_be_bytes()).unwrap(),
            ScalarValue::Int64(Some(-5))
        );
        assert_eq!(
            value(&Type::TIMESTAMPTZ, &0i64.to_be_bytes()).unwrap(),
            ScalarValue::TimestampMicrosecond(Some(PG_EPOCH_MICROS), Some("UTC".into()))
        );
        assert_eq!(
            value(&Type::DATE, &1i32.to_be_bytes()).unwrap(),
            ScalarValue::Date32(Some(PG_EPOCH_DAYS + 1))
        );
        assert!(value(&Type::INT4, &[0, 1]).is_err());
        assert!(value(&Type::JSONB, b"{}").is_err());
    }
}
