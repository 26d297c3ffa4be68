//! The fuzz targets: plain functions of the input's bytes. Each runs a real path of the server
//! (through `sluice_server::fuzz`) or of the filter (its public decoders) and checks what must
//! hold whatever the bytes: it returns (no panic, no hang, bounded memory, which the runner
//! checks), and a refusal says why. A broken rule panics; the runner turns that into a finding.
//!
//! Each returns `Ok` when the input was accepted and `Err` with the refusal's reason otherwise, so
//! the runner can tell outcomes apart and `sluice-fuzz replay` can print them.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use prost::Message as _;
use sluice_filter::check::{self, ErrorKind, Failure, Verdict};
use sluice_filter::config::Config;
use sluice_filter::descriptor::{self, Descriptor, RequestData};
use sluice_filter::proto::WireDescriptor;
use sluice_filter::shared::{SetError, SharedStore};
use sluice_server::config::RuleSet;
use sluice_server::fuzz::Server;

/// What a target returns: accepted, or refused with the reason given.
pub type Outcome = Result<(), String>;

/// One fuzz target.
pub struct Target {
    pub name: &'static str,
    /// What the input is and which path it goes through.
    pub about: &'static str,
    pub run: fn(&[u8]) -> Outcome,
    /// Its AFL++ dictionary (`fuzz/dict/<name>.dict`), which the bounded run reads too.
    pub dict: &'static str,
    /// Makes a mutated input pass a check that would refuse nearly every mutation (a length
    /// prefix), so the bounded run gets past it; AFL++ learns that by itself.
    pub fixup: Option<fn(&mut [u8])>,
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "config",
        about: "YAML rule files (one, or several split by `#--- next file` lines; `#merge` first merges domains): config::parse_many (nesting, alias, node and text bounds; every field check; duplicates across files)",
        run: config,
        dict: include_str!("../dict/config.dict"),
        fixup: None,
    },
    Target {
        name: "grpc",
        about: "a ShouldRateLimit call's body: gRPC framing, prost decoding of RateLimitRequest, from_proto, the limiter's validation and check",
        run: grpc,
        dict: include_str!("../dict/grpc.dict"),
        fixup: Some(grpc_prefix),
    },
    Target {
        name: "json",
        about: "a POST /json body through the HTTP router: proto3 JSON into the check request, validation, check",
        run: json,
        dict: include_str!("../dict/json.dict"),
        fixup: None,
    },
    Target {
        name: "auth",
        about: "/auth/{domain}: the domain line, then `name: value` header lines, mapped by http_descriptors",
        run: auth,
        dict: include_str!("../dict/auth.dict"),
        fixup: None,
    },
    Target {
        name: "leases",
        about: "POST /leases/{action}: the action line, then the body (acquire, renew, release, holders)",
        run: leases,
        dict: include_str!("../dict/leases.dict"),
        fixup: None,
    },
    Target {
        name: "admin",
        about: "/admin/…: `METHOD target` line, then the body (counters, reset, top, leases, overrides, audit)",
        run: admin,
        dict: include_str!("../dict/admin.dict"),
        fixup: None,
    },
    Target {
        name: "filter_config",
        about: "the proxy-wasm filter's plugin configuration: sluice_filter::config::parse (its JSON reader included)",
        run: filter_config,
        dict: include_str!("../dict/filter_config.dict"),
        fixup: None,
    },
    Target {
        name: "filter_json",
        about: "an HTTP answer to the filter: status and content-type bytes, then the body; json::decode_response, then check::finish",
        run: filter_json,
        dict: include_str!("../dict/filter_json.dict"),
        fixup: None,
    },
    Target {
        name: "filter_proto",
        about: "a gRPC answer to the filter: proto::decode_response of a RateLimitResponse, then check::finish",
        run: filter_proto,
        dict: include_str!("../dict/filter_proto.dict"),
        fixup: None,
    },
    Target {
        name: "filter_request",
        about: "a request the filter sees: header lines and host properties; descriptor::build (JWT claims, addresses, query), check::start, and the request encoders checked against prost and a JSON parser",
        run: filter_request,
        dict: include_str!("../dict/filter_request.dict"),
        fixup: None,
    },
];

pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// A refusal must say why.
fn reasoned(outcome: Outcome) -> Outcome {
    if let Err(reason) = &outcome {
        assert!(!reason.trim().is_empty(), "refused without a reason");
    }
    outcome
}

/// An HTTP refusal must say why; and with counters in memory, nothing is the server's fault.
fn http_refusal(outcome: Outcome) -> Outcome {
    if let Err(reason) = &outcome {
        assert!(
            !reason.starts_with("500"),
            "a server error with an in-memory store: {reason}"
        );
    }
    reasoned(outcome)
}

