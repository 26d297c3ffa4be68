//! Every field a rule file may hold, declared once: which mapping it goes in and, inside a
//! `rate_limit`, which kinds of limit it applies to.
//!
//! The reader checks each mapping's keys against [`Place::fields`] (an unknown key is an error,
//! a key from another mapping is reported with where it belongs), and each limit's keys against
//! [`LIMIT_FIELDS`] once it knows the limit's [`Shape`].

use super::yaml::{Mark, Yaml};

/// The mappings of the format, each with its own fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    Top,
    Descriptor,
    RateLimit,
    Replaces,
    HttpDescriptor,
    HttpEntry,
    Notifications,
    Webhook,
    RedisStream,
    /// The top level of the `--notifications` file.
    NotificationsFile,
    /// A limit's `adaptive` block.
    Adaptive,
    /// A fair-share limit's `standing` block.
    Standing,
}

const TOP: &[&str] = &[
    "domain",
    "descriptors",
    "http_descriptors",
    "failure_mode",
    "shard_by",
    "notifications",
];
const DESCRIPTOR: &[&str] = &[
    "key",
    "value",
    "rate_limit",
    "rate_limits",
    "descriptors",
    "shadow_mode",
    "quota_mode",
    "detailed_metric",
    "value_to_metric",
    "share_threshold",
    "metadata",
    "trial",
];
const REPLACES: &[&str] = &["name"];
const HTTP_DESCRIPTOR: &[&str] = &["entries", "hits_addend_header"];
const HTTP_ENTRY: &[&str] = &["key", "header", "value"];
const NOTIFICATIONS: &[&str] = &["events", "webhooks", "redis_stream", "override_lead_secs"];
const WEBHOOK: &[&str] = &[
    "url",
    "signing_key_file",
    "timeout_ms",
    "max_attempts",
    "queue_size",
];
const REDIS_STREAM: &[&str] = &["key", "max_len"];
const NOTIFICATIONS_FILE: &[&str] = &["notifications"];
const ADAPTIVE: &[&str] = &[
    "signal",
    "target",
    "quantile",
    "min",
    "max",
    "interval",
    "min_reports",
];
const STANDING: &[&str] = &["penalty", "after", "recover_after", "keep_tier_weights"];

/// What a `rate_limit` mapping describes, told by its fields: `unlimited: true`, `concurrency`,
/// `capacity`, or else a counted limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// `unit` and `requests_per_unit`, with its algorithm.
    Counted,
    /// `unit` and `capacity`, shared by weight.
    FairShare,
    /// `concurrency` leases.
    Concurrency,
    /// `unlimited: true`.
    Unlimited,
}

use Shape::{Concurrency, Counted, FairShare, Unlimited};

/// A field of `rate_limit` and the shapes it applies to.
pub(super) struct LimitField {
    pub name: &'static str,
    pub shapes: &'static [Shape],
}

const fn field(name: &'static str, shapes: &'static [Shape]) -> LimitField {
    LimitField { name, shapes }
}

const ALL: &[Shape] = &[Counted, FairShare, Concurrency, Unlimited];
const WINDOWED: &[Shape] = &[Counted, FairShare];
const ENFORCED: &[Shape] = &[Counted, FairShare, Concurrency];

/// The fields of `rate_limit` (and of each entry of `rate_limits`), in the order problems with them
/// are reported.
pub(super) const LIMIT_FIELDS: &[LimitField] = &[
    field("unit", WINDOWED),
    // Given with `unlimited: true`, the reference ignores it; so does Sluice.
    field("requests_per_unit", &[Counted, Unlimited]),
    field("unlimited", ALL),
    field("name", ALL),
    field("replaces", ALL),
    field("unit_multiplier", WINDOWED),
    field("algorithm", &[Counted]),
    field("burst", WINDOWED),
    field("calendar", &[Counted]),
    field("kind", ENFORCED),
    field("over_limit_status", ENFORCED),
    field("concurrency", &[Concurrency]),
    field("lease_ttl", &[Concurrency]),
    field("capacity", &[FairShare]),
    field("weights", &[FairShare, Concurrency]),
    field("weight", &[FairShare, Concurrency]),
    field("queue", &[Concurrency, FairShare]),
    field("overflow", &[Counted]),
    field("adaptive", ENFORCED),
    field("standing", &[FairShare]),
];

