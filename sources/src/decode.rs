//! Decoding and validating one input record (a JSONL line or a Kafka message) into an
//! accepted-event candidate with its meter readings, or a rejection with a specific
//! reason (DESIGN.md 2.1). Never panics on input; numbers are read from their text.

use om_model::{Aggregation, Config, Decimal9, DecodedEvent, Event, Reading, ReadingValue, time};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Largest accepted record: 1 MiB.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Why a record was rejected, plus what could be read of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Tenant, when it could be read.
    pub tenant_id: Option<String>,
    /// Event id, when it could be read.
    pub event_id: Option<String>,
    /// Specific reason, e.g. `missing field customer_id`.
    pub reason: String,
}

/// The top-level fields we read; unknown fields are ignored. Both the plain form and
/// CloudEvents 1.0 structured form (`specversion`, `subject`, `type`, `time`, `data`).
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    tenant_id: Option<&'a RawValue>,
    #[serde(borrow)]
    customer_id: Option<&'a RawValue>,
    #[serde(borrow)]
    event_type: Option<&'a RawValue>,
    #[serde(borrow)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow)]
    value: Option<&'a RawValue>,
    #[serde(borrow)]
    properties: Option<&'a RawValue>,
    #[serde(borrow)]
    specversion: Option<&'a RawValue>,
    #[serde(borrow)]
    subject: Option<&'a RawValue>,
    #[serde(borrow, rename = "type")]
    ce_type: Option<&'a RawValue>,
    #[serde(borrow)]
    time: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// A JSON object's members, keys borrowed when they hold no escapes.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Members<'a> {
    fn parse(raw: &'a RawValue) -> Option<Self> {
        if !raw.get().starts_with('{') {
            return None;
        }
        if let Ok(m) = serde_json::from_str::<BTreeMap<&'a str, &'a RawValue>>(raw.get()) {
            return Some(Members(
                m.into_iter().map(|(k, v)| (Cow::Borrowed(k), v)).collect(),
            ));
        }
        let m: BTreeMap<String, &'a RawValue> = serde_json::from_str(raw.get()).ok()?;
        Some(Members(
            m.into_iter().map(|(k, v)| (Cow::Owned(k), v)).collect(),
        ))
    }

    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// Decodes records against one configuration.
#[derive(Clone, Debug)]
pub struct Decoder {
    config: Config,
}

impl Decoder {
    /// A decoder validating against `config`'s meters.
    pub fn new(config: Config) -> Self {
        Decoder { config }
    }

