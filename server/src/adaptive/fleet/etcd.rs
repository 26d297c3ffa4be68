//! The fleet's aggregates in etcd, for fleets whose overrides live there: plain keys under
//! `<etcd prefix>/fleet/` (`crate::overrides::backend::etcd`), one per replica and interval, so
//! replicas never contend on a key.
//!
//! | what | key (under `fleet/`) | value |
//! |---|---|---|
//! | interval `k` of rule `r`, one replica's reports | `adaptive/<r>/<k>/<replica>` | `{"n", "e", "b": [[bucket, count], …]}` |
//! | window `k` of rule `r`, one replica's refused tenants | `standing/<r>/<k>/<replica>` | `["tenant", …]` |
//! | who decides `k` of `name` | `lock/<name>/<k>` | empty, created once (a transaction on its version) |
//!
//! `k` is written with 20 digits so that keys sort by interval; `r` and `name` are escaped
//! (`%` and `/`). etcd keys do not expire here: the replica that decides an interval deletes the
//! keys of the intervals before it that nobody reads again (reports and locks; refused tenants
//! once they are older than the longest streak the rule looks at).

use std::collections::HashSet;
use std::ops::RangeInclusive;
use std::sync::Arc;

use super::super::sketch::{Aggregate, BUCKETS};
use crate::overrides::OverrideStore;
use crate::overrides::backend::etcd::EtcdOverrides;

pub struct EtcdFleet {
    store: Arc<OverrideStore>,
    /// This replica's name in its keys: random, per process.
    replica: String,
}

/// `r` with `%` and `/` escaped, so that no rule's keys fall under another's prefix.
fn escape(r: &str) -> String {
    r.replace('%', "%25").replace('/', "%2F")
}

fn interval(k: u64) -> String {
    format!("{k:020}")
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Wire {
    n: u64,
    e: u64,
    b: Vec<(usize, u64)>,
}

impl EtcdFleet {
    pub fn new(store: Arc<OverrideStore>) -> Self {
        Self {
            store,
            replica: format!("{:016x}", getrandom::u64().unwrap_or_default()),
        }
    }

    fn etcd(&self) -> Result<&EtcdOverrides, String> {
        match &*self.store {
            OverrideStore::Etcd(e) => Ok(e),
            other => Err(format!("the override store is {}, not etcd", other.name())),
        }
    }

    pub async fn add(&self, rule: &str, k: u64, agg: &Aggregate) -> Result<(), String> {
        if agg.reports == 0 {
            return Ok(());
        }
        let wire = Wire {
            n: agg.reports,
            e: agg.errors,
            b: agg
                .buckets
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| (i, *n))
                .collect(),
        };
        let value = serde_json::to_vec(&wire).map_err(|e| e.to_string())?;
        let key = format!("adaptive/{}/{}/{}", escape(rule), interval(k), self.replica);
        self.etcd()?
            .fleet_put(&key, value)
            .await
            .map_err(|e| e.to_string())
    }

    /// Whether this replica decides `k` of `name`; the winner also deletes the locks of the
    /// intervals before the last.
    pub async fn claim(&self, name: &str, k: u64) -> Result<bool, String> {
        let etcd = self.etcd()?;
        let base = format!("lock/{}/", escape(name));
        let won = etcd
            .fleet_create(&format!("{base}{}", interval(k)))
            .await
            .map_err(|e| e.to_string())?;
        if won {
            let before = format!("{base}{}", interval(k.saturating_sub(1)));
            etcd.fleet_delete(&base, &before)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(won)
    }

    /// The fleet's aggregate of interval `k` of `rule`; the reports of the intervals before it
    /// are deleted (nobody reads them again).
    pub async fn read(&self, rule: &str, k: u64) -> Result<Aggregate, String> {
        let etcd = self.etcd()?;
        let base = format!("adaptive/{}/", escape(rule));
        let found = etcd
            .fleet_scan(&format!("{base}{}/", interval(k)))
            .await
            .map_err(|e| e.to_string())?;
        let mut agg = Aggregate::default();
        for (key, value) in found {
            let Ok(w) = serde_json::from_slice::<Wire>(&value) else {
                tracing::warn!(
                    key,
                    "adaptive limits: a fleet key that does not parse; skipped"
                );
                continue;
            };
            agg.reports += w.n;
            agg.errors += w.e;
            for (i, n) in w.b.into_iter().filter(|(i, _)| *i < BUCKETS) {
                agg.buckets[i] += n;
            }
        }
        etcd.fleet_delete(&base, &format!("{base}{}", interval(k)))
            .await
            .map_err(|e| e.to_string())?;
        Ok(agg)
    }

    pub async fn add_refused(
        &self,
        rule: &str,
        k: u64,
        tenants: &HashSet<String>,
    ) -> Result<(), String> {
        if tenants.is_empty() {
            return Ok(());
        }
        let value = serde_json::to_vec(tenants).map_err(|e| e.to_string())?;
        let key = format!("standing/{}/{}/{}", escape(rule), interval(k), self.replica);
        self.etcd()?
            .fleet_put(&key, value)
            .await
            .map_err(|e| e.to_string())
    }

    /// The tenants refused in every window of `ks` (`all`), or in any.
    pub async fn refused(
        &self,
        rule: &str,
        ks: RangeInclusive<u64>,
        all: bool,
    ) -> Result<HashSet<String>, String> {
        let etcd = self.etcd()?;
        let base = format!("standing/{}/", escape(rule));
        let mut windows = Vec::new();
        for k in ks {
            let found = etcd
                .fleet_scan(&format!("{base}{}/", interval(k)))
                .await
                .map_err(|e| e.to_string())?;
            let mut window = HashSet::new();
            for (_, value) in found {
                if let Ok(list) = serde_json::from_slice::<Vec<String>>(&value) {
                    window.extend(list);
                }
            }
            windows.push(window);
        }
        Ok(super::combine(windows.into_iter(), all))
    }

    /// Deletes the refused tenants of `rule`'s windows before `k`.
    pub async fn forget_before(&self, rule: &str, k: u64) -> Result<(), String> {
        let base = format!("standing/{}/", escape(rule));
        self.etcd()?
            .fleet_delete(&base, &format!("{base}{}", interval(k)))
            .await
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_escaped_and_intervals_sort() {
        assert_eq!(escape("d.a/b%c"), "d.a%2Fb%25c");
        assert!(interval(99) < interval(100));
        assert_eq!(interval(1).len(), 20);
    }
}
