//! Appending to a Redis stream over the counters' own connections, so whatever reaches the
//! counters (one server, Sentinel's master, a Cluster's node for the key's slot, TLS, ACL user)
//! reaches the stream too, with no second set of connection settings. Quota notifications use it
//! for their `redis_stream` sink.
//!
//! `XADD key MAXLEN ~ n * field value…`: the `~` lets Redis trim whole radix-tree nodes, so the
//! stream holds at least `n` entries and a little more, at a fraction of the cost of exact
//! trimming. The key is the operator's, as configured: it is not under the counters' prefix, so
//! the ACL user needs it granted (`docs/operations.md`).

use super::{RedisStore, bounded};
use crate::storage::StoreError;

impl RedisStore {
    /// Adds one entry of `fields` to the stream `key`, trimmed to about `max_len` entries;
    /// returns the entry's id. Bounded by the store's call timeout.
    pub async fn append_to_stream(
        &self,
        key: &str,
        max_len: u64,
        fields: &[(&str, &[u8])],
    ) -> Result<String, StoreError> {
        let mut conn = self.links.get()?;
        let mut cmd = redis::cmd("XADD");
        cmd.arg(key).arg("MAXLEN").arg("~").arg(max_len).arg("*");
        for (field, value) in fields {
            cmd.arg(*field).arg(*value);
        }
        let result = bounded(self.timeout, cmd.query_async::<String>(&mut conn)).await;
        if result.as_ref().is_err_and(StoreError::is_transient) {
            self.links.report_failure();
        }
        result
    }
}
