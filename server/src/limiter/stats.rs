//! Per-rule hit counts, split as the reference splits them: of a request's hits, only those past
//! the limit count as over it, and only those past `floor(limit × ratio)` as near it.

use super::decision::Checked;
use super::request::CheckRequest;
use crate::descriptor::metric_key;
use crate::metrics::{Metrics, RuleLabels, Shared};

/// Records one descriptor's hits against its most constraining limit (a rule with several limits
/// counts each request once).
pub(super) fn record(
    metrics: &Metrics,
    near_ratio: f64,
    request: &CheckRequest,
    c: &Checked<'_>,
    delta: i64,
) {
    // Refunds are not hits.
    let Ok(hits) = u64::try_from(delta) else {
        return;
    };
    let rule = &c.limited.rule;
    let before = c.reading.used_before;
    let limit = c.reading.capacity;
    // What the counter would hold with every hit applied, whether or not it took them.
    let after = before.saturating_add(hits);
    let near = (limit as f64 * near_ratio).floor() as u64;
    let entries = request.descriptors[c.limited.index]
        .entries
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_str()));
    let labels = RuleLabels {
        rule: Shared(metric_key(rule, entries)),
    };
    let stats = &metrics.rules;
    stats.total_hits.get_or_create(&labels).inc_by(hits);
    if c.reading.over {
        let over_hits = if before >= limit { hits } else { after - limit };
        stats.over_limit.get_or_create(&labels).inc_by(over_hits);
        if before < limit {
            stats
                .near_limit
                .get_or_create(&labels)
                .inc_by(limit - near.max(before));
        }
        if rule.shadow_mode {
            stats.shadow_mode.get_or_create(&labels).inc_by(over_hits);
        }
    } else {
        stats.within_limit.get_or_create(&labels).inc_by(hits);
        if after > near {
            let near_hits = if before >= near { hits } else { after - near };
            stats.near_limit.get_or_create(&labels).inc_by(near_hits);
        }
    }
}
