//! A worker VM and the lifecycle calls the host makes into it.

use std::any::Any;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use wasmtime::{Instance, Linker, Module, Store, TypedFunc};

use super::callout::Outcome;
use super::{Buffer, Host, State, abi, imports};

/// A worker VM: one instance of the filter with its root context.
pub struct Worker {
    pub(crate) store: Store<State>,
    pub(crate) instance: Instance,
    pub(crate) next_context: u32,
    pub(crate) done_receiver: Receiver<(u32, Outcome)>,
    /// The guest's callbacks, looked up and type-checked once, as a proxy resolves them when
    /// it starts a VM: a lookup by name on every call cost more than some callbacks' own work.
    exports: HashMap<&'static str, Box<dyn Any>>,
}

static WORKERS: AtomicU32 = AtomicU32::new(0);

impl Worker {
    pub(crate) fn start(
        host: &Host,
        module: &Module,
        vm_config: &[u8],
        plugin_config: &[u8],
    ) -> Result<Self, Vec<String>> {
        let engine = crate::engine();
        let (done_sender, done_receiver) = channel();
        let worker = WORKERS.fetch_add(1, Ordering::SeqCst) as usize;
        let state = State {
            shared: Arc::clone(&host.shared),
            worker,
            memory: None,
            alloc: None,
            root_id: 1,
            current: 0,
            effective: 0,
            streams: HashMap::new(),
            buffer: Buffer::None,
            call_headers: Vec::new(),
            call_status: None,
            tick_period_ms: 0,
            next_token: 1,
            pending: HashMap::new(),
            done_sender,
            awaiting_done: Vec::new(),
        };
        let mut store = Store::new(engine, state);
        let mut linker = Linker::new(engine);
        imports::define(&mut linker);
        let instance = linker
            .instantiate(&mut store, module)
            .expect("instantiate the filter");
        store.data_mut().memory = instance.get_memory(&mut store, "memory");
        store.data_mut().alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "proxy_on_memory_allocate")
            .or_else(|_| instance.get_typed_func::<i32, i32>(&mut store, "malloc"))
            .ok();
        let mut w = Self {
            store,
            instance,
            next_context: 2,
            done_receiver,
            exports: HashMap::new(),
        };
        if let Ok(init) = w
            .instance
            .get_typed_func::<(), ()>(&mut w.store, "_initialize")
        {
            init.call(&mut w.store, ()).expect("_initialize");
        } else if let Ok(start) = w.instance.get_typed_func::<(), ()>(&mut w.store, "_start") {
            start.call(&mut w.store, ()).expect("_start");
        }
        let root = w.store.data().root_id;
        w.call2("proxy_on_context_create", root, 0);
        w.store.data_mut().buffer =
            Buffer::Configuration(abi::buffer::VM_CONFIGURATION, vm_config.to_vec());
        let vm_ok = w.call_ret("proxy_on_vm_start", root, vm_config.len() as i32) != 0;
        w.store.data_mut().buffer =
            Buffer::Configuration(abi::buffer::PLUGIN_CONFIGURATION, plugin_config.to_vec());
        let ok = vm_ok && w.call_ret("proxy_on_configure", root, plugin_config.len() as i32) != 0;
        w.store.data_mut().buffer = Buffer::None;
        if !ok {
            let logs = host
                .logs()
                .into_iter()
                .filter(|l| l.worker == worker)
                .map(|l| l.message)
                .collect();
            return Err(logs);
        }
        Ok(w)
    }

    pub fn index(&self) -> usize {
        self.store.data().worker
    }

    /// Calls `proxy_on_tick` when the guest set a tick period (as each tick would), then
    /// delivers the answers to the callouts the tick made.
    pub fn tick(&mut self) -> bool {
        if self.store.data().tick_period_ms == 0 {
            return false;
        }
        let root = self.store.data().root_id;
        self.enter(root);
        self.call1("proxy_on_tick", root);
        self.run_callouts(|_| false);
        true
    }

    /// The tick period the guest asked for last (0: none).
    pub fn tick_period_ms(&self) -> u32 {
        self.store.data().tick_period_ms
    }

    pub(crate) fn enter(&mut self, context: u32) {
        let s = self.store.data_mut();
        s.current = context;
        s.effective = context;
    }

    /// Calls the guest's export `name`, looked up and type-checked on its first call only. A
    /// trap fails the test, with the filter's log.
    pub(crate) fn call<P, R>(&mut self, name: &'static str, params: P) -> R
    where
        P: wasmtime::WasmParams + 'static,
        R: wasmtime::WasmResults + 'static,
    {
        let f = match self.exports.entry(name) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Box::new(
                self.instance
                    .get_typed_func::<P, R>(&mut self.store, name)
                    .unwrap_or_else(|e| panic!("the filter exports no {name}: {e:?}")),
            )),
        };
        let f = f
            .downcast_ref::<TypedFunc<P, R>>()
            .unwrap_or_else(|| panic!("{name} called with another signature"));
        match f.call(&mut self.store, params) {
            Ok(r) => r,
            Err(e) => self.trap(name, e),
        }
    }

    pub(crate) fn trap(&self, name: &str, e: wasmtime::Error) -> ! {
        let logs: Vec<String> = self
            .store
            .data()
            .shared
            .logs
            .lock()
            .expect("logs")
            .iter()
            .map(|l| l.message.clone())
            .collect();
        panic!("{name} trapped: {e:?}\nfilter log:\n{}", logs.join("\n"))
    }

    pub(crate) fn call1(&mut self, name: &'static str, a: u32) {
        self.call::<i32, ()>(name, a as i32)
    }

    pub(crate) fn call2(&mut self, name: &'static str, a: u32, b: u32) {
        self.call::<(i32, i32), ()>(name, (a as i32, b as i32))
    }

    pub(crate) fn call_ret(&mut self, name: &'static str, a: u32, b: i32) -> i32 {
        self.call::<(i32, i32), i32>(name, (a as i32, b))
    }

    pub(crate) fn call_action(
        &mut self,
        name: &'static str,
        context: u32,
        size: usize,
        end_of_stream: bool,
    ) -> i32 {
        self.call::<(i32, i32, i32), i32>(name, (context as i32, size as i32, end_of_stream as i32))
    }

    /// Delivers finished callouts until none is in flight, or until `stop` says enough.
    pub(crate) fn run_callouts(&mut self, mut stop: impl FnMut(&State) -> bool) {
        while !self.store.data().pending.is_empty() && !stop(self.store.data()) {
            // Every callout is bounded by its own timeout; this only guards against a host bug.
            let (token, outcome) = self
                .done_receiver
                .recv_timeout(Duration::from_secs(120))
                .expect("a callout finished within its timeout");
            self.deliver(token, outcome);
        }
    }

    pub(crate) fn deliver(&mut self, token: u32, outcome: Outcome) {
        let Some(context) = self.store.data_mut().pending.remove(&token) else {
            return; // cancelled, or its context is gone
        };
        self.enter(context);
        match outcome {
            Outcome::GrpcMessage(body) => {
                let len = body.len() as u32;
                let s = self.store.data_mut();
                s.call_status = Some((0, String::new()));
                s.buffer = Buffer::CallResponse(abi::buffer::GRPC_CALL_MESSAGE, body);
                self.call3("proxy_on_grpc_receive", context, token, len);
            }
            Outcome::GrpcClose { status, message } => {
                self.store.data_mut().call_status = Some((status, message));
                self.call3("proxy_on_grpc_close", context, token, status);
            }
            Outcome::Http { headers, body } => {
                let (n, len) = (headers.len() as u32, body.len() as u32);
                let status = headers
                    .first()
                    .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
                    .unwrap_or(0);
                let s = self.store.data_mut();
                s.call_status = Some((status, String::new()));
                s.call_headers = headers;
                s.buffer = Buffer::CallResponse(abi::buffer::HTTP_CALL_RESPONSE_BODY, body);
                self.call5("proxy_on_http_call_response", context, token, n, len, 0);
            }
            Outcome::HttpFailed => {
                self.store.data_mut().call_status = Some((0, "no response".into()));
                self.call5("proxy_on_http_call_response", context, token, 0, 0, 0);
            }
        }
        let s = self.store.data_mut();
        s.buffer = Buffer::None;
        s.call_headers.clear();
        s.call_status = None;
    }

    pub(crate) fn call3(&mut self, name: &'static str, a: u32, b: u32, c: u32) {
        self.call::<(i32, i32, i32), ()>(name, (a as i32, b as i32, c as i32))
    }

    pub(crate) fn call5(&mut self, name: &'static str, a: u32, b: u32, c: u32, d: u32, e: u32) {
        let params = (a as i32, b as i32, c as i32, d as i32, e as i32);
        self.call::<(i32, i32, i32, i32, i32), ()>(name, params)
    }
}
