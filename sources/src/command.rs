//! Decoding and validation of commands (DESIGN.md 2.2): one JSON object per line or
//! Kafka message -> a [`Command`], or a [`Rejection`] with a specific reason.
//!
//! Commands move money, so they are strict where events are lenient: an unknown field is
//! an error (a misspelt `expire_at` must not silently make a grant last forever), amounts
//! must be positive, `expires_at` must come after `effective_at`, and a plan must exist
//! in the config. Decimals are read from their text, never through `f64`.

use crate::decode::{
    MAX_RECORD_BYTES, Rejection, kind_of, number_of, parse_time, required_string, string_of,
};
use crate::json;
use om_model::command::{Command, Grant};
use om_model::{Config, Decimal9};
use std::collections::BTreeSet;

/// Fields each command kind accepts.
const GRANT_FIELDS: &[&str] = &[
    "kind",
    "tenant_id",
    "grant_id",
    "customer_id",
    "amount",
    "priority",
    "effective_at",
    "expires_at",
    "price",
    "currency",
];
const VOID_FIELDS: &[&str] = &["kind", "tenant_id", "grant_id", "at"];
const SUBSCRIBE_FIELDS: &[&str] = &["kind", "tenant_id", "customer_id", "plan", "effective_at"];
const RETRACT_FIELDS: &[&str] = &["kind", "tenant_id", "event_id"];

/// Priority of a grant that gives none (OpenMeter's default).
pub const DEFAULT_PRIORITY: i64 = 1;

/// Decodes commands against a config (for plan names).
#[derive(Clone, Debug)]
pub struct CommandDecoder {
    plans: BTreeSet<String>,
}

impl CommandDecoder {
    /// A decoder that knows `config`'s plans.
    pub fn new(config: &Config) -> Self {
        CommandDecoder {
            plans: config.plans.iter().map(|p| p.name.clone()).collect(),
        }
    }