impl Shape {
    /// Why a field that does not apply to this shape was refused.
    pub fn refusal(self, field: &LimitField) -> String {
        let name = field.name;
        match (self, field.shapes) {
            (Unlimited, _) => format!("`{name}` must not be set together with `unlimited: true`"),
            (Concurrency, _) => format!(
                "`{name}` does not apply to a concurrency pool: `concurrency` limits how many \
                 leases are held at once, not a rate"
            ),
            (_, [Concurrency]) => format!("`{name}` applies only to a pool with `concurrency`"),
            (_, [Concurrency, FairShare]) => {
                format!("`{name}` applies only to a pool: one with `concurrency` or a `capacity`")
            }
            (_, [FairShare, Concurrency]) => format!(
                "`{name}` applies only to a fair-share pool (with a `capacity`) or a concurrency \
                 pool with a `queue`"
            ),
            (_, [FairShare]) => {
                format!("`{name}` applies only to a fair-share pool, one with a `capacity`")
            }
            (FairShare, _) => {
                let why = match name {
                    "requests_per_unit" => {
                        "`capacity` is the pool's limit per window: give one or the other"
                    }
                    "overflow" => "`overflow` applies to counted limits, not to a fair-share pool",
                    "algorithm" => {
                        "a fair-share pool counts fixed windows of its `unit`; `algorithm` does \
                         not apply"
                    }
                    _ => "a fair-share pool counts fixed windows of its `unit`",
                };
                format!("`{name}` with `capacity`: {why}")
            }
            (Counted, _) => format!("`{name}` does not apply to a counted limit"),
        }
    }
}

impl Place {
    pub fn fields(self) -> Vec<&'static str> {
        match self {
            Place::Top => TOP.to_vec(),
            Place::Descriptor => DESCRIPTOR.to_vec(),
            Place::RateLimit => LIMIT_FIELDS.iter().map(|f| f.name).collect(),
            Place::Replaces => REPLACES.to_vec(),
            Place::HttpDescriptor => HTTP_DESCRIPTOR.to_vec(),
            Place::HttpEntry => HTTP_ENTRY.to_vec(),
            Place::Notifications => NOTIFICATIONS.to_vec(),
            Place::Webhook => WEBHOOK.to_vec(),
            Place::RedisStream => REDIS_STREAM.to_vec(),
            Place::NotificationsFile => NOTIFICATIONS_FILE.to_vec(),
            Place::Adaptive => ADAPTIVE.to_vec(),
            Place::Standing => STANDING.to_vec(),
        }
    }

    fn holds(self, name: &str) -> bool {
        match self {
            Place::RateLimit => LIMIT_FIELDS.iter().any(|f| f.name == name),
            _ => self.fields().contains(&name),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Place::Top => "at the top level",
            Place::Descriptor => "in a descriptor",
            Place::RateLimit => "in `rate_limit`",
            Place::Replaces => "in a `replaces` entry",
            Place::HttpDescriptor => "in an entry of `http_descriptors`",
            Place::HttpEntry => "in an HTTP descriptor's entry",
            Place::Notifications => "in `notifications`",
            Place::Webhook => "in a webhook",
            Place::RedisStream => "in `redis_stream`",
            Place::NotificationsFile => "at the top level of a notifications file",
            Place::Adaptive => "in `adaptive`",
            Place::Standing => "in `standing`",
        }
    }

    /// Where a field that is not allowed here does belong, if anywhere.
    pub fn home_of(self, field: &str) -> Option<&'static str> {
        // HTTP descriptors share `key` and `value` with rule descriptors (and `redis_stream` its
        // `key`): only point there from rule descriptors, where a stray `header` is the likely
        // mistake.
        if matches!(
            self,
            Place::HttpDescriptor
                | Place::HttpEntry
                | Place::Notifications
                | Place::Webhook
                | Place::RedisStream
                | Place::NotificationsFile
                | Place::Adaptive
                | Place::Standing
        ) {
            return None;
        }
        [
            (Place::RateLimit, "inside a descriptor's `rate_limit`"),
            (
                Place::Descriptor,
                "on a descriptor (an entry of `descriptors`)",
            ),
            (Place::Top, "at the top level of the file"),
        ]
        .into_iter()
        .find(|(home, _)| *home != self && home.holds(field))
        .map(|(_, where_)| where_)
    }
}

/// The fields of one mapping, looked up by name.
pub(super) struct Fields<'y> {
    pub at: Mark,
    pub(super) entries: Vec<(&'y str, &'y Yaml)>,
}

impl<'y> Fields<'y> {
    pub fn get(&self, name: &str) -> Option<&'y Yaml> {
        self.entries
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
    }

    /// The given fields of a limit that do not apply to its shape, in [`LIMIT_FIELDS`] order.
    pub fn not_for(&self, shape: Shape) -> impl Iterator<Item = (&'static LimitField, &'y Yaml)> {
        LIMIT_FIELDS
            .iter()
            .filter(move |f| !f.shapes.contains(&shape))
            .filter_map(|f| self.get(f.name).map(|y| (f, y)))
    }
}
