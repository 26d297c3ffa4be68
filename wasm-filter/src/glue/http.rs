//! One HTTP stream: descriptors and the local answer on request headers, the callout to Sluice
//! and its verdict, headers on the response, and the post-response charge once the stream is
//! done.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel, MapType};

use super::host::{self, HostRequest};
use super::{Plugin, call, reports};
use crate::charge::{self, Measured};
use crate::check::{self, Answer, ErrorKind, Failure, LocalCause, Start, Verdict};
use crate::config::ChargeSource;
use crate::descriptor::{self, Descriptor};
use crate::headers::{self, LocalReply};
use crate::lease;
use crate::metrics::Counter;
use crate::proto::WireDescriptor;

pub struct Stream {
    id: u32,
    plugin: Option<Rc<Plugin>>,
    descriptors: Vec<Descriptor>,
    /// The callout this stream waits for.
    waiting: Option<u32>,
    /// Rate-limit and Sluice headers for the response.
    response_headers: Vec<(String, String)>,
    charges: Vec<charge::Pending>,
    measured: Measured,
    /// The concurrency lease the request took, released when the stream ends.
    lease: Option<lease::Held>,
    /// When the request went upstream, for reports: only a request the filter let through has
    /// a response to report.
    upstream_since_ns: Option<u64>,
    /// The response's latency (µs) and status, reported when the stream ends.
    outcome: Option<(u64, u16)>,
}

impl Stream {
    pub fn new(id: u32, plugin: Option<Rc<Plugin>>) -> Self {
        Self {
            id,
            plugin,
            descriptors: Vec::new(),
            waiting: None,
            response_headers: Vec::new(),
            charges: Vec::new(),
            measured: Measured::default(),
            lease: None,
            upstream_since_ns: None,
            outcome: None,
        }
    }

    /// The request goes upstream now: its latency is counted from here, after the check, so
    /// the time Sluice took (or a queued pool's wait) is not the upstream's.
    fn going_upstream(&mut self, plugin: &Plugin) {
        if plugin.reporting() {
            self.upstream_since_ns = Some(host::now_ns());
        }
    }

    fn upstream_headers(&self, plugin: &Plugin) {
        let h = &plugin.config.request_headers;
        if let Some(name) = &h.request_id
            && host::header(MapType::HttpRequestHeaders, name).is_none()
        {
            host::set_header(
                MapType::HttpRequestHeaders,
                name,
                Some(&plugin.request_id()),
            );
        }
        if let Some((name, _)) = &h.tenant {
            // Removed when there is no value, so clients cannot set it themselves.
            let value = check::tenant_value(&plugin.config, &self.descriptors);
            host::set_header(MapType::HttpRequestHeaders, name, value);
        }
    }

    /// The descriptors of a check, or with `hits` of a charge.
    fn wire(&self, hits: Option<&[(usize, u64)]>) -> Vec<WireDescriptor<'_>> {
        match hits {
            None => self
                .descriptors
                .iter()
                .map(|d| WireDescriptor {
                    entries: &d.entries,
                    hits_addend: None,
                    ..Default::default()
                })
                .collect(),
            Some(hits) => hits
                .iter()
                .filter_map(|(i, n)| {
                    let d = self.descriptors.get(*i)?;
                    Some(WireDescriptor {
                        entries: &d.entries,
                        hits_addend: Some(*n),
                        ..Default::default()
                    })
                })
                .collect(),
        }
    }

    /// Acts on the verdict; `paused` says whether the request waits for a callout.
    fn conclude(
        &mut self,
        plugin: &Plugin,
        answer: Result<Answer, Failure>,
        paused: bool,
    ) -> Action {
        self.waiting = None;
        let store = plugin.store();
        match check::finish(
            &plugin.config,
            &self.descriptors,
            answer,
            store,
            host::now_ns(),
        ) {
            Verdict::Allow(allowed) => {
                self.charges =
                    charge::plan(&plugin.config, &self.descriptors, Some(&allowed.statuses));
                for (k, v) in &allowed.request_headers {
                    host::set_header(MapType::HttpRequestHeaders, k, Some(v));
                }
                if let Some(held) = lease::from_headers(&allowed.response_headers) {
                    plugin.hold_lease(self.id, self.descriptors.clone(), held.clone());
                    self.lease = Some(held);
                }
                self.response_headers = allowed.response_headers;
                self.going_upstream(plugin);
                resume(paused)
            }
            Verdict::Reject(reply) => {
                plugin.count(Counter::RemoteOverLimit);
                send(reply)
            }
            Verdict::Invalid(reply) => {
                // Client data, so debug: at a higher level any client could flood the log. A
                // steady count means the filter's bounds are above Sluice's.
                plugin.count(Counter::RemoteInvalid);
                host::log(
                    LogLevel::Debug,
                    "sluice-filter: the rate-limit service refused the request as invalid",
                );
                send(reply)
            }
            Verdict::Failed { failure, reply } => {
                plugin.count(Counter::RemoteErrors(failure.kind));
                let mode = if reply.is_some() { "deny" } else { "allow" };
                host::log(
                    LogLevel::Warn,
                    &format!(
                        "sluice-filter: rate-limit check failed ({}: {}); failure_mode {mode}",
                        failure.kind.name(),
                        failure.detail
                    ),
                );
                match reply {
                    None => {
                        plugin.count(Counter::FailOpen);
                        self.charges = charge::plan(&plugin.config, &self.descriptors, None);
                        self.going_upstream(plugin);
                        resume(paused)
                    }
                    Some(reply) => {
                        plugin.count(Counter::FailClosed);
                        send(reply)
                    }
                }
            }
        }
    }

    fn charge(&mut self, plugin: &Plugin) {
        let hits = charge::amounts(&self.charges, &self.measured);
        if hits.is_empty() {
            return;
        }
        match call::from_root(plugin, self.id, &self.wire(Some(&hits))) {
            Ok(_) => plugin.count(Counter::Charges),
            Err(status) => {
                plugin.count(Counter::ChargeErrors);
                host::log(
                    LogLevel::Warn,
                    &format!("sluice-filter: cannot send the post-response charge: {status:?}"),
                );
            }
        }
    }

    /// Gives the stream's lease back, from the root context like the charge.
    fn release(&mut self, plugin: &Plugin) {
        let Some(held) = self.lease.take() else {
            return;
        };
        plugin.end_lease(self.id);
        let wire = lease::wire(&self.descriptors, &held.id, true);
        match call::from_root(plugin, self.id, &wire) {
            Ok(_) => plugin.count(Counter::LeaseReleases),
            Err(status) => {
                plugin.count(Counter::LeaseErrors);
                host::log(
                    LogLevel::Warn,
                    &format!(
                        "sluice-filter: cannot release lease {}: {status:?}; it lapses after {} s",
                        held.id, held.ttl_secs
                    ),
                );
            }
        }
    }

    fn read_charge_headers(&mut self, map: MapType) {
        for p in &self.charges {
            if let ChargeSource::ResponseHeader(name) = &p.source
                && !self.measured.headers.iter().any(|(k, _)| k == name)
                && let Some(value) = host::header(map, name).and_then(|v| String::from_utf8(v).ok())
            {
                self.measured.headers.push((name.clone(), value));
            }
        }
    }
}

