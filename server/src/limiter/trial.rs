//! Trial periods: a rule with `trial: {shadow_for}` decides each descriptor value it has not seen
//! before in shadow mode for that long (counted, reported as "would reject", never refused), and
//! enforces it afterwards, on every replica alike.
//!
//! - **First sighting.** The store keeps when each value set was first seen
//!   ([`crate::storage::Store::first_seen`], on the store's clock), for the trial and
//!   [`KEEP_AFTER`] beyond it: a value back after that long starts a new trial. Each replica
//!   remembers what it learned (until when a value is in trial, or that it is enforced) in a
//!   bounded table, so a value costs one store call per replica, not one per request.
//! - **Bounds.** Each replica starts at most the rule's `max_new_per_hour` trials an hour; a value
//!   first seen past that is enforced at once and recorded nowhere, so a client inventing values
//!   neither buys shadow mode nor fills the store. A store that cannot answer means enforcement.
//! - **Early end, extension.** An operator's override with a `mode` wins over the trial
//!   (`overrides`: `enforce` ends it, `shadow` with a TTL extends it); the admin API's
//!   `/admin/trials` writes those overrides, audited as any other.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::answer::Planned;
use super::plan;
use super::{CheckRequest, RateLimiter};
use crate::config::Rule;
use crate::metrics::{Metrics, RuleLabels, Shared};
use crate::storage::{Role, Store};

/// How long a first sighting is kept past the trial's end.
pub const KEEP_AFTER: Duration = Duration::from_secs(90 * 86_400);
/// Values each replica remembers; past this the table starts over (the store still knows).
const REMEMBERED: usize = 100_000;

/// What this replica learned of trials, and the trials it started this hour per rule.
#[derive(Default)]
pub(super) struct Trials {
    /// Trial key → the instant its trial ends here (in the past: enforced).
    ends: Mutex<HashMap<Vec<u8>, Instant>>,
    /// Rule → (the hour's start, trials started in it).
    started: Mutex<HashMap<Arc<str>, (Instant, u64)>>,
}

impl Trials {
    fn remembered(&self, key: &[u8]) -> Option<Instant> {
        self.ends.lock().get(key).copied()
    }

    fn remember(&self, key: Vec<u8>, ends: Instant) {
        let mut ends_at = self.ends.lock();
        if ends_at.len() >= REMEMBERED {
            ends_at.clear();
        }
        ends_at.insert(key, ends);
    }

    /// Whether `rule` may start another trial this hour here.
    fn may_start(&self, rule: &Rule, limit: u64) -> bool {
        let started = self.started.lock();
        started
            .get(&rule.stat_key)
            .is_none_or(|&(hour, n)| hour.elapsed() >= HOUR || n < limit)
    }

