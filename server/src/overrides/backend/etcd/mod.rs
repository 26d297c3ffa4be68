//! Overrides in etcd (v3 API, 3.4 and later), for fleets that keep their control plane there.
//!
//! Keys, under `--etcd-prefix` (default `/sluice`):
//! - `<prefix>/overrides/<id>`: one override, as JSON;
//! - `<prefix>/audit/<ms since the epoch, 16 digits>-<random>`: one audit entry, as JSON;
//! - `<prefix>/fleet/…`: what the adaptive and standing controllers of the replicas add up
//!   ([`kv`]).
//!
//! A change reads the override's key, then commits a transaction that writes (or deletes) it and
//! adds the audit entry, on condition that the key is unchanged since the read (its
//! `mod_revision`, or its absence): a concurrent change makes it retry with the new "before", so
//! the audit log never records a stale one. Replicas watch the overrides prefix and reload on any
//! event; the sync loop's poll covers a broken watch.

mod kv;
mod proto;

use std::time::Duration;

use futures::StreamExt;
use tonic::transport::{Channel, Endpoint};

use super::{AuditEntry, OverrideError};
use crate::overrides::Override;
use proto::{
    Client, Compare, CompareWith, DeleteRangeRequest, Op, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};

/// Attempts at a change that concurrent changes keep invalidating.
const ATTEMPTS: usize = 8;

pub struct EtcdOverrides {
    client: Client,
    overrides: Vec<u8>,
    audit: Vec<u8>,
    /// `<prefix>/fleet/`: the adaptive and standing controllers' keys ([`kv`]).
    fleet: Vec<u8>,
    timeout: Duration,
}

fn unreachable(e: impl std::fmt::Display) -> OverrideError {
    OverrideError::Unreachable(e.to_string())
}

fn protocol(e: impl std::fmt::Display) -> OverrideError {
    OverrideError::Protocol(e.to_string())
}

