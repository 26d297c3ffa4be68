//! The quota notifications a check raises ([`crate::notify`]), from what its answer already
//! computed; only asked when the request's domain (or the global file) takes request events.
//!
//! - `near_limit`: a descriptor's most constraining limit was below `ceil(capacity × ratio)`
//!   before this request's hits and at or above it after, the request charged (a crossing happens
//!   in one request per window on a fixed window, whichever replica makes it);
//! - `quota_exhausted`: the request was refused, and one of the limits that refused it is of kind
//!   `quota`;
//! - `pool_full`: it was refused by a concurrency pool;
//! - `trial_would_block`: a limit was over, and the value's trial period let the request through
//!   (`super::trial`).
//!
//! Shadow-mode limits refuse nothing, so they raise no refusal; a request let through by global
//! shadow mode was not refused either.

use super::decision::{Checked, Code};
use super::request::CheckRequest;
use crate::config::{Algorithm, Kind};
use crate::notify::{EventKind, EventSet, Notifier, Raised};
use crate::storage::Role;

/// What the answer saw: each limit's reading, its hits, each descriptor's tightest limit and
/// the overall code.
pub(super) struct Seen<'s, 'a> {
    pub checked: &'s [Checked<'a>],
    pub deltas: &'s [i64],
    pub tightest: &'s [Option<usize>],
    /// The limits (positions in `checked`) over, but let through by a trial.
    pub trial_over: &'s [usize],
    pub overall: Code,
    pub near_ratio: f64,
}

/// Raises what `seen` calls for among the `wanted` events.
pub(super) fn raise(
    notifier: &Notifier,
    wanted: EventSet,
    request: &CheckRequest,
    seen: &Seen<'_, '_>,
) {
    let raised = |kind, c: &Checked<'_>, used, hits| {
        notifier.raise(Raised {
            kind,
            rule: &c.limited.rule,
            limit_index: c.limited.limit,
            descriptor: request.descriptors[c.limited.index]
                .entries
                .iter()
                .map(|e| (e.key.as_str(), e.value.as_str())),
            used,
            capacity: c.reading.capacity,
            hits,
        })
    };
    if wanted.contains(EventKind::NearLimit) {
        for &t in seen.tightest.iter().flatten() {
            let c = &seen.checked[t];
            let hits = u64::try_from(seen.deltas[t]).unwrap_or(0);
            if hits == 0 || !c.charged || c.reading.over {
                continue;
            }
            let near = (c.reading.capacity as f64 * seen.near_ratio).ceil() as u64;
            if c.reading.used_before < near && c.reading.used_after >= near {
                raised(EventKind::NearLimit, c, c.reading.used_after, hits);
            }
        }
    }
    if wanted.contains(EventKind::TrialWouldBlock) {
        for &k in seen.trial_over {
            let c = &seen.checked[k];
            let hits = u64::try_from(seen.deltas[k]).unwrap_or(0);
            if hits > 0 {
                raised(EventKind::TrialWouldBlock, c, c.reading.used_after, hits);
            }
        }
    }
    if seen.overall != Code::OverLimit {
        return;
    }
    for (c, &delta) in seen.checked.iter().zip(seen.deltas) {
        let hits = u64::try_from(delta).unwrap_or(0);
        if !c.reading.over || c.role == Role::Shadow || hits == 0 {
            continue;
        }
        let spec = c.spec();
        let kind = if spec.algorithm == Algorithm::Concurrency {
            EventKind::PoolFull
        } else if spec.kind == Kind::Quota {
            EventKind::QuotaExhausted
        } else {
            continue;
        };
        if wanted.contains(kind) {
            raised(kind, c, c.reading.used_before, hits);
        }
    }
}
