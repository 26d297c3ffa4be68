//! The counter key schema, shared by every backend.
//!
//! A counter is identified by its domain, the descriptor entries that selected the rule, and the
//! limit's algorithm and window:
//!
//! ```text
//! <prefix>sl:<len>:<domain>|<len>:<key>|<len>:<value>|...|<policy>
//! e.g.    sl:6:orders|7:user_id|5:alice|f60
//! ```
//!
//! `<policy>` is the algorithm's letter (`f` fixed window, `s` sliding window, `t` token bucket,
//! `p` fair-share pool) followed by the window: seconds (`f60`, `t1`), or a calendar unit and
//! count (`fcM1` for one calendar month, `fcW2` for two ISO weeks). A concurrency pool is `l`
//! alone: its period is the lease TTL, and changing the TTL must keep the leases already held, or
//! the pool would hand out more slots than it has.
//!
//! Why this shape:
//! - **No collisions.** envoyproxy/ratelimit joins parts with `_` without escaping, so the entries
//!   `(a_b, c)` and `(a, b_c)` share one counter. Here every variable part carries its byte length,
//!   so the key decodes unambiguously left to right and distinct inputs give distinct keys
//!   (for one prefix; the prefix is a deployment constant, not decoded).
//! - **One key per counter, for its whole life.** The window start is inside the stored state,
//!   not the key (see [`crate::algorithm::State`]), so every key a request touches is known before
//!   the store reads the clock, and a Redis script can declare all of them. The algorithm and
//!   window are in the key, so two limits of one descriptor never share a counter, and a rule that
//!   changes algorithm starts fresh instead of misreading the old state. The limit value is not in
//!   the key: raising a limit keeps the counts, as in the reference.
//! - **Readable.** Plain text with separators, so `redis-cli --scan --pattern '*sl:6:orders|*'`
//!   finds a domain's counters. Values are raw bytes: descriptor values containing `|` or `:` stay
//!   unambiguous thanks to the lengths.
//! - **Optionally private.** With a [`ValueHasher`], descriptor values (API keys, user ids) reach
//!   the store only as keyed hashes: `h` and 32 hex digits of a keyed BLAKE3 hash. Domains and
//!   keys come from the config and stay readable.
//!
//! **Redis Cluster placement** ([`KeySchema::with_hash_tags`]). Redis Cluster puts a key in the
//! hash slot of its *hash tag*: the text between its first `{` and the next `}`, or the whole key
//! when that text is empty or missing. On a Cluster every key starts (after the prefix) with an
//! explicit tag, so descriptor values containing braces can never choose a slot:
//!
//! ```text
//! sl:{}…            each counter stands alone (the default): `{}` is an empty tag, the whole key
//!                   is hashed, and nothing later in the key can form a tag
//! sl:{acme}…        the domain names `shard_by: org` and the request's `org` is `acme`: every
//!                   counter of the request carrying `org=acme` shares the slot of `acme`, so one
//!                   script decides the tenant's whole hierarchy atomically
//! ```
//!
//! The tag is the value as stored (its keyed hash under value hashing). A value containing `}`
//! ends the tag early: its counters still share one slot (the same truncated tag), possibly with
//! other tenants; an empty value gives `{}`. Neither changes which counter a key names, only where
//! it lives. A request whose counters are in several slots is still all-or-nothing
//! (`storage::backend::redis::cluster`), with one script per slot.

use crate::algorithm::{Algorithm, Period, Policy};

/// Builds counter keys for one deployment: a prefix and, optionally, value hashing.
#[derive(Clone, Default)]
pub struct KeySchema {
    prefix: Vec<u8>,
    hasher: Option<ValueHasher>,
    hash_tags: bool,
}

impl std::fmt::Debug for KeySchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySchema")
            .field("prefix", &String::from_utf8_lossy(&self.prefix))
            .field("hash_values", &self.hasher.is_some())
            .finish()
    }
}

impl KeySchema {
    pub fn new(prefix: impl Into<Vec<u8>>, hasher: Option<ValueHasher>) -> Self {
        Self {
            prefix: prefix.into(),
            hasher,
            hash_tags: false,
        }
    }

    /// Keys for Redis Cluster: each starts with a hash tag (see the module doc).
    pub fn with_hash_tags(mut self) -> Self {
        self.hash_tags = true;
        self
    }

