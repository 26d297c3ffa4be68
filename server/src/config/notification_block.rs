//! Reading a `notifications:` block ([`super::notifications`]), in two steps as for the rest of a
//! file: [`Reader::notifications`] checks the block's shape where each field stands, then
//! [`resolve`] reads the signing keys (relative paths from the rule file's directory) and refuses
//! a `redis_stream` a memory store cannot serve. Keys are read at every load, so a rotated key
//! takes effect with the next reload. Every problem of a block is reported in one load, its key
//! files included.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{ConfigError, Position};
use super::fields::Place;
use super::notifications::{
    DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_LEN, DEFAULT_OVERRIDE_LEAD_SECS, DEFAULT_QUEUE_SIZE,
    DEFAULT_TIMEOUT_MS, EventKind, EventSet, MAX_WEBHOOKS, MIN_KEY_BYTES, Notifications,
    RedisStream, SigningKey, Webhook, WebhookUrl,
};
use super::parse::{Reader, Spanned};
use super::yaml::{Kind as YamlKind, Mark, Yaml};

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
/// Only a regular file (symlinks followed) is read: a FIFO or a device named by mistake would
/// block or never end the read of every reload.
fn read_key(file: &Path) -> Result<SigningKey, String> {
    use std::io::Read as _;
    let shown = file.display();
    match std::fs::metadata(file) {
        Ok(meta) if !meta.is_file() => {
            return Err(format!("signing_key_file {shown} is not a regular file"));
        }
        Err(e) => return Err(format!("cannot read signing_key_file {shown}: {e}")),
        Ok(_) => {}
    }
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
