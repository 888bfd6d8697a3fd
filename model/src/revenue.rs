//! Revenue recognition for prepaid credits (issue #8, ASC 606 style).
//!
//! A grant sold at `price` for `amount` credits is deferred revenue when granted. Each
//! day, revenue is recognized in proportion to the credits consumed:
//! recognized to date = price x consumed to date / amount, rounded half to even to the
//! currency's minor unit (one rounding of the cumulative value, so daily amounts never
//! drift). When the grant expires or is voided, whatever is still deferred is
//! recognized as breakage. So on every day
//!
//! ```text
//! deferred + recognized_to_date + breakage_to_date = price
//! ```
//!
//! and a grant consumed in full is recognized in full (its whole price, even a price
//! finer than the currency's minor unit).

use crate::Decimal9;
use crate::Micros;
use crate::decimal::div_half_even_wide;
use crate::pricing::Currency;
use ethnum::I256;

/// What a grant was sold for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantSale {
    /// Credits granted (> 0).
    pub amount: Decimal9,
    /// What the customer paid.
    pub price: Decimal9,
    /// The currency of the price.
    pub currency: Currency,
}

/// One day of a grant's ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerDay {
    /// Start of the UTC day.
    pub day: Micros,
    /// Credits burned from the grant that day.
    pub consumed: Decimal9,
    /// Credits lost that day at expiry or void.
    pub lost: Decimal9,
    /// Ledger entries behind the day (grant, burn hours, expiry, void).
    pub entries: u32,
    /// First and last entry time of the day.
    pub first_at: Micros,
    /// See `first_at`.
    pub last_at: Micros,
}

/// One day of recognized revenue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevenueDay {
    /// Start of the UTC day.
    pub day: Micros,
    /// Credits consumed that day.
    pub credits_consumed: Decimal9,
    /// Credits lost to expiry or void that day.
    pub credits_lost: Decimal9,
    /// Revenue recognized from consumption that day.
    pub recognized: Decimal9,
    /// Breakage recognized that day.
    pub breakage: Decimal9,
    /// Recognized from consumption up to the end of the day.
    pub recognized_to_date: Decimal9,
    /// Breakage up to the end of the day.
    pub breakage_to_date: Decimal9,
    /// Still deferred at the end of the day.
    pub deferred: Decimal9,
}

