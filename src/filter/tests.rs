//! The glue, driven as Envoy drives it, against a fake host that records every host call.

use super::host::{Host, MetricKind};
use super::root::Root;
use crate::callout::Callout;
use crate::flow::Response;
use crate::jwt::alg::Alg;
use crate::shared::{MemoryStore, Store};
use crate::testutil::fixtures::{access_claims, id_claims, request, Credential, Signers, ISS, NOW, SESSION_KEY};
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// One Envoy as the glue sees it: a clock, a shared store, and what each host call did.
#[derive(Default)]
struct Fake {
    now_ms: Cell<u64>,
    /// How often the clock was read.
    clock_reads: Cell<u32>,
    config: RefCell<Vec<u8>>,
    store: Rc<MemoryStore>,
    /// Callouts started, with their tokens.
    calls: RefCell<Vec<(u32, Callout)>>,
    refuse_calls: Cell<bool>,
    /// The callout answer being delivered: `:status` and body.
    answer: RefCell<(Option<String>, Vec<u8>)>,
    request: RefCell<Vec<(String, String)>>,
    request_body: RefCell<Vec<u8>>,
    response_headers: RefCell<Vec<(String, String)>>,
    sent: RefCell<Vec<Response>>,
    resumed: Cell<u32>,
    ticks: RefCell<Vec<Duration>>,
    metrics: RefCell<BTreeMap<u32, (String, u64)>>,
}

impl Fake {
    /// A VM of the same Envoy (same store and clock start), with its own host calls.
    fn sibling(&self) -> Fake {
        let f = Fake { store: Rc::clone(&self.store), ..Fake::default() };
        f.now_ms.set(self.now_ms.get());
        f.config.replace(self.config.borrow().clone());
        f
    }

    fn with_config(config: &Value) -> Fake {
        let f = Fake::default();
        f.now_ms.set(NOW * 1000);
        f.config.replace(config.to_string().into_bytes());
        f
    }

    fn last_call(&self) -> (u32, Callout) {
        self.calls.borrow().last().cloned().expect("a callout")
    }

    fn metric(&self, name: &str) -> u64 {
        self.metrics.borrow().values().find(|(n, _)| n == name).map_or(0, |(_, v)| *v)
    }

    fn answering(&self, status: &str, body: &str) -> usize {
        self.answer.replace((Some(status.into()), body.as_bytes().to_vec()));
        body.len()
    }

    fn request_header(&self, name: &str) -> Option<String> {
        self.request.borrow().iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    }
}

impl Host for Fake {
    fn now_ms(&self) -> u64 {
        self.clock_reads.set(self.clock_reads.get() + 1);
        self.now_ms.get()
    }
    fn random(&self, buf: &mut [u8]) {
        buf.fill(7);
    }
    fn plugin_config(&self) -> Vec<u8> {
        self.config.borrow().clone()
    }
    fn env(&self, _name: &str) -> Option<String> {
        None
    }
    fn store(&self) -> Box<dyn Store> {
        Box::new(Rc::clone(&self.store))
    }
    fn set_tick(&self, period: Duration) {
        self.ticks.borrow_mut().push(period);
    }
    fn define_metric(&self, _kind: MetricKind, name: &str) -> Option<u32> {
        let mut m = self.metrics.borrow_mut();
        let id = u32::try_from(m.len()).unwrap();
        m.insert(id, (name.to_string(), 0));
        Some(id)
    }
    fn increment_metric(&self, id: u32, by: u64) {
        self.metrics.borrow_mut().get_mut(&id).unwrap().1 += by;
    }
    fn record_metric(&self, id: u32, value: u64) {
        self.metrics.borrow_mut().get_mut(&id).unwrap().1 = value;
    }
    fn memory_bytes(&self) -> u64 {
        1 << 20
    }
    fn dispatch(&self, call: &Callout) -> Result<u32, String> {
        if self.refuse_calls.get() {
            return Err(format!("no cluster {:?}", call.cluster));
        }
        let mut calls = self.calls.borrow_mut();
        let token = u32::try_from(calls.len()).unwrap() + 100;
        calls.push((token, call.clone()));
        Ok(token)
    }
    fn call_status(&self) -> Option<String> {
        self.answer.borrow().0.clone()
    }
    fn call_body(&self, size: usize) -> Option<Vec<u8>> {
        Some(self.answer.borrow().1.iter().take(size).copied().collect())
    }
    fn request_headers(&self) -> Vec<(String, String)> {
        self.request.borrow().clone()
    }
    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        Some(self.request_body.borrow().iter().take(size).copied().collect())
    }
    fn set_request_header(&self, name: &str, value: Option<&str>) {
        let mut h = self.request.borrow_mut();
        h.retain(|(n, _)| n != name);
        if let Some(v) = value {
            h.push((name.to_string(), v.to_string()));
        }
    }
    fn add_response_header(&self, name: &str, value: &str) {
        self.response_headers.borrow_mut().push((name.to_string(), value.to_string()));
    }
    fn send_response(&self, response: &Response) {
        self.sent.borrow_mut().push(response.clone());
    }
    fn resume_request(&self) {
        self.resumed.set(self.resumed.get() + 1);
    }
}

