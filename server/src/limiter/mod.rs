//! The transport-free core: `RateLimiter::check` turns a request into one store batch and the
//! store's answer into per-descriptor statuses.
//!
//! Steps, in order:
//! 1. [`request`]: validate the request's shape and bounds.
//! 2. `plan`: match each descriptor against the live rule set ([`crate::config::matcher`]) with the runtime overrides applied; drop unlimited and
//!    `replaces`-ed limits; build one store hit per remaining limit (counter key, policy, delta,
//!    role). A descriptor whose rule has several limits (`rate_limits`) gets one hit per limit.
//! 3. Apply every hit in one atomic store call (`storage`): all-or-nothing across every limit of
//!    every descriptor by default. The domain's `failure_mode` goes along, for when the shared
//!    store cannot answer.
//! 4. [`decision`]: each descriptor's status from its most constraining limit; the overall code;
//!    for a rejected request, the rejecting limit's [`problem`] document; [`headers`] in the
//!    configured style; per-rule `stats`.
//!
//! Boundary: transport-free: no wire types, settings, tracing or listener code; it reads rules from
//! [`crate::config`], overrides from [`crate::overrides`] and counts through [`crate::storage`].

mod answer;
pub mod decision;
pub mod explain;
pub mod headers;
pub mod inspect;
pub mod lease;
mod notices;
mod plan;
pub mod problem;
pub mod queue;
pub mod request;
pub mod standing;
mod stats;
pub mod top;
pub mod trial;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

pub use decision::{Code, CurrentLimit, Decision, DescriptorStatus, Rejection, TraceFacts};
pub use headers::{HeaderNames, HeaderStyle};
pub use lease::{LEASE_ID_HEADER, LEASE_TTL_HEADER, LeaseGrant};
pub use request::{
    CheckError, CheckRequest, Descriptor, Entry, LEASE_ENTRY, LimitOverride, RequestBounds,
};

use crate::config::{Rule, RuleSet};
use crate::metrics::{KindLabels, Metrics};
use crate::notify::Notifier;
use crate::overrides::{Override, OverrideSet};
use crate::storage::keys::KeySchema;
use crate::storage::{Admission, Role, Store};

#[derive(Debug, Clone)]
pub struct LimiterOptions {
    pub admission: Admission,
    /// Counter keys: prefix and optional value hashing.
    pub keys: KeySchema,
    /// `NEAR_LIMIT_RATIO`: hits past `floor(limit × ratio)` count as near the limit.
    pub near_limit_ratio: f64,
    /// `SHADOW_MODE`: decide and count as usual, but always answer OK.
    pub global_shadow_mode: bool,
    /// `QUOTA_MODE`: every rule behaves as if it had `quota_mode: true`.
    pub global_quota_mode: bool,
    /// Which rate-limit headers answers carry.
    pub header_style: HeaderStyle,
    pub bounds: RequestBounds,
    /// Checks are traced (`--otlp-endpoint`): the store round trip is timed for their spans.
    pub traced: bool,
    /// `--explain-log`: every check's explanation in a debug-level log line.
    pub explain_log: bool,
}

impl Default for LimiterOptions {
    fn default() -> Self {
        Self {
            admission: Admission::AllOrNothing,
            keys: KeySchema::default(),
            near_limit_ratio: 0.8,
            global_shadow_mode: false,
            global_quota_mode: false,
            header_style: HeaderStyle::Off,
            bounds: RequestBounds::default(),
            traced: false,
            explain_log: false,
        }
    }
}

pub struct RateLimiter<S> {
    rules: ArcSwap<RuleSet>,
    store: S,
    metrics: Arc<Metrics>,
    options: LimiterOptions,
    /// The heaviest consumers of each rule, when the admin API asks for them.
    top: Option<top::TopConsumers>,
    /// Runtime overrides in force, resolved against `rules`.
    overrides: ArcSwap<OverrideSet>,
    /// The overrides as loaded (lapsed ones dropped), kept to resolve them again when the rules
    /// change; its lock also orders concurrent swaps of `rules` and `overrides`.
    override_list: parking_lot::Mutex<Vec<Override>>,
    /// Requests waiting in pool queues on this replica, and how they are woken.
    waiting: queue::Waiting,
    /// What this replica learned of trial periods.
    trials: trial::Trials,
    /// Where quota notifications are raised, when the process sends any.
    notifier: Option<Notifier>,
    /// The tenants fair-share pools with `standing` refused, for the standing controller.
    refusals: Arc<standing::Refusals>,
}

