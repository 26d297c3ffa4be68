//! The `/rlconfig` dump of a rule set: one line per rule sorted by stats name, then each domain's
//! HTTP descriptors and settings. Operators diff it across reloads, so it is stable and plain.

use std::fmt::Write as _;
use std::sync::Arc;

use super::Map;
use super::model::DomainOptions;
use super::model::{Algorithm, HttpDescriptor, Kind, Limit, RateLimit, Rule};

/// The dump of `rules` (sorted by stats name), `http_descriptors` and the domains' `options`.
pub(super) fn render(
    rules: &[Arc<Rule>],
    http_descriptors: &Map<String, Vec<HttpDescriptor>>,
    options: &Map<String, DomainOptions>,
) -> String {
    let mut out = String::new();
    for rule in rules {
        dump_rule(&mut out, rule);
    }
    let mut names: Vec<&String> = http_descriptors.keys().collect();
    names.sort();
    for name in names {
        super::http_descriptors::dump(&mut out, name, &http_descriptors[name]);
    }
    super::domain::dump(&mut out, options);
    out
}

/// One line per rule, sorted by stats name: `name: limit[; limit...][, flags]`, each limit as
/// `N per [multiplier ]UNIT` followed by whatever differs from a plain fixed window.
fn dump_rule(out: &mut String, rule: &Rule) {
    let _ = write!(out, "{}: ", rule.stat_key);
    match &rule.limit {
        Limit::Unlimited { name } => {
            out.push_str("unlimited");
            if let Some(name) = name {
                let _ = write!(out, " name={name}");
            }
        }
        Limit::Limited(limits) => {
            for (i, l) in limits.iter().enumerate() {
                if i > 0 {
                    out.push_str("; ");
                }
                dump_limit(out, l);
            }
        }
    }
    if !rule.replaces.is_empty() {
        let _ = write!(out, ", replaces=[{}]", rule.replaces.join(", "));
    }
    if let Some(parent) = &rule.overflow {
        let _ = write!(out, ", overflow={}", parent.stat_key);
    }
    if let Some(t) = rule.trial {
        let _ = write!(
            out,
            ", trial={}s/{}new",
            t.shadow_for.as_secs(),
            t.max_new_per_hour
        );
    }
    for (set, flag) in [
        (rule.shadow_mode, "shadow_mode"),
        (rule.quota_mode, "quota_mode"),
        (rule.detailed_metric, "detailed_metric"),
        (
            rule.levels.iter().any(|l| l.share_threshold),
            "share_threshold",
        ),
        (
            rule.levels.iter().any(|l| l.value_to_metric),
            "value_to_metric",
        ),
    ] {
        if set {
            let _ = write!(out, ", {flag}");
        }
    }
    out.push('\n');
}

fn dump_limit(out: &mut String, l: &RateLimit) {
    if l.algorithm == Algorithm::Concurrency {
        let _ = write!(
            out,
            "{} concurrent, lease {} s",
            l.requests_per_unit, l.unit_multiplier
        );
        dump_queue(out, l);
        dump_weights(out, l);
        if l.over_limit_status != 429 {
            let _ = write!(out, " status={}", l.over_limit_status);
        }
        if let Some(name) = &l.name {
            let _ = write!(out, " name={name}");
        }
        dump_adaptive(out, l);
        return;
    }
    let _ = write!(out, "{} per ", l.requests_per_unit);
    if l.unit_multiplier != 1 {
        let _ = write!(out, "{} ", l.unit_multiplier);
    }
    out.push_str(l.unit.as_str());
    if l.calendar {
        out.push_str(" calendar");
    }
    if l.algorithm != Algorithm::FixedWindow {
        let _ = write!(out, " {}", l.algorithm.as_str());
    }
    if l.algorithm == Algorithm::TokenBucket {
        let _ = write!(out, " burst={}", l.burst);
    }
    dump_queue(out, l);
    dump_weights(out, l);
    if l.kind != Kind::for_window(l.window_secs()) {
        let _ = write!(out, " kind={}", l.kind.as_str());
    }
    if l.over_limit_status != 429 {
        let _ = write!(out, " status={}", l.over_limit_status);
    }
    if let Some(name) = &l.name {
        let _ = write!(out, " name={name}");
    }
    dump_adaptive(out, l);
}

fn dump_adaptive(out: &mut String, l: &RateLimit) {
    if let Some(a) = &l.adaptive {
        let _ = write!(out, " {}", a.describe());
    }
    if let Some(s) = &l.standing {
        let _ = write!(out, " {}", s.describe());
    }
}

fn dump_weights(out: &mut String, l: &RateLimit) {
    let Some(share) = &l.share else {
        return;
    };
    if !share.weights.is_empty() {
        let weights: Vec<String> = share
            .weights
            .iter()
            .map(|(v, w)| format!("{v}={w}"))
            .collect();
        let _ = write!(out, " weights=[{}]", weights.join(", "));
    }
    if share.default_weight != 1 {
        let _ = write!(out, " weight={}", share.default_weight);
    }
}

fn dump_queue(out: &mut String, l: &RateLimit) {
    if let Some(q) = &l.queue {
        let _ = write!(out, " queue={}ms/{}", q.max_wait.as_millis(), q.max_depth);
    }
}
