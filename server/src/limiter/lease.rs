//! Leases through `ShouldRateLimit`: which id a request's concurrency pools use, what a client
//! is told it holds, and the pool metrics.
//!
//! - **Acquire**: a descriptor matching a concurrency pool takes a lease with a positive hit. One
//!   id is generated per request and used by every pool the request acquires, so a request is
//!   one holder however many pools it touches, and the client keeps one id.
//! - **Renew / release**: the descriptor, sent again with a [`LEASE_ENTRY`] entry holding that id,
//!   renews the lease (positive hits) or releases it (`is_negative_hits`). The entry is not part
//!   of matching. Such a descriptor's other limits only look: renewing or releasing a stream's
//!   lease does not count as another request. Releasing without the id is `INVALID_ARGUMENT`.
//! - **The answer**: when a request holds a lease after the check (acquired or renewed), the
//!   response carries its id and TTL in `x-sluice-lease-id` / `x-sluice-lease-ttl`
//!   (`response_headers_to_add`) and in the gRPC `dynamic_metadata` (`lease_id`,
//!   `lease_ttl_seconds`). A rejected request never holds a lease, even under `--charge-rejected`.

use std::time::Duration;

use super::plan::Limited;
use super::request::{CheckError, CheckRequest, LEASE_ENTRY};
use crate::algorithm::lease::LeaseId;
use crate::algorithm::{Algorithm, Claim, Reading};
use crate::metrics::{Metrics, RuleLabels, Shared};
use crate::storage::{Hit, StoreError};

/// Response header with the lease id a request holds.
pub const LEASE_ID_HEADER: &str = "x-sluice-lease-id";
/// Response header with the lease's TTL in seconds.
pub const LEASE_TTL_HEADER: &str = "x-sluice-lease-ttl";

/// The lease a request holds after its check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    pub id: LeaseId,
    /// Until it expires unless renewed: the shortest TTL of the pools it is held in.
    pub ttl: Duration,
}

/// Refuses releases without an id, and returns the id a new lease takes when the request
/// acquires one.
pub(super) fn new_lease(
    request: &CheckRequest,
    limited: &[Limited],
) -> Result<Option<LeaseId>, CheckError> {
    let mut acquires = false;
    for l in limited {
        if l.spec().algorithm != Algorithm::Concurrency {
            continue;
        }
        let d = &request.descriptors[l.index];
        match (d.negative_hits, d.lease.is_some()) {
            (true, false) => {
                return Err(CheckError::Invalid(format!(
                    "descriptor {} releases a lease of {}: it needs the lease id in a \
                     {LEASE_ENTRY} entry",
                    l.index, l.rule.stat_key
                )));
            }
            (false, false) => acquires |= d.hits_addend != Some(0),
            _ => {}
        }
    }
    if !acquires {
        return Ok(None);
    }
    LeaseId::generate().map(Some).map_err(|e| {
        CheckError::Store(StoreError::Server(format!(
            "cannot draw a lease id from the system's random source: {e}"
        )))
    })
}

/// The lease the request holds once the store answered, and the pool metrics. `written` says
/// whether the store wrote the hit's new state.
pub(super) fn settle(
    metrics: &Metrics,
    limited: &[Limited],
    hits: &[Hit],
    readings: &[Reading],
    written: impl Fn(usize) -> bool,
) -> Option<LeaseGrant> {
    let mut grant: Option<LeaseGrant> = None;
    for (i, ((l, hit), r)) in limited.iter().zip(hits).zip(readings).enumerate() {
        if hit.policy.algorithm != Algorithm::Concurrency {
            continue;
        }
        let labels = RuleLabels {
            rule: Shared(l.rule.stat_key.clone()),
        };
        let stats = &metrics.leases;
        let written = written(i);
        let in_use = if written { r.used_after } else { r.used_before };
        stats.in_use.get_or_create(&labels).set(in_use as i64);
        stats.capacity.get_or_create(&labels).set(r.capacity as i64);
        let Claim::Lease(id) = hit.claim else {
            continue;
        };
        if hit.delta > 0 {
            if r.over {
                stats.rejections.get_or_create(&labels).inc();
                continue;
            }
            if !written {
                continue;
            }
            if r.used_after > r.used_before {
                stats.acquisitions.get_or_create(&labels).inc();
            } else {
                stats.renewals.get_or_create(&labels).inc();
            }
            let ttl = Duration::from_secs(hit.policy.period.nominal_secs());
            grant = Some(match grant {
                Some(g) if g.ttl <= ttl => g,
                _ => LeaseGrant { id, ttl },
            });
        } else if hit.delta < 0 && written && r.used_after < r.used_before {
            stats.releases.get_or_create(&labels).inc();
        }
    }
    grant
}

/// The headers announcing `grant`.
pub(super) fn headers(grant: &LeaseGrant) -> [(String, String); 2] {
    [
        (LEASE_ID_HEADER.to_owned(), grant.id.to_string()),
        (LEASE_TTL_HEADER.to_owned(), grant.ttl.as_secs().to_string()),
    ]
}
