//! Shared data and queues, shared by every worker of the host.

use super::*;

pub(super) fn define(l: &mut Linker<State>) {
    let f = check;
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
}
