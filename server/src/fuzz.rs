//! Entry points for fuzzing: each runs one real path of the server on arbitrary bytes. Not part
//! of Sluice's API: built with the `fuzz` feature (and for tests) only.
//!
//! The targets themselves live in `fuzz/` (package `sluice-fuzz`; `docs/fuzzing.md` says how to
//! run them). Much of what they drive is private, so this module is their one way in. Each
//! function splits the input into the parts a transport would have delivered separately (a
//! request target, headers, a body) and then calls the code a rule file or a request goes
//! through, from the first byte it reads to the answer it gives, and nothing of its own:
//!
//! | function | path |
//! |---|---|
//! | [`config`] | rule files: YAML text → raw model → validated rule tree (`config::parse_many`, as a directory loads) |
//! | [`Server::grpc`] | a `ShouldRateLimit` message: gRPC framing (`grpc::unary`), prost decoding (or `grpc::lenient` when prost refuses it), `RlsService::should_rate_limit` (size bound, `from_proto`, `RateLimiter::check` with its validation) |
//! | [`Server::json`] | `POST /json` through the HTTP router |
//! | [`Server::auth`] | `/auth/{domain}` through the HTTP router: the domain and the headers |
//! | [`Server::leases`] | `POST /leases/{action}` through the HTTP router |
//! | [`Server::admin`] | `/admin/…` through the HTTP and admin routers, with a valid token |
//!
//! A [`Server`] is the rule set given, counters in memory on a clock that does not move, overrides
//! in memory and the admin API on: everything in process, so each input can get a fresh one and
//! a crash replays exactly.
//!
//! Every function returns `Ok` for an input the server accepted and `Err` with the reason it gave
//! (the gRPC status message, or the HTTP status with its body) for one it refused.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::BodyExt as _;
use prost::Message as _;
use tower::ServiceExt as _;

use crate::admin::{AdminState, AdminTokens};
use crate::clock::ManualClock;
use crate::config::RuleSet;
use crate::grpc::RlsService;
use crate::grpc::unary::{Unread, message_len};
use crate::http::HttpState;
use crate::limiter::{LimiterOptions, RateLimiter};
use crate::metrics::Metrics;
use crate::overrides::OverrideStore;
use crate::storage::backend::memory::MemoryStore;

/// The admin token [`Server::admin`] sends with every request.
pub const ADMIN_TOKEN: &str = "fuzz-admin-token-0123456789";

/// The line that separates the files of one [`config`] input.
pub const NEXT_FILE: &str = "#--- next file\n";
/// The first line of a [`config`] input whose files are loaded with `merge_domains`.
pub const MERGE: &str = "#merge\n";

/// Parses `data` as one load of rule files: one file, or several separated by [`NEXT_FILE`]
/// lines (as a directory is loaded), with `merge_domains` when it starts with [`MERGE`]. Both are
/// YAML comments, so each part is a rule file as it stands. Text that is not UTF-8 is refused as
/// the file reader refuses it.
pub fn config(data: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(data).map_err(|e| format!("not UTF-8: {e}"))?;
    let options = crate::config::LoadOptions {
        merge_domains: text.starts_with(MERGE),
        ..Default::default()
    };
    let files: Vec<(String, &str)> = text
        .split(NEXT_FILE)
        .enumerate()
        .map(|(i, part)| (format!("fuzz{i}.yaml"), part))
        .collect();
    crate::config::parse_many(&files, &options)
        .map(drop)
        .map_err(|e| e.to_string())
}

type Store = Arc<MemoryStore>;

/// One in-process server: gRPC service, HTTP router with the admin API nested, and the
/// single-threaded runtime their futures run on.
pub struct Server {
    rls: RlsService<Store>,
    http: Router,
    runtime: tokio::runtime::Runtime,
}

