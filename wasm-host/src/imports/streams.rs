//! Streams: continue, close, local replies.

use super::*;

pub(super) fn define(l: &mut Linker<State>) {
    let f = check;
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
                h.local_reply = Some(crate::LocalReply {
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
}
