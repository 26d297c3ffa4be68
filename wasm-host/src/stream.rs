//! One HTTP exchange through a worker, as a proxy runs it: request headers (and body), the
//! filter's callouts, the upstream's response when the filter lets the request through, then
//! done, log and delete.

use std::time::Duration;

use super::abi::{Pairs, buffer};
use super::{Buffer, HttpState, Worker};

/// A reply the filter sent itself (`proxy_send_local_response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub details: String,
}

impl LocalReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "reply body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// What the upstream answers when the request reaches it.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub status: u16,
    pub headers: Pairs,
    pub body: Vec<Vec<u8>>,
    pub trailers: Pairs,
    /// How long the upstream takes to answer: the host's clock moves by this much between the
    /// request going upstream and the response headers coming back ([`crate::Host::advance_clock`]).
    pub latency: Duration,
}

impl Upstream {
    pub fn ok() -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
            trailers: Vec::new(),
            latency: Duration::ZERO,
        }
    }

    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Answers after `latency` on the host's clock.
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.as_bytes().to_vec()));
        self
    }

    /// One more body chunk.
    pub fn chunk(mut self, bytes: &[u8]) -> Self {
        self.body.push(bytes.to_vec());
        self
    }

    pub fn trailer(mut self, k: &str, v: &str) -> Self {
        self.trailers.push((k.into(), v.as_bytes().to_vec()));
        self
    }
}

/// A request from a client.
#[derive(Debug, Clone)]
pub struct Request {
    pub headers: Pairs,
    pub body: Vec<u8>,
    pub properties: Vec<(Vec<String>, Vec<u8>)>,
    pub upstream: Upstream,
}

impl Request {
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            headers: vec![
                (":method".into(), method.as_bytes().to_vec()),
                (":path".into(), path.as_bytes().to_vec()),
                (":authority".into(), b"api.example.test".to_vec()),
                (":scheme".into(), b"http".to_vec()),
            ],
            body: Vec::new(),
            properties: vec![(
                vec!["source".into(), "address".into()],
                b"192.0.2.10:40000".to_vec(),
            )],
            upstream: Upstream::ok(),
        }
    }

    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    pub fn header(mut self, k: &str, v: impl AsRef<[u8]>) -> Self {
        self.headers.push((k.into(), v.as_ref().to_vec()));
        self
    }

    pub fn property(mut self, path: &[&str], v: impl AsRef<[u8]>) -> Self {
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        self.properties.retain(|(p, _)| *p != path);
        self.properties.push((path, v.as_ref().to_vec()));
        self
    }

    /// The client address as Envoy reports it (`source.address`).
    pub fn remote(self, addr: &str) -> Self {
        self.property(&["source", "address"], addr)
    }

    pub fn body(mut self, bytes: &[u8]) -> Self {
        self.body = bytes.to_vec();
        self
    }

    pub fn upstream(mut self, upstream: Upstream) -> Self {
        self.upstream = upstream;
        self
    }
}

/// How the exchange went.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Set when the filter answered instead of the upstream.
    pub local_reply: Option<LocalReply>,
    /// The request headers as the upstream received them; `None` when it was not reached.
    pub forwarded: Option<Pairs>,
    /// The response headers the client received from the upstream path.
    pub response_headers: Pairs,
}

impl Exchange {
    pub fn status(&self) -> u32 {
        match &self.local_reply {
            Some(r) => r.status,
            None => self
                .header(":status")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
        }
    }

    pub fn reply(&self) -> &LocalReply {
        self.local_reply
            .as_ref()
            .unwrap_or_else(|| panic!("no local reply: {self:?}"))
    }

    /// A response header the client got, from the local reply or the upstream path.
    pub fn header(&self, name: &str) -> Option<String> {
        if let Some(r) = &self.local_reply {
            return r.header(name).map(str::to_string);
        }
        find(&self.response_headers, name)
    }

    /// A request header as forwarded upstream.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        find(self.forwarded.as_ref()?, name)
    }
}

