//! What a check answers: per-descriptor statuses, the overall code, and for a rejected request
//! which limit rejected it.

use std::time::Duration;

use super::plan::Limited;
use crate::algorithm::Reading;
use crate::config::{RateLimit, Unit};
use crate::storage::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Ok,
    OverLimit,
}

/// The limit a status was decided against (`current_limit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentLimit {
    /// Capped at `u32::MAX`, the protocol's bound; the real value is in the headers and the
    /// problem document.
    pub requests_per_unit: u32,
    pub unit: Unit,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorStatus {
    pub code: Code,
    pub current_limit: Option<CurrentLimit>,
    pub limit_remaining: u32,
    /// When over: exactly how long until the request would fit. Otherwise: how long until the
    /// counter is back to empty (the end of a fixed window).
    pub duration_until_reset: Option<Duration>,
}

impl DescriptorStatus {
    pub(super) fn unlimited() -> Self {
        Self {
            code: Code::Ok,
            current_limit: None,
            limit_remaining: u32::MAX,
            duration_until_reset: None,
        }
    }

    pub(super) fn no_limit() -> Self {
        Self {
            code: Code::Ok,
            current_limit: None,
            limit_remaining: 0,
            duration_until_reset: None,
        }
    }
}

/// The answer to an over-limit request for proxies that build their own reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The rejecting limit's `over_limit_status` (429 unless configured).
    pub status: u16,
    /// An RFC 9457 problem document (`application/problem+json`), as a JSON object.
    pub problem: serde_json::Map<String, serde_json::Value>,
}

impl Rejection {
    /// The problem document as sent.
    pub fn body(&self) -> String {
        serde_json::Value::Object(self.problem.clone()).to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub overall: Code,
    /// Same count and order as the request's descriptors.
    pub statuses: Vec<DescriptorStatus>,
    /// Headers for the client (`response_headers_to_add`).
    pub response_headers: Vec<(String, String)>,
    /// Set when `overall` is OVER_LIMIT.
    pub rejection: Option<Rejection>,
    /// The lease the request holds after the check (acquired or renewed), if any.
    pub lease: Option<super::lease::LeaseGrant>,
    /// What a trace span records; only filled while tracing is on (`crate::trace`).
    pub trace: Option<TraceFacts>,
}

/// The deciding limit of a check and its store round trip, for its trace span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceFacts {
    /// The policy name of the limit that rejected the request, or else of the one with the
    /// fewest remaining.
    pub rule: String,
    pub algorithm: &'static str,
    pub store_latency: Duration,
}

/// One limit with what the store saw for it.
pub(super) struct Checked<'a> {
    pub limited: &'a Limited,
    pub reading: Reading,
    /// The rule's own role (global shadow mode aside).
    pub role: Role,
    pub charged: bool,
}

impl Checked<'_> {
    pub fn spec(&self) -> &RateLimit {
        self.limited.spec()
    }

    /// Over, and reported as such: a shadow rule never reports OVER_LIMIT.
    pub fn reports_over(&self) -> bool {
        self.reading.over && !self.limited.rule.shadow_mode
    }

    pub fn remaining(&self) -> u64 {
        self.reading.remaining(self.charged)
    }

    /// The wait when over, else the time until the counter is empty again.
    pub fn until_reset(&self) -> Duration {
        Duration::from_micros(if self.reading.over {
            self.reading.wait
        } else {
            self.reading.reset
        })
    }

    /// Whether `self` constrains its descriptor more than `other`: over beats within; among
    /// over limits the longest wait, among the others the fewest remaining.
    fn tighter_than(&self, other: &Checked<'_>) -> bool {
        match (self.reports_over(), other.reports_over()) {
            (true, false) => true,
            (false, true) => false,
            (true, true) => self.reading.wait > other.reading.wait,
            (false, false) => self.remaining() < other.remaining(),
        }
    }
}

/// Fills the status of every limited descriptor from its most constraining limit, and returns
/// for each descriptor the position in `checked` of that limit.
pub(super) fn fill_statuses(
    checked: &[Checked<'_>],
    statuses: &mut [DescriptorStatus],
) -> Vec<Option<usize>> {
    let mut tightest: Vec<Option<usize>> = vec![None; statuses.len()];
    for (i, c) in checked.iter().enumerate() {
        let slot = &mut tightest[c.limited.index];
        if slot.is_none_or(|t| c.tighter_than(&checked[t])) {
            *slot = Some(i);
        }
    }
    for (status, t) in statuses.iter_mut().zip(&tightest) {
        let Some(t) = *t else { continue };
        let c = &checked[t];
        let spec = c.spec();
        // As the reference: a quota descriptor over its limit still reports OVER_LIMIT even when
        // the request as a whole is let through; a shadow rule never does.
        *status = DescriptorStatus {
            code: if c.reports_over() {
                Code::OverLimit
            } else {
                Code::Ok
            },
            current_limit: Some(CurrentLimit {
                requests_per_unit: spec.requests_per_unit.min(u64::from(u32::MAX)) as u32,
                unit: spec.unit,
                name: spec.name.clone(),
            }),
            limit_remaining: c.remaining().min(u64::from(u32::MAX)) as u32,
            duration_until_reset: Some(c.until_reset()),
        };
    }
    tightest
}

/// The limit a rejected request is answered with: of the limits that took part in rejecting it,
/// the one with the longest wait.
pub(super) fn rejecting<'c, 'a>(checked: &'c [Checked<'a>]) -> Option<&'c Checked<'a>> {
    checked
        .iter()
        .filter(|c| c.reading.over && c.role != Role::Shadow)
        .fold(None, |best: Option<&Checked<'_>>, c| match best {
            Some(b) if b.reading.wait >= c.reading.wait => Some(b),
            _ => Some(c),
        })
}

impl Checked<'_> {
    /// The name clients see for this limit in headers and problem documents: its `name`, else the
    /// rule's stats key, with the window when the rule has several limits.
    pub fn policy_name(&self) -> String {
        let spec = self.spec();
        if let Some(name) = &spec.name {
            return name.clone();
        }
        let rule = &self.limited.rule;
        if rule.limit.limits().len() == 1 {
            return rule.stat_key.to_string();
        }
        let mut name = format!("{}/{}s", rule.stat_key, spec.window_secs());
        if spec.algorithm != crate::config::Algorithm::FixedWindow {
            name.push('-');
            name.push_str(spec.algorithm.as_str());
        }
        name
    }
}
