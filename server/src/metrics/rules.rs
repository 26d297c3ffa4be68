//! Per-rule counters: the families labelled by rule, and each rule's cached series.

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// A label value shared with the rule tree, so labelling a hit clones a pointer, not a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shared(pub Arc<str>);

impl EncodeLabelValue for Shared {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: Shared,
}

/// The label value hits are counted under once a family is full.
pub const OVERFLOW_SERIES: &str = "overflow";

/// Per-rule counts, all in hits (a request with `hits_addend: 5` adds 5).
#[derive(Debug, Default)]
pub struct RuleStats {
    pub total_hits: Family<RuleLabels, Counter>,
    pub over_limit: Family<RuleLabels, Counter>,
    pub near_limit: Family<RuleLabels, Counter>,
    pub within_limit: Family<RuleLabels, Counter>,
    pub shadow_mode: Family<RuleLabels, Counter>,
}

/// One of the per-rule counts of [`RuleStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleCount {
    TotalHits,
    OverLimit,
    NearLimit,
    WithinLimit,
    ShadowMode,
}

impl RuleStats {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "rule_total_hits",
            "Hits checked against a rule",
            self.total_hits.clone(),
        );
        registry.register(
            "rule_over_limit",
            "Hits that were over a rule's limit",
            self.over_limit.clone(),
        );
        registry.register(
            "rule_near_limit",
            "Hits within the limit but past the near-limit ratio",
            self.near_limit.clone(),
        );
        registry.register(
            "rule_within_limit",
            "Hits within a rule's limit",
            self.within_limit.clone(),
        );
        registry.register(
            "rule_shadow_mode",
            "Over-limit hits let through because the rule is in shadow mode",
            self.shadow_mode.clone(),
        );
    }

    pub fn family(&self, count: RuleCount) -> &Family<RuleLabels, Counter> {
        match count {
            RuleCount::TotalHits => &self.total_hits,
            RuleCount::OverLimit => &self.over_limit,
            RuleCount::NearLimit => &self.near_limit,
            RuleCount::WithinLimit => &self.within_limit,
            RuleCount::ShadowMode => &self.shadow_mode,
        }
    }
}

impl RuleCount {
    pub(super) fn name(self) -> &'static str {
        match self {
            RuleCount::TotalHits => "sluice_rule_total_hits",
            RuleCount::OverLimit => "sluice_rule_over_limit",
            RuleCount::NearLimit => "sluice_rule_near_limit",
            RuleCount::WithinLimit => "sluice_rule_within_limit",
            RuleCount::ShadowMode => "sluice_rule_shadow_mode",
        }
    }
}

/// A rule's own series of [`RuleStats`], kept with the rule once its first hit resolved them, so
/// later hits skip the family lookup (which hashes the label set and takes the family's lock on
/// every hit). Each is tied to the [`Metrics`](super::Metrics) that resolved it: a rule counted by another
/// `Metrics` (tests build several) looks its series up as before. Each series is resolved on its
/// first increment, so the exposition is the same as without the cache. A cache, not part of the
/// rule: a clone starts empty and any two compare equal.
#[derive(Default)]
pub struct RuleSeries([OnceLock<(u64, Counter)>; 5]);

impl RuleSeries {
    pub(super) fn slot(&self, count: RuleCount) -> &OnceLock<(u64, Counter)> {
        &self.0[count as usize]
    }
}

impl Clone for RuleSeries {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for RuleSeries {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for RuleSeries {}

impl std::fmt::Debug for RuleSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RuleSeries")
    }
}
