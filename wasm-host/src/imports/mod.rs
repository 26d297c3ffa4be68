//! The host functions (module `env`), with the parameters and statuses of ABI 0.2.1.

use std::sync::atomic::Ordering;
use std::time::Duration;

use wasmtime::{Caller, Linker};

use super::abi::{self, Guest, Pairs, buffer, map, metric, status};
use super::callout::{self, Outcome};
use super::{Buffer, Cluster, LogLine, State, now_ns};

mod buffers;
mod callouts;
mod headers;
mod lifecycle;
mod metrics;
mod properties;
mod shared;
mod streams;

type C<'a> = Caller<'a, State>;

fn guest<'a, 'b>(c: &'a mut C<'b>) -> Guest<'a, 'b> {
    Guest { caller: c }
}

/// The map `kind` of the effective context, for reading, in place.
fn read_map(s: &State, kind: i32) -> Option<&[(String, Vec<u8>)]> {
    let stream = s.streams.get(&s.effective);
    Some(match kind {
        map::HTTP_REQUEST_HEADERS => stream.map_or(&[], |h| &h.request_headers),
        map::HTTP_REQUEST_TRAILERS => stream.map_or(&[], |h| &h.request_trailers),
        map::HTTP_RESPONSE_HEADERS => stream.map_or(&[], |h| &h.response_headers),
        map::HTTP_RESPONSE_TRAILERS => stream.map_or(&[], |h| &h.response_trailers),
        map::HTTP_CALL_RESPONSE_HEADERS => &s.call_headers,
        map::GRPC_CALL_INITIAL_METADATA
        | map::GRPC_CALL_TRAILING_METADATA
        | map::HTTP_CALL_RESPONSE_TRAILERS => &[],
        _ => return None,
    })
}

/// The map `kind` of the effective context, for writing (only a stream's own maps).
fn write_map(s: &mut State, kind: i32) -> Result<&mut Pairs, i32> {
    let effective = s.effective;
    let stream = s.streams.get_mut(&effective);
    match (kind, stream) {
        (0..=3, None) => Err(status::NOT_FOUND),
        (map::HTTP_REQUEST_HEADERS, Some(h)) => Ok(&mut h.request_headers),
        (map::HTTP_REQUEST_TRAILERS, Some(h)) => Ok(&mut h.request_trailers),
        (map::HTTP_RESPONSE_HEADERS, Some(h)) => Ok(&mut h.response_headers),
        (map::HTTP_RESPONSE_TRAILERS, Some(h)) => Ok(&mut h.response_trailers),
        _ => Err(status::BAD_ARGUMENT),
    }
}

fn buffer_of(s: &State, kind: i32) -> Option<&Vec<u8>> {
    match &s.buffer {
        Buffer::Configuration(k, b) | Buffer::Body(k, b) | Buffer::CallResponse(k, b)
            if *k == kind =>
        {
            Some(b)
        }
        _ => None,
    }
}

fn send(s: &State, token: u32, outcome: Outcome) {
    let _ = s.done_sender.send((token, outcome));
}

/// Registers a callout for the effective context and writes its token.
fn start_callout(c: &mut C<'_>, ret_token: i32) -> Option<u32> {
    let s = c.data_mut();
    let token = s.next_token;
    s.next_token += 1;
    let effective = s.effective;
    s.pending.insert(token, effective);
    guest(c).write_u32(ret_token, token).then_some(token)
}
pub fn define(l: &mut Linker<State>) {
    lifecycle::define(l);
    buffers::define(l);
    headers::define(l);
    streams::define(l);
    callouts::define(l);
    shared::define(l);
    metrics::define(l);
    properties::define(l);
}

fn check(name: &str, r: wasmtime::Result<&mut Linker<State>>) {
    r.unwrap_or_else(|e| panic!("define {name}: {e:?}"));
}
