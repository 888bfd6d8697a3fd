//! Config errors, and the value parsers the config's sections share; each error names
//! the key (or environment variable) and what is allowed.

use crate::decimal::Decimal9;

/// A configuration problem, naming the key and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The text is not valid TOML or does not have the expected shape.
    #[error("config is not valid: {0}")]
    Syntax(String),
    /// A key holds a value that is not allowed.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// Path of the key, e.g. `meters[0].aggregation`.
        key: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// An `OM__` environment override cannot be applied ([`crate::overrides`]).
    #[error("environment variable {var}: {message}")]
    Override {
        /// The variable, e.g. `OM__PIPELINE__ALLOWED_LATENESS`.
        var: String,
        /// What is wrong.
        message: String,
    },
}

pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// A decimal setting: a string such as `"0.0025"` or an integer (never a float).
pub(crate) fn parse_decimal_value(v: &toml::Value, key: &str) -> Result<Decimal9, ConfigError> {
    match v {
        toml::Value::String(s) => Decimal9::parse(s).map_err(|e| invalid(key, e.to_string())),
        toml::Value::Integer(n) => Ok(Decimal9::from_int(*n)),
        _ => Err(invalid(
            key,
            "must be a decimal string such as \"0.0025\" (floats are not exact) or an integer",
        )),
    }
}
