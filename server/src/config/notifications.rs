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
//! Reading is in two steps, as for the rest of a file: [`Reader::notifications`] checks the
//! block's shape where each field stands, then [`resolve`] reads the signing keys (relative paths
//! from the rule file's directory) and refuses a `redis_stream` a memory store cannot serve. Keys
//! are read at every load, so a rotated key takes effect with the next reload.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::error::{ConfigError, Position};
use super::fields::Place;
use super::parse::{Reader, Spanned};
use super::yaml::{Kind as YamlKind, Mark, Yaml};

/// What Sluice tells a platform team about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A descriptor's most constraining limit crossed the near-limit ratio with one request.
    NearLimit,
    /// A request refused by a limit of kind `quota`.
    QuotaExhausted,
    /// A request refused by a concurrency pool.
    PoolFull,
    /// The Redis store's circuit breaker opened: checks are answered by the failure policies.
    BreakerOpen,
    /// It closed again: checks are decided by Redis.
    BreakerClosed,
    /// A runtime override is about to lapse.
    OverrideExpiring,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::NearLimit,
        EventKind::QuotaExhausted,
        EventKind::PoolFull,
        EventKind::BreakerOpen,
        EventKind::BreakerClosed,
        EventKind::OverrideExpiring,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::NearLimit => "near_limit",
            EventKind::QuotaExhausted => "quota_exhausted",
            EventKind::PoolFull => "pool_full",
            EventKind::BreakerOpen => "breaker_open",
            EventKind::BreakerClosed => "breaker_closed",
            EventKind::OverrideExpiring => "override_expiring",
        }
    }

    pub fn parse(name: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// Names reserved for features not built yet: refused with why, so a file written for them does
/// not load as if they worked.
const RESERVED: &[(&str, &str)] = &[
    ("trial_would_block", "trial periods"),
    ("adaptive_change", "adaptive limits"),
];

/// A set of [`EventKind`]s, one bit each: the check path tests it with one AND.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EventSet(u8);

impl EventSet {
    pub const NONE: EventSet = EventSet(0);
    pub const ALL: EventSet = EventSet((1 << EventKind::ALL.len()) - 1);
    /// The events a check can raise.
    pub const REQUEST: EventSet = EventSet(
        EventKind::NearLimit.bit() | EventKind::QuotaExhausted.bit() | EventKind::PoolFull.bit(),
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

    /// `host:port` (IPv6 in brackets): the `Host` header, and the sink's metric label, which
    /// leaves out the path since webhook paths often carry a secret token.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
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
/// Past this a "key" file is something else (a certificate bundle, a binary).
const MAX_KEY_BYTES: u64 = 64 * 1024;

/// A block as read, before its key files are: every part that could be read, and whether all
/// could (its key files are still read when not, so that one load reports every problem).
#[derive(Debug)]
pub(super) struct RawNotifications {
    pub complete: bool,
    pub events: EventSet,
    pub webhooks: Vec<RawWebhook>,
    pub redis_stream: Option<Spanned<RedisStream>>,
    pub override_lead: Duration,
}

/// A webhook's fields; `None` where one was missing or wrong (already reported).
#[derive(Debug)]
pub(super) struct RawWebhook {
    pub url: Option<WebhookUrl>,
    pub key_file: Option<Spanned<PathBuf>>,
    pub timeout: Option<Duration>,
    pub max_attempts: Option<u32>,
    pub queue_size: Option<usize>,
}

impl RawWebhook {
    fn is_whole(&self) -> bool {
        self.url.is_some()
            && self.key_file.is_some()
            && self.timeout.is_some()
            && self.max_attempts.is_some()
            && self.queue_size.is_some()
    }
}

impl Reader {
    /// The `notifications:` mapping; `None` when it is not one (every problem reported).
    pub(super) fn notifications(&mut self, y: &Yaml) -> Option<RawNotifications> {
        if !matches!(y.kind, YamlKind::Map(_)) {
            self.invalid(
                y.at,
                format!(
                    "`notifications` must be a mapping with `webhooks` or `redis_stream`, found {}",
                    y.describe()
                ),
            );
            return None;
        }
        let f = self.fields(y, Place::Notifications);
        let events = match f.get("events") {
            None => Some(EventSet::ALL),
            Some(list) => self.events(list),
        };
        let override_lead = match f.get("override_lead_secs") {
            None => Some(DEFAULT_OVERRIDE_LEAD_SECS),
            Some(v) => self.integer(v, "override_lead_secs", 1, 30 * 86_400),
        };
        let mut complete = true;
        let mut webhooks = Vec::new();
        if let Some(list) = f.get("webhooks") {
            match &list.kind {
                YamlKind::Seq(items) if items.len() > MAX_WEBHOOKS => {
                    self.invalid(
                        list.at,
                        format!("at most {MAX_WEBHOOKS} webhooks per `notifications` block"),
                    );
                    complete = false;
                }
                YamlKind::Seq(items) => {
                    for item in items {
                        match self.webhook(item) {
                            Some(w) => webhooks.push(w),
                            None => complete = false,
                        }
                    }
                    complete &= webhooks.iter().all(RawWebhook::is_whole);
                }
                _ => {
                    self.invalid(
                        list.at,
                        format!(
                            "`webhooks` must be a list of mappings with `url` and \
                             `signing_key_file`, found {}",
                            list.describe()
                        ),
                    );
                    complete = false;
                }
            }
        }
        let redis_stream = match f.get("redis_stream") {
            None => None,
            Some(s) => {
                let stream = self.redis_stream(s);
                complete &= stream.is_some();
                stream
            }
        };
        if complete && webhooks.is_empty() && redis_stream.is_none() {
            self.invalid(
                f.at,
                "`notifications` needs a sink: `webhooks` (a list) or `redis_stream`",
            );
            complete = false;
        }
        Some(RawNotifications {
            complete: complete && events.is_some() && override_lead.is_some(),
            events: events.unwrap_or(EventSet::ALL),
            webhooks,
            redis_stream,
            override_lead: Duration::from_secs(override_lead.unwrap_or_default()),
        })
    }

    /// The top level of a `--notifications` file: a `notifications` block and nothing else.
    pub(super) fn notifications_file(&mut self, root: &Yaml) -> Option<RawNotifications> {
        if !matches!(root.kind, YamlKind::Map(_)) {
            self.invalid(
                root.at,
                format!(
                    "a notifications file must be a mapping with `notifications`, found {}",
                    root.describe()
                ),
            );
            return None;
        }
        let f = self.fields(root, Place::NotificationsFile);
        match f.get("notifications") {
            Some(block) => self.notifications(block),
            None => {
                self.invalid(f.at, "missing required field `notifications`");
                None
            }
        }
    }

    fn events(&mut self, y: &Yaml) -> Option<EventSet> {
        let YamlKind::Seq(items) = &y.kind else {
            self.invalid(
                y.at,
                format!(
                    "`events` must be a list of event names, found {}",
                    y.describe()
                ),
            );
            return None;
        };
        if items.is_empty() {
            self.invalid(
                y.at,
                "`events` names no event: leave it out for every event",
            );
            return None;
        }
        let mut kinds = Vec::with_capacity(items.len());
        let mut complete = true;
        for item in items {
            let Some(name) = self.string(item, "events") else {
                complete = false;
                continue;
            };
            if let Some(kind) = EventKind::parse(&name) {
                kinds.push(kind);
            } else if let Some((_, feature)) = RESERVED.iter().find(|(n, _)| *n == name) {
                self.invalid(
                    item.at,
                    format!("event `{name}` comes with {feature}, which are not built yet"),
                );
                complete = false;
            } else {
                let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                self.invalid(
                    item.at,
                    format!(
                        "unknown event `{name}`; expected one of: {}",
                        names.join(", ")
                    ),
                );
                complete = false;
            }
        }
        complete.then(|| EventSet::of(kinds))
    }

    fn webhook(&mut self, y: &Yaml) -> Option<RawWebhook> {
        if !matches!(y.kind, YamlKind::Map(_)) {
            self.invalid(
                y.at,
                format!(
                    "each webhook must be a mapping with `url` and `signing_key_file`, found {}",
                    y.describe()
                ),
            );
            return None;
        }
        let f = self.fields(y, Place::Webhook);
        let url = match f.get("url") {
            None => {
                self.invalid(f.at, "a webhook needs `url`");
                None
            }
            Some(u) => self
                .string(u, "url")
                .and_then(|text| match WebhookUrl::parse(&text) {
                    Ok(url) => Some(url),
                    Err(why) => {
                        self.invalid(u.at, why);
                        None
                    }
                }),
        };
        let key_file = match f.get("signing_key_file") {
            None => {
                self.invalid(
                    f.at,
                    "a webhook needs `signing_key_file`: every event is signed (HMAC-SHA256)",
                );
                None
            }
            Some(k) => self
                .string(k, "signing_key_file")
                .filter(|p| !p.is_empty())
                .map(|p| Spanned {
                    value: PathBuf::from(p),
                    at: k.at,
                }),
        };
        let mut number = |field: &str, default: u64, min: u64, max: u64| match f.get(field) {
            None => Some(default),
            Some(v) => self.integer(v, field, min, max),
        };
        let timeout = number("timeout_ms", DEFAULT_TIMEOUT_MS, 1, 60_000);
        let attempts = number("max_attempts", DEFAULT_MAX_ATTEMPTS, 1, 20);
        let queue = number("queue_size", DEFAULT_QUEUE_SIZE, 1, 100_000);
        Some(RawWebhook {
            url,
            key_file,
            timeout: timeout.map(Duration::from_millis),
            max_attempts: attempts.map(|n| n as u32),
            queue_size: queue.map(|n| n as usize),
        })
    }

    fn redis_stream(&mut self, y: &Yaml) -> Option<Spanned<RedisStream>> {
        if !matches!(y.kind, YamlKind::Map(_)) {
            self.invalid(
                y.at,
                format!(
                    "`redis_stream` must be a mapping with `key` (and `max_len`), found {}",
                    y.describe()
                ),
            );
            return None;
        }
        let f = self.fields(y, Place::RedisStream);
        let key = match f.get("key") {
            None => {
                self.invalid(f.at, "`redis_stream` needs `key`, the stream's name");
                None
            }
            Some(k) => match self.string(k, "key") {
                Some(key) if !key.is_empty() => Some(key),
                Some(_) => {
                    self.invalid(k.at, "`redis_stream` `key` must not be empty");
                    None
                }
                None => None,
            },
        };
        let max_len = match f.get("max_len") {
            None => Some(DEFAULT_MAX_LEN),
            Some(v) => self.integer(v, "max_len", 1, 1_000_000_000),
        };
        Some(Spanned {
            value: RedisStream {
                key: key?,
                max_len: max_len?,
            },
            at: y.at,
        })
    }
}

/// `raw` from the file at `path` made whole: each webhook's key read (a relative path from the
/// file's directory), and a `redis_stream` refused when `memory_store` (no Redis to write to).
pub(super) fn resolve(
    path: &Path,
    raw: RawNotifications,
    memory_store: bool,
    errors: &mut Vec<ConfigError>,
) -> Option<Notifications> {
    let at = |mark: Mark| Position {
        path: path.to_path_buf(),
        line: mark.line,
        column: mark.column,
    };
    let start = errors.len();
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut webhooks = Vec::with_capacity(raw.webhooks.len());
    for w in raw.webhooks {
        // Every key file given is read, whatever else is wrong with its webhook.
        let Some(key_file) = w.key_file else {
            continue;
        };
        let key = match read_key(&dir.join(&key_file.value)) {
            Ok(key) => key,
            Err(reason) => {
                errors.push(ConfigError::Invalid {
                    at: at(key_file.at),
                    reason,
                });
                continue;
            }
        };
        if let (Some(url), Some(timeout), Some(max_attempts), Some(queue_size)) =
            (w.url, w.timeout, w.max_attempts, w.queue_size)
        {
            webhooks.push(Webhook {
                url,
                signing_key: key,
                timeout,
                max_attempts,
                queue_size,
            });
        }
    }
    if let Some(stream) = &raw.redis_stream
        && memory_store
    {
        errors.push(ConfigError::Invalid {
            at: at(stream.at),
            reason: "`redis_stream` needs the Redis counter store (--backend redis): the memory \
                     store has no Redis to write the stream to"
                .into(),
        });
    }
    (raw.complete && errors.len() == start).then(|| Notifications {
        events: raw.events,
        webhooks,
        redis_stream: raw.redis_stream.map(|s| s.value),
        override_lead: raw.override_lead,
    })
}

/// The key in `file`: its bytes, less one trailing newline (what `echo` and most editors add).
fn read_key(file: &Path) -> Result<SigningKey, String> {
    use std::io::Read as _;
    let shown = file.display();
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_KEY_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read signing_key_file {shown}: {e}"))?;
    if bytes.len() as u64 > MAX_KEY_BYTES {
        return Err(format!(
            "signing_key_file {shown} is larger than {} KiB: not a key",
            MAX_KEY_BYTES / 1024
        ));
    }
    let key = bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .unwrap_or(&bytes);
    if key.len() < MIN_KEY_BYTES {
        return Err(format!(
            "the signing key in {shown} is {} bytes; it needs at least {MIN_KEY_BYTES}",
            key.len()
        ));
    }
    Ok(SigningKey::new(key))
}
