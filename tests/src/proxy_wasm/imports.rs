//! The host functions (module `env`), with the parameters and statuses of ABI 0.2.1.

use std::sync::atomic::Ordering;
use std::time::Duration;

use wasmtime::{Caller, Linker};

use super::abi::{self, Guest, Pairs, buffer, map, metric, status};
use super::callout::{self, Outcome};
use super::{Buffer, Cluster, LogLine, State, now_ns};

type C<'a> = Caller<'a, State>;

fn guest<'a, 'b>(c: &'a mut C<'b>) -> Guest<'a, 'b> {
    Guest { caller: c }
}

/// The map `kind` of the effective context, for reading.
fn read_map(s: &State, kind: i32) -> Option<Pairs> {
    let stream = s.streams.get(&s.effective);
    Some(match kind {
        map::HTTP_REQUEST_HEADERS => stream
            .map(|h| h.request_headers.clone())
            .unwrap_or_default(),
        map::HTTP_REQUEST_TRAILERS => stream
            .map(|h| h.request_trailers.clone())
            .unwrap_or_default(),
        map::HTTP_RESPONSE_HEADERS => stream
            .map(|h| h.response_headers.clone())
            .unwrap_or_default(),
        map::HTTP_RESPONSE_TRAILERS => stream
            .map(|h| h.response_trailers.clone())
            .unwrap_or_default(),
        map::HTTP_CALL_RESPONSE_HEADERS => s.call_headers.clone(),
        map::GRPC_CALL_INITIAL_METADATA
        | map::GRPC_CALL_TRAILING_METADATA
        | map::HTTP_CALL_RESPONSE_TRAILERS => Vec::new(),
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
    let f = |name: &str, r: wasmtime::Result<&mut Linker<State>>| {
        r.unwrap_or_else(|e| panic!("define {name}: {e:?}"));
    };

    f(
        "proxy_log",
        l.func_wrap(
            "env",
            "proxy_log",
            |mut c: C<'_>, level: i32, ptr: i32, len: i32| -> i32 {
                if !(0..=5).contains(&level) {
                    return status::BAD_ARGUMENT;
                }
                let Some(message) = guest(&mut c).read(ptr, len) else {
                    return status::INVALID_MEMORY_ACCESS;
                };
                let line = LogLine {
                    worker: c.data().worker,
                    level,
                    message: String::from_utf8_lossy(&message).into_owned(),
                };
                c.data().shared.logs.lock().expect("logs").push(line);
                status::OK
            },
        ),
    );
    f(
        "proxy_get_log_level",
        l.func_wrap(
            "env",
            "proxy_get_log_level",
            |mut c: C<'_>, ret: i32| -> i32 {
                if guest(&mut c).write_u32(ret, 0) {
                    status::OK
                } else {
                    status::INVALID_MEMORY_ACCESS
                }
            },
        ),
    );
    f(
        "proxy_get_current_time_nanoseconds",
        l.func_wrap(
            "env",
            "proxy_get_current_time_nanoseconds",
            |mut c: C<'_>, ret: i32| -> i32 {
                let now = now_ns(&c.data().shared);
                if guest(&mut c).write(ret, &now.to_le_bytes()) {
                    status::OK
                } else {
                    status::INVALID_MEMORY_ACCESS
                }
            },
        ),
    );
    f(
        "proxy_set_tick_period_milliseconds",
        l.func_wrap(
            "env",
            "proxy_set_tick_period_milliseconds",
            |mut c: C<'_>, period: i32| -> i32 {
                if !c.data().shared.options.ticks {
                    return status::UNIMPLEMENTED;
                }
                c.data_mut().tick_period_ms = period as u32;
                status::OK
            },
        ),
    );
    f(
        "proxy_set_effective_context",
        l.func_wrap(
            "env",
            "proxy_set_effective_context",
            |mut c: C<'_>, id: i32| -> i32 {
                let s = c.data_mut();
                let id = id as u32;
                if id == s.root_id || s.streams.contains_key(&id) {
                    s.effective = id;
                    status::OK
                } else {
                    status::BAD_ARGUMENT
                }
            },
        ),
    );
    f(
        "proxy_done",
        l.func_wrap("env", "proxy_done", |mut c: C<'_>| -> i32 {
            let s = c.data_mut();
            let current = s.effective;
            match s.awaiting_done.iter().position(|id| *id == current) {
                Some(i) => {
                    s.awaiting_done.remove(i);
                    status::OK
                }
                None => status::NOT_FOUND,
            }
        }),
    );

    // Buffers.
    f(
        "proxy_get_buffer_bytes",
        l.func_wrap(
            "env",
            "proxy_get_buffer_bytes",
            |mut c: C<'_>, kind: i32, start: i32, max: i32, ret_ptr: i32, ret_len: i32| -> i32 {
                if !(0..=8).contains(&kind) {
                    return status::BAD_ARGUMENT;
                }
                let Some(b) = buffer_of(c.data(), kind) else {
                    return status::NOT_FOUND;
                };
                let (start, max) = (start as u32 as usize, max as u32 as usize);
                if start > b.len() {
                    return status::BAD_ARGUMENT;
                }
                let end = start.saturating_add(max).min(b.len());
                let bytes = b.get(start..end).unwrap_or_default().to_vec();
                guest(&mut c).give(&bytes, ret_ptr, ret_len)
            },
        ),
    );
    f(
        "proxy_get_buffer_status",
        l.func_wrap(
            "env",
            "proxy_get_buffer_status",
            |mut c: C<'_>, kind: i32, ret_size: i32, ret_unused: i32| -> i32 {
                let Some(size) = buffer_of(c.data(), kind).map(Vec::len) else {
                    return status::NOT_FOUND;
                };
                if guest(&mut c).write_u32(ret_size, size as u32)
                    && guest(&mut c).write_u32(ret_unused, 0)
                {
                    status::OK
                } else {
                    status::INVALID_MEMORY_ACCESS
                }
            },
        ),
    );
    f(
        "proxy_set_buffer_bytes",
        l.func_wrap(
            "env",
            "proxy_set_buffer_bytes",
            |mut c: C<'_>, kind: i32, start: i32, size: i32, ptr: i32, len: i32| -> i32 {
                let Some(value) = guest(&mut c).read(ptr, len) else {
                    return status::INVALID_MEMORY_ACCESS;
                };
                let s = c.data_mut();
                match &mut s.buffer {
                    Buffer::Body(k, b)
                        if *k == kind
                            && (kind == buffer::HTTP_REQUEST_BODY
                                || kind == buffer::HTTP_RESPONSE_BODY) =>
                    {
                        let start = (start as u32 as usize).min(b.len());
                        let end = start.saturating_add(size as u32 as usize).min(b.len());
                        b.splice(start..end, value);
                        status::OK
                    }
                    _ => status::NOT_FOUND,
                }
            },
        ),
    );

    // Header maps.
    f(
        "proxy_get_header_map_pairs",
        l.func_wrap(
            "env",
            "proxy_get_header_map_pairs",
            |mut c: C<'_>, kind: i32, ret_ptr: i32, ret_len: i32| -> i32 {
                let Some(pairs) = read_map(c.data(), kind) else {
                    return status::BAD_ARGUMENT;
                };
                guest(&mut c).give(&abi::serialize_map(&pairs), ret_ptr, ret_len)
            },
        ),
    );
    f(
        "proxy_get_header_map_size",
        l.func_wrap(
            "env",
            "proxy_get_header_map_size",
            |mut c: C<'_>, kind: i32, ret: i32| -> i32 {
                let Some(pairs) = read_map(c.data(), kind) else {
                    return status::BAD_ARGUMENT;
                };
                let size = abi::serialize_map(&pairs).len() as u32;
                if guest(&mut c).write_u32(ret, size) {
                    status::OK
                } else {
                    status::INVALID_MEMORY_ACCESS
                }
            },
        ),
    );
    f(
        "proxy_set_header_map_pairs",
        l.func_wrap(
            "env",
            "proxy_set_header_map_pairs",
            |mut c: C<'_>, kind: i32, ptr: i32, len: i32| -> i32 {
                let Some(bytes) = guest(&mut c).read(ptr, len) else {
                    return status::INVALID_MEMORY_ACCESS;
                };
                let Some(pairs) = abi::deserialize_map(&bytes) else {
                    return status::BAD_ARGUMENT;
                };
                match write_map(c.data_mut(), kind) {
                    Ok(m) => {
                        *m = pairs
                            .into_iter()
                            .map(|(k, v)| (k.to_ascii_lowercase(), v))
                            .collect();
                        status::OK
                    }
                    Err(e) => e,
                }
            },
        ),
    );
    f(
        "proxy_get_header_map_value",
        l.func_wrap(
            "env",
            "proxy_get_header_map_value",
            |mut c: C<'_>, kind: i32, kp: i32, kl: i32, ret_ptr: i32, ret_len: i32| -> i32 {
                let Some(key) = guest(&mut c).read_str(kp, kl) else {
                    return status::INVALID_MEMORY_ACCESS;
                };
                let Some(pairs) = read_map(c.data(), kind) else {
                    return status::BAD_ARGUMENT;
                };
                match pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case(&key)) {
                    Some((_, v)) => guest(&mut c).give(v, ret_ptr, ret_len),
                    None => status::NOT_FOUND,
                }
            },
        ),
    );
    f(
        "proxy_add_header_map_value",
        l.func_wrap(
            "env",
            "proxy_add_header_map_value",
            |mut c: C<'_>, kind: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> i32 {
                let (Some(key), Some(value)) =
                    (guest(&mut c).read_str(kp, kl), guest(&mut c).read(vp, vl))
                else {
                    return status::INVALID_MEMORY_ACCESS;
                };
                match write_map(c.data_mut(), kind) {
                    Ok(m) => {
                        m.push((key.to_ascii_lowercase(), value));
                        status::OK
                    }
                    Err(e) => e,
                }
            },
        ),
    );
    f(
        "proxy_replace_header_map_value",
        l.func_wrap(
            "env",
            "proxy_replace_header_map_value",
            |mut c: C<'_>, kind: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> i32 {
                let (Some(key), Some(value)) =
                    (guest(&mut c).read_str(kp, kl), guest(&mut c).read(vp, vl))
                else {
                    return status::INVALID_MEMORY_ACCESS;
                };
                match write_map(c.data_mut(), kind) {
                    Ok(m) => {
                        let key = key.to_ascii_lowercase();
                        m.retain(|(k, _)| *k != key);
                        m.push((key, value));
                        status::OK
                    }
                    Err(e) => e,
                }
            },
        ),
    );
    f(
        "proxy_remove_header_map_value",
        l.func_wrap(
            "env",
            "proxy_remove_header_map_value",
            |mut c: C<'_>, kind: i32, kp: i32, kl: i32| -> i32 {
                let Some(key) = guest(&mut c).read_str(kp, kl) else {
                    return status::INVALID_MEMORY_ACCESS;
                };
                match write_map(c.data_mut(), kind) {
                    Ok(m) => {
                        m.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
                        status::OK
                    }
                    Err(e) => e,
                }
            },
        ),
    );

    // Streams.
    f(
        "proxy_continue_stream",
        l.func_wrap(
            "env",
            "proxy_continue_stream",
            |mut c: C<'_>, kind: i32| -> i32 {
                let s = c.data_mut();
                let effective = s.effective;
                match (kind, s.streams.get_mut(&effective)) {
                    (0, Some(h)) => {
                        h.request_continued = true;
                        status::OK
                    }
                    (0 | 1, None) => status::NOT_FOUND,
                    (1, Some(_)) => status::OK,
                    (2 | 3, _) => status::UNIMPLEMENTED,
                    _ => status::BAD_ARGUMENT,
                }
            },
        ),
    );
    f(
        "proxy_close_stream",
        l.func_wrap(
            "env",
            "proxy_close_stream",
            |mut c: C<'_>, kind: i32| -> i32 {
                let s = c.data_mut();
                let effective = s.effective;
                match (kind, s.streams.get_mut(&effective)) {
                    (0..=3, Some(h)) => {
                        h.closed = true;
                        status::OK
                    }
                    (0..=3, None) => status::OK,
                    _ => status::BAD_ARGUMENT,
                }
            },
        ),
    );
    f(
        "proxy_send_local_response",
        l.func_wrap(
            "env",
            "proxy_send_local_response",
            |mut c: C<'_>,
             code: i32,
             dp: i32,
             dl: i32,
             bp: i32,
             bl: i32,
             hp: i32,
             hl: i32,
             _grpc: i32|
             -> i32 {
                let mut g = guest(&mut c);
                let (Some(details), Some(body), Some(headers)) =
                    (g.read(dp, dl), g.read(bp, bl), g.read(hp, hl))
                else {
                    return status::INVALID_MEMORY_ACCESS;
                };
                let Some(headers) = abi::deserialize_map(&headers) else {
                    return status::BAD_ARGUMENT;
                };
                let s = c.data_mut();
                let effective = s.effective;
                let Some(h) = s.streams.get_mut(&effective) else {
                    return status::BAD_ARGUMENT;
                };
                h.local_reply = Some(super::LocalReply {
                    status: code as u32,
                    headers: headers
                        .into_iter()
                        .map(|(k, v)| {
                            (
                                k.to_ascii_lowercase(),
                                String::from_utf8_lossy(&v).into_owned(),
                            )
                        })
                        .collect(),
                    body,
                    details: String::from_utf8_lossy(&details).into_owned(),
                });
                status::OK
            },
        ),
    );

    // Callouts.
    f(
        "proxy_grpc_call",
        l.func_wrap(
            "env",
            "proxy_grpc_call",
            |mut c: C<'_>,
             up: i32,
             upl: i32,
             sv: i32,
             svl: i32,
             me: i32,
             mel: i32,
             md: i32,
             mdl: i32,
             msg: i32,
             msgl: i32,
             timeout: i32,
             ret: i32|
             -> i32 {
                let mut g = guest(&mut c);
                let (Some(upstream), Some(service), Some(method), Some(metadata), Some(message)) = (
                    g.read_str(up, upl),
                    g.read_str(sv, svl),
                    g.read_str(me, mel),
                    g.read(md, mdl),
                    g.read(msg, msgl),
                ) else {
                    return status::INVALID_MEMORY_ACCESS;
                };
                let Some(metadata) = abi::deserialize_map(&metadata) else {
                    return status::BAD_ARGUMENT;
                };
                let shared = std::sync::Arc::clone(&c.data().shared);
                let Some(cluster) = shared
                    .clusters
                    .lock()
                    .expect("clusters")
                    .get(&upstream)
                    .cloned()
                else {
                    return status::PARSE_FAILURE;
                };
                let Some(token) = start_callout(&mut c, ret) else {
                    return status::INVALID_MEMORY_ACCESS;
                };
                let timeout = Duration::from_millis(timeout as u32 as u64);
                match cluster {
                    Cluster::Canned(bytes) => send(c.data(), token, Outcome::GrpcMessage(bytes)),
                    Cluster::Addr(addr) => {
                        let _guard = shared.runtime.enter();
                        let channel = shared
                            .channels
                            .lock()
                            .expect("channels")
                            .entry(addr)
                            .or_insert_with(|| callout::channel(addr))
                            .clone();
                        let done = c.data().done_sender.clone();
                        let path = format!("/{service}/{method}");
                        shared.runtime.spawn(async move {
                            let outcome =
                                callout::grpc(channel, path, metadata, message, timeout).await;
                            let _ = done.send((token, outcome));
                        });
                    }
                }
                status::OK
            },
        ),
    );
    f(
        "proxy_http_call",
        l.func_wrap(
            "env",
            "proxy_http_call",
            |mut c: C<'_>,
             up: i32,
             upl: i32,
             hp: i32,
             hl: i32,
             bp: i32,
             bl: i32,
             tp: i32,
             tl: i32,
             timeout: i32,
             ret: i32|
             -> i32 {
                let mut g = guest(&mut c);
                let (Some(upstream), Some(headers), Some(body), Some(_trailers)) = (
                    g.read_str(up, upl),
                    g.read(hp, hl),
                    g.read(bp, bl),
                    g.read(tp, tl),
                ) else {
                    return status::INVALID_MEMORY_ACCESS;
                };
                let Some(headers) = abi::deserialize_map(&headers) else {
                    return status::BAD_ARGUMENT;
                };
                if [":method", ":path", ":authority"]
                    .iter()
                    .any(|p| !headers.iter().any(|(k, _)| k == p))
                {
                    return status::BAD_ARGUMENT;
                }
                let shared = std::sync::Arc::clone(&c.data().shared);
                let Some(cluster) = shared
                    .clusters
                    .lock()
                    .expect("clusters")
                    .get(&upstream)
                    .cloned()
                else {
                    return status::BAD_ARGUMENT;
                };
                let Some(token) = start_callout(&mut c, ret) else {
                    return status::INVALID_MEMORY_ACCESS;
                };
                let timeout = Duration::from_millis(timeout as u32 as u64);
                match cluster {
                    Cluster::Canned(bytes) => {
                        let headers = vec![
                            (":status".to_string(), b"200".to_vec()),
                            ("content-type".into(), b"application/json".to_vec()),
                        ];
                        send(
                            c.data(),
                            token,
                            Outcome::Http {
                                headers,
                                body: bytes,
                            },
                        );
                    }
                    Cluster::Addr(addr) => {
                        let done = c.data().done_sender.clone();
                        let client = shared.http.clone();
                        shared.runtime.spawn(async move {
                            let outcome = callout::http(client, addr, headers, body, timeout).await;
                            let _ = done.send((token, outcome));
                        });
                    }
                }
                status::OK
            },
        ),
    );
    let cancel = |mut c: C<'_>, token: i32| -> i32 {
        if c.data_mut().pending.remove(&(token as u32)).is_some() {
            status::OK
        } else {
            status::NOT_FOUND
        }
    };
    f(
        "proxy_grpc_cancel",
        l.func_wrap("env", "proxy_grpc_cancel", cancel),
    );
    f(
        "proxy_grpc_close",
        l.func_wrap("env", "proxy_grpc_close", cancel),
    );
    f(
        "proxy_grpc_stream",
        l.func_wrap(
            "env",
            "proxy_grpc_stream",
            |_c: C<'_>,
             _: i32,
             _: i32,
             _: i32,
             _: i32,
             _: i32,
             _: i32,
             _: i32,
             _: i32,
             _: i32|
             -> i32 { status::INTERNAL_FAILURE },
        ),
    );
    f(
        "proxy_grpc_send",
        l.func_wrap(
            "env",
            "proxy_grpc_send",
            |_c: C<'_>, _: i32, _: i32, _: i32, _: i32| -> i32 { status::NOT_FOUND },
        ),
    );
    f(
        "proxy_get_status",
        l.func_wrap(
            "env",
            "proxy_get_status",
            |mut c: C<'_>, ret_code: i32, ret_ptr: i32, ret_len: i32| -> i32 {
                let (code, message) = c.data().call_status.clone().unwrap_or_default();
                if !guest(&mut c).write_u32(ret_code, code) {
                    return status::INVALID_MEMORY_ACCESS;
                }
                guest(&mut c).give(message.as_bytes(), ret_ptr, ret_len)
            },
        ),
    );

    // Shared data, shared by every worker of the host.
    f(
        "proxy_get_shared_data",
        l.func_wrap(
            "env",
            "proxy_get_shared_data",
            |mut c: C<'_>, kp: i32, kl: i32, ret_ptr: i32, ret_len: i32, ret_cas: i32| -> i32 {
                if !c.data().shared.options.shared_data {
                    return status::UNIMPLEMENTED;
                }
                let Some(key) = guest(&mut c).read_str(kp, kl) else {
                    return status::INVALID_MEMORY_ACCESS;
                };
                let found = c
                    .data()
                    .shared
                    .data
                    .lock()
                    .expect("shared data")
                    .get(&key)
                    .cloned();
                let Some((value, cas)) = found else {
                    return status::NOT_FOUND;
                };
                if !guest(&mut c).write_u32(ret_cas, cas) {
                    return status::INVALID_MEMORY_ACCESS;
                }
                guest(&mut c).give(&value, ret_ptr, ret_len)
            },
        ),
    );
    f(
        "proxy_set_shared_data",
        l.func_wrap(
            "env",
            "proxy_set_shared_data",
            |mut c: C<'_>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| -> i32 {
                if !c.data().shared.options.shared_data {
                    return status::UNIMPLEMENTED;
                }
                let (Some(key), Some(value)) =
                    (guest(&mut c).read_str(kp, kl), guest(&mut c).read(vp, vl))
                else {
                    return status::INVALID_MEMORY_ACCESS;
                };
                let shared = &c.data().shared;
                let mut data = shared.data.lock().expect("shared data");
                if let Some((_, current)) = data.get(&key)
                    && cas != 0
                    && cas as u32 != *current
                {
                    return status::CAS_MISMATCH;
                }
                let next = shared.next_cas.fetch_add(1, Ordering::SeqCst);
                data.insert(key, (value, next));
                status::OK
            },
        ),
    );
    f(
        "proxy_register_shared_queue",
        l.func_wrap(
            "env",
            "proxy_register_shared_queue",
            |mut c: C<'_>, np: i32, nl: i32, ret: i32| -> i32 {
                let Some(name) = guest(&mut c).read_str(np, nl) else {
                    return status::INVALID_MEMORY_ACCESS;
                };
                let id = {
                    let mut queues = c.data().shared.queues.lock().expect("queues");
                    match queues.iter().position(|(n, _)| *n == name) {
                        Some(i) => i + 1,
                        None => {
                            queues.push((name, Default::default()));
                            queues.len()
                        }
                    }
                };
                if guest(&mut c).write_u32(ret, id as u32) {
                    status::OK
                } else {
                    status::INVALID_MEMORY_ACCESS
                }
            },
        ),
    );
    f(
        "proxy_resolve_shared_queue",
        l.func_wrap(
            "env",
            "proxy_resolve_shared_queue",
            |mut c: C<'_>, _vp: i32, _vl: i32, np: i32, nl: i32, ret: i32| -> i32 {
                let Some(name) = guest(&mut c).read_str(np, nl) else {
                    return status::INVALID_MEMORY_ACCESS;
                };
                let found = c
                    .data()
                    .shared
                    .queues
                    .lock()
                    .expect("queues")
                    .iter()
                    .position(|(n, _)| *n == name);
                match found {
                    Some(i) if guest(&mut c).write_u32(ret, i as u32 + 1) => status::OK,
                    Some(_) => status::INVALID_MEMORY_ACCESS,
                    None => status::NOT_FOUND,
                }
            },
        ),
    );
    f(
        "proxy_enqueue_shared_queue",
        l.func_wrap(
            "env",
            "proxy_enqueue_shared_queue",
            |mut c: C<'_>, id: i32, vp: i32, vl: i32| -> i32 {
                let Some(value) = guest(&mut c).read(vp, vl) else {
                    return status::INVALID_MEMORY_ACCESS;
                };
                let mut queues = c.data().shared.queues.lock().expect("queues");
                match (id as usize).checked_sub(1).and_then(|i| queues.get_mut(i)) {
                    Some((_, q)) => {
                        q.push_back(value);
                        status::OK
                    }
                    None => status::NOT_FOUND,
                }
            },
        ),
    );
    f(
        "proxy_dequeue_shared_queue",
        l.func_wrap(
            "env",
            "proxy_dequeue_shared_queue",
            |mut c: C<'_>, id: i32, ret_ptr: i32, ret_len: i32| -> i32 {
                let item = {
                    let mut queues = c.data().shared.queues.lock().expect("queues");
                    match (id as usize).checked_sub(1).and_then(|i| queues.get_mut(i)) {
                        None => return status::NOT_FOUND,
                        Some((_, q)) => q.pop_front(),
                    }
                };
                match item {
                    Some(v) => guest(&mut c).give(&v, ret_ptr, ret_len),
                    None => status::EMPTY,
                }
            },
        ),
    );

    // Metrics, shared by every worker of the host.
    f(
        "proxy_define_metric",
        l.func_wrap(
            "env",
            "proxy_define_metric",
            |mut c: C<'_>, kind: i32, np: i32, nl: i32, ret: i32| -> i32 {
                if !(metric::COUNTER..=metric::HISTOGRAM).contains(&kind) {
                    return status::BAD_ARGUMENT;
                }
                let Some(name) = guest(&mut c).read_str(np, nl) else {
                    return status::INVALID_MEMORY_ACCESS;
                };
                let id = {
                    let mut metrics = c.data().shared.metrics.lock().expect("metrics");
                    match metrics.iter().position(|(n, _, _)| *n == name) {
                        Some(i) => i + 1,
                        None => {
                            metrics.push((name, kind, 0));
                            metrics.len()
                        }
                    }
                };
                if guest(&mut c).write_u32(ret, id as u32) {
                    status::OK
                } else {
                    status::INVALID_MEMORY_ACCESS
                }
            },
        ),
    );
    f(
        "proxy_increment_metric",
        l.func_wrap(
            "env",
            "proxy_increment_metric",
            |c: C<'_>, id: i32, delta: i64| -> i32 {
                let mut metrics = c.data().shared.metrics.lock().expect("metrics");
                match (id as usize)
                    .checked_sub(1)
                    .and_then(|i| metrics.get_mut(i))
                {
                    None => status::NOT_FOUND,
                    Some((_, kind, _)) if *kind == metric::COUNTER && delta < 0 => {
                        status::BAD_ARGUMENT
                    }
                    Some((_, _, v)) => {
                        *v += delta;
                        status::OK
                    }
                }
            },
        ),
    );
    f(
        "proxy_record_metric",
        l.func_wrap(
            "env",
            "proxy_record_metric",
            |c: C<'_>, id: i32, value: i64| -> i32 {
                let mut metrics = c.data().shared.metrics.lock().expect("metrics");
                match (id as usize)
                    .checked_sub(1)
                    .and_then(|i| metrics.get_mut(i))
                {
                    None => status::NOT_FOUND,
                    Some((_, _, v)) => {
                        *v = value;
                        status::OK
                    }
                }
            },
        ),
    );
    f(
        "proxy_get_metric",
        l.func_wrap(
            "env",
            "proxy_get_metric",
            |mut c: C<'_>, id: i32, ret: i32| -> i32 {
                let value = {
                    let metrics = c.data().shared.metrics.lock().expect("metrics");
                    match (id as usize).checked_sub(1).and_then(|i| metrics.get(i)) {
                        None => return status::NOT_FOUND,
                        Some((_, _, v)) => *v,
                    }
                };
                if guest(&mut c).write(ret, &value.to_le_bytes()) {
                    status::OK
                } else {
                    status::INVALID_MEMORY_ACCESS
                }
            },
        ),
    );

    // Properties: per request, plus the plugin's own.
    f(
        "proxy_get_property",
        l.func_wrap(
            "env",
            "proxy_get_property",
            |mut c: C<'_>, pp: i32, pl: i32, ret_ptr: i32, ret_len: i32| -> i32 {
                let Some(path) = guest(&mut c).read(pp, pl) else {
                    return status::INVALID_MEMORY_ACCESS;
                };
                let path: Vec<String> = path
                    .split(|b| *b == 0)
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect();
                let s = c.data();
                let value = s
                    .streams
                    .get(&s.effective)
                    .and_then(|h| {
                        h.properties
                            .iter()
                            .find(|(p, _)| *p == path)
                            .map(|(_, v)| v.clone())
                    })
                    .or_else(|| {
                        match path
                            .iter()
                            .map(String::as_str)
                            .collect::<Vec<_>>()
                            .as_slice()
                        {
                            ["plugin_name"] => Some(b"sluice".to_vec()),
                            ["plugin_root_id"] | ["plugin_vm_id"] => Some(Vec::new()),
                            _ => None,
                        }
                    });
                match value {
                    Some(v) => guest(&mut c).give(&v, ret_ptr, ret_len),
                    None => status::NOT_FOUND,
                }
            },
        ),
    );
    f(
        "proxy_set_property",
        l.func_wrap(
            "env",
            "proxy_set_property",
            |mut c: C<'_>, pp: i32, pl: i32, vp: i32, vl: i32| -> i32 {
                let (Some(path), Some(value)) =
                    (guest(&mut c).read(pp, pl), guest(&mut c).read(vp, vl))
                else {
                    return status::INVALID_MEMORY_ACCESS;
                };
                let path: Vec<String> = path
                    .split(|b| *b == 0)
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect();
                let s = c.data_mut();
                let effective = s.effective;
                let Some(h) = s.streams.get_mut(&effective) else {
                    return status::NOT_FOUND;
                };
                h.properties.retain(|(p, _)| *p != path);
                h.properties.push((path, value));
                status::OK
            },
        ),
    );
    f(
        "proxy_call_foreign_function",
        l.func_wrap(
            "env",
            "proxy_call_foreign_function",
            |_c: C<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| -> i32 {
                status::NOT_FOUND
            },
        ),
    );
}