impl EtcdOverrides {
    /// A client for `endpoints` (`http://host:port`, balanced). Checks that etcd answers.
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        timeout: Duration,
    ) -> Result<Self, OverrideError> {
        let endpoints = endpoints
            .iter()
            .map(|e| {
                Endpoint::from_shared(e.clone())
                    .map(|ep| ep.connect_timeout(timeout))
                    .map_err(|err| unreachable(format!("etcd endpoint {e}: {err}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(unreachable("no etcd endpoint given"));
        }
        let channel = Channel::balance_list(endpoints.into_iter());
        let prefix = prefix.trim_end_matches('/');
        let store = Self {
            client: Client::new(channel),
            overrides: format!("{prefix}/overrides/").into_bytes(),
            audit: format!("{prefix}/audit/").into_bytes(),
            fleet: format!("{prefix}/fleet/").into_bytes(),
            timeout,
        };
        store.load().await?;
        Ok(store)
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, OverrideError> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| unreachable(format!("etcd gave no answer within {:?}", self.timeout)))?
            .map_err(|s| unreachable(format!("etcd: {}", s.message())))
    }

    fn key_of(&self, id: &str) -> Vec<u8> {
        let mut key = self.overrides.clone();
        key.extend_from_slice(id.as_bytes());
        key
    }

    pub async fn load(&self) -> Result<Vec<Override>, OverrideError> {
        let range = RangeRequest {
            key: self.overrides.clone(),
            range_end: proto::prefix_end(&self.overrides),
            ..Default::default()
        };
        let response = self.bounded(self.client.range(range)).await?;
        response
            .kvs
            .iter()
            .map(|kv| serde_json::from_slice(&kv.value).map_err(protocol))
            .collect()
    }

    pub async fn change(
        &self,
        id: &str,
        next: Option<&Override>,
        audit: &AuditEntry,
    ) -> Result<Option<Override>, OverrideError> {
        match self.run_change(id, next, audit, None).await? {
            super::Guarded::Stored(before) => Ok(before),
            super::Guarded::Kept(_) => Err(protocol("unexpected guard refusal")),
        }
    }

    /// [`Self::change`] to `next`, unless the stored override was set by someone else: the
    /// transaction's compare on the revision read makes the check and the write one step.
    pub async fn change_guarded(
        &self,
        id: &str,
        next: &Override,
        audit: &AuditEntry,
    ) -> Result<super::Guarded, OverrideError> {
        self.run_change(id, Some(next), audit, Some(&next.by)).await
    }

    /// [`Self::change`] to nothing, unless the stored override was set by someone but `by`.
    pub async fn delete_guarded(
        &self,
        id: &str,
        by: &str,
        audit: &AuditEntry,
    ) -> Result<super::Guarded, OverrideError> {
        self.run_change(id, None, audit, Some(by)).await
    }

    async fn run_change(
        &self,
        id: &str,
        next: Option<&Override>,
        audit: &AuditEntry,
        guard: Option<&str>,
    ) -> Result<super::Guarded, OverrideError> {
        let key = self.key_of(id);
        let value = match next {
            Some(o) => Some(serde_json::to_vec(o).map_err(protocol)?),
            None => None,
        };
        for _ in 0..ATTEMPTS {
            let read = RangeRequest {
                key: key.clone(),
                ..Default::default()
            };
            let current = self.bounded(self.client.range(read)).await?.kvs.pop();
            let before: Option<Override> = match &current {
                Some(kv) => Some(serde_json::from_slice(&kv.value).map_err(protocol)?),
                None => None,
            };
            if value.is_none() && before.is_none() {
                return Ok(super::Guarded::Stored(None));
            }
            if let (Some(by), Some(b)) = (guard, &before)
                && b.by != by
            {
                return Ok(super::Guarded::Kept(b.clone()));
            }
            let unchanged = match &current {
                Some(kv) => Compare {
                    result: 0,
                    target: proto::TARGET_MOD,
                    key: key.clone(),
                    with: Some(CompareWith::ModRevision(kv.mod_revision)),
                },
                None => Compare {
                    result: 0,
                    target: proto::TARGET_VERSION,
                    key: key.clone(),
                    with: Some(CompareWith::Version(0)),
                },
            };
            let write = match &value {
                Some(v) => Op::Put(PutRequest {
                    key: key.clone(),
                    value: v.clone(),
                }),
                None => Op::DeleteRange(DeleteRangeRequest {
                    key: key.clone(),
                    range_end: Vec::new(),
                }),
            };
            let mut entry = audit.clone();
            entry.before = serde_json::to_value(&before).map_err(protocol)?;
            let record = Op::Put(self.audit_put(&entry)?);
            let txn = TxnRequest {
                compare: vec![unchanged],
                success: vec![
                    RequestOp {
                        request: Some(write),
                    },
                    RequestOp {
                        request: Some(record),
                    },
                ],
            };
            if self.bounded(self.client.txn(txn)).await?.succeeded {
                return Ok(super::Guarded::Stored(before));
            }
        }
        Err(unreachable(format!(
            "override {id} kept changing under this update; try again"
        )))
    }

    fn audit_put(&self, entry: &AuditEntry) -> Result<PutRequest, OverrideError> {
        let mut suffix = [0u8; 4];
        getrandom::fill(&mut suffix).map_err(protocol)?;
        let mut key = self.audit.clone();
        key.extend_from_slice(format!("{:016}-", entry.at).as_bytes());
        for b in suffix {
            key.extend_from_slice(format!("{b:02x}").as_bytes());
        }
        Ok(PutRequest {
            key,
            value: serde_json::to_vec(entry).map_err(protocol)?,
        })
    }

    pub async fn record(&self, audit: &AuditEntry) -> Result<(), OverrideError> {
        let put = self.audit_put(audit)?;
        self.bounded(self.client.put(put)).await.map(drop)
    }

    pub async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, OverrideError> {
        let range = RangeRequest {
            key: self.audit.clone(),
            range_end: proto::prefix_end(&self.audit),
            limit: limit.max(1) as i64,
            sort_order: proto::DESCEND,
        };
        let response = self.bounded(self.client.range(range)).await?;
        response
            .kvs
            .iter()
            .map(|kv| serde_json::from_slice(&kv.value).map_err(protocol))
            .collect()
    }

    /// Fires on every change under the overrides prefix, and after every (re)opened watch.
    pub fn changes(&self) -> tokio::sync::mpsc::Receiver<()> {
        let client = self.client.clone();
        let key = self.overrides.clone();
        crate::overrides::changes::follow("the etcd override watch", move || {
            let (client, key) = (client.clone(), key.clone());
            async move {
                let stream = client
                    .watch(key.clone(), proto::prefix_end(&key))
                    .await
                    .map_err(|e| e.message().to_owned())?;
                // Created, or events: either way, reload; a cancelled watch or an error ends it.
                Ok(stream.map(|message| match message {
                    Ok(r) if r.canceled => Err(format!("etcd cancelled it: {}", r.cancel_reason)),
                    Ok(_) => Ok(()),
                    Err(e) => Err(e.message().to_owned()),
                }))
            }
        })
    }
}
