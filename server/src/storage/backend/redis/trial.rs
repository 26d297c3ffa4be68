//! When a trial rule first saw a descriptor's values (`limiter::trial`): one key per value set,
//! holding the first-seen instant in µs on Redis's clock, set once (the first replica to ask
//! wins) and kept for as long as the caller asks, past the trial's end.
//!
//! **KEYS**: the trial key (`storage::keys::KeySchema::trial_key_in`). **ARGV**: the time in
//! µs (empty for Redis `TIME`; tests pin it), how long to keep a new key in ms, and whether a new
//! key may be created (`1`) or only looked up (`0`). **Reply**: the first-seen instant (0: never
//! seen, and not created) and the script's `now`, both in µs, and 1 when this call created it.

use std::sync::OnceLock;
use std::time::Duration;

use redis::Script;

use super::{RedisStore, bounded};
use crate::algorithm::Micros;
use crate::storage::{FirstSeen, StoreError};

const SOURCE: &str = r"
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local first = redis.call('GET', KEYS[1])
if first then return { tonumber(first), now, 0 } end
if ARGV[3] ~= '1' then return { 0, now, 0 } end
redis.call('SET', KEYS[1], now, 'PX', ARGV[2])
return { now, now, 1 }
";

fn script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| Script::new(SOURCE))
}

impl RedisStore {
    pub(super) async fn run_first_seen(
        &self,
        key: &[u8],
        keep: Duration,
        create: bool,
    ) -> Result<FirstSeen, StoreError> {
        let mut call = script().prepare_invoke();
        call.key(key)
            .arg(self.time_arg())
            .arg(keep.as_millis().max(1) as u64)
            .arg(if create { "1" } else { "0" });
        let mut conn = self.links.get()?;
        let (first, now, created): (Micros, Micros, u8) =
            bounded(self.timeout, call.invoke_async(&mut conn)).await?;
        Ok(FirstSeen {
            first,
            now,
            created: created == 1,
        })
    }
}