/// Seconds since the epoch, for override expiry.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl<S: Store> RateLimiter<S> {
    pub fn new(rules: RuleSet, store: S, metrics: Arc<Metrics>, options: LimiterOptions) -> Self {
        metrics.config_rules.set(plan::count_rules(&rules) as i64);
        Self {
            rules: ArcSwap::from_pointee(rules),
            store,
            metrics,
            options,
            top: None,
            overrides: ArcSwap::from_pointee(OverrideSet::default()),
            override_list: parking_lot::Mutex::new(Vec::new()),
            waiting: queue::Waiting::default(),
            trials: trial::Trials::default(),
            notifier: None,
            refusals: Arc::default(),
        }
    }

    /// Raises quota notifications through `notifier`, for the rules of every later reload too.
    pub fn with_notifier(mut self, notifier: Notifier) -> Self {
        notifier.rules_changed(&self.rules.load());
        self.notifier = Some(notifier);
        self
    }

    pub fn notifier(&self) -> Option<&Notifier> {
        self.notifier.as_ref()
    }

    /// The tenants fair-share pools with `standing` refused since the standing controller last
    /// took them.
    pub fn refusals(&self) -> &Arc<standing::Refusals> {
        &self.refusals
    }

    /// Replaces the runtime overrides; returns whether anything changed. Lapsed ones are dropped.
    pub fn set_overrides(&self, mut list: Vec<Override>) -> bool {
        let now = now_secs();
        list.retain(|o| !o.lapsed(now));
        list.sort_by(|a, b| a.id.cmp(&b.id));
        let mut current = self.override_list.lock();
        if *current == list {
            return false;
        }
        let rules = self.rules.load();
        self.overrides
            .store(Arc::new(OverrideSet::new(list.clone(), &rules)));
        *current = list;
        true
    }

    /// The overrides in force.
    pub fn overrides(&self) -> Arc<OverrideSet> {
        self.overrides.load_full()
    }

    /// Tracks each rule's top consumers (for the admin API), at a small cost per check.
    pub fn with_top_consumers(mut self) -> Self {
        self.top = Some(top::TopConsumers::default());
        self
    }

    pub fn top_consumers(&self) -> Option<&top::TopConsumers> {
        self.top.as_ref()
    }

    fn keys(&self) -> &KeySchema {
        &self.options.keys
    }

    /// Swap in a new rule set. Requests in flight finish on the set they started with.
    pub fn replace_rules(&self, rules: RuleSet) {
        self.metrics
            .config_rules
            .set(plan::count_rules(&rules) as i64);
        let list = self.override_list.lock();
        self.overrides
            .store(Arc::new(OverrideSet::new(list.clone(), &rules)));
        // Before the swap: the first check on the new rules finds its domain's sinks routed.
        if let Some(notifier) = &self.notifier {
            notifier.rules_changed(&rules);
        }
        self.rules.store(Arc::new(rules));
    }

    pub fn rules(&self) -> Arc<RuleSet> {
        self.rules.load_full()
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn options(&self) -> &LimiterOptions {
        &self.options
    }

    /// Decide a request. A request for a queued pool does not wait here: it is granted only if
    /// no one is ahead of it ([`check_within`](Self::check_within) waits).
    pub async fn check(&self, request: &CheckRequest) -> Result<Decision, CheckError> {
        let started = Instant::now();
        self.checked(started, self.decide(request, false, None, None, None).await)
    }

    /// Decide a request whose caller waits at most `caller_wait` for the answer (a gRPC
    /// deadline, an HTTP client's wait; `None`: as long as a pool's queue allows). A request
    /// queued for a pool waits its turn and gives up in time to answer within that.
    pub async fn check_within(
        self: &Arc<Self>,
        request: &CheckRequest,
        caller_wait: Option<Duration>,
    ) -> Result<Decision, CheckError> {
        let started = Instant::now();
        let result = self
            .decide(request, false, None, Some(self), caller_wait)
            .await;
        self.checked(started, result)
    }

    /// Counts a check's duration and store failure.
    fn checked(
        &self,
        started: Instant,
        result: Result<Decision, CheckError>,
    ) -> Result<Decision, CheckError> {
        self.metrics
            .request_duration
            .observe(started.elapsed().as_secs_f64());
        if let Err(CheckError::Store(e)) = &result {
            self.metrics
                .store_errors
                .get_or_create(&KindLabels { kind: e.kind() })
                .inc();
        }
        result
    }

    /// The decision on `request`. `dry`: nothing is charged or counted. With `explain`, each
    /// limit's reading is pushed there ([`explain`](mod@explain)). `caller_wait`: how long the
    /// caller waits for an answer, if it said (a request may queue that long, at most).
    ///
    /// `owner` is this limiter's own handle, when the caller has one: a request can only wait
    /// in a pool's queue with it ([`queue`](mod@queue)).
    async fn decide(
        &self,
        request: &CheckRequest,
        dry: bool,
        explain: Option<&mut Vec<explain::Explained>>,
        owner: Option<&Arc<Self>>,
        caller_wait: Option<Duration>,
    ) -> Result<Decision, CheckError> {
        let mut planned = match self.plan(request, dry)? {
            Ok(planned) => planned,
            Err(unlimited) => return Ok(unlimited),
        };
        self.apply_trials(request, &mut planned, dry).await;
        if !dry && let Some(at) = queue::queued_acquire(&planned) {
            return queue::wait(self, owner, request, planned, at, caller_wait, explain).await;
        }
        // Timed only for a trace span: no clock read per check otherwise.
        let store_started = self.options.traced.then(Instant::now);
        let outcome = self
            .store
            .apply_or(&planned.batch, planned.on_failure)
            .await?;
        let store_latency = store_started.map(|t| t.elapsed());
        if !dry && planned.releases_queued() {
            self.dispatch_released(&planned).await;
        }
        Ok(self.answer(request, planned, &outcome, dry, explain, store_latency))
    }

    fn role(&self, rule: &Rule) -> Role {
        if rule.shadow_mode {
            Role::Shadow
        } else if rule.quota_mode || self.options.global_quota_mode {
            Role::Quota
        } else {
            Role::Enforce
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests_pools;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests_queue;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests_trial;
