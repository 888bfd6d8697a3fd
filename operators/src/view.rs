//! The per-customer views, behind one [`View`] trait.
//!
//! Every view of a customer lives on the worker that owns the customer ([`owner`]),
//! where readers route its [`CustomerInput`]s; commands reach every worker. The generic
//! view sink of the job folds them, epoch by epoch in time order, into the registered
//! views ([`Views`]), and at each commit asks every view, in registration order, for the
//! rows of the partitions that changed ([`View::commit`]), which it encodes and writes
//! through [`TableOut`].
//!
//! What several views read lives once, in [`Customers`]: the names behind the customer
//! fingerprints, the hourly usage of the summable meters ([`MeterSeries`]: anomaly
//! scores, forecasts and entitlements read it), and the balances of the commit (the
//! credits view computes them; entitlements read them). So a view that reads another's
//! output is registered after it.
//!
//! Adding a view: one file in `view/` with a type implementing [`View`] (its state
//! serializable, as [`Views`] is the checkpoint), and one field in [`Views`] plus its line
//! in [`Views::parts`].

mod anomaly;
mod costs;
mod credits;
mod entitlements;
mod forecasts;

use crate::meter_series::{HourUpdate, MeterSeries};
use crate::{BurnUpdate, CostUpdate, NameRecord};
use om_model::credit::{BalanceRow, GrantRow, LedgerRow};
use om_model::views::{AnomalyRow, CostRow, EntitlementRow, ForecastRow, SubscriptionRow};
use om_model::{Command, Config, Micros};
use std::collections::BTreeMap;

pub use anomaly::Anomaly;
pub use costs::Costs;
pub use credits::{Credits, fold_point};
pub use entitlements::Entitlements;
pub use forecasts::Forecasts;

/// What readers send the views of a customer's owner.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum CustomerInput {
    /// An accepted event's burn.
    Burn(BurnUpdate),
    /// An epoch's usage of a sum or count meter in one hour.
    Hour(HourUpdate),
    /// An epoch's model calls of one (day, provider, model); boxed, as the rarest and
    /// largest input, to keep every other input small.
    Cost(Box<CostUpdate>),
    /// A customer's names (a [`NameRecord::Customer`]).
    Name(NameRecord),
}

impl CustomerInput {
    /// The routing hash: the customer's fingerprint.
    pub fn route(&self) -> u64 {
        match self {
            CustomerInput::Burn(b) => b.customer,
            CustomerInput::Hour(h) => h.customer,
            CustomerInput::Cost(c) => c.customer,
            CustomerInput::Name(n) => n.route(),
        }
    }
}

/// The worker that owns a customer: the same rule as timely's exchange by fingerprint.
pub fn owner(customer: u64, peers: usize) -> usize {
    (customer % peers as u64) as usize
}

/// What every view may read: the customers this worker owns.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Customers {
    /// Customer fingerprint -> (tenant, customer).
    pub names: BTreeMap<u64, (String, String)>,
    /// Hourly usage of the sum and count meters the views track.
    pub series: MeterSeries,
    /// The `credit_balances` rows of the current commit, once the credits view has
    /// computed them (empty otherwise); not saved.
    #[serde(skip)]
    pub balances: Vec<BalanceRow>,
    /// A customer became known since the last commit (it has entitlement rows now).
    #[serde(skip)]
    named: bool,
}

impl Customers {
    /// Records a customer's names; `announce`: a new customer counts as a change of
    /// the views (as a name record does; a command's customer changes its own view).
    pub fn name(&mut self, customer: u64, tenant_id: &str, customer_id: &str, announce: bool) {
        if let std::collections::btree_map::Entry::Vacant(v) = self.names.entry(customer) {
            v.insert((tenant_id.to_string(), customer_id.to_string()));
            self.named |= announce;
        }
    }

    /// Whether a customer became known since the last call, and resets it.
    pub fn take_named(&mut self) -> bool {
        std::mem::take(&mut self.named)
    }
}

/// The commit a view writes at.
#[derive(Clone, Copy, Debug)]
pub struct Commit<'a> {
    /// The latest watermark: the "now" of balances, entitlements and forecasts.
    pub now: Option<Micros>,
    /// The closed watermark: what no input can reach any more is final behind it
    /// (minus the allowed lateness).
    pub closed: Option<Micros>,
    /// The tables that are one file per worker are rewritten: something changed since
    /// their last write, or `now` moved (their rows are "as of" it).
    pub whole: bool,
    /// The day-partitioned tables write their changed days.
    pub days: bool,
    /// The pipeline config.
    pub config: &'a Config,
    /// Meter names by index.
    pub meters: &'a [String],
}

