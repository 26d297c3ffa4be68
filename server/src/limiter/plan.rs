//! From a request to the limits it must pass: match each descriptor, apply `replaces` and
//! `unlimited`, and turn every remaining limit into one store [`Hit`] (plus, for an
//! `overflow: parent` rule, one hit on the parent's budget).

use std::sync::Arc;

use super::decision::DescriptorStatus;
use super::request::{CheckRequest, Descriptor, LimitOverride};
use crate::algorithm::lease::LeaseId;
use crate::algorithm::share::Tenant;
use crate::algorithm::{Algorithm, Claim, MAX_UNITS};
use crate::config::matcher::counter_value;
use crate::config::{Level, Limit, RateLimit, Rule, RuleSet};
use crate::overrides::OverrideSet;
use crate::storage::keys::KeySchema;
use crate::storage::{Hit, Role};

/// One limit of one descriptor that survived matching, `unlimited` and `replaces`: it becomes one
/// store hit.
pub(super) struct Limited {
    /// The descriptor's position in the request.
    pub index: usize,
    pub rule: Arc<Rule>,
    /// Which of the rule's limits.
    pub limit: usize,
    /// Set on the parent budget of an `overflow: parent` rule: the position, among the request's
    /// limits, of the limit it rescues.
    pub overflow_of: Option<usize>,
}

impl Limited {
    pub fn spec(&self) -> &RateLimit {
        // `limit` indexes the rule's own limits, which are immutable.
        &self.rule.limit.limits()[self.limit]
    }
}

/// Matches every descriptor, fills the statuses of those that will not be counted, and returns
/// the limits that will, in request order (a descriptor's limits in rule order).
pub(super) fn limits_to_check(
    rules: &RuleSet,
    request: &CheckRequest,
    statuses: &mut [DescriptorStatus],
    overrides: &OverrideSet,
    now_secs: u64,
) -> Vec<Limited> {
    if rules.domain(&request.domain).is_none() {
        return Vec::new();
    }
    let mut matched: Vec<(usize, Arc<Rule>)> = Vec::with_capacity(request.descriptors.len());
    let mut entries: Vec<(&str, &str)> = Vec::new();
    for (index, d) in request.descriptors.iter().enumerate() {
        let rule = if let Some(o) = d.limit {
            // An override from Envoy's route config: the reference applies it to any
            // descriptor of a known domain, matched or not, never in shadow mode.
            Arc::new(override_rule(&request.domain, d, o))
        } else {
            entries.clear();
            entries.extend(d.entries.iter().map(|e| (e.key.as_str(), e.value.as_str())));
            match rules.lookup(&request.domain, &entries) {
                // Runtime overrides win over the rule the descriptor matched.
                Some(rule) if !overrides.is_empty() => {
                    overrides.apply(&request.domain, &entries, rule, now_secs)
                }
                Some(rule) => Arc::clone(rule),
                None => continue,
            }
        };
        matched.push((index, rule));
    }
    // `replaces` names come from every matched rule, unlimited ones included, as in the
    // reference; a replaced limit is kept as "no limit" (OK, not counted).
    let replaced: Vec<&str> = matched
        .iter()
        .flat_map(|(_, r)| r.replaces.iter().map(String::as_str))
        .collect();
    let is_replaced =
        |name: &Option<String>| name.as_deref().is_some_and(|n| replaced.contains(&n));
    let mut limited = Vec::with_capacity(matched.len());
    for (index, rule) in &matched {
        match &rule.limit {
            Limit::Unlimited { name } => {
                if !is_replaced(name) {
                    statuses[*index] = DescriptorStatus::unlimited();
                }
            }
            Limit::Limited(limits) => {
                for (i, l) in limits.iter().enumerate() {
                    if !is_replaced(&l.name) {
                        limited.push(Limited {
                            index: *index,
                            rule: Arc::clone(rule),
                            limit: i,
                            overflow_of: None,
                        });
                        if let Some(parent) = &rule.overflow {
                            limited.push(Limited {
                                index: *index,
                                rule: Arc::clone(parent),
                                limit: 0,
                                overflow_of: Some(limited.len() - 1),
                            });
                        }
                    }
                }
            }
        }
    }
    limited
}

