//! Where overrides live and every admin change is recorded.
//!
//! | backend | overrides | audit log | replicas learn of a change |
//! |---|---|---|---|
//! | memory | this process | the last [`AUDIT_KEPT`] entries, in process | at once (one instance) |
//! | Redis | a hash, one JSON document per override | a capped list | pub/sub, and a poll of a version counter |
//! | etcd | one key per override under a prefix | one key per entry | a watch on the prefix, and a poll |
//!
//! A change and its audit entry are written in one atomic step, and the entry's `before` is what
//! the step replaced, so concurrent admins cannot record a stale "before".

pub mod etcd;
pub mod redis;

use std::collections::{BTreeMap, VecDeque};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::Override;

/// Audit entries the memory backend and the Redis list keep.
pub const AUDIT_KEPT: usize = 1_000;

/// One admin change: who did what, and the state before and after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Milliseconds since the epoch.
    pub at: u64,
    /// The admin token's name and, when given, the `X-Sluice-Actor` header.
    pub who: String,
    /// `override.set`, `override.delete` or `counters.reset`.
    pub action: String,
    pub target: serde_json::Value,
    pub after: serde_json::Value,
    /// Filled in by the store with what the change replaced. Serialized last: the Redis script
    /// appends it to the rest of the document.
    pub before: serde_json::Value,
}

impl AuditEntry {
    /// An entry about the override `o` by `who` at `at` (ms): its target is `o`'s id, domain and
    /// descriptor; `before` is left for the store to fill in.
    pub fn about(o: &Override, action: &str, who: &str, at: u64, after: serde_json::Value) -> Self {
        AuditEntry {
            at,
            who: who.to_owned(),
            action: action.to_owned(),
            target: serde_json::json!({ "id": o.id, "domain": o.domain, "descriptor": o.descriptor }),
            after,
            before: serde_json::Value::Null,
        }
    }

    /// The entry as JSON with `before` left for the store to fill in: the document up to and
    /// including `"before":`.
    pub(super) fn json_head(&self) -> String {
        let mut head = serde_json::json!({}).to_string();
        if let Ok(full) = serde_json::to_string(&AuditEntry {
            before: serde_json::Value::Null,
            ..self.clone()
        }) {
            head = full;
        }
        // `before` is the last field and is null here.
        head.truncate(head.len().saturating_sub("null}".len()));
        head
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OverrideError {
    #[error("override store unreachable: {0}")]
    Unreachable(String),
    #[error("override store replied unexpectedly: {0}")]
    Protocol(String),
}

/// What a guarded put did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guarded {
    /// Stored, replacing this.
    Stored(Option<Override>),
    /// Not stored: the target's override was set by someone else, and is kept.
    Kept(Override),
}

/// The configured backend.
pub enum OverrideStore {
    Memory(MemoryOverrides),
    Redis(Box<redis::RedisOverrides>),
    Etcd(etcd::EtcdOverrides),
}

impl OverrideStore {
    pub fn memory() -> Self {
        OverrideStore::Memory(MemoryOverrides::default())
    }

    pub fn name(&self) -> &'static str {
        match self {
            OverrideStore::Memory(_) => "memory",
            OverrideStore::Redis(_) => "redis",
            OverrideStore::Etcd(_) => "etcd",
        }
    }

    /// Every override stored, lapsed ones included.
    pub async fn load(&self) -> Result<Vec<Override>, OverrideError> {
        match self {
            OverrideStore::Memory(m) => Ok(m.state.lock().overrides.values().cloned().collect()),
            OverrideStore::Redis(r) => r.load().await,
            OverrideStore::Etcd(e) => e.load().await,
        }
    }

    /// Stores `o` (replacing any override of the same target) with `audit`, whose `before` the
    /// store fills in; returns what was replaced.
    pub async fn put(
        &self,
        o: &Override,
        audit: &AuditEntry,
    ) -> Result<Option<Override>, OverrideError> {
        match self {
            OverrideStore::Memory(m) => Ok(m.change(&o.id, Some(o.clone()), audit)),
            OverrideStore::Redis(r) => r.change(&o.id, Some(o), audit).await,
            OverrideStore::Etcd(e) => e.change(&o.id, Some(o), audit).await,
        }
    }

    /// Stores `o` as [`OverrideStore::put`] does, unless the override in force for its target
    /// was set by someone other than `o.by`: the check and the write are one atomic step, so an
    /// operator's override set a moment before is never replaced by an automatic one.
    pub async fn put_guarded(
        &self,
        o: &Override,
        audit: &AuditEntry,
    ) -> Result<Guarded, OverrideError> {
        match self {
            OverrideStore::Memory(m) => {
                let mut state = m.state.lock();
                if let Some(current) = state.overrides.get(&o.id)
                    && current.by != o.by
                {
                    return Ok(Guarded::Kept(current.clone()));
                }
                Ok(Guarded::Stored(state.change(&o.id, Some(o.clone()), audit)))
            }
            OverrideStore::Redis(r) => r.change_guarded(&o.id, o, audit).await,
            OverrideStore::Etcd(e) => e.change_guarded(&o.id, o, audit).await,
        }
    }

