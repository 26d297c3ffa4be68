//! Runtime overrides: an operator changes one descriptor's (or a value prefix's) limit, weight,
//! concurrency or shadow/enforce state *now*, without a redeploy, on every replica.
//!
//! - [`Override`]: what is changed and for whom, as JSON in the shared store. The YAML rules stay
//!   the defaults; an override wins over the rule its target matches, until it expires or is
//!   removed.
//! - [`set::OverrideSet`]: the overrides in force, indexed for the check path and resolved
//!   against the live rule set (re-resolved on every reload of either).
//! - [`backend::OverrideStore`]: where they live (memory for one instance, Redis or etcd for a
//!   fleet), with the audit log of every change. Each replica's set is kept current by a task the
//!   server starts (`server::overrides`: a notification, with polling as the fallback).
//!
//! Validation refuses, with the reason and without changing anything: an unknown domain, a target
//! that matches no limited rule, a field that does not apply to the rule (a weight on a rule that
//! is not a fair-share pool, a concurrency on one that is not a pool), values out of range, a
//! prefix anywhere but on the last entry, and an expiry in the past.
//!
//! Boundary: validates and indexes overrides against [`crate::config`]'s rules; it never imports
//! the limiter (which holds the set) or settings (start-up opens the store).

pub mod backend;
mod changes;
pub mod set;

use serde::{Deserialize, Serialize};

use crate::algorithm::MAX_UNITS;
use crate::algorithm::share::MAX_WEIGHT;
use crate::config::{Algorithm, Rule, RuleSet};

pub use backend::{AuditEntry, OverrideStore};
pub use set::OverrideSet;

/// The most leases an override may give a pool (the config's bound).
const MAX_SLOTS: u64 = 10_000;
/// The longest an override may last when it has an expiry: a year.
const MAX_TTL_SECS: u64 = 365 * 86_400;

/// One entry of an override's target: an exact `value`, or (last entry only) a value `prefix`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetEntry {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// Shadow or enforce, whatever the rule says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Shadow,
    Enforce,
}

/// What an operator asks for (the body of `PUT /admin/overrides`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideRequest {
    pub domain: String,
    pub descriptor: Vec<TargetEntry>,
    /// A rate limit's `requests_per_unit`, or a fair-share pool's capacity.
    #[serde(default)]
    pub limit: Option<u64>,
    /// Which limit `limit` changes, by name, when the rule has several.
    #[serde(default)]
    pub limit_name: Option<String>,
    #[serde(default)]
    pub concurrency: Option<u64>,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Seconds from now until the override lapses.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// An override in force, as stored (JSON) and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    /// Derived from the target: setting the same target again replaces it.
    pub id: String,
    pub domain: String,
    pub descriptor: Vec<TargetEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Seconds since the epoch; lapsed overrides are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who set it.
    pub by: String,
    /// When, in milliseconds since the epoch.
    pub set_at: u64,
}

impl Override {
    pub fn lapsed(&self, now_secs: u64) -> bool {
        self.expires_at.is_some_and(|at| at <= now_secs)
    }

    /// The target's entries as a rule lookup sees them (a prefix stands in for a value).
    fn lookup_entries(&self) -> Vec<(&str, &str)> {
        self.descriptor
            .iter()
            .map(|e| {
                let v = e.value.as_deref().or(e.prefix.as_deref()).unwrap_or("");
                (e.key.as_str(), v)
            })
            .collect()
    }
}

/// The id of a target: a short hash of its canonical JSON, stable across replicas.
pub fn target_id(domain: &str, descriptor: &[TargetEntry]) -> String {
    let canonical = serde_json::json!([domain, descriptor]).to_string();
    let hash = blake3::hash(canonical.as_bytes());
    hash.to_hex()[..16].to_owned()
}