const DISCOVERY_PATH: &str = "/realms/acme/.well-known/openid-configuration";
const CERTS: &str = "/realms/acme/protocol/openid-connect/certs";

fn discovery() -> String {
    json!({"issuer": ISS, "jwks_uri": format!("{ISS}/protocol/openid-connect/certs"),
           "authorization_endpoint": format!("{ISS}/protocol/openid-connect/auth"),
           "token_endpoint": format!("{ISS}/protocol/openid-connect/token")})
    .to_string()
}

/// Bearer tokens only, keys from the provider.
fn bearer_config() -> Value {
    json!({"provider": {"issuer": ISS, "cluster": "keycloak", "audiences": ["gateway"]}})
}

/// Browser sign-in with refresh; keys inline.
fn browser_config(signers: &Signers) -> Value {
    json!({
        "provider": {"issuer": ISS, "cluster": "keycloak", "clientId": "gateway", "clientSecret": "s3cret",
                     "audiences": ["gateway"], "jwks": signers.jwks()},
        "session": {"keys": [SESSION_KEY], "refresh": true}
    })
}

/// A configured root context that has loaded its documents through the fake.
fn loaded(host: &Fake, keys: &str) -> Root {
    let mut root = Root::default();
    assert!(root.on_configure(host));
    root.on_tick(host);
    loop {
        let Some((token, call)) = host.calls.borrow().last().cloned() else { break };
        let body = match call.header(":path") {
            Some(DISCOVERY_PATH) => discovery(),
            Some(CERTS) => keys.to_string(),
            other => panic!("unexpected fetch {other:?}"),
        };
        let size = host.answering("200", &body);
        let before = host.calls.borrow().len();
        root.on_http_call_response(host, token, size);
        if host.calls.borrow().len() == before {
            break;
        }
    }
    root
}

#[test]
fn a_refused_configuration_fails_configure_and_requests_get_503() {
    let host = Fake::with_config(&json!({"provider": {"issuer": "not a url", "cluster": ""}}));
    let mut root = Root::default();
    assert!(!root.on_configure(&host), "Envoy must refuse the plugin");
    host.request.replace(request(("GET", "/"), Credential::None));
    let mut http = root.http();
    assert_eq!(http.on_request_headers(&host, true), super::http::Next::Pause);
    let sent = host.sent.borrow();
    assert_eq!((sent[0].status, sent[0].body.as_str()), (503, "gatehouse is not configured"));
    assert!(host.calls.borrow().is_empty() && host.ticks.borrow().is_empty());
}

