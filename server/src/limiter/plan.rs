//! From a request to the limits it must pass: match each descriptor, apply `replaces` and
//! `unlimited`, and turn every remaining limit into one store [`Hit`].

use std::sync::Arc;

use super::decision::DescriptorStatus;
use super::request::{CheckRequest, Descriptor, LimitOverride};
use crate::algorithm::MAX_UNITS;
use crate::config::{Level, Limit, RateLimit, Rule, RuleSet};
use crate::descriptor::counter_value;
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
                        });
                    }
                }
            }
        }
    }
    limited
}

/// The store hit of one limit.
pub(super) fn hit(keys: &KeySchema, request: &CheckRequest, l: &Limited, role: Role) -> Hit {
    let d = &request.descriptors[l.index];
    let policy = l.spec().policy();
    let parts = l
        .rule
        .levels
        .iter()
        .zip(&d.entries)
        .map(|(level, e)| (e.key.as_str(), counter_value(level, e.value.as_str())));
    let default_addend = u64::from(request.hits_addend.max(1));
    let amount = d.hits_addend.unwrap_or(default_addend).min(MAX_UNITS) as i64;
    Hit {
        key: keys.counter_key(&l.rule.domain, parts, &policy),
        policy,
        delta: if d.negative_hits { -amount } else { amount },
        role,
    }
}

/// `domain.key_value.key2_value2`, the reference's key for a descriptor as sent.
fn descriptor_key(domain: &str, d: &Descriptor) -> String {
    let mut key = String::from(domain);
    for e in &d.entries {
        key.push('.');
        key.push_str(&e.key);
        if !e.value.is_empty() {
            key.push('_');
            key.push_str(&e.value);
        }
    }
    key
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
        stat_key: descriptor_key(domain, d).into(),
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