    /// The configuration it validates against.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Decodes one record.
    pub fn decode(&self, bytes: &[u8]) -> Result<DecodedEvent, Rejection> {
        let reject = |reason: String| Rejection {
            tenant_id: None,
            event_id: None,
            reason,
        };
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(reject(format!(
                "record of {} bytes exceeds the 1 MiB limit",
                bytes.len()
            )));
        }
        let text =
            std::str::from_utf8(bytes).map_err(|e| reject(format!("not valid UTF-8: {e}")))?;
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(reject("empty record".into()));
        }
        if !trimmed.starts_with('{') {
            return Err(reject("not a JSON object".into()));
        }
        let env: Envelope<'_> =
            serde_json::from_str(trimmed).map_err(|e| reject(format!("invalid JSON: {e}")))?;
        let cloud = env.specversion.is_some();

        let id = required_string(env.id, "id").map_err(reject)?;
        if id.len() > 256 {
            return Err(reject(format!(
                "field id is {} bytes long (1..256 allowed)",
                id.len()
            )));
        }
        let tenant_id = match env.tenant_id {
            None => "default".to_string(),
            Some(raw) if raw.get() == "null" => "default".to_string(),
            Some(raw) => string_of(raw)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| Rejection {
                    tenant_id: None,
                    event_id: Some(id.clone()),
                    reason: "field tenant_id must be a non-empty string".into(),
                })?,
        };
        let with_ids = |reason: String| Rejection {
            tenant_id: Some(tenant_id.clone()),
            event_id: Some(id.clone()),
            reason,
        };

        if cloud {
            let version = string_of(env.specversion.expect("checked")).unwrap_or_default();
            if version != "1.0" {
                return Err(with_ids(format!(
                    "CloudEvents specversion `{version}` is not supported (only 1.0)"
                )));
            }
        }
        let (customer_raw, customer_name) = if cloud {
            (env.subject, "subject")
        } else {
            (env.customer_id, "customer_id")
        };
        let (type_raw, type_name) = if cloud {
            (env.ce_type, "type")
        } else {
            (env.event_type, "event_type")
        };
        let (time_raw, time_name) = if cloud {
            (env.time, "time")
        } else {
            (env.timestamp, "timestamp")
        };
        let props_raw = if cloud { env.data } else { env.properties };
        let props_name = if cloud { "data" } else { "properties" };

        let customer_id = required_string(customer_raw, customer_name).map_err(with_ids)?;
        let event_type = required_string(type_raw, type_name).map_err(with_ids)?;
        let timestamp = parse_time(time_raw, time_name).map_err(with_ids)?;
        let value = match env.value {
            None => Decimal9::ONE,
            Some(raw) => number_of(raw).map_err(|e| with_ids(format!("field value {e}")))?,
        };
        let properties = match props_raw {
            None => None,
            Some(raw) if raw.get() == "null" => None,
            Some(raw) => Some(
                Members::parse(raw)
                    .ok_or_else(|| with_ids(format!("field {props_name} must be a JSON object")))?,
            ),
        };

        let mut readings = Vec::new();
        for (index, meter) in self.config.meters_for(&event_type) {
            let found = lookup(meter.value.segments(), env.value, properties.as_ref());
            let meter_err = |what: &str| {
                with_ids(format!(
                    "meter {}: {} {what}",
                    meter.name,
                    meter.value.as_str()
                ))
            };
            let value = if meter.value.segments() == ["value"] && found.is_none() {
                ReadingValue::Number(value)
            } else {
                let raw = found.ok_or_else(|| meter_err("is missing"))?;
                if meter.aggregation == Aggregation::UniqueCount {
                    ReadingValue::Scalar(scalar_of(raw).map_err(&meter_err)?)
                } else {
                    ReadingValue::Number(number_of(raw).map_err(|e| meter_err(&e))?)
                }
            };
            let mut dimensions = String::from("{");
            for (n, (dim, path)) in meter.group_by.iter().enumerate() {
                if n > 0 {
                    dimensions.push(',');
                }
                push_json_string(&mut dimensions, dim);
                dimensions.push(':');
                match lookup(path.segments(), env.value, properties.as_ref()) {
                    Some(raw) => match string_of(raw) {
                        Some(s) => push_json_string(&mut dimensions, &s),
                        None if raw.get().starts_with(['{', '[']) => {
                            return Err(with_ids(format!(
                                "meter {}: group_by {dim} at {} must be a scalar",
                                meter.name,
                                path.as_str()
                            )));
                        }
                        None => dimensions.push_str(raw.get()),
                    },
                    None => dimensions.push_str("null"),
                }
            }
            dimensions.push('}');
            readings.push(Reading {
                meter: index as u16,
                dimensions,
                value,
            });
        }

        let event = Event {
            tenant_id,
            id,
            customer_id,
            event_type,
            timestamp,
            value,
            properties: props_raw
                .filter(|r| r.get() != "null")
                .map(|r| r.get().to_string()),
        };
        Ok(DecodedEvent { event, readings })
    }
}

/// Follows a value path (`["properties", "a", "b"]`) through the event.
fn lookup<'a>(
    segments: &[String],
    value: Option<&'a RawValue>,
    properties: Option<&Members<'a>>,
) -> Option<&'a RawValue> {
    match segments.split_first()? {
        (root, []) if root == "value" => value.filter(|v| v.get() != "null"),
        (root, rest) if root == "properties" => {
            let (first, deeper) = rest.split_first()?;
            let mut current = properties?.get(first)?;
            for seg in deeper {
                current = Members::parse(current)?.get(seg)?;
            }
            (current.get() != "null").then_some(current)
        }
        _ => None,
    }
}

fn string_of(raw: &RawValue) -> Option<String> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    serde_json::from_str::<&str>(text)
        .map(str::to_string)
        .or_else(|_| serde_json::from_str::<String>(text))
        .ok()
}

fn required_string(raw: Option<&RawValue>, name: &str) -> Result<String, String> {
    let raw = raw.ok_or_else(|| format!("missing field {name}"))?;
    match string_of(raw) {
        Some(s) if !s.is_empty() => Ok(s),
        Some(_) => Err(format!("field {name} must not be empty")),
        None => Err(format!(
            "field {name} must be a string, found {}",
            kind_of(raw)
        )),
    }
}

