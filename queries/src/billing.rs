//! Billing tables derived from the committed ones: `invoices`, `invoice_lines` and
//! `revenue` (issue #8; the rules are in `docs/billing.md`).
//!
//! They are computed when a query first reads one of them, from the same commit as the
//! other tables (and, in a tenant session, from that tenant's rows only), with the
//! plans' `[plans.pricing]` of the config the session was opened with:
//!
//! - a customer is invoiced for each calendar month (UTC) from the month of its first
//!   subscription to the month holding the watermark, when the plan in effect at the
//!   end of the month has pricing; that plan prices the whole month (no proration);
//! - a priced meter's quantity is its `usage_windows` month value, summed over its
//!   dimension groups; credits applied and overage are the month's `burn` and
//!   `overage` entries of `credit_ledger`;
//! - an invoice is final when its month is: month end <= watermark - allowed_lateness
//!   (the rule of `usage_windows.is_final`);
//! - `revenue` recognizes each priced grant's price by the days of its ledger
//!   ([`om_model::revenue`]).

use crate::Result;
use arrow::array::{
    Array, ArrayRef, BooleanBuilder, Decimal128Array, Decimal128Builder, Int64Builder, StringArray,
    StringBuilder, TimestampMicrosecondArray, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use om_model::pricing::{Currency, PeriodUsage, Pricing, Rated};
use om_model::revenue::{self, GrantSale, LedgerDay};
use om_model::time::format_micros;
use om_model::{Config, Decimal9, Micros, WindowSize, schema};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// The committed tables billing reads.
const INPUTS: [&str; 4] = [
    "usage_windows",
    "subscriptions",
    "credit_ledger",
    "credit_grants",
];

/// The derived tables of one session, computed once on first read.
pub(crate) struct Billing {
    /// A session with the inputs registered (the caller's, possibly tenant-scoped).
    inputs: SessionContext,
    config: Arc<Config>,
    watermark: Option<Micros>,
    /// The job wrote the tables with other plans or another allowed lateness.
    other_config: bool,
    tables: OnceCell<BTreeMap<&'static str, RecordBatch>>,
}

impl Billing {
    /// Prepares the derived tables over the tables registered in `ctx`.
    pub(crate) async fn new(
        ctx: &SessionContext,
        config: Arc<Config>,
        watermark: Option<Micros>,
        other_config: bool,
    ) -> Result<Arc<Billing>> {
        // The caller's runtime: its object stores (s3://, memory://) read the files.
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_default_features()
            .with_runtime_env(ctx.runtime_env())
            .build();
        let inputs = SessionContext::new_with_state(state);
        for name in INPUTS {
            inputs.register_table(name, ctx.table_provider(name).await?)?;
        }
        Ok(Arc::new(Billing {
            inputs,
            config,
            watermark,
            other_config,
            tables: OnceCell::new(),
        }))
    }

    /// A provider for one derived table.
    pub(crate) fn table(self: &Arc<Self>, name: &'static str) -> Arc<dyn TableProvider> {
        Arc::new(Derived {
            billing: Arc::clone(self),
            name,
            schema: schema::table_schema(name).expect("a derived table"),
        })
    }

    async fn tables(&self) -> Result<&BTreeMap<&'static str, RecordBatch>> {
        self.tables.get_or_try_init(|| self.compute()).await
    }

    async fn rows(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        Ok(self.inputs.sql(sql).await?.collect().await?)
    }

    async fn compute(&self) -> Result<BTreeMap<&'static str, RecordBatch>> {
        let facts = Facts::read(self).await?;
        let (invoices, lines) = self.invoices(&facts)?;
        let revenue = self.revenue(&facts)?;
        Ok(BTreeMap::from([
            ("invoices", invoices),
            ("invoice_lines", lines),
            ("revenue", revenue),
        ]))
    }

    fn invoices(&self, facts: &Facts) -> Result<(RecordBatch, RecordBatch)> {
        let mut inv = InvoiceColumns::default();
        let mut lines = LineColumns::default();
        let Some(now) = self.watermark else {
            return Ok((inv.finish()?, lines.finish()?));
        };
        let final_before = now - self.config.pipeline.allowed_lateness;
        let plans: HashMap<&str, &Pricing> = self
            .config
            .plans
            .iter()
            .filter_map(|p| Some((p.name.as_str(), p.pricing.as_ref()?)))
            .collect();
        let last = WindowSize::Month.start(now);
        for ((tenant, customer), subs) in &facts.subscriptions {
            let Some((&first, _)) = subs.first_key_value() else {
                continue;
            };
            let mut start = WindowSize::Month.start(first);
            while start <= last {
                let end = WindowSize::Month.end(start);
                let plan = subs.range(..end).next_back().map(|(_, p)| p.as_str());
                if let Some((plan, pricing)) = plan.and_then(|p| Some((p, *plans.get(p)?))) {
                    let key = (tenant.clone(), customer.clone());
                    let period = Period {
                        facts,
                        key: &key,
                        start,
                        end,
                    };
                    let rated = pricing.rate(&period).map_err(|e| {
                        external(format!(
                            "invoice of {tenant}/{customer} for {}: {e}",
                            period_label(start)
                        ))
                    })?;
                    let label = period_label(start);
                    inv.push(&InvoiceHead {
                        tenant,
                        customer,
                        label: &label,
                        start,
                        end,
                        plan,
                        currency: &pricing.currency.code,
                        rated: &rated,
                        applied: period.credits_applied(),
                        overage: period.overage(),
                        is_final: end <= final_before,
                        as_of: now,
                    });
                    lines.push(tenant, customer, &label, &pricing.currency.code, &rated);
                }
                start = end;
            }
        }
        Ok((inv.finish()?, lines.finish()?))
    }

    fn revenue(&self, facts: &Facts) -> Result<RecordBatch> {
        let mut cols = RevenueColumns::default();
        for ((tenant, grant_id), g) in &facts.grants {
            let Some(price) = g.price else { continue };
            let code = g.currency.as_deref().unwrap_or("USD");
            let sale = GrantSale {
                amount: g.amount,
                price,
                currency: Currency::parse(code).unwrap_or(Currency {
                    code: code.to_string(),
                    minor_units: 2,
                }),
            };
            let days: Vec<LedgerDay> = g.days.values().cloned().collect();
            for day in revenue::recognize(&sale, &days) {
                let ledger = &g.days[&day.day];
                cols.push(tenant, &g.customer, grant_id, &sale, &day, ledger);
            }
        }
        cols.finish()
    }
}

