//! Decoding and validating one input record (a JSONL line or a Kafka message) into an
//! accepted-event candidate with its meter readings, or a rejection with a specific
//! reason (DESIGN.md 2.1). Never panics on input; numbers are read from their text.

use crate::json;
use om_model::config::ValuePath;
use om_model::event::CostReading;
use om_model::{Aggregation, Config, Decimal9, DecodedEvent, Event, Reading, ReadingValue, time};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

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

/// The envelope's fields as raw JSON texts.
#[derive(Default)]
struct Fields<'a> {
    id: Option<&'a str>,
    tenant_id: Option<&'a str>,
    customer_id: Option<&'a str>,
    event_type: Option<&'a str>,
    timestamp: Option<&'a str>,
    value: Option<&'a str>,
    properties: Option<&'a str>,
    specversion: Option<&'a str>,
    subject: Option<&'a str>,
    ce_type: Option<&'a str>,
    time: Option<&'a str>,
    data: Option<&'a str>,
}

impl<'a> From<Envelope<'a>> for Fields<'a> {
    fn from(e: Envelope<'a>) -> Self {
        let get = |r: Option<&'a RawValue>| r.map(RawValue::get);
        Fields {
            id: get(e.id),
            tenant_id: get(e.tenant_id),
            customer_id: get(e.customer_id),
            event_type: get(e.event_type),
            timestamp: get(e.timestamp),
            value: get(e.value),
            properties: get(e.properties),
            specversion: get(e.specversion),
            subject: get(e.subject),
            ce_type: get(e.ce_type),
            time: get(e.time),
            data: get(e.data),
        }
    }
}

impl<'a> Fields<'a> {
    /// The fast path: one validating pass of [`json::object_members`]. `None` when the
    /// record is not valid JSON, repeats a field we read, or has a key with escapes; the
    /// caller then takes serde_json's way, which yields the precise error.
    fn scan(text: &'a str, members: &mut Vec<json::Member>) -> Option<Self> {
        if !json::object_members(text, members) {
            return None;
        }
        let mut f = Fields::default();
        for (k, v) in members.iter() {
            let key = &text[k.start + 1..k.end - 1];
            let slot = match key {
                "id" => &mut f.id,
                "tenant_id" => &mut f.tenant_id,
                "customer_id" => &mut f.customer_id,
                "event_type" => &mut f.event_type,
                "timestamp" => &mut f.timestamp,
                "value" => &mut f.value,
                "properties" => &mut f.properties,
                "specversion" => &mut f.specversion,
                "subject" => &mut f.subject,
                "type" => &mut f.ce_type,
                "time" => &mut f.time,
                "data" => &mut f.data,
                _ if key.contains('\\') => return None,
                _ => continue,
            };
            if slot.replace(&text[v.clone()]).is_some() {
                return None;
            }
        }
        Some(f)
    }
}

/// An event decoded in place: its strings borrow from the record unless they hold JSON
/// escapes. [`Decoder::decode_ref`] returns it with its readings in a [`Scratch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// Tenant, `default` when absent.
    pub tenant_id: Cow<'a, str>,
    /// Idempotency key.
    pub id: Cow<'a, str>,
    /// Customer.
    pub customer_id: Cow<'a, str>,
    /// Event type.
    pub event_type: Cow<'a, str>,
    /// Event time, UTC microseconds.
    pub timestamp: i64,
    /// `value`, default 1.
    pub value: Decimal9,
    /// The `properties` object (CloudEvents `data`) as its JSON text, if present.
    pub properties: Option<&'a str>,
}

impl EventRef<'_> {
    /// The owned event.
    pub fn to_event(&self) -> Event {
        Event {
            tenant_id: self.tenant_id.to_string(),
            id: self.id.to_string(),
            customer_id: self.customer_id.to_string(),
            event_type: self.event_type.to_string(),
            timestamp: self.timestamp,
            value: self.value,
            properties: self.properties.map(str::to_string),
        }
    }
}

/// One meter's reading of an event decoded in place; texts live in [`Scratch::text`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadingRef {
    /// Index into `Config::meters`.
    pub meter: u16,
    /// Canonical JSON of the group-by dimensions, as a range of [`Scratch::text`].
    pub dimensions: Range<usize>,
    /// The value.
    pub value: ValueRef,
}

