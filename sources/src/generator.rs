//! The synthetic AI/SaaS usage generator behind `openmonetize gen`.
//!
//! Produces a deterministic (per seed) stream of JSONL events shaped like real traffic:
//! LLM generations over several providers and models with token counts, API calls over
//! endpoints, storage readings and seat activity; customers of very different sizes; a
//! mix of RFC 3339 and epoch-millisecond timestamps and two tenants. Like real producers
//! it delivers some events out of order (minutes to hours), repeats some (retries, with
//! the same id), and delivers a few days late (beyond the default 48h lateness).
//! Events match the meters of the built-in default config.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::fmt::Write as _;
use std::io::{self, Write};

use om_model::time::{DAY, MINUTE, Micros, format_micros};

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenOptions {
    /// Number of lines to produce (duplicates included).
    pub events: u64,
    /// Number of distinct customers.
    pub customers: u32,
    /// Random seed: the same options give the same bytes.
    pub seed: u64,
    /// Event time of the first event.
    pub start: Micros,
    /// Event time span covered (at least 1 microsecond): a week by default; a span as
    /// long as the run itself gives live traffic's shape, where event time keeps pace
    /// with the clock.
    pub span: Micros,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            events: 100_000,
            customers: 100,
            seed: 42,
            start: om_model::time::parse_rfc3339("2026-11-01T00:00:00Z").expect("valid"),
            span: 7 * DAY,
        }
    }
}

/// Three credit grants per customer of `opts` as command lines (DESIGN.md 2.2), spread
/// over its time span: a starter grant of 500 that expires after 3 days (priority 1), a
/// top-up of 2,000 from day 1 that never expires (priority 2), and a promotional 100 from
/// day 2 that expires on day 6 (priority 0), voided on day 4 for every third customer.
pub fn grant_commands(opts: &GenOptions) -> Vec<String> {
    let at = |days: i64| format_micros(opts.start + days * DAY);
    let mut lines = Vec::with_capacity(opts.customers as usize * 3);
    for c in 0..opts.customers {
        let tenant = if c % 5 == 0 { "acme" } else { "default" };
        let grant = |n: u32, amount: &str, priority: u32, from: i64, until: Option<i64>| {
            let expires = until
                .map(|d| format!(",\"expires_at\":\"{}\"", at(d)))
                .unwrap_or_default();
            format!(
                "{{\"kind\":\"grant\",\"grant_id\":\"g_{c:05}_{n}\",\"tenant_id\":\"{tenant}\",\"customer_id\":\"cust_{c:05}\",\"amount\":\"{amount}\",\"priority\":{priority},\"effective_at\":\"{}\",\"price\":\"{amount}\",\"currency\":\"USD\"{expires}}}",
                at(from)
            )
        };
        lines.push(grant(0, "500", 1, 0, Some(3)));
        lines.push(grant(1, "2000", 2, 1, None));
        lines.push(grant(2, "100", 0, 2, Some(6)));
        if c % 3 == 0 {
            lines.push(format!(
                "{{\"kind\":\"void_grant\",\"grant_id\":\"g_{c:05}_2\",\"tenant_id\":\"{tenant}\",\"at\":\"{}\"}}",
                at(4)
            ));
        }
    }
    lines
}

/// A plan subscription per customer of `opts` as command lines (DESIGN.md 2.2), for
/// the plans of the built-in config: every fourth customer on `pro` from the start, the
/// others on `free`, and every tenth of those upgraded to `pro` on day 3.
pub fn subscription_commands(opts: &GenOptions) -> Vec<String> {
    let at = |days: i64| format_micros(opts.start + days * DAY);
    let mut lines = Vec::with_capacity(opts.customers as usize);
    for c in 0..opts.customers {
        let tenant = if c % 5 == 0 { "acme" } else { "default" };
        let subscribe = |plan: &str, day: i64| {
            format!(
                "{{\"kind\":\"subscribe\",\"tenant_id\":\"{tenant}\",\"customer_id\":\"cust_{c:05}\",\"plan\":\"{plan}\",\"effective_at\":\"{}\"}}",
                at(day)
            )
        };
        lines.push(subscribe(if c % 4 == 0 { "pro" } else { "free" }, 0));
        if c % 4 != 0 && c % 10 == 1 {
            lines.push(subscribe("pro", 3));
        }
    }
    lines
}

/// The sample commands of `opts`: its grants, then its subscriptions.
pub fn sample_commands(opts: &GenOptions) -> Vec<String> {
    let mut lines = grant_commands(opts);
    lines.extend(subscription_commands(opts));
    lines
}

/// Counts of what was generated, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenSummary {
    /// Lines written.
    pub lines: u64,
    /// Exact repeats of an earlier event (same id).
    pub duplicates: u64,
    /// Events delivered more than 3 days after their time.
    pub very_late: u64,
}

const MODELS: [(&str, &str, u32, u32); 6] = [
    ("openai", "gpt-4o", 1800, 450),
    ("openai", "gpt-4o-mini", 900, 300),
    ("anthropic", "claude-3-5-sonnet", 2200, 500),
    ("anthropic", "claude-3-5-haiku", 700, 200),
    ("google", "gemini-1.5-pro", 1500, 600),
    ("google", "gemini-1.5-flash", 600, 250),
];
const ENDPOINTS: [&str; 4] = ["/v1/search", "/v1/embed", "/v1/files", "/v1/chat"];

/// A deterministic generator of JSONL usage lines.
#[derive(Debug)]
pub struct Generator {
    opts: GenOptions,
    rng: SmallRng,
    produced: u64,
    recent: Vec<String>,
    summary: GenSummary,
}

