//! Buffers: configurations, bodies, callout responses.

use super::*;

pub(super) fn define(l: &mut Linker<State>) {
    let f = check;
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
}
