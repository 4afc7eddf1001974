//! Calls gatehouse makes to the provider through Envoy (proxy-wasm "HTTP callouts"): what to send,
//! as the glue hands it to the host, and the answer, as the host hands it back.

use crate::config::Config;
use crate::jwt::jwks::{KeySetError, Skipped};
use crate::oidc::discovery::DiscoveryError;
pub use crate::oidc::Class;
use std::fmt;

/// Provider answers larger than this are not read: a key set or a discovery document is a few KB,
/// a token answer tens of KB at most.
pub const MAX_ANSWER_BYTES: usize = 512 * 1024;

/// A request to the provider cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callout {
    pub cluster: String,
    /// Pseudo-headers first (`:method`, `:path`, `:authority`), then the others.
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub timeout_ms: u64,
}

impl Callout {
    /// A GET of `path` on provider `p`'s cluster, for a JSON document.
    pub fn get(cfg: &Config, p: usize, path: &str) -> Callout {
        Callout::new(cfg, p, "GET", path, vec![("accept".into(), "application/json".into())], None)
    }

    /// A request to provider `p`'s cluster with these headers besides the pseudo-headers.
    pub fn new(
        cfg: &Config,
        p: usize,
        method: &str,
        path: &str,
        headers: Vec<(String, String)>,
        body: Option<String>,
    ) -> Callout {
        let provider = cfg.providers.at(p);
        let mut all = vec![
            (":method".to_string(), method.to_string()),
            (":path".to_string(), path.to_string()),
            (":authority".to_string(), provider.authority.clone()),
            ("user-agent".to_string(), "gatehouse".to_string()),
        ];
        all.extend(headers);
        Callout { cluster: provider.cluster.clone(), headers: all, body, timeout_ms: cfg.callout_timeout_ms }
    }

    /// The first value of a header (`:path`, `authorization` …).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A callout's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// `None`: no answer (connection failure, time-out). Envoy's own 503 for a provider it cannot
    /// reach is an answer.
    pub status: Option<u32>,
    /// The body, when it was at most [`MAX_ANSWER_BYTES`] (else empty).
    pub body: Vec<u8>,
    /// The body's size as the host reported it.
    pub body_size: usize,
}

impl Answer {
    /// The answer from what the host reports: its `:status` and body size, reading the body with
    /// `read` only when it is small enough to be a provider document.
    pub fn read(status: Option<&str>, body_size: usize, read: impl FnOnce(usize) -> Option<Vec<u8>>) -> Answer {
        let status = status.and_then(|s| s.parse::<u32>().ok());
        let body = if status.is_some() && body_size <= MAX_ANSWER_BYTES {
            read(body_size).unwrap_or_default()
        } else {
            Vec::new()
        };
        Answer { status, body, body_size }
    }

    /// No answer (the call could not be made or timed out).
    pub fn none() -> Answer {
        Answer { status: None, body: Vec::new(), body_size: 0 }
    }

    /// The body of a 200 answer, for a document (discovery, key set).
    pub fn document(&self) -> Result<&[u8], FetchError> {
        match self.status {
            None => Err(FetchError::NoAnswer),
            Some(200) if self.body_size > MAX_ANSWER_BYTES => Err(FetchError::TooLarge(self.body_size)),
            Some(200) => Ok(&self.body),
            Some(code) => Err(FetchError::Status(code)),
        }
    }
}

/// Why fetching the discovery document or the key set gave nothing usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The callout could not even start: `provider.cluster` names no Envoy cluster.
    NotStarted,
    /// No answer: connection failure or time-out.
    NoAnswer,
    /// An answer other than 200.
    Status(u32),
    /// An answer over [`MAX_ANSWER_BYTES`].
    TooLarge(usize),
    Discovery(DiscoveryError),
    KeySet(KeySetError),
    /// A key set without one key gatehouse can verify with.
    NoUsableKey(Vec<Skipped>),
}

impl FetchError {
    pub fn class(&self) -> Class {
        match self {
            FetchError::NoAnswer
            | FetchError::Discovery(DiscoveryError::Invalid(_))
            | FetchError::KeySet(KeySetError::NotJson(_)) => Class::Passing,
            FetchError::Status(code) if *code >= 500 || *code == 429 => Class::Passing,
            FetchError::NotStarted
            | FetchError::Status(_)
            | FetchError::TooLarge(_)
            | FetchError::Discovery(_)
            | FetchError::KeySet(_)
            | FetchError::NoUsableKey(_) => Class::Configuration,
        }
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::NotStarted => {
                f.write_str("the callout could not start; check that provider.cluster names an Envoy cluster")
            }
            FetchError::NoAnswer => f.write_str("no answer (connection failure or timeout)"),
            FetchError::Status(code) => write!(f, "answered HTTP {code}"),
            FetchError::TooLarge(size) => write!(f, "answer of {size} bytes is too large"),
            FetchError::Discovery(e) => e.fmt(f),
            FetchError::KeySet(e) => e.fmt(f),
            FetchError::NoUsableKey(skipped) => {
                f.write_str("key set has no usable key (")?;
                for (i, s) in skipped.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    s.fmt(f)?;
                }
                f.write_str(")")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_read_only_when_small_enough_to_be_a_document() {
        let mut asked = None;
        let a = Answer::read(Some("200"), 10, |n| {
            asked = Some(n);
            Some(vec![b'x'; n])
        });
        assert_eq!((asked, a.document().map(<[u8]>::len)), (Some(10), Ok(10)));

        let huge = Answer::read(Some("200"), MAX_ANSWER_BYTES + 1, |_| panic!("a huge body is never read"));
        assert_eq!(huge.document(), Err(FetchError::TooLarge(MAX_ANSWER_BYTES + 1)));
        assert!(huge.body.is_empty());

        let none = Answer::read(None, 5, |_| panic!("no answer, no body"));
        assert_eq!(none.document(), Err(FetchError::NoAnswer));
        assert_eq!(Answer::read(Some("404"), 0, |_| None).document(), Err(FetchError::Status(404)));
        assert_eq!(Answer::read(Some("2oo"), 0, |_| None).status, None, "a garbled status is no answer");
    }

    #[test]
    fn configuration_problems_are_told_from_passing_ones() {
        for passing in [
            FetchError::NoAnswer,
            FetchError::Status(503),
            FetchError::Status(429),
            FetchError::Discovery(DiscoveryError::Invalid("EOF".into())),
            FetchError::KeySet(KeySetError::NotJson("EOF".into())),
        ] {
            assert_eq!(passing.class(), Class::Passing, "{passing}");
        }
        for config in [
            FetchError::NotStarted,
            FetchError::Status(404),
            FetchError::Status(401),
            FetchError::TooLarge(1 << 20),
            FetchError::Discovery(DiscoveryError::OtherIssuer { found: "a".into(), expected: "b".into() }),
            FetchError::Discovery(DiscoveryError::JwksUri("file:///".into())),
            FetchError::KeySet(KeySetError::NoKeys),
            FetchError::NoUsableKey(Vec::new()),
        ] {
            assert_eq!(config.class(), Class::Configuration, "{config}");
        }
    }
}