/// A reading's value: a number, or (unique_count) canonical scalar text as a range of
/// [`Scratch::text`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueRef {
    /// A number.
    Number(Decimal9),
    /// Canonical scalar text.
    Scalar(Range<usize>),
}

/// A model call read from an event for the `costs` table: provider and model as ranges
/// of [`Scratch::text`], and the tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CostRef {
    /// The provider, when the event names one.
    pub provider: Option<Range<usize>>,
    /// The model id (empty when the event names none).
    pub model: Range<usize>,
    /// Input, cached input and output tokens (missing = 0).
    pub tokens: [Decimal9; 3],
}

/// Buffers reused from one record to the next, so decoding allocates nothing per event
/// unless a string holds escapes.
#[derive(Debug, Default)]
pub struct Scratch {
    /// Dimension and scalar texts of the readings.
    pub text: String,
    /// The readings of the last decoded event.
    pub readings: Vec<ReadingRef>,
    /// The credits the last decoded event burns.
    pub burn: Decimal9,
    /// (quantity, credits per unit) of each burn rule that applies.
    burn_terms: Vec<(Decimal9, Decimal9)>,
    /// The model call of the last decoded event, when it is one (`[costs]`).
    pub cost: Option<CostRef>,
    /// Members of the record's top-level object.
    top: Vec<json::Member>,
    /// Members of the properties object: (key, value) ranges into it.
    members: Vec<(Range<usize>, Range<usize>)>,
}

/// Decodes records against one configuration.
#[derive(Clone, Debug)]
pub struct Decoder {
    config: Config,
    /// Event type -> indexes of the meters that read it.
    meters_by_type: HashMap<String, Vec<usize>>,
    /// Event type -> indexes of the burn rules for it.
    burns_by_type: HashMap<String, Vec<usize>>,
}

