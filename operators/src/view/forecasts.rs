//! The forecasts view: `forecasts`, each (customer, meter)'s month to date and trailing
//! 7 days projected to the month's end as of the watermark, from
//! [`Customers::series`] ([`crate::forecast`] holds the arithmetic).

use super::{Commit, Customers, TableOut, View};
use crate::meter_series::MeterSeries;
use crate::meter_series::RowNames;
use om_model::Micros;

/// The forecasts view; it keeps nothing of its own.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Forecasts;

impl View for Forecasts {
    fn name(&self) -> &'static str {
        "forecasts"
    }

    /// The shared hourly series' (forecasts need the trailing 7 days).
    fn fold_point(&self, at: &Commit<'_>) -> Option<Micros> {
        MeterSeries::keep_from(at.closed, at.now, at.config.pipeline.allowed_lateness)
    }

    fn commit(&mut self, at: &Commit<'_>, customers: &mut Customers, out: &mut dyn TableOut) {
        let (true, true, Some(now)) = (at.whole, at.config.forecasts, at.now) else {
            return;
        };
        let names = RowNames {
            customers: &customers.names,
            meters: at.meters,
        };
        out.forecasts(&customers.series.forecast_rows(now, &names));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::CustomerInput;
    use crate::view::testing::*;

    #[test]
    fn forecasts_are_written_with_the_whole_tables_and_only_when_enabled() {
        let mut config = config();
        let meters = meters(&config);
        let (fp, _) = customer("c1");
        let mut customers = Customers::default();
        customers.name(fp, "acme", "c1", true);
        if let CustomerInput::Hour(h) = hour(fp, 0, 1, 7) {
            customers.series.apply(&h);
        }
        let now = T0 + 2 * 3_600_000_000;
        let mut out = Recorder::default();
        let days_only = Commit {
            whole: false,
            ..commit(&config, &meters, now)
        };
        Forecasts.commit(&days_only, &mut customers, &mut out);
        assert!(out.0.is_empty());
        Forecasts.commit(&commit(&config, &meters, now), &mut customers, &mut out);
        assert_eq!(out.of("forecasts")[0].2.len(), 1);
        config.forecasts = false;
        let mut off = Recorder::default();
        Forecasts.commit(&commit(&config, &meters, now), &mut customers, &mut off);
        assert!(off.0.is_empty());
    }
}