fn find(pairs: &Pairs, name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

const CONTINUE: i32 = 0;

/// A stream whose response has gone through the filter but has not ended: a long upload or a
/// streamed answer, still open while other requests come and the root ticks.
#[derive(Debug)]
pub struct OpenStream {
    id: u32,
    exchange: Exchange,
}

impl OpenStream {
    /// How the exchange went so far.
    pub fn exchange(&self) -> &Exchange {
        &self.exchange
    }
}

impl Worker {
    /// Runs one request through the filter, start to end, including the callouts it makes
    /// (the post-response charge too, so Sluice has seen it when this returns).
    pub fn exchange(&mut self, request: Request) -> Exchange {
        let open = self.open(request);
        self.close(open)
    }

    /// Runs a request through the filter up to the end of its response, leaving the stream
    /// open until [`Worker::close`].
    pub fn open(&mut self, request: Request) -> OpenStream {
        let id = self.next_context;
        self.next_context += 1;
        let root = self.store.data().root_id;
        let n_headers = request.headers.len();
        self.store.data_mut().streams.insert(
            id,
            HttpState {
                request_headers: request.headers,
                properties: request.properties,
                ..HttpState::default()
            },
        );
        self.enter(id);
        self.call2("proxy_on_context_create", id, root);
        self.enter(id);
        let mut action = self.call_action(
            "proxy_on_request_headers",
            id,
            n_headers,
            request.body.is_empty(),
        );
        if !request.body.is_empty() && self.stream(id).local_reply.is_none() {
            let len = request.body.len();
            self.store.data_mut().buffer = Buffer::Body(buffer::HTTP_REQUEST_BODY, request.body);
            self.enter(id);
            let body_action = self.call_action("proxy_on_request_body", id, len, true);
            self.store.data_mut().buffer = Buffer::None;
            if action == CONTINUE {
                action = body_action;
            }
        }
        // Paused: the filter is waiting for its callout.
        self.run_callouts(|s| {
            s.streams
                .get(&id)
                .is_none_or(|h| h.local_reply.is_some() || h.request_continued)
        });
        let state = self.stream(id);
        let local_reply = state.local_reply.clone();
        let passed = local_reply.is_none() && (action == CONTINUE || state.request_continued);
        assert!(
            passed || local_reply.is_some(),
            "the filter paused the request and never resumed or answered it"
        );
        let forwarded = passed.then(|| state.request_headers.clone());
        let mut response_headers = Vec::new();
        if let Some(reply) = &local_reply {
            // As in Envoy, a filter's local reply goes through the response path of the filters
            // that saw the request, the filter's own included.
            let mut headers: Pairs =
                vec![(":status".into(), reply.status.to_string().into_bytes())];
            headers.extend(
                reply
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_bytes().to_vec())),
            );
            let n = headers.len();
            if let Some(h) = self.store.data_mut().streams.get_mut(&id) {
                h.response_headers = headers;
            }
            self.enter(id);
            self.call_action("proxy_on_response_headers", id, n, true);
        }
        if passed {
            let up = request.upstream;
            crate::advance(&self.store.data().shared, up.latency);
            let mut headers: Pairs = vec![(":status".into(), up.status.to_string().into_bytes())];
            headers.extend(
                up.headers
                    .into_iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v)),
            );
            let n = headers.len();
            let ends = up.body.is_empty() && up.trailers.is_empty();
            if let Some(h) = self.store.data_mut().streams.get_mut(&id) {
                h.response_headers = headers;
            }
            self.enter(id);
            self.call_action("proxy_on_response_headers", id, n, ends);
            let chunks = up.body.len();
            for (i, chunk) in up.body.into_iter().enumerate() {
                let len = chunk.len();
                self.store.data_mut().buffer = Buffer::Body(buffer::HTTP_RESPONSE_BODY, chunk);
                self.enter(id);
                self.call_action(
                    "proxy_on_response_body",
                    id,
                    len,
                    i + 1 == chunks && up.trailers.is_empty(),
                );
                self.store.data_mut().buffer = Buffer::None;
            }
            if !up.trailers.is_empty() {
                let n = up.trailers.len();
                if let Some(h) = self.store.data_mut().streams.get_mut(&id) {
                    h.response_trailers = up.trailers;
                }
                self.enter(id);
                let f = self.func::<(i32, i32), i32>("proxy_on_response_trailers");
                f.call(&mut self.store, (id as i32, n as i32))
                    .unwrap_or_else(|e| self.trap("proxy_on_response_trailers", e));
            }
            response_headers = self.stream(id).response_headers.clone();
        }
        OpenStream {
            id,
            exchange: Exchange {
                local_reply,
                forwarded,
                response_headers,
            },
        }
    }

    /// Ends a stream [`Worker::open`] left open: done, log and delete, and the callouts the
    /// filter makes at stream end.
    pub fn close(&mut self, open: OpenStream) -> Exchange {
        self.finish(open.id);
        open.exchange
    }

    fn stream(&self, id: u32) -> &HttpState {
        self.store.data().streams.get(&id).expect("stream state")
    }

    /// Done, log, delete; then the callouts still in flight (the root's) are delivered.
    fn finish(&mut self, id: u32) {
        self.enter(id);
        let on_done = self.func::<i32, i32>("proxy_on_done");
        let done = on_done
            .call(&mut self.store, id as i32)
            .unwrap_or_else(|e| self.trap("proxy_on_done", e));
        if done == 0 {
            // The filter holds the context until it calls proxy_done.
            self.store.data_mut().awaiting_done.push(id);
            self.run_callouts(|s| !s.awaiting_done.contains(&id));
        }
        self.enter(id);
        self.call1("proxy_on_log", id);
        self.enter(id);
        self.call1("proxy_on_delete", id);
        let s = self.store.data_mut();
        s.streams.remove(&id);
        // As Envoy does, a context's own callouts die with it.
        s.pending.retain(|_, context| *context != id);
        self.run_callouts(|_| false);
    }
}
