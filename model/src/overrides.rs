//! `OM__` environment overrides of the configuration (STYLE.md: an embedded default or
//! a file, then `OM__*` variables, then CLI flags).
//!
//! `OM__SECTION__KEY=value` sets `[section] key = value` on top of the file: the name
//! after the prefix, split at `__` and lowercased, is the key's path, so
//! `OM__PIPELINE__ALLOWED_LATENESS=2h` sets `[pipeline] allowed_lateness`. The value is
//! taken as TOML when it is a quoted string, an integer, a boolean, an array or an inline
//! table, and as the string written otherwise: `2h`, `gpt-4o` and `0.0025` (decimals are
//! strings in the config, never floats) need no quotes. A list of tables (`meters`,
//! `plans`, `api_keys`, ...) is replaced whole, e.g.
//! `OM__API_KEYS='[{admin = true, sha256 = "..."}]'`; its elements have no path of their
//! own.

use crate::config::error::ConfigError;

/// The prefix of override variables.
pub const PREFIX: &str = "OM__";

/// The `OM__` variables among `vars` (name, value), in name order, so that the result
/// does not depend on the environment's order.
pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<_> = vars
        .into_iter()
        .filter(|(name, _)| name.starts_with(PREFIX))
        .collect();
    out.sort();
    out
}

fn problem(var: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Override {
        var: var.to_string(),
        message: message.into(),
    }
}

/// The value an override sets.
fn value_of(text: &str) -> toml::Value {
    let parsed = format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"));
    match parsed {
        Some(
            v @ (toml::Value::String(_)
            | toml::Value::Integer(_)
            | toml::Value::Boolean(_)
            | toml::Value::Array(_)
            | toml::Value::Table(_)),
        ) => v,
        // Unquoted text, floats and dates: the text as written.
        _ => toml::Value::String(text.to_string()),
    }
}

/// Applies the override `var=value` to a parsed config.
pub fn apply(config: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let name = var
        .strip_prefix(PREFIX)
        .ok_or_else(|| problem(var, format!("does not start with {PREFIX}")))?;
    let path: Vec<String> = name.split("__").map(str::to_ascii_lowercase).collect();
    if path.iter().any(String::is_empty) {
        return Err(problem(
            var,
            "has an empty key: separate keys with exactly two underscores, e.g. OM__PIPELINE__ALLOWED_LATENESS",
        ));
    }
    let (last, sections) = path.split_last().expect("split yields at least one key");
    let mut table = config;
    for (i, key) in sections.iter().enumerate() {
        let entry = table
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            toml::Value::Array(_) => {
                return Err(problem(
                    var,
                    format!(
                        "`{}` is a list: set the whole list, e.g. {PREFIX}{}='[{{...}}, ...]'",
                        path[..=i].join("."),
                        path[..=i].join("__").to_ascii_uppercase()
                    ),
                ));
            }
            _ => {
                return Err(problem(
                    var,
                    format!("`{}` is a value, not a section", path[..=i].join(".")),
                ));
            }
        };
    }
    table.insert(last.clone(), value_of(value));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(toml_text: &str, var: &str, value: &str) -> Result<toml::Table, ConfigError> {
        let mut t: toml::Table = toml_text.parse().unwrap();
        apply(&mut t, var, value)?;
        Ok(t)
    }

    #[test]
    fn a_key_path_sets_or_adds_the_key_with_its_type() {
        let t = applied(
            "[pipeline]\nallowed_lateness = \"1h\"",
            "OM__PIPELINE__ALLOWED_LATENESS",
            "2h",
        )
        .unwrap();
        assert_eq!(t["pipeline"]["allowed_lateness"].as_str(), Some("2h"));
        let t = applied("", "OM__ANOMALY__ENABLED", "false").unwrap();
        assert_eq!(t["anomaly"]["enabled"].as_bool(), Some(false));
        let t = applied("", "OM__COSTS__CREDIT_PRICE", "0.0025").unwrap();
        assert_eq!(t["costs"]["credit_price"].as_str(), Some("0.0025"));
        let t = applied("", "OM__X__N", "42").unwrap();
        assert_eq!(t["x"]["n"].as_integer(), Some(42));
        let t = applied("", "OM__X__QUOTED", "\"a b\"").unwrap();
        assert_eq!(t["x"]["quoted"].as_str(), Some("a b"));
    }

    #[test]
    fn a_list_is_replaced_whole_and_not_indexed() {
        let with_keys = "[[api_keys]]\nadmin = true\nsha256 = \"aa\"";
        let t = applied(
            with_keys,
            "OM__API_KEYS",
            "[{tenant = \"acme\", sha256 = \"bb\"}]",
        )
        .unwrap();
        let keys = t["api_keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0]["tenant"].as_str(), Some("acme"));
        let err = applied(with_keys, "OM__API_KEYS__0__SHA256", "cc").unwrap_err();
        assert!(
            err.to_string().contains("OM__API_KEYS__0__SHA256")
                && err.to_string().contains("OM__API_KEYS='["),
            "{err}"
        );
    }

    #[test]
    fn bad_names_are_refused_with_the_variable_named() {
        let err = applied("", "OM__PIPELINE____LATENESS", "1h").unwrap_err();
        assert!(err.to_string().contains("empty key"), "{err}");
        let err = applied("forecasts = true", "OM__FORECASTS__ENABLED", "true").unwrap_err();
        assert!(err.to_string().contains("not a section"), "{err}");
    }

    #[test]
    fn only_prefixed_variables_count_in_name_order() {
        let vars = [
            ("OM__B", "2"),
            ("OM_PYTHON", "x"),
            ("PATH", "/bin"),
            ("OM__A", "1"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let names: Vec<String> = from_vars(vars).into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["OM__A", "OM__B"]);
    }
}
