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

pub mod decision;
pub mod explain;
pub mod headers;
pub mod inspect;
pub mod lease;
mod plan;
pub mod problem;
pub mod request;
mod stats;
pub mod top;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

pub use decision::{Code, CurrentLimit, Decision, DescriptorStatus, Rejection, TraceFacts};
pub use headers::{HeaderNames, HeaderStyle};
pub use lease::{LEASE_ID_HEADER, LEASE_TTL_HEADER, LeaseGrant};
pub use request::{
    CheckError, CheckRequest, Descriptor, Entry, LEASE_ENTRY, LimitOverride, RequestBounds,
};

use crate::config::{Rule, RuleSet};
use crate::metrics::{KindLabels, Metrics};
use crate::overrides::{Override, OverrideSet};
use crate::storage::keys::KeySchema;
use crate::storage::{Admission, Batch, Role, Store, Verdict};
use decision::Checked;

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
        }
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

    /// Decide a request.
    pub async fn check(&self, request: &CheckRequest) -> Result<Decision, CheckError> {
        let started = Instant::now();
        let result = self.decide(request, false, None).await;
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
    /// limit's reading is pushed there ([`explain`](mod@explain)).
    async fn decide(
        &self,
        request: &CheckRequest,
        dry: bool,
        mut explain: Option<&mut Vec<explain::Explained>>,
    ) -> Result<Decision, CheckError> {
        request::validate(request, &self.options.bounds)?;
        let rules = self.rules.load();
        let overrides = self.overrides.load();
        let mut statuses = vec![DescriptorStatus::no_limit(); request.descriptors.len()];
        let limited = plan::limits_to_check(&rules, request, &mut statuses, &overrides, now_secs());
        let options = rules.options.get(&request.domain);
        let on_failure = options.and_then(|o| o.failure_mode);
        let shard_by = options.and_then(|o| o.shard_by.clone());
        drop((rules, overrides));
        if limited.is_empty() {
            return Ok(Decision {
                overall: Code::Ok,
                statuses,
                response_headers: Vec::new(),
                rejection: None,
                lease: None,
                trace: None,
            });
        }

        let new_lease = lease::new_lease(request, &limited)?;
        let mut hits: Vec<_> = limited
            .iter()
            .map(|l| {
                let role = match l.overflow_of {
                    Some(of) => Role::Overflow { of },
                    // Under global shadow mode the store sees only shadow hits, so it never
                    // rejects; the answer below still reports what would have been rejected.
                    None if self.options.global_shadow_mode => Role::Shadow,
                    None => self.role(&l.rule),
                };
                plan::hit(
                    &self.options.keys,
                    request,
                    l,
                    role,
                    new_lease,
                    shard_by.as_deref(),
                )
            })
            .collect();
        plan::settle_overflow(&mut hits);
        let batch = Batch {
            hits,
            admission: if dry {
                Admission::DryRun
            } else {
                self.options.admission
            },
        };
        // Timed only for a trace span: no clock read per check otherwise.
        let store_started = self.options.traced.then(Instant::now);
        let outcome = self.store.apply_or(&batch, on_failure).await?;
        let store_latency = store_started.map(|t| t.elapsed());
        let verdict = Verdict::of(&batch.hits, &outcome.readings);
        let grant = (!dry)
            .then(|| {
                lease::settle(
                    &self.metrics,
                    &limited,
                    &batch.hits,
                    &outcome.readings,
                    |i| {
                        outcome.charged
                            && batch.hits[i].delta != 0
                            && verdict.writes(&batch.hits, &outcome.readings, batch.admission, i)
                    },
                )
            })
            .flatten();

        // What each descriptor reports: its own limits, except that an `overflow: parent` pair
        // shows the parent when it rescued the request, and otherwise the rule's own limit (which
        // then fits again once either of the two has room).
        let mut checked: Vec<Checked<'_>> = Vec::with_capacity(limited.len());
        let mut deltas: Vec<i64> = Vec::with_capacity(limited.len());
        for (i, (l, &reading)) in limited.iter().zip(&outcome.readings).enumerate() {
            let (shown, role) = match l.overflow_of {
                Some(of) => (verdict.is_rescued(of), self.role(&limited[of].rule)),
                None => (!verdict.is_rescued(i), self.role(&l.rule)),
            };
            if let Some(out) = explain.as_deref_mut() {
                out.push(explain::Explained::new(
                    l,
                    reading,
                    role,
                    batch.hits[i].delta,
                    shown,
                ));
            }
            if !shown {
                continue;
            }
            let mut reading = reading;
            if reading.over
                && let Some(parent) = limited.iter().position(|o| o.overflow_of == Some(i))
                && batch.hits[parent].role != Role::Shadow
            {
                reading.wait = reading.wait.min(outcome.readings[parent].wait);
            }
            checked.push(Checked {
                limited: l,
                reading,
                role,
                charged: outcome.charged,
            });
            deltas.push(batch.hits[i].delta);
        }

        let would_reject = crate::storage::decide(checked.iter().map(|c| (c.role, c.reading.over)));
        let tightest = decision::fill_statuses(&checked, &mut statuses);
        for (i, t) in tightest.iter().enumerate() {
            if let Some(t) = *t
                && !dry
            {
                stats::record(
                    &self.metrics,
                    self.options.near_limit_ratio,
                    request,
                    &checked[t],
                    deltas[t],
                );
                if let Some(top) = &self.top {
                    let entries = request.descriptors[i].entries.iter();
                    top.record(
                        &checked[t].limited.rule.stat_key,
                        entries.map(|e| (e.key.as_str(), e.value.as_str())),
                        u64::try_from(deltas[t]).unwrap_or(0),
                    );
                }
            }
            debug_assert!(t.is_none_or(|t| checked[t].limited.index == i));
        }

        let overall = if would_reject && !self.options.global_shadow_mode {
            Code::OverLimit
        } else {
            if would_reject && !dry {
                self.metrics.global_shadow_mode.inc();
            }
            Code::Ok
        };
        let rejection = match overall {
            Code::OverLimit => decision::rejecting(&checked).map(|by| {
                let violated: Vec<&Checked<'_>> = checked
                    .iter()
                    .filter(|c| c.reading.over && c.role != Role::Shadow)
                    .collect();
                problem::rejection(request, by, &violated)
            }),
            Code::Ok => None,
        };
        let mut response_headers = headers::response_headers(
            &self.options.header_style,
            &checked,
            &statuses,
            &tightest,
            overall,
        );
        if let Some(g) = &grant {
            response_headers.extend(lease::headers(g));
        }
        let trace = store_latency.map(|store_latency| {
            let by = decision::rejecting(&checked)
                .filter(|_| overall == Code::OverLimit)
                .or_else(|| checked.iter().min_by_key(|c| c.remaining()));
            TraceFacts {
                rule: by.map(|c| c.policy_name()).unwrap_or_default(),
                algorithm: by.map_or("", |c| c.spec().algorithm.as_str()),
                store_latency,
            }
        });
        Ok(Decision {
            overall,
            statuses,
            response_headers,
            rejection,
            lease: grant,
            trace,
        })
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
