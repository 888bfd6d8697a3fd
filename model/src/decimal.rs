//! `Decimal9`: the exact fixed-point number used for every usage, credit and money value.
//!
//! A `Decimal9` is an `i128` counting billionths (9 fractional digits), the same
//! representation as Arrow's `Decimal128(38, 9)`, so values go to Parquet without
//! conversion. Text is parsed digit by digit (never through `f64`); arithmetic is checked.

use ethnum::I256;
use std::fmt;
use std::str::FromStr;

/// Scale factor: 10^9.
pub(crate) const SCALE: i128 = 1_000_000_000;
/// Magnitude bound for input values: |x| < 10^18.
const INPUT_LIMIT: i128 = 1_000_000_000_000_000_000 * SCALE;

/// An exact decimal with 9 fractional digits.
///
/// Serialized as its decimal text (`"12.500000000"`) in human-readable formats such as
/// JSON, and as the scaled `i128` in binary ones (bincode checkpoints), where formatting
/// and parsing text would dominate the cost of saving state.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Decimal9(i128);

impl serde::Serialize for Decimal9 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_i128(self.0)
        }
    }
}

impl<'de> serde::Deserialize<'de> for Decimal9 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            Decimal9::parse(&text).map_err(serde::de::Error::custom)
        } else {
            i128::deserialize(d).map(Decimal9)
        }
    }
}

/// Why a text could not be read as a `Decimal9`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// Not a decimal number at all.
    #[error("`{0}` is not a decimal number")]
    Syntax(String),
    /// More than 9 digits after the decimal point.
    #[error("`{0}` has more than 9 fractional digits")]
    TooPrecise(String),
    /// Magnitude of 10^18 or more.
    #[error("`{0}` is out of range (|x| must be below 10^18)")]
    OutOfRange(String),
}

impl Decimal9 {
    /// Zero.
    pub const ZERO: Decimal9 = Decimal9(0);
    /// One.
    pub const ONE: Decimal9 = Decimal9(SCALE);

    /// Builds a value from its raw count of billionths.
    pub const fn from_raw(raw: i128) -> Self {
        Decimal9(raw)
    }

    /// The raw count of billionths (the `Decimal128(38, 9)` representation).
    pub const fn raw(self) -> i128 {
        self.0
    }

    /// An integer value.
    pub const fn from_int(v: i64) -> Self {
        Decimal9(v as i128 * SCALE)
    }