impl Generator {
    /// A generator for `opts`.
    pub fn new(opts: GenOptions) -> Self {
        let rng = SmallRng::seed_from_u64(opts.seed);
        Generator {
            opts,
            rng,
            produced: 0,
            recent: Vec::new(),
            summary: GenSummary::default(),
        }
    }

    /// What has been produced so far.
    pub fn summary(&self) -> &GenSummary {
        &self.summary
    }

    /// Writes the next line (without newline) into `out`; `false` when done.
    pub fn next_line(&mut self, out: &mut String) -> bool {
        if self.produced >= self.opts.events {
            return false;
        }
        out.clear();
        let n = self.produced;
        self.produced += 1;
        self.summary.lines += 1;
        // Retries: an exact copy of a recent event.
        if !self.recent.is_empty() && self.rng.random_ratio(3, 1000) {
            let i = self.rng.random_range(0..self.recent.len());
            out.push_str(&self.recent[i]);
            self.summary.duplicates += 1;
            return true;
        }
        let span = self.opts.span.max(1);
        let nominal =
            self.opts.start + (n as i128 * span as i128 / self.opts.events.max(1) as i128) as i64;
        let roll: u32 = self.rng.random_range(0..10_000);
        let delay = if roll < 2 {
            self.summary.very_late += 1;
            3 * DAY + self.rng.random_range(0..DAY)
        } else if roll < 150 {
            self.rng.random_range(0..6 * 60) * MINUTE
        } else {
            self.rng.random_range(0..2 * MINUTE)
        };
        let t = (nominal - delay).max(0);
        // Customer sizes follow a rough power law: low ids are much busier.
        let c = {
            let u: f64 = self.rng.random();
            ((u * u * u) * self.opts.customers.max(1) as f64) as u32
        };
        let tenant = if c % 5 == 0 { "acme" } else { "default" };
        let _ = write!(
            out,
            "{{\"id\":\"evt_{:x}_{n}\",\"tenant_id\":\"{tenant}\",\"customer_id\":\"cust_{c:05}\",",
            self.opts.seed
        );
        if n.is_multiple_of(2) {
            let _ = write!(out, "\"timestamp\":\"{}\",", format_micros(t));
        } else {
            let _ = write!(out, "\"timestamp\":{},", t / 1000);
        }
        let kind: u32 = self.rng.random_range(0..100);
        if kind < 60 {
            let (provider, model, input, output) = MODELS[self.rng.random_range(0..MODELS.len())];
            let input_tokens = self.rng.random_range(input / 10..input * 2);
            let output_tokens = self.rng.random_range(output / 10..output * 2);
            let latency = self.rng.random_range(200..9000);
            let _ = write!(
                out,
                "\"event_type\":\"ai_generation\",\"properties\":{{\"provider\":\"{provider}\",\"model\":\"{model}\",\"input_tokens\":{input_tokens},\"output_tokens\":{output_tokens},\"latency_ms\":{latency}}}}}"
            );
        } else if kind < 90 {
            let endpoint = ENDPOINTS[self.rng.random_range(0..ENDPOINTS.len())];
            let _ = write!(
                out,
                "\"event_type\":\"api_call\",\"value\":1,\"properties\":{{\"endpoint\":\"{endpoint}\"}}}}"
            );
        } else if kind < 95 {
            let gb = self.rng.random_range(1..500_000);
            let _ = write!(
                out,
                "\"event_type\":\"storage\",\"value\":\"{}.{:03}\"}}",
                gb / 1000,
                gb % 1000
            );
        } else {
            let user = self.rng.random_range(0..50);
            let _ = write!(
                out,
                "\"event_type\":\"seat\",\"properties\":{{\"user_id\":\"u{user}\"}}}}"
            );
        }
        if self.recent.len() < 64 {
            self.recent.push(out.clone());
        } else {
            let i = (n % 64) as usize;
            self.recent[i].clear();
            self.recent[i].push_str(out);
        }
        true
    }

    /// Writes every remaining line, newline-terminated, to `w`.
    pub fn write_all(&mut self, w: &mut impl Write) -> io::Result<GenSummary> {
        let mut line = String::with_capacity(256);
        while self.next_line(&mut line) {
            w.write_all(line.as_bytes())?;
            w.write_all(b"\n")?;
        }
        Ok(self.summary.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_commands_decode() {
        let opts = GenOptions {
            customers: 6,
            ..GenOptions::default()
        };
        let lines = grant_commands(&opts);
        assert_eq!(lines.len(), 6 * 3 + 2);
        let decoder = crate::CommandDecoder::new(&om_model::Config::builtin());
        for l in &lines {
            decoder
                .decode(l.as_bytes())
                .unwrap_or_else(|r| panic!("{l}: {}", r.reason));
        }
    }
    use crate::Decoder;

    #[test]
    fn same_seed_same_bytes_and_every_line_decodes() {
        let opts = GenOptions {
            events: 5_000,
            customers: 50,
            ..GenOptions::default()
        };
        let mut a = Vec::new();
        let summary = Generator::new(opts.clone()).write_all(&mut a).unwrap();
        let mut b = Vec::new();
        Generator::new(opts).write_all(&mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(summary.lines, 5_000);
        assert!(summary.duplicates > 0);
        let decoder = Decoder::new(om_model::Config::builtin());
        for line in a.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            decoder
                .decode(line)
                .unwrap_or_else(|e| panic!("{}: {}", String::from_utf8_lossy(line), e.reason));
        }
    }
}
