//! Calls to Sluice: a check, a charge or a lease renewal or release, over gRPC or HTTP.

use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

use super::Plugin;
use crate::config::Transport;
use crate::json;
use crate::proto::{self, WireDescriptor};

const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
const METHOD: &str = "ShouldRateLimit";

/// Sends `wire` to Sluice, from the effective context; the callout token.
pub fn dispatch(plugin: &Plugin, wire: &[WireDescriptor<'_>]) -> Result<u32, Status> {
    let service = &plugin.config.service;
    let timeout = Duration::from_millis(u64::from(service.timeout_ms));
    match &service.transport {
        Transport::Grpc => {
            let message = proto::encode_request(&plugin.config.domain, wire);
            hostcalls::dispatch_grpc_call(
                &service.cluster,
                SERVICE,
                METHOD,
                Vec::new(),
                Some(&message),
                timeout,
            )
        }
        Transport::Http { path, authority } => {
            let body = json::encode_request(&plugin.config.domain, wire);
            let headers = vec![
                (":method", "POST"),
                (":path", path.as_str()),
                (":authority", authority.as_str()),
                ("content-type", "application/json"),
                ("accept", "application/json, application/problem+json"),
            ];
            hostcalls::dispatch_http_call(
                &service.cluster,
                headers,
                Some(&body),
                Vec::new(),
                timeout,
            )
        }
    }
}

/// Sends `wire` from the root context on behalf of stream `stream`, which is ending: a callout
/// the stream owned would be cancelled with its context, one made from the root outlives it.
pub fn from_root(plugin: &Plugin, stream: u32, wire: &[WireDescriptor<'_>]) -> Result<u32, Status> {
    let moved = hostcalls::set_effective_context(plugin.root_id).is_ok();
    let result = dispatch(plugin, wire);
    if moved {
        let _ = hostcalls::set_effective_context(stream);
    }
    result
}
