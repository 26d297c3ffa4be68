//! Overrides in Redis, for a fleet on the Redis counter store (the default there).
//!
//! Keys share one hash tag, so a Redis Cluster keeps them on one node and a script may touch
//! them together (`<prefix>` is `--key-prefix`):
//!
//! - `<prefix>{sluice-overrides}`: a hash, override id → override JSON;
//! - `<prefix>{sluice-overrides}:version`: a counter bumped by every change;
//! - `<prefix>{sluice-overrides}:audit`: the audit log, newest first, capped at
//!   [`AUDIT_KEPT`] entries.
//!
//! A change is one script (read the old value, write the new one, bump the version, append the
//! audit entry with that old value as `before`, publish the version on the channel
//! `<prefix>sluice-overrides`): atomic, one round trip. Replicas subscribe to the channel to
//! reload at once, and poll the version so a lost message or a broken subscription delays a
//! change by one poll interval at most.

use std::time::Duration;

use futures::StreamExt;
use redis::Script;
use redis::aio::ConnectionManager;

use super::{AUDIT_KEPT, AuditEntry, OverrideError};
use crate::overrides::Override;
use crate::storage::backend::redis::lazy::LazyConnection;

const CHANGE: &str = r"
local before = redis.call('HGET', KEYS[1], ARGV[1])
if before and ARGV[6] ~= '' then
  local ok, doc = pcall(cjson.decode, before)
  if ok and type(doc) == 'table' and doc.by ~= ARGV[6] then return {2, before} end
end
if ARGV[2] == '' then
  if not before then return {0, ''} end
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local version = redis.call('INCR', KEYS[2])
redis.call('LPUSH', KEYS[3], ARGV[3] .. (before or 'null') .. '}')
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[5]) - 1)
redis.call('PUBLISH', ARGV[4], version)
if before then return {1, before} end
return {0, ''}
";

const RECORD: &str = r"
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
return 1
";

const LOAD: &str = r"
return {redis.call('GET', KEYS[2]) or '0', redis.call('HGETALL', KEYS[1])}
";

pub struct RedisOverrides {
    client: redis::Client,
    /// Made on first use, so an unreachable Redis never holds up start-up: overrides load once
    /// it answers.
    conn: LazyConnection,
    timeout: Duration,
    hash: String,
    version: String,
    audit: String,
    channel: String,
    change: Script,
    record: Script,
    load: Script,
}

fn unreachable(e: impl std::fmt::Display) -> OverrideError {
    OverrideError::Unreachable(e.to_string())
}

impl RedisOverrides {
    /// Overrides at the Redis `client` reaches; nothing is connected yet.
    pub fn new(client: redis::Client, prefix: &str, timeout: Duration) -> Self {
        let base = format!("{prefix}{{sluice-overrides}}");
        Self {
            conn: LazyConnection::new(client.clone(), timeout),
            client,
            timeout,
            version: format!("{base}:version"),
            audit: format!("{base}:audit"),
            hash: base,
            channel: format!("{prefix}sluice-overrides"),
            change: Script::new(CHANGE),
            record: Script::new(RECORD),
            load: Script::new(LOAD),
        }
    }

    /// The connection, made now if it does not exist yet (bounded by the timeout).
    async fn conn(&self) -> Result<ConnectionManager, OverrideError> {
        self.conn.get().await.map_err(unreachable)
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, OverrideError> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", self.timeout)))?
            .map_err(unreachable)
    }

    pub async fn load(&self) -> Result<Vec<Override>, OverrideError> {
        let mut conn = self.conn().await?;
        let mut call = self.load.prepare_invoke();
        call.key(&self.hash).key(&self.version);
        let (_version, flat): (String, Vec<(String, String)>) =
            self.bounded(call.invoke_async(&mut conn)).await?;
        flat.into_iter()
            .map(|(id, json)| {
                serde_json::from_str(&json)
                    .map_err(|e| OverrideError::Protocol(format!("override {id}: {e}")))
            })
            .collect()
    }