fn kind_of(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

fn parse_time(raw: Option<&RawValue>, name: &str) -> Result<i64, String> {
    let raw = raw.ok_or_else(|| format!("missing field {name}"))?;
    let text = raw.get();
    if let Some(s) = string_of(raw) {
        return time::parse_rfc3339(&s).ok_or_else(|| {
            format!("field {name} `{s}` is not an RFC 3339 timestamp (e.g. 2024-01-15T10:30:00Z)")
        });
    }
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        let ms: i64 = text
            .parse()
            .map_err(|_| format!("field {name} {text} is out of range"))?;
        return time::from_epoch_millis(ms).ok_or_else(|| {
            format!("field {name} {text} is outside 1970..9999 as epoch milliseconds")
        });
    }
    Err(format!(
        "field {name} must be an RFC 3339 string or integer epoch milliseconds, found {text}"
    ))
}

/// Reads a non-negative exact decimal from a JSON number or decimal string.
fn number_of(raw: &RawValue) -> Result<Decimal9, String> {
    let text = raw.get();
    let digits: Cow<'_, str> = match string_of(raw) {
        Some(s) => Cow::Owned(s),
        None if text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) => {
            Cow::Borrowed(text)
        }
        None => return Err(format!("must be a number, found {}", kind_of(raw))),
    };
    let d = Decimal9::parse(digits.trim()).map_err(|e| e.to_string())?;
    if d.is_negative() {
        return Err(format!("`{digits}` is negative"));
    }
    Ok(d)
}

/// Canonical text of a JSON scalar for unique_count: strings as JSON strings, numbers as
/// exact decimals when they are (so `2` and `2.0` are one value), booleans as themselves.
fn scalar_of(raw: &RawValue) -> Result<String, &'static str> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => {
            let s = string_of(raw).ok_or("is not a valid string")?;
            let mut out = String::with_capacity(s.len() + 2);
            push_json_string(&mut out, &s);
            Ok(out)
        }
        Some(b'{' | b'[') => Err("must be a scalar, found an object or array"),
        Some(b'n') => Err("is null"),
        Some(b't' | b'f') => Ok(text.to_string()),
        _ => Ok(Decimal9::parse(text)
            .map(|d| d.to_string())
            .unwrap_or_else(|_| text.to_string())),
    }
}