    /// The key of one counter. `parts` are the descriptor entries as `(key, value)` pairs, in
    /// descriptor order (a `share_threshold` rule passes its pattern instead of the value).
    pub fn counter_key<'a>(
        &self,
        domain: &str,
        parts: impl IntoIterator<Item = (&'a str, &'a str)>,
        policy: &Policy,
    ) -> Vec<u8> {
        self.counter_key_in(domain, parts, policy, None)
    }

    /// [`counter_key`](Self::counter_key) placed by `shard`, the value of the domain's
    /// `shard_by` key when the request carries it (Redis Cluster only).
    pub fn counter_key_in<'a>(
        &self,
        domain: &str,
        parts: impl IntoIterator<Item = (&'a str, &'a str)>,
        policy: &Policy,
        shard: Option<&str>,
    ) -> Vec<u8> {
        self.key_in(domain, parts, shard, |key| push_policy(key, policy))
    }

    /// Where a trial rule keeps when it first saw a descriptor's values (`limiter::trial`): the
    /// counter key's shape with `T` for the policy, so it lives beside the rule's counters (the
    /// same Cluster slot under `shard_by`) and never names a counter.
    pub fn trial_key_in<'a>(
        &self,
        domain: &str,
        parts: impl IntoIterator<Item = (&'a str, &'a str)>,
        shard: Option<&str>,
    ) -> Vec<u8> {
        self.key_in(domain, parts, shard, |key| key.push(b'T'))
    }

    fn key_in<'a>(
        &self,
        domain: &str,
        parts: impl IntoIterator<Item = (&'a str, &'a str)>,
        shard: Option<&str>,
        tail: impl FnOnce(&mut Vec<u8>),
    ) -> Vec<u8> {
        let parts = parts.into_iter();
        // A guess that avoids regrowth for typical keys: fixed parts exactly, entries at ~32 bytes
        // each, the policy at its widest.
        let estimate = self.prefix.len()
            + "sl:".len()
            + field_len(domain.len())
            + parts.size_hint().0 * 32
            + MAX_POLICY_LEN;
        let tag = match (self.hash_tags, shard, &self.hasher) {
            (false, _, _) => 0,
            (true, None, _) => 2,
            (true, Some(v), None) => 2 + v.len(),
            (true, Some(_), Some(_)) => 2 + 33,
        };
        let mut key = Vec::with_capacity(estimate + tag);
        key.extend_from_slice(&self.prefix);
        key.extend_from_slice(b"sl:");
        if self.hash_tags {
            key.push(b'{');
            match (shard, &self.hasher) {
                (None, _) => {}
                (Some(v), None) => key.extend_from_slice(v.as_bytes()),
                (Some(v), Some(h)) => key.extend_from_slice(&h.hash(v.as_bytes())),
            }
            key.push(b'}');
        }
        push_field(&mut key, domain.as_bytes());
        for (k, v) in parts {
            key.push(b'|');
            push_field(&mut key, k.as_bytes());
            key.push(b'|');
            match &self.hasher {
                None => push_field(&mut key, v.as_bytes()),
                Some(h) => push_field(&mut key, &h.hash(v.as_bytes())),
            }
        }
        key.push(b'|');
        tail(&mut key);
        key
    }
}

impl KeySchema {
    /// How a fair-share pool names a tenant: its descriptor value, or the value's keyed hash when
    /// values are hashed (the tenant id is stored in the pool's state).
    pub fn tenant_id(&self, value: &str) -> Vec<u8> {
        match &self.hasher {
            None => value.as_bytes().to_vec(),
            Some(h) => h.hash(value.as_bytes()).to_vec(),
        }
    }
}

/// Keyed hashing of descriptor values: BLAKE3 in keyed mode, so without the secret no one can
/// test a guessed value against a stored key.
#[derive(Clone)]
pub struct ValueHasher {
    key: [u8; 32],
}

impl ValueHasher {
    /// A hasher keyed from secret material (a file's bytes): at least 16 bytes, because the
    /// secret is all that stands between a copy of the store and the values it hides.
    pub fn from_secret(secret: &[u8]) -> Result<Self, String> {
        let secret = secret.trim_ascii();
        if secret.len() < 16 {
            return Err(format!(
                "the value-hashing secret has {} bytes; at least 16 are needed",
                secret.len()
            ));
        }
        Ok(Self {
            key: blake3::derive_key("sluice 2026-11 descriptor value hashing", secret),
        })
    }

    /// `h` and the first 16 bytes of the keyed hash in hex: 33 bytes whatever the value's length.
    fn hash(&self, value: &[u8]) -> [u8; 33] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = blake3::keyed_hash(&self.key, value);
        let mut out = [b'h'; 33];
        for (i, b) in digest.as_bytes().iter().take(16).enumerate() {
            out[1 + 2 * i] = HEX[usize::from(b >> 4)];
            out[2 + 2 * i] = HEX[usize::from(b & 0xf)];
        }
        out
    }
}

/// `f` + `c` + unit letter + a u32, or a letter and a u64 in decimal.
const MAX_POLICY_LEN: usize = 3 + MAX_DECIMAL_DIGITS;

