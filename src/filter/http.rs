//! A request's context: its headers go to the engine once, and the decision is applied —
//! headers set or removed, an answer sent, or the request held for a callout whose answer goes
//! back to the engine.

use super::host::Host;
use super::metrics::Metrics;
use super::Shared;
use crate::callout::Answer;
use crate::flow::{not_configured, Decision, Fetcher, HeldAnswer, KeyCall, Pending, Request};
use crate::keys::Fetch;
use std::rc::Rc;

/// What the request's filter chain does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// On to the upstream.
    Continue,
    /// Held (for a callout) or answered.
    Pause,
}

/// A callout the request waits for.
enum Wait {
    /// A key-set fetch (a token named an unknown `kid`); the provider answer that waits with the
    /// request if its ID token named it.
    Keys { token: u32, fetch: Fetch, held: Option<Box<HeldAnswer>>, started_ms: u64 },
    /// A token-endpoint call (login callback, session refresh).
    Idp { token: u32, pending: Pending, started_ms: u64 },
}

pub struct Http {
    engine: Option<Shared>,
    metrics: Rc<Metrics>,
    headers: Vec<(String, String)>,
    wait: Option<Wait>,
    /// `Set-Cookie` values for the upstream's response (a refreshed session).
    response_cookies: Vec<String>,
    /// The request's body is being read for the engine ([`Decision::ReadBody`]).
    reading_body: bool,
    /// The body the engine read, kept for a decision made again after a key fetch.
    body: Option<Vec<u8>>,
}

impl Http {
    pub fn new(engine: Option<Shared>, metrics: Rc<Metrics>) -> Http {
        Http {
            engine,
            metrics,
            headers: Vec::new(),
            wait: None,
            response_cookies: Vec::new(),
            reading_body: false,
            body: None,
        }
    }

    /// `end_of_stream`: the request has no body.
    pub fn on_request_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Next {
        self.headers = host.request_headers();
        let Some(shared) = self.engine.clone() else {
            host.send_response(&not_configured(&Request { headers: &self.headers }));
            return Next::Pause;
        };
        // The engine asks for the time only when it needs it (not for a public path): one host
        // call fewer there.
        let mut read = None;
        let mut clock = || *read.get_or_insert_with(|| host.now_ms() / 1000);
        let decision =
            shared.borrow_mut().on_request(&Request { headers: &self.headers }, &mut clock, &mut |b| host.random(b));
        if matches!(decision, Decision::ReadBody) {
            if end_of_stream {
                return self.body_read(host, &shared, Vec::new());
            }
            self.reading_body = true;
            return Next::Pause;
        }
        self.apply(host, &shared, decision, read)
    }

    /// Request body data (`size` bytes buffered so far): read for the engine when it asked
    /// ([`Decision::ReadBody`]); else held while the request waits for a callout, so that it
    /// cannot carry the request on before the decision. (Envoy's default never delivers body
    /// data to a filter that paused the headers; with the Wasm filter's
    /// `allow_on_headers_stop_iteration` it does, and a `Continue` would resume the request
    /// undecided.)
    pub fn on_request_body(&mut self, host: &dyn Host, size: usize, end_of_stream: bool) -> Next {
        if self.reading_body {
            let Some(shared) = self.engine.clone() else { return Next::Pause };
            if size > crate::flow::MAX_BODY_BYTES {
                self.reading_body = false;
                host.send_response(&crate::flow::Response {
                    status: 413,
                    headers: vec![("content-type".into(), "text/plain".into())],
                    body: "request body too large".into(),
                });
                return Next::Pause;
            }
            if !end_of_stream {
                return Next::Pause;
            }
            let body = host.request_body(size).unwrap_or_default();
            return self.body_read(host, &shared, body);
        }
        if self.wait.is_some() {
            Next::Pause
        } else {
            Next::Continue
        }
    }

    /// Request trailers: the end of the body (see [`Http::on_request_body`]).
    pub fn on_request_trailers(&mut self, host: &dyn Host) -> Next {
        if self.reading_body {
            let size = host.request_body(usize::MAX).map_or(0, |b| b.len());
            return self.on_request_body(host, size, true);
        }
        self.on_request_body(host, 0, false)
    }

    /// The body the engine asked for has arrived: its decision.
    fn body_read(&mut self, host: &dyn Host, shared: &Shared, body: Vec<u8>) -> Next {
        self.reading_body = false;
        let now = host.now_ms() / 1000;
        let decision = shared.borrow_mut().on_request_body(&Request { headers: &self.headers }, &body, now, true);
        self.body = Some(body);
        self.apply(host, shared, decision, Some(now))
    }

    pub fn on_response_headers(&mut self, host: &dyn Host) {
        for cookie in std::mem::take(&mut self.response_cookies) {
            host.add_response_header("set-cookie", &cookie);
        }
    }

