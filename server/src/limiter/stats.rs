//! Per-rule hit counts, split as the reference splits them: of a request's hits, only those past
//! the limit count as over it, and only those past `floor(limit × ratio)` as near it.

use super::decision::Checked;
use super::request::CheckRequest;
use crate::config::matcher::{metric_key, metric_key_is_stat_key};
use crate::metrics::{Metrics, RuleCount, RuleLabels, Shared};

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
    // A rule counted under its stat key uses its cached series; one whose metric name carries
    // request values looks its series up by that name.
    let labels = (!metric_key_is_stat_key(rule)).then(|| {
        let entries = request.descriptors[c.limited.index]
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()));
        RuleLabels {
            rule: Shared(metric_key(rule, entries)),
        }
    });
    let inc = |count: RuleCount, by: u64| match &labels {
        Some(labels) => {
            metrics.rule_series(count, labels).inc_by(by);
        }
        None => metrics.inc_rule(&rule.series, &rule.stat_key, count, by),
    };
    inc(RuleCount::TotalHits, hits);
    if c.reading.over {
        let over_hits = if before >= limit { hits } else { after - limit };
        inc(RuleCount::OverLimit, over_hits);
        if before < limit {
            inc(RuleCount::NearLimit, limit - near.max(before));
        }
        if rule.shadow_mode {
            inc(RuleCount::ShadowMode, over_hits);
        }
    } else {
        inc(RuleCount::WithinLimit, hits);
        if after > near {
            let near_hits = if before >= near { hits } else { after - near };
            inc(RuleCount::NearLimit, near_hits);
        }
    }
}
