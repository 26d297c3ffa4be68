//! Logging, time, ticks and contexts.

use super::*;

pub(super) fn define(l: &mut Linker<State>) {
    let f = check;
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
}
