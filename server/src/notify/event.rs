//! One notification as it is sent: a JSON object, the same bytes to every sink (a webhook's body,
//! a stream entry's `event` field). `docs/notifications.md` documents the format.
//!
//! Ids are derived from what the event is about, not drawn at random: a request event's from its
//! kind, rule, limit, descriptor and window, an override's from its id and expiry. So a retried
//! delivery, and the same event raised by two replicas (every replica refuses a tenant whose
//! quota is spent in Redis), carry one id, and a receiver that keeps the ids it has seen for a
//! window de-duplicates both. Breaker events are one replica's own: their ids name it.
//!
//! [`Recent`] is the check path's memory of events already raised: a fixed table of atomics,
//! one compare per raised event, never a lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::config::notifications::EventKind;
use crate::config::{Algorithm, RateLimit, Rule};

impl Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A notification. Fields that do not apply to its kind are left out of the JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Stable across retries and replicas (see the module doc): what receivers de-duplicate on.
    pub id: String,
    pub kind: EventKind,
    /// When it was raised, RFC 3339 in UTC with milliseconds.
    pub time: String,
    /// The replica that raised it (its host name, else a random name for this process).
    pub instance: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The rule's stats key (`domain.key_value.key2`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The request's descriptor as sent (request events only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub descriptor: Option<Vec<DescriptorEntry>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<LimitFacts>,
    /// Units in use: after the hit for `near_limit`, when the request was refused for the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// The override about to lapse (`override_expiring` only).
    #[serde(rename = "override", skip_serializing_if = "Option::is_none")]
    pub override_: Option<OverrideFacts>,
    /// What an adaptive limit moved from and to, and the signal that moved it
    /// (`adaptive_change` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<serde_json::Value>,
    /// One sentence for a human.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DescriptorEntry {
    pub key: String,
    pub value: String,
}

/// The limit an event is about, as the rule (or an override of it) sets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitFacts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The configured limit: requests per window, a pool's leases, a fair-share pool's capacity.
    pub requests_per_unit: u64,
    /// What the counter holds at most for this request's descriptor: `requests_per_unit`, a
    /// token bucket's burst, a fair-share tenant's share (`used + remaining`).
    pub capacity: u64,
    /// `minute`, `5 minutes`, `calendar month`, `lease of 60 s`.
    pub window: String,
    pub window_secs: u64,
    pub algorithm: &'static str,
    /// `throttle` or `quota`.
    pub kind: &'static str,
}

