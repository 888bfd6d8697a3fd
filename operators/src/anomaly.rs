//! Anomaly scores (DESIGN.md section 3): how far an hour's usage of a (customer, meter)
//! stands out against the 24 hours before it.
//!
//! For an hour window with usage x, the baseline is the previous 24 hour windows, a
//! missing hour counting as 0: mean m and population standard deviation s, each rounded
//! half-even to 9 digits. score = (x - m) / max(s, 1), computed from the rounded m and s
//! (so anyone can recompute it from the row) and rounded half-even to 9 digits; the hour
//! is flagged when score >= threshold and x >= min_value. Everything is exact integer
//! arithmetic: the variance's numerator 24·Σx² - (Σx)² is formed in 256 bits and the
//! square root is an integer square root, rounded half-even.
//!
//! Which hours to score, and when, is [`crate::meter_series`]'s business; this module is
//! the arithmetic.

use ethnum::{I256, U256};
use om_model::Decimal9;
use om_model::config::AnomalySettings;
use om_model::decimal::div_half_even_wide;

/// Hours in the baseline.
pub const BASELINE_HOURS: usize = 24;

/// 10^9: the scale of [`Decimal9`].
const SCALE: i128 = 1_000_000_000;

/// The score of one hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Score {
    /// Baseline mean.
    pub mean: Decimal9,
    /// Baseline population standard deviation.
    pub std: Decimal9,
    /// (x - mean) / max(std, 1); none when the 38-digit range overflows.
    pub score: Option<Decimal9>,
    /// score >= threshold and x >= min_value.
    pub flagged: bool,
}

/// Scores `x` against the 24 hours before it (oldest first; missing hours are 0).
pub fn score(x: Decimal9, baseline: &[Decimal9; BASELINE_HOURS], s: &AnomalySettings) -> Score {
    // Values under 2^58 units (about 2.9 x 10^8) keep every intermediate in 128 bits.
    const SMALL: i128 = 1 << 58;
    if x.raw().abs() < SMALL && baseline.iter().all(|v| v.raw().abs() < SMALL) {
        return score_small(x, baseline, s);
    }
    score_wide(x, baseline, s)
}

/// [`score`] in 256-bit arithmetic, for any values.
fn score_wide(x: Decimal9, baseline: &[Decimal9; BASELINE_HOURS], s: &AnomalySettings) -> Score {
    let n = BASELINE_HOURS as i128;
    let sum: I256 = baseline.iter().map(|v| I256::from(v.raw())).sum();
    let squares: I256 = baseline
        .iter()
        .map(|v| I256::from(v.raw()) * I256::from(v.raw()))
        .sum();
    let mean = Decimal9::from_wide(div_half_even_wide(sum, I256::from(n)));
    // Variance = (n·Σx² - (Σx)²) / n², in units of 10^-18; std = sqrt(that) / n.
    let numerator = (I256::from(n) * squares - sum * sum).as_u256();
    let std = Decimal9::from_wide(I256::from(sqrt_div_half_even(numerator, n as u128)));
    let (mean, std) = (
        mean.unwrap_or(Decimal9::ZERO),
        std.unwrap_or(Decimal9::ZERO),
    );
    let divisor = std.raw().max(SCALE);
    let score = Decimal9::from_wide(div_half_even_wide(
        (I256::from(x.raw()) - I256::from(mean.raw())) * I256::from(SCALE),
        I256::from(divisor),
    ));
    Score {
        mean,
        std,
        score,
        flagged: score.is_some_and(|v| v >= s.threshold) && x >= s.min_value,
    }
}

/// [`score`] in 128-bit arithmetic, for values under 2^58 units: 24·Σx² and (Σx)² stay
/// under 576 x 2^116 < 2^126, (x - mean) x 10^9 under 2^89. Same results, bit for bit
/// (a test compares the two).
fn score_small(x: Decimal9, baseline: &[Decimal9; BASELINE_HOURS], s: &AnomalySettings) -> Score {
    let n = BASELINE_HOURS as i128;
    let sum: i128 = baseline.iter().map(|v| v.raw()).sum();
    let squares: i128 = baseline.iter().map(|v| v.raw() * v.raw()).sum();
    let mean = Decimal9::from_raw(sum).div_count_half_even(BASELINE_HOURS as i64);
    let numerator = (n * squares - sum * sum) as u128;
    let std = Decimal9::from_raw(sqrt_div_half_even_u128(numerator, n as u128));
    let divisor = std.raw().max(SCALE);
    let score = Decimal9::from_raw(x.raw() - mean.raw()).mul_ratio(SCALE, divisor);
    Score {
        mean,
        std,
        score,
        flagged: score.is_some_and(|v| v >= s.threshold) && x >= s.min_value,
    }
}

/// [`sqrt_div_half_even`] in 128 bits (v < 2^124).
fn sqrt_div_half_even_u128(v: u128, n: u128) -> i128 {
    let n2 = n * n;
    let a = (v / n2).isqrt();
    let edge = n2 * (2 * a + 1) * (2 * a + 1);
    let up = 4 * v > edge || (4 * v == edge && a % 2 == 1);
    (if up { a + 1 } else { a }) as i128
}

