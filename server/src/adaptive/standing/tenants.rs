//! Which tenant of a rule an override is about, and the override target of a tenant: the rule's
//! exact levels, then the tenant's value.

use crate::config::Rule;
use crate::overrides::TargetEntry;

/// The override target of one tenant of `rule`: the rule's exact levels, then the tenant's value.
pub(super) fn target(rule: &Rule, tenant: &str) -> Vec<TargetEntry> {
    let last = rule.levels.len().saturating_sub(1);
    rule.levels
        .iter()
        .enumerate()
        .map(|(i, l)| TargetEntry {
            key: l.key.clone(),
            value: if i == last {
                Some(tenant.to_owned())
            } else {
                l.value.clone()
            },
            prefix: None,
        })
        .collect()
}

/// The tenant an override of `rule` is about, when its target is one tenant of the rule (its
/// exact levels, then the tenant's key with a value that the last level matches).
pub(super) fn tenant_of<'o>(rule: &Rule, target: &'o [TargetEntry]) -> Option<&'o str> {
    if target.len() != rule.levels.len() {
        return None;
    }
    let (last, above) = target.split_last()?;
    let (level, levels) = rule.levels.split_last()?;
    let above_fits = above
        .iter()
        .zip(levels)
        .all(|(t, l)| t.prefix.is_none() && t.key == l.key && t.value == l.value);
    let value = last.value.as_deref()?;
    let matches = match level.value.as_deref() {
        None => true,
        Some(p) if p.contains('*') => crate::config::matcher::wildcard_match(p, value),
        Some(v) => v == value,
    };
    (above_fits && last.key == level.key && last.prefix.is_none() && matches).then_some(value)
}