    fn count_start(&self, rule: &Rule) {
        let mut started = self.started.lock();
        let entry = started
            .entry(Arc::clone(&rule.stat_key))
            .or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= HOUR {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

const HOUR: Duration = Duration::from_secs(3_600);

/// Counts a trial value over its limit (what enforcement would have refused).
pub(super) fn would_reject(metrics: &Metrics, rule: &Rule) {
    metrics
        .trial_would_reject
        .get_or_create(&RuleLabels {
            rule: Shared(Arc::clone(&rule.stat_key)),
        })
        .inc();
}

impl<S: Store> RateLimiter<S> {
    /// Marks the limits of `planned` whose values are in their rule's trial: their hits become
    /// shadow hits. Costs nothing for requests without a trial rule. A dry run starts no trial.
    pub(super) async fn apply_trials(
        &self,
        request: &CheckRequest,
        planned: &mut Planned,
        dry: bool,
    ) {
        if !planned
            .limited
            .iter()
            .any(|l| l.rule.trial.is_some() && l.overflow_of.is_none())
        {
            return;
        }
        planned.in_trial = vec![false; planned.limited.len()];
        for i in 0..planned.limited.len() {
            let l = &planned.limited[i];
            let Some(spec) = l.rule.trial else { continue };
            if l.overflow_of.is_some() || planned.batch.hits[i].role == Role::Shadow {
                continue;
            }
            // The request's other limits of the same descriptor and rule share the answer.
            if let Some(j) = (0..i).find(|&j| {
                planned.limited[j].index == l.index
                    && Arc::ptr_eq(&planned.limited[j].rule, &l.rule)
            }) {
                planned.in_trial[i] = planned.in_trial[j];
            } else {
                let key = plan::trial_key(self.keys(), request, l, planned.shard_by.as_deref());
                planned.in_trial[i] = self.in_trial(&l.rule, spec, key, dry).await;
            }
            if planned.in_trial[i] {
                planned.batch.hits[i].role = Role::Shadow;
            }
        }
    }

    async fn in_trial(
        &self,
        rule: &Rule,
        spec: crate::config::trial::TrialSpec,
        key: Vec<u8>,
        dry: bool,
    ) -> bool {
        if let Some(ends) = self.trials.remembered(&key) {
            return Instant::now() < ends;
        }
        let may_start = !dry && self.trials.may_start(rule, spec.max_new_per_hour);
        let keep = spec.shadow_for + KEEP_AFTER;
        let Ok(seen) = self.store.first_seen(&key, keep, may_start).await else {
            return false;
        };
        if seen.first == 0 {
            // Past this hour's new trials: enforced, and not remembered, so it may start one
            // later in the hour's budget allows.
            return false;
        }
        if seen.created {
            self.trials.count_start(rule);
            self.metrics
                .trials_started
                .get_or_create(&RuleLabels {
                    rule: Shared(Arc::clone(&rule.stat_key)),
                })
                .inc();
        }
        let ends_at = seen
            .first
            .saturating_add(spec.shadow_for.as_micros() as u64);
        let left = Duration::from_micros(ends_at.saturating_sub(seen.now));
        let ends = Instant::now() + left;
        self.trials.remember(key, ends);
        !left.is_zero()
    }
}

/// A value's trial, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TrialStatus {
    pub rule: String,
    pub shadow_for_seconds: u64,
    /// When the value was first seen (ms since the epoch), if it has a trial.
    pub first_seen_ms: Option<u64>,
    /// When its trial ends, or ended.
    pub ends_ms: Option<u64>,
    /// Seconds of trial left, on the store's clock (0: enforced, or never started).
    pub left_seconds: u64,
}

impl<S: Store> RateLimiter<S> {
    /// The trial of the descriptor `entries` in `domain`, read from the store (nothing starts).
    pub async fn trial_status(
        &self,
        domain: &str,
        entries: &[super::Entry],
    ) -> Result<TrialStatus, super::inspect::AdminError> {
        use super::inspect::AdminError;
        let rules = self.rules();
        if rules.domain(domain).is_none() {
            return Err(AdminError::UnknownDomain(domain.to_owned()));
        }
        let pairs: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        let rule = rules
            .lookup(domain, &pairs)
            .filter(|r| r.trial.is_some())
            .ok_or_else(|| AdminError::NoRule(domain.to_owned()))?;
        let Some(spec) = rule.trial else {
            return Err(AdminError::NoRule(domain.to_owned()));
        };
        let request = CheckRequest {
            domain: domain.to_owned(),
            descriptors: vec![super::Descriptor {
                entries: entries.to_vec(),
                ..Default::default()
            }],
            hits_addend: 0,
        };
        let limited = plan::Limited {
            index: 0,
            rule: Arc::clone(rule),
            limit: 0,
            overflow_of: None,
        };
        let shard_by = rules.options.get(domain).and_then(|o| o.shard_by.clone());
        let key = plan::trial_key(self.keys(), &request, &limited, shard_by.as_deref());
        let keep = spec.shadow_for + KEEP_AFTER;
        let seen = self
            .store
            .first_seen(&key, keep, false)
            .await
            .map_err(|e| AdminError::Check(super::CheckError::Store(e)))?;
        let shadow_for = spec.shadow_for.as_micros() as u64;
        let started = seen.first != 0;
        let ends = seen.first.saturating_add(shadow_for);
        Ok(TrialStatus {
            rule: rule.stat_key.to_string(),
            shadow_for_seconds: spec.shadow_for.as_secs(),
            first_seen_ms: started.then_some(seen.first / 1000),
            ends_ms: started.then_some(ends / 1000),
            left_seconds: if started {
                ends.saturating_sub(seen.now).div_ceil(1_000_000)
            } else {
                0
            },
        })
    }
}
