//! Callouts over gRPC and HTTP.

use super::*;

pub(super) fn define(l: &mut Linker<State>) {
    let f = check;
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
}
