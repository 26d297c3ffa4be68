//! The validated, immutable rule tree. Built once per load by [`super::parse`], shared behind an
//! `Arc` and swapped atomically on reload; never mutated while serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::algorithm::calendar::CalendarUnit;
pub use crate::algorithm::{Algorithm, Period, Policy};

/// A window length, as Envoy names it. MONTH and YEAR are fixed 30- and 365-day windows, as in
/// envoyproxy/ratelimit, so counters line up with the reference service's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Unit {
    pub const fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            Unit::Week => 7 * 86_400,
            Unit::Month => 30 * 86_400,
            Unit::Year => 365 * 86_400,
        }
    }

    pub const fn window(self) -> Duration {
        Duration::from_secs(self.seconds())
    }

    /// The name used in YAML (case-insensitive on input) and in proto3 JSON (upper case).
    pub const fn as_str(self) -> &'static str {
        match self {
            Unit::Second => "SECOND",
            Unit::Minute => "MINUTE",
            Unit::Hour => "HOUR",
            Unit::Day => "DAY",
            Unit::Week => "WEEK",
            Unit::Month => "MONTH",
            Unit::Year => "YEAR",
        }
    }

    pub fn parse(name: &str) -> Option<Unit> {
        const ALL: [Unit; 7] = [
            Unit::Second,
            Unit::Minute,
            Unit::Hour,
            Unit::Day,
            Unit::Week,
            Unit::Month,
            Unit::Year,
        ];
        ALL.into_iter()
            .find(|u| u.as_str().eq_ignore_ascii_case(name))
    }

    /// `envoy.service.ratelimit.v3.RateLimitResponse.RateLimit.Unit` number.
    pub const fn proto_response_unit(self) -> i32 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 2,
            Unit::Hour => 3,
            Unit::Day => 4,
            Unit::Month => 5,
            Unit::Year => 6,
            Unit::Week => 7,
        }
    }

    /// `envoy.type.v3.RateLimitUnit` (the descriptor override enum): it has no WEEK.
    pub const fn from_override_unit(n: i32) -> Option<Unit> {
        match n {
            1 => Some(Unit::Second),
            2 => Some(Unit::Minute),
            3 => Some(Unit::Hour),
            4 => Some(Unit::Day),
            5 => Some(Unit::Month),
            6 => Some(Unit::Year),
            _ => None,
        }
    }
}

/// Whether hitting a limit is a short throttle (retry soon) or a spent quota (retry after a
/// reset, or pay): clients and the problem document tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Throttle,
    Quota,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Throttle => "throttle",
            Kind::Quota => "quota",
        }
    }

    /// The default for a window: a throttle below one day, a quota from one day up.
    pub fn for_window(secs: u64) -> Kind {
        if secs < 86_400 {
            Kind::Throttle
        } else {
            Kind::Quota
        }
    }
}

/// One limit: a `rate_limit`, or one entry of `rate_limits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Reported as `current_limit.name`, used as the policy name in headers and problem
    /// documents, and the name `replaces` refers to.
    pub name: Option<String>,
    pub requests_per_unit: u64,
    pub unit: Unit,
    /// The window is `unit_multiplier` units (≥ 1).
    pub unit_multiplier: u32,
    pub algorithm: Algorithm,
    /// Token bucket capacity; `requests_per_unit` unless configured.
    pub burst: u64,
    /// Day, week, month and year windows follow the UTC calendar.
    pub calendar: bool,
    pub kind: Kind,
    /// The HTTP status a proxy building its own reply should use (429 unless configured).
    pub over_limit_status: u16,
    /// A fair-share pool's weights (`algorithm` is then [`Algorithm::FairShare`] and
    /// `requests_per_unit` its capacity).
    pub share: Option<Arc<ShareSpec>>,
    /// A concurrency pool's queue: requests that find it full wait their turn
    /// ([`crate::algorithm::queue`]). With `share`, the pool is shared by the values of the
    /// rule's last level, each a tenant of the queue weighted by `share`.
    pub queue: Option<QueueSpec>,
    /// `adaptive: {...}`: Sluice moves this limit between bounds to keep an upstream at a target
    /// (`crate::adaptive`), by writing overrides.
    pub adaptive: Option<Arc<super::adaptive::AdaptiveSpec>>,
    /// `standing: {...}` on a fair-share pool: tenants' weights follow their behaviour
    /// (`crate::adaptive::standing`), by writing overrides.
    pub standing: Option<Arc<super::standing::StandingSpec>>,
}

