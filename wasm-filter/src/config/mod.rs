//! The plugin configuration: JSON (Istio's `WasmPlugin.pluginConfig` arrives as JSON, Envoy's
//! `configuration` is a `StringValue` holding it), read and validated field by field ([`read`])
//! into the immutable [`Config`] the request path reads.
//!
//! Every error names the field (`descriptors[0].actions[1].request_header.header`) so the single
//! log line of a refused configuration says what to fix. `docs/filter.md` is the reference of
//! every field.

use std::fmt;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub domain: String,
    pub service: Service,
    pub failure_mode: FailureMode,
    pub header_style: HeaderStyle,
    pub request_headers: RequestHeaders,
    pub descriptors: Vec<DescriptorDef>,
    /// Slots of each shared-data table (buckets, negative cache): bounds proxy memory whatever
    /// the number of distinct descriptor values.
    pub shared_slots: u32,
    /// Longest time a descriptor stays in the negative cache; 0 turns the cache off.
    pub negative_cache_max_ms: u64,
    /// Largest answer from Sluice the filter reads; a bigger one is malformed.
    pub max_response_bytes: usize,
    /// Longest bearer token `jwt_claim` decodes; a longer one present makes the request invalid.
    pub max_token_bytes: usize,
    /// Longest entry value; a longer one read from the request makes the request invalid.
    pub max_value_bytes: usize,
    /// Most bytes of domain, keys and values in one check, as Sluice counts its
    /// `--max-request-bytes`; a request whose descriptors carry more is invalid.
    pub max_request_bytes: usize,
    /// The status of the reply to an invalid request.
    pub invalid_request_status: u16,
    /// Post-response reports for adaptive limits; `None` when the filter sends none.
    pub reports: Option<Reports>,
}

/// Where and how the filter reports each response's latency and status (`POST /reports`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reports {
    /// Indexes into [`Config::descriptors`] of the descriptors reported, in order.
    pub descriptors: Vec<usize>,
    /// The proxy's cluster for Sluice's HTTP listener.
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub timeout_ms: u32,
    /// Most reports in one post.
    pub max_batch: u32,
    /// Longest a report waits in the buffer before a partial batch is posted.
    pub flush_ms: u32,
    /// Most reports buffered per worker VM; more are dropped.
    pub max_pending: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The proxy's cluster (upstream) name for Sluice.
    pub cluster: String,
    pub timeout_ms: u32,
    pub transport: Transport,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// `proxy_grpc_call` to `RateLimitService/ShouldRateLimit`.
    Grpc,
    /// `proxy_http_call` to Sluice's `/json`, for hosts without gRPC calls.
    Http { path: String, authority: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Let the request through when Sluice cannot answer.
    Allow,
    /// Answer with this status when Sluice cannot answer.
    Deny { status: u16 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderStyle {
    /// No rate-limit headers from the filter (Sluice's own `response_headers_to_add` still go).
    None,
    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`.
    #[default]
    Ratelimit,
    /// Envoy's draft-03 `X-RateLimit-Limit` (with `;w=` policies), `-Remaining`, `-Reset`.
    XRatelimit,
}

/// Headers the filter sets on requests it lets through, for the services behind it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHeaders {
    /// Generated (a random UUID) when the request has none.
    pub request_id: Option<String>,
    /// The fewest requests remaining among the limits Sluice reported.
    pub remaining: Option<String>,
    /// The value of the first descriptor entry with `key`, e.g. the app or tenant id.
    pub tenant: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorDef {
    /// For logs: the configured name or `descriptors[i]`.
    pub name: String,
    pub actions: Vec<Action>,
    pub local: Option<BucketSpec>,
    pub charge: Option<ChargeSource>,
}

/// One entry of a descriptor, modelled on Envoy's route `rate_limits` actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    GenericKey {
        key: String,
        value: String,
    },
    RequestHeader {
        header: String,
        key: String,
        skip_if_absent: bool,
    },
    QueryParameter {
        name: String,
        key: String,
        skip_if_absent: bool,
    },
    /// The method as the value, or with `methods`, `value` when the method is one of them.
    Method {
        key: String,
        matching: Option<(Vec<String>, String)>,
    },
    /// `value` when the path (without query) matches (or, with `expect_match: false`, does not).
    Path {
        key: String,
        matcher: PathMatch,
        value: String,
        expect_match: bool,
    },
    /// The client address, optionally masked to a prefix (`masked_remote_address`, as Envoy).
    RemoteAddress {
        v4_prefix: Option<u8>,
        v6_prefix: Option<u8>,
    },
    /// A host property, e.g. a verified JWT payload that Envoy's `jwt_authn` put in metadata.
    Metadata {
        property: Vec<String>,
        key: String,
        default_value: Option<String>,
        skip_if_absent: bool,
    },
    /// A claim of the bearer token, decoded without verification: only behind a verifying filter.
    JwtClaim {
        header: String,
        claim: Vec<String>,
        key: String,
        skip_if_absent: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

/// A local token bucket, refilled continuously at `tokens_per_fill` per `fill_interval_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketSpec {
    pub max_tokens: u32,
    pub tokens_per_fill: u32,
    pub fill_interval_ms: u32,
}

/// Where the post-response charge of a descriptor comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeSource {
    /// The response body size in bytes.
    ResponseBytes,
    /// A non-negative integer in this response header (or trailer), e.g. an LLM token count.
    ResponseHeader(String),
}

/// Why a configuration was refused: the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() || self.field == "." {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses and validates a plugin configuration.
pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
    let doc = crate::value::parse(bytes).map_err(|e| err("", format!("not JSON: {e}")))?;
    read::config(&doc)
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        reason: reason.into(),
    }
}

mod object;
mod read;
mod reports;
mod wire;

#[cfg(test)]
mod tests;