fn external(e: impl std::fmt::Display) -> crate::Error {
    crate::Error::Billing(e.to_string())
}

/// `2026-11` for the month starting at `start`.
pub fn period_label(start: Micros) -> String {
    format_micros(start)[..7].to_string()
}

/// Parses `2026-11` into the month's start.
pub fn parse_period(text: &str) -> Option<Micros> {
    let t = om_model::time::parse_rfc3339(&format!("{text}-01T00:00:00Z"))?;
    (text.len() == 7 && period_label(t) == text).then_some(t)
}

type Customer = (String, String);

/// A priced grant and its ledger by day.
struct GrantFacts {
    customer: String,
    amount: Decimal9,
    price: Option<Decimal9>,
    currency: Option<String>,
    days: BTreeMap<Micros, LedgerDay>,
}

/// What billing reads from the inputs.
#[derive(Default)]
struct Facts {
    /// (tenant, customer, meter, month start) -> month usage over all dimension groups.
    usage: HashMap<(Customer, String, Micros), Decimal9>,
    /// Customer -> effective_at -> plan.
    subscriptions: BTreeMap<Customer, BTreeMap<Micros, String>>,
    /// (customer, month start) -> (credits burned from grants, overage).
    credits: HashMap<(Customer, Micros), (Decimal9, Decimal9)>,
    /// (tenant, grant) -> grant.
    grants: BTreeMap<(String, String), GrantFacts>,
}

