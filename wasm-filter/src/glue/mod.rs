//! proxy-wasm glue (0.2.x SDK, ABI 0.2.1): the root context reads and validates the plugin
//! configuration, probes shared data and defines the counters; [`http::Stream`] runs the core
//! for each request. Only compiled for wasm32.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel, MetricType};

use crate::config::{self, Config, FailureMode, Transport};
use crate::lease::{Held, Renewals};
use crate::metrics::Counter;
use crate::shared::SharedStore;

mod abi;
mod call;
mod host;
mod http;
mod reports;

proxy_wasm::main! {{
    // Panics are denied in this crate, but the SDK has its own; say why the VM died.
    std::panic::set_hook(Box::new(|info| {
        host::log(LogLevel::Critical, &format!("sluice-filter: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|context_id| Box::new(Root { id: context_id, plugin: None }));
}}

static SHARED_DATA: host::SharedData = host::SharedData;

/// What a configured root shares with its streams (one per worker VM).
pub struct Plugin {
    pub config: Config,
    pub root_id: u32,
    /// Whether the host stores shared data; without it there is no local pre-check.
    shared_data: bool,
    /// Metric ids by [`Counter::index`]; `None` where the host refused the definition.
    metric_ids: Vec<Option<u32>>,
    random: Cell<u64>,
    /// Leases held by this worker's open streams, renewed on the root's ticks.
    renewals: RefCell<Renewals>,
    /// Whether the host ticks for the renewals: unknown until the first lease, or the start
    /// of the reports.
    ticks: Cell<Option<bool>>,
    /// The post-response reports; `None` when not configured or the host has no ticks.
    reports: Option<reports::Reporting>,
}

/// How often the root looks for leases due for renewal.
const TICK: Duration = Duration::from_secs(1);

impl Plugin {
    pub fn count(&self, counter: Counter) {
        self.count_n(counter, 1);
    }

    pub fn count_n(&self, counter: Counter, n: usize) {
        if n > 0
            && let Some(Some(id)) = self.metric_ids.get(counter.index())
        {
            let _ = hostcalls::increment_metric(*id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Whether the streams measure their responses for reports.
    pub fn reporting(&self) -> bool {
        self.reports.is_some()
    }

    /// Files a stream's lease for renewal, starting the root's ticks with the first one.
    pub fn hold_lease(
        &self,
        stream: u32,
        descriptors: Vec<crate::descriptor::Descriptor>,
        lease: Held,
    ) {
        if self.ticks.get().is_none() {
            // The tick period belongs to the root context.
            let moved = hostcalls::set_effective_context(self.root_id).is_ok();
            let ticking = abi::set_tick_period(TICK);
            if moved {
                let _ = hostcalls::set_effective_context(stream);
            }
            if !ticking {
                host::log(
                    LogLevel::Warn,
                    "sluice-filter: the host has no ticks; leases are released at stream end but not renewed",
                );
            }
            self.ticks.set(Some(ticking));
        }
        if self.ticks.get() == Some(true) {
            self.renewals
                .borrow_mut()
                .hold(stream, descriptors, lease, host::now_ns());
        }
    }

    /// Forgets a stream's lease once it ended.
    pub fn end_lease(&self, stream: u32) {
        self.renewals.borrow_mut().end(stream);
    }

    pub fn store(&self) -> Option<&'static dyn SharedStore> {
        self.shared_data
            .then_some(&SHARED_DATA as &'static dyn SharedStore)
    }

    /// A random (version 4) UUID for `x-request-id`. splitmix64 seeded from the clock: ids only
    /// need to be unique, and wasm32-unknown-unknown has no entropy source.
    pub fn request_id(&self) -> String {
        let next = || {
            let mut z = self.random.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            self.random.set(z);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let (hi, lo) = (next(), next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0x0fff,
            (lo >> 48) & 0x3fff | 0x8000,
            lo & 0xffff_ffff_ffff
        )
    }
}

struct Root {
    id: u32,
    plugin: Option<Rc<Plugin>>,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(plugin) = self.plugin.clone() {
            reports::answered(&plugin, token_id, num_headers, body_size);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = host::buffer(BufferType::PluginConfiguration, plugin_configuration_size)
            .unwrap_or_default();
        let config = if bytes.iter().all(u8::is_ascii_whitespace) {
            Err(config::ConfigError {
                field: String::new(),
                reason: "the configuration is empty".into(),
            })
        } else {
            config::parse(&bytes)
        };
        let config = match config {
            Ok(c) => c,
            Err(e) => {
                host::log(
                    LogLevel::Error,
                    &format!("sluice-filter: invalid plugin configuration: {e}"),
                );
                self.plugin = None;
                return false;
            }
        };
        let wants_shared = config.negative_cache_max_ms > 0
            || config.descriptors.iter().any(|d| d.local.is_some());
        let shared_data = wants_shared && abi::shared_data_works();
        if wants_shared && !shared_data {
            host::log(
                LogLevel::Warn,
                "sluice-filter: the host has no shared data; local pre-check and negative cache are off",
            );
        }
        let metric_ids = Counter::all()
            .map(|c| hostcalls::define_metric(MetricType::Counter, &c.name()).ok())
            .collect();
        host::log(LogLevel::Info, &summary(&config));
        let reports = config
            .reports
            .as_ref()
            .and_then(|spec| reports::Reporting::start(spec, TICK));
        // Known to tick once the reports started them; otherwise the first lease finds out (and
        // warns about its renewals).
        let ticks = reports.is_some().then_some(true);
        self.plugin = Some(Rc::new(Plugin {
            config,
            root_id: self.id,
            shared_data,
            metric_ids,
            random: Cell::new(host::now_ns() ^ u64::from(self.id).rotate_left(40)),
            renewals: RefCell::new(Renewals::default()),
            ticks: Cell::new(ticks),
            reports,
        }));
        true
    }

    fn on_tick(&mut self) {
        let Some(plugin) = self.plugin.clone() else {
            return;
        };
        let due = plugin.renewals.borrow_mut().due(host::now_ns());
        for r in due {
            let wire = crate::lease::wire(&r.descriptors, &r.lease.id, false);
            match call::dispatch(&plugin, &wire) {
                Ok(_) => plugin.count(Counter::LeaseRenewals),
                Err(status) => {
                    plugin.count(Counter::LeaseErrors);
                    host::log(
                        LogLevel::Warn,
                        &format!("sluice-filter: cannot renew a lease: {status:?}"),
                    );
                }
            }
        }
        reports::flush(&plugin);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Always a context (the SDK panics on `None`); without a configuration it passes through.
        Some(Box::new(http::Stream::new(context_id, self.plugin.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

fn summary(c: &Config) -> String {
    let transport = match &c.service.transport {
        Transport::Grpc => "grpc".to_string(),
        Transport::Http { path, .. } => format!("http {path}"),
    };
    let failure = match c.failure_mode {
        FailureMode::Allow => "allow".to_string(),
        FailureMode::Deny { status } => format!("deny ({status})"),
    };
    let reports = match &c.reports {
        None => String::new(),
        Some(r) => format!(
            ", {} descriptor(s) reported to cluster {:?} {}",
            r.descriptors.len(),
            r.cluster,
            r.path
        ),
    };
    format!(
        "sluice-filter: domain {:?}, {} descriptor(s), {transport} to cluster {:?} with a {} ms timeout, failure_mode {failure}{reports}",
        c.domain,
        c.descriptors.len(),
        c.service.cluster,
        c.service.timeout_ms
    )
}