/// `queue: {max_wait_ms, max_depth}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSpec {
    /// The longest a request waits, whatever its caller's own deadline.
    pub max_wait: Duration,
    /// The most requests waiting at once; one more is refused at once.
    pub max_depth: u64,
}

/// How a fair-share pool weighs its tenants: by the tenant's value (exact, else the first
/// matching `*` pattern in file order), else the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareSpec {
    pub weights: Vec<(String, u32)>,
    pub default_weight: u32,
}

impl ShareSpec {
    /// The weight of the tenant with this descriptor value.
    pub fn weight_of(&self, value: &str) -> u32 {
        self.tier_of(value).unwrap_or(self.default_weight)
    }

    /// The weight `weights` names for this value (its tier), if it names one.
    pub fn tier_of(&self, value: &str) -> Option<u32> {
        self.weights
            .iter()
            .find(|(v, _)| v == value)
            .or_else(|| {
                self.weights
                    .iter()
                    .find(|(p, _)| p.contains('*') && super::matcher::wildcard_match(p, value))
            })
            .map(|&(_, w)| w)
    }
}

impl RateLimit {
    /// A plain fixed window, as the reference service knows them.
    pub fn fixed(requests_per_unit: u64, unit: Unit) -> Self {
        RateLimit {
            name: None,
            requests_per_unit,
            unit,
            unit_multiplier: 1,
            algorithm: Algorithm::FixedWindow,
            burst: requests_per_unit,
            calendar: false,
            kind: Kind::for_window(unit.seconds()),
            over_limit_status: 429,
            share: None,
            queue: None,
            adaptive: None,
            standing: None,
        }
    }

    /// A pool of `slots` leases lasting `ttl_secs` each. The lease TTL is kept as the window
    /// (`unit_multiplier` seconds), which is what the stores read as the policy's period.
    pub fn concurrency(slots: u64, ttl_secs: u32) -> Self {
        RateLimit {
            unit_multiplier: ttl_secs,
            algorithm: Algorithm::Concurrency,
            kind: Kind::Throttle,
            ..RateLimit::fixed(slots, Unit::Second)
        }
    }

    /// The window as the stores see it.
    pub fn period(&self) -> Period {
        match (self.calendar, self.unit) {
            (true, Unit::Day) => Period::Calendar(CalendarUnit::Day, self.unit_multiplier),
            (true, Unit::Week) => Period::Calendar(CalendarUnit::Week, self.unit_multiplier),
            (true, Unit::Month) => Period::Calendar(CalendarUnit::Month, self.unit_multiplier),
            (true, Unit::Year) => Period::Calendar(CalendarUnit::Year, self.unit_multiplier),
            _ => Period::Seconds(self.unit.seconds() * u64::from(self.unit_multiplier)),
        }
    }

    pub fn policy(&self) -> Policy {
        Policy {
            algorithm: self.algorithm,
            period: self.period(),
            limit: self.requests_per_unit,
            burst: self.burst,
        }
    }

    /// The nominal window length in seconds.
    pub fn window_secs(&self) -> u64 {
        self.period().nominal_secs()
    }

    /// The window in words: `minute`, `5 minutes`, `calendar month`, `3 calendar months`; for a
    /// concurrency pool, the lease TTL.
    pub fn describe_window(&self) -> String {
        if self.algorithm == Algorithm::Concurrency {
            return format!("lease of {} s", self.unit_multiplier);
        }
        let unit = self.unit.as_str().to_ascii_lowercase();
        let calendar = if self.calendar { "calendar " } else { "" };
        match self.unit_multiplier {
            1 => format!("{calendar}{unit}"),
            n => format!("{n} {calendar}{unit}s"),
        }
    }
}

/// What a rule allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limit {
    /// `unlimited: true`: always OK, never counted. A name lets another rule's `replaces` drop it
    /// (the descriptor then reports no limit instead of an unlimited one, as the reference does).
    Unlimited { name: Option<String> },
    /// One or more limits; a request must fit every one of them.
    Limited(Box<[RateLimit]>),
}

impl Limit {
    /// The limits to count (none for an unlimited rule).
    pub fn limits(&self) -> &[RateLimit] {
        match self {
            Limit::Unlimited { .. } => &[],
            Limit::Limited(l) => l,
        }
    }

    /// The limit with an `adaptive` block, if any (a descriptor has at most one).
    pub fn adaptive(&self) -> Option<&RateLimit> {
        self.limits().iter().find(|l| l.adaptive.is_some())
    }

