//! The provider's discovery document (OpenID Connect Discovery 1.0 §3, §4.3).

use serde::Deserialize;

/// The parts of `/.well-known/openid-configuration` gatehouse uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// Path and query of `jwks_uri`, requested on the provider cluster.
    pub jwks_path: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub end_session_endpoint: Option<String>,
}

/// Why a discovery document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryError {
    /// Not a JSON document with `issuer` and `jwks_uri` strings; serde's message.
    Invalid(String),
    /// The document is another issuer's (at most 100 characters of it kept).
    OtherIssuer { found: String, expected: String },
    /// `jwks_uri` is not an http(s) URL.
    JwksUri(String),
}

impl std::fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiscoveryError::Invalid(e) => write!(f, "discovery document is not valid: {e}"),
            DiscoveryError::OtherIssuer { found, expected } => {
                write!(f, "discovery document names issuer {found:?}, expected {expected:?}")
            }
            DiscoveryError::JwksUri(uri) => write!(f, "jwks_uri {uri:?} is not an http(s) URL"),
        }
    }
}

#[derive(Deserialize)]
struct Raw {
    issuer: String,
    jwks_uri: String,
    #[serde(default)]
    authorization_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint: Option<String>,
    #[serde(default)]
    end_session_endpoint: Option<String>,
}

impl Discovery {
    /// Parses a discovery document and checks that it is the expected issuer's: the `issuer`
    /// it states must be exactly the configured one (Discovery §4.3), or its keys could sign
    /// tokens for another issuer.
    pub fn parse(body: &[u8], expected_issuer: &str) -> Result<Discovery, DiscoveryError> {
        let raw: Raw = serde_json::from_slice(body).map_err(|e| DiscoveryError::Invalid(e.to_string()))?;
        if raw.issuer != expected_issuer {
            return Err(DiscoveryError::OtherIssuer {
                found: truncate(&raw.issuer),
                expected: expected_issuer.to_string(),
            });
        }
        let jwks = url::Url::parse(&raw.jwks_uri)
            .ok()
            .filter(|u| u.scheme() == "https" || u.scheme() == "http")
            .ok_or_else(|| DiscoveryError::JwksUri(truncate(&raw.jwks_uri)))?;
        Ok(Discovery {
            jwks_path: super::path_and_query(&jwks),
            authorization_endpoint: raw.authorization_endpoint,
            token_endpoint: raw.token_endpoint,
            end_session_endpoint: raw.end_session_endpoint,
        })
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "http://127.0.0.1:8180/realms/demo";

    #[test]
    fn keycloak_document() {
        let body = br#"{"issuer":"http://127.0.0.1:8180/realms/demo",
            "authorization_endpoint":"http://127.0.0.1:8180/realms/demo/protocol/openid-connect/auth",
            "token_endpoint":"http://127.0.0.1:8180/realms/demo/protocol/openid-connect/token",
            "jwks_uri":"http://keycloak.public.example/realms/demo/protocol/openid-connect/certs",
            "end_session_endpoint":"http://127.0.0.1:8180/realms/demo/protocol/openid-connect/logout",
            "grant_types_supported":["authorization_code"], "extra": {"nested": true}}"#;
        let d = Discovery::parse(body, ISS).unwrap();
        assert_eq!(d.jwks_path, "/realms/demo/protocol/openid-connect/certs");
        assert!(d.token_endpoint.unwrap().ends_with("/token"));
    }

    #[test]
    fn refuses_another_issuer_and_bad_documents() {
        let other = br#"{"issuer":"http://127.0.0.1:8180/realms/demo/","jwks_uri":"http://x/certs"}"#;
        assert!(matches!(Discovery::parse(other, ISS), Err(DiscoveryError::OtherIssuer { .. })));
        assert!(Discovery::parse(other, ISS).unwrap_err().to_string().contains("expected"));
        for bad in [
            &b"<html>"[..],
            b"{}",
            br#"{"issuer":"x"}"#,
            br#"{"issuer":1,"jwks_uri":"http://x"}"#,
            br#"{"issuer":"http://127.0.0.1:8180/realms/demo","jwks_uri":"not a url"}"#,
            br#"{"issuer":"http://127.0.0.1:8180/realms/demo","jwks_uri":"file:///etc/passwd"}"#,
        ] {
            assert!(Discovery::parse(bad, ISS).is_err());
        }
    }
}