// --- the server ---

/// The example rule files, as one load: every algorithm, pools, fair share, overflow,
/// `http_descriptors`.
const RULE_FILES: &[(&str, &str)] = &[
    (
        "examples/config/quotas.yaml",
        include_str!("../../examples/config/quotas.yaml"),
    ),
    (
        "examples/pools/config/pools.yaml",
        include_str!("../../examples/pools/config/pools.yaml"),
    ),
    (
        "examples/micro-apps/config/quotas.yaml",
        include_str!("../../examples/micro-apps/config/quotas.yaml"),
    ),
    (
        "examples/nginx/config/quotas.yaml",
        include_str!("../../examples/nginx/config/quotas.yaml"),
    ),
    (
        "examples/nginx/config/uploads.yaml",
        include_str!("../../examples/nginx/config/uploads.yaml"),
    ),
    (
        "server/tests/fixtures/config/valid/second_domain.yml",
        include_str!("../../server/tests/fixtures/config/valid/second_domain.yml"),
    ),
];

pub fn rules() -> &'static RuleSet {
    static RULES: OnceLock<RuleSet> = OnceLock::new();
    RULES.get_or_init(|| {
        sluice_server::config::parse_many(RULE_FILES, &Default::default())
            .unwrap_or_else(|e| panic!("the example rules do not load: {e}"))
    })
}

/// A fresh server for each input, so every input is decided on empty counters and replays alike.
fn server() -> Server {
    Server::new(rules().clone()).unwrap_or_else(|e| panic!("no server: {e}"))
}

pub fn config(data: &[u8]) -> Outcome {
    reasoned(sluice_server::fuzz::config(data))
}

pub fn grpc(data: &[u8]) -> Outcome {
    reasoned(server().grpc(data))
}

/// Sets the gRPC length prefix to what follows it.
fn grpc_prefix(data: &mut [u8]) {
    if data.len() < 5 {
        return;
    }
    let len = (data.len() - 5) as u32;
    data[1..5].copy_from_slice(&len.to_be_bytes());
}

pub fn json(data: &[u8]) -> Outcome {
    http_refusal(server().json(data))
}

pub fn auth(data: &[u8]) -> Outcome {
    http_refusal(server().auth(data))
}

pub fn leases(data: &[u8]) -> Outcome {
    http_refusal(server().leases(data))
}

pub fn admin(data: &[u8]) -> Outcome {
    http_refusal(server().admin(data))
}

// --- the filter ---

pub fn filter_config(data: &[u8]) -> Outcome {
    reasoned(
        sluice_filter::config::parse(data)
            .map(drop)
            .map_err(|e| e.to_string()),
    )
}

/// A filter configuration that uses every action, the local buckets, the negative cache and the
/// request headers, in each header style and failure mode, with the tenant header taken from
/// each kind of client-controlled value.
const FILTER_CONFIG: &str = r#"{
  "domain": "edge",
  "service": {"cluster": "sluice", "timeout_ms": 20},
  "failure_mode": "deny", "failure_status": 503,
  "header_style": "STYLE",
  "request_headers": {"request_id": "x-request-id", "remaining": "x-ratelimit-remaining",
                      "tenant": {"header": "x-tenant", "key": "TENANT_KEY"}},
  "negative_cache_max_ms": 60000, "shared_slots": 64,
  "descriptors": [
    {"name": "per_app", "actions": [{"request_header": {"header": "x-app-id", "key": "app_id"}}],
     "local": {"max_tokens": 3, "tokens_per_fill": 1, "fill_interval_ms": 1000}},
    {"name": "per_org", "actions": [{"jwt_claim": {"claim": "org.id", "key": "org"}},
                                    {"method": {"methods": ["POST", "PUT"], "descriptor_value": "write"}}]},
    {"actions": [{"query_parameter": {"name": "tenant", "key": "tenant", "skip_if_absent": true}},
                 {"path": {"prefix": "/api/", "descriptor_value": "api"}},
                 {"method": {}}]},
    {"actions": [{"remote_address": {"v4_prefix_len": 24, "v6_prefix_len": 64}}],
     "local": {"max_tokens": 1, "tokens_per_fill": 1, "fill_interval_ms": 60000}},
    {"actions": [{"metadata": {"property": ["metadata", "filter_metadata", "jwt", "sub"], "key": "sub",
                               "default_value": "anon"}},
                 {"generic_key": {"descriptor_value": "all"}}],
     "charge": {"from": "response_header", "header": "x-tokens"}},
    {"actions": [{"request_header": {"header": ":authority", "key": "host", "skip_if_absent": true}},
                 {"path": {"exact": "/login", "descriptor_value": "login", "expect_match": false}},
                 {"jwt_claim": {"header": "x-token", "claim": "sub", "key": "user", "skip_if_absent": true}}]}
  ]
}"#;