    /// The fair-share limit whose tenants' weights follow their behaviour, if there is one.
    pub fn standing(&self) -> Option<&RateLimit> {
        self.limits().iter().find(|l| l.standing.is_some())
    }
}

/// One level of the path from a domain to a rule, as written in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    pub key: String,
    /// The `value` as written (exact, or a pattern with `*`), `None` for a bare key default.
    pub value: Option<String>,
    /// `share_threshold: true` on a wildcard node: every value matching the pattern shares one
    /// counter, keyed by the pattern instead of the request's value.
    pub share_threshold: bool,
    /// `value_to_metric: true`: metrics for this level carry the request's value.
    pub value_to_metric: bool,
}

/// A leaf decision: the `rate_limit` of one descriptor node with everything inherited on its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub domain: Arc<str>,
    /// The path from the domain to this node. A rule is reached by exactly one path, so counter
    /// keys and metric names can be derived from it without looking at the tree again.
    pub levels: Vec<Level>,
    pub limit: Limit,
    /// Names of rules (limits) that this rule's match drops from the same request: the union of
    /// every `replaces` of its limits, unlimited ones included.
    pub replaces: Vec<String>,
    pub shadow_mode: bool,
    pub quota_mode: bool,
    pub detailed_metric: bool,
    /// `trial: {shadow_for}`: how long each new value of this rule stays in shadow mode.
    pub trial: Option<super::trial::TrialSpec>,
    /// The reference's stats key: `domain.key_value.key2` (value only where the config names one).
    pub stat_key: Arc<str>,
    /// `overflow: parent`: the rule one level up, whose unused budget this rule's requests may
    /// use once they are over their own limit.
    pub overflow: Option<Arc<Rule>>,
    /// The rule's metric series under `stat_key`, once resolved (a cache; see the type).
    pub series: crate::metrics::RuleSeries,
}

/// The rule tree's maps. Every request looks its domain, keys and values up in them; foldhash
/// costs a fraction of SipHash on these short strings, and needs no flooding resistance here:
/// requests only look up, the keys come from the config.
pub type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A descriptor node of the tree. Children are kept in three tiers so that lookup follows the
/// reference's order: exact value, then wildcard patterns in file order, then the bare key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub rule: Option<Arc<Rule>>,
    /// `key` → children by exact `value` (`key_value` in the reference).
    pub exact: Map<String, Map<String, Node>>,
    /// `key` → patterns containing `*`, in file order.
    pub wildcard: Map<String, Vec<(String, Node)>>,
    /// `key` → the node without a `value`.
    pub default: Map<String, Node>,
}

/// Where one entry of an HTTP descriptor takes its value from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntrySource {
    /// A request header (name in lower case). When it is missing or empty, the whole
    /// descriptor is left out, as Envoy leaves out a descriptor whose action finds no header.
    Header(String),
    /// A constant, like Envoy's `generic_key`.
    Value(String),
}

/// One entry of an HTTP descriptor: the descriptor key and where its value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpEntry {
    pub key: String,
    pub source: EntrySource,
}

/// One descriptor that `/auth/{domain}` builds from a request's headers (`http_descriptors`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpDescriptor {
    pub entries: Vec<HttpEntry>,
    /// A header holding the descriptor's `hits_addend` (an upload's size, a token count);
    /// absent or empty means the request's cost of 1.
    pub hits_addend_header: Option<String>,
}

/// Settings of a whole domain (top-level fields of its rule file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainOptions {
    /// `failure_mode`: how this domain's checks are answered while the shared store cannot
    /// answer; `None` follows `--failure-mode`.
    pub failure_mode: Option<crate::storage::FailureMode>,
    /// `shard_by`: the descriptor key whose value places every counter of a request carrying it
    /// in one Redis Cluster hash slot ([`crate::storage::keys`]).
    pub shard_by: Option<Arc<str>>,
    /// `notifications`: the events of this domain pushed to its own sinks (beside the sinks of
    /// `--notifications`, which take every domain's).
    pub notifications: Option<Arc<super::notifications::Notifications>>,
}

/// All domains of one load, immutable once built.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub domains: Map<String, Node>,
    /// Per domain, how HTTP requests become descriptors (the `http_descriptors` of its file).
    pub http_descriptors: Map<String, Vec<HttpDescriptor>>,
    /// Domains with settings; absent ones have the defaults.
    pub options: Map<String, DomainOptions>,
    /// The files the rules came from, for `/rlconfig` and logs.
    pub sources: Vec<PathBuf>,
    /// The loaded YAML re-serialised per domain, for `/rlconfig`.
    pub dump: String,
}