/// The revenue days of one grant from its ledger days (sorted by day, one per day).
pub fn recognize(sale: &GrantSale, days: &[LedgerDay]) -> Vec<RevenueDay> {
    let step = 10i128.pow(9 - sale.currency.minor_units);
    let mut consumed = 0i128;
    let mut recognized_to_date = 0i128;
    let mut breakage_to_date = 0i128;
    let mut out = Vec::with_capacity(days.len());
    for d in days {
        consumed += d.consumed.raw();
        let before = recognized_to_date;
        // price x consumed / amount, rounded once to the minor unit (exact in 256 bits).
        let wide = I256::from(sale.price.raw()) * I256::from(consumed);
        let den = I256::from(sale.amount.raw()) * I256::from(step);
        // Never above the price (a price finer than the minor unit could round up past
        // it), and all of it once every credit is consumed.
        recognized_to_date = if consumed >= sale.amount.raw() {
            sale.price.raw()
        } else {
            (div_half_even_wide(wide, den).as_i128() * step).min(sale.price.raw())
        };
        let breakage = if d.lost.raw() > 0 {
            sale.price.raw() - recognized_to_date - breakage_to_date
        } else {
            0
        };
        breakage_to_date += breakage;
        out.push(RevenueDay {
            day: d.day,
            credits_consumed: d.consumed,
            credits_lost: d.lost,
            recognized: Decimal9::from_raw(recognized_to_date - before),
            breakage: Decimal9::from_raw(breakage),
            recognized_to_date: Decimal9::from_raw(recognized_to_date),
            breakage_to_date: Decimal9::from_raw(breakage_to_date),
            deferred: Decimal9::from_raw(sale.price.raw() - recognized_to_date - breakage_to_date),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::DAY;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal9 {
        Decimal9::parse(s).unwrap()
    }

    fn day(i: i64, consumed: &str, lost: &str) -> LedgerDay {
        LedgerDay {
            day: i * DAY,
            consumed: d(consumed),
            lost: d(lost),
            entries: 1,
            first_at: i * DAY,
            last_at: i * DAY,
        }
    }

    #[test]
    fn recognizes_by_consumption_then_breakage_at_expiry() {
        // 1,000 credits sold for 100.00 USD: 250 used on day 1 (25.00), 333 on day 2
        // (58.30 to date, so 33.30), then 417 expire on day 3 (41.70 breakage).
        let sale = GrantSale {
            amount: d("1000"),
            price: d("100"),
            currency: Currency::parse("USD").unwrap(),
        };
        let days = [
            day(0, "0", "0"),
            day(1, "250", "0"),
            day(2, "333", "0"),
            day(3, "0", "417"),
        ];
        let r = recognize(&sale, &days);
        let col = |f: fn(&RevenueDay) -> Decimal9| r.iter().map(f).collect::<Vec<_>>();
        assert_eq!(col(|r| r.recognized), [d("0"), d("25"), d("33.3"), d("0")]);
        assert_eq!(col(|r| r.breakage), [d("0"), d("0"), d("0"), d("41.7")]);
        assert_eq!(col(|r| r.deferred), [d("100"), d("75"), d("41.7"), d("0")]);
    }

    #[test]
    fn rounds_the_cumulative_amount_half_even() {
        // 3 credits for 10.00: each credit is 3.333...; to date 3.33, 6.67, 10.00.
        let sale = GrantSale {
            amount: d("3"),
            price: d("10"),
            currency: Currency::parse("USD").unwrap(),
        };
        let days = [day(0, "1", "0"), day(1, "1", "0"), day(2, "1", "0")];
        let r = recognize(&sale, &days);
        let daily: Vec<_> = r.iter().map(|r| r.recognized).collect();
        assert_eq!(daily, [d("3.33"), d("3.34"), d("3.33")]);
        assert_eq!(r[2].deferred, d("0"));
    }

    proptest! {
        /// deferred + recognized + breakage = price on every day, no amount is negative,
        /// and the credits add up to the ledger's.
        #[test]
        fn the_identity_holds_every_day(
            amount in 1i64..1_000_000,
            cents in 0i64..100_000_000,
            minor in prop::sample::select(vec!["JPY", "USD", "KWD"]),
            uses in prop::collection::vec(0u32..1000, 1..20),
            lose_at_end in any::<bool>(),
        ) {
            let sale = GrantSale {
                amount: Decimal9::from_int(amount),
                price: Decimal9::from_raw(cents as i128 * 10_000_000),
                currency: Currency::parse(minor).unwrap(),
            };
            // Spread consumption over the days, never above the grant.
            let total: u64 = uses.iter().map(|&u| u as u64).sum::<u64>().max(1);
            let mut left = Decimal9::from_int(amount).raw();
            let mut days: Vec<LedgerDay> = uses
                .iter()
                .enumerate()
                .map(|(i, &u)| {
                    let c = (Decimal9::from_int(amount).raw() * u as i128 / total as i128).min(left);
                    left -= c;
                    day(i as i64, "0", "0")
                        .with_consumed(Decimal9::from_raw(c))
                })
                .collect();
            if lose_at_end {
                days.push(day(uses.len() as i64, "0", "0").with_lost(Decimal9::from_raw(left)));
            }
            let r = recognize(&sale, &days);
            let mut consumed = Decimal9::ZERO;
            for (row, day) in r.iter().zip(&days) {
                consumed += day.consumed;
                prop_assert_eq!(row.deferred + row.recognized_to_date + row.breakage_to_date, sale.price);
                prop_assert!(!row.recognized.is_negative() && !row.breakage.is_negative());
                prop_assert!(!row.deferred.is_negative());
            }
            let sum_consumed: Decimal9 = r.iter().fold(Decimal9::ZERO, |a, r| a + r.credits_consumed);
            prop_assert_eq!(sum_consumed, consumed);
            if lose_at_end && left > 0 || consumed == sale.amount {
                prop_assert_eq!(r.last().unwrap().deferred, Decimal9::ZERO);
            }
        }
    }

    impl LedgerDay {
        fn with_consumed(mut self, c: Decimal9) -> Self {
            self.consumed = c;
            self
        }
        fn with_lost(mut self, l: Decimal9) -> Self {
            self.lost = l;
            self
        }
    }
}
