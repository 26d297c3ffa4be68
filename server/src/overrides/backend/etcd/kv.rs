//! Plain keys under `<prefix>/fleet/`, for the adaptive and standing controllers
//! (`crate::adaptive::fleet`): put, create-if-absent, range and range delete, each bounded by the
//! store's timeout. Keys are given relative to `<prefix>/fleet/`.

use super::proto::{
    Compare, CompareWith, DeleteRangeRequest, Op, PutRequest, RangeRequest, RequestOp, TxnRequest,
    prefix_end,
};
use super::{EtcdOverrides, OverrideError, protocol};

impl EtcdOverrides {
    fn fleet_key(&self, key: &str) -> Vec<u8> {
        let mut k = self.fleet.clone();
        k.extend_from_slice(key.as_bytes());
        k
    }

    /// Puts `value` at `key`.
    pub async fn fleet_put(&self, key: &str, value: Vec<u8>) -> Result<(), OverrideError> {
        let put = PutRequest {
            key: self.fleet_key(key),
            value,
        };
        self.bounded(self.client.put(put)).await.map(drop)
    }

    /// Creates `key` (empty) unless it exists; whether this call created it.
    pub async fn fleet_create(&self, key: &str) -> Result<bool, OverrideError> {
        let key = self.fleet_key(key);
        let txn = TxnRequest {
            compare: vec![Compare {
                result: 0,
                target: super::proto::TARGET_VERSION,
                key: key.clone(),
                with: Some(CompareWith::Version(0)),
            }],
            success: vec![RequestOp {
                request: Some(Op::Put(PutRequest {
                    key,
                    value: Vec::new(),
                })),
            }],
        };
        Ok(self.bounded(self.client.txn(txn)).await?.succeeded)
    }

    /// Every key starting with `prefix`, relative, with its value.
    pub async fn fleet_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, OverrideError> {
        let key = self.fleet_key(prefix);
        let range = RangeRequest {
            range_end: prefix_end(&key),
            key,
            ..Default::default()
        };
        let response = self.bounded(self.client.range(range)).await?;
        response
            .kvs
            .into_iter()
            .map(|kv| {
                let key = kv.key[self.fleet.len()..].to_vec();
                String::from_utf8(key)
                    .map(|k| (k, kv.value))
                    .map_err(protocol)
            })
            .collect()
    }

    /// Deletes every key in `[from, to)`.
    pub async fn fleet_delete(&self, from: &str, to: &str) -> Result<(), OverrideError> {
        let delete = DeleteRangeRequest {
            key: self.fleet_key(from),
            range_end: self.fleet_key(to),
        };
        self.bounded(self.client.delete_range(delete))
            .await
            .map(drop)
    }
}
