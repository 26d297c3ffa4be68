//! The xDS rule source: rules delivered by a control plane instead of files, as the reference's
//! `CONFIG_TYPE=GRPC_XDS_SOTW` does.
//!
//! Sluice is a client of a State-of-the-World aggregated discovery service: one
//! `StreamAggregatedResources` stream asking for `RateLimitConfig` resources
//! (`ratelimit.config.ratelimit.v3`, one domain each). Every response carries the whole set; it is
//! converted to the rule files' form ([`convert`]) and loaded by the same loader, so a pushed rule
//! is validated exactly like a file. A set that loads replaces the rules and is ACKed with its
//! version; one that does not is NACKed with the loader's errors in `error_detail`, and the last
//! good rules keep serving. A broken stream is reopened after a back-off ([`client`]).
//!
//! Boundary: knows the rule tree's loader and the discovery protocol; it never touches the
//! limiter (it hands rule sets over a channel) or a listener.

pub mod client;
pub mod convert;

use std::path::PathBuf;
use std::time::Duration;

/// The resource type Sluice asks for.
pub const TYPE_URL: &str = "type.googleapis.com/ratelimit.config.ratelimit.v3.RateLimitConfig";

/// How to reach the control plane, and how to behave when it is away.
#[derive(Debug, Clone, PartialEq)]
pub struct XdsSettings {
    /// `host:port` of the aggregated discovery service.
    pub server: String,
    pub node_id: String,
    /// String fields of the node's metadata.
    pub node_metadata: Vec<(String, String)>,
    /// gRPC metadata sent with the stream (an auth token, say).
    pub headers: Vec<(String, String)>,
    pub tls: Option<XdsTls>,
    /// Between attempts to connect while the server cannot be reached.
    pub connect_retry: Duration,
    pub backoff: Backoff,
    /// The largest response read.
    pub max_message_bytes: usize,
    /// Start with no rules (every check OK) instead of waiting for the first good set.
    pub force_start: bool,
}

/// TLS to the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdsTls {
    /// CAs the server's certificate must chain to (PEM).
    pub ca: PathBuf,
    /// Sluice's client certificate and key, for mTLS.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name the server's certificate must carry (default: the server's host).
    pub server_name: Option<String>,
}

/// Waits between attempts after a stream broke: `initial`, doubling up to `max`, each spread by
/// up to `random_factor` either way when `jitter` is on.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub random_factor: f64,
    pub jitter: bool,
}

impl Backoff {
    /// The wait before attempt `n` (0-based) after a failure; `unit` in [0, 1) is the random draw.
    pub fn wait(&self, n: u32, unit: f64) -> Duration {
        let base = self.initial.saturating_mul(1u32 << n.min(16)).min(self.max);
        if !self.jitter || self.random_factor <= 0.0 {
            return base;
        }
        let spread = 1.0 + self.random_factor * (2.0 * unit - 1.0);
        base.mul_f64(spread.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_spreads() {
        let b = Backoff {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(60),
            random_factor: 0.5,
            jitter: false,
        };
        let waits: Vec<u64> = (0..5).map(|n| b.wait(n, 0.0).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 60, 60]);
        let jittered = Backoff { jitter: true, ..b };
        assert_eq!(jittered.wait(0, 0.0), Duration::from_secs(5));
        assert_eq!(jittered.wait(0, 0.5), Duration::from_secs(10));
        assert_eq!(jittered.wait(64, 0.999_999).as_secs(), 89);
    }
}