#[test]
fn one_vm_fetches_under_the_lease_and_the_others_adopt() {
    let a = Fake::with_config(&bearer_config());
    let b = a.sibling();
    let (mut ra, mut rb) = (Root::default(), Root::default());
    assert!(ra.on_configure(&a) && rb.on_configure(&b));
    assert_eq!(a.ticks.borrow()[..], [Duration::from_millis(10)], "the first tick starts the fetch");

    ra.on_tick(&a);
    rb.on_tick(&b);
    assert_eq!(a.calls.borrow().len(), 1, "A took the lease");
    assert!(b.calls.borrow().is_empty(), "B waits for A's keys");
    let (token, call) = a.last_call();
    assert_eq!(call.cluster, "keycloak");
    assert_eq!(call.header(":method"), Some("GET"));
    assert_eq!(call.header(":path"), Some(DISCOVERY_PATH));
    assert_eq!(call.header(":authority"), Some("sso.example.com"));

    let size = a.answering("200", &discovery());
    ra.on_http_call_response(&a, token, size);
    let (token, call) = a.last_call();
    assert_eq!(call.header(":path"), Some(CERTS), "then the key set");
    let signers = Signers::new();
    let size = a.answering("200", &signers.jwks().to_string());
    ra.on_http_call_response(&a, token, size);
    ra.on_tick(&a);
    assert_eq!(a.ticks.borrow().last(), Some(&Duration::from_secs(1)), "keys in: slow ticks");
    assert_eq!(a.metric("gatehouse.discovery.fetches"), 1);
    assert_eq!(a.metric("gatehouse.jwks.fetches"), 1);

    // B adopts on its next tick, and serves a token without fetching anything.
    rb.on_tick(&b);
    assert!(b.calls.borrow().is_empty());
    assert_eq!(b.ticks.borrow().last(), Some(&Duration::from_secs(1)));
    b.request.replace(request(("GET", "/"), Credential::Bearer(&signers.token(Alg::ES256, &access_claims()))));
    assert_eq!(rb.http().on_request_headers(&b, true), super::http::Next::Continue);
    assert_eq!(b.request_header("x-auth-request-email").as_deref(), Some("alice@example.com"));
}

#[test]
fn the_root_fetches_each_providers_documents_at_once_and_matches_answers_by_token() {
    const ISS_B: &str = "https://sso.example.com/realms/b";
    let host = Fake::with_config(&json!({"providers": [
        {"issuer": ISS, "cluster": "keycloak", "audiences": ["gateway"], "hosts": ["a.example"]},
        {"issuer": ISS_B, "cluster": "keycloak-b", "audiences": ["gateway"]}
    ]}));
    let mut root = Root::default();
    assert!(root.on_configure(&host));
    root.on_tick(&host);
    let calls = host.calls.borrow().clone();
    let started: Vec<(&str, Option<&str>)> =
        calls.iter().map(|(_, c)| (c.cluster.as_str(), c.header(":path"))).collect();
    assert_eq!(
        started,
        vec![("keycloak", Some(DISCOVERY_PATH)), ("keycloak-b", Some("/realms/b/.well-known/openid-configuration"))]
    );
    // b's answer comes first: its key-set fetch follows on b's cluster; a's stays in flight.
    let b_discovery = json!({"issuer": ISS_B, "jwks_uri": format!("{ISS_B}/protocol/openid-connect/certs")});
    let size = host.answering("200", &b_discovery.to_string());
    root.on_http_call_response(&host, calls[1].0, size);
    let (b_token, call) = host.last_call();
    assert_eq!(
        (call.cluster.as_str(), call.header(":path")),
        ("keycloak-b", Some("/realms/b/protocol/openid-connect/certs"))
    );
    root.on_tick(&host);
    assert_eq!(host.calls.borrow().len(), 3, "no new fetch while both are in flight");
    let signers = Signers::new();
    let size = host.answering("200", &signers.jwks().to_string());
    root.on_http_call_response(&host, b_token, size);
    // An answer to a token nobody started is not taken for a's.
    root.on_http_call_response(&host, 999, size);
    assert_eq!(host.calls.borrow().len(), 3);
    let size = host.answering("200", &discovery());
    root.on_http_call_response(&host, calls[0].0, size);
    let (_, call) = host.last_call();
    assert_eq!((call.cluster.as_str(), call.header(":path")), ("keycloak", Some(CERTS)));
    root.on_tick(&host); // counts go to Envoy on ticks
    assert_eq!(host.metric("gatehouse.discovery.fetches"), 2);
}

