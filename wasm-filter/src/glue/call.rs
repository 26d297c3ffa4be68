//! Calls to Sluice: a check, a charge or a lease renewal or release, over gRPC or HTTP, and the
//! answers to checks as the host delivers them.

use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, Status};

use super::{Plugin, host};
use crate::check::{self, Answer, ErrorKind, Failure};
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
            // Sluice answers a check queued for a pool before this timeout runs out.
            let wait_ms = service.timeout_ms.to_string();
            let headers = json::request_headers(path, authority, &wait_ms);
            hostcalls::dispatch_http_call(
                &service.cluster,
                headers.to_vec(),
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

/// The answer to a gRPC check, from `on_grpc_call_response`.
pub fn grpc_answer(status_code: u32, size: usize, max: usize) -> Result<Answer, Failure> {
    if status_code != 0 {
        return check::from_grpc_status(status_code);
    }
    if size > max {
        return Err(Failure::new(
            ErrorKind::Malformed,
            format!("{size}-byte answer, over max_response_bytes"),
        ));
    }
    match host::buffer(BufferType::GrpcReceiveBuffer, size) {
        Some(body) => proto::decode_response(&body)
            .map_err(|e| Failure::new(ErrorKind::Malformed, e.to_string())),
        None => Err(Failure::new(
            ErrorKind::Malformed,
            "the answer could not be read",
        )),
    }
}

/// The answer to an HTTP check, from `on_http_call_response`.
pub fn http_answer(num_headers: usize, body_size: usize, max: usize) -> Result<Answer, Failure> {
    if num_headers == 0 {
        return Err(Failure::new(
            ErrorKind::NoResponse,
            "no response (timeout, reset or unreachable)",
        ));
    }
    if body_size > max {
        return Err(Failure::new(
            ErrorKind::Malformed,
            format!("{body_size}-byte answer, over max_response_bytes"),
        ));
    }
    let text = |name| {
        host::header(MapType::HttpCallResponseHeaders, name).and_then(|v| String::from_utf8(v).ok())
    };
    let Some(status) = text(":status").and_then(|s| s.parse::<u16>().ok()) else {
        return Err(Failure::new(
            ErrorKind::Malformed,
            "answer without a valid :status",
        ));
    };
    match host::buffer(BufferType::HttpCallResponseBody, body_size) {
        Some(body) => json::decode_response(status, text("content-type").as_deref(), &body),
        None => Err(Failure::new(
            ErrorKind::Malformed,
            "the answer body could not be read",
        )),
    }
}
