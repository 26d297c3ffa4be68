//! A proxy-wasm host on wasmtime: runs the compiled `sluice_filter.wasm` the way Envoy would,
//! for the end-to-end tests and benches (no Envoy binary can be installed here).
//!
//! Written from the proxy-wasm ABI 0.2.1 specification (proxy-wasm/spec,
//! `abi-versions/v0.2.1`) and what the Rust SDK 0.2.x expects of a host (it panics on statuses
//! it does not expect, so the statuses below are the spec's).
//!
//! **Lifecycle** ([`Worker`]): instantiate, `_initialize` (or `_start`), `proxy_on_context_create`
//! for the root context, `proxy_on_vm_start` with the VM configuration, `proxy_on_configure`
//! with the plugin configuration; per request ([`Worker::exchange`]) `proxy_on_context_create`,
//! `proxy_on_request_headers`, `proxy_on_request_body`, callout results, `proxy_on_response_headers`,
//! `proxy_on_response_body`, `proxy_on_response_trailers`, `proxy_on_done`, `proxy_on_log`,
//! `proxy_on_delete`; `proxy_on_tick` ([`Worker::tick`]) once a tick period is set. Several
//! workers share one [`Host`]: its shared data (with compare-and-swap), shared queues, metrics,
//! log and clock, as Envoy's worker threads share them.
//!
//! **Host functions** (module `env`), each with the spec's parameters and statuses:
//! - logging and time: `proxy_log`, `proxy_get_log_level`, `proxy_get_current_time_nanoseconds`
//!   (wall clock plus an offset tests can move, [`Host::advance_clock`]),
//!   `proxy_set_tick_period_milliseconds`;
//! - contexts: `proxy_set_effective_context`, `proxy_done`;
//! - buffers: `proxy_get_buffer_bytes`, `proxy_set_buffer_bytes`, `proxy_get_buffer_status`
//!   (VM and plugin configuration, request and response bodies, HTTP callout body, gRPC message,
//!   each only in the callbacks the spec allows, `NOT_FOUND` elsewhere);
//! - header maps: `proxy_get_header_map_pairs`, `proxy_set_header_map_pairs`,
//!   `proxy_get_header_map_size`, `proxy_get_header_map_value`, `proxy_add_header_map_value`,
//!   `proxy_replace_header_map_value`, `proxy_remove_header_map_value` (request and response
//!   headers and trailers, HTTP callout response headers, gRPC metadata maps as empty);
//! - streams: `proxy_continue_stream`, `proxy_close_stream`, `proxy_send_local_response`;
//! - callouts: `proxy_http_call` (real HTTP to the cluster's address), `proxy_grpc_call` (real
//!   gRPC), `proxy_grpc_cancel`, `proxy_grpc_close`, `proxy_get_status`; `proxy_grpc_stream` and
//!   `proxy_grpc_send` answer `INTERNAL_FAILURE` / `NOT_FOUND` (no streaming support);
//! - shared data and queues: `proxy_get_shared_data`, `proxy_set_shared_data`,
//!   `proxy_register_shared_queue`, `proxy_resolve_shared_queue`, `proxy_enqueue_shared_queue`,
//!   `proxy_dequeue_shared_queue`;
//! - metrics: `proxy_define_metric`, `proxy_increment_metric`, `proxy_record_metric`,
//!   `proxy_get_metric`;
//! - properties: `proxy_get_property`, `proxy_set_property` (per request, plus `plugin_name`,
//!   `plugin_root_id`, `plugin_vm_id`);
//! - `proxy_call_foreign_function`: `NOT_FOUND` (none registered).
//!
//! [`HostOptions`] can take shared data and ticks away (`UNIMPLEMENTED`), as some hosts do.
//! Callouts run on the host's tokio runtime and are delivered when the test drives the worker
//! ([`Worker::exchange`] waits for them), each bounded by the timeout the guest gave.

pub mod abi;
mod callout;
mod imports;
mod stream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::{Engine, Instance, Linker, Memory, Module, Store, TypedFunc};

pub use callout::Outcome;
pub use stream::{Exchange, LocalReply, Request, Upstream};

use abi::Pairs;

/// Where a cluster name leads.
#[derive(Debug, Clone)]
pub enum Cluster {
    /// A real server: gRPC or HTTP over the network.
    Addr(SocketAddr),
    /// Answers every gRPC call at once with these bytes: for benches of the filter's own cost.
    Canned(Vec<u8>),
}