#[test]
fn fetch_failures_back_off_and_are_told_apart_in_metrics() {
    let host = Fake::with_config(&bearer_config());
    let mut root = Root::default();
    assert!(root.on_configure(&host));
    root.on_tick(&host);
    let (token, _) = host.last_call();
    let size =
        host.answering("200", &json!({"issuer": "https://other.example", "jwks_uri": "https://x/c"}).to_string());
    root.on_http_call_response(&host, token, size);
    root.on_tick(&host);
    assert_eq!(host.calls.borrow().len(), 1, "no retry before the backoff");
    host.now_ms.set(host.now_ms.get() + 1000);
    root.on_tick(&host);
    let (token, _) = host.last_call();
    host.answer.replace((None, Vec::new()));
    root.on_http_call_response(&host, token, 0);
    host.refuse_calls.set(true);
    host.now_ms.set(host.now_ms.get() + 10_000);
    root.on_tick(&host);
    root.on_tick(&host);
    assert_eq!(host.metric("gatehouse.discovery.fetches"), 3);
    assert_eq!(host.metric("gatehouse.discovery.fetch_failures"), 3);
    assert_eq!(host.metric("gatehouse.provider_errors.configuration"), 2, "another issuer; no such cluster");
    assert_eq!(host.metric("gatehouse.provider_errors.passing"), 1, "no answer");
    assert_eq!(host.ticks.borrow().last(), Some(&Duration::from_millis(200)), "no keys: fast ticks");
}

#[test]
fn the_clock_is_read_only_by_requests_that_need_it() {
    let signers = Signers::new();
    let host = Fake::with_config(&json!({
        "provider": {"issuer": ISS, "cluster": "keycloak", "audiences": ["gateway"], "jwks": signers.jwks()},
        "publicPaths": [{"prefix": "/static/"}]
    }));
    let root = loaded(&host, "");
    let token = signers.token(Alg::RS256, &access_claims());
    for (target, credential, reads, what) in [
        (("GET", "/static/app.js"), Credential::None, 0, "a public path"),
        (("GET", "/a/%zz"), Credential::None, 0, "a refused target"),
        (("GET", "/api"), Credential::Bearer(&token), 1, "a bearer token: its expiry"),
        (("GET", "/api"), Credential::None, 1, "no credential"),
    ] {
        host.request.replace(request(target, credential));
        host.clock_reads.set(0);
        root.http().on_request_headers(&host, true);
        assert_eq!(host.clock_reads.get(), reads, "{what}");
    }
    assert_eq!(host.request_header("x-auth-request-user"), None, "the last request had no credential");
    assert_eq!(
        host.sent.borrow().iter().map(|r| r.status).collect::<Vec<_>>(),
        [400, 401],
        "the refused target and the request without a credential"
    );
}