impl Decoder {
    /// A decoder validating against `config`'s meters.
    pub fn new(config: Config) -> Self {
        let mut meters_by_type: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, meter) in config.meters.iter().enumerate() {
            meters_by_type
                .entry(meter.event_type.clone())
                .or_default()
                .push(index);
        }
        let mut burns_by_type: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, rule) in config.burn_rates.iter().enumerate() {
            burns_by_type
                .entry(rule.event_type.clone())
                .or_default()
                .push(index);
        }
        Decoder {
            config,
            meters_by_type,
            burns_by_type,
        }
    }

    /// The configuration it validates against.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Decodes one record into an owned event with its readings.
    pub fn decode(&self, bytes: &[u8]) -> Result<DecodedEvent, Rejection> {
        let mut scratch = Scratch::default();
        let event = self.decode_ref(bytes, &mut scratch)?.to_event();
        let text = |r: &Range<usize>| scratch.text[r.clone()].to_string();
        let readings = scratch
            .readings
            .iter()
            .map(|r| Reading {
                meter: r.meter,
                dimensions: text(&r.dimensions),
                value: match &r.value {
                    ValueRef::Number(d) => ReadingValue::Number(*d),
                    ValueRef::Scalar(s) => ReadingValue::Scalar(text(s)),
                },
            })
            .collect();
        let cost = scratch.cost.as_ref().map(|c| CostReading {
            provider: c.provider.as_ref().map(&text),
            model: text(&c.model),
            tokens: c.tokens,
        });
        Ok(DecodedEvent {
            event,
            readings,
            burn: scratch.burn,
            cost,
        })
    }

    /// Decodes one record in place: strings borrow from `bytes`, readings go to
    /// `scratch` (cleared first).
    #[expect(clippy::too_many_lines, reason = "to be split into stages (issue #9)")]
    pub fn decode_ref<'a>(
        &self,
        bytes: &'a [u8],
        scratch: &mut Scratch,
    ) -> Result<EventRef<'a>, Rejection> {
        scratch.text.clear();
        scratch.readings.clear();
        scratch.members.clear();
        scratch.burn = Decimal9::ZERO;
        scratch.cost = None;
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
        let env = match Fields::scan(trimmed, &mut scratch.top) {
            Some(fields) => fields,
            None => serde_json::from_str::<Envelope<'a>>(trimmed)
                .map(Fields::from)
                .map_err(|e| reject(format!("invalid JSON: {e}")))?,
        };
        let raw = |r: Option<&'a str>| r;
        let cloud = env.specversion.is_some();

        let id = required_string(raw(env.id), "id").map_err(reject)?;
        if id.len() > 256 {
            return Err(reject(format!(
                "field id is {} bytes long (1..256 allowed)",
                id.len()
            )));
        }
        let tenant_id = match raw(env.tenant_id) {
            None | Some("null") => Cow::Borrowed("default"),
            Some(raw) => string_of(raw)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| Rejection {
                    tenant_id: None,
                    event_id: Some(id.to_string()),
                    reason: "field tenant_id must be a non-empty string".into(),
                })?,
        };
        let with_ids = |reason: String| Rejection {
            tenant_id: Some(tenant_id.to_string()),
            event_id: Some(id.to_string()),
            reason,
        };

        if let Some(version) = raw(env.specversion) {
            let version = string_of(version).unwrap_or_default();
            if version != "1.0" {
                return Err(with_ids(format!(
                    "CloudEvents specversion `{version}` is not supported (only 1.0)"
                )));
            }
        }
        let pick = |plain: Option<&'a str>, ce: Option<&'a str>, p: &'static str, c| {
            if cloud { (raw(ce), c) } else { (raw(plain), p) }
        };
        let (customer_raw, customer_name) =
            pick(env.customer_id, env.subject, "customer_id", "subject");
        let (type_raw, type_name) = pick(env.event_type, env.ce_type, "event_type", "type");
        let (time_raw, time_name) = pick(env.timestamp, env.time, "timestamp", "time");
        let (props_raw, props_name) = pick(env.properties, env.data, "properties", "data");

        let customer_id = required_string(customer_raw, customer_name).map_err(with_ids)?;
        let event_type = required_string(type_raw, type_name).map_err(with_ids)?;
        let timestamp = parse_time(time_raw, time_name).map_err(with_ids)?;
        let value_raw = raw(env.value);
        let value = match value_raw {
            None => Decimal9::ONE,
            Some(raw) => number_of(raw).map_err(|e| with_ids(format!("field value {e}")))?,
        };
        let properties = props_raw.filter(|r| *r != "null");
        if let Some(p) = properties {
            if !p.starts_with('{') {
                return Err(with_ids(format!(
                    "field {props_name} must be a JSON object"
                )));
            }
            scan_members(p, &mut scratch.members);
        }
        let props = properties.map(|p| Object {
            text: p,
            members: &scratch.members,
        });

        let meters = self.meters_by_type.get(event_type.as_ref());
        for &index in meters.map_or(&[][..], Vec::as_slice) {
            let meter = &self.config.meters[index];
            let found = lookup(meter.value.segments(), value_raw, props.as_ref());
            let meter_err = |what: &str| {
                with_ids(format!(
                    "meter {}: {} {what}",
                    meter.name,
                    meter.value.as_str()
                ))
            };
            let value = if meter.value.segments() == ["value"] && found.is_none() {
                ValueRef::Number(value)
            } else {
                let raw = found.ok_or_else(|| meter_err("is missing"))?;
                if meter.aggregation == Aggregation::UniqueCount {
                    let from = scratch.text.len();
                    push_scalar(&mut scratch.text, raw).map_err(&meter_err)?;
                    ValueRef::Scalar(from..scratch.text.len())
                } else {
                    ValueRef::Number(number_of(raw).map_err(|e| meter_err(&e))?)
                }
            };
            let from = scratch.text.len();
            let dims = &mut scratch.text;
            dims.push('{');
            for (n, (dim, path)) in meter.group_by.iter().enumerate() {
                if n > 0 {
                    dims.push(',');
                }
                push_json_string(dims, dim);
                dims.push(':');
                match lookup(path.segments(), value_raw, props.as_ref()) {
                    Some(raw) => match string_of(raw) {
                        Some(s) => push_json_string(dims, &s),
                        None if raw.starts_with(['{', '[']) => {
                            return Err(with_ids(format!(
                                "meter {}: group_by {dim} at {} must be a scalar",
                                meter.name,
                                path.as_str()
                            )));
                        }
                        None => dims.push_str(raw),
                    },
                    None => dims.push_str("null"),
                }
            }
            dims.push('}');
            scratch.readings.push(ReadingRef {
                meter: index as u16,
                dimensions: from..scratch.text.len(),
                value,
            });
        }

        // Credits burned: every matching rule's quantity x rate, summed exactly and
        // rounded once. A rule that applies but cannot read its quantity rejects the
        // event, as a meter does: it must not silently burn nothing.
        let rules = self.burns_by_type.get(event_type.as_ref());
        let products = &mut scratch.burn_terms;
        products.clear();
        for &index in rules.map_or(&[][..], Vec::as_slice) {
            let rule = &self.config.burn_rates[index];
            let applies = rule.match_properties.iter().all(|(prop, want)| {
                let found = props.as_ref().and_then(|p| p.get(prop));
                found.is_some_and(|raw| scalar_equals(raw, want))
            });
            if !applies {
                continue;
            }
            let quantity = if rule.value.segments() == ["value"] {
                value
            } else {
                let rule_err = |what: &str| {
                    with_ids(format!(
                        "burn_rates[{index}] ({}): {} {what}",
                        rule.event_type,
                        rule.value.as_str()
                    ))
                };
                let raw = lookup(rule.value.segments(), value_raw, props.as_ref())
                    .ok_or_else(|| rule_err("is missing"))?;
                number_of(raw).map_err(|e| rule_err(&e))?
            };
            products.push((quantity, rule.credits_per_unit));
        }
        if !products.is_empty() {
            scratch.burn = Decimal9::sum_of_products(products.iter().copied())
                .ok_or_else(|| with_ids("the credits it burns overflow".into()))?;
        }

        // A model call: its provider, model and tokens for the `costs` table. Missing
        // tokens count 0 and a missing model is reported as unknown, but tokens that are
        // there and not numbers reject the event, as a meter's value does.
        let costs = &self.config.costs;
        if costs.enabled && event_type.as_ref() == costs.event_type {
            let mut text_at = |path: &ValuePath| {
                let s = lookup(path.segments(), value_raw, props.as_ref())
                    .map(|raw| string_of(raw).unwrap_or(Cow::Borrowed(raw)))?;
                let from = scratch.text.len();
                scratch.text.push_str(&s);
                Some(from..scratch.text.len())
            };
            let provider = text_at(&costs.provider);
            let model = text_at(&costs.model).unwrap_or(0..0);
            let mut tokens = [Decimal9::ZERO; 3];
            let paths = [
                &costs.input_tokens,
                &costs.cached_input_tokens,
                &costs.output_tokens,
            ];
            for (t, path) in tokens.iter_mut().zip(paths) {
                if let Some(raw) = lookup(path.segments(), value_raw, props.as_ref()) {
                    *t = number_of(raw)
                        .map_err(|e| with_ids(format!("costs: {} {e}", path.as_str())))?;
                }
            }
            scratch.cost = Some(CostRef {
                provider,
                model,
                tokens,
            });
        }

        Ok(EventRef {
            tenant_id,
            id,
            customer_id,
            event_type,
            timestamp,
            value,
            properties,
        })
    }
}

