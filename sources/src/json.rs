//! A strict, allocation-free JSON object scanner: validates one JSON object (RFC 8259)
//! and returns its members as byte ranges of the input, in one pass.
//!
//! It is the decoder's fast path. It accepts only what serde_json accepts (it may reject
//! more: nesting deeper than serde_json's limit, keys with escapes are reported, not
//! decoded), so when it says no the decoder falls back to serde_json, which produces the
//! error message for the rejection.

use std::ops::Range;

/// Deepest nesting accepted, as serde_json's default recursion limit.
const MAX_DEPTH: usize = 128;

/// One member of an object: the key's raw text (with quotes) and the value's raw text.
pub type Member = (Range<usize>, Range<usize>);

/// Validates `text` as exactly one JSON object with optional surrounding whitespace and
/// writes its top-level members to `out` (cleared first). Returns false when `text` is
/// not valid JSON of that shape.
pub fn object_members(text: &str, out: &mut Vec<Member>) -> bool {
    out.clear();
    let mut s = Scanner {
        b: text.as_bytes(),
        i: 0,
    };
    s.ws();
    if s.peek() != Some(b'{') {
        return false;
    }
    s.i += 1;
    s.ws();
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            let key_start = s.i;
            if !s.string() {
                return false;
            }
            let key = key_start..s.i;
            s.ws();
            if s.peek() != Some(b':') {
                return false;
            }
            s.i += 1;
            s.ws();
            let value_start = s.i;
            if !s.value(1) {
                return false;
            }
            out.push((key, value_start..s.i));
            s.ws();
            match s.peek() {
                Some(b',') => {
                    s.i += 1;
                    s.ws();
                }
                Some(b'}') => {
                    s.i += 1;
                    break;
                }
                _ => return false,
            }
        }
    }
    s.ws();
    s.i == s.b.len()
}

/// Bytes that end a run of plain string content: the quote, the backslash, controls.
static STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// A value at nesting `depth`.
    fn value(&mut self, depth: usize) -> bool {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'{') => self.container(depth, b'}', true),
            Some(b'[') => self.container(depth, b']', false),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => false,
        }
    }

    fn container(&mut self, depth: usize, close: u8, object: bool) -> bool {
        if depth >= MAX_DEPTH {
            return false;
        }
        self.i += 1;
        self.ws();
        if self.peek() == Some(close) {
            self.i += 1;
            return true;
        }
        loop {
            if object {
                if !self.string() {
                    return false;
                }
                self.ws();
                if self.peek() != Some(b':') {
                    return false;
                }
                self.i += 1;
                self.ws();
            }
            if !self.value(depth + 1) {
                return false;
            }
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(c) if c == close => {
                    self.i += 1;
                    return true;
                }
                _ => return false,
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            true
        } else {
            false
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> bool {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return false,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return false;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return false;
            }
        }
        true
    }

    /// A string starting at the current quote. The input is valid UTF-8 already, so only
    /// control characters and escapes need checking.
    fn string(&mut self) -> bool {
        if self.peek() != Some(b'"') {
            return false;
        }
        self.i += 1;
        loop {
            let rest = &self.b[self.i..];
            let Some(n) = rest.iter().position(|&c| STRING_STOP[c as usize]) else {
                return false;
            };
            self.i += n;
            match self.b[self.i] {
                b'"' => {
                    self.i += 1;
                    return true;
                }
                b'\\' => {
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            let hex = self.b.get(self.i + 1..self.i + 5);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return false;
                            }
                            self.i += 5;
                        }
                        _ => return false,
                    }
                }
                _ => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(text: &str) -> Option<Vec<(&str, &str)>> {
        let mut out = Vec::new();
        object_members(text, &mut out).then(|| {
            out.iter()
                .map(|(k, v)| (&text[k.clone()], &text[v.clone()]))
                .collect()
        })
    }

    #[test]
    fn splits_members_of_valid_objects() {
        assert_eq!(
            members(
                r#" {"a": 1, "b" :"x\"y", "c":{"d":[1,2,{"e":null}]}, "f":-0.5e+3, "g":true} "#
            ),
            Some(vec![
                (r#""a""#, "1"),
                (r#""b""#, r#""x\"y""#),
                (r#""c""#, r#"{"d":[1,2,{"e":null}]}"#),
                (r#""f""#, "-0.5e+3"),
                (r#""g""#, "true"),
            ])
        );
        assert_eq!(members("{}"), Some(vec![]));
        assert_eq!(
            members(r#"{"k\u00e9":"\ud83d\ude00"}"#).map(|m| m.len()),
            Some(1)
        );
    }

    #[test]
    fn accepts_exactly_what_serde_json_accepts() {
        let cases = [
            r#"{"a":1}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":-}"#,
            r#"{"a":+1}"#,
            r#"{"a":tru}"#,
            r#"{"a":"x"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":1} x"#,
            r#"{"a":1}{"#,
            r#"{a:1}"#,
            r#"{"a":[1 2]}"#,
            r#"{"a":{"b":1,"b":2}}"#,
            "{\"a\":\"\u{7f}\"}",
            "[1]",
            "",
            r#"{"a":NaN}"#,
        ];
        for text in cases {
            let serde =
                serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v.is_object());
            assert_eq!(members(text).is_some(), serde, "{text}");
        }
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        assert!(members(&deep).is_none());
    }
}
