//! Settings of both listeners' bounds ([`crate::listener::Limits`]): connections, streams,
//! header and buffer sizes, and the timeouts that close what a client leaves half-sent or idle.

use std::time::Duration;

use super::SettingsError;
use super::reference::go_duration;
use crate::listener::Limits;

/// Flags of the listener bounds, flattened into [`super::ServeArgs`].
#[derive(Debug, Default, clap::Args)]
pub struct ListenerArgs {
    /// Connections each listener keeps open at once; at the cap the idlest is closed for a
    /// newcomer (also capped by the open-file limit) [default: 1024].
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// HTTP/2 streams one connection may have open at once [default: 100].
    #[arg(long, env = "SLUICE_MAX_CONCURRENT_STREAMS")]
    pub max_concurrent_streams: Option<u32>,
    /// Bytes of one request's headers [default: 16384].
    #[arg(long, env = "SLUICE_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<u32>,
    /// Request bytes one connection may hold before they are processed: its HTTP/2 window, and
    /// the budget for the headers and bodies of its requests in flight [default: 131072].
    #[arg(long, env = "SLUICE_CONNECTION_BUFFER_BYTES")]
    pub connection_buffer_bytes: Option<u32>,
    /// Milliseconds from accept to the end of the HTTP/2 preface (gRPC) [default: 5000].
    #[arg(long, env = "SLUICE_HANDSHAKE_TIMEOUT_MS")]
    pub handshake_timeout_ms: Option<u64>,
    /// Milliseconds for an HTTP/1 request head, from its first byte (from accept, for the
    /// first) [default: 5000].
    #[arg(long, env = "SLUICE_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// Milliseconds from a request's headers to the end of its message or body [default: 10000].
    #[arg(long, env = "SLUICE_MESSAGE_TIMEOUT_MS")]
    pub message_timeout_ms: Option<u64>,
    /// Seconds a connection may stay without a request before it is closed [default: 300].
    #[arg(long, env = "SLUICE_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Seconds of silence after which an HTTP/2 client is pinged [default: 60].
    #[arg(long, env = "SLUICE_KEEPALIVE_INTERVAL_SECS")]
    pub keepalive_interval_secs: Option<u64>,
    /// Seconds to wait for a ping's answer before closing the connection [default: 20].
    #[arg(long, env = "SLUICE_KEEPALIVE_TIMEOUT_SECS")]
    pub keepalive_timeout_secs: Option<u64>,
    /// Milliseconds a gRPC connection may live before it is sent a GOAWAY (give or take a
    /// tenth), so clients rebalance across replicas; 0: never [default: 86400000, 24 h].
    #[arg(long, env = "SLUICE_MAX_CONNECTION_AGE_MS")]
    pub max_connection_age_ms: Option<u64>,
    /// Milliseconds an aged connection's calls in flight may take before it is closed
    /// [default: 3600000, 1 h].
    #[arg(long, env = "SLUICE_MAX_CONNECTION_AGE_GRACE_MS")]
    pub max_connection_age_grace_ms: Option<u64>,
}

/// The bounds from the flags; `max_message` is the largest gRPC message the server reads, which
/// one connection's buffer must be able to hold.
pub(super) fn resolve(
    args: ListenerArgs,
    max_message: usize,
    get: &impl Fn(&'static str) -> Option<String>,
) -> Result<Limits, SettingsError> {
    let d = Limits::default();
    let ms = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_millis);
    let secs = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_secs);
    let limits = Limits {
        max_connections: args.max_connections.unwrap_or(d.max_connections),
        max_concurrent_streams: args
            .max_concurrent_streams
            .unwrap_or(d.max_concurrent_streams),
        max_header_bytes: args.max_header_bytes.unwrap_or(d.max_header_bytes),
        connection_buffer_bytes: args
            .connection_buffer_bytes
            .unwrap_or(d.connection_buffer_bytes),
        handshake_timeout: ms(args.handshake_timeout_ms, d.handshake_timeout),
        header_read_timeout: ms(args.header_read_timeout_ms, d.header_read_timeout),
        message_timeout: ms(args.message_timeout_ms, d.message_timeout),
        idle_timeout: secs(args.idle_timeout_secs, d.idle_timeout),
        keepalive_interval: secs(args.keepalive_interval_secs, d.keepalive_interval),
        keepalive_timeout: secs(args.keepalive_timeout_secs, d.keepalive_timeout),
        // The reference's GRPC_MAX_CONNECTION_AGE(_GRACE) are Go durations.
        max_connection_age: match args.max_connection_age_ms {
            Some(ms) => Some(Duration::from_millis(ms)),
            None => go_duration(get, "GRPC_MAX_CONNECTION_AGE")?.or(d.max_connection_age),
        }
        .filter(|age| !age.is_zero()),
        max_connection_age_grace: match args.max_connection_age_grace_ms {
            Some(ms) => Duration::from_millis(ms),
            None => go_duration(get, "GRPC_MAX_CONNECTION_AGE_GRACE")?
                .unwrap_or(d.max_connection_age_grace),
        },
    };
    let invalid = |msg: String| Err(SettingsError::Invalid(msg));
    if limits.max_connections == 0 || limits.max_concurrent_streams == 0 {
        return invalid("--max-connections and --max-concurrent-streams must be at least 1".into());
    }
    if limits.max_header_bytes < 1024 {
        return invalid(format!(
            "--max-header-bytes {}: at least 1024 (Envoy's own requests carry about 500)",
            limits.max_header_bytes
        ));
    }
    let needed = max_message + 5;
    if (limits.connection_buffer_bytes as usize) < needed {
        return invalid(format!(
            "--connection-buffer-bytes {}: at least {needed}, one whole request message of the \
             largest size read (4 x --max-request-bytes, at least 64 KiB)",
            limits.connection_buffer_bytes
        ));
    }
    let timeouts = [
        ("--handshake-timeout-ms", limits.handshake_timeout),
        ("--header-read-timeout-ms", limits.header_read_timeout),
        ("--message-timeout-ms", limits.message_timeout),
        ("--idle-timeout-secs", limits.idle_timeout),
        ("--keepalive-interval-secs", limits.keepalive_interval),
        ("--keepalive-timeout-secs", limits.keepalive_timeout),
    ];
    if let Some((name, _)) = timeouts.iter().find(|(_, t)| t.is_zero()) {
        return invalid(format!("{name} must be more than 0"));
    }
    Ok(limits)
}