impl Server {
    /// A server deciding with `rules`, the default request bounds and the IETF draft's headers.
    pub fn new(rules: RuleSet) -> Result<Self, String> {
        // Fixed, so a crash replays with the same windows.
        let clock = Arc::new(ManualClock::new(Duration::from_secs(1_700_000_000)));
        let options = LimiterOptions {
            header_style: crate::limiter::HeaderStyle::Ietf,
            ..LimiterOptions::default()
        };
        let limiter = Arc::new(
            RateLimiter::new(
                rules,
                Arc::new(MemoryStore::new(10_000, clock)),
                Arc::new(Metrics::new()),
                options,
            )
            .with_top_consumers(),
        );
        // The default longest acquire wait (30 s) is kept: only a full pool makes an acquire
        // wait, and one input acquires at most one lease of a fresh server's pools.
        let http_state = HttpState::new(Arc::clone(&limiter), Arc::new(AtomicBool::new(true)));
        let admin = AdminState::new(
            Arc::clone(&limiter),
            AdminTokens::parse(&format!("fuzz:{ADMIN_TOKEN}"))?,
            Arc::new(OverrideStore::memory()),
        );
        let http = crate::http::router(Arc::new(http_state))
            .nest("/admin", crate::admin::router(Arc::new(admin)));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            rls: RlsService::new(limiter),
            http,
            runtime,
        })
    }

    /// `data` is the body of a `ShouldRateLimit` call as it arrives whole: the gRPC prefix (flag
    /// and length) and the message. An OVER_LIMIT answer is `Err` with its problem document (a
    /// request that cannot be used is answered that way too).
    pub fn grpc(&self, data: &[u8]) -> Result<(), String> {
        // As `unary::should_rate_limit` answers what `read_message` returns.
        let answer = match message_len(data, self.rls.max_message_bytes()) {
            Ok(None) => return Err("the request message is truncated".into()),
            Ok(Some(len)) => {
                // As `read_message` compares what it holds with the prefix's length.
                let message = &data[5..];
                if message.len() < len {
                    return Err("the request message is truncated".into());
                }
                if message.len() > len {
                    return Err("a unary call carries exactly one message".into());
                }
                match RateLimitRequest::decode(message) {
                    Ok(request) => self
                        .runtime
                        .block_on(self.rls.should_rate_limit(&HeaderMap::new(), request)),
                    Err(e) => self.rls.undecodable(message, &e),
                }
            }
            Err(Unread::Refused(status)) => Err(self.rls.refuse(status)),
            Err(Unread::Oversized(len)) => Ok(self.rls.oversized(len)),
            Err(Unread::Gone) => return Err("the client left".into()),
        };
        match answer {
            Ok(response) if response.overall_code == Code::OverLimit as i32 => Err(format!(
                "OVER_LIMIT: {}",
                String::from_utf8_lossy(&response.raw_body)
            )),
            Ok(_) => Ok(()),
            Err(status) => Err(status.message().to_owned()),
        }
    }

    /// `data` is the body of a `POST /json`.
    pub fn json(&self, data: &[u8]) -> Result<(), String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        self.call(Method::POST, "/json", headers, data)
    }

    /// `data` is the domain (the path segment, any bytes), a newline, then the request's headers
    /// as `name: value` lines. Lines that are not a valid header are left out, as an HTTP server
    /// would have refused them.
    pub fn auth(&self, data: &[u8]) -> Result<(), String> {
        let (domain, rest) = split_line(data);
        let target = format!("/auth/{}", percent_encode(domain));
        self.call(Method::GET, &target, header_lines(rest), &[])
    }

    /// `data` is the action (the path segment, any bytes), a newline, then the body of a
    /// `POST /leases/{action}`.
    pub fn leases(&self, data: &[u8]) -> Result<(), String> {
        let (action, body) = split_line(data);
        let target = format!("/leases/{}", percent_encode(action));
        self.call(Method::POST, &target, HeaderMap::new(), body)
    }

    /// `data` is `METHOD target` (the target after `/admin/`, query included), a newline, then
    /// the body. The request carries the admin token.
    pub fn admin(&self, data: &[u8]) -> Result<(), String> {
        let (line, body) = split_line(data);
        let (method, target) = match line.iter().position(|&b| b == b' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &b""[..]),
        };
        let method = Method::from_bytes(method).unwrap_or(Method::POST);
        let target = format!("/admin/{}", encode_target(target));
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {ADMIN_TOKEN}")).map_err(|e| e.to_string())?,
        );
        self.call(method, &target, headers, body)
    }

    /// Sends one request through the HTTP router; `Err` with the status and body when it is
    /// answered with 400 or above.
    fn call(
        &self,
        method: Method,
        target: &str,
        headers: HeaderMap,
        body: &[u8],
    ) -> Result<(), String> {
        let uri: Uri = target
            .parse()
            .map_err(|e| format!("not a request target: {e}"))?;
        let mut request = Request::new(Body::from(body.to_vec()));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        self.runtime.block_on(async {
            let response = match self.http.clone().oneshot(request).await {
                Ok(response) => response,
                Err(infallible) => match infallible {},
            };
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("{status}: the answer could not be read: {e}"))?
                .to_bytes();
            if status.as_u16() >= 400 {
                return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
            }
            Ok(())
        })
    }
}

