//! Quota notifications: platform teams are told when a tenant nears or spends a quota, when a pool
//! is full, when the Redis breaker opens or closes, and when a runtime override is about to lapse,
//! pushed to webhooks and a Redis stream, never on the request path.
//!
//! ```text
//!   crossing, refusal (check path) ─ Recent ─┐
//!   breaker listener ────────────────────────┼─▶ queue (4096) ─▶ dispatcher, every 10 ms:
//!   override scan, every 1 s ────────────────┤   try_send        build, route
//!   adaptive controller ─────────────────────┘
//!                                                                   │
//!                 one task per sink, each with its queue:  ◀────────┘
//!                 webhook POST (signed, retried) │ XADD to the Redis stream
//! ```
//!
//! 1. **Raising** ([`Notifier`]): the limiter hands over what a check saw when one of its limits
//!    crossed the near-limit ratio or refused it (`limiter::notices`); the breaker's listener,
//!    the override scan ([`expiry`]) and the adaptive controller (`crate::adaptive`) raise
//!    theirs. A request event is raised at most once per (rule, limit, descriptor, kind) and
//!    window ([`event::Recent`]); what a raised event is about
//!    (its rule, descriptor, counts and time) is offered to a bounded queue with `try_send`:
//!    nothing on the check path waits, wakes a thread or formats anything, and what does not fit
//!    is dropped and counted (`sluice_notifications_dropped_total{reason="queue_full"}`). A check
//!    whose domain has no `notifications` (and no `--notifications` file) pays one bit test: the
//!    limiter asks nothing here.
//! 2. **Routing** ([`dispatch`]): one task drains the queue every [`DRAIN_EVERY`], in order,
//!    builds each event some sink takes (its id, time and detail), serialises it once, and offers
//!    it to the sinks of its domain's block and of the global file whose `events` name its kind, each
//!    through that sink's own bounded queue (full: dropped, `reason="sink_queue_full"`). Polling
//!    rather than being woken keeps the check path free of wake-ups (a futex call each) at the
//!    price of up to 10 ms before an event leaves.
//!    Sinks follow rule reloads: a sink whose configuration did not change keeps its task and
//!    queue, one no longer named is drained and stopped.
//! 3. **Delivering**: one task per sink, in order: [`webhook`] (HTTP POST, HMAC-signed, retried
//!    with back-off: at least once) and [`stream`] (`XADD` on the counters' Redis). A receiver
//!    that hangs holds only its own task, for `timeout_ms` per attempt; its queue fills and the
//!    rest is dropped and counted.
//!
//! Boundary: reads rule sets and their blocks from [`crate::config`], overrides from
//! [`crate::overrides`], and writes through [`crate::storage`]'s Redis connections; the limiter
//! holds a [`Notifier`] and start-up (`server`) wires it. It never imports the limiter.

mod dispatch;
pub mod event;
mod expiry;
mod metrics;
mod stream;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::clock::Clock;
pub use crate::config::notifications::{EventKind, EventSet, Notifications};
use crate::config::{Rule, RuleSet};
use crate::overrides::Override;
use crate::storage::backend::redis::RedisStore;
use crate::storage::layer::breaker::BreakerState;
pub use event::{DescriptorEntry, Event, LimitFacts, OverrideFacts, rfc3339};
pub(crate) use metrics::{Metrics, SinkLabels};

/// Events waiting between the check path and the dispatcher, at most.
pub const QUEUE_CAPACITY: usize = 4_096;
/// How often the dispatcher drains that queue: the most an event waits there, and a bound on
/// how fast events can come (4096 per 10 ms) before the queue drops them.
pub const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(10);
/// Slots of the de-duplication table (8 bytes each).
pub const RECENT_SLOTS: usize = 16_384;

/// What the notifications of a process start from.
pub struct Setup {
    /// The `--notifications` file: sinks for every domain's events and the breaker's.
    pub global: Option<Notifications>,
    /// The counters' Redis, for `redis_stream` sinks.
    pub redis: Option<RedisStore>,
    pub clock: Arc<dyn Clock>,
}

/// The handle the check path raises events through; cloning shares it.
#[derive(Clone)]
pub struct Notifier {
    shared: Arc<Shared>,
}

struct Shared {
    /// A std channel, not tokio's: `try_send` wakes nobody (the dispatcher polls).
    queue: std::sync::mpsc::SyncSender<Envelope>,
    recent: event::Recent,
    clock: Arc<dyn Clock>,
    /// The events the global sinks take.
    global: EventSet,
    /// The `--notifications` file's block.
    global_block: Option<Arc<Notifications>>,
    instance: Arc<str>,
    /// Tells this process's breaker events from another's.
    nonce: u64,
    breaker_open: AtomicBool,
    breaker_changes: AtomicU64,
    /// Each domain's block, as of the latest rule set.
    blocks: watch::Sender<Blocks>,
    metrics: Metrics,
}

