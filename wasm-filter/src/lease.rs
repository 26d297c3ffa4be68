//! Concurrency leases held by a stream: Sluice answers a request that takes a lease of a
//! concurrency pool (`rate_limit: {concurrency: N}`) with the lease id in its
//! `response_headers_to_add`. The filter gives the lease back when the stream ends, and renews it
//! while a long stream (an upload, a streamed LLM answer) is still open, so a pool counts the
//! streams in flight instead of waiting for each lease's TTL.
//!
//! Both are one more `ShouldRateLimit` with the request's descriptors, each carrying the lease id
//! in a [`LEASE_ENTRY`] entry: Sluice renews (or, with `is_negative_hits`, releases) the lease in
//! the pools those descriptors match, and only looks at their other limits, so neither counts as
//! another request. A renewal is due halfway through the TTL Sluice announced, so one lost
//! renewal still leaves time for the next; renewals need the host's ticks, and without them a
//! lease lives its TTL from the request.

use crate::descriptor::Descriptor;
use crate::proto::WireDescriptor;

/// The response header with the id of the lease a request holds.
pub const LEASE_ID_HEADER: &str = "x-sluice-lease-id";
/// The response header with the lease's TTL in seconds.
pub const LEASE_TTL_HEADER: &str = "x-sluice-lease-ttl";
/// The descriptor entry that carries a lease id back to Sluice.
pub const LEASE_ENTRY: &str = "sluice.lease_id";

/// The TTL assumed when Sluice names a lease without one (its default).
const DEFAULT_TTL_SECS: u64 = 60;
/// Sluice's longest TTL is far below this; a larger number is not a TTL.
const MAX_TTL_SECS: u64 = 366 * 86_400;

/// A lease a stream holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub id: String,
    pub ttl_secs: u64,
}

/// The lease named by Sluice's response headers, if any. An id that is not 32 lower-case hex
/// digits is ignored (Sluice would refuse it back), and so is a TTL that is not a number.
pub fn from_headers(headers: &[(String, String)]) -> Option<Held> {
    let value = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    };
    let id = value(LEASE_ID_HEADER)?;
    let valid = id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !valid {
        return None;
    }
    let ttl_secs = value(LEASE_TTL_HEADER)
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| (1..=MAX_TTL_SECS).contains(t))
        .unwrap_or(DEFAULT_TTL_SECS);
    Some(Held {
        id: id.to_owned(),
        ttl_secs,
    })
}

/// The descriptors of a renewal (`release: false`) or release of `lease`.
pub fn wire<'a>(
    descriptors: &'a [Descriptor],
    lease: &'a str,
    release: bool,
) -> Vec<WireDescriptor<'a>> {
    descriptors
        .iter()
        .map(|d| WireDescriptor {
            entries: &d.entries,
            hits_addend: None,
            lease: Some(lease),
            negative_hits: release,
        })
        .collect()
}

/// A stream's lease, waiting for its renewals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    /// The stream's context id.
    pub stream: u32,
    pub descriptors: Vec<Descriptor>,
    pub lease: Held,
    /// When the next renewal is due, in the host's nanoseconds.
    pub due_ns: u64,
}

/// The leases a worker VM's open streams hold, in the order they were taken.
#[derive(Debug, Default)]
pub struct Renewals {
    open: Vec<Renewal>,
}

fn half_ttl_ns(lease: &Held) -> u64 {
    lease.ttl_secs.saturating_mul(500_000_000).max(1)
}

impl Renewals {
    /// Files `stream`'s lease, taken at `now_ns`.
    pub fn hold(&mut self, stream: u32, descriptors: Vec<Descriptor>, lease: Held, now_ns: u64) {
        self.open.retain(|r| r.stream != stream);
        let due_ns = now_ns.saturating_add(half_ttl_ns(&lease));
        self.open.push(Renewal {
            stream,
            descriptors,
            lease,
            due_ns,
        });
    }

    /// Forgets `stream`'s lease (it ended).
    pub fn end(&mut self, stream: u32) -> Option<Renewal> {
        let at = self.open.iter().position(|r| r.stream == stream)?;
        Some(self.open.remove(at))
    }

    /// The leases due for renewal at `now_ns`, each then due again half a TTL later.
    pub fn due(&mut self, now_ns: u64) -> Vec<Renewal> {
        let mut due = Vec::new();
        for r in &mut self.open {
            if r.due_ns <= now_ns {
                r.due_ns = now_ns.saturating_add(half_ttl_ns(&r.lease));
                due.push(r.clone());
            }
        }
        due
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";
    const SEC: u64 = 1_000_000_000;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn descriptors() -> Vec<Descriptor> {
        vec![Descriptor {
            def: 0,
            entries: vec![("upload".into(), "app-1".into())],
        }]
    }

    #[test]
    fn a_lease_is_read_from_sluices_headers() {
        let h = headers(&[("X-Sluice-Lease-Id", ID), ("x-sluice-lease-ttl", "30")]);
        assert_eq!(
            from_headers(&h),
            Some(Held {
                id: ID.into(),
                ttl_secs: 30
            })
        );
        let no_ttl = headers(&[(LEASE_ID_HEADER, ID)]);
        assert_eq!(from_headers(&no_ttl).map(|h| h.ttl_secs), Some(60));
        let bad_ttl = headers(&[(LEASE_ID_HEADER, ID), (LEASE_TTL_HEADER, "-1")]);
        assert_eq!(from_headers(&bad_ttl).map(|h| h.ttl_secs), Some(60));
    }

    #[test]
    fn malformed_ids_are_ignored() {
        for id in [
            "",
            "xyz",
            "0123456789ABCDEF0123456789ABCDEF",
            &ID[1..],
            "0123456789abcdef0123456789abcdef0",
        ] {
            assert_eq!(
                from_headers(&headers(&[(LEASE_ID_HEADER, id)])),
                None,
                "{id:?}"
            );
        }
        assert_eq!(from_headers(&headers(&[("ratelimit-limit", "3")])), None);
    }

    #[test]
    fn renewals_fall_due_every_half_ttl_until_the_stream_ends() {
        let mut r = Renewals::default();
        let lease = Held {
            id: ID.into(),
            ttl_secs: 10,
        };
        r.hold(7, descriptors(), lease.clone(), 100 * SEC);
        r.hold(
            8,
            descriptors(),
            Held {
                ttl_secs: 60,
                ..lease
            },
            100 * SEC,
        );
        assert!(r.due(104 * SEC).is_empty());
        let due = r.due(105 * SEC);
        assert_eq!(due.iter().map(|d| d.stream).collect::<Vec<_>>(), [7]);
        assert!(r.due(109 * SEC).is_empty());
        assert_eq!(r.due(110 * SEC).len(), 1);
        assert_eq!(r.end(7).map(|d| d.stream), Some(7));
        assert_eq!(r.end(7), None);
        assert_eq!(
            r.due(130 * SEC)
                .iter()
                .map(|d| d.stream)
                .collect::<Vec<_>>(),
            [8]
        );
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn renewals_and_releases_carry_the_lease_on_every_descriptor() {
        let d = descriptors();
        let release = wire(&d, ID, true);
        assert_eq!(release.len(), 1);
        assert_eq!(release[0].lease, Some(ID));
        assert!(release[0].negative_hits);
        assert!(!wire(&d, ID, false)[0].negative_hits);
    }
}