/// A JSON object's text with its members' (key, value) ranges.
struct Object<'a, 'm> {
    text: &'a str,
    members: &'m [(Range<usize>, Range<usize>)],
}

impl<'a> Object<'a, '_> {
    /// The raw JSON of member `key`; the last one wins if a key repeats.
    fn get(&self, key: &str) -> Option<&'a str> {
        let text = self.text.as_bytes();
        self.members
            .iter()
            .rev()
            .find(|(k, _)| {
                // Quick reject on length: a key with escapes is longer than its text.
                let raw = &text[k.clone()];
                if raw.len() < key.len() + 2 {
                    return false;
                }
                if raw.len() == key.len() + 2 && &raw[1..raw.len() - 1] == key.as_bytes() {
                    return true;
                }
                raw.contains(&b'\\') && key_is(&self.text[k.clone()], key)
            })
            .map(|(_, v)| &self.text[v.clone()])
    }
}

/// Whether the raw JSON string `raw` (with quotes) holds `key`.
fn key_is(raw: &str, key: &str) -> bool {
    let inner = &raw[1..raw.len() - 1];
    if inner.contains('\\') {
        serde_json::from_str::<String>(raw).is_ok_and(|k| k == key)
    } else {
        inner == key
    }
}

/// Splits the text of a JSON object, already validated by serde_json, into its members.
fn scan_members(obj: &str, out: &mut Vec<(Range<usize>, Range<usize>)>) {
    out.clear();
    let b = obj.as_bytes();
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    // End (exclusive) of the JSON string starting at the quote at `i`.
    let string_end = |mut i: usize| {
        i += 1;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'"' => return i + 1,
                _ => i += 1,
            }
        }
        b.len()
    };
    let mut i = skip_ws(1);
    while i < b.len() && b[i] == b'"' {
        let key_end = string_end(i);
        let key = i..key_end;
        i = skip_ws(key_end);
        i = skip_ws(i + 1); // the colon
        let start = i;
        match b.get(i) {
            Some(b'"') => i = string_end(i),
            Some(b'{' | b'[') => {
                let mut depth = 0usize;
                while i < b.len() {
                    match b[i] {
                        b'"' => {
                            i = string_end(i);
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            _ => {
                while i < b.len() && !matches!(b[i], b',' | b'}') && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
            }
        }
        out.push((key, start..i));
        i = skip_ws(i);
        if b.get(i) == Some(&b',') {
            i = skip_ws(i + 1);
        }
    }
}

/// Whether the raw JSON scalar `raw` equals a burn rule's `match` text: a string by its
/// text, a number by its exact value, anything else by its JSON text.
fn scalar_equals(raw: &str, want: &str) -> bool {
    if let Some(s) = string_of(raw) {
        return s == want;
    }
    match (Decimal9::parse(raw), Decimal9::parse(want)) {
        (Ok(a), Ok(b)) => a == b,
        _ => raw == want,
    }
}

/// Follows a value path (`["properties", "a", "b"]`) through the event.
fn lookup<'a>(
    segments: &[String],
    value: Option<&'a str>,
    properties: Option<&Object<'a, '_>>,
) -> Option<&'a str> {
    match segments.split_first()? {
        (root, []) if root == "value" => value.filter(|v| *v != "null"),
        (root, rest) if root == "properties" => {
            let (first, deeper) = rest.split_first()?;
            let mut current = properties?.get(first)?;
            let mut members = Vec::new();
            for seg in deeper {
                if !current.starts_with('{') {
                    return None;
                }
                scan_members(current, &mut members);
                current = Object {
                    text: current,
                    members: &members,
                }
                .get(seg)?;
            }
            (current != "null").then_some(current)
        }
        _ => None,
    }
}

/// The text of a JSON string, borrowed when it holds no escapes; `None` for other kinds.
pub(crate) fn string_of(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.starts_with('"') || raw.len() < 2 {
        return None;
    }
    let inner = &raw[1..raw.len() - 1];
    if inner.contains('\\') {
        serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

pub(crate) fn required_string<'a>(
    raw: Option<&'a str>,
    name: &str,
) -> Result<Cow<'a, str>, String> {
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

pub(crate) fn kind_of(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

pub(crate) fn parse_time(raw: Option<&str>, name: &str) -> Result<i64, String> {
    let text = raw.ok_or_else(|| format!("missing field {name}"))?;
    if let Some(s) = string_of(text) {
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
pub(crate) fn number_of(text: &str) -> Result<Decimal9, String> {
    let digits: Cow<'_, str> = match string_of(text) {
        Some(s) => s,
        None if text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) => {
            Cow::Borrowed(text)
        }
        None => return Err(format!("must be a number, found {}", kind_of(text))),
    };
    let d = Decimal9::parse(digits.trim()).map_err(|e| e.to_string())?;
    if d.is_negative() {
        return Err(format!("`{digits}` is negative"));
    }
    Ok(d)
}

/// Appends the canonical text of a JSON scalar for unique_count: strings as JSON strings,
/// numbers as exact decimals when they are (so `2` and `2.0` are one value), booleans as
/// themselves.
fn push_scalar(out: &mut String, text: &str) -> Result<(), &'static str> {
    match text.as_bytes().first() {
        Some(b'"') => {
            let s = string_of(text).ok_or("is not a valid string")?;
            push_json_string(out, &s);
        }
        Some(b'{' | b'[') => return Err("must be a scalar, found an object or array"),
        Some(b'n') => return Err("is null"),
        Some(b't' | b'f') => out.push_str(text),
        _ => match Decimal9::parse(text) {
            Ok(d) => {
                use std::fmt::Write as _;
                write!(out, "{d}").expect("writing to a String");
            }
            Err(_) => out.push_str(text),
        },
    }
    Ok(())
}

/// Appends `s` as a JSON string literal.
pub fn push_json_string(out: &mut String, s: &str) {
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
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
            "{}/../tests/golden/small/config.toml",
            std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR for tests")
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
    fn model_calls_carry_provider_model_and_tokens() {
        let line = br#"{"id":"a","customer_id":"c","event_type":"ai_generation","timestamp":1705314600000,"properties":{"provider":"openai","model":"gpt-4o","input_tokens":1200,"cached_input_tokens":"200","output_tokens":30,"latency_ms":5}}"#;
        let cost = decoder().decode(line).unwrap().cost.unwrap();
        assert_eq!(cost.provider.as_deref(), Some("openai"));
        assert_eq!(cost.model, "gpt-4o");
        assert_eq!(
            cost.tokens.map(|t| t.to_string()),
            ["1200.000000000", "200.000000000", "30.000000000"]
        );
        // Missing provider and tokens: none and 0; other event types are not calls.
        let bare = br#"{"id":"a","customer_id":"c","event_type":"ai_generation","timestamp":1705314600000,"properties":{"model":"m","input_tokens":1,"output_tokens":2,"latency_ms":3}}"#;
        let cost = decoder().decode(bare).unwrap().cost.unwrap();
        assert_eq!((cost.provider, cost.tokens[1]), (None, Decimal9::ZERO));
        let api =
            br#"{"id":"a","customer_id":"c","event_type":"api_call","timestamp":1705314600000}"#;
        assert_eq!(decoder().decode(api).unwrap().cost, None);
        // Tokens that are there but not numbers reject the event, naming the path.
        let bad = br#"{"id":"a","customer_id":"c","event_type":"ai_generation","timestamp":1705314600000,"properties":{"model":"m","input_tokens":1,"output_tokens":2,"latency_ms":3,"cached_input_tokens":"lots"}}"#;
        let reason = decoder().decode(bad).unwrap_err().reason;
        assert!(
            reason.starts_with("costs: $.properties.cached_input_tokens"),
            "{reason}"
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
    fn burn_sums_the_matching_rules_exactly() {
        let d = decoder();
        // The golden config's rules: gpt-4o input tokens x 0.0025 + output tokens x 0.01;
        // no rule for other models.
        let line = r#"{"id":"e1","customer_id":"c","event_type":"ai_generation","timestamp":"2024-01-15T10:30:00Z","properties":{"provider":"openai","model":"gpt-4o","input_tokens":1200,"output_tokens":310,"latency_ms":5}}"#;
        assert_eq!(
            d.decode(line.as_bytes()).unwrap().burn,
            Decimal9::parse("6.1").unwrap()
        );
        let other = line.replace("\"gpt-4o\"", "\"llama-3\"");
        assert_eq!(d.decode(other.as_bytes()).unwrap().burn, Decimal9::ZERO);

        let config = Config::from_toml(
            r#"
[[burn_rates]]
event_type = "job"
match = { tier = 2 }
value = "$.properties.seconds"
credits_per_unit = "0.333333333"
[[burn_rates]]
event_type = "job"
credits_per_unit = "0.5"
"#,
        )
        .unwrap();
        let d = Decoder::new(config);
        let job = |props: &str| {
            format!(
                r#"{{"id":"j","customer_id":"c","event_type":"job","timestamp":0,"value":3,"properties":{props}}}"#
            )
        };
        // 2.0 matches tier 2 exactly; 3 x 0.333333333 + 3 x 0.5, rounded once.
        let burn = d
            .decode(job(r#"{"tier":2.0,"seconds":3}"#).as_bytes())
            .unwrap()
            .burn;
        assert_eq!(burn, Decimal9::parse("2.499999999").unwrap());
        // Tier 1 does not match: only the value rule.
        let burn = d
            .decode(job(r#"{"tier":1,"seconds":3}"#).as_bytes())
            .unwrap()
            .burn;
        assert_eq!(burn, Decimal9::parse("1.5").unwrap());
        // A matching rule without its quantity rejects the event.
        let r = d.decode(job(r#"{"tier":2}"#).as_bytes()).unwrap_err();
        assert!(
            r.reason
                .contains("burn_rates[0] (job): $.properties.seconds is missing"),
            "{}",
            r.reason
        );
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