#[test]
fn an_unknown_kid_holds_the_request_for_one_key_fetch_then_resumes_it() {
    let host = Fake::with_config(&bearer_config());
    let signers = Signers::new();
    let mut jwks = signers.jwks();
    let rotated = jwks["keys"].as_array_mut().unwrap().remove(0);
    let root = loaded(&host, &jwks.to_string());
    let fetches = host.calls.borrow().len();

    let token = signers.token(Alg::RS256, &access_claims()); // signed with the key left out
    host.request.replace(request(("GET", "/api"), Credential::Bearer(&token)));
    let mut http = root.http();
    assert_eq!(http.on_request_headers(&host, true), super::http::Next::Pause, "held");
    // Body data arriving while the request is held stays held (a host that delivers it — Envoy
    // with `allow_on_headers_stop_iteration` — must not resume the request with it).
    assert_eq!(http.on_request_body(&host, 10, false), super::http::Next::Pause, "the body waits with the request");
    assert_eq!(host.calls.borrow().len(), fetches + 1);
    let (call, key_call) = host.last_call();
    assert_eq!(key_call.header(":path"), Some(CERTS));

    jwks["keys"].as_array_mut().unwrap().push(rotated);
    let size = host.answering("200", &jwks.to_string());
    http.on_http_call_response(&host, call + 1, size);
    assert_eq!(host.resumed.get(), 0, "an answer to another call is not this one's");
    http.on_http_call_response(&host, call, size);
    assert_eq!(host.resumed.get(), 1, "resumed once");
    assert_eq!(http.on_request_body(&host, 10, false), super::http::Next::Continue, "decided: the body goes on");
    assert_eq!(host.request_header("x-auth-request-user").as_deref(), Some("5f2b8c1e-3d4a-4e6f-9a7b-1c2d3e4f5a6b"));
    assert!(host.request_header("authorization").is_none(), "not forwarded by default");
    assert!(host.sent.borrow().is_empty());
}

#[test]
fn sign_in_and_refresh_through_the_glue_set_cookies_on_the_right_response() {
    let signers = Signers::new();
    let host = Fake::with_config(&browser_config(&signers));
    let root = loaded(&host, "");
    let b = crate::config::Config::parse(&host.plugin_config(), &|_| None).unwrap();
    let b = b.browser.unwrap();

    // The login redirect, then the callback: held for the token call, answered with a 302.
    let mut page = request(("GET", "/orders"), Credential::None);
    page.push(("sec-fetch-mode".into(), "navigate".into()));
    host.request.replace(page);
    assert_eq!(root.http().on_request_headers(&host, true), super::http::Next::Pause);
    let redirect = host.sent.borrow_mut().remove(0);
    assert_eq!(redirect.status, 302);
    let header = |r: &Response, name: &str| -> Vec<String> {
        r.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.clone()).collect()
    };
    let state_cookie = header(&redirect, "set-cookie")[0].split(';').next().unwrap().to_string();
    let location = url::Url::parse(&header(&redirect, "location")[0]).unwrap();
    let q = |k: &str| location.query_pairs().find(|(n, _)| n == k).unwrap().1.into_owned();
    host.request.replace(request(
        ("GET", &format!("/oauth2/callback?code=c0de&state={}&iss={ISS}", q("state"))),
        Credential::Cookie(&state_cookie),
    ));
    let mut callback = root.http();
    assert_eq!(callback.on_request_headers(&host, true), super::http::Next::Pause);
    let (token, call) = host.last_call();
    assert_eq!(call.header(":path"), Some("/realms/acme/protocol/openid-connect/token"));
    let answer = |rt: &str, at: u64| {
        let mut claims = access_claims();
        claims["iat"] = json!(at);
        claims["exp"] = json!(at + 300);
        json!({"access_token": signers.token(Alg::RS256, &claims),
               "id_token": signers.token(Alg::RS256, &id_claims(&q("nonce"))),
               "token_type": "Bearer", "expires_in": 300, "refresh_token": rt})
        .to_string()
    };
    let size = host.answering("200", &answer("rt-1", NOW));
    callback.on_http_call_response(&host, token, size);
    let done = host.sent.borrow_mut().remove(0);
    assert_eq!((done.status, header(&done, "location")), (302, vec!["/orders".to_string()]));
    assert_eq!(host.resumed.get(), 0, "answered, not resumed");
    let session = header(&done, "set-cookie").into_iter().find(|c| c.starts_with(&b.cookie_name)).unwrap();
    let session = session.split(';').next().unwrap().to_string();

    // Near the access token's expiry: held for a refresh, then forwarded, and the new cookie goes
    // on the upstream's response.
    host.now_ms.set((NOW + 290) * 1000);
    host.request.replace(request(("GET", "/orders"), Credential::Cookie(&session)));
    let mut refresh = root.http();
    assert_eq!(refresh.on_request_headers(&host, true), super::http::Next::Pause);
    let (token, call) = host.last_call();
    assert!(call.body.as_deref().unwrap().starts_with("grant_type=refresh_token&refresh_token=rt-1"));
    let size = host.answering("200", &answer("rt-2", NOW + 290));
    refresh.on_http_call_response(&host, token, size);
    assert_eq!(host.resumed.get(), 1);
    assert!(host.response_headers.borrow().is_empty(), "not before the upstream answers");
    refresh.on_response_headers(&host);
    let cookies = host.response_headers.borrow();
    assert!(cookies.iter().any(|(n, v)| n == "set-cookie" && v.starts_with(&b.cookie_name)), "{cookies:?}");
    assert_eq!(host.request_header("x-auth-request-email").as_deref(), Some("alice@example.com"));

    // The refresh is noted for the other workers.
    let names = crate::shared::Names::new(ISS);
    let noted = (0..=255u8).filter(|s| host.store.get(&names.refreshed(*s)).0.is_some()).count();
    assert_eq!(noted, 1);
}

