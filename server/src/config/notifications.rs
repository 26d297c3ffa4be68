//! The `notifications:` block: which events a domain's platform team is told about, and where
//! they are pushed. It stands beside `domain:` in a rule file, and alone in the file of
//! `--notifications` (the sinks every domain's events go to).
//!
//! ```yaml
//! notifications:
//!   events: [near_limit, quota_exhausted]      # default: every event
//!   override_lead_secs: 600                    # override_expiring this long before the expiry
//!   webhooks:
//!     - url: https://hooks.example.com/sluice  # http or https
//!       signing_key_file: /etc/sluice/hook.key # HMAC-SHA256 key, at least 16 bytes
//!       timeout_ms: 2000
//!       max_attempts: 5
//!       queue_size: 1024
//!   redis_stream: { key: "sluice:events", max_len: 10000 }
//! ```
//!
//! This module holds what a block means once validated; [`super::notification_block`] reads
//! one.

use std::sync::Arc;
use std::time::Duration;

/// What Sluice tells a platform team about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A descriptor's most constraining limit crossed the near-limit ratio with one request.
    NearLimit,
    /// A request refused by a limit of kind `quota`.
    QuotaExhausted,
    /// A request refused by a concurrency pool.
    PoolFull,
    /// A request over a limit that its value's trial period let through ([`super::trial`]).
    TrialWouldBlock,
    /// The Redis store's circuit breaker opened: checks are answered by the failure policies.
    BreakerOpen,
    /// It closed again: checks are decided by Redis.
    BreakerClosed,
    /// A runtime override is about to lapse.
    OverrideExpiring,
    /// An adaptive limit was moved ([`super::adaptive`]): raised by the replica that decided it.
    AdaptiveChange,
}

impl EventKind {
    pub const ALL: [EventKind; 8] = [
        EventKind::NearLimit,
        EventKind::QuotaExhausted,
        EventKind::PoolFull,
        EventKind::TrialWouldBlock,
        EventKind::BreakerOpen,
        EventKind::BreakerClosed,
        EventKind::OverrideExpiring,
        EventKind::AdaptiveChange,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::NearLimit => "near_limit",
            EventKind::QuotaExhausted => "quota_exhausted",
            EventKind::PoolFull => "pool_full",
            EventKind::TrialWouldBlock => "trial_would_block",
            EventKind::BreakerOpen => "breaker_open",
            EventKind::BreakerClosed => "breaker_closed",
            EventKind::OverrideExpiring => "override_expiring",
            EventKind::AdaptiveChange => "adaptive_change",
        }
    }

    pub fn parse(name: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    const fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// A set of [`EventKind`]s, one bit each: the check path tests it with one AND.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EventSet(u16);

impl EventSet {
    pub const NONE: EventSet = EventSet(0);
    pub const ALL: EventSet = EventSet((1 << EventKind::ALL.len()) - 1);
    /// The events a check can raise.
    pub const REQUEST: EventSet = EventSet(
        EventKind::NearLimit.bit()
            | EventKind::QuotaExhausted.bit()
            | EventKind::PoolFull.bit()
            | EventKind::TrialWouldBlock.bit(),
    );

    pub fn of(kinds: impl IntoIterator<Item = EventKind>) -> EventSet {
        EventSet(kinds.into_iter().fold(0, |bits, k| bits | k.bit()))
    }

    pub const fn contains(self, kind: EventKind) -> bool {
        self.0 & kind.bit() != 0
    }

    pub const fn union(self, other: EventSet) -> EventSet {
        EventSet(self.0 | other.0)
    }

    pub const fn intersection(self, other: EventSet) -> EventSet {
        EventSet(self.0 & other.0)
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = EventKind> {
        EventKind::ALL
            .into_iter()
            .filter(move |k| self.contains(*k))
    }
}

/// An HMAC-SHA256 key, read from a file. Never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SigningKey(Arc<[u8]>);

impl SigningKey {
    pub fn new(bytes: &[u8]) -> Self {
        SigningKey(bytes.into())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

/// A webhook's address, checked: http or https, a host, no credentials.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WebhookUrl {
    pub https: bool,
    /// As written in the URL (an IPv6 address without its brackets).
    pub host: String,
    pub port: u16,
    /// The path and query sent in the request line (`/` when the URL has none).
    pub path_and_query: String,
}

impl WebhookUrl {
    /// `url` checked; `Err` says why it cannot be used.
    pub fn parse(url: &str) -> Result<WebhookUrl, String> {
        if !url.contains("://") {
            return Err(format!("`url` {url:?} needs http:// or https://"));
        }
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("`url` {url:?} is not a URL: {e}"))?;
        let https = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("https") => true,
            Some("http") => false,
            Some(other) => {
                return Err(format!(
                    "`url` {url:?}: the scheme must be http or https, not {other}"
                ));
            }
            None => return Err(format!("`url` {url:?} needs http:// or https://")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("`url` {url:?} names no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "`url` {url:?} carries credentials: receivers authenticate Sluice by the \
                 signature of each event, so leave them out"
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("`url` {url:?} names no host"));
        }
        Ok(WebhookUrl {
            https,
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            path_and_query: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        })
    }

    /// `host:port` (IPv6 in brackets): the sink's metric label, which leaves out the path since
    /// webhook paths often carry a secret token.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.bracketed_host(), self.port)
    }

    /// The `Host` header: the host, with the port unless it is the scheme's own.
    pub fn host_header(&self) -> String {
        match (self.https, self.port) {
            (true, 443) | (false, 80) => self.bracketed_host(),
            _ => self.authority(),
        }
    }

    fn bracketed_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

/// One webhook sink.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Webhook {
    pub url: WebhookUrl,
    pub signing_key: SigningKey,
    /// For one delivery attempt: connecting, sending and the receiver's answer.
    pub timeout: Duration,
    /// Attempts per event, the first included.
    pub max_attempts: u32,
    /// Events waiting for this sink, at most; one more is dropped (and counted).
    pub queue_size: usize,
}

/// The Redis stream sink: `XADD key MAXLEN ~ max_len * event <json>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RedisStream {
    pub key: String,
    pub max_len: u64,
}

/// A validated `notifications:` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notifications {
    pub events: EventSet,
    pub webhooks: Vec<Webhook>,
    pub redis_stream: Option<RedisStream>,
    /// `override_expiring` is sent once an override's expiry is this close.
    pub override_lead: Duration,
}

pub const DEFAULT_TIMEOUT_MS: u64 = 2_000;
pub const DEFAULT_MAX_ATTEMPTS: u64 = 5;
pub const DEFAULT_QUEUE_SIZE: u64 = 1_024;
pub const DEFAULT_MAX_LEN: u64 = 10_000;
pub const DEFAULT_OVERRIDE_LEAD_SECS: u64 = 600;
/// Webhooks in one block, at most: each has a delivery task and a queue of its own.
pub const MAX_WEBHOOKS: usize = 16;
/// The shortest signing key: half the HMAC-SHA256 block's worth of entropy, as for
/// `--hash-values-key-file`.
pub const MIN_KEY_BYTES: usize = 16;