/// Appends `s` as a JSON string literal.
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> Decoder {
        let path = format!(
            "{}/../../shared/golden/small/config.toml",
            env!("CARGO_MANIFEST_DIR")
        );
        Decoder::new(Config::from_toml(&std::fs::read_to_string(path).unwrap()).unwrap())
    }

    fn reason(line: &str) -> String {
        decoder().decode(line.as_bytes()).unwrap_err().reason
    }

    #[test]
    fn decodes_the_design_example() {
        let line = r#"{"id": "evt_1", "tenant_id": "acme", "customer_id": "cust_123", "event_type": "ai_generation",
 "timestamp": "2024-01-15T10:30:00Z", "value": 1,
 "properties": {"provider": "openai", "model": "gpt-4o", "input_tokens": 1200, "output_tokens": 310, "latency_ms": 20}}"#;
        let d = decoder().decode(line.as_bytes()).unwrap();
        assert_eq!(d.event.tenant_id, "acme");
        assert_eq!(
            d.event.timestamp,
            time::parse_rfc3339("2024-01-15T10:30:00Z").unwrap()
        );
        let input = d.readings.iter().find(|r| r.meter == 1).unwrap();
        assert_eq!(input.dimensions, r#"{"model":"gpt-4o"}"#);
        assert_eq!(input.value, ReadingValue::Number(Decimal9::from_int(1200)));
        assert_eq!(
            d.readings.len(),
            3,
            "input_tokens, output_tokens, min_latency"
        );
    }

    #[test]
    fn accepts_epoch_millis_decimal_strings_and_defaults() {
        let d = decoder()
            .decode(br#"{"id":"a","customer_id":"c","event_type":"storage","timestamp":1705314600000,"value":"12.000000001"}"#)
            .unwrap();
        assert_eq!(d.event.tenant_id, "default");
        assert_eq!(d.event.value.to_string(), "12.000000001");
        assert_eq!(d.readings.len(), 2);
        let d = decoder().decode(br#"{"id":"a","customer_id":"c","event_type":"api_call","timestamp":1705314600000}"#).unwrap();
        assert_eq!(d.readings[0].value, ReadingValue::Number(Decimal9::ONE));
    }

    #[test]
    fn accepts_cloudevents() {
        let line = r#"{"specversion":"1.0","id":"ce1","source":"app","type":"ai_generation","subject":"cust_9",
            "time":"2024-01-15T10:30:00+01:00","data":{"model":"gpt-4o","input_tokens":5,"output_tokens":6,"latency_ms":7}}"#;
        let d = decoder().decode(line.as_bytes()).unwrap();
        assert_eq!(d.event.customer_id, "cust_9");
        assert_eq!(d.event.event_type, "ai_generation");
        assert_eq!(
            d.event.timestamp,
            time::parse_rfc3339("2024-01-15T09:30:00Z").unwrap()
        );
        assert!(d.event.properties.unwrap().contains("gpt-4o"));
    }

    #[test]
    fn missing_group_by_property_is_a_null_dimension() {
        let line = r#"{"id":"a","customer_id":"c","event_type":"ai_generation","timestamp":1705314600000,"properties":{"input_tokens":1,"output_tokens":2,"latency_ms":3}}"#;
        let d = decoder().decode(line.as_bytes()).unwrap();
        assert_eq!(d.readings[0].dimensions, r#"{"model":null}"#);
    }

    #[test]
    fn rejects_with_specific_reasons() {
        let cases = [
            ("not json at all", "not a JSON object"),
            ("", "empty record"),
            ("[1, 2, 3]", "not a JSON object"),
            ("{\"id\": \"bad1\", \"customer_id\": ", "invalid JSON"),
            (
                r#"{"id":"x","event_type":"api_call","timestamp":"2026-10-26T04:51:16Z"}"#,
                "missing field customer_id",
            ),
            (
                r#"{"customer_id":"c","event_type":"api_call","timestamp":"2026-10-26T04:51:16Z"}"#,
                "missing field id",
            ),
            (
                r#"{"id":"x","customer_id":"c","event_type":"api_call","timestamp":"yesterday"}"#,
                "not an RFC 3339",
            ),
            (
                r#"{"id":"x","customer_id":"c","event_type":"api_call","timestamp":1.5}"#,
                "integer epoch milliseconds",
            ),
            (
                r#"{"id":"x","customer_id":"c","event_type":"api_call","timestamp":1,"value":-5}"#,
                "negative",
            ),
            (
                r#"{"id":"x","customer_id":"c","event_type":"api_call","timestamp":1,"value":"1.0000000001"}"#,
                "more than 9 fractional digits",
            ),
            (
                r#"{"id":"x","customer_id":"c","event_type":"api_call","timestamp":1,"value":1e18}"#,
                "out of range",
            ),
            (
                r#"{"id":"x","customer_id":"c","event_type":"api_call","timestamp":1,"value":true}"#,
                "must be a number",
            ),
            (
                r#"{"id":"x","customer_id":7,"event_type":"api_call","timestamp":1}"#,
                "customer_id must be a string",
            ),
            (
                r#"{"id":"","customer_id":"c","event_type":"api_call","timestamp":1}"#,
                "id must not be empty",
            ),
            (
                r#"{"id":"x","customer_id":"c","event_type":"ai_generation","timestamp":1,"properties":{"model":"m","output_tokens":1,"latency_ms":1}}"#,
                "meter input_tokens: $.properties.input_tokens is missing",
            ),
            (
                r#"{"id":"x","customer_id":"c","event_type":"ai_generation","timestamp":1,"properties":{"input_tokens":"lots","output_tokens":1,"latency_ms":1}}"#,
                "meter input_tokens",
            ),
            (
                r#"{"id":"x","customer_id":"c","event_type":"seat","timestamp":1,"properties":{"user_id":{"a":1},"tier":"1"}}"#,
                "meter active_users",
            ),
            (
                r#"{"id":"x","customer_id":"c","event_type":"t","timestamp":1,"properties":[1]}"#,
                "properties must be a JSON object",
            ),
            (
                r#"{"id":"x","id":"y","customer_id":"c","event_type":"t","timestamp":1}"#,
                "duplicate field",
            ),
        ];
        for (line, want) in cases {
            let got = reason(line);
            assert!(got.contains(want), "{line}: got `{got}`, want `{want}`");
        }
        let huge = format!(r#"{{"id":"x","pad":"{}"}}"#, "a".repeat(MAX_RECORD_BYTES));
        assert!(reason(&huge).contains("1 MiB"));
    }

    #[test]
    fn unique_count_accepts_any_scalar_canonically() {
        let d = decoder();
        let read = |user: &str| {
            let line = format!(
                r#"{{"id":"x","customer_id":"c","event_type":"seat","timestamp":1,"properties":{{"user_id":{user},"tier":"1"}}}}"#
            );
            d.decode(line.as_bytes()).unwrap().readings[0].value.clone()
        };
        assert_eq!(read("2"), read("2.0"));
        assert_ne!(read("2"), read("\"2\""));
        assert_eq!(read("true"), ReadingValue::Scalar("true".into()));
    }
}