#[derive(Debug, Clone, Copy)]
pub struct HostOptions {
    pub shared_data: bool,
    pub ticks: bool,
}

impl Default for HostOptions {
    fn default() -> Self {
        Self {
            shared_data: true,
            ticks: true,
        }
    }
}

/// One log line: worker, level (0 trace .. 5 critical), message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub worker: usize,
    pub level: i32,
    pub message: String,
}

/// What every worker of the proxy shares.
pub struct Shared {
    options: HostOptions,
    data: Mutex<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: AtomicU32,
    queues: Mutex<Vec<(String, std::collections::VecDeque<Vec<u8>>)>>,
    metrics: Mutex<Vec<(String, i32, i64)>>,
    logs: Mutex<Vec<LogLine>>,
    clusters: Mutex<HashMap<String, Cluster>>,
    channels: Mutex<HashMap<SocketAddr, tonic::transport::Channel>>,
    clock_offset_ns: AtomicI64,
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
}

/// The proxy: the compiled filter and the state its workers share.
#[derive(Clone)]
pub struct Host {
    shared: Arc<Shared>,
}

/// The filter compiled once per test binary: compiling is the slow part.
fn compiled() -> &'static (Engine, Module) {
    static COMPILED: OnceLock<(Engine, Module)> = OnceLock::new();
    COMPILED.get_or_init(|| {
        let path = wasm_path();
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e}; build it with scripts/build-wasm.sh (the README's test command does)",
                path.display()
            )
        });
        let engine = Engine::default();
        let module = Module::new(&engine, &bytes).expect("compile sluice_filter.wasm");
        (engine, module)
    })
}

/// `SLUICE_FILTER_WASM`, or what `scripts/build-wasm.sh` builds.
pub fn wasm_path() -> PathBuf {
    std::env::var_os("SLUICE_FILTER_WASM").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/wasm32-unknown-unknown/release-wasm/sluice_filter.wasm")
        },
        PathBuf::from,
    )
}

impl Default for Host {
    fn default() -> Self {
        Self::new(HostOptions::default())
    }
}

impl Host {
    pub fn new(options: HostOptions) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        Self {
            shared: Arc::new(Shared {
                options,
                data: Mutex::default(),
                next_cas: AtomicU32::new(1),
                queues: Mutex::default(),
                metrics: Mutex::default(),
                logs: Mutex::default(),
                clusters: Mutex::default(),
                channels: Mutex::default(),
                clock_offset_ns: AtomicI64::new(0),
                runtime,
                http: reqwest::Client::new(),
            }),
        }
    }

    /// Routes callouts to `name` (the proxy's cluster) to `cluster`.
    pub fn cluster(&self, name: &str, cluster: Cluster) -> &Self {
        self.shared
            .clusters
            .lock()
            .expect("clusters")
            .insert(name.into(), cluster);
        self
    }

    /// Moves the clock the guest sees.
    pub fn advance_clock(&self, by: Duration) {
        self.shared
            .clock_offset_ns
            .fetch_add(by.as_nanos() as i64, Ordering::SeqCst);
    }

    pub fn logs(&self) -> Vec<LogLine> {
        self.shared.logs.lock().expect("logs").clone()
    }

    /// A metric's value by name (all workers together, as Envoy's stats are).
    pub fn metric(&self, name: &str) -> Option<i64> {
        let metrics = self.shared.metrics.lock().expect("metrics");
        metrics
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, v)| *v)
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.shared.runtime.block_on(f)
    }

    /// A worker VM with this plugin configuration; `Err` with the worker's log lines when
    /// `proxy_on_configure` (or `proxy_on_vm_start`) refused it.
    pub fn worker(&self, plugin_config: &str) -> Result<Worker, Vec<String>> {
        Worker::start(self, b"", plugin_config.as_bytes())
    }
}

fn now_ns(shared: &Shared) -> u64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i64;
    (wall + shared.clock_offset_ns.load(Ordering::SeqCst)).max(0) as u64
}

/// A context's HTTP state, as the host holds it.
#[derive(Debug, Default)]
pub struct HttpState {
    pub request_headers: Pairs,
    pub request_trailers: Pairs,
    pub response_headers: Pairs,
    pub response_trailers: Pairs,
    pub properties: Vec<(Vec<String>, Vec<u8>)>,
    pub local_reply: Option<LocalReply>,
    pub request_continued: bool,
    pub closed: bool,
}

/// Which buffer the running callback may read.
enum Buffer {
    None,
    Configuration(i32, Vec<u8>),
    Body(i32, Vec<u8>),
    CallResponse(i32, Vec<u8>),
}

