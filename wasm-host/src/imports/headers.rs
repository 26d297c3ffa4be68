//! Header maps.

use super::*;

pub(super) fn define(l: &mut Linker<State>) {
    let f = check;
    f(
        "proxy_get_header_map_pairs",
        l.func_wrap(
            "env",
            "proxy_get_header_map_pairs",
            |mut c: C<'_>, kind: i32, ret_ptr: i32, ret_len: i32| -> i32 {
                let Some(pairs) = read_map(c.data(), kind) else {
                    return status::BAD_ARGUMENT;
                };
                let bytes = abi::serialize_map(pairs);
                guest(&mut c).give(&bytes, ret_ptr, ret_len)
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
                let size = abi::serialize_map(pairs).len() as u32;
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
                let value = pairs
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(&key))
                    .map(|(_, v)| v.clone());
                match value {
                    Some(v) => guest(&mut c).give(&v, ret_ptr, ret_len),
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
}