    pub fn on_http_call_response(&mut self, host: &dyn Host, token: u32, body_size: usize) {
        let Some(shared) = self.engine.clone() else { return };
        let started = match &self.wait {
            Some(Wait::Keys { token: t, started_ms, .. } | Wait::Idp { token: t, started_ms, .. }) if *t == token => {
                *started_ms
            }
            _ => return,
        };
        let now_ms = host.now_ms();
        let now = now_ms / 1000;
        self.metrics.callout(host, now_ms.saturating_sub(started));
        let answer = Answer::read(host.call_status().as_deref(), body_size, |n| host.call_body(n));
        let next = match self.wait.take() {
            Some(Wait::Idp { pending, .. }) => {
                let decision = self.idp_answer(host, &shared, HeldAnswer::new(pending, answer), now, true);
                self.apply(host, &shared, decision, Some(now))
            }
            Some(Wait::Keys { fetch, held, .. }) => {
                let next = shared.borrow_mut().on_key_answer(&fetch, &answer, now, Fetcher::Request);
                debug_assert!(next.is_none(), "a key-set answer needs no further fetch");
                self.decide_again(host, &shared, held, now)
            }
            None => return,
        };
        if next == Next::Continue {
            host.resume_request();
        }
    }

    /// Applies a decision. `now`: the time the decision was made at, if it was read; a decision
    /// that waits for a callout reads it if not.
    fn apply(&mut self, host: &dyn Host, shared: &Shared, decision: Decision, now: Option<u64>) -> Next {
        let now = || now.unwrap_or_else(|| host.now_ms() / 1000);
        match decision {
            Decision::Forward { remove, set, set_cookies } => {
                for name in &remove {
                    host.set_request_header(name, None);
                }
                for (name, value) in &set {
                    host.set_request_header(name, Some(value));
                }
                self.response_cookies = set_cookies;
                Next::Continue
            }
            Decision::Respond(r) => {
                host.send_response(&r);
                Next::Pause
            }
            Decision::ReadBody => {
                // Only a request's first decision asks for its body.
                host.send_response(&crate::flow::unavailable("unexpected state"));
                Next::Pause
            }
            Decision::FetchKeys(fetch) => self.wait_for_keys(host, shared, fetch, None, now()),
            Decision::FetchKeysForAnswer(fetch, held) => self.wait_for_keys(host, shared, fetch, Some(held), now()),
            Decision::CallIdp(call) => match host.dispatch(&call.callout) {
                Ok(token) => {
                    self.wait = Some(Wait::Idp { token, pending: call.pending, started_ms: host.now_ms() });
                    Next::Pause
                }
                Err(e) => {
                    log::error!("{e}");
                    let now = now();
                    let decision =
                        self.idp_answer(host, shared, HeldAnswer::new(call.pending, Answer::none()), now, true);
                    self.apply(host, shared, decision, Some(now))
                }
            },
        }
    }

    /// Holds the request for a key-set fetch, unless another VM has published new keys already
    /// or the fetch cannot start: then decides again at once.
    fn wait_for_keys(
        &mut self,
        host: &dyn Host,
        shared: &Shared,
        fetch: Fetch,
        held: Option<Box<HeldAnswer>>,
        now: u64,
    ) -> Next {
        let call = shared.borrow_mut().wait_for_keys(fetch);
        if let Some(KeyCall { fetch, callout }) = call {
            match host.dispatch(&callout) {
                Ok(token) => {
                    self.wait = Some(Wait::Keys { token, fetch, held, started_ms: host.now_ms() });
                    return Next::Pause;
                }
                Err(e) => {
                    log::error!("{e}");
                    shared.borrow_mut().on_key_call_failed(&fetch, now, Fetcher::Request);
                }
            }
        }
        self.decide_again(host, shared, held, now)
    }

    /// After a key-set fetch (or instead of one): the request again, or the provider answer that
    /// waited for the keys, without another fetch.
    fn decide_again(&mut self, host: &dyn Host, shared: &Shared, held: Option<Box<HeldAnswer>>, now: u64) -> Next {
        let req = Request { headers: &self.headers };
        let decision = match (held, &self.body) {
            (Some(held), _) => self.idp_answer(host, shared, *held, now, false),
            (None, Some(body)) => shared.borrow_mut().on_request_body(&req, body, now, false),
            (None, None) => shared.borrow_mut().decide(&req, now, false, &mut |b| host.random(b)),
        };
        self.apply(host, shared, decision, Some(now))
    }

    fn idp_answer(&self, host: &dyn Host, shared: &Shared, answer: HeldAnswer, now: u64, refetch: bool) -> Decision {
        let req = Request { headers: &self.headers };
        shared.borrow_mut().on_idp_answer(answer, &req, now, refetch, &mut |b| host.random(b))
    }
}