impl Facts {
    async fn read(b: &Billing) -> Result<Facts> {
        let mut f = Facts::default();
        let usage = b
            .rows(
                "SELECT tenant_id, customer_id, meter, window_start, sum(value) FROM usage_windows \
                 WHERE window_size = 'month' GROUP BY tenant_id, customer_id, meter, window_start",
            )
            .await?;
        for batch in &usage {
            let (t, c, m) = (strings(batch, 0)?, strings(batch, 1)?, strings(batch, 2)?);
            let (start, value) = (times(batch, 3)?, decimals(batch, 4)?);
            for i in 0..batch.num_rows() {
                let key = (
                    (t.value(i).into(), c.value(i).into()),
                    m.value(i).into(),
                    start.value(i),
                );
                f.usage.insert(key, Decimal9::from_raw(value.value(i)));
            }
        }
        let subs = b
            .rows("SELECT tenant_id, customer_id, plan, effective_at FROM subscriptions")
            .await?;
        for batch in &subs {
            let (t, c, p, at) = (
                strings(batch, 0)?,
                strings(batch, 1)?,
                strings(batch, 2)?,
                times(batch, 3)?,
            );
            for i in 0..batch.num_rows() {
                f.subscriptions
                    .entry((t.value(i).into(), c.value(i).into()))
                    .or_default()
                    .insert(at.value(i), p.value(i).into());
            }
        }
        let grants = b
            .rows("SELECT tenant_id, customer_id, grant_id, amount, price, currency FROM credit_grants")
            .await?;
        for batch in &grants {
            let (t, c, g) = (strings(batch, 0)?, strings(batch, 1)?, strings(batch, 2)?);
            let (amount, price, cur) =
                (decimals(batch, 3)?, decimals(batch, 4)?, strings(batch, 5)?);
            for i in 0..batch.num_rows() {
                f.grants.insert(
                    (t.value(i).into(), g.value(i).into()),
                    GrantFacts {
                        customer: c.value(i).into(),
                        amount: Decimal9::from_raw(amount.value(i)),
                        price: price
                            .is_valid(i)
                            .then(|| Decimal9::from_raw(price.value(i))),
                        currency: cur.is_valid(i).then(|| cur.value(i).to_string()),
                        days: BTreeMap::new(),
                    },
                );
            }
        }
        let ledger = b
            .rows("SELECT tenant_id, customer_id, grant_id, entry, at, amount FROM credit_ledger")
            .await?;
        for batch in &ledger {
            let (t, c, g, e) = (
                strings(batch, 0)?,
                strings(batch, 1)?,
                strings(batch, 2)?,
                strings(batch, 3)?,
            );
            let (at, amount) = (times(batch, 4)?, decimals(batch, 5)?);
            for i in 0..batch.num_rows() {
                let (at, amount) = (at.value(i), Decimal9::from_raw(amount.value(i)));
                let customer = (t.value(i).to_string(), c.value(i).to_string());
                let month = WindowSize::Month.start(at);
                match e.value(i) {
                    "burn" => f.credits.entry((customer, month)).or_default().0 += amount,
                    "overage" => f.credits.entry((customer, month)).or_default().1 += amount,
                    _ => {}
                }
                if !g.is_valid(i) {
                    continue;
                }
                let Some(grant) = f.grants.get_mut(&(t.value(i).into(), g.value(i).into())) else {
                    continue;
                };
                let day = WindowSize::Day.start(at);
                let d = grant.days.entry(day).or_insert_with(|| LedgerDay {
                    day,
                    first_at: at,
                    last_at: at,
                    ..LedgerDay::default()
                });
                d.entries += 1;
                d.first_at = d.first_at.min(at);
                d.last_at = d.last_at.max(at);
                match e.value(i) {
                    "burn" => d.consumed += amount,
                    "expiry" | "void" => d.lost += amount,
                    _ => {}
                }
            }
        }
        Ok(f)
    }
}

/// One customer's month, as rating reads it.
struct Period<'a> {
    facts: &'a Facts,
    key: &'a Customer,
    start: Micros,
    end: Micros,
}

impl PeriodUsage for Period<'_> {
    fn usage(&self, meter: &str) -> Decimal9 {
        debug_assert_eq!(WindowSize::Month.end(self.start), self.end);
        self.facts
            .usage
            .get(&(self.key.clone(), meter.to_string(), self.start))
            .copied()
            .unwrap_or(Decimal9::ZERO)
    }
    fn credits_applied(&self) -> Decimal9 {
        self.credits().0
    }
    fn overage(&self) -> Decimal9 {
        self.credits().1
    }
}

impl Period<'_> {
    fn credits(&self) -> (Decimal9, Decimal9) {
        self.facts
            .credits
            .get(&(self.key.clone(), self.start))
            .copied()
            .unwrap_or_default()
    }
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, i: usize, what: &str) -> Result<&'a T> {
    batch.column(i).as_any().downcast_ref::<T>().ok_or_else(|| {
        external(format!(
            "input column {i} is {} where {what} was expected",
            batch.column(i).data_type()
        ))
    })
}

