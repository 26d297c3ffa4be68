//! The one guard that keeps load on this machine: a target must be a loopback IP literal.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Context, bail};
use tonic::transport::Uri;

/// Rejects anything but a loopback `http://` target and returns its socket address, so no name
/// resolution can send the load somewhere else. A missing port is `default_port`.
pub fn loopback_target(raw: &str, default_port: u16) -> anyhow::Result<SocketAddr> {
    let uri: Uri = raw
        .parse()
        .with_context(|| format!("--target {raw:?} is not a URI"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => bail!("--target must use http:// (plaintext), not {other}://"),
        None => bail!("--target needs a scheme, e.g. http://127.0.0.1:8081"),
    }
    let authority = uri
        .authority()
        .with_context(|| format!("--target {raw:?} has no host"))?;
    if authority.as_str().contains('@') {
        bail!("--target must not carry user info");
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        bail!("--target must be a bare address, without a path or query");
    }
    let host = authority.host();
    let ip = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        literal.parse::<IpAddr>().map_err(|_| {
            anyhow::anyhow!(
                "--target host {host:?} is not loopback (use 127.0.0.1, ::1 or localhost)"
            )
        })?
    };
    let loopback = match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        // Only ::1 itself: an IPv4-mapped address is not loopback to every stack.
        IpAddr::V6(v6) => v6 == Ipv6Addr::LOCALHOST,
    };
    if !loopback {
        bail!("--target host {ip} is not loopback (use 127.0.0.0/8, ::1 or localhost)");
    }
    Ok(SocketAddr::new(
        ip,
        authority.port_u16().unwrap_or(default_port),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_loopback_targets_only() {
        for (raw, pinned) in [
            ("http://127.0.0.1:8081", "127.0.0.1:8081"),
            ("http://127.2.3.4:9000/", "127.2.3.4:9000"),
            ("http://[::1]:8081", "[::1]:8081"),
            ("http://localhost:7000", "127.0.0.1:7000"),
            ("http://LOCALHOST", "127.0.0.1:8081"),
        ] {
            let addr = loopback_target(raw, 8081).expect(raw);
            assert_eq!(addr.to_string(), pinned);
        }
        for raw in [
            "http://10.0.0.1:8081",
            "http://0.0.0.0:8081",
            "http://[::]:8081",
            "http://[::ffff:127.0.0.1]:8081",
            "http://example.com:8081",
            "http://localhost.example.com:8081",
            "http://127.0.0.1@example.com:8081",
            "https://127.0.0.1:8081",
            "127.0.0.1:8081",
            "http://127.0.0.1:8081/path",
        ] {
            assert!(loopback_target(raw, 8081).is_err(), "{raw} was accepted");
        }
    }
}
