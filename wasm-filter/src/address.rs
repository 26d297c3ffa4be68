//! The client address for `remote_address` descriptors: parsed from the host's `source.address`
//! property and optionally masked to a network prefix, as Envoy's `masked_remote_address` does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The IP in a host's address string: `1.2.3.4:5678`, `[::1]:5678`, or a bare IP.
pub fn parse(raw: &str) -> Option<IpAddr> {
    if let Ok(sa) = raw.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    let bare = raw
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(raw);
    bare.parse::<IpAddr>().ok()
}

/// The entry value for an address: the IP itself, or `network/len` when a prefix applies to its
/// family. IPv4-mapped IPv6 addresses count as IPv4, since that is what the client used.
pub fn entry_value(ip: IpAddr, v4_prefix: Option<u8>, v6_prefix: Option<u8>) -> (bool, String) {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => match v4_prefix {
            Some(len) => (true, format!("{}/{len}", mask_v4(v4, len))),
            None => (false, v4.to_string()),
        },
        IpAddr::V6(v6) => match v6_prefix {
            Some(len) => (true, format!("{}/{len}", mask_v6(v6, len))),
            None => (false, v6.to_string()),
        },
    }
}

fn mask_v4(ip: Ipv4Addr, len: u8) -> Ipv4Addr {
    let bits = u32::from(ip);
    let mask = u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0);
    Ipv4Addr::from(bits & mask)
}

fn mask_v6(ip: Ipv6Addr, len: u8) -> Ipv6Addr {
    let bits = u128::from(ip);
    let mask = u128::MAX
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(0);
    Ipv6Addr::from(bits & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_address_forms() {
        assert_eq!(parse("10.1.2.3:443"), Some("10.1.2.3".parse().unwrap()));
        assert_eq!(
            parse("[2001:db8::1]:80"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(parse("2001:db8::1"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(parse("[2001:db8::1]"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(parse("192.0.2.7"), Some("192.0.2.7".parse().unwrap()));
        for bad in [
            "",
            "localhost:80",
            "1.2.3",
            "[::1",
            "1.2.3.4:99999",
            "\u{0}",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn masks_to_the_prefix_of_the_family() {
        let v4: IpAddr = "203.0.113.77".parse().unwrap();
        let v6: IpAddr = "2001:db8:abcd:12:1:2:3:4".parse().unwrap();
        assert_eq!(
            entry_value(v4, None, Some(64)),
            (false, "203.0.113.77".into())
        );
        assert_eq!(
            entry_value(v4, Some(24), None),
            (true, "203.0.113.0/24".into())
        );
        assert_eq!(entry_value(v4, Some(0), None), (true, "0.0.0.0/0".into()));
        assert_eq!(
            entry_value(v4, Some(32), None),
            (true, "203.0.113.77/32".into())
        );
        assert_eq!(
            entry_value(v6, Some(24), None),
            (false, "2001:db8:abcd:12:1:2:3:4".into())
        );
        assert_eq!(
            entry_value(v6, None, Some(48)),
            (true, "2001:db8:abcd::/48".into())
        );
        assert_eq!(entry_value(v6, None, Some(0)), (true, "::/0".into()));
        assert_eq!(
            entry_value(v6, None, Some(128)),
            (true, "2001:db8:abcd:12:1:2:3:4/128".into())
        );
        let mapped: IpAddr = "::ffff:198.51.100.9".parse().unwrap();
        assert_eq!(
            entry_value(mapped, Some(16), Some(64)),
            (true, "198.51.0.0/16".into())
        );
    }
}
