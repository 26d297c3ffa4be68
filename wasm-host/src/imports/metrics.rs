//! Metrics, shared by every worker of the host.

use super::*;

pub(super) fn define(l: &mut Linker<State>) {
    let f = check;
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
}