/// Per-worker state seen by the host functions.
pub struct State {
    shared: Arc<Shared>,
    worker: usize,
    memory: Option<Memory>,
    alloc: Option<TypedFunc<i32, i32>>,
    root_id: u32,
    /// The context of the running callback, and the one hostcalls act on.
    current: u32,
    effective: u32,
    streams: HashMap<u32, HttpState>,
    buffer: Buffer,
    /// Headers of the HTTP callout response being delivered.
    call_headers: Pairs,
    /// Status of the callout being delivered (gRPC code or HTTP status) and its message.
    call_status: Option<(u32, String)>,
    tick_period_ms: u32,
    next_token: u32,
    /// Callouts in flight: token → the context that made them.
    pending: HashMap<u32, u32>,
    done_sender: Sender<(u32, Outcome)>,
    awaiting_done: Vec<u32>,
}

/// A worker VM: one instance of the filter with its root context.
pub struct Worker {
    store: Store<State>,
    instance: Instance,
    next_context: u32,
    done_receiver: Receiver<(u32, Outcome)>,
}

static WORKERS: AtomicU32 = AtomicU32::new(0);

impl Worker {
    fn start(host: &Host, vm_config: &[u8], plugin_config: &[u8]) -> Result<Self, Vec<String>> {
        let (engine, module) = compiled();
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

    /// Calls `proxy_on_tick` when the guest set a tick period (as each tick would).
    pub fn tick(&mut self) -> bool {
        if self.store.data().tick_period_ms == 0 {
            return false;
        }
        let root = self.store.data().root_id;
        self.enter(root);
        self.call1("proxy_on_tick", root);
        true
    }

    fn enter(&mut self, context: u32) {
        let s = self.store.data_mut();
        s.current = context;
        s.effective = context;
    }

    fn func<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
        &mut self,
        name: &str,
    ) -> TypedFunc<P, R> {
        self.instance
            .get_typed_func::<P, R>(&mut self.store, name)
            .unwrap_or_else(|e| panic!("the filter exports no {name}: {e:?}"))
    }

    fn trap(&self, name: &str, e: wasmtime::Error) -> ! {
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

    fn call1(&mut self, name: &str, a: u32) {
        let f = self.func::<i32, ()>(name);
        if let Err(e) = f.call(&mut self.store, a as i32) {
            self.trap(name, e)
        }
    }

    fn call2(&mut self, name: &str, a: u32, b: u32) {
        let f = self.func::<(i32, i32), ()>(name);
        if let Err(e) = f.call(&mut self.store, (a as i32, b as i32)) {
            self.trap(name, e)
        }
    }

    fn call_ret(&mut self, name: &str, a: u32, b: i32) -> i32 {
        let f = self.func::<(i32, i32), i32>(name);
        f.call(&mut self.store, (a as i32, b))
            .unwrap_or_else(|e| self.trap(name, e))
    }

    fn call_action(&mut self, name: &str, context: u32, size: usize, end_of_stream: bool) -> i32 {
        let f = self.func::<(i32, i32, i32), i32>(name);
        f.call(
            &mut self.store,
            (context as i32, size as i32, end_of_stream as i32),
        )
        .unwrap_or_else(|e| self.trap(name, e))
    }

    /// Delivers finished callouts until none is in flight, or until `stop` says enough.
    fn run_callouts(&mut self, mut stop: impl FnMut(&State) -> bool) {
        while !self.store.data().pending.is_empty() && !stop(self.store.data()) {
            // Every callout is bounded by its own timeout; this only guards against a host bug.
            let (token, outcome) = self
                .done_receiver
                .recv_timeout(Duration::from_secs(120))
                .expect("a callout finished within its timeout");
            self.deliver(token, outcome);
        }
    }

    fn deliver(&mut self, token: u32, outcome: Outcome) {
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

    fn call3(&mut self, name: &str, a: u32, b: u32, c: u32) {
        let f = self.func::<(i32, i32, i32), ()>(name);
        if let Err(e) = f.call(&mut self.store, (a as i32, b as i32, c as i32)) {
            self.trap(name, e)
        }
    }

    fn call5(&mut self, name: &str, a: u32, b: u32, c: u32, d: u32, e: u32) {
        let f = self.func::<(i32, i32, i32, i32, i32), ()>(name);
        if let Err(err) = f.call(
            &mut self.store,
            (a as i32, b as i32, c as i32, d as i32, e as i32),
        ) {
            self.trap(name, err)
        }
    }
}
