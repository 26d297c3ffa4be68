//! The tenants a fair-share pool with `standing` refused, per rule, until the standing controller
//! (`crate::adaptive::standing`) takes them at the end of each window.
//!
//! Only refusals are recorded, and only for rules with a `standing` block: a check that is
//! admitted, or whose rule has none, never touches this. Each rule keeps at most
//! [`MAX_TENANTS_PER_WINDOW`] tenants between two takes; the rest are counted and forgotten, so
//! an adversary inventing tenant values buys neither memory nor a penalty for someone else.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Tenants one rule remembers as refused between two takes.
pub const MAX_TENANTS_PER_WINDOW: usize = 4_096;

#[derive(Default)]
pub struct Refusals {
    by_rule: Mutex<HashMap<Arc<str>, HashSet<String>>>,
    /// Refused tenants not remembered because their rule's set was full.
    overflowed: AtomicU64,
}

impl Refusals {
    /// `tenant` was refused by `rule`'s pool.
    pub fn refused(&self, rule: &Arc<str>, tenant: &str) {
        let mut by_rule = self.by_rule.lock();
        let set = by_rule.entry(Arc::clone(rule)).or_default();
        if set.contains(tenant) {
            return;
        }
        if set.len() >= MAX_TENANTS_PER_WINDOW {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        set.insert(tenant.to_owned());
    }

    /// The tenants `rule` refused since the last take.
    pub fn take(&self, rule: &str) -> HashSet<String> {
        self.by_rule.lock().remove(rule).unwrap_or_default()
    }

    /// Forgets the rules that no longer have `standing` (after a reload).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.by_rule.lock().retain(|rule, _| keep(rule));
    }

    /// Refused tenants forgotten because their rule's set was full, since start.
    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_remembers_each_refused_tenant_once_within_its_bound() {
        let r = Refusals::default();
        let rule: Arc<str> = Arc::from("d.tenant");
        r.refused(&rule, "acme");
        r.refused(&rule, "acme");
        for i in 0..MAX_TENANTS_PER_WINDOW + 10 {
            r.refused(&rule, &format!("t{i}"));
        }
        let taken = r.take("d.tenant");
        assert_eq!(taken.len(), MAX_TENANTS_PER_WINDOW);
        assert!(taken.contains("acme"));
        assert_eq!(r.overflowed(), 11);
        assert!(r.take("d.tenant").is_empty());
    }
}
