//! What an operator asks about one descriptor: its counters (every limit with used, remaining,
//! reset and algorithm), a reset of them, and a concurrency pool's holders. The descriptor is
//! matched exactly as a check matches it, runtime overrides included, and the counters are read
//! and written through the same store batches (a look is a hit of 0; a reset is a refund of
//! everything, and a pool's reset releases every lease).

use std::time::Duration;

use super::decision::Checked;
use super::plan::{self, Limited};
use super::request::{self, CheckError, CheckRequest, Descriptor, Entry};
use super::{DescriptorStatus, RateLimiter};
use crate::algorithm::lease::Lease;
use crate::algorithm::{Algorithm, Claim, MAX_UNITS};
use crate::storage::{Admission, Batch, Role, Store};

/// One limit of a descriptor, as the store holds it now.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CounterView {
    /// The rule's stats key.
    pub rule: String,
    /// The name clients see in headers and problem documents.
    pub name: String,
    pub algorithm: &'static str,
    /// `requests_per_unit`, a pool's capacity or its slots.
    pub limit: u64,
    /// The window in seconds (a concurrency pool's lease TTL).
    pub window_seconds: u64,
    pub used: u64,
    pub remaining: u64,
    /// Until the counter is empty again (a fixed window's end, a pool's last lease expiry).
    pub reset_seconds: f64,
    /// For an `overflow: parent` rule, the parent's budget: true on that entry.
    pub overflow_budget: bool,
}

/// Why an admin query cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no domain '{0}' in the rule set")]
    UnknownDomain(String),
    #[error("the descriptor matches no limited rule of domain '{0}'")]
    NoRule(String),
    #[error(transparent)]
    Check(#[from] CheckError),
}

impl<S: Store> RateLimiter<S> {
    /// Every counter of the descriptor `entries` in `domain`, read without changing anything.
    pub async fn inspect(
        &self,
        domain: &str,
        entries: &[Entry],
    ) -> Result<Vec<CounterView>, AdminError> {
        self.counters(domain, entries, false).await
    }

    /// Empties the descriptor's counters ("reset this user's quota") and returns them as they
    /// were before. A fair-share pool forgets only this tenant's usage; a concurrency pool
    /// releases every lease.
    pub async fn reset(
        &self,
        domain: &str,
        entries: &[Entry],
    ) -> Result<Vec<CounterView>, AdminError> {
        self.counters(domain, entries, true).await
    }

    /// The live leases of every concurrency pool the descriptor matches, by rule stats key.
    pub async fn holders(
        &self,
        domain: &str,
        entries: &[Entry],
    ) -> Result<Vec<(CounterView, Vec<Lease>)>, AdminError> {
        let views = self.counters(domain, entries, false).await?;
        let (request, limited) = self.plan_one(domain, entries)?;
        let mut out = Vec::new();
        for (l, view) in limited.iter().zip(views) {
            if l.spec().algorithm != Algorithm::Concurrency {
                continue;
            }
            let shard_by = self.shard_by(domain);
            let hit = plan::hit(
                self.keys(),
                &request,
                l,
                Role::Enforce,
                None,
                shard_by.as_deref(),
            );
            let leases = self
                .store()
                .holders(&hit.key)
                .await
                .map_err(CheckError::from)?;
            out.push((view, leases));
        }
        Ok(out)
    }

    /// The domain's Cluster placement key, so the admin API reads and resets the very keys
    /// checks charge.
    fn shard_by(&self, domain: &str) -> Option<std::sync::Arc<str>> {
        self.rules()
            .options
            .get(domain)
            .and_then(|o| o.shard_by.clone())
    }

    fn plan_one(
        &self,
        domain: &str,
        entries: &[Entry],
    ) -> Result<(CheckRequest, Vec<Limited>), AdminError> {
        let request = CheckRequest {
            domain: domain.to_owned(),
            descriptors: vec![Descriptor {
                entries: entries.to_vec(),
                hits_addend: Some(0),
                ..Descriptor::default()
            }],
            hits_addend: 0,
        };
        request::validate(&request, &self.options().bounds)?;
        let rules = self.rules();
        if rules.domain(domain).is_none() {
            return Err(AdminError::UnknownDomain(domain.to_owned()));
        }
        let mut statuses = vec![DescriptorStatus::no_limit()];
        let overrides = self.overrides();
        let limited = plan::limits_to_check(
            &rules,
            &request,
            &mut statuses,
            &overrides,
            super::now_secs(),
        );
        if limited.is_empty() {
            return Err(AdminError::NoRule(domain.to_owned()));
        }
        Ok((request, limited))
    }

    async fn counters(
        &self,
        domain: &str,
        entries: &[Entry],
        reset: bool,
    ) -> Result<Vec<CounterView>, AdminError> {
        let (request, limited) = self.plan_one(domain, entries)?;
        let shard_by = self.shard_by(domain);
        let hits = limited
            .iter()
            .map(|l| {
                let mut hit = plan::hit(
                    self.keys(),
                    &request,
                    l,
                    Role::Enforce,
                    None,
                    shard_by.as_deref(),
                );
                if reset && l.overflow_of.is_none() {
                    hit.delta = -(MAX_UNITS as i64);
                    // Without a lease id, a pool's refund releases every lease.
                    if matches!(hit.claim, Claim::Lease(_)) {
                        hit.claim = Claim::None;
                    }
                }
                hit
            })
            .collect();
        let batch = Batch {
            hits,
            admission: Admission::ChargeAll,
        };
        let outcome = self.store().apply(&batch).await.map_err(CheckError::from)?;
        Ok(limited
            .iter()
            .zip(&outcome.readings)
            .map(|(l, &reading)| {
                let c = Checked {
                    limited: l,
                    reading,
                    role: Role::Enforce,
                    charged: false,
                };
                let spec = l.spec();
                CounterView {
                    rule: l.rule.stat_key.to_string(),
                    name: c.policy_name(),
                    algorithm: spec.algorithm.as_str(),
                    limit: spec.requests_per_unit,
                    window_seconds: spec.window_secs(),
                    used: reading.used_before,
                    remaining: reading.capacity.saturating_sub(reading.used_before),
                    reset_seconds: Duration::from_micros(reading.reset).as_secs_f64(),
                    overflow_budget: l.overflow_of.is_some(),
                }
            })
            .collect())
    }
}