/// Checks `request` against `rules` and builds the override to store.
pub fn validate(
    request: OverrideRequest,
    rules: &RuleSet,
    by: &str,
    now_ms: u64,
) -> Result<Override, String> {
    let r = request;
    if rules.domain(&r.domain).is_none() {
        return Err(format!("no domain '{}' in the rule set", r.domain));
    }
    if r.descriptor.is_empty() {
        return Err("`descriptor` needs at least one entry".into());
    }
    let last = r.descriptor.len() - 1;
    for (i, e) in r.descriptor.iter().enumerate() {
        if e.key.is_empty() {
            return Err(format!("descriptor entry {i} has an empty key"));
        }
        match (&e.value, &e.prefix) {
            (Some(_), None) => {}
            (None, Some(_)) if i == last => {}
            (None, Some(_)) => {
                return Err(format!(
                    "descriptor entry {i} has a `prefix`: only the last entry may match by prefix"
                ));
            }
            _ => {
                return Err(format!(
                    "descriptor entry {i} needs exactly one of `value` and `prefix`"
                ));
            }
        }
    }
    if r.limit.is_none() && r.concurrency.is_none() && r.weight.is_none() && r.mode.is_none() {
        return Err("nothing to override: give `limit`, `concurrency`, `weight` or `mode`".into());
    }
    let expires_at = match r.ttl_seconds {
        None => None,
        Some(0) => return Err("`ttl_seconds` must be at least 1".into()),
        Some(t) if t > MAX_TTL_SECS => {
            return Err(format!("`ttl_seconds` must be at most {MAX_TTL_SECS}"));
        }
        // Rounded up to the next whole second: the override then lasts at least `t` seconds.
        // Rounded down, one set at x.9 s with a TTL of 1 s lapsed 0.1 s later, often before the
        // other replicas had loaded it.
        Some(t) => Some(now_ms.div_ceil(1000) + t),
    };
    let o = Override {
        id: target_id(&r.domain, &r.descriptor),
        domain: r.domain,
        descriptor: r.descriptor,
        limit: r.limit,
        limit_name: r.limit_name,
        concurrency: r.concurrency,
        weight: r.weight,
        mode: r.mode,
        expires_at,
        reason: r.reason,
        by: by.to_owned(),
        set_at: now_ms,
    };
    let entries = o.lookup_entries();
    let rule = rules.lookup(&o.domain, &entries).ok_or_else(|| {
        format!(
            "unknown rule: the descriptor matches no rule of domain '{}'",
            o.domain
        )
    })?;
    applied(rule, &o)?;
    Ok(o)
}

/// `rule` with `o` applied, or why `o` does not fit `rule`.
pub fn applied(rule: &Rule, o: &Override) -> Result<Rule, String> {
    let mut rule = rule.clone();
    let crate::config::Limit::Limited(limits) = &mut rule.limit else {
        return Err(format!(
            "{} is unlimited: there is nothing to override",
            rule.stat_key
        ));
    };
    let has_pool = limits.iter().any(|l| l.algorithm == Algorithm::Concurrency);
    // A fair-share pool, or a concurrency pool whose queue weighs its tenants.
    let has_share = limits.iter().any(|l| l.share.is_some());
    if let Some(n) = o.limit {
        if n > MAX_UNITS {
            return Err(format!("`limit` must be at most {MAX_UNITS}"));
        }
        let counted: Vec<usize> = (0..limits.len())
            .filter(|&i| limits[i].algorithm != Algorithm::Concurrency)
            .filter(|&i| o.limit_name.is_none() || limits[i].name == o.limit_name)
            .collect();
        let i = match counted[..] {
            [i] => i,
            [] if o.limit_name.is_some() => {
                return Err(format!(
                    "{} has no counted limit named '{}'",
                    rule.stat_key,
                    o.limit_name.as_deref().unwrap_or_default()
                ));
            }
            [] => return Err(format!("{} has no rate limit to change", rule.stat_key)),
            _ => {
                return Err(format!(
                    "{} has {} limits: name the one to change with `limit_name`",
                    rule.stat_key,
                    counted.len()
                ));
            }
        };
        let l = &mut limits[i];
        if l.burst == l.requests_per_unit {
            l.burst = n;
        }
        l.requests_per_unit = n;
    }
    if let Some(n) = o.concurrency {
        if !has_pool {
            return Err(format!(
                "{} is not a concurrency pool: `concurrency` does not apply",
                rule.stat_key
            ));
        }
        if n > MAX_SLOTS {
            return Err(format!("`concurrency` must be at most {MAX_SLOTS}"));
        }
        for l in limits
            .iter_mut()
            .filter(|l| l.algorithm == Algorithm::Concurrency)
        {
            l.requests_per_unit = n;
            l.burst = n;
        }
    }
    if let Some(w) = o.weight {
        if !has_share {
            return Err(format!(
                "{} is not a fair-share pool or a weighted queue: `weight` does not apply",
                rule.stat_key
            ));
        }
        if w > MAX_WEIGHT {
            return Err(format!("`weight` must be at most {MAX_WEIGHT}"));
        }
        for l in limits.iter_mut().filter(|l| l.share.is_some()) {
            l.share = Some(std::sync::Arc::new(crate::config::ShareSpec {
                weights: Vec::new(),
                default_weight: w,
            }));
        }
    }
    if let Some(mode) = o.mode {
        rule.shadow_mode = mode == Mode::Shadow;
        // An operator's mode wins over a trial: ends it early (enforce) or extends it (shadow).
        rule.trial = None;
    }
    Ok(rule)
}

#[cfg(test)]
mod tests;