fn push_policy(key: &mut Vec<u8>, policy: &Policy) {
    key.push(match policy.algorithm {
        Algorithm::FixedWindow => b'f',
        Algorithm::SlidingWindow => b'w',
        Algorithm::TokenBucket => b't',
        Algorithm::FairShare => b'p',
        Algorithm::Concurrency => {
            key.push(b'l');
            return;
        }
    });
    match policy.period {
        Period::Seconds(s) => push_decimal(key, s),
        Period::Calendar(unit, count) => {
            key.push(b'c');
            key.push(unit.code() as u8);
            push_decimal(key, u64::from(count));
        }
    }
}

const MAX_DECIMAL_DIGITS: usize = 20;

/// Bytes taken by a length-prefixed field of `len` bytes: digits, `:`, the bytes.
fn field_len(len: usize) -> usize {
    decimal_digits(len as u64) + 1 + len
}

fn push_field(key: &mut Vec<u8>, bytes: &[u8]) {
    push_decimal(key, bytes.len() as u64);
    key.push(b':');
    key.extend_from_slice(bytes);
}

fn decimal_digits(mut n: u64) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

/// Appends `n` in decimal without going through `fmt` (this runs for every hit).
fn push_decimal(key: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; MAX_DECIMAL_DIGITS];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    key.extend_from_slice(&buf[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::calendar::CalendarUnit;
    use proptest::prelude::*;

    fn fixed(secs: u64) -> Policy {
        Policy {
            algorithm: Algorithm::FixedWindow,
            period: Period::Seconds(secs),
            limit: 10,
            burst: 10,
        }
    }

    fn key(parts: &[(&str, &str)]) -> Vec<u8> {
        KeySchema::default().counter_key("d", parts.iter().copied(), &fixed(60))
    }

    #[test]
    fn readable_layout() {
        let k =
            KeySchema::new("app:", None).counter_key("orders", [("user_id", "alice")], &fixed(60));
        assert_eq!(k, b"app:sl:6:orders|7:user_id|5:alice|f60");
        let month = Policy {
            period: Period::Calendar(CalendarUnit::Month, 1),
            ..fixed(0)
        };
        let k = KeySchema::default().counter_key("d", [("k", "v")], &month);
        assert_eq!(k, b"sl:1:d|1:k|1:v|fcM1");
        let bucket = Policy {
            algorithm: Algorithm::TokenBucket,
            ..fixed(1)
        };
        assert!(
            KeySchema::default()
                .counter_key("d", [], &bucket)
                .ends_with(b"|t1")
        );
    }

    #[test]
    fn no_entries() {
        assert_eq!(key(&[]), b"sl:1:d|f60");
    }

    #[test]
    fn underscore_split_does_not_collide() {
        assert_ne!(key(&[("a_b", "c")]), key(&[("a", "b_c")]));
        // The separators themselves inside values.
        assert_ne!(key(&[("a|1:b", "c")]), key(&[("a", "b|1:c")]));
        assert_ne!(key(&[("a", "b"), ("c", "")]), key(&[("a", "b|1:c|0:")]));
    }

    #[test]
    fn algorithm_and_window_are_part_of_the_key() {
        let schema = KeySchema::default();
        let base = schema.counter_key("d", [("k", "v")], &fixed(60));
        assert_ne!(base, schema.counter_key("d", [("k", "v")], &fixed(3600)));
        for algorithm in [
            Algorithm::SlidingWindow,
            Algorithm::TokenBucket,
            Algorithm::FairShare,
            Algorithm::Concurrency,
        ] {
            let p = Policy {
                algorithm,
                ..fixed(60)
            };
            assert_ne!(base, schema.counter_key("d", [("k", "v")], &p));
        }
        let calendar_day = Policy {
            period: Period::Calendar(CalendarUnit::Day, 1),
            ..fixed(0)
        };
        assert_ne!(
            schema.counter_key("d", [("k", "v")], &fixed(86_400)),
            schema.counter_key("d", [("k", "v")], &calendar_day)
        );
        // A pool's lease TTL is not: changing it keeps the leases.
        let pool = |secs| Policy {
            algorithm: Algorithm::Concurrency,
            ..fixed(secs)
        };
        assert_eq!(
            schema.counter_key("d", [("k", "v")], &pool(60)),
            schema.counter_key("d", [("k", "v")], &pool(5)),
        );
        assert!(
            schema
                .counter_key("d", [("k", "v")], &pool(60))
                .ends_with(b"|l")
        );
        // The limit is not: raising it keeps the counts.
        let raised = Policy {
            limit: 99,
            ..fixed(60)
        };
        assert_eq!(base, schema.counter_key("d", [("k", "v")], &raised));
    }

    #[test]
    fn hashed_values_hide_the_value_and_keep_keys_distinct() {
        let h = ValueHasher::from_secret(b"0123456789abcdef-secret\n").unwrap();
        let schema = KeySchema::new("p:", Some(h.clone()));
        let k = schema.counter_key("d", [("api_key", "sk-live-1234")], &fixed(60));
        let text = String::from_utf8(k.clone()).unwrap();
        assert!(!text.contains("sk-live-1234"), "{text}");
        assert!(text.starts_with("p:sl:1:d|7:api_key|33:h"), "{text}");
        assert_eq!(
            k,
            schema.counter_key("d", [("api_key", "sk-live-1234")], &fixed(60))
        );
        assert_ne!(
            k,
            schema.counter_key("d", [("api_key", "sk-live-1235")], &fixed(60))
        );
        // Another secret, other keys.
        let other = KeySchema::new(
            "p:",
            Some(ValueHasher::from_secret(b"another secret of 16+").unwrap()),
        );
        assert_ne!(
            k,
            other.counter_key("d", [("api_key", "sk-live-1234")], &fixed(60))
        );
        assert!(ValueHasher::from_secret(b" short \n").is_err());
    }

    #[test]
    fn extreme_numbers() {
        let k = KeySchema::default().counter_key("", [], &fixed(u64::MAX));
        assert_eq!(k, b"sl:0:|f18446744073709551615");
        assert_eq!(decimal_digits(u64::MAX), MAX_DECIMAL_DIGITS);
    }

    #[test]
    fn estimate_covers_typical_keys() {
        let k = KeySchema::new("sluice:", None).counter_key(
            "production-domain",
            [("remote_address", "10.0.0.1"), ("path", "/api/v1/x")],
            &fixed(86_400),
        );
        // No regrowth: the capacity is still the estimate.
        let estimate = 7 + 3 + field_len(17) + 2 * 32 + MAX_POLICY_LEN;
        assert!(k.len() <= estimate);
        assert_eq!(k.capacity(), estimate);
    }

    #[test]
    fn cluster_keys_carry_an_explicit_hash_tag() {
        use redis::cluster_routing::Slot;
        let schema = KeySchema::new("p:", None).with_hash_tags();
        let alone = schema.counter_key("d", [("org", "acme"), ("user", "{x}")], &fixed(60));
        assert_eq!(alone, b"p:sl:{}1:d|3:org|4:acme|4:user|3:{x}|f60");
        // `{}` hashes the whole key: a brace in a value chooses nothing.
        let other = schema.counter_key("d", [("org", "beta"), ("user", "{x}")], &fixed(60));
        assert_ne!(Slot::for_key(&alone), Slot::for_key(b"x"));
        assert_ne!(alone, other);
        // Sharded: the tenant's counters share one slot, whatever else they carry.
        let team = schema.counter_key_in("d", [("org", "acme")], &fixed(60), Some("acme"));
        let user = schema.counter_key_in(
            "d",
            [("org", "acme"), ("user", "u1")],
            &fixed(3600),
            Some("acme"),
        );
        assert!(team.starts_with(b"p:sl:{acme}1:d|"));
        assert_eq!(Slot::for_key(&team), Slot::for_key(&user));
        assert_eq!(Slot::for_key(&team), Slot::for_key(b"acme"));
        // Hashed values: the tag is the hash, never the value.
        let hashed = KeySchema::new(
            "",
            Some(ValueHasher::from_secret(b"0123456789abcdef").unwrap()),
        )
        .with_hash_tags()
        .counter_key_in("d", [("org", "acme")], &fixed(60), Some("acme"));
        assert!(!String::from_utf8_lossy(&hashed).contains("acme"));
        // Without tags (one primary) the keys are unchanged.
        assert_eq!(
            KeySchema::new("p:", None).counter_key_in("d", [], &fixed(60), Some("acme")),
            b"p:sl:1:d|f60"
        );
    }

    type Input = (String, Vec<(String, String)>, u64, u8);

    fn input() -> impl Strategy<Value = Input> {
        // A tiny alphabet made of the separators makes near-collisions likely.
        let text = "[a_|:@0-9]{0,4}";
        (
            text,
            prop::collection::vec((text, text), 0..3),
            prop_oneof![Just(1u64), Just(60), 0..200u64],
            0u8..3,
        )
    }

    fn encode((domain, parts, window, alg): &Input) -> Vec<u8> {
        let algorithm = [
            Algorithm::FixedWindow,
            Algorithm::SlidingWindow,
            Algorithm::TokenBucket,
        ][usize::from(*alg)];
        KeySchema::new("p:", None).counter_key(
            domain,
            parts.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &Policy {
                algorithm,
                ..fixed(*window)
            },
        )
    }

    proptest! {
        #[test]
        fn distinct_inputs_give_distinct_keys(a in input(), b in input()) {
            prop_assert_eq!(a == b, encode(&a) == encode(&b));
        }
    }
}