    /// Decodes one record.
    #[expect(clippy::too_many_lines, reason = "to be split into stages (issue #9)")]
    pub fn decode(&self, bytes: &[u8]) -> Result<Command, Rejection> {
        let reject = |tenant_id: Option<&str>, reason: String| Rejection {
            tenant_id: tenant_id.map(str::to_string),
            event_id: None,
            reason,
        };
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(reject(
                None,
                format!("command of {} bytes exceeds the 1 MiB limit", bytes.len()),
            ));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| reject(None, format!("command is not valid UTF-8: {e}")))?;
        let mut members = Vec::new();
        if !json::object_members(text, &mut members) {
            let why = match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Err(e) => format!("invalid JSON: {e}"),
                Ok(_) => "not a JSON object".into(),
            };
            return Err(reject(None, format!("command {why}")));
        }
        let fields: Vec<(String, &str)> = members
            .iter()
            .map(|(k, v)| {
                let key = string_of(&text[k.clone()]).map_or_else(String::new, |c| c.into_owned());
                (key, &text[v.clone()])
            })
            .collect();
        let get = |name: &str| {
            fields
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| *v)
                .filter(|v| *v != "null")
        };
        let tenant_id = match get("tenant_id") {
            None => "default".to_string(),
            Some(raw) => match string_of(raw) {
                Some(s) if !s.is_empty() => s.into_owned(),
                _ => {
                    return Err(reject(
                        None,
                        "command field tenant_id must be a non-empty string".into(),
                    ));
                }
            },
        };
        let fail = |reason: String| reject(Some(&tenant_id), reason);
        let kind =
            required_string(get("kind"), "kind").map_err(|e| fail(format!("command {e}")))?;
        let allowed = match kind.as_ref() {
            "grant" => GRANT_FIELDS,
            "void_grant" => VOID_FIELDS,
            "subscribe" => SUBSCRIBE_FIELDS,
            "retract_event" => RETRACT_FIELDS,
            other => {
                return Err(fail(format!(
                    "unknown command kind `{other}` (expected grant, void_grant, subscribe or retract_event)"
                )));
            }
        };
        if let Some((unknown, _)) = fields.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            return Err(fail(format!(
                "{kind}: unknown field `{unknown}` (allowed: {})",
                allowed.join(", ")
            )));
        }
        let with_kind = |e: String| fail(format!("{kind}: {e}"));
        let id = |name: &str| -> Result<String, Rejection> {
            let s = required_string(get(name), name).map_err(&with_kind)?;
            if s.len() > 256 {
                return Err(with_kind(format!(
                    "field {name} is {} bytes long (1..256 allowed)",
                    s.len()
                )));
            }
            Ok(s.into_owned())
        };
        let time = |name: &str| parse_time(get(name), name).map_err(&with_kind);
        let decimal = |name: &str, raw: &str| {
            number_of(raw).map_err(|e| with_kind(format!("field {name} {e}")))
        };
        match kind.as_ref() {
            "grant" => {
                let grant_id = id("grant_id")?;
                let customer_id = id("customer_id")?;
                let amount_raw =
                    get("amount").ok_or_else(|| with_kind("missing field amount".into()))?;
                let amount = decimal("amount", amount_raw)?;
                if amount == Decimal9::ZERO {
                    return Err(with_kind("field amount must be positive, found 0".into()));
                }
                let priority = match get("priority") {
                    None => DEFAULT_PRIORITY,
                    Some(raw) => raw.parse::<i64>().ok().filter(|p| *p >= 0).ok_or_else(|| {
                        with_kind(format!(
                            "field priority must be a non-negative integer, found {}",
                            if raw.starts_with('"') {
                                "a string"
                            } else {
                                raw
                            }
                        ))
                    })?,
                };
                let effective_at = time("effective_at")?;
                let expires_at = match get("expires_at") {
                    None => None,
                    Some(_) => Some(time("expires_at")?),
                };
                if let Some(end) = expires_at
                    && end <= effective_at
                {
                    return Err(with_kind(format!(
                        "expires_at {} is not after effective_at {}",
                        om_model::time::format_micros(end),
                        om_model::time::format_micros(effective_at)
                    )));
                }
                let price = get("price").map(|raw| decimal("price", raw)).transpose()?;
                let currency = match get("currency") {
                    None => None,
                    Some(raw) => match string_of(raw) {
                        Some(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) => {
                            Some(c.into_owned())
                        }
                        _ => {
                            return Err(with_kind(format!(
                                "field currency must be an ISO 4217 code such as \"USD\", found {}",
                                if raw.starts_with('"') {
                                    raw
                                } else {
                                    kind_of(raw)
                                }
                            )));
                        }
                    },
                };
                Ok(Command::Grant(Grant {
                    tenant_id: tenant_id.clone(),
                    grant_id,
                    customer_id,
                    amount,
                    priority,
                    effective_at,
                    expires_at,
                    price,
                    currency,
                }))
            }
            "void_grant" => Ok(Command::VoidGrant {
                grant_id: id("grant_id")?,
                at: time("at")?,
                tenant_id: tenant_id.clone(),
            }),
            "subscribe" => {
                let plan = id("plan")?;
                if !self.plans.contains(&plan) {
                    let known: Vec<&str> = self.plans.iter().map(String::as_str).collect();
                    return Err(with_kind(format!(
                        "plan `{plan}` is not in the config (plans: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    )));
                }
                Ok(Command::Subscribe {
                    customer_id: id("customer_id")?,
                    plan,
                    effective_at: time("effective_at")?,
                    tenant_id: tenant_id.clone(),
                })
            }
            _ => Ok(Command::RetractEvent {
                event_id: id("event_id")?,
                tenant_id: tenant_id.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> CommandDecoder {
        CommandDecoder::new(&Config::builtin())
    }

    fn reason(line: &str) -> String {
        decoder().decode(line.as_bytes()).unwrap_err().reason
    }

    #[test]
    fn decodes_the_design_examples() {
        let d = decoder();
        let grant = d
            .decode(br#"{"kind": "grant", "grant_id": "g1", "tenant_id": "acme", "customer_id": "cust_123", "amount": "1000", "priority": 1, "effective_at": "2024-01-01T00:00:00Z", "expires_at": "2024-02-01T00:00:00Z", "price": "100.00", "currency": "USD"}"#)
            .unwrap();
        let Command::Grant(g) = grant else {
            panic!("not a grant: {grant:?}")
        };
        assert_eq!(g.amount, Decimal9::from_int(1000));
        assert_eq!(g.price, Some(Decimal9::from_int(100)));
        assert_eq!(
            g.expires_at.unwrap() - g.effective_at,
            31 * om_model::time::DAY
        );
        assert_eq!(
            d.decode(br#"{"kind": "void_grant", "grant_id": "g1", "at": "2024-01-20T00:00:00Z"}"#)
                .unwrap(),
            Command::VoidGrant {
                tenant_id: "default".into(),
                grant_id: "g1".into(),
                at: om_model::time::parse_rfc3339("2024-01-20T00:00:00Z").unwrap(),
            }
        );
        assert_eq!(
            d.decode(br#"{"kind": "retract_event", "event_id": "evt_1"}"#)
                .unwrap(),
            Command::RetractEvent {
                tenant_id: "default".into(),
                event_id: "evt_1".into()
            }
        );
        let plan = &Config::builtin().plans[0].name;
        let line = format!(
            r#"{{"kind": "subscribe", "customer_id": "c", "plan": "{plan}", "effective_at": 1704067200000}}"#
        );
        assert!(matches!(
            d.decode(line.as_bytes()),
            Ok(Command::Subscribe { .. })
        ));
    }

    #[test]
    fn rejects_with_specific_reasons() {
        let grant = r#""kind": "grant", "grant_id": "g", "customer_id": "c", "effective_at": "2024-01-01T00:00:00Z""#;
        for (line, expected) in [
            ("{broken", "command invalid JSON"),
            ("[1]", "command not a JSON object"),
            (r#"{"grant_id": "g"}"#, "command missing field kind"),
            (r#"{"kind": "gift"}"#, "unknown command kind `gift`"),
            (
                &format!(r#"{{{grant}, "amount": "-3"}}"#),
                "grant: field amount `-3` is negative",
            ),
            (
                &format!(r#"{{{grant}, "amount": 0}}"#),
                "grant: field amount must be positive",
            ),
            (
                &format!(r#"{{{grant}, "amount": 1.0000000001}}"#),
                "more than 9 fractional digits",
            ),
            (
                &format!(r#"{{{grant}, "amount": 5, "expire_at": "2024-02-01T00:00:00Z"}}"#),
                "grant: unknown field `expire_at`",
            ),
            (
                &format!(r#"{{{grant}, "amount": 5, "expires_at": "2023-12-01T00:00:00Z"}}"#),
                "is not after effective_at",
            ),
            (
                &format!(r#"{{{grant}, "amount": 5, "priority": 1.5}}"#),
                "priority must be a non-negative integer",
            ),
            (
                &format!(r#"{{{grant}, "amount": 5, "currency": "usd"}}"#),
                "ISO 4217",
            ),
            (
                r#"{"kind": "grant", "customer_id": "c", "amount": 1, "effective_at": 0}"#,
                "grant: missing field grant_id",
            ),
            (
                r#"{"kind": "void_grant", "grant_id": "g"}"#,
                "void_grant: missing field at",
            ),
            (
                r#"{"kind": "subscribe", "customer_id": "c", "plan": "gold", "effective_at": 0}"#,
                "plan `gold` is not in the config",
            ),
            (
                r#"{"kind": "retract_event", "tenant_id": ""}"#,
                "tenant_id must be a non-empty string",
            ),
        ] {
            let r = reason(line);
            assert!(r.contains(expected), "{line}: got `{r}`, want `{expected}`");
        }
    }
}