fn filter_configs() -> &'static [Config] {
    static CONFIGS: OnceLock<Vec<Config>> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        ["ratelimit", "x_ratelimit", "none"]
            .iter()
            .map(|style| {
                // The tenant header takes its value from a JWT claim, a query parameter or
                // host metadata, by variant.
                let tenant = match *style {
                    "ratelimit" => "org",
                    "x_ratelimit" => "tenant",
                    _ => "sub",
                };
                let text = FILTER_CONFIG
                    .replace("STYLE", style)
                    .replace("TENANT_KEY", tenant);
                let text = if *style == "none" {
                    text.replace(r#""failure_mode": "deny", "failure_status": 503,"#, "")
                } else {
                    text
                };
                sluice_filter::config::parse(text.as_bytes())
                    .unwrap_or_else(|e| panic!("the fuzz filter configuration is refused: {e}"))
            })
            .collect()
    })
}

/// Shared data in a map, as a proxy keeps it. Ordered, so that no random hashing makes the
/// same input take different paths (which AFL++ reads as instability).
#[derive(Default)]
struct Shared(RefCell<BTreeMap<String, (Vec<u8>, u32)>>);

impl SharedStore for Shared {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.0.borrow().get(key).cloned()
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        let mut map = self.0.borrow_mut();
        let token = map.get(key).map_or(0, |(_, t)| *t);
        if cas != 0 && cas != token {
            return Err(SetError::CasMismatch);
        }
        map.insert(
            key.to_owned(),
            (value.to_vec(), token.wrapping_add(1).max(1)),
        );
        Ok(())
    }
}

const NOW_NS: u64 = 1_700_000_000_000_000_000;

/// `check::finish` over an answer, for descriptors as many as its statuses (or one fewer, to
/// reach the mismatch), in the configuration `selector` picks.
fn finish(selector: u8, answer: Result<check::Answer, Failure>) -> Outcome {
    let config = &filter_configs()[usize::from(selector) % 3];
    let count = answer.as_ref().map_or(1, |a| a.statuses.len().min(64));
    let count = if selector & 0x80 != 0 {
        count.saturating_sub(1)
    } else {
        count
    };
    let descriptors: Vec<Descriptor> = (0..count)
        .map(|i| Descriptor {
            def: i % config.descriptors.len(),
            entries: vec![("app_id".into(), format!("app-{i}"))],
        })
        .collect();
    let store = Shared::default();
    match check::finish(config, &descriptors, answer, Some(&store), NOW_NS) {
        Verdict::Allow(_) => Ok(()),
        Verdict::Reject(reply) => {
            assert!(
                (400..=599).contains(&reply.status),
                "a local reply with status {}",
                reply.status
            );
            Ok(())
        }
        Verdict::Invalid(reply) => {
            assert!(
                (400..=499).contains(&reply.status),
                "an invalid request answered with status {}",
                reply.status
            );
            Err(format!(
                "invalid: {}",
                String::from_utf8_lossy(&reply.body).trim()
            ))
        }
        Verdict::Failed { failure, .. } => Err(failure.detail),
    }
}

pub fn filter_json(data: &[u8]) -> Outcome {
    const STATUSES: [u16; 8] = [200, 429, 403, 402, 503, 400, 500, 0];
    const TYPES: [Option<&str>; 4] = [
        None,
        Some("application/json"),
        Some("application/problem+json"),
        Some(" Application/Problem+JSON; charset=utf-8"),
    ];
    let [head, ctype, body @ ..] = data else {
        return Err("too short".into());
    };
    let status = STATUSES[usize::from(head & 7)];
    let content_type = TYPES[usize::from(ctype & 3)];
    let answer = sluice_filter::json::decode_response(status, content_type, body);
    if let Err(f) = &answer {
        assert!(!f.detail.is_empty(), "a failure without detail");
    }
    finish(*head >> 3 | (head & 0x80), answer)
}

pub fn filter_proto(data: &[u8]) -> Outcome {
    let [selector, message @ ..] = data else {
        return Err("too short".into());
    };
    let answer = sluice_filter::proto::decode_response(message)
        .map_err(|e| Failure::new(ErrorKind::Malformed, e.to_string()));
    finish(*selector, answer)
}

/// A request as the host shows it: `name: value` lines are headers (pseudo-headers such as
/// `:path` included), `@a.b: value` lines are the host property `a.b`.
struct Request {
    headers: Vec<(String, Vec<u8>)>,
    properties: Vec<(String, Vec<u8>)>,
}

