//! The counter key schema, shared by every backend.
//!
//! A counter is identified by its domain, the descriptor entries that selected the rule, the
//! window length and the window start:
//!
//! ```text
//! <prefix>sl:<len>:<domain>|<len>:<key>|<len>:<value>|...|<window_secs>@<window_start>
//! e.g.    sl:6:orders|7:user_id|5:alice|60@1700000040
//! ```
//!
//! Why this shape:
//! - **No collisions.** envoyproxy/ratelimit joins parts with `_` without escaping, so the entries
//!   `(a_b, c)` and `(a, b_c)` share one counter. Here every variable part carries its byte length,
//!   so the key decodes unambiguously left to right and distinct inputs give distinct keys
//!   (for one prefix; the prefix is a deployment constant, not decoded).
//! - **Window in the key.** A new window is a new key, so a counter never has to be reset and
//!   expiry only reclaims memory; a late expiry cannot leak counts into the next window. The
//!   window length is included too, so two rules with different units never share a counter.
//! - **Readable.** Plain text with separators, so `redis-cli --scan --pattern '*sl:6:orders|*'`
//!   finds a domain's counters. Values are raw bytes: descriptor values containing `|` or `:` stay
//!   unambiguous thanks to the lengths.
//!
//! Redis Cluster would need every key of one request in one hash slot (a `{tag}`); that is not
//! part of this schema yet.

/// Encodes the key of one counter. `parts` are the descriptor entries as `(key, value)` pairs,
/// in descriptor order (a `share_threshold` rule passes its pattern instead of the value).
pub fn counter_key<'a>(
    prefix: &[u8],
    domain: &str,
    parts: impl IntoIterator<Item = (&'a str, &'a str)>,
    window_secs: u64,
    window_start: u64,
) -> Vec<u8> {
    let parts = parts.into_iter();
    // A guess that avoids regrowth for typical keys: fixed parts exactly, entries at ~32 bytes
    // each, numbers at their widest.
    let estimate = prefix.len()
        + "sl:".len()
        + field_len(domain.len())
        + parts.size_hint().0 * 32
        + 2 * MAX_DECIMAL_DIGITS
        + 2;
    let mut key = Vec::with_capacity(estimate);
    key.extend_from_slice(prefix);
    key.extend_from_slice(b"sl:");
    push_field(&mut key, domain.as_bytes());
    for (k, v) in parts {
        key.push(b'|');
        push_field(&mut key, k.as_bytes());
        key.push(b'|');
        push_field(&mut key, v.as_bytes());
    }
    key.push(b'|');
    push_decimal(&mut key, window_secs);
    key.push(b'@');
    push_decimal(&mut key, window_start);
    key
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
    use proptest::prelude::*;

    fn key(parts: &[(&str, &str)]) -> Vec<u8> {
        counter_key(b"", "d", parts.iter().copied(), 60, 120)
    }

    #[test]
    fn readable_layout() {
        let k = counter_key(b"app:", "orders", [("user_id", "alice")], 60, 1_700_000_040);
        assert_eq!(k, b"app:sl:6:orders|7:user_id|5:alice|60@1700000040");
    }

    #[test]
    fn no_entries() {
        assert_eq!(key(&[]), b"sl:1:d|60@120");
    }

    #[test]
    fn underscore_split_does_not_collide() {
        assert_ne!(key(&[("a_b", "c")]), key(&[("a", "b_c")]));
        // The separators themselves inside values.
        assert_ne!(key(&[("a|1:b", "c")]), key(&[("a", "b|1:c")]));
        assert_ne!(key(&[("a", "b"), ("c", "")]), key(&[("a", "b|1:c|0:")]));
    }

    #[test]
    fn window_length_and_start_are_part_of_the_key() {
        let base = counter_key(b"", "d", [("k", "v")], 60, 0);
        assert_ne!(base, counter_key(b"", "d", [("k", "v")], 3600, 0));
        assert_ne!(base, counter_key(b"", "d", [("k", "v")], 60, 60));
        assert_ne!(
            counter_key(b"", "d", [("k", "v")], 6, 10),
            counter_key(b"", "d", [("k", "v")], 61, 0)
        );
    }

    #[test]
    fn extreme_numbers() {
        let k = counter_key(b"", "", [], u64::MAX, 0);
        assert_eq!(k, b"sl:0:|18446744073709551615@0");
        assert_eq!(decimal_digits(u64::MAX), MAX_DECIMAL_DIGITS);
    }

    #[test]
    fn estimate_covers_typical_keys() {
        let k = counter_key(
            b"sluice:",
            "production-domain",
            [("remote_address", "10.0.0.1"), ("path", "/api/v1/x")],
            86_400,
            1_700_000_000,
        );
        // No regrowth: the capacity is still the estimate.
        let estimate = 7 + 3 + field_len(17) + 2 * 32 + 2 * MAX_DECIMAL_DIGITS + 2;
        assert!(k.len() <= estimate);
        assert_eq!(k.capacity(), estimate);
    }

    type Input = (String, Vec<(String, String)>, u64, u64);

    fn input() -> impl Strategy<Value = Input> {
        // A tiny alphabet made of the separators makes near-collisions likely.
        let text = "[a_|:@0-9]{0,4}";
        (
            text,
            prop::collection::vec((text, text), 0..3),
            prop_oneof![Just(1u64), Just(60), 0..200u64],
            prop_oneof![Just(0u64), 0..200u64],
        )
    }

    fn encode((domain, parts, window, start): &Input) -> Vec<u8> {
        counter_key(
            b"p:",
            domain,
            parts.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            *window,
            *start,
        )
    }

    proptest! {
        #[test]
        fn distinct_inputs_give_distinct_keys(a in input(), b in input()) {
            prop_assert_eq!(a == b, encode(&a) == encode(&b));
        }
    }
}
