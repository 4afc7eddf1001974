//! Claims: dotted JSON paths into a verified token's payload, and their rendering as header
//! values that an upstream can trust (no header injection, arrays joined with commas).

use serde_json::Value;
use std::fmt;

/// A path into the claims object, e.g. `realm_access.roles` → `["realm_access", "roles"]`.
///
/// In the config a path is written with dots between segments; a literal dot inside a segment is
/// written `\.` (Keycloak client ids may contain dots: `resource_access.my\.client.roles`).
#[derive(Clone, PartialEq, Eq)]
pub struct ClaimPath(Vec<String>);

impl ClaimPath {
    /// Parses a dotted path. Empty paths and empty segments (`a..b`, `.a`) are refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("expected a claim path such as `email` or `realm_access.roles`, found an empty string".into());
        }
        let mut segments = Vec::new();
        let mut current = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(next @ ('.' | '\\')) => current.push(next),
                    _ => return Err(format!("in claim path `{text}`: `\\` may only escape `.` or `\\`")),
                },
                '.' => {
                    if current.is_empty() {
                        return Err(format!("claim path `{text}` has an empty segment"));
                    }
                    segments.push(std::mem::take(&mut current));
                }
                _ => current.push(c),
            }
        }
        if current.is_empty() {
            return Err(format!("claim path `{text}` has an empty segment"));
        }
        segments.push(current);
        Ok(Self(segments))
    }

    /// Builds a path from literal segments (no escaping applies).
    pub fn from_segments<I: IntoIterator<Item = S>, S: Into<String>>(segments: I) -> Self {
        Self(segments.into_iter().map(Into::into).collect())
    }

    /// The first segment (the top-level claim).
    pub fn root(&self) -> Option<&str> {
        self.0.first().map(String::as_str)
    }

    /// The value at this path, if every segment names an object member.
    pub fn lookup<'a>(&self, claims: &'a Value) -> Option<&'a Value> {
        self.0.iter().try_fold(claims, |value, segment| value.as_object()?.get(segment))
    }
}

impl fmt::Debug for ClaimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            f.write_str(&segment.replace('\\', "\\\\").replace('.', "\\."))?;
        }
        Ok(())
    }
}

/// Drops every top-level claim but `kept` (`Config::kept_claims`, the session's). `retain`, not a
/// `collect` into a new map: that sorts (11 KB of sort code for this alone); and one copy of it
/// for the bearer and the login paths.
#[inline(never)]
pub fn keep_only(claims: &mut serde_json::Map<String, Value>, kept: &[String]) {
    claims.retain(|k, _| kept.contains(k));
}

/// The strings a claim contributes: a string is itself, a number or boolean its JSON text, an
/// array each of its elements (nested arrays and objects as compact JSON), an object its JSON.
/// `null` contributes nothing.
pub fn values_of(value: &Value) -> Vec<String> {
    match value {
        Value::Null => Vec::new(),
        Value::Array(items) => items.iter().filter(|item| !item.is_null()).map(scalar_text).collect(),
        other => vec![scalar_text(other)],
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Renders the values of one or more claims as one header value.
///
/// Values are joined with `,`. Each value is made safe for an HTTP header and unambiguous:
/// bytes outside printable ASCII (controls, DEL, anything non-ASCII as UTF-8) and `%` are
/// percent-encoded, and so is `,` inside a value when there is more than one value, so that the
/// upstream can split on commas. A header can therefore never be split or injected (RFC 9110 §5.5).
/// Returns `None` when no value is present (the header is then not set at all).
pub fn header_value(values: &[String]) -> Option<String> {
    if values.is_empty() {
        return None;
    }
    let list = values.len() > 1;
    let mut out = String::new();
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for byte in value.bytes() {
            let plain = (0x20..0x7f).contains(&byte) && byte != b'%' && !(list && byte == b',');
            if plain {
                out.push(char::from(byte));
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_dotted_paths_with_escapes() {
        assert_eq!(
            ClaimPath::parse("realm_access.roles").unwrap(),
            ClaimPath::from_segments(["realm_access", "roles"])
        );
        assert_eq!(
            ClaimPath::parse(r"resource_access.my\.client.roles").unwrap(),
            ClaimPath::from_segments(["resource_access", "my.client", "roles"])
        );
        assert_eq!(ClaimPath::parse(r"a\\b").unwrap(), ClaimPath::from_segments([r"a\b"]));
        for bad in ["", ".", "a.", ".a", "a..b", r"a\b", r"a\"] {
            assert!(ClaimPath::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in ["email", "realm_access.roles", r"resource_access.my\.client.roles"] {
            assert_eq!(ClaimPath::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn looks_up_nested_claims() {
        let claims = json!({"nested": {"key-1": "value1", "nested-2": {"key-3": true}}, "n": 5});
        let path = |p| ClaimPath::parse(p).unwrap();
        assert_eq!(path("nested.key-1").lookup(&claims), Some(&json!("value1")));
        assert_eq!(path("nested.nested-2.key-3").lookup(&claims), Some(&json!(true)));
        assert_eq!(path("nested.missing").lookup(&claims), None);
        assert_eq!(path("n.deeper").lookup(&claims), None, "a number has no members");
    }

    #[test]
    fn renders_values_as_text() {
        let render = |v: Value| header_value(&values_of(&v));
        assert_eq!(render(json!("alice@example.com")).as_deref(), Some("alice@example.com"));
        assert_eq!(render(json!(9999)).as_deref(), Some("9999"));
        assert_eq!(render(json!(true)).as_deref(), Some("true"));
        assert_eq!(render(json!(["str1", "str2"])).as_deref(), Some("str1,str2"));
        assert_eq!(render(json!([1, false])).as_deref(), Some("1,false"));
        assert_eq!(render(json!({"a": 1})).as_deref(), Some("{\"a\":1}"));
        assert_eq!(render(json!(null)), None);
        assert_eq!(render(json!([])), None);
    }

    #[test]
    fn encodes_anything_that_could_break_a_header() {
        let one = |s: &str| header_value(&[s.to_string()]).unwrap();
        assert_eq!(one("a\r\nx-evil: 1"), "a%0D%0Ax-evil: 1");
        assert_eq!(one("nul\0"), "nul%00");
        assert_eq!(one("del\x7f"), "del%7F");
        assert_eq!(one("José"), "Jos%C3%A9");
        assert_eq!(one("100%"), "100%25");
        assert_eq!(one("a,b"), "a,b", "a single value keeps its commas");
        assert_eq!(
            header_value(&["a,b".into(), "c".into()]).unwrap(),
            "a%2Cb,c",
            "commas inside list items are encoded so the list splits unambiguously"
        );
    }

    #[test]
    fn rendered_values_are_always_valid_header_values() {
        // Every byte value, alone and inside a list: the output is printable ASCII only.
        for byte in 0u8..=255 {
            let s = String::from_utf8_lossy(&[byte]).into_owned();
            for values in [vec![s.clone()], vec![s.clone(), s.clone()]] {
                let out = header_value(&values).unwrap();
                assert!(out.bytes().all(|b| (0x20..0x7f).contains(&b)), "{out:?}");
            }
        }
    }
}