impl LimitFacts {
    pub fn of(spec: &RateLimit, capacity: u64) -> LimitFacts {
        LimitFacts {
            name: spec.name.clone(),
            requests_per_unit: spec.requests_per_unit,
            capacity,
            window: spec.describe_window(),
            window_secs: spec.window_secs(),
            algorithm: spec.algorithm.as_str(),
            kind: spec.kind.as_str(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OverrideFacts {
    pub id: String,
    /// The override's target, as set (`value` or, last, `prefix`).
    pub descriptor: Vec<crate::overrides::TargetEntry>,
    /// RFC 3339.
    pub expires_at: String,
    pub by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A request event as the check path hands it over: what it is about, copied; the dispatcher
/// builds the [`Event`] ([`Raw::event`]), off the check path.
pub(crate) struct Raw {
    pub kind: EventKind,
    pub rule: Arc<Rule>,
    pub limit_index: usize,
    pub descriptor: Vec<DescriptorEntry>,
    /// `near_limit`: units in use after the hit; refusals: before it.
    pub used: u64,
    pub capacity: u64,
    pub hits: u64,
    /// When it was raised, and the limit's window then.
    pub at: Duration,
    pub window: u64,
}

impl Raw {
    pub fn event(self, instance: &str) -> Event {
        let spec = &self.rule.limit.limits()[self.limit_index];
        let window_secs = spec.window_secs().max(1);
        let id = request_event_id(
            self.kind,
            &self.rule,
            self.limit_index,
            window_secs,
            self.window,
            self.descriptor
                .iter()
                .map(|e| (e.key.as_str(), e.value.as_str())),
        );
        let amount = if spec.algorithm == Algorithm::Concurrency {
            format!("{} of {} leases held", self.used, self.capacity)
        } else {
            format!(
                "{} of {} per {} used",
                self.used,
                self.capacity,
                spec.describe_window()
            )
        };
        let detail = match self.kind {
            EventKind::NearLimit => format!("near the limit: {amount}"),
            EventKind::QuotaExhausted => format!(
                "quota exhausted: {amount}; a request for {} was refused",
                self.hits
            ),
            EventKind::TrialWouldBlock => format!(
                "would be refused, but its trial period lets it through: {amount}; a request for \
                 {} was let through",
                self.hits
            ),
            _ => format!("pool full: {amount}; an acquire was refused"),
        };
        Event {
            id,
            kind: self.kind,
            time: rfc3339(self.at),
            instance: instance.to_owned(),
            domain: Some(self.rule.domain.to_string()),
            rule: Some(self.rule.stat_key.to_string()),
            limit: Some(LimitFacts::of(spec, self.capacity)),
            used: Some(self.used),
            remaining: Some(self.capacity.saturating_sub(self.used)),
            descriptor: Some(self.descriptor),
            override_: None,
            change: None,
            detail,
        }
    }
}

/// A 128-bit id, hex, of `parts` (separated so that no two lists of parts collide).
pub(super) fn id_of<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().to_hex()[..32].to_owned()
}

/// The id of a request event: the same for every raise of it in one window, on any replica.
pub(super) fn request_event_id<'a>(
    kind: EventKind,
    rule: &Rule,
    limit_index: usize,
    window_secs: u64,
    window: u64,
    descriptor: impl Iterator<Item = (&'a str, &'a str)>,
) -> String {
    let numbers = [limit_index as u64, window_secs, window].map(u64::to_le_bytes);
    let head = [kind.as_str().as_bytes(), rule.stat_key.as_bytes()]
        .into_iter()
        .chain(numbers.iter().map(|n| &n[..]));
    let mut entries = Vec::new();
    for (k, v) in descriptor {
        entries.push(k.as_bytes());
        entries.push(v.as_bytes());
    }
    id_of(head.chain(entries))
}

/// `since_epoch` as RFC 3339 in UTC with milliseconds: `2025-06-01T12:34:56.789Z`.
pub fn rfc3339(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60,
        since_epoch.subsec_millis()
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Which events were raised lately: at most one per (rule, limit, descriptor, kind) and window.
///
/// A direct-mapped table: an event's key picks one slot, which holds a tag of the key and the
/// window last raised there. Raising swaps the tag in; the event is new unless the slot already
/// held that same tag. So the table is bounded (`capacity` × 8 bytes whatever the traffic), one
/// atomic swap decides, and two requests racing on one event raise it once. What it forgets:
/// another key taking the slot evicts the first, which may then be raised again in the same
/// window (receivers see the same id twice).
pub(super) struct Recent {
    slots: Box<[AtomicU64]>,
}

impl Recent {
    /// A table of `capacity` slots (rounded up to a power of two).
    pub fn new(capacity: usize) -> Recent {
        let n = capacity.max(1).next_power_of_two();
        Recent {
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Whether the event `key` is raised for the first time in `window`.
    pub fn first(&self, key: u64, window: u64) -> bool {
        let slot = &self.slots[(key as usize) & (self.slots.len() - 1)];
        // The tag mixes the window in (a multiplier spreads consecutive windows), and is never 0,
        // the empty slot's value.
        let tag = match key ^ window.wrapping_mul(0x9e37_79b9_7f4a_7c15) {
            0 => 1,
            tag => tag,
        };
        slot.swap(tag, Ordering::Relaxed) != tag
    }
}

/// The de-duplication key of a request event: a fast hash, fixed across runs.
pub(super) fn dedup_key<'a>(
    kind: EventKind,
    rule: &Rule,
    limit_index: usize,
    descriptor: impl Iterator<Item = (&'a str, &'a str)>,
) -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = foldhash::fast::FixedState::with_seed(0x5111_ce00).build_hasher();
    h.write_u8(kind as u8);
    h.write(rule.stat_key.as_bytes());
    h.write_usize(limit_index);
    for (k, v) in descriptor {
        h.write(k.as_bytes());
        h.write_u8(0xff);
        h.write(v.as_bytes());
        h.write_u8(0xfe);
    }
    h.finish()
}