/// sqrt(v) / n rounded half to even, exactly: with a = floor(sqrt(v / n²)), the result
/// is a + 1 when sqrt(v) / n > a + 1/2, i.e. 4v > n²(2a + 1)²; a tie (equality) rounds
/// to the even one of a and a + 1.
fn sqrt_div_half_even(v: U256, n: u128) -> i128 {
    let n2 = U256::from(n * n);
    let a = isqrt(v / n2);
    let edge = n2 * (U256::from(2u8) * a + U256::ONE) * (U256::from(2u8) * a + U256::ONE);
    let four_v = v * U256::from(4u8);
    let up = four_v > edge || (four_v == edge && a % U256::from(2u8) == U256::ONE);
    (if up { a + U256::ONE } else { a }).as_i128()
}

/// floor(sqrt(v)) by Newton's iteration from above.
fn isqrt(v: U256) -> U256 {
    if v < U256::from(2u8) {
        return v;
    }
    let bits = 256 - v.leading_zeros();
    let mut x = U256::ONE << bits.div_ceil(2);
    loop {
        let y = (x + v / x) >> 1;
        if y >= x {
            return x;
        }
        x = y;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal9 {
        Decimal9::parse(s).unwrap()
    }

    fn settings() -> AnomalySettings {
        AnomalySettings {
            enabled: true,
            threshold: Decimal9::from_int(3),
            min_value: Decimal9::from_int(10),
        }
    }

    #[test]
    fn steady_usage_is_not_flagged_and_a_spike_is() {
        // 24 hours of 10 each: mean 10, std 0, so the divisor is 1.
        let steady = [d("10"); 24];
        let s = score(d("12"), &steady, &settings());
        assert_eq!((s.mean, s.std, s.score), (d("10"), d("0"), Some(d("2"))));
        assert!(!s.flagged);
        let s = score(d("100"), &steady, &settings());
        assert_eq!(s.score, Some(d("90")));
        assert!(s.flagged);
    }

    #[test]
    fn hand_worked_baseline_with_missing_hours() {
        // 12 hours of 4 and 12 missing hours (0): mean 2, population variance
        // (12·(4-2)² + 12·(0-2)²) / 24 = 4, std 2. x = 9: score (9 - 2) / 2 = 3.5.
        let mut b = [Decimal9::ZERO; 24];
        for v in b.iter_mut().take(12) {
            *v = d("4");
        }
        let s = score(d("9"), &b, &settings());
        assert_eq!((s.mean, s.std, s.score), (d("2"), d("2"), Some(d("3.5"))));
        assert!(!s.flagged, "x = 9 is under min_value 10");
        let s = score(d("10"), &b, &settings());
        assert_eq!(s.score, Some(d("4")));
        assert!(s.flagged);
    }

    #[test]
    fn irrational_std_rounds_half_even_at_nine_digits() {
        // One hour of 1, 23 of 0: mean 1/24 = 0.041666667, variance (1/24)(1 - 1/24),
        // std = sqrt(23)/24 = 0.199826313... -> 0.199826313.
        let mut b = [Decimal9::ZERO; 24];
        b[0] = d("1");
        let s = score(d("0.5"), &b, &settings());
        assert_eq!(s.mean, d("0.041666667"));
        assert_eq!(s.std, d("0.199826313"));
        // std < 1, so the divisor is 1: 0.5 - 0.041666667.
        assert_eq!(s.score, Some(d("0.458333333")));
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let big = Decimal9::from_raw(10i128.pow(36));
        let s = score(big, &[big; 24], &settings());
        assert_eq!(
            (s.mean, s.std, s.score),
            (big, Decimal9::ZERO, Some(Decimal9::ZERO))
        );
    }

    proptest::proptest! {
        #[test]
        fn the_128_bit_path_equals_the_256_bit_one(
            values in proptest::collection::vec(0i128..(1 << 58), 25),
            zeros in proptest::collection::vec(proptest::bool::ANY, 25),
        ) {
            let v: Vec<Decimal9> = values
                .iter()
                .zip(&zeros)
                .map(|(&v, &z)| Decimal9::from_raw(if z { 0 } else { v >> (v % 50) }))
                .collect();
            let baseline: [Decimal9; 24] = v[1..].try_into().unwrap();
            proptest::prop_assert_eq!(
                score_small(v[0], &baseline, &settings()),
                score_wide(v[0], &baseline, &settings())
            );
        }
    }

    #[test]
    fn integer_square_roots() {
        for v in [0u64, 1, 2, 3, 4, 15, 16, 17, 99, 100, 101, u64::MAX] {
            let r = isqrt(U256::from(v)).as_u64();
            assert!(r as u128 * r as u128 <= v as u128);
            assert!((r as u128 + 1) * (r as u128 + 1) > v as u128);
        }
    }
}