    pub async fn change(
        &self,
        id: &str,
        next: Option<&Override>,
        audit: &AuditEntry,
    ) -> Result<Option<Override>, OverrideError> {
        match self.run_change(id, next, audit, "").await? {
            (2, _) => Err(OverrideError::Protocol("unexpected guard refusal".into())),
            (_, before) => Ok(before),
        }
    }

    /// [`Self::change`] to `next`, unless the stored override was set by someone else (`ARGV[6]`
    /// of the script: the `by` a stored override must have to be replaced).
    pub async fn change_guarded(
        &self,
        id: &str,
        next: &Override,
        audit: &AuditEntry,
    ) -> Result<super::Guarded, OverrideError> {
        Ok(
            match self.run_change(id, Some(next), audit, &next.by).await? {
                (2, Some(current)) => super::Guarded::Kept(current),
                (_, before) => super::Guarded::Stored(before),
            },
        )
    }

    /// [`Self::change`] to nothing, unless the stored override was set by someone but `by`.
    pub async fn delete_guarded(
        &self,
        id: &str,
        by: &str,
        audit: &AuditEntry,
    ) -> Result<super::Guarded, OverrideError> {
        Ok(match self.run_change(id, None, audit, by).await? {
            (2, Some(current)) => super::Guarded::Kept(current),
            (_, before) => super::Guarded::Stored(before),
        })
    }

    async fn run_change(
        &self,
        id: &str,
        next: Option<&Override>,
        audit: &AuditEntry,
        guard: &str,
    ) -> Result<(u8, Option<Override>), OverrideError> {
        let json = match next {
            Some(o) => {
                serde_json::to_string(o).map_err(|e| OverrideError::Protocol(e.to_string()))?
            }
            None => String::new(),
        };
        let mut conn = self.conn().await?;
        let mut call = self.change.prepare_invoke();
        call.key(&self.hash)
            .key(&self.version)
            .key(&self.audit)
            .arg(id)
            .arg(json)
            .arg(audit.json_head())
            .arg(&self.channel)
            .arg(AUDIT_KEPT)
            .arg(guard);
        let (found, before): (u8, String) = self.bounded(call.invoke_async(&mut conn)).await?;
        if found == 0 {
            return Ok((0, None));
        }
        serde_json::from_str(&before)
            .map(|b| (found, Some(b)))
            .map_err(|e| OverrideError::Protocol(format!("override {id}: {e}")))
    }

    pub async fn record(&self, audit: &AuditEntry) -> Result<(), OverrideError> {
        let entry =
            serde_json::to_string(audit).map_err(|e| OverrideError::Protocol(e.to_string()))?;
        let mut conn = self.conn().await?;
        let mut call = self.record.prepare_invoke();
        call.key(&self.audit).arg(entry).arg(AUDIT_KEPT);
        self.bounded(call.invoke_async::<u8>(&mut conn))
            .await
            .map(drop)
    }

    pub async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, OverrideError> {
        let mut conn = self.conn().await?;
        let stop = limit.max(1) as isize - 1;
        let entries: Vec<String> = self
            .bounded(
                redis::cmd("LRANGE")
                    .arg(&self.audit)
                    .arg(0)
                    .arg(stop)
                    .query_async(&mut conn),
            )
            .await?;
        entries
            .iter()
            .map(|e| serde_json::from_str(e).map_err(|e| OverrideError::Protocol(e.to_string())))
            .collect()
    }

    /// Fires on every message on the channel, and after every (re)subscription, since messages
    /// published while disconnected are lost.
    pub fn changes(&self) -> tokio::sync::mpsc::Receiver<()> {
        let client = self.client.clone();
        let channel = self.channel.clone();
        crate::overrides::changes::follow("the override change subscription", move || {
            let (client, channel) = (client.clone(), channel.clone());
            async move {
                let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
                pubsub
                    .subscribe(&channel)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(pubsub.into_on_message().map(|_| Ok(())))
            }
        })
    }
}
