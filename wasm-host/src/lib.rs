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
//! `proxy_on_response_body`, `proxy_on_response_trailers` (the response path runs for the
//! filter's own local replies too, as in Envoy; an [`Upstream`] may take time on the host's
//! clock), `proxy_on_done`, `proxy_on_log`,
//! `proxy_on_delete` (or the request phase alone, [`Worker::send`], and the response later,
//! [`Worker::respond`], for requests in flight together); `proxy_on_tick` ([`Worker::tick`]) once a tick period is set. Several
//! workers share one [`Host`]: its shared data (with compare-and-swap), shared queues, metrics,
//! log and clock, as Envoy's worker threads share them.
//!
//! **Host functions** (module `env`), each with the spec's parameters and statuses:
//! - logging and time: `proxy_log`, `proxy_get_log_level`, `proxy_get_current_time_nanoseconds`
//!   (wall clock plus an offset tests can move, [`Host::advance_clock`], or a clock that only
//!   moves that way, [`Host::freeze_clock`]),
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
mod request;
mod stream;
mod worker;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::{Engine, Memory, Module, TypedFunc};

pub use callout::Outcome;
pub use request::{Exchange, LocalReply, Request, Upstream};
pub use stream::{InFlight, OpenStream, Sent};
pub use worker::Worker;

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
    /// When set, the guest's clock stands still at this time (plus the offset).
    frozen_at_ns: AtomicU64,
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
}

/// The proxy: the compiled filter and the state its workers share.
#[derive(Clone)]
pub struct Host {
    shared: Arc<Shared>,
}

/// The engine every module of this process is compiled with.
pub(crate) fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(Engine::default)
}

/// The module at `path`, compiled with [`engine`].
fn compile(path: &std::path::Path) -> Module {
    let bytes = std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; build it with scripts/build-wasm.sh (the README's test command does)",
            path.display()
        )
    });
    Module::new(engine(), &bytes).unwrap_or_else(|e| panic!("compile {}: {e}", path.display()))
}

/// The filter compiled once per test binary: compiling is the slow part.
fn filter_module() -> &'static Module {
    static COMPILED: OnceLock<Module> = OnceLock::new();
    COMPILED.get_or_init(|| compile(&wasm_path()))
}

/// The pass-through filter (`wasm-host/passthrough`), the benches' baseline.
fn baseline_module() -> &'static Module {
    static COMPILED: OnceLock<Module> = OnceLock::new();
    COMPILED.get_or_init(|| compile(&wasm_path().with_file_name("sluice_passthrough.wasm")))
}

/// `SLUICE_FILTER_WASM`, or what `scripts/build-wasm.sh` builds: under `CARGO_TARGET_DIR` when
/// it is set (cargo passes the environment on to tests), else the workspace's `target`.
pub fn wasm_path() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_FILTER_WASM") {
        return PathBuf::from(path);
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // A relative target directory is relative to where cargo ran: the workspace, for the script.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), |dir| workspace.join(dir));
    target.join("wasm32-unknown-unknown/release-wasm/sluice_filter.wasm")
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
                frozen_at_ns: AtomicU64::new(0),
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
        advance(&self.shared, by);
    }

    /// Stops the clock the guest sees: from now on it moves only by [`Host::advance_clock`], so
    /// latencies the guest measures are exactly the ones the test made.
    pub fn freeze_clock(&self) {
        let now = now_ns(&self.shared);
        self.shared
            .frozen_at_ns
            .compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst)
            .ok();
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
        Worker::start(self, filter_module(), b"", plugin_config.as_bytes())
    }

    /// A worker VM running the pass-through filter instead: the host's own cost per exchange.
    pub fn baseline_worker(&self) -> Worker {
        Worker::start(self, baseline_module(), b"", b"")
            .unwrap_or_else(|log| panic!("the pass-through filter refused to start: {log:?}"))
    }
}

fn advance(shared: &Shared, by: Duration) {
    shared
        .clock_offset_ns
        .fetch_add(by.as_nanos() as i64, Ordering::SeqCst);
}

fn now_ns(shared: &Shared) -> u64 {
    let wall = match shared.frozen_at_ns.load(Ordering::SeqCst) {
        0 => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i64,
        frozen => frozen as i64,
    };
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
