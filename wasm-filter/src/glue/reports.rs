//! Post-response reports ([`crate::report`]) through the host: a stream measures its response
//! and files its reports when it ends; the root posts them with `proxy_http_call` on its ticks.
//!
//! Posts go from the root's own callbacks only (a tick, or the answer to the previous post), so
//! their answers come back to the root: the SDK hands a callout's answer to the context that was
//! running when it was made, whatever the effective context, and a stream is gone by then. When
//! a stream fills a batch, it asks for a tick in a millisecond instead of posting itself.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType};

use super::{Plugin, abi, host};
use crate::config::Reports;
use crate::descriptor::Descriptor;
use crate::metrics::Counter;
use crate::report::{self, Buffer, Report};

/// The tick a stream asks for when a batch is ready.
const EARLY_TICK: Duration = Duration::from_millis(1);
/// The most of an error answer's body a warning quotes.
const QUOTED_BYTES: usize = 200;

/// A worker's reports and the tick period that posts them.
pub struct Reporting {
    buffer: RefCell<Buffer>,
    /// The root's usual tick period.
    tick: Duration,
    /// Whether a stream asked for an early tick.
    early: Cell<bool>,
}

impl Reporting {
    /// Starts the root's ticks (called from `on_configure`, in the root context); `None`, with
    /// a warning, on a host without ticks.
    pub fn start(spec: &Reports, lease_tick: Duration) -> Option<Self> {
        let tick = lease_tick.min(Duration::from_millis(u64::from(spec.flush_ms)));
        if !abi::set_tick_period(tick) {
            host::log(
                LogLevel::Warn,
                "sluice-filter: the host has no ticks; responses are not reported",
            );
            return None;
        }
        Some(Self {
            buffer: RefCell::new(Buffer::new(spec)),
            tick,
            early: Cell::new(false),
        })
    }
}

/// A response's latency and status, when its headers come back `since_ns` after the request
/// was let through upstream.
pub fn measure(since_ns: u64) -> Option<(u64, u16)> {
    let status = host::header(MapType::HttpResponseHeaders, ":status");
    report::measure(since_ns, host::now_ns(), status.as_deref())
}

/// Files an ended stream's reports, one per reported descriptor the request had.
pub fn file(
    plugin: &Plugin,
    stream: u32,
    descriptors: Vec<Descriptor>,
    (latency_us, status): (u64, u16),
) {
    let (Some(r), Some(spec)) = (&plugin.reports, &plugin.config.reports) else {
        return;
    };
    let reports = descriptors
        .into_iter()
        .filter(|d| spec.descriptors.contains(&d.def))
        .map(|d| Report {
            entries: d.entries,
            latency_us,
            status,
        });
    let filed = r.buffer.borrow_mut().file(reports, host::now_ns());
    plugin.count_n(Counter::ReportsDropped, filed.dropped);
    if filed.batch_ready && !r.early.get() {
        let moved = hostcalls::set_effective_context(plugin.root_id).is_ok();
        if abi::set_tick_period(EARLY_TICK) {
            r.early.set(true);
        }
        if moved {
            let _ = hostcalls::set_effective_context(stream);
        }
    }
}

/// Posts the next batch when one is due; from the root context only.
pub fn flush(plugin: &Plugin) {
    let (Some(r), Some(spec)) = (&plugin.reports, &plugin.config.reports) else {
        return;
    };
    if r.early.replace(false) {
        abi::set_tick_period(r.tick);
    }
    let now = host::now_ns();
    let mut buffer = r.buffer.borrow_mut();
    if let Some(n) = buffer.lost(now) {
        failed(plugin, n, "no answer");
    }
    let Some(batch) = buffer.next(&plugin.config.domain, now) else {
        return;
    };
    plugin.count_n(Counter::ReportsDropped, batch.oversized);
    if batch.reports == 0 {
        return;
    }
    let headers = vec![
        (":method", "POST"),
        (":path", spec.path.as_str()),
        (":authority", spec.authority.as_str()),
        ("content-type", "application/json"),
    ];
    let timeout = Duration::from_millis(u64::from(spec.timeout_ms));
    match hostcalls::dispatch_http_call(
        &spec.cluster,
        headers,
        Some(&batch.body),
        Vec::new(),
        timeout,
    ) {
        Ok(token) => buffer.sent(token, batch.reports, now),
        Err(status) => failed(
            plugin,
            batch.reports,
            &format!("cannot call cluster {:?}: {status:?}", spec.cluster),
        ),
    }
}

/// The answer to a root callout: when it is the post in flight, counts it and posts the next
/// batch if a full one waits.
pub fn answered(plugin: &Plugin, token: u32, num_headers: usize, body_size: usize) {
    let Some(r) = &plugin.reports else {
        return;
    };
    let Some(n) = r.buffer.borrow_mut().answered(token) else {
        return;
    };
    let status = (num_headers > 0)
        .then(|| host::header(MapType::HttpCallResponseHeaders, ":status"))
        .flatten()
        .and_then(|v| String::from_utf8(v).ok());
    match status.as_deref() {
        Some("200") => plugin.count_n(Counter::ReportsSent, n),
        Some(status) => {
            let body = host::buffer(
                BufferType::HttpCallResponseBody,
                body_size.min(QUOTED_BYTES),
            )
            .unwrap_or_default();
            let why = format!("status {status}: {}", String::from_utf8_lossy(&body));
            failed(plugin, n, &why);
        }
        None => failed(plugin, n, "no response (timeout, reset or unreachable)"),
    }
    flush(plugin);
}

fn failed(plugin: &Plugin, reports: usize, why: &str) {
    plugin.count(Counter::ReportErrors);
    plugin.count_n(Counter::ReportsDropped, reports);
    host::log(
        LogLevel::Warn,
        &format!("sluice-filter: {reports} report(s) dropped: {why}"),
    );
}