#[test]
fn a_key_fetch_that_cannot_start_is_answered_not_left_hanging() {
    let host = Fake::with_config(&bearer_config());
    let signers = Signers::new();
    let mut jwks = signers.jwks();
    jwks["keys"].as_array_mut().unwrap().remove(0);
    let root = loaded(&host, &jwks.to_string());
    host.refuse_calls.set(true);
    host.request.replace(request(("GET", "/api"), Credential::Bearer(&signers.token(Alg::RS256, &access_claims()))));
    let mut http = root.http();
    assert_eq!(http.on_request_headers(&host, true), super::http::Next::Pause);
    let sent = host.sent.borrow();
    assert_eq!(sent.len(), 1, "an answer, not a request held for ever");
    assert_eq!(sent[0].status, 401);
    assert_eq!(host.resumed.get(), 0);
}

#[test]
fn a_logout_post_is_held_until_its_body_has_arrived_then_answered() {
    let signers = Signers::new();
    let mut config = browser_config(&signers);
    config["login"] = json!({"backchannelLogoutPath": "/bcl"});
    let host = Fake::with_config(&config);
    let root = loaded(&host, "");
    let token = signers.token(
        Alg::RS256,
        &json!({"iss": ISS, "aud": "gateway", "sid": "s-1", "iat": NOW, "exp": NOW + 120, "jti": "j",
                "events": {crate::oidc::logout::BACKCHANNEL_LOGOUT_EVENT: {}}}),
    );
    let mut headers = request(("POST", "/bcl"), Credential::None);
    headers.push(("content-type".into(), "application/x-www-form-urlencoded".into()));
    host.request.replace(headers.clone());
    let mut http = root.http();
    assert_eq!(http.on_request_headers(&host, false), super::http::Next::Pause, "held for the body");
    host.request_body.replace(format!("logout_token={token}").into_bytes());
    assert_eq!(http.on_request_body(&host, 10, false), super::http::Next::Pause, "not all of it yet");
    assert!(host.sent.borrow().is_empty());
    let size = host.request_body.borrow().len();
    assert_eq!(http.on_request_body(&host, size, true), super::http::Next::Pause, "answered");
    assert_eq!(host.sent.borrow().last().map(|r| r.status), Some(200));
    assert_eq!(host.resumed.get(), 0, "never forwarded");
    // No body at all, or one too large: refused, never forwarded.
    let mut http = root.http();
    assert_eq!(http.on_request_headers(&host, true), super::http::Next::Pause);
    assert_eq!(host.sent.borrow().last().map(|r| r.status), Some(400));
    let mut http = root.http();
    assert_eq!(http.on_request_headers(&host, false), super::http::Next::Pause);
    assert_eq!(http.on_request_body(&host, 1 << 20, false), super::http::Next::Pause);
    assert_eq!(host.sent.borrow().last().map(|r| r.status), Some(413));
}