    /// Removes the override `id` with `audit`; returns it, or `None` when there was none (nothing
    /// is recorded then).
    pub async fn delete(
        &self,
        id: &str,
        audit: &AuditEntry,
    ) -> Result<Option<Override>, OverrideError> {
        match self {
            OverrideStore::Memory(m) => Ok(m.change(id, None, audit)),
            OverrideStore::Redis(r) => r.change(id, None, audit).await,
            OverrideStore::Etcd(e) => e.change(id, None, audit).await,
        }
    }

    /// Removes the override `id` as [`OverrideStore::delete`] does, unless it was set by someone
    /// other than `by` (kept then): one atomic step, as [`OverrideStore::put_guarded`].
    pub async fn delete_guarded(
        &self,
        id: &str,
        by: &str,
        audit: &AuditEntry,
    ) -> Result<Guarded, OverrideError> {
        match self {
            OverrideStore::Memory(m) => {
                let mut state = m.state.lock();
                if let Some(current) = state.overrides.get(id)
                    && current.by != by
                {
                    return Ok(Guarded::Kept(current.clone()));
                }
                Ok(Guarded::Stored(state.change(id, None, audit)))
            }
            OverrideStore::Redis(r) => r.delete_guarded(id, by, audit).await,
            OverrideStore::Etcd(e) => e.delete_guarded(id, by, audit).await,
        }
    }

    /// Records a change made elsewhere (a counter reset); `before` is taken as given.
    pub async fn record(&self, audit: &AuditEntry) -> Result<(), OverrideError> {
        match self {
            OverrideStore::Memory(m) => {
                m.state.lock().push_audit(audit.clone());
                Ok(())
            }
            OverrideStore::Redis(r) => r.record(audit).await,
            OverrideStore::Etcd(e) => e.record(audit).await,
        }
    }

    /// The latest `limit` audit entries, newest first.
    pub async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, OverrideError> {
        match self {
            OverrideStore::Memory(m) => {
                Ok(m.state.lock().audit.iter().take(limit).cloned().collect())
            }
            OverrideStore::Redis(r) => r.audit(limit).await,
            OverrideStore::Etcd(e) => e.audit(limit).await,
        }
    }

    /// A feed that fires when another replica may have changed the overrides, for backends that
    /// have one (Redis pub/sub, etcd watch). It reconnects by itself; the sync loop's poll covers
    /// the gaps.
    pub fn changes(&self) -> Option<tokio::sync::mpsc::Receiver<()>> {
        match self {
            OverrideStore::Memory(_) => None,
            OverrideStore::Redis(r) => Some(r.changes()),
            OverrideStore::Etcd(e) => Some(e.changes()),
        }
    }
}

/// Overrides of a single instance.
#[derive(Default)]
pub struct MemoryOverrides {
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    overrides: BTreeMap<String, Override>,
    audit: VecDeque<AuditEntry>,
}

impl MemoryState {
    fn push_audit(&mut self, entry: AuditEntry) {
        self.audit.push_front(entry);
        self.audit.truncate(AUDIT_KEPT);
    }
}

impl MemoryOverrides {
    fn change(&self, id: &str, next: Option<Override>, audit: &AuditEntry) -> Option<Override> {
        self.state.lock().change(id, next, audit)
    }
}

impl MemoryState {
    fn change(&mut self, id: &str, next: Option<Override>, audit: &AuditEntry) -> Option<Override> {
        let state = self;
        let before = match next {
            Some(o) => state.overrides.insert(id.to_owned(), o),
            None => state.overrides.remove(id),
        };
        if audit.action != "override.delete" || before.is_some() {
            let mut entry = audit.clone();
            entry.before = serde_json::to_value(&before).unwrap_or_default();
            state.push_audit(entry);
        }
        before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_head_leaves_before_open() {
        let entry = AuditEntry {
            at: 1,
            who: "ops".into(),
            action: "override.set".into(),
            target: serde_json::json!({"id": "x"}),
            after: serde_json::json!({"limit": 5}),
            before: serde_json::json!("ignored"),
        };
        let head = entry.json_head();
        assert!(head.ends_with(",\"before\":"), "{head}");
        let full: AuditEntry = serde_json::from_str(&format!("{head}{{\"limit\":3}}}}")).unwrap();
        assert_eq!(full.before, serde_json::json!({"limit": 3}));
        assert_eq!(full.who, "ops");
    }
}
