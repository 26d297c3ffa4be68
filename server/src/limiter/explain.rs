//! "Why was this request limited?" in one step: for a request's descriptors, the path each took
//! through the rule tree and the rule it reached (or why none), the runtime override, `replaces`
//! and shadow/quota roles applied, every limit's counter (used, remaining, reset, over), and the
//! decision the request would get now with its problem document.
//!
//! The decision comes from the check itself ([`RateLimiter::check`]'s path) run as a dry run
//! ([`crate::storage::Admission::DryRun`]): the store steps every counter as the check would and
//! writes nothing, and no metric, top-consumer count or lease is touched. So an explanation and
//! the check that follows it agree, as long as no other request changes the counters between
//! them. With `--local-batch`, hits batched on this replica and not yet flushed are not seen.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::plan::Limited;
use super::request::{self, CheckError, CheckRequest};
use super::{Code, Decision, RateLimiter};
use crate::algorithm::Reading;
use crate::config::walk::Walk;
use crate::config::{Limit, Rule};
use crate::storage::{Role, Store};

/// One limit the dry run stepped, as the check loop saw it.
pub(super) struct Explained {
    index: usize,
    rule: Arc<Rule>,
    limit: usize,
    overflow_parent: bool,
    reading: Reading,
    role: Role,
    delta: i64,
    counted: bool,
}

impl Explained {
    pub(super) fn new(
        l: &Limited,
        reading: Reading,
        role: Role,
        delta: i64,
        counted: bool,
    ) -> Self {
        Self {
            index: l.index,
            rule: Arc::clone(&l.rule),
            limit: l.limit,
            overflow_parent: l.overflow_of.is_some(),
            reading,
            role,
            delta,
            counted,
        }
    }
}

/// What a request would get, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub domain: String,
    /// An unknown domain limits nothing.
    pub known_domain: bool,
    /// `OK` or `OVER_LIMIT`: what `ShouldRateLimit` would answer now.
    pub code: &'static str,
    pub descriptors: Vec<DescriptorExplanation>,
    /// The rejection's HTTP status and RFC 9457 problem document, when rejected.
    pub status: Option<u16>,
    pub problem: Option<serde_json::Value>,
    /// The rate-limit headers the answer would carry.
    pub headers: Vec<(String, String)>,
}