/// Where views put the rows of the partitions they write: one call per file (rows may
/// be empty: the partition has no rows any more). The job's implementation encodes
/// each as Parquet.
pub trait TableOut {
    /// `credit_grants`, one file per worker.
    fn credit_grants(&mut self, rows: &[&GrantRow]);
    /// `credit_balances`, one file per worker, as of `as_of`.
    fn credit_balances(&mut self, rows: &[BalanceRow], as_of: Option<Micros>);
    /// `credit_ledger` of one UTC day.
    fn credit_ledger(&mut self, day: Micros, rows: &[LedgerRow<'_>]);
    /// `entitlements`, one file per worker, as of `as_of`.
    fn entitlements(&mut self, rows: &[EntitlementRow<'_>], as_of: Option<Micros>);
    /// `subscriptions`, one file per worker.
    fn subscriptions(&mut self, rows: &[SubscriptionRow<'_>]);
    /// `forecasts`, one file per worker.
    fn forecasts(&mut self, rows: &[ForecastRow<'_>]);
    /// `anomaly_scores` of one UTC day.
    fn anomaly_scores(&mut self, day: Micros, rows: &[AnomalyRow<'_>]);
    /// `costs` of one UTC day.
    fn costs(&mut self, day: Micros, rows: &[CostRow<'_>]);
}

/// A [`TableOut`] that drops every row: a restore replays commits for their effect on
/// the state (their files exist already).
#[derive(Debug, Default)]
pub struct Discard;

impl TableOut for Discard {
    fn credit_grants(&mut self, _: &[&GrantRow]) {}
    fn credit_balances(&mut self, _: &[BalanceRow], _: Option<Micros>) {}
    fn credit_ledger(&mut self, _: Micros, _: &[LedgerRow<'_>]) {}
    fn entitlements(&mut self, _: &[EntitlementRow<'_>], _: Option<Micros>) {}
    fn subscriptions(&mut self, _: &[SubscriptionRow<'_>]) {}
    fn forecasts(&mut self, _: &[ForecastRow<'_>]) {}
    fn anomaly_scores(&mut self, _: Micros, _: &[AnomalyRow<'_>]) {}
    fn costs(&mut self, _: Micros, _: &[CostRow<'_>]) {}
}

/// A command as a view sees it.
#[derive(Clone, Copy, Debug)]
pub struct Commanded<'a> {
    /// The command.
    pub command: &'a Command,
    /// The fingerprint of the customer it names, when this worker owns that customer
    /// (a void names none: every worker records it).
    pub owned: Option<u64>,
}

/// One per-customer view: its state, what it folds, and the rows it writes.
pub trait View {
    /// The view's name (the first column of the horizons table in
    /// `docs/architecture.md`).
    fn name(&self) -> &'static str;

    /// Its fold point at a commit: the instant before which it keeps nothing of the
    /// past but folded totals or nothing at all (its rows there are final and written);
    /// `None` when nothing bounds it in event time. Documented, per view, in the
    /// horizons table of `docs/architecture.md`, which a test holds to this.
    fn fold_point(&self, at: &Commit<'_>) -> Option<Micros>;

    /// Folds one input routed to this worker. Names and hourly usage are in
    /// `customers` already; a view that reads only those ignores its inputs.
    fn apply(&mut self, _input: &CustomerInput, _config: &Config) {}

    /// Folds one command (every worker sees every command); most views take none.
    fn command(&mut self, _command: Commanded<'_>) {}

    /// Whether its own inputs changed since its last commit (none for a view with no
    /// inputs of its own).
    fn changed(&self) -> bool {
        false
    }

    /// At a commit: puts the rows of the partitions to rewrite into `out`.
    fn commit(&mut self, at: &Commit<'_>, customers: &mut Customers, out: &mut dyn TableOut);
}

/// Every per-customer view of one worker, in the order they commit; with the shared
/// [`Customers`], what the view sink checkpoints.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Views {
    /// What the views share.
    pub customers: Customers,
    credits: Credits,
    entitlements: Entitlements,
    forecasts: Forecasts,
    anomaly: Anomaly,
    costs: Costs,
}

impl Views {
    /// The shared state and every view, in commit order (a view after the ones whose
    /// output it reads from [`Customers`]).
    pub fn parts(&mut self) -> (&mut Customers, [&mut dyn View; 5]) {
        (
            &mut self.customers,
            [
                &mut self.credits,
                &mut self.entitlements,
                &mut self.forecasts,
                &mut self.anomaly,
                &mut self.costs,
            ],
        )
    }

    /// Folds one input routed to this worker.
    pub fn apply(&mut self, input: &CustomerInput, config: &Config) {
        match input {
            CustomerInput::Hour(h) => self.customers.series.apply(h),
            CustomerInput::Name(NameRecord::Customer {
                fingerprint,
                tenant_id,
                customer_id,
            }) => self
                .customers
                .name(*fingerprint, tenant_id, customer_id, true),
            CustomerInput::Burn(_)
            | CustomerInput::Cost(_)
            | CustomerInput::Name(NameRecord::Dimensions { .. }) => {}
        }
        for view in self.parts().1 {
            view.apply(input, config);
        }
    }

    /// Folds one command: grants and subscriptions of the customers this worker owns,
    /// every void. Retractions reach the views as negated inputs instead.
    pub fn command(&mut self, command: &Command, worker: usize, peers: usize) {
        let named = match command {
            Command::Grant(g) => Some((g.tenant_id.as_str(), g.customer_id.as_str())),
            Command::Subscribe {
                tenant_id,
                customer_id,
                ..
            } => Some((tenant_id.as_str(), customer_id.as_str())),
            Command::VoidGrant { .. } | Command::RetractEvent { .. } => None,
        };
        let owned = named.and_then(|(t, c)| {
            let fp = om_model::fingerprint::customer(t, c);
            (owner(fp, peers) == worker).then(|| {
                self.customers.name(fp, t, c, false);
                fp
            })
        });
        if named.is_some() && owned.is_none() {
            return;
        }
        for view in self.parts().1 {
            view.command(Commanded { command, owned });
        }
    }

    /// Whether anything that the whole-table views show changed since the last commit
    /// (hourly usage, a new customer, a view's own inputs); resets the shared flags.
    pub fn take_changed(&mut self) -> bool {
        let series = self.customers.series.take_changed();
        let named = self.customers.take_named();
        let (_, views) = self.parts();
        views.iter().any(|v| v.changed()) || series || named
    }

    /// Drops what only a commit and its live snapshot need (the balances of every
    /// customer), so that it is not held between commits.
    pub fn release(&mut self) {
        self.customers.balances = Vec::new();
    }

    /// Commits every view in order, then forgets the hourly usage no view needs any
    /// more.
    pub fn commit(&mut self, at: &Commit<'_>, out: &mut dyn TableOut) {
        let (customers, views) = self.parts();
        customers.balances.clear();
        for view in views {
            view.commit(at, customers, out);
        }
        if at.days {
            customers
                .series
                .forget(at.closed, at.now, at.config.pipeline.allowed_lateness);
        }
    }
}

/// What the views' tests share: a [`TableOut`] that records each file, and inputs.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use om_model::Decimal9;
    use om_model::time::{DAY, HOUR};

    /// One recorded file: table, day (for a day partition), rows as debug text.
    pub type File = (&'static str, Option<Micros>, Vec<String>);

    /// Records every file a commit puts out.
    #[derive(Debug, Default)]
    pub struct Recorder(pub Vec<File>);

    impl Recorder {
        /// The files of `table`.
        pub fn of(&self, table: &str) -> Vec<&File> {
            self.0.iter().filter(|f| f.0 == table).collect()
        }
    }

    fn texts<T: std::fmt::Debug>(rows: &[T]) -> Vec<String> {
        rows.iter().map(|r| format!("{r:?}")).collect()
    }

    impl TableOut for Recorder {
        fn credit_grants(&mut self, rows: &[&GrantRow]) {
            self.0.push(("credit_grants", None, texts(rows)));
        }
        fn credit_balances(&mut self, rows: &[BalanceRow], _: Option<Micros>) {
            self.0.push(("credit_balances", None, texts(rows)));
        }
        fn credit_ledger(&mut self, day: Micros, rows: &[LedgerRow<'_>]) {
            self.0.push(("credit_ledger", Some(day), texts(rows)));
        }
        fn entitlements(&mut self, rows: &[EntitlementRow<'_>], _: Option<Micros>) {
            self.0.push(("entitlements", None, texts(rows)));
        }
        fn subscriptions(&mut self, rows: &[SubscriptionRow<'_>]) {
            self.0.push(("subscriptions", None, texts(rows)));
        }
        fn forecasts(&mut self, rows: &[ForecastRow<'_>]) {
            self.0.push(("forecasts", None, texts(rows)));
        }
        fn anomaly_scores(&mut self, day: Micros, rows: &[AnomalyRow<'_>]) {
            self.0.push(("anomaly_scores", Some(day), texts(rows)));
        }
        fn costs(&mut self, day: Micros, rows: &[CostRow<'_>]) {
            self.0.push(("costs", Some(day), texts(rows)));
        }
    }

    /// The built-in config.
    pub fn config() -> Config {
        Config::from_toml(om_model::config::DEFAULT_TOML).expect("the built-in config parses")
    }

    /// Meter names of `config`.
    pub fn meters(config: &Config) -> Vec<String> {
        config.meters.iter().map(|m| m.name.clone()).collect()
    }

    /// A commit at `now` (closed at the same watermark) that writes everything.
    pub fn commit<'a>(config: &'a Config, meters: &'a [String], now: Micros) -> Commit<'a> {
        Commit {
            now: Some(now),
            closed: Some(now),
            whole: true,
            days: true,
            config,
            meters,
        }
    }

    /// 2025-11-02T00:00:00Z.
    pub const T0: Micros = 20_394 * DAY;

    /// Customer `name` of tenant `acme`: its fingerprint and name record.
    pub fn customer(name: &str) -> (u64, CustomerInput) {
        let fingerprint = om_model::fingerprint::customer("acme", name);
        (
            fingerprint,
            CustomerInput::Name(NameRecord::Customer {
                fingerprint,
                tenant_id: "acme".into(),
                customer_id: name.into(),
            }),
        )
    }

    /// `value` of meter `meter` in the hour `hours` after [`T0`].
    pub fn hour(customer: u64, meter: u16, hours: i64, value: i64) -> CustomerInput {
        CustomerInput::Hour(HourUpdate {
            customer,
            meter,
            hour: T0 + hours * HOUR,
            value: Decimal9::from_int(value),
            events: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use om_model::Decimal9;
    use om_model::command::Grant;
    use om_model::time::HOUR;

    fn grant(customer: &str, amount: i64) -> Command {
        Command::Grant(Grant {
            tenant_id: "acme".into(),
            grant_id: format!("g_{customer}"),
            customer_id: customer.into(),
            amount: Decimal9::from_int(amount),
            priority: 1,
            effective_at: T0,
            expires_at: None,
            price: None,
            currency: None,
        })
    }

    #[test]
    fn a_command_reaches_the_views_only_on_its_customers_owner() {
        let config = config();
        let (fp, _) = customer("c1");
        let mine = owner(fp, 2);
        let mut here = Views::default();
        let mut there = Views::default();
        here.command(&grant("c1", 100), mine, 2);
        there.command(&grant("c1", 100), 1 - mine, 2);
        assert!(here.take_changed() && !there.take_changed());
        let meters = meters(&config);
        let (mut a, mut b) = (Recorder::default(), Recorder::default());
        here.commit(&commit(&config, &meters, T0 + HOUR), &mut a);
        there.commit(&commit(&config, &meters, T0 + HOUR), &mut b);
        assert_eq!(a.of("credit_grants")[0].2.len(), 1);
        assert!(b.of("credit_grants")[0].2.is_empty());
        assert_eq!(here.customers.names.len(), 1);
        assert!(there.customers.names.is_empty());
    }

    #[test]
    fn views_commit_in_order_so_entitlements_see_this_commits_balances() {
        let config = config();
        let meters = meters(&config);
        let (fp, name) = customer("c1");
        let mut views = Views::default();
        views.apply(&name, &config);
        views.command(&grant("c1", 100), owner(fp, 1), 1);
        views.command(
            &Command::Subscribe {
                tenant_id: "acme".into(),
                customer_id: "c1".into(),
                plan: "free".into(),
                effective_at: T0,
            },
            0,
            1,
        );
        let mut out = Recorder::default();
        views.commit(&commit(&config, &meters, T0 + HOUR), &mut out);
        let ai = out.of("entitlements")[0]
            .2
            .iter()
            .find(|r| r.contains("feature: \"ai\""))
            .cloned()
            .expect("an `ai` row");
        assert!(
            ai.contains("has_access: true") && ai.contains("reason: Ok"),
            "{ai}"
        );
        assert_eq!(views.customers.balances.len(), 1);
        assert_eq!(views.customers.balances[0].balance, Decimal9::from_int(100));
    }

    #[test]
    fn nothing_changed_is_reported_once_a_commit_took_the_changes() {
        let config = config();
        let meters = meters(&config);
        let (fp, name) = customer("c1");
        let mut views = Views::default();
        assert!(!views.take_changed());
        views.apply(&name, &config);
        views.apply(&hour(fp, 0, 1, 5), &config);
        assert!(views.take_changed());
        views.commit(&commit(&config, &meters, T0 + HOUR), &mut Discard);
        assert!(!views.take_changed());
    }

    #[test]
    fn a_checkpoint_of_the_views_restores_the_same_rows() {
        let config = config();
        let meters = meters(&config);
        let (fp, name) = customer("c1");
        let mut views = Views::default();
        views.apply(&name, &config);
        views.command(&grant("c1", 100), owner(fp, 1), 1);
        for h in 0..30 {
            views.apply(&hour(fp, 0, h, 3 + h % 4), &config);
        }
        let at = commit(&config, &meters, T0 + 30 * HOUR);
        let saved = bincode::serialize(&views).expect("views serialize");
        let mut restored: Views = bincode::deserialize(&saved).expect("views deserialize");
        let (mut a, mut b) = (Recorder::default(), Recorder::default());
        views.commit(&at, &mut a);
        restored.commit(&at, &mut b);
        assert!(a.0.len() > 5, "{:?}", a.0);
        assert_eq!(a.0, b.0);
    }
}

/// The documented horizons table (`docs/architecture.md`, "Fold points") against each
/// registered view's [`View::fold_point`].
#[cfg(test)]
mod horizons {
    use super::*;
    use om_model::time::{DAY, HOUR};

    /// The `command_horizon` the test runs with.
    const COMMAND_HORIZON: Micros = 3 * DAY;

    /// A fold point formula, evaluated: (closed, now, lateness) -> point.
    type Formula = fn(Micros, Micros, Micros) -> Option<Micros>;

    /// The formulas the table may name.
    fn formula(text: &str) -> Option<Formula> {
        Some(match text {
            "day_start(closed - allowed_lateness)" => |c, _, l| {
                let t = c - l;
                Some(t - t.rem_euclid(DAY))
            },
            "min(day_start(hour_start(closed - allowed_lateness)) - 24h, hour_start(now) - 168h)" => {
                |c, n, l| {
                    let h = (c - l) - (c - l).rem_euclid(HOUR);
                    let d = h - h.rem_euclid(DAY);
                    Some((d - 24 * HOUR).min(n - n.rem_euclid(HOUR) - 168 * HOUR))
                }
            }
            "day_start(closed - max(allowed_lateness, command_horizon))" => |c, _, l| {
                let t = c - l.max(COMMAND_HORIZON);
                Some(t - t.rem_euclid(DAY))
            },
            "none" => |_, _, _| None,
            _ => return None,
        })
    }

    /// The rows of the "Fold points" table: (view, formula).
    fn documented() -> Vec<(String, String)> {
        let path = format!(
            "{}/../docs/architecture.md",
            std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).expect("docs/architecture.md");
        let section = text
            .split("### Fold points")
            .nth(1)
            .expect("a \"### Fold points\" section");
        section
            .lines()
            .skip_while(|l| !l.starts_with("| view |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (
                    cells[1].trim_matches('`').to_string(),
                    cells[2].trim_matches('`').to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn every_views_fold_point_is_the_documented_one() {
        let config = testing::config();
        let meters = testing::meters(&config);
        let table = documented();
        let mut views = Views::default();
        let (_, all) = views.parts();
        let names: Vec<&str> = all.iter().map(|v| v.name()).collect();
        let listed: Vec<&str> = table.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(
            listed, names,
            "the table lists every view, in registration order"
        );
        for lateness in [HOUR, 48 * HOUR, 10 * DAY] {
            for (closed, ahead) in [
                (testing::T0 + 17, 0),
                (testing::T0 + 3 * DAY + 5 * HOUR, 9 * HOUR),
            ] {
                let now = closed + ahead;
                let mut config = config.clone();
                config.pipeline.allowed_lateness = lateness;
                config.pipeline.command_horizon = COMMAND_HORIZON;
                let at = Commit {
                    now: Some(now),
                    closed: Some(closed),
                    ..testing::commit(&config, &meters, now)
                };
                for (view, (name, text)) in all.iter().zip(&table) {
                    let f =
                        formula(text).unwrap_or_else(|| panic!("{name}: unknown formula `{text}`"));
                    assert_eq!(
                        view.fold_point(&at),
                        f(closed, now, lateness),
                        "{name} at closed {closed}, now {now}, lateness {lateness}"
                    );
                }
            }
        }
    }
}