fn resume(paused: bool) -> Action {
    if paused && let Err(status) = hostcalls::resume_http_request() {
        host::log(
            LogLevel::Warn,
            &format!("sluice-filter: cannot resume the request: {status:?}"),
        );
    }
    Action::Continue
}

fn send(reply: LocalReply) -> Action {
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Err(status) =
        hostcalls::send_http_response(u32::from(reply.status), headers, Some(&reply.body))
    {
        host::log(
            LogLevel::Warn,
            &format!("sluice-filter: cannot send the local reply: {status:?}"),
        );
    }
    Action::Pause
}

impl Context for Stream {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let Some(plugin) = self
            .plugin
            .clone()
            .filter(|_| self.waiting == Some(token_id))
        else {
            return;
        };
        let answer =
            call::grpc_answer(status_code, response_size, plugin.config.max_response_bytes);
        self.conclude(&plugin, answer, true);
    }

    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(plugin) = self
            .plugin
            .clone()
            .filter(|_| self.waiting == Some(token_id))
        else {
            return;
        };
        let answer = call::http_answer(num_headers, body_size, plugin.config.max_response_bytes);
        self.conclude(&plugin, answer, true);
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(plugin) = self.plugin.clone() else {
            return Action::Continue;
        };
        let mut request = HostRequest::default();
        let built = match descriptor::build(&plugin.config, &mut request) {
            Ok(built) => built,
            Err(invalid) => {
                // Refused rather than checked without the descriptor: that would be a bypass.
                let detail = invalid.detail(&plugin.config);
                plugin.count(Counter::InvalidRequests);
                host::log(
                    LogLevel::Debug,
                    &format!("sluice-filter: invalid request: {detail}"),
                );
                return send(headers::invalid_reply(
                    plugin.config.invalid_request_status,
                    &detail,
                ));
            }
        };
        for d in built.dropped {
            let name = plugin
                .config
                .descriptors
                .get(d.def)
                .map_or("?", |x| x.name.as_str());
            host::log(
                LogLevel::Debug,
                &format!(
                    "sluice-filter: {name} dropped: action {} {}",
                    d.action, d.reason
                ),
            );
        }
        self.descriptors = built.descriptors;
        self.upstream_headers(&plugin);
        match check::start(
            &plugin.config,
            &self.descriptors,
            plugin.store(),
            host::now_ns(),
        ) {
            Start::Pass => {
                self.going_upstream(&plugin);
                Action::Continue
            }
            Start::Reject { reply, cause } => {
                plugin.count(match cause {
                    LocalCause::NegativeCache => Counter::NegativeCacheHits,
                    LocalCause::Bucket => Counter::LocalRejects,
                });
                send(reply)
            }
            Start::Remote => match call::dispatch(&plugin, &self.wire(None)) {
                Ok(token) => {
                    plugin.count(Counter::RemoteChecks);
                    self.waiting = Some(token);
                    Action::Pause
                }
                Err(status) => {
                    let failure = Failure::new(
                        ErrorKind::Dispatch,
                        format!(
                            "cannot call cluster {:?}: {status:?}",
                            plugin.config.service.cluster
                        ),
                    );
                    self.conclude(&plugin, Err(failure), false)
                }
            },
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(since) = self.upstream_since_ns.take() {
            self.outcome = reports::measure(since);
        }
        for (k, v) in std::mem::take(&mut self.response_headers) {
            host::set_header(MapType::HttpResponseHeaders, &k, Some(&v));
        }
        self.read_charge_headers(MapType::HttpResponseHeaders);
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        // Each call brings the next chunk, since this filter never buffers the body.
        self.measured.body_bytes = self.measured.body_bytes.saturating_add(body_size as u64);
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        self.read_charge_headers(MapType::HttpResponseTrailers);
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(plugin) = self.plugin.clone() else {
            return;
        };
        if !self.charges.is_empty() {
            self.charge(&plugin);
        }
        self.release(&plugin);
        if let Some(outcome) = self.outcome.take() {
            let descriptors = std::mem::take(&mut self.descriptors);
            reports::file(&plugin, self.id, descriptors, outcome);
        }
    }
}