    /// True when the value is below zero.
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// Exact addition; `None` on overflow of the 38-digit range.
    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Decimal9)
    }

    /// Exact subtraction; `None` on overflow.
    pub fn checked_sub(self, other: Self) -> Option<Self> {
        self.0.checked_sub(other.0).map(Decimal9)
    }

    /// Product rounded half-even to 9 fractional digits; `None` on overflow.
    pub fn checked_mul(self, other: Self) -> Option<Self> {
        let wide = self.0.checked_mul(other.0)?;
        Some(Decimal9(div_half_even(wide, SCALE)))
    }

    /// The exact sum of the products `a x b`, rounded half-even to 9 fractional digits
    /// once at the end (not per product); `None` on overflow.
    pub fn sum_of_products(pairs: impl IntoIterator<Item = (Decimal9, Decimal9)>) -> Option<Self> {
        let mut wide: i128 = 0;
        for (a, b) in pairs {
            wide = wide.checked_add(a.0.checked_mul(b.0)?)?;
        }
        Some(Decimal9(div_half_even(wide, SCALE)))
    }

    /// The exact sum of the products `a x b` divided by `divisor` (> 0), rounded
    /// half-even to 9 fractional digits once; `None` on overflow. Prices per million
    /// tokens use `divisor = 1_000_000`.
    pub fn sum_of_products_div(
        pairs: impl IntoIterator<Item = (Decimal9, Decimal9)>,
        divisor: i128,
    ) -> Option<Self> {
        let mut wide: i128 = 0;
        for (a, b) in pairs {
            wide = wide.checked_add(a.0.checked_mul(b.0)?)?;
        }
        Some(Decimal9(div_half_even(wide, SCALE.checked_mul(divisor)?)))
    }

    /// `self x num / den` (den > 0), exact until one half-even rounding to 9 fractional
    /// digits; `None` on overflow.
    pub fn mul_ratio(self, num: i128, den: i128) -> Option<Self> {
        Some(Decimal9(div_half_even(self.0.checked_mul(num)?, den)))
    }

    /// Division by an integer count, rounded half-even to 9 fractional digits.
    ///
    /// Panics when `n` is zero: callers never average an empty set.
    pub fn div_count_half_even(self, n: i64) -> Self {
        assert!(n != 0, "average of zero events");
        Decimal9(div_half_even(self.0, n as i128))
    }

    /// Parses an input value: the text of a JSON number or a decimal string, with an
    /// optional exponent. Rejects more than 9 fractional digits and |x| >= 10^18.
    pub fn parse(text: &str) -> Result<Self, DecimalError> {
        let err = || DecimalError::Syntax(text.to_string());
        let bytes = text.as_bytes();
        // Fast path: a plain integer below 10^18 (token counts, byte sizes, ...).
        if (1..=18).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_digit) {
            let int = bytes
                .iter()
                .fold(0i128, |acc, &b| acc * 10 + (b - b'0') as i128);
            return Ok(Decimal9(int * SCALE));
        }
        let (negative, rest) = match bytes.first() {
            Some(b'-') => (true, &bytes[1..]),
            Some(b'+') => (false, &bytes[1..]),
            _ => (false, bytes),
        };
        let (mantissa, exponent) = match rest.iter().position(|&b| b == b'e' || b == b'E') {
            Some(i) => {
                let exp_text = std::str::from_utf8(&rest[i + 1..]).map_err(|_| err())?;
                let exp: i32 = exp_text.parse().map_err(|_| err())?;
                (&rest[..i], exp)
            }
            None => (rest, 0),
        };
        let (int_part, frac_part) = match mantissa.iter().position(|&b| b == b'.') {
            Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
            None => (mantissa, &mantissa[mantissa.len()..]),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err());
        }
        if !int_part.iter().chain(frac_part).all(u8::is_ascii_digit) {
            return Err(err());
        }
        // Significant digits as one integer, then the decimal exponent that scales it.
        let mut digits: i128 = 0;
        let mut scale: i32 = -(frac_part.len() as i32) + exponent;
        let mut seen_nonzero = false;
        for &b in int_part.iter().chain(frac_part) {
            let d = (b - b'0') as i128;
            seen_nonzero |= d != 0;
            match digits.checked_mul(10).and_then(|v| v.checked_add(d)) {
                Some(v) if v < INPUT_LIMIT * 10 => digits = v,
                _ => return Err(DecimalError::OutOfRange(text.to_string())),
            }
        }
        // Trailing zeros never make a number too precise: 1.5000000000 is 1.5.
        while scale < 0 && digits != 0 && digits % 10 == 0 {
            digits /= 10;
            scale += 1;
        }
        if !seen_nonzero {
            return Ok(Decimal9::ZERO);
        }
        if scale < -9 {
            return Err(DecimalError::TooPrecise(text.to_string()));
        }
        let shift = scale + 9;
        let mut raw = digits;
        for _ in 0..shift {
            raw = match raw.checked_mul(10) {
                Some(v) if v < INPUT_LIMIT => v,
                _ => return Err(DecimalError::OutOfRange(text.to_string())),
            };
        }
        if raw >= INPUT_LIMIT {
            return Err(DecimalError::OutOfRange(text.to_string()));
        }
        Ok(Decimal9(if negative { -raw } else { raw }))
    }
}

/// `n / d` (d > 0) in 256 bits, rounded half to even, symmetric around zero: for exact
/// products of decimals that do not fit 128 bits before their division.
pub fn div_half_even_wide(n: I256, d: I256) -> I256 {
    let (q, r) = (n.abs() / d, n.abs() % d);
    let twice = r * I256::from(2);
    let up = twice > d || (twice == d && q % I256::from(2) == I256::ONE);
    let q = if up { q + I256::ONE } else { q };
    if n < I256::ZERO { -q } else { q }
}

impl Decimal9 {
    /// A 256-bit raw value (scaled by 10^9) as a decimal when it fits 38 digits.
    pub fn from_wide(v: I256) -> Option<Decimal9> {
        let limit = I256::from(10i128.pow(38));
        (v.abs() < limit).then(|| Decimal9(v.as_i128()))
    }
}

/// `n / d` rounded half to even (d > 0).
pub(crate) fn div_half_even(n: i128, d: i128) -> i128 {
    let q = n.div_euclid(d);
    let r = n.rem_euclid(d);
    match (2 * r).cmp(&d) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => {
            if q % 2 == 0 {
                q
            } else {
                q + 1
            }
        }
    }
}

impl fmt::Display for Decimal9 {
    /// Always 9 fractional digits, e.g. `12.500000000`, `-0.000000001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let scale = SCALE as u128;
        write!(f, "{sign}{}.{:09}", abs / scale, abs % scale)
    }
}

impl fmt::Debug for Decimal9 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Decimal9 {
    type Err = DecimalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Decimal9::parse(s)
    }
}

impl From<Decimal9> for String {
    fn from(d: Decimal9) -> String {
        d.to_string()
    }
}

impl TryFrom<String> for Decimal9 {
    type Error = DecimalError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Decimal9::parse(&s)
    }
}

#[cfg(test)]
mod serde_tests {
    use super::*;

    #[test]
    fn text_in_json_and_the_scaled_integer_in_bincode() {
        let d = Decimal9::parse("-12.5").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"-12.500000000\"");
        assert_eq!(serde_json::from_str::<Decimal9>("\"-12.5\"").unwrap(), d);
        assert!(serde_json::from_str::<Decimal9>("\"twelve\"").is_err());
        let bytes = bincode::serialize(&d).unwrap();
        assert_eq!(bytes, (-12_500_000_000i128).to_le_bytes());
        assert_eq!(bincode::deserialize::<Decimal9>(&bytes).unwrap(), d);
    }
}

