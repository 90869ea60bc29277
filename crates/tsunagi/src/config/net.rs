//! The host's primary addresses, from which automatic relay addresses are chosen, and
//! which of the host's addresses others can reach at all.

use super::*;

/// The host's primary addresses, as a route lookup finds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrimaryIps {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

impl PrimaryIps {
    /// The source addresses the kernel would use for the default routes. `connect` on
    /// a UDP socket only looks the route up; no packet is sent. The targets are
    /// documentation addresses (RFC 5737, RFC 3849), which follow the default route.
    pub fn detect() -> Self {
        fn source(bind: &str, target: &str) -> Option<IpAddr> {
            let s = UdpSocket::bind(bind).ok()?;
            s.connect(target).ok()?;
            s.local_addr().ok().map(|a| a.ip())
        }
        let v4 = match source("0.0.0.0:0", "192.0.2.1:9") {
            Some(IpAddr::V4(ip)) if !ip.is_unspecified() && !ip.is_loopback() => Some(ip),
            _ => None,
        };
        let v6 = match source("[::]:0", "[2001:db8::1]:9") {
            Some(IpAddr::V6(ip))
                if !ip.is_unspecified()
                    && !ip.is_loopback()
                    // Link-local (fe80::/10) is useless as a relay address.
                    && (ip.segments()[0] & 0xffc0) != 0xfe80 =>
            {
                Some(ip)
            }
            _ => None,
        };
        PrimaryIps { v4, v6 }
    }
}

/// The automatic relay addresses: the specific listening IPs; for a wildcard IPv4
/// listener (or none) the primary IPv4, else 127.0.0.1; for a wildcard IPv6 listener
/// (or none) the primary IPv6 if there is one.
pub fn auto_relay_ips(listening: &[IpAddr], primary: PrimaryIps) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = listening
        .iter()
        .copied()
        .filter(|ip| !ip.is_unspecified())
        .collect();
    let wild_v4 = listening.is_empty() || listening.contains(&IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let wild_v6 = listening.is_empty() || listening.contains(&IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    if wild_v4 && !out.iter().any(IpAddr::is_ipv4) {
        out.push(IpAddr::V4(primary.v4.unwrap_or(Ipv4Addr::LOCALHOST)));
    }
    if wild_v6 && !out.iter().any(IpAddr::is_ipv6) {
        if let Some(v6) = primary.v6 {
            out.push(IpAddr::V6(v6));
        }
    }
    dedup(&mut out);
    out
}

/// Whether `ip` is an address of a host that clients can be given (in a certificate, in
/// a URL): not unspecified, multicast or link-local (fe80::/10 and 169.254/16 need a
/// zone or are not routed). Loopback counts: it is for clients on the host itself.
pub fn addressable(ip: IpAddr) -> bool {
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    !(ip.is_unspecified() || ip.is_multicast() || link_local)
}
