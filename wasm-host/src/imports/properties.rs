//! Properties: per request, plus the plugin's own; foreign functions.

use super::*;

pub(super) fn define(l: &mut Linker<State>) {
    let f = check;
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
