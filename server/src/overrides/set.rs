//! The overrides in force on this instance, indexed for the check path.
//!
//! A descriptor is overridden by the override whose target equals its entries, else by the one
//! whose target equals all but the last entry and whose prefix starts the last value (the longest
//! prefix wins). Lapsed overrides are skipped. Each override is resolved once against the live
//! rule set: the rule its target matched, with the override applied, is kept ready, so a check
//! that matches that rule swaps it in without copying anything. (A prefix can match values that
//! select another rule, an exact one beside a wildcard; that rule is overridden on the fly.)

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use super::{Override, applied};
use crate::config::{Rule, RuleSet};

struct Resolved {
    o: Override,
    /// The rule the target matched when resolved, and that rule with the override applied.
    base: Option<(Arc<Rule>, Arc<Rule>)>,
}

/// Overrides indexed by domain and target.
#[derive(Default)]
pub struct OverrideSet {
    all: Vec<Resolved>,
    /// Hash of (domain, entries) → overrides with exact targets.
    exact: HashMap<u64, Vec<usize>>,
    /// Hash of (domain, entries but the last, last key) → prefix overrides.
    prefixed: HashMap<u64, Vec<usize>>,
    hasher: std::hash::RandomState,
    /// The `/rlconfig` section.
    pub dump: String,
}

impl std::fmt::Debug for OverrideSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverrideSet")
            .field("overrides", &self.all.len())
            .finish()
    }
}

impl OverrideSet {
    /// Indexes `overrides` against `rules`. One that no longer fits the rules (the rule changed)
    /// is kept listed but not applied, with the reason in the dump.
    pub fn new(overrides: Vec<Override>, rules: &RuleSet) -> Self {
        let mut set = OverrideSet::default();
        let mut sorted = overrides;
        sorted.sort_by(|a, b| a.id.cmp(&b.id));
        for o in sorted {
            let entries = o.lookup_entries();
            let base = rules.lookup(&o.domain, &entries).cloned();
            let resolved = match &base {
                None => Err("its target matches no rule any more".to_owned()),
                Some(rule) => applied(rule, &o),
            };
            let i = set.all.len();
            match &resolved {
                Ok(rule) => {
                    let _ = writeln!(
                        set.dump,
                        "{}: override {} by {}{}{}",
                        rule.stat_key,
                        describe(&o),
                        o.by,
                        o.expires_at
                            .map(|at| format!(", until {at}"))
                            .unwrap_or_default(),
                        o.reason
                            .as_deref()
                            .map(|r| format!(", reason: {r}"))
                            .unwrap_or_default()
                    );
                }
                Err(why) => {
                    let _ = writeln!(set.dump, "{}: not applied: {why}", o.id);
                }
            }
            let base = match (base, resolved) {
                (Some(b), Ok(r)) => Some((b, Arc::new(r))),
                _ => None,
            };
            let keys: Vec<(&str, &str)> = o.lookup_entries();
            let (last_key, _) = keys[keys.len() - 1];
            let is_prefix = o.descriptor.last().is_some_and(|e| e.prefix.is_some());
            let h = if is_prefix {
                set.hash(&o.domain, &keys[..keys.len() - 1], Some(last_key))
            } else {
                set.hash(&o.domain, &keys, None)
            };
            let index = if is_prefix {
                &mut set.prefixed
            } else {
                &mut set.exact
            };
            index.entry(h).or_default().push(i);
            set.all.push(Resolved { o, base });
        }
        if !set.all.is_empty() {
            set.dump
                .insert_str(0, "# runtime overrides (win over the rules above)\n");
        }
        set
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// The overrides, as stored.
    pub fn overrides(&self) -> impl Iterator<Item = &Override> {
        self.all.iter().map(|r| &r.o)
    }

    fn hash(&self, domain: &str, entries: &[(&str, &str)], last_key: Option<&str>) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(domain.as_bytes());
        h.write_u8(0xff);
        for (k, v) in entries {
            h.write(k.as_bytes());
            h.write_u8(0xfe);
            h.write(v.as_bytes());
            h.write_u8(0xff);
        }
        if let Some(k) = last_key {
            h.write_u8(0xfd);
            h.write(k.as_bytes());
        }
        h.finish()
    }

    /// `rule` as overridden for a descriptor with `entries` at `now_secs`, or `rule` itself.
    pub fn apply(
        &self,
        domain: &str,
        entries: &[(&str, &str)],
        rule: &Arc<Rule>,
        now_secs: u64,
    ) -> Arc<Rule> {
        match self.find(domain, entries, now_secs) {
            None => Arc::clone(rule),
            Some(r) => match &r.base {
                Some((base, overridden)) if Arc::ptr_eq(base, rule) => Arc::clone(overridden),
                _ => applied(rule, &r.o).map_or_else(|_| Arc::clone(rule), Arc::new),
            },
        }
    }

    fn find(&self, domain: &str, entries: &[(&str, &str)], now_secs: u64) -> Option<&Resolved> {
        if self.all.is_empty() || entries.is_empty() {
            return None;
        }
        let live = |i: &usize| {
            let r = &self.all[*i];
            (!r.o.lapsed(now_secs)).then_some(r)
        };
        if let Some(candidates) = self.exact.get(&self.hash(domain, entries, None))
            && let Some(r) = candidates
                .iter()
                .filter_map(live)
                .find(|r| r.o.domain == domain && r.o.lookup_entries() == entries)
        {
            return Some(r);
        }
        let (last_key, last_value) = entries[entries.len() - 1];
        let head = &entries[..entries.len() - 1];
        let candidates = self
            .prefixed
            .get(&self.hash(domain, head, Some(last_key)))?;
        candidates
            .iter()
            .filter_map(live)
            .filter(|r| {
                let keys = r.o.lookup_entries();
                let (k, prefix) = keys[keys.len() - 1];
                r.o.domain == domain
                    && keys[..keys.len() - 1] == *head
                    && k == last_key
                    && last_value.starts_with(prefix)
            })
            .max_by_key(|r| {
                r.o.descriptor
                    .last()
                    .and_then(|e| e.prefix.as_ref())
                    .map_or(0, String::len)
            })
    }
}

/// The override's changes in words: `limit=500 weight=4 mode=shadow`.
fn describe(o: &Override) -> String {
    let mut out = String::new();
    if let Some(n) = o.limit {
        let _ = write!(out, "limit={n}");
        if let Some(name) = &o.limit_name {
            let _ = write!(out, " ({name})");
        }
    }
    for (field, value) in [
        ("concurrency", o.concurrency.map(|n| n.to_string())),
        ("weight", o.weight.map(|w| w.to_string())),
        (
            "mode",
            o.mode.map(|m| match m {
                super::Mode::Shadow => "shadow".to_owned(),
                super::Mode::Enforce => "enforce".to_owned(),
            }),
        ),
    ] {
        if let Some(v) = value {
            if !out.is_empty() {
                out.push(' ');
            }
            let _ = write!(out, "{field}={v}");
        }
    }
    let target: Vec<String> = o
        .descriptor
        .iter()
        .map(|e| match (&e.value, &e.prefix) {
            (Some(v), _) => format!("{}={v}", e.key),
            (None, Some(p)) => format!("{}={p}*", e.key),
            _ => e.key.clone(),
        })
        .collect();
    format!("[{}] {out} (id {})", target.join(", "), o.id)
}