fn strings(batch: &RecordBatch, i: usize) -> Result<StringArray> {
    let a = arrow::compute::cast(batch.column(i), &DataType::Utf8)?;
    Ok(a.as_any()
        .downcast_ref::<StringArray>()
        .expect("cast to Utf8")
        .clone())
}

fn times(batch: &RecordBatch, i: usize) -> Result<&TimestampMicrosecondArray> {
    column(batch, i, "a timestamp")
}

fn decimals(batch: &RecordBatch, i: usize) -> Result<&Decimal128Array> {
    column(batch, i, "a decimal")
}

fn dec() -> Decimal128Builder {
    Decimal128Builder::new().with_data_type(schema::DECIMAL)
}

fn ts() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

/// What an `invoices` row says.
struct InvoiceHead<'a> {
    tenant: &'a str,
    customer: &'a str,
    label: &'a str,
    start: Micros,
    end: Micros,
    plan: &'a str,
    currency: &'a str,
    rated: &'a Rated,
    applied: Decimal9,
    overage: Decimal9,
    is_final: bool,
    as_of: Micros,
}

struct InvoiceColumns {
    text: [StringBuilder; 5],
    times: [TimestampMicrosecondBuilder; 3],
    amounts: [Decimal128Builder; 5],
    lines: Int64Builder,
    is_final: BooleanBuilder,
}

impl Default for InvoiceColumns {
    fn default() -> Self {
        InvoiceColumns {
            text: std::array::from_fn(|_| StringBuilder::new()),
            times: std::array::from_fn(|_| ts()),
            amounts: std::array::from_fn(|_| dec()),
            lines: Int64Builder::new(),
            is_final: BooleanBuilder::new(),
        }
    }
}

impl InvoiceColumns {
    fn push(&mut self, h: &InvoiceHead<'_>) {
        for (b, v) in self
            .text
            .iter_mut()
            .zip([h.tenant, h.customer, h.label, h.plan, h.currency])
        {
            b.append_value(v);
        }
        for (b, v) in self.times.iter_mut().zip([h.start, h.end, h.as_of]) {
            b.append_value(v);
        }
        let r = h.rated;
        for (b, v) in self.amounts.iter_mut().zip([
            r.subtotal,
            r.minimum_true_up,
            r.total,
            h.applied,
            h.overage,
        ]) {
            b.append_value(v.raw());
        }
        self.lines.append_value(r.lines.len() as i64);
        self.is_final.append_value(h.is_final);
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let [tenant, customer, period, plan, currency] = self
            .text
            .each_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef);
        let [start, end, as_of] = self
            .times
            .each_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef);
        let [a0, a1, a2, a3, a4] = self
            .amounts
            .each_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef);
        Ok(RecordBatch::try_new(
            Arc::clone(&schema::INVOICES),
            vec![
                tenant,
                customer,
                period,
                start,
                end,
                plan,
                currency,
                a0,
                a1,
                a2,
                a3,
                a4,
                Arc::new(self.lines.finish()),
                Arc::new(self.is_final.finish()),
                as_of,
            ],
        )?)
    }
}

#[derive(Default)]
struct LineColumns {
    tenant: StringBuilder,
    customer: StringBuilder,
    period: StringBuilder,
    line: Int64Builder,
    kind: StringBuilder,
    meter: StringBuilder,
    price_model: StringBuilder,
    usage: Option<Decimal128Builder>,
    tier: Int64Builder,
    amounts: Option<[Decimal128Builder; 6]>,
    currency: StringBuilder,
}

