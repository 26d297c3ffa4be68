//! What a check asks, transport-free, and the bounds a request must stay within.

use crate::config::Unit;
use crate::storage::StoreError;

/// One descriptor entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
}

/// A descriptor's `limit` override (`RateLimitOverride`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitOverride {
    pub requests_per_unit: u32,
    pub unit: Unit,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptor {
    pub entries: Vec<Entry>,
    pub limit: Option<LimitOverride>,
    /// Per-descriptor `hits_addend`; when present it wins over the request's, and 0 means
    /// "check without consuming".
    pub hits_addend: Option<u64>,
    /// `is_negative_hits`: give the hits back instead of consuming them.
    pub negative_hits: bool,
    /// The value of the descriptor's [`LEASE_ENTRY`] entry, taken out of `entries`: the lease
    /// this descriptor renews or (with `negative_hits`) releases.
    pub lease: Option<String>,
}

/// The descriptor entry that carries a lease id back to Sluice (to renew or release it). It is
/// not part of matching or counter keys.
pub const LEASE_ENTRY: &str = "sluice.lease_id";

impl Descriptor {
    /// A descriptor from its wire parts, shared by the gRPC and JSON adapters. The first
    /// [`LEASE_ENTRY`] entry becomes `lease`; another one stays among the entries, where
    /// validation refuses it.
    pub fn from_parts(
        entries: impl IntoIterator<Item = (String, String)>,
        limit: Option<LimitOverride>,
        hits_addend: Option<u64>,
        negative_hits: bool,
    ) -> Self {
        let mut lease = None;
        let entries = entries
            .into_iter()
            .filter_map(|(key, value)| {
                if key == LEASE_ENTRY && lease.is_none() {
                    lease = Some(value);
                    return None;
                }
                Some(Entry { key, value })
            })
            .collect();
        Self {
            entries,
            limit,
            hits_addend,
            negative_hits,
            lease,
        }
    }
}

impl LimitOverride {
    /// An override whose unit is `envoy.type.v3.RateLimitUnit` (which has no WEEK); the error
    /// names descriptor `index` and the unit as received.
    pub fn new(
        index: usize,
        requests_per_unit: u32,
        unit: Option<Unit>,
        received: impl std::fmt::Display,
    ) -> Result<Self, String> {
        match unit {
            Some(unit) => Ok(Self {
                requests_per_unit,
                unit,
            }),
            None => Err(format!(
                "descriptor {index} limit override has unit {received}, which is not SECOND, \
                 MINUTE, HOUR, DAY, MONTH or YEAR"
            )),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckRequest {
    pub domain: String,
    pub descriptors: Vec<Descriptor>,
    /// Request-level `hits_addend`; 0 means 1, as in Envoy.
    pub hits_addend: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The request is malformed: its shape is wrong (no domain, no descriptors, an empty key,
    /// too many descriptors or entries). A proxy builds that shape from its own configuration, so
    /// this is the proxy's fault: `INVALID_ARGUMENT`.
    #[error("{0}")]
    Invalid(String),
    /// The request is well formed but its values cannot be counted: together past the request's
    /// byte bound, or not UTF-8. Values come from the proxy's client (a header, a JWT claim), so
    /// an error here would let that client through any proxy that fails open: adapters answer it
    /// as a refusal (OVER_LIMIT with a problem document of status 400; a deny on `/auth`).
    #[error("{0}")]
    Unusable(String),
    /// The counters could not be read or written: `UNAVAILABLE`.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Bounds on what one request may carry. Envoy sends a handful of short descriptors; anything far
/// past these is a bug or an attack, and each entry becomes part of a counter key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestBounds {
    pub max_descriptors: usize,
    pub max_entries: usize,
    /// Domain, keys and values together.
    pub max_bytes: usize,
}

impl Default for RequestBounds {
    fn default() -> Self {
        Self {
            max_descriptors: 64,
            max_entries: 32,
            max_bytes: 16 * 1024,
        }
    }
}

impl RequestBounds {
    /// The largest request message (or body) read: far above the byte bound, so an oversized
    /// request is normally refused with its size in the message; past this, refused unread.
    pub fn max_message_bytes(&self) -> usize {
        self.max_bytes.saturating_mul(4).max(64 * 1024)
    }
}

pub(super) fn validate(request: &CheckRequest, bounds: &RequestBounds) -> Result<(), CheckError> {
    let invalid = |msg: String| Err(CheckError::Invalid(msg));
    if request.domain.is_empty() {
        return invalid("domain must not be empty".into());
    }
    if request.descriptors.is_empty() {
        return invalid("request has no descriptors".into());
    }
    if request.descriptors.len() > bounds.max_descriptors {
        return invalid(format!(
            "request has {} descriptors; at most {} are accepted",
            request.descriptors.len(),
            bounds.max_descriptors
        ));
    }
    let mut bytes = request.domain.len();
    for (i, d) in request.descriptors.iter().enumerate() {
        if d.entries.is_empty() {
            return invalid(format!("descriptor {i} has no entries"));
        }
        if d.entries.len() > bounds.max_entries {
            return invalid(format!(
                "descriptor {i} has {} entries; at most {} are accepted",
                d.entries.len(),
                bounds.max_entries
            ));
        }
        for (j, e) in d.entries.iter().enumerate() {
            if e.key.is_empty() {
                return invalid(format!("descriptor {i} entry {j} has an empty key"));
            }
            if e.key == LEASE_ENTRY {
                return invalid(format!(
                    "descriptor {i} has more than one {LEASE_ENTRY} entry; a descriptor renews or \
                     releases one lease"
                ));
            }
            bytes += e.key.len() + e.value.len();
        }
        if let Some(lease) = &d.lease
            && crate::algorithm::lease::LeaseId::parse(lease).is_none()
        {
            return invalid(format!(
                "descriptor {i} has a {LEASE_ENTRY} that is not a lease id (32 lower-case hex \
                 digits, as Sluice returned it)"
            ));
        }
    }
    if bytes > bounds.max_bytes {
        return Err(CheckError::Unusable(format!(
            "request carries {bytes} bytes of domain, keys and values; at most {} are accepted",
            bounds.max_bytes
        )));
    }
    Ok(())
}