/// The `notifications` block of each domain that has one.
pub(crate) type Blocks = Arc<HashMap<String, Arc<Notifications>>>;

/// An event on its way to the dispatcher: a request event as the check saw it (built there), or
/// another one whole, with the sinks it may go to.
pub(crate) enum Envelope {
    Raised(event::Raw),
    Built(Box<Event>, Scope),
}

impl Envelope {
    /// What routing needs: the kind, the domain and the scope (before the event is built).
    pub fn route(&self) -> (EventKind, Option<&str>, Scope) {
        match self {
            Envelope::Raised(raw) => (raw.kind, Some(&*raw.rule.domain), Scope::All),
            Envelope::Built(event, scope) => (event.kind, event.domain.as_deref(), *scope),
        }
    }

    /// The event, built, and where it may go.
    pub fn open(self, instance: &str) -> (Event, Scope) {
        match self {
            Envelope::Raised(raw) => (raw.event(instance), Scope::All),
            Envelope::Built(event, scope) => (*event, scope),
        }
    }
}

/// Which sinks an event may reach (each only if its `events` name the kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Its domain's and the global ones; for an event without a domain, every block's.
    All,
    /// Only its domain's (an override within that block's lead time).
    Domain,
    /// Only the global ones.
    Global,
}

/// What a check saw of one limit whose event it raises.
pub struct Raised<'a, D> {
    pub kind: EventKind,
    pub rule: &'a Arc<Rule>,
    /// Which of the rule's limits.
    pub limit_index: usize,
    /// The descriptor's entries as sent.
    pub descriptor: D,
    /// `near_limit`: units in use after the hit; refusals: before it.
    pub used: u64,
    pub capacity: u64,
    /// The units the request asked for.
    pub hits: u64,
}

/// Starts the dispatcher (and, as their blocks appear, the sinks) on the current runtime and
/// registers the metrics; returns the handle for the limiter.
pub fn start(setup: Setup, registry: &mut Registry) -> Notifier {
    let metrics = Metrics::new(registry);
    let (queue, events) = std::sync::mpsc::sync_channel(QUEUE_CAPACITY);
    let (blocks, watched) = watch::channel(Blocks::default());
    let global_block = setup.global.map(Arc::new);
    let global = global_block.as_ref().map_or(EventSet::NONE, |g| g.events);
    let shared = Arc::new(Shared {
        queue,
        recent: event::Recent::new(RECENT_SLOTS),
        clock: setup.clock,
        global,
        global_block: global_block.clone(),
        instance: instance_name(),
        nonce: getrandom::u64().unwrap_or_default(),
        breaker_open: AtomicBool::new(false),
        breaker_changes: AtomicU64::new(0),
        blocks,
        metrics: metrics.clone(),
    });
    let routes = dispatch::Routes::new(global_block.as_deref(), setup.redis, metrics);
    tokio::spawn(dispatch::run(
        events,
        watched,
        routes,
        Arc::clone(&shared.instance),
    ));
    Notifier { shared }
}

impl Notifier {
    /// The request events a check in a domain whose block takes `domain` must look for: those
    /// and the global sinks'. Empty: the check raises nothing.
    pub fn raises(&self, domain: EventSet) -> EventSet {
        domain
            .union(self.shared.global)
            .intersection(EventSet::REQUEST)
    }

    /// The blocks of `rules` become the domains' sinks (called on every rule swap).
    pub fn rules_changed(&self, rules: &RuleSet) {
        let blocks: HashMap<String, Arc<Notifications>> = rules
            .options
            .iter()
            .filter_map(|(domain, o)| Some((domain.clone(), o.notifications.clone()?)))
            .collect();
        self.shared.blocks.send_replace(Arc::new(blocks));
    }