/// One entry of a descriptor, as sent.
#[derive(Debug, Clone, Serialize)]
pub struct EntryView {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DescriptorExplanation {
    pub entries: Vec<EntryView>,
    /// `OK` or `OVER_LIMIT`, as its status would say.
    pub code: &'static str,
    /// The path through the tree (absent for a descriptor carrying Envoy's own `limit`).
    pub walk: Option<Walk>,
    /// The rule it reached, as applied.
    pub rule: Option<RuleFacts>,
    pub limits: Vec<LimitExplanation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleFacts {
    /// Its stats key (`domain.key_value.key2`).
    pub rule: String,
    pub unlimited: bool,
    pub shadow_mode: bool,
    pub quota_mode: bool,
    /// Names of limits its match drops from the same request.
    pub replaces: Vec<String>,
    /// A runtime override (`/admin/overrides`) replaced its limits.
    pub runtime_override: bool,
    /// The request carried Envoy's per-descriptor `limit`, which wins over every rule.
    pub request_override: bool,
    /// Its limits were dropped by another matched rule's `replaces`.
    pub replaced: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LimitExplanation {
    /// The name clients see (`name`, or the rule's stats key).
    pub name: String,
    pub algorithm: &'static str,
    /// `enforce`, `shadow` (counted, never rejects), `quota` (rejects only when every quota
    /// limit of the request is over) or `overflow` (the parent budget of `overflow: parent`).
    pub role: &'static str,
    /// `requests_per_unit`, a pool's capacity or slots.
    pub limit: u64,
    /// The hits this request asks for (`hits_addend`).
    pub hits: i64,
    pub used: u64,
    /// What the counter would hold if the request were admitted.
    pub used_if_admitted: u64,
    pub remaining: u64,
    /// This limit alone cannot take the request.
    pub over: bool,
    pub wait_seconds: f64,
    pub reset_seconds: f64,
    /// Whether this limit is the one the descriptor reports (an `overflow: parent` pair shows
    /// one of its two).
    pub reported: bool,
}

/// Why there is nothing to explain.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("no domain '{0}' in the rule set")]
    UnknownDomain(String),
    #[error(transparent)]
    Check(#[from] CheckError),
}

impl<S: Store> RateLimiter<S> {
    /// Explains `request` without changing anything. An unknown domain, or a request a check
    /// would refuse as invalid, is an error.
    pub async fn explain(&self, request: &CheckRequest) -> Result<Explanation, ExplainError> {
        request::validate(request, &self.options.bounds)?;
        if self.rules().domain(&request.domain).is_none() {
            return Err(ExplainError::UnknownDomain(request.domain.clone()));
        }
        let mut explained = Vec::new();
        let decision = self
            .decide(request, true, Some(&mut explained), None, None)
            .await?;
        Ok(self.describe(request, &decision, &explained))
    }

    /// A real check (charged, counted) and its explanation from the same readings, for
    /// `--explain-log`.
    pub async fn check_explained(
        self: &Arc<Self>,
        request: &CheckRequest,
        caller_wait: Option<Duration>,
    ) -> Result<(Decision, Explanation), CheckError> {
        let mut explained = Vec::new();
        let decision = self
            .decide(
                request,
                false,
                Some(&mut explained),
                Some(self),
                caller_wait,
            )
            .await?;
        let explanation = self.describe(request, &decision, &explained);
        Ok((decision, explanation))
    }

    fn describe(
        &self,
        request: &CheckRequest,
        decision: &Decision,
        explained: &[Explained],
    ) -> Explanation {
        let rules = self.rules();
        let overrides = self.overrides.load_full();
        let now = super::now_secs();
        let replaced: Vec<String> = explained
            .iter()
            .flat_map(|e| e.rule.replaces.iter().cloned())
            .collect();
        let mut descriptors = Vec::with_capacity(request.descriptors.len());
        for (index, d) in request.descriptors.iter().enumerate() {
            let entries: Vec<(&str, &str)> = d
                .entries
                .iter()
                .map(|e| (e.key.as_str(), e.value.as_str()))
                .collect();
            let (walk, found) = rules.walk(&request.domain, &entries);
            let applied = match (&found, d.limit) {
                (_, Some(_)) => None,
                (Some(rule), None) if !overrides.is_empty() => {
                    Some(overrides.apply(&request.domain, &entries, rule, now))
                }
                (Some(rule), None) => Some(Arc::clone(rule)),
                (None, None) => None,
            };
            let mine: Vec<&Explained> = explained.iter().filter(|e| e.index == index).collect();
            // The rule as the check applied it: the request's own limit, an override, or the
            // rule the walk reached.
            let rule = mine
                .iter()
                .find(|e| !e.overflow_parent)
                .map(|e| Arc::clone(&e.rule))
                .or(applied.clone());
            let facts = rule.map(|rule| {
                let runtime_override = match (&applied, &found) {
                    (Some(a), Some(f)) => !Arc::ptr_eq(a, f),
                    _ => false,
                };
                let names = match &rule.limit {
                    Limit::Unlimited { name } => vec![name.clone()],
                    Limit::Limited(limits) => limits.iter().map(|l| l.name.clone()).collect(),
                };
                let is_replaced = names
                    .iter()
                    .flatten()
                    .any(|n| replaced.iter().any(|r| r == n));
                RuleFacts {
                    rule: rule.stat_key.to_string(),
                    unlimited: matches!(rule.limit, Limit::Unlimited { .. }),
                    shadow_mode: rule.shadow_mode,
                    quota_mode: rule.quota_mode || self.options.global_quota_mode,
                    replaces: rule.replaces.clone(),
                    runtime_override,
                    request_override: d.limit.is_some(),
                    replaced: is_replaced && mine.is_empty(),
                }
            });
            descriptors.push(DescriptorExplanation {
                entries: d
                    .entries
                    .iter()
                    .map(|e| EntryView {
                        key: e.key.clone(),
                        value: e.value.clone(),
                    })
                    .collect(),
                code: code_name(decision.statuses[index].code),
                walk: d.limit.is_none().then_some(walk),
                rule: facts,
                limits: mine.into_iter().map(limit_explanation).collect(),
            });
        }
        Explanation {
            domain: request.domain.clone(),
            known_domain: rules.domain(&request.domain).is_some(),
            code: code_name(decision.overall),
            descriptors,
            status: decision.rejection.as_ref().map(|r| r.status),
            problem: decision
                .rejection
                .as_ref()
                .map(|r| serde_json::Value::Object(r.problem.clone())),
            headers: decision.response_headers.clone(),
        }
    }
}

fn limit_explanation(e: &Explained) -> LimitExplanation {
    let spec = &e.rule.limit.limits()[e.limit];
    let r = e.reading;
    let seconds = |micros: u64| micros as f64 / 1e6;
    LimitExplanation {
        name: spec
            .name
            .clone()
            .unwrap_or_else(|| e.rule.stat_key.to_string()),
        algorithm: spec.algorithm.as_str(),
        role: match e.role {
            _ if e.overflow_parent => "overflow",
            Role::Enforce => "enforce",
            Role::Shadow => "shadow",
            Role::Quota => "quota",
            Role::Overflow { .. } => "overflow",
        },
        limit: r.capacity,
        hits: e.delta,
        used: r.used_before,
        used_if_admitted: r.used_after,
        remaining: r.remaining(false),
        over: r.over,
        wait_seconds: seconds(r.wait),
        reset_seconds: seconds(r.reset),
        reported: e.counted,
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::OverLimit => "OVER_LIMIT",
    }
}
