//! One HTTP exchange through a worker, as a proxy runs it: request headers (and body), the
//! filter's callouts, the upstream's response when the filter lets the request through, then
//! done, log and delete.

use super::abi::{Pairs, buffer};
use super::request::{Exchange, Request, Upstream};
use super::{Buffer, HttpState, Worker};

const CONTINUE: i32 = 0;

/// A stream whose response has gone through the filter but has not ended: a long upload or a
/// streamed answer, still open while other requests come and the root ticks.
#[derive(Debug)]
pub struct OpenStream {
    id: u32,
    exchange: Exchange,
}

/// A request the filter let through, on its way upstream ([`Worker::send`]).
#[derive(Debug)]
pub struct InFlight {
    id: u32,
    forwarded: Pairs,
}

impl InFlight {
    /// The request headers as the upstream receives them.
    pub fn forwarded(&self) -> &Pairs {
        &self.forwarded
    }
}

/// What became of a request's headers.
#[derive(Debug)]
pub enum Sent {
    /// The filter let it through: the upstream answers with [`Worker::respond`].
    Upstream(InFlight),
    /// The filter answered itself; the stream ends with [`Worker::close`].
    Replied(OpenStream),
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
    pub fn open(&mut self, mut request: Request) -> OpenStream {
        let upstream = std::mem::replace(&mut request.upstream, Upstream::ok());
        match self.send(request) {
            Sent::Upstream(flight) => self.respond(flight, upstream),
            Sent::Replied(open) => open,
        }
    }

    /// Runs a request's headers (and body) through the filter, with the callouts it waits for,
    /// leaving a request the filter lets through on its way upstream until [`Worker::respond`]
    /// (its `upstream` is not used): several can be in flight at once, as on a proxy. A local
    /// reply goes through the filter's response path at once, as in Envoy.
    pub fn send(&mut self, request: Request) -> Sent {
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
        let taken = self
            .store
            .data_mut()
            .streams
            .get_mut(&id)
            .and_then(|h| h.local_reply.take());
        let Some(reply) = taken else {
            let state = self.stream(id);
            assert!(
                action == CONTINUE || state.request_continued,
                "the filter paused the request and never resumed or answered it"
            );
            let forwarded = state.request_headers.clone();
            return Sent::Upstream(InFlight { id, forwarded });
        };
        // As in Envoy, a filter's local reply goes through the response path of the filters
        // that saw the request, the filter's own included.
        let mut headers: Pairs = vec![(":status".into(), reply.status.to_string().into_bytes())];
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
        Sent::Replied(OpenStream {
            id,
            exchange: Exchange {
                local_reply: Some(reply),
                forwarded: None,
                response_headers: Vec::new(),
            },
        })
    }

    /// The upstream's answer to a request [`Worker::send`] let through, through the filter's
    /// response path, after `upstream.latency` on the host's clock.
    pub fn respond(&mut self, flight: InFlight, up: Upstream) -> OpenStream {
        let id = flight.id;
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
            self.call::<(i32, i32), i32>("proxy_on_response_trailers", (id as i32, n as i32));
        }
        OpenStream {
            id,
            exchange: Exchange {
                local_reply: None,
                forwarded: Some(flight.forwarded),
                response_headers: self.stream(id).response_headers.clone(),
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
        let done = self.call::<i32, i32>("proxy_on_done", id as i32);
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