    /// Raises a request event, unless it was raised already in its limit's window. The event is
    /// built by the dispatcher: this only copies what it is about.
    pub fn raise<'a, D>(&self, r: Raised<'a, D>)
    where
        D: Iterator<Item = (&'a str, &'a str)> + Clone,
    {
        let Some(spec) = r.rule.limit.limits().get(r.limit_index) else {
            return;
        };
        let at = self.shared.clock.now();
        let window_secs = spec.window_secs().max(1);
        let window = at.as_secs() / window_secs;
        let key = event::dedup_key(r.kind, r.rule, r.limit_index, r.descriptor.clone());
        if !self.shared.recent.first(key, window) {
            return;
        }
        let raw = event::Raw {
            kind: r.kind,
            rule: Arc::clone(r.rule),
            limit_index: r.limit_index,
            descriptor: r
                .descriptor
                .map(|(key, value)| DescriptorEntry {
                    key: key.to_owned(),
                    value: value.to_owned(),
                })
                .collect(),
            used: r.used,
            capacity: r.capacity,
            hits: r.hits,
            at,
            window,
        };
        self.offer(r.kind, Envelope::Raised(raw));
    }

    /// The Redis breaker changed state: `breaker_open` when it leaves closed, `breaker_closed`
    /// when it closes again (half-open and reopening after a failed trial are one outage).
    pub fn breaker_changed(&self, state: BreakerState) {
        let open = match state {
            BreakerState::Open => true,
            BreakerState::Closed => false,
            BreakerState::HalfOpen => return,
        };
        if self.shared.breaker_open.swap(open, Ordering::AcqRel) == open {
            return;
        }
        let change = self.shared.breaker_changes.fetch_add(1, Ordering::Relaxed);
        let (kind, detail) = if open {
            (
                EventKind::BreakerOpen,
                "the Redis counter store is failing: its circuit breaker opened, checks are \
                 answered by the failure policies",
            )
        } else {
            (
                EventKind::BreakerClosed,
                "the Redis counter store answers again: its circuit breaker closed",
            )
        };
        let now = self.shared.clock.now();
        let id = event::id_of([
            kind.as_str().as_bytes(),
            self.shared.instance.as_bytes(),
            &self.shared.nonce.to_le_bytes(),
            &change.to_le_bytes(),
        ]);
        let event = self.bare_event(id, kind, now, detail.to_owned());
        self.offer(kind, Envelope::Built(Box::new(event), Scope::All));
    }

    /// An adaptive limit moved: the controller that decided it raises this once
    /// (`crate::adaptive`). `change` holds `before`, `after` and the signal; its id is the
    /// override's and the interval's, so a retried delivery keeps it.
    pub fn adaptive_change(
        &self,
        rule: &Rule,
        override_id: &str,
        interval_start_ms: u64,
        change: serde_json::Value,
        detail: String,
    ) {
        let kind = EventKind::AdaptiveChange;
        let id = event::id_of([
            kind.as_str().as_bytes(),
            override_id.as_bytes(),
            &interval_start_ms.to_le_bytes(),
        ]);
        let mut event = self.bare_event(id, kind, self.shared.clock.now(), detail);
        event.domain = Some(rule.domain.to_string());
        event.rule = Some(rule.stat_key.to_string());
        event.change = Some(change);
        self.offer(kind, Envelope::Built(Box::new(event), Scope::All));
    }

    /// Keeps raising `override_expiring` for the overrides `source` lists, until it answers
    /// `None` (their holder is gone) ([`expiry`]).
    pub fn watch_overrides(&self, source: impl Fn() -> Option<Vec<Override>> + Send + 'static) {
        tokio::spawn(expiry::run(
            self.clone(),
            self.shared.blocks.subscribe(),
            source,
        ));
    }

    fn global_block(&self) -> Option<Arc<Notifications>> {
        self.shared.global_block.clone()
    }

    /// An event about no request: only its kind, time and detail.
    fn bare_event(
        &self,
        id: String,
        kind: EventKind,
        now: std::time::Duration,
        detail: String,
    ) -> Event {
        Event {
            id,
            kind,
            time: rfc3339(now),
            instance: self.shared.instance.to_string(),
            domain: None,
            rule: None,
            descriptor: None,
            limit: None,
            used: None,
            remaining: None,
            override_: None,
            change: None,
            detail,
        }
    }

    /// Queues `envelope` for the dispatcher without waiting; counts it, or its drop.
    fn offer(&self, kind: EventKind, envelope: Envelope) {
        match self.shared.queue.try_send(envelope) {
            Ok(()) => self.shared.metrics.emitted(kind),
            Err(std::sync::mpsc::TrySendError::Full(_)) => self.shared.metrics.queue_full(),
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                self.shared.metrics.dropped("stopped")
            }
        }
    }
}

/// The host's name, which tells operators which replica spoke; a random name when there is none.
fn instance_name() -> Arc<str> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty());
    match host {
        Some(h) => h.into(),
        None => format!("sluice-{:08x}", getrandom::u32().unwrap_or_default()).into(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
