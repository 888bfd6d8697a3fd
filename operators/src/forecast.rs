//! Month-end usage forecasts (DESIGN.md section 3), the arithmetic: for a (customer,
//! meter) and the month holding the watermark W,
//! - daily_rate = usage in the trailing 7 days / 7, rounded half-even to 9 digits;
//! - forecast = usage_to_date + trailing usage x (month end - W) / 7 days, exact until
//!   one half-even rounding (it does not go through the rounded rate).
//!
//! The trailing 7 days are the 168 hour windows up to and including the one holding W
//! (see [`crate::meter_series`]), so the figures can be recomputed from `usage_windows`;
//! DESIGN.md's (W - 7 days, W] differs from it only in the part of the oldest hour
//! before W - 7 days. The month end is the first instant of the next month.

use om_model::time::DAY;
use om_model::{Decimal9, Micros, WindowSize};

/// Length of the trailing window.
pub const TRAILING: Micros = 7 * DAY;

/// A forecast's figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forecast {
    /// Trailing usage / 7.
    pub daily_rate: Decimal9,
    /// Month-end usage; none on overflow of the 38-digit range.
    pub forecast: Option<Decimal9>,
}

/// The forecast at `now` from the usage so far this month and in the trailing 7 days.
pub fn forecast(usage_to_date: Decimal9, trailing: Decimal9, now: Micros) -> Forecast {
    let month_end = WindowSize::Month.end(WindowSize::Month.start(now));
    let rest = i128::from(month_end - now);
    Forecast {
        daily_rate: trailing
            .mul_ratio(1, 7)
            .expect("dividing by 7 cannot overflow"),
        forecast: trailing
            .mul_ratio(rest, i128::from(TRAILING))
            .and_then(|more| usage_to_date.checked_add(more)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use om_model::time::{HOUR, parse_rfc3339};

    fn d(s: &str) -> Decimal9 {
        Decimal9::parse(s).unwrap()
    }

    #[test]
    fn hand_worked_mid_month() {
        // W = 2026-11-20T12:00Z; November ends 2026-12-01T00:00Z, 10.5 days later.
        // 700 units in the trailing week: rate 100/day, forecast 1,500 + 1,050 = 2,550.
        let now = parse_rfc3339("2026-11-20T12:00:00Z").unwrap();
        let f = forecast(d("1500"), d("700"), now);
        assert_eq!(f.daily_rate, d("100"));
        assert_eq!(f.forecast, Some(d("2550")));
    }

    #[test]
    fn rounds_once_half_even() {
        // 10 units a week = 1.428571428571.../day; 1 hour left of the month:
        // 10 x 1h / 168h = 0.0595238095238... -> 0.059523810 on top of 3.
        let now = parse_rfc3339("2026-12-31T23:00:00Z").unwrap();
        let f = forecast(d("3"), d("10"), now);
        assert_eq!(f.daily_rate, d("1.428571429"));
        assert_eq!(f.forecast, Some(d("3.059523810")));
        let last = parse_rfc3339("2027-01-01T00:00:00Z").unwrap() - HOUR;
        assert_eq!(last, now);
    }

    #[test]
    fn no_trailing_usage_forecasts_the_usage_so_far() {
        let now = parse_rfc3339("2026-02-03T04:05:06Z").unwrap();
        let f = forecast(d("42"), Decimal9::ZERO, now);
        assert_eq!((f.daily_rate, f.forecast), (Decimal9::ZERO, Some(d("42"))));
    }
}