impl LineColumns {
    fn push(&mut self, tenant: &str, customer: &str, period: &str, currency: &str, r: &Rated) {
        let amounts = self
            .amounts
            .get_or_insert_with(|| std::array::from_fn(|_| dec()));
        for (n, l) in r.lines.iter().enumerate() {
            self.tenant.append_value(tenant);
            self.customer.append_value(customer);
            self.period.append_value(period);
            self.line.append_value(n as i64 + 1);
            self.kind.append_value(l.kind.as_str());
            self.meter.append_option(l.meter.as_deref());
            self.price_model.append_option(l.price_model);
            self.usage
                .get_or_insert_with(dec)
                .append_option(l.usage.map(Decimal9::raw));
            self.tier.append_option(l.tier.map(i64::from));
            let values = [
                l.tier_from,
                l.tier_to,
                Some(l.quantity),
                l.unit_price,
                Some(l.flat_amount),
                Some(l.amount),
            ];
            for (b, v) in amounts.iter_mut().zip(values) {
                b.append_option(v.map(Decimal9::raw));
            }
            self.currency.append_value(currency);
        }
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let amounts = self
            .amounts
            .get_or_insert_with(|| std::array::from_fn(|_| dec()));
        let [from, to, q, unit, flat, amount] =
            amounts.each_mut().map(|b| Arc::new(b.finish()) as ArrayRef);
        Ok(RecordBatch::try_new(
            Arc::clone(&schema::INVOICE_LINES),
            vec![
                Arc::new(self.tenant.finish()),
                Arc::new(self.customer.finish()),
                Arc::new(self.period.finish()),
                Arc::new(self.line.finish()),
                Arc::new(self.kind.finish()),
                Arc::new(self.meter.finish()),
                Arc::new(self.price_model.finish()),
                Arc::new(self.usage.get_or_insert_with(dec).finish()),
                Arc::new(self.tier.finish()),
                from,
                to,
                q,
                unit,
                flat,
                amount,
                Arc::new(self.currency.finish()),
            ],
        )?)
    }
}

struct RevenueColumns {
    text: [StringBuilder; 4],
    times: [TimestampMicrosecondBuilder; 3],
    amounts: [Decimal128Builder; 8],
    entries: Int64Builder,
}

impl Default for RevenueColumns {
    fn default() -> Self {
        RevenueColumns {
            text: std::array::from_fn(|_| StringBuilder::new()),
            times: std::array::from_fn(|_| ts()),
            amounts: std::array::from_fn(|_| dec()),
            entries: Int64Builder::new(),
        }
    }
}

impl RevenueColumns {
    fn push(
        &mut self,
        tenant: &str,
        customer: &str,
        grant: &str,
        sale: &GrantSale,
        day: &revenue::RevenueDay,
        ledger: &LedgerDay,
    ) {
        for (b, v) in
            self.text
                .iter_mut()
                .zip([tenant, customer, grant, sale.currency.code.as_str()])
        {
            b.append_value(v);
        }
        for (b, v) in self
            .times
            .iter_mut()
            .zip([day.day, ledger.first_at, ledger.last_at])
        {
            b.append_value(v);
        }
        let values = [
            sale.price,
            day.credits_consumed,
            day.credits_lost,
            day.recognized,
            day.breakage,
            day.recognized_to_date,
            day.breakage_to_date,
            day.deferred,
        ];
        for (b, v) in self.amounts.iter_mut().zip(values) {
            b.append_value(v.raw());
        }
        self.entries.append_value(i64::from(ledger.entries));
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let [tenant, customer, grant, currency] = self
            .text
            .each_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef);
        let [day, from, to] = self
            .times
            .each_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef);
        let [price, consumed, lost, rec, brk, rec_td, brk_td, deferred] = self
            .amounts
            .each_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef);
        Ok(RecordBatch::try_new(
            Arc::clone(&schema::REVENUE),
            vec![
                tenant,
                customer,
                grant,
                day,
                currency,
                price,
                consumed,
                lost,
                rec,
                brk,
                rec_td,
                brk_td,
                deferred,
                Arc::new(self.entries.finish()),
                from,
                to,
            ],
        )?)
    }
}

/// A derived table: computes its rows (with the others) on the first scan.
struct Derived {
    billing: Arc<Billing>,
    name: &'static str,
    schema: SchemaRef,
}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Derived({})", self.name)
    }
}

#[async_trait::async_trait]
impl TableProvider for Derived {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        // Invoices depend on the plans and the allowed lateness; revenue on neither.
        if self.billing.other_config && self.name != "revenue" {
            return Err(DataFusionError::External(Box::new(external(
                "the job that wrote these tables ran with other [[plans]] (pricing) or another \
                 pipeline.allowed_lateness than this config: pass the job's config (--config FILE)",
            ))));
        }
        let tables = self
            .billing
            .tables()
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let batch = tables[self.name].clone();
        let mem = MemTable::try_new(Arc::clone(&self.schema), vec![vec![batch]])?;
        mem.scan(state, projection, filters, limit).await
    }
}
