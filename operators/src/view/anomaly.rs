//! The anomaly view: `anomaly_scores` by UTC day, every hour with usage of a (customer,
//! meter) scored against the 24 before it, from [`Customers::series`]
//! ([`crate::anomaly`] holds the arithmetic, [`crate::meter_series`] which days change
//! and when they are final).

use super::{Commit, Customers, TableOut, View};
use crate::meter_series::MeterSeries;
use crate::meter_series::RowNames;
use om_model::Micros;

/// The anomaly view; its state is the shared series.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Anomaly;

impl View for Anomaly {
    fn name(&self) -> &'static str {
        "anomaly"
    }

    /// The shared hourly series' (its days before are final and written).
    fn fold_point(&self, at: &Commit<'_>) -> Option<Micros> {
        MeterSeries::keep_from(at.closed, at.now, at.config.pipeline.allowed_lateness)
    }

    fn commit(&mut self, at: &Commit<'_>, customers: &mut Customers, out: &mut dyn TableOut) {
        if !at.days || !at.config.anomaly.enabled {
            return;
        }
        let names = RowNames {
            customers: &customers.names,
            meters: at.meters,
        };
        let days = customers.series.take_anomaly_days(
            at.closed,
            at.now,
            at.config.pipeline.allowed_lateness,
            &at.config.anomaly,
            &names,
        );
        for (day, rows) in days {
            out.anomaly_scores(day, &rows);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::CustomerInput;
    use crate::view::testing::*;
    use om_model::time::HOUR;

    #[test]
    fn a_changed_day_is_scored_once_and_only_with_the_day_tables() {
        let config = config();
        let meters = meters(&config);
        let (fp, _) = customer("c1");
        let mut customers = Customers::default();
        customers.name(fp, "acme", "c1", true);
        for h in 0..5 {
            if let CustomerInput::Hour(u) = hour(fp, 0, h, if h == 4 { 500 } else { 2 }) {
                customers.series.apply(&u);
            }
        }
        let now = T0 + 5 * HOUR;
        let mut out = Recorder::default();
        let whole_only = Commit {
            days: false,
            ..commit(&config, &meters, now)
        };
        Anomaly.commit(&whole_only, &mut customers, &mut out);
        assert!(out.0.is_empty());
        Anomaly.commit(&commit(&config, &meters, now), &mut customers, &mut out);
        let days = out.of("anomaly_scores");
        let scored: Vec<&String> = days.iter().flat_map(|d| &d.2).collect();
        assert_eq!(scored.len(), 5, "every hour with usage: {scored:?}");
        assert!(
            scored.iter().any(|r| r.contains("flagged: true")),
            "{scored:?}"
        );
        let mut again = Recorder::default();
        Anomaly.commit(&commit(&config, &meters, now), &mut customers, &mut again);
        assert!(again.0.is_empty(), "no day changed since");
    }
}
