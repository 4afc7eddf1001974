//! Hosts: the request's authority in one canonical form, and host patterns.
//!
//! Rules and public paths match the host of `:authority` — the header Envoy routes on; for an
//! absolute-form request target (`GET http://host/path`) Envoy puts the target's host there.
//! The host is lower-cased, one trailing dot dropped (`example.com.` is `example.com`) and the
//! port ignored, so that no spelling of a name reaches another rule. Anything that is not a
//! plain name, IPv4 or bracketed IPv6 address — userinfo, percent-escapes, empty labels,
//! a bad port — is refused. `X-Forwarded-Host`, `Forwarded: host=` and their kin are readings
//! the upstream may make (see `flow`): they never choose the rule, and one that would fall under
//! another rule is refused.

/// Why an authority is refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError;

impl HostError {
    pub fn code(self) -> &'static str {
        "invalid_host"
    }

    pub fn description(self) -> &'static str {
        "the request's host is not a valid host name"
    }
}

/// The canonical host of an authority (`host[:port]`): lower case, without port or trailing dot.
pub fn canonical_host(authority: &str) -> Result<String, HostError> {
    match plain_name(authority) {
        Some(host) => Ok(host.to_string()),
        None => canonical_host_slowly(authority),
    }
}

/// [`canonical_host`] in full.
fn canonical_host_slowly(authority: &str) -> Result<String, HostError> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or(HostError)?;
        if inside.is_empty() || !inside.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return Err(HostError);
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(HostError)?),
        };
        (authority.get(..inside.len() + 2).ok_or(HostError)?, port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if let Some(p) = port {
        if p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u32>().is_ok_and(|n| n > 65535) {
            return Err(HostError);
        }
    }
    if host.starts_with('[') {
        // Compressed, lower case; an IPv4-mapped address (`[::ffff:127.0.0.1]`) is that IPv4.
        return match url::Host::parse(host) {
            Ok(url::Host::Ipv6(ip)) => Ok(match ip.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => format!("[{ip}]"),
            }),
            _ => Err(HostError),
        };
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(HostError);
    }
    // A name ending in a number is an IPv4 address to URL parsers and `inet_aton` (`127.1`,
    // `0x7f.0.0.1`, `127.000.0.1`, `2130706433`): in its dotted-decimal form, or refused.
    let last = name.rsplit('.').next().unwrap_or(name);
    let numeric =
        !last.is_empty() && (last.bytes().all(|b| b.is_ascii_digit()) || last.to_ascii_lowercase().starts_with("0x"));
    if numeric {
        return match url::Host::parse(name) {
            Ok(url::Host::Ipv4(ip)) => Ok(ip.to_string()),
            _ => Err(HostError),
        };
    }
    Ok(name.to_ascii_lowercase())
}

/// The name of an authority that is canonical already, in one pass (this runs on every
/// request): lower-case labels of letters, digits, `-`, `_`, none empty or over 63 bytes, the
/// last not a number, then an optional `:port` of digits. `None` sends it the long way.
fn plain_name(authority: &str) -> Option<&str> {
    let b = authority.as_bytes();
    let mut label = 0usize;
    let mut label_start = 0usize;
    let mut label_digits = true;
    let mut end = b.len();
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'a'..=b'z' | b'-' | b'_' => label_digits = false,
            b'0'..=b'9' => {}
            b'.' if label > 0 => {
                label = 0;
                label_start = i + 1;
                label_digits = true;
                continue;
            }
            b':' => {
                end = i;
                break;
            }
            _ => return None,
        }
        label += 1;
        if label > 63 {
            return None;
        }
    }
    let port = b.get(end + 1..).unwrap_or_default();
    let port_ok = end == b.len()
        || (!port.is_empty()
            && port.len() <= 5
            && port.iter().all(u8::is_ascii_digit)
            && authority.get(end + 1..)?.parse::<u32>().ok()? <= 65535);
    // A last label such as `0x7f` is a number to URL parsers.
    let hex = b.get(label_start..end).is_some_and(|l| l.starts_with(b"0x"));
    (label > 0 && !label_digits && !hex && end <= 253 && port_ok).then(|| authority.get(..end)).flatten()
}

/// The host of an `:authority` for places that need one whatever it holds (the session's
/// site): canonical, or empty if it is not a valid host (such requests are refused first).
pub fn host_of(authority: &str) -> String {
    canonical_host(authority).unwrap_or_default()
}

/// A host pattern: an exact name or `*.suffix` (any name below `suffix`, not `suffix` itself),
/// in canonical form (see [`HostPattern::parse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern(String);

impl HostPattern {
    /// A configured pattern, canonicalized as request hosts are; `None` if it is not a name, an
    /// address or `*.` and a name.
    pub fn parse(text: &str) -> Option<HostPattern> {
        let bracketed = text.starts_with('[');
        if (text.contains(':') && !bracketed) || (bracketed && !text.ends_with(']')) {
            return None;
        }
        match text.strip_prefix("*.") {
            Some(suffix) => {
                canonical_host(suffix).ok().filter(|s| !s.starts_with('[')).map(|s| HostPattern(format!("*.{s}")))
            }
            None => canonical_host(text).ok().map(HostPattern),
        }
    }

    /// Whether a canonical host matches.
    pub fn matches(&self, host: &str) -> bool {
        match self.0.strip_prefix('*') {
            Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
            None => host == self.0,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the one-pass shortcut answers, it answers as the full parse does.
    #[test]
    fn the_fast_path_agrees_with_the_full_parse() {
        let alphabet = ["a", "Z", "1", "0x", ".", ":", "-", "_", "8", "[", "]", "%"];
        let mut all = vec![String::new()];
        let mut frontier = vec![String::new()];
        for _ in 0..6 {
            frontier = frontier.iter().flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}"))).collect();
            all.extend(frontier.iter().cloned());
        }
        let mut fast = 0;
        for a in &all {
            if let Some(h) = plain_name(a) {
                fast += 1;
                assert_eq!(Ok(h.to_string()), canonical_host_slowly(a), "{a:?}");
            }
        }
        assert!(fast > 10_000, "{fast}");
    }
}