impl std::ops::Add for Decimal9 {
    type Output = Decimal9;
    /// Panics on overflow of the 38-digit range, which inputs below 10^18 cannot reach
    /// in any realistic count of events.
    fn add(self, other: Self) -> Self {
        self.checked_add(other).expect("Decimal9 overflow")
    }
}

impl std::ops::AddAssign for Decimal9 {
    fn add_assign(&mut self, other: Self) {
        *self = *self + other;
    }
}

impl std::ops::Sub for Decimal9 {
    type Output = Decimal9;
    fn sub(self, other: Self) -> Self {
        self.checked_sub(other).expect("Decimal9 overflow")
    }
}

impl std::ops::SubAssign for Decimal9 {
    fn sub_assign(&mut self, other: Self) {
        *self = *self - other;
    }
}

impl std::ops::Neg for Decimal9 {
    type Output = Decimal9;
    fn neg(self) -> Self {
        Decimal9(-self.0)
    }
}

impl std::iter::Sum for Decimal9 {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Decimal9::ZERO, |a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal9 {
        Decimal9::parse(s).unwrap()
    }

    #[test]
    fn parses_plain_and_fractional_text() {
        assert_eq!(d("0").raw(), 0);
        assert_eq!(d("1").raw(), 1_000_000_000);
        assert_eq!(d("12.5").to_string(), "12.500000000");
        assert_eq!(d("0.000000001").raw(), 1);
        assert_eq!(d("-3").to_string(), "-3.000000000");
        assert_eq!(d(".5").to_string(), "0.500000000");
        assert_eq!(d("5.").to_string(), "5.000000000");
    }

    #[test]
    fn parses_exponents_exactly() {
        assert_eq!(d("1.5e3").to_string(), "1500.000000000");
        assert_eq!(d("25E-9").raw(), 25);
        assert_eq!(d("1.0000000000").raw(), 1_000_000_000);
        assert_eq!(d("0e-30").raw(), 0);
    }

    #[test]
    fn rejects_what_the_contract_rejects() {
        assert!(matches!(
            Decimal9::parse("1.0000000001"),
            Err(DecimalError::TooPrecise(_))
        ));
        assert!(matches!(
            Decimal9::parse("1e-10"),
            Err(DecimalError::TooPrecise(_))
        ));
        assert!(matches!(
            Decimal9::parse("1000000000000000000"),
            Err(DecimalError::OutOfRange(_))
        ));
        assert!(matches!(
            Decimal9::parse("1e18"),
            Err(DecimalError::OutOfRange(_))
        ));
        assert!(Decimal9::parse("999999999999999999.999999999").is_ok());
        for bad in [
            "", "-", ".", "abc", "1.2.3", "NaN", "inf", "1e", "0x10", "1 ", "--1",
        ] {
            assert!(
                matches!(Decimal9::parse(bad), Err(DecimalError::Syntax(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn average_rounds_half_to_even() {
        assert_eq!(Decimal9::from_raw(5).div_count_half_even(2).raw(), 2);
        assert_eq!(Decimal9::from_raw(7).div_count_half_even(2).raw(), 4);
        assert_eq!(Decimal9::from_raw(-5).div_count_half_even(2).raw(), -2);
        assert_eq!(d("10").div_count_half_even(3).to_string(), "3.333333333");
        assert_eq!(d("20").div_count_half_even(3).to_string(), "6.666666667");
        // 1,000 tokens at $2.50 per million + 3 at $0.01875 per million: one rounding.
        let cost = Decimal9::sum_of_products_div(
            [(d("1000"), d("2.5")), (d("3"), d("0.01875"))],
            1_000_000,
        )
        .unwrap();
        assert_eq!(cost.to_string(), "0.002500056");
        assert_eq!(d("10").mul_ratio(1, 7).unwrap().to_string(), "1.428571429");
        assert_eq!(d("0.000000005").mul_ratio(1, 2).unwrap().raw(), 2);
    }

    #[test]
    fn multiplication_is_exact_to_nine_digits() {
        assert_eq!(
            d("1200").checked_mul(d("0.0025")).unwrap().to_string(),
            "3.000000000"
        );
        assert_eq!(d("0.000000001").checked_mul(d("0.5")).unwrap().raw(), 0);
        assert_eq!(d("0.000000003").checked_mul(d("0.5")).unwrap().raw(), 2);
    }

    proptest! {
        #[test]
        fn display_round_trips(raw in -(INPUT_LIMIT - 1)..INPUT_LIMIT) {
            let v = Decimal9::from_raw(raw);
            prop_assert_eq!(Decimal9::parse(&v.to_string()).unwrap(), v);
        }

        #[test]
        fn integer_text_matches_integer(v in 0i64..1_000_000_000_000) {
            prop_assert_eq!(Decimal9::parse(&v.to_string()).unwrap(), Decimal9::from_int(v));
        }
    }
}
