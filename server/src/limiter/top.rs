//! The top consumers of each rule, in bounded memory: finding the app that hammers a shared API
//! without putting descriptor values in metric labels.
//!
//! Each rule keeps a Space-Saving summary (Metwally, Agrawal, El Abbadi, 2005) of [`SLOTS`]
//! counters: a consumer already tracked adds its hits; a new one takes a free slot, or replaces the
//! consumer with the fewest hits and starts from that count (recorded as its possible
//! overestimate, `error`). Every consumer with more than `total / SLOTS` hits is guaranteed to be
//! in the summary, and each count is at most `error` above the truth. Counts are this instance's
//! traffic since it started (or since the rule first saw traffic).
//!
//! A consumer is named by its descriptor entries as sent (`key=value` joined by `, `). Tracking
//! is on only when the admin API is, so the hot path pays nothing otherwise.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

/// Consumers tracked per rule.
pub const SLOTS: usize = 64;
/// Rules tracked at once; past this, new rules are not tracked (the rule set bounds it in
/// practice).
const MAX_RULES: usize = 10_000;

/// A consumer and its hits.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Consumer {
    pub descriptor: String,
    /// Hits counted, at most `error` more than the consumer really made.
    pub hits: u64,
    pub error: u64,
}

#[derive(Debug, Default)]
struct Summary {
    slots: Vec<Consumer>,
    index: HashMap<String, usize>,
    total: u64,
}

impl Summary {
    fn add(&mut self, name: String, hits: u64) {
        self.total = self.total.saturating_add(hits);
        if let Some(&i) = self.index.get(&name) {
            self.slots[i].hits = self.slots[i].hits.saturating_add(hits);
            return;
        }
        if self.slots.len() < SLOTS {
            self.index.insert(name.clone(), self.slots.len());
            self.slots.push(Consumer {
                descriptor: name,
                hits,
                error: 0,
            });
            return;
        }
        let Some((i, least)) = self
            .slots
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| c.hits)
            .map(|(i, c)| (i, c.hits))
        else {
            return;
        };
        self.index.remove(&self.slots[i].descriptor);
        self.index.insert(name.clone(), i);
        self.slots[i] = Consumer {
            descriptor: name,
            hits: least.saturating_add(hits),
            error: least,
        };
    }
}

/// Summaries per rule (by stats key).
#[derive(Debug, Default)]
pub struct TopConsumers {
    rules: RwLock<HashMap<Arc<str>, Arc<Mutex<Summary>>>>,
}

impl TopConsumers {
    /// Counts `hits` for the consumer named by `entries` under `rule`.
    pub fn record<'e>(
        &self,
        rule: &Arc<str>,
        entries: impl Iterator<Item = (&'e str, &'e str)>,
        hits: u64,
    ) {
        if hits == 0 {
            return;
        }
        let mut name = String::new();
        for (i, (k, v)) in entries.enumerate() {
            if i > 0 {
                name.push_str(", ");
            }
            name.push_str(k);
            name.push('=');
            name.push_str(v);
        }
        let existing = self.rules.read().get(rule).cloned();
        let summary = match existing {
            Some(s) => s,
            None => {
                let mut rules = self.rules.write();
                if rules.len() >= MAX_RULES && !rules.contains_key(rule) {
                    return;
                }
                Arc::clone(rules.entry(Arc::clone(rule)).or_default())
            }
        };
        summary.lock().add(name, hits);
    }

    /// The `n` heaviest consumers of `rule`, heaviest first, and the rule's total hits.
    pub fn top(&self, rule: &str, n: usize) -> Option<(Vec<Consumer>, u64)> {
        let summary = self.rules.read().get(rule).cloned()?;
        let summary = summary.lock();
        let mut all = summary.slots.clone();
        all.sort_by(|a, b| b.hits.cmp(&a.hits).then(a.descriptor.cmp(&b.descriptor)));
        all.truncate(n);
        Some((all, summary.total))
    }

    /// The rules with traffic, sorted.
    pub fn rules(&self) -> Vec<String> {
        let mut names: Vec<String> = self.rules.read().keys().map(|k| k.to_string()).collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(t: &TopConsumers, rule: &Arc<str>, who: &str, hits: u64) {
        t.record(rule, [("app", who)].into_iter(), hits);
    }

    #[test]
    fn heavy_hitters_survive_a_long_tail() {
        let t = TopConsumers::default();
        let rule: Arc<str> = Arc::from("d.app");
        // Two abusers among 10 000 one-off apps, interleaved.
        for i in 0..10_000 {
            record(&t, &rule, &format!("tail-{i}"), 1);
            if i % 10 == 0 {
                record(&t, &rule, "abuser-1", 3);
                record(&t, &rule, "abuser-2", 2);
            }
        }
        let (top, total) = t.top("d.app", 2).unwrap();
        assert_eq!(total, 10_000 + 1_000 * 5);
        assert_eq!(top[0].descriptor, "app=abuser-1");
        assert_eq!(top[1].descriptor, "app=abuser-2");
        // Counts overestimate by at most their error, never underestimate.
        assert!(top[0].hits >= 3_000 && top[0].hits - top[0].error <= 3_000);
        assert!(t.top("d.other", 5).is_none());
        assert_eq!(t.rules(), ["d.app"]);
        let summary = t.rules.read().get("d.app").cloned().unwrap();
        assert!(summary.lock().slots.len() <= SLOTS, "bounded memory");
    }

    #[test]
    fn names_join_every_entry() {
        let t = TopConsumers::default();
        let rule: Arc<str> = Arc::from("d.team.app");
        t.record(&rule, [("team", "t"), ("app", "a")].into_iter(), 4);
        t.record(&rule, [("team", "t"), ("app", "a")].into_iter(), 0);
        let (top, total) = t.top("d.team.app", 10).unwrap();
        assert_eq!(top[0].descriptor, "team=t, app=a");
        assert_eq!((top[0].hits, total), (4, 4));
    }
}