/// The first line of `data` and what follows it.
fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// `name: value` lines as headers; a line that is not one is left out.
fn header_lines(data: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

/// Every byte but unreserved ones percent-encoded: one path segment that the router decodes
/// back to `bytes`.
fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A path and query as a client would send them: bytes that may not appear in a request target
/// percent-encoded, the rest (`/`, `?`, `&`, `=`, `%`) as given.
fn encode_target(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_graphic() && !b"#\"<>\\^`{|}".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn server() -> Server {
        let rules = crate::config::parse_str(
            "rules.yaml",
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: second, requests_per_unit: 100 }\n\
             http_descriptors:\n  - entries:\n      - { key: k, header: x-k }\n",
        )
        .unwrap();
        Server::new(rules).unwrap()
    }

    fn framed(request: &RateLimitRequest) -> Vec<u8> {
        let message = request.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(&message);
        out
    }

    #[test]
    fn each_path_accepts_a_good_request_and_says_why_it_refuses_a_bad_one() {
        use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{
            RateLimitDescriptor, rate_limit_descriptor::Entry,
        };
        let s = server();
        let request = RateLimitRequest {
            domain: "d".into(),
            descriptors: vec![RateLimitDescriptor {
                entries: vec![Entry {
                    key: "k".into(),
                    value: "v".into(),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        s.grpc(&framed(&request)).unwrap();
        let e = s.grpc(&framed(&RateLimitRequest::default())).unwrap_err();
        assert!(e.contains("domain"), "{e}");
        let e = s.grpc(&[2, 0, 0, 0, 0]).unwrap_err();
        assert!(e.contains("compressed flag"), "{e}");
        // A value that is not UTF-8 is answered OVER_LIMIT with the reason (`grpc::lenient`).
        let mut bad = framed(&request);
        let at = bad.len() - 1;
        bad[at] = 0xff;
        let e = s.grpc(&bad).unwrap_err();
        assert!(
            e.starts_with("OVER_LIMIT") && e.contains("not UTF-8"),
            "{e}"
        );
        let e = s.grpc(&[0, 0xff, 0xff, 0xff, 0xff]).unwrap_err();
        assert!(e.starts_with("OVER_LIMIT") && e.contains("bytes"), "{e}");

        s.json(br#"{"domain":"d","descriptors":[{"entries":[{"key":"k","value":"v"}]}]}"#)
            .unwrap();
        let e = s.json(b"{").unwrap_err();
        assert!(e.starts_with("400"), "{e}");

        s.auth(b"d\nx-k: v\n").unwrap();
        let e = s.auth(b"nope\nx-k: v\n").unwrap_err();
        assert!(e.starts_with("404"), "{e}");
        let e = s.auth(b"d\xff\nx-k: v\n").unwrap_err();
        assert!(e.starts_with("400") && e.contains("UTF-8"), "{e}");
        // NGINX passes on only 2xx, 401 and 403: the problem document says 400.
        let e = s.auth(b"d\nx-k: \xff\n").unwrap_err();
        assert!(
            e.starts_with("403") && e.contains("x-k is not valid UTF-8"),
            "{e}"
        );

        let e = s.leases(b"renew\n{}").unwrap_err();
        assert!(e.starts_with("400"), "{e}");

        s.admin(
            br#"POST counters
{"domain":"d","descriptor":[{"key":"k","value":"v"}]}"#,
        )
        .unwrap();
        s.admin(b"GET top?rule=d.k&limit=3").unwrap();
        let e = s.admin(b"GET top?limit=%zz").unwrap_err();
        assert!(e.contains("malformed query"), "{e}");

        let e = config(b"domain: [").unwrap_err();
        assert!(
            e.starts_with("fuzz0.yaml:") && e.contains("invalid YAML"),
            "{e}"
        );
        let two = "domain: a\n#--- next file\ndomain: a\n";
        let e = config(two.as_bytes()).unwrap_err();
        assert!(e.contains("fuzz1.yaml") && e.contains("fuzz0.yaml"), "{e}");
        config(format!("#merge\n{two}").as_bytes()).unwrap();
        let e = config(b"domain: \xff").unwrap_err();
        assert!(e.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn targets_are_encoded_so_the_router_sees_the_bytes_given() {
        assert_eq!(percent_encode(b"a b/\xff"), "a%20b%2F%FF");
        assert_eq!(encode_target(b"top?rule=a b#"), "top?rule=a%20b%23");
        let h = header_lines(b"x-a: 1\nnot a header\nx-b:\t\xff \n: empty name\n");
        assert_eq!(h.len(), 2);
        assert_eq!(h["x-b"].as_bytes(), b"\xff");
    }
}
