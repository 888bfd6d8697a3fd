//! What the benchmark binaries share: the workloads they measure.

use anyhow::bail;
use om_model::Config;

/// The built-in config narrowed to a workload:
/// - `usage`: metering only: no burn rules, no plans, and `[costs]`, `[anomaly]` and
///   `[forecasts]` off (the events, rejection, lateness and usage tables);
/// - `credits`: `usage` plus the burn rules (the credit tables too);
/// - `full`: the whole built-in config.
///
/// `OM_BENCH_VIEWS_OFF=anomaly,forecasts,costs,plans` (any of them) switches views off
/// in `full` too, to see what each costs.
pub fn workload_config(workload: &str) -> anyhow::Result<Config> {
    let mut config = Config::builtin();
    match workload {
        "usage" | "credits" => {
            config.plans.clear();
            config.costs.enabled = false;
            config.anomaly.enabled = false;
            config.forecasts = false;
            if workload == "usage" {
                config.burn_rates.clear();
            }
        }
        "full" => {}
        other => bail!("unknown workload {other} (usage, credits or full)"),
    }
    if let Ok(off) = std::env::var("OM_BENCH_VIEWS_OFF") {
        for v in off.split(',') {
            match v {
                "costs" => config.costs.enabled = false,
                "anomaly" => config.anomaly.enabled = false,
                "forecasts" => config.forecasts = false,
                "plans" => config.plans.clear(),
                _ => {}
            }
        }
    }
    Ok(config)
}

/// CPU time (user + system) process `pid` (or `"self"`) has used so far, in seconds:
/// fields 14 and 15 of `/proc/{pid}/stat`, in clock ticks of 1/100 s (Linux's fixed
/// `USER_HZ`).
pub fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    use anyhow::Context;
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let rest = stat
        .rsplit_once(')')
        .with_context(|| format!("{path} has no `)`"))?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .with_context(|| format!("{path} is too short"))?
            .parse::<u64>()? as f64)
    };
    // After the name, field 3 (state) is at index 0, so field n is at n - 3.
    Ok((ticks(14 - 3)? + ticks(15 - 3)?) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_switches_every_view_and_burn_rule_off() {
        let c = workload_config("usage").unwrap();
        assert!(c.plans.is_empty() && c.burn_rates.is_empty());
        assert!(!c.costs.enabled && !c.anomaly.enabled && !c.forecasts);
        let credits = workload_config("credits").unwrap();
        assert!(!credits.burn_rates.is_empty() && credits.plans.is_empty());
        let full = workload_config("full").unwrap();
        assert!(!full.plans.is_empty() && full.costs.enabled && full.anomaly.enabled);
        assert!(workload_config("everything").is_err());
    }
}
