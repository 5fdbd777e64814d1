//! This host's public addresses, offered as herald's egress addresses when `[spf] addresses`
//! is not configured (with a warning that the operator must confirm them).

use std::net::IpAddr;

/// The host's global unicast addresses (no loopback, private, link-local, documentation or
/// other special-purpose ranges), read from the interfaces (`if-addrs`, getifaddrs(3)).
pub(crate) fn global_addresses() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces.iter().map(|i| i.ip()).collect(),
        Err(e) => {
            tracing::warn!("cannot list the network interfaces: {e}");
            Vec::new()
        }
    };
    out.retain(is_global);
    out.sort();
    out.dedup();
    out
}

/// Whether an address is routable on the public Internet.
pub(crate) fn is_global(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10 shared (CGNAT)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0/24 protocol assignments
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18/15 benchmarking
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || v6.to_ipv4_mapped().is_some())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_ranges_are_not_global() {
        for ip in [
            "10.1.2.3",
            "127.0.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "fe80::1",
            "fd00::1",
        ] {
            assert!(!is_global(&ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2a00:1450::1"] {
            assert!(is_global(&ip.parse().unwrap()), "{ip}");
        }
    }
}