/// The store hit of one limit. `new_lease` is the id a concurrency pool's acquire takes;
/// `shard_by` is the domain's placement key (Redis Cluster).
pub(super) fn hit(
    keys: &KeySchema,
    request: &CheckRequest,
    l: &Limited,
    role: Role,
    new_lease: Option<LeaseId>,
    shard_by: Option<&str>,
) -> Hit {
    let d = &request.descriptors[l.index];
    let spec = l.spec();
    let policy = spec.policy();
    let levels = l.rule.levels.len();
    // A fair-share pool, or a concurrency pool whose queue weighs tenants: shared by tenants.
    let fair_share = spec.algorithm == Algorithm::FairShare || spec.share.is_some();
    let parts = l
        .rule
        .levels
        .iter()
        .zip(&d.entries)
        .enumerate()
        .map(|(k, (level, e))| {
            // A fair-share pool is shared by the values of its last level: that level is named
            // by its configured value (or none), and the request's value is the tenant.
            let value = if fair_share && k + 1 == levels {
                level.value.as_deref().unwrap_or("")
            } else {
                counter_value(level, e.value.as_str())
            };
            (e.key.as_str(), value)
        });
    // The Cluster hash tag is the shard key's value as the key itself holds it, so one counter
    // always gets one tag (a `share_threshold` pattern, a pool's configured value).
    let shard = shard_by.and_then(|k| parts.clone().find(|(key, _)| *key == k).map(|(_, v)| v));
    let key = keys.counter_key_in(&l.rule.domain, parts, &policy, shard);
    let default_addend = u64::from(request.hits_addend.max(1));
    let amount = d.hits_addend.unwrap_or(default_addend).min(MAX_UNITS) as i64;
    let mut delta = if d.negative_hits { -amount } else { amount };
    let held = d.lease.as_deref().and_then(LeaseId::parse);
    let claim = match spec.algorithm {
        Algorithm::Concurrency => match held.or(new_lease) {
            Some(id) => Claim::Lease(id),
            None => Claim::None,
        },
        Algorithm::FairShare => {
            let value = d.entries.get(levels - 1).map_or("", |e| e.value.as_str());
            Claim::Tenant(Tenant {
                id: keys.tenant_id(value),
                weight: spec.share.as_ref().map_or(1, |s| s.weight_of(value)),
            })
        }
        _ => {
            // A descriptor carrying a lease renews or releases it; its other limits only look.
            if held.is_some() {
                delta = 0;
            }
            Claim::None
        }
    };
    Hit {
        key,
        policy,
        delta,
        role,
        claim,
    }
}

/// Where the trial of `l`'s rule keeps when it first saw this descriptor's values: per value as
/// the rule counts them (a `share_threshold` pattern is one trial for all its values).
pub(super) fn trial_key(
    keys: &KeySchema,
    request: &CheckRequest,
    l: &Limited,
    shard_by: Option<&str>,
) -> Vec<u8> {
    let d = &request.descriptors[l.index];
    let parts = l
        .rule
        .levels
        .iter()
        .zip(&d.entries)
        .map(|(level, e)| (e.key.as_str(), counter_value(level, e.value.as_str())));
    let shard = shard_by.and_then(|k| parts.clone().find(|(key, _)| *key == k).map(|(_, v)| v));
    keys.trial_key_in(&l.rule.domain, parts, shard)
}

/// Makes every overflow pair of `hits` safe to charge either way: the parent's hit charges only
/// when no other hit of the request counts the parent's counter (when one does, it already charges
/// the request there, and the overflow only needs the parent to have room), and a rule whose own
/// counter appears twice in the request does not overflow at all.
pub(super) fn settle_overflow(hits: &mut [Hit]) {
    for j in 0..hits.len() {
        let Role::Overflow { of } = hits[j].role else {
            continue;
        };
        let shared = |k: usize| {
            hits.iter()
                .enumerate()
                .any(|(i, h)| i != k && i != j && h.key == hits[k].key)
        };
        if shared(of) {
            hits[j].role = Role::Shadow;
            hits[j].delta = 0;
        } else if shared(j) {
            hits[j].delta = 0;
        }
    }
}

/// The rule an Envoy `limit` override stands for: one fixed window, as in the reference.
fn override_rule(domain: &str, d: &Descriptor, o: LimitOverride) -> Rule {
    Rule {
        domain: Arc::from(domain),
        levels: d
            .entries
            .iter()
            .map(|e| Level {
                key: e.key.clone(),
                value: Some(e.value.clone()),
                share_threshold: false,
                value_to_metric: false,
            })
            .collect(),
        limit: Limit::Limited(Box::new([RateLimit::fixed(
            u64::from(o.requests_per_unit),
            o.unit,
        )])),
        replaces: Vec::new(),
        shadow_mode: false,
        quota_mode: false,
        detailed_metric: false,
        trial: None,
        // Not the descriptor's key with its values, as the reference names it: those values come
        // from requests, and each distinct one would be a new metrics series.
        stat_key: format!("{domain}.limit_override").into(),
        overflow: None,
        series: Default::default(),
    }
}

/// Rules in a rule set, for the `config_rules` gauge.
pub(super) fn count_rules(rules: &RuleSet) -> usize {
    fn walk(node: &crate::config::Node) -> usize {
        usize::from(node.rule.is_some())
            + node
                .exact
                .values()
                .flat_map(|m| m.values())
                .map(walk)
                .sum::<usize>()
            + node
                .wildcard
                .values()
                .flatten()
                .map(|(_, n)| walk(n))
                .sum::<usize>()
            + node.default.values().map(walk).sum::<usize>()
    }
    rules.domains.values().map(walk).sum()
}