impl Request {
    fn parse(data: &[u8]) -> Self {
        let mut headers = Vec::new();
        let mut properties = Vec::new();
        for line in data.split(|&b| b == b'\n') {
            // A pseudo-header's name starts with the separator.
            let from = usize::from(line.first() == Some(&b':'));
            let Some(colon) = line[from..].iter().position(|&b| b == b':') else {
                continue;
            };
            let (name, value) = (&line[..from + colon], &line[from + colon + 1..]);
            let name = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
            let value = value.trim_ascii().to_vec();
            match name.strip_prefix('@') {
                // Host properties (dynamic metadata) may hold any bytes.
                Some(property) => properties.push((property.to_owned(), value)),
                // A proxy hands over header values that are valid ones: no control characters.
                None if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) => {}
                None => headers.push((name, value)),
            }
        }
        Self {
            headers,
            properties,
        }
    }
}

impl RequestData for Request {
    fn header(&mut self, name: &str) -> Option<Vec<u8>> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    fn property(&mut self, path: &[String]) -> Option<Vec<u8>> {
        let path = path.join(".");
        self.properties
            .iter()
            .find(|(n, _)| *n == path)
            .map(|(_, v)| v.clone())
    }
}

pub fn filter_request(data: &[u8]) -> Outcome {
    let config = &filter_configs()[usize::from(data.first().copied().unwrap_or(0)) % 3];
    let mut request = Request::parse(data);
    let built = match descriptor::build(config, &mut request) {
        Ok(built) => built,
        Err(invalid) => return reasoned(Err(invalid.detail(config))),
    };
    let (descriptors, dropped) = (built.descriptors, built.dropped);
    let mut bytes = config.domain.len();
    for d in &descriptors {
        for (k, v) in &d.entries {
            assert!(
                v.len() <= config.max_value_bytes,
                "an entry of {} bytes",
                v.len()
            );
            bytes += k.len() + v.len();
        }
    }
    assert!(
        bytes <= config.max_request_bytes,
        "descriptors of {bytes} bytes passed the filter"
    );
    // The tenant header goes to the upstream as it is: it must be a valid header value, or
    // a value with CR or LF would add headers of the client's choosing.
    if let Some(value) = check::tenant_value(config, &descriptors) {
        assert!(
            value
                .bytes()
                .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f)),
            "the tenant header would be set to {value:?}"
        );
    }
    let store = Shared::default();
    // Twice: the second one meets the buckets the first one filled.
    for _ in 0..2 {
        check::start(config, &descriptors, Some(&store), NOW_NS);
    }
    let wire: Vec<WireDescriptor<'_>> = descriptors
        .iter()
        .map(|d| WireDescriptor {
            entries: &d.entries,
            ..WireDescriptor::default()
        })
        .collect();
    // What the filter sends must be what Sluice reads: prost decodes the hand-made protobuf to
    // the same request, and the JSON is JSON with the same strings.
    let encoded = sluice_filter::proto::encode_request(&config.domain, &wire);
    let decoded = RateLimitRequest::decode(encoded.as_slice())
        .unwrap_or_else(|e| panic!("prost cannot decode the filter's request: {e}"));
    assert_eq!(decoded.domain, config.domain);
    let sent: Vec<Vec<(String, String)>> = decoded
        .descriptors
        .iter()
        .map(|d| {
            d.entries
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect()
        })
        .collect();
    let built: Vec<Vec<(String, String)>> = descriptors.iter().map(|d| d.entries.clone()).collect();
    assert_eq!(
        sent, built,
        "the protobuf request differs from the descriptors"
    );
    let json = sluice_filter::json::encode_request(&config.domain, &wire);
    let doc: serde_json::Value = serde_json::from_slice(&json)
        .unwrap_or_else(|e| panic!("the filter's JSON request is not JSON: {e}"));
    let sent: Vec<Vec<(String, String)>> = doc["descriptors"]
        .as_array()
        .map(|ds| {
            ds.iter()
                .map(|d| {
                    d["entries"]
                        .as_array()
                        .map(|es| {
                            es.iter()
                                .map(|e| {
                                    (
                                        e["key"].as_str().unwrap_or_default().to_owned(),
                                        e["value"].as_str().unwrap_or_default().to_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(sent, built, "the JSON request differs from the descriptors");
    // The filter's own JSON reader must read what its writer wrote.
    sluice_filter::value::parse(&json)
        .unwrap_or_else(|e| panic!("the filter cannot read its own JSON: {e}"));
    // Descriptors left out are the filter's refusals, with their reasons.
    if dropped.is_empty() {
        Ok(())
    } else {
        let reasons: Vec<String> = dropped
            .iter()
            .map(|d| format!("descriptor {} action {}: {}", d.def, d.action, d.reason))
            .collect();
        Err(reasons.join("; "))
    }
}
