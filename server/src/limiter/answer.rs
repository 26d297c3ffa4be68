//! The two halves of a check around its store call: the plan (validate, match, one hit per
//! limit) and the answer (statuses, overall code, headers, problem document, lease, stats).

use std::time::Duration;

use super::decision::{self, Checked};
use super::plan::{self, Limited};
use super::{
    CheckError, CheckRequest, Code, Decision, DescriptorStatus, RateLimiter, TraceFacts, explain,
    headers, lease, now_secs, problem, request, stats,
};
use crate::notify::EventSet;
use crate::storage::{Admission, Batch, FailureMode, Outcome, Role, Store, Verdict};

/// A request's limits as one store batch, before the store is asked.
pub(super) struct Planned {
    /// Filled for descriptors that are not counted.
    pub statuses: Vec<DescriptorStatus>,
    pub limited: Vec<Limited>,
    pub batch: Batch,
    pub on_failure: Option<FailureMode>,
    /// The domain's `shard_by` key (Redis Cluster placement).
    pub shard_by: Option<std::sync::Arc<str>>,
    /// Per limit, whether its value is in its rule's trial (decided in shadow mode); empty when
    /// no rule of the request has a trial ([`super::trial`]).
    pub in_trial: Vec<bool>,
    /// The request events its domain's sinks and the global ones take: empty (the common case)
    /// when no notification is configured for it.
    pub notify: EventSet,
}

impl Planned {
    /// Whether the batch releases leases in a pool with a queue (the queue is dispatched then).
    pub fn releases_queued(&self) -> bool {
        self.limited
            .iter()
            .zip(&self.batch.hits)
            .any(|(l, h)| h.delta < 0 && l.spec().queue.is_some())
    }
}

impl<S: Store> RateLimiter<S> {
    /// Validates and plans `request`; `Err` is the answer for a request nothing limits.
    pub(super) fn plan(
        &self,
        request: &CheckRequest,
        dry: bool,
    ) -> Result<Result<Planned, Decision>, CheckError> {
        request::validate(request, &self.options.bounds)?;
        let rules = self.rules.load();
        let overrides = self.overrides.load();
        let mut statuses = vec![DescriptorStatus::no_limit(); request.descriptors.len()];
        let limited = plan::limits_to_check(&rules, request, &mut statuses, &overrides, now_secs());
        let options = rules.options.get(&request.domain);
        let on_failure = options.and_then(|o| o.failure_mode);
        let shard_by = options.and_then(|o| o.shard_by.clone());
        let notify = match &self.notifier {
            Some(n) if !dry => n.raises(
                options
                    .and_then(|o| o.notifications.as_ref())
                    .map_or(EventSet::NONE, |b| b.events),
            ),
            _ => EventSet::NONE,
        };
        drop((rules, overrides));
        if limited.is_empty() {
            return Ok(Err(Decision {
                overall: Code::Ok,
                statuses,
                response_headers: Vec::new(),
                rejection: None,
                lease: None,
                trace: None,
            }));
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
        Ok(Ok(Planned {
            statuses,
            limited,
            batch,
            on_failure,
            shard_by,
            in_trial: Vec::new(),
            notify,
        }))
    }

    /// The decision once the store answered `planned`'s batch with `outcome`.
    pub(super) fn answer(
        &self,
        request: &CheckRequest,
        planned: Planned,
        outcome: &Outcome,
        dry: bool,
        mut explain: Option<&mut Vec<explain::Explained>>,
        store_latency: Option<Duration>,
    ) -> Decision {
        let Planned {
            mut statuses,
            limited,
            batch,
            in_trial,
            notify,
            ..
        } = planned;
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
        // The limits a trial let through while over (positions in `checked`): rare, and
        // allocated only then.
        let mut trial_over: Vec<usize> = Vec::new();
        for (i, (l, &reading)) in limited.iter().zip(&outcome.readings).enumerate() {
            let trial = |k: usize| in_trial.get(k).copied().unwrap_or(false);
            let (shown, role) = match l.overflow_of {
                Some(of) if trial(of) => (verdict.is_rescued(of), Role::Shadow),
                Some(of) => (verdict.is_rescued(of), self.role(&limited[of].rule)),
                None if trial(i) => (!verdict.is_rescued(i), Role::Shadow),
                None => (!verdict.is_rescued(i), self.role(&l.rule)),
            };
            if trial(i) && reading.over && !dry {
                super::trial::would_reject(&self.metrics, &l.rule);
            }
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
            if trial(i) && reading.over {
                trial_over.push(checked.len());
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
        if overall == Code::OverLimit && !dry {
            self.record_refused_tenants(request, &checked);
        }
        if !notify.is_empty()
            && let Some(notifier) = &self.notifier
        {
            super::notices::raise(
                notifier,
                notify,
                request,
                &super::notices::Seen {
                    checked: &checked,
                    deltas: &deltas,
                    tightest: &tightest,
                    trial_over: &trial_over,
                    overall,
                    near_ratio: self.options.near_limit_ratio,
                },
            );
        }
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
        Decision {
            overall,
            statuses,
            response_headers,
            rejection,
            lease: grant,
            trace,
        }
    }

    /// Hands the tenants that a fair-share pool with `standing` refused past their guarantee to
    /// the standing controller's record (only those pools, only such refusals).
    fn record_refused_tenants(&self, request: &CheckRequest, checked: &[Checked<'_>]) {
        for c in checked {
            let spec = c.spec();
            // Only a refusal of the tenant's own demand: past its guarantee, where it could only
            // borrow. A tenant refused within its guarantee (the pool lent out before it came)
            // is not misbehaving.
            let own_demand = c.reading.over && c.reading.borrowing;
            if !own_demand || c.role == Role::Shadow || spec.standing.is_none() {
                continue;
            }
            let rule = &c.limited.rule;
            let tenant = request.descriptors[c.limited.index]
                .entries
                .get(rule.levels.len().saturating_sub(1));
            if let Some(t) = tenant {
                self.refusals.refused(&rule.stat_key, &t.value);
            }
        }
    }
}
