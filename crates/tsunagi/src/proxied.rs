//! Clients behind a load balancer or proxy: the address that logs, limits and TURN's
//! 5-tuples see is the client's, not the proxy's. Both ways are off unless configured,
//! and each believes only the peers it lists.
//!
//! * `proxy-protocol-ip`: a TCP or TLS connection (on a front port, or on TURN's TCP
//!   listener) from one of these addresses must begin with a PROXY protocol header, v1
//!   or v2 ([`tsunagi_proxy_protocol`]), before its first byte is looked at. The
//!   header's source address is the client. A `LOCAL` header (a health check), or one
//!   that names no TCP addresses, keeps the proxy's own address. A listed peer that
//!   sends no valid header within 10 s (what a TLS handshake, or a TURN stream's first
//!   frame, is given) is closed, logged at debug and counted. A connection from any other address is served as it is: a
//!   PROXY header from it is not believed, it is bad input for whatever the port serves.
//!   On the front ports the header comes before the bound on unserved connections per
//!   address (`crate::http`'s pending bound), which then counts the client it names:
//!   the proxy's own address is not held to it, or one client's silent connections
//!   would use up the room of every other client of the proxy.
//! * `trusted-proxy-ip`: an HTTP request whose peer (the client the PROXY header named,
//!   if any, else the TCP peer) is one of these addresses has its client taken from
//!   `X-Forwarded-For`: the rightmost address that is not itself a trusted proxy
//!   ([`forwarded_client`]). `Forwarded` (RFC 7239) is not read: a proxy that appends
//!   one of the two headers passes the other through as the client wrote it, so
//!   reading both would let clients name themselves.
//!
//! UDP carries no header: TURN and STUN over UDP, and the SFU's UDP, must reach tsunagi
//! directly (or through 1:1 NAT with `external-ip`). The SFU's ICE-TCP port is not read
//! for headers either.
//!
//! The server side of a TURN 5-tuple stays the accepted socket's own address, not the
//! header's destination (the proxy's address): it is the address this server's sockets
//! answer from, and the one the rest of the server (the core's queue of the connection,
//! the worker a connection hashes to) knows the connection by. Responses go back over
//! the same connection, through the proxy, whatever the 5-tuple says.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::debug;
use tsunagi_turn::policy::IpRange;

use crate::redact::Redactor;

/// A list of peer addresses (`proxy-protocol-ip`, `trusted-proxy-ip`); cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ProxySources {
    ranges: Arc<[IpRange]>,
}

impl ProxySources {
    pub fn new(ranges: Vec<IpRange>) -> Self {
        Self {
            ranges: ranges.into(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether `ip` is listed; an IPv4-mapped IPv6 address counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.ranges.iter().any(|r| r.contains(ip))
    }
}

/// An address as the rest of the server should see it: an IPv4 client that reached a
/// dual-stack proxy is named as IPv4.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// The client of a connection accepted from `peer`: `peer` itself unless it is listed
/// in `from`, else what its PROXY header says (read within `limit`). `None`: close the
/// connection (no valid header in time, counted in `failures`; or shutdown).
pub(crate) async fn client_of(
    stream: &mut TcpStream,
    peer: SocketAddr,
    from: &ProxySources,
    limit: Duration,
    shutdown: &mut watch::Receiver<bool>,
    redact: &Redactor,
    failures: &AtomicU64,
) -> Option<SocketAddr> {
    if !from.contains(peer.ip()) {
        return Some(peer);
    }
    let read = tokio::select! {
        r = tokio::time::timeout(limit, tsunagi_net::read_proxy_header(stream)) => r,
        () = tsunagi_net::stopped(shutdown) => return None,
    };
    let error = match read {
        Ok(Ok(header)) => return Some(header.source().map_or(peer, canonical)),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no PROXY header within {} s", limit.as_secs()),
    };
    failures.fetch_add(1, Ordering::Relaxed);
    debug!(
        proxy = %redact.addr(peer),
        %error,
        "connection from a proxy-protocol-ip address closed: it must begin with a PROXY header"
    );
    None
}

/// The client of an HTTP request that came from `peer`: `peer` unless it is a trusted
/// proxy; then, walking `X-Forwarded-For` from its right end (the address the last
/// proxy saw), the first address that is not itself a trusted proxy, or the leftmost
/// if all are. An entry that is not an address ends the walk at the proxy that wrote
/// it. Entries are `IP`, `IP:port` or `[IPv6]:port`; without a port the client's is 0
/// (unknown).
pub(crate) fn forwarded_client(
    peer: SocketAddr,
    headers: &HeaderMap,
    trusted: &ProxySources,
) -> SocketAddr {
    if trusted.is_empty() || !trusted.contains(peer.ip()) {
        return peer;
    }
    let mut client = peer;
    // Several X-Forwarded-For lines are one list, in order (RFC 9110 §5.3).
    'lines: for line in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(line) = line.to_str() else {
            break;
        };
        for entry in line.rsplit(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some(addr) = forwarded_addr(entry) else {
                break 'lines;
            };
            client = addr;
            if !trusted.contains(addr.ip()) {
                break 'lines;
            }
        }
    }
    client
}

/// One `X-Forwarded-For` entry: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:4711`.
fn forwarded_addr(entry: &str) -> Option<SocketAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(SocketAddr::new(ip, 0)));
    }
    if let Ok(a) = entry.parse::<SocketAddr>() {
        return Some(canonical(a));
    }
    let bracketed = entry.strip_prefix('[')?.strip_suffix(']')?;
    let ip = bracketed.parse::<std::net::Ipv6Addr>().ok()?;
    Some(canonical(SocketAddr::new(ip.into(), 0)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn sources(list: &[&str]) -> ProxySources {
        ProxySources::new(list.iter().map(|s| s.parse().unwrap()).collect())
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("x-forwarded-for", HeaderValue::from_str(l).unwrap());
        }
        h
    }

    #[test]
    fn mapped_addresses_match_their_ipv4_range() {
        let s = sources(&["10.0.0.0/8", "2001:db8::/32"]);
        assert!(s.contains("10.1.2.3".parse().unwrap()));
        assert!(s.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(s.contains("2001:db8::5".parse().unwrap()));
        assert!(!s.contains("11.0.0.1".parse().unwrap()));
        assert!(!ProxySources::default().contains("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn forwarded_for_is_read_from_trusted_peers_only() {
        let trusted = sources(&["10.0.0.0/8"]);
        let h = headers(&["198.51.100.7"]);
        // From a trusted proxy: the forwarded address.
        assert_eq!(
            forwarded_client(sa("10.0.0.2:5000"), &h, &trusted),
            sa("198.51.100.7:0")
        );
        // From anyone else, or with no list: the peer, whatever the header says.
        assert_eq!(
            forwarded_client(sa("203.0.113.9:5000"), &h, &trusted),
            sa("203.0.113.9:5000")
        );
        assert_eq!(
            forwarded_client(sa("10.0.0.2:5000"), &h, &ProxySources::default()),
            sa("10.0.0.2:5000")
        );
        // A trusted proxy that sends none: itself.
        assert_eq!(
            forwarded_client(sa("10.0.0.2:5000"), &HeaderMap::new(), &trusted),
            sa("10.0.0.2:5000")
        );
    }

    /// The client is the rightmost entry that is not a trusted proxy: what a client
    /// wrote itself, to the left of it, is not believed.
    #[test]
    fn the_rightmost_untrusted_entry_is_the_client() {
        let trusted = sources(&["10.0.0.0/8"]);
        let peer = sa("10.0.0.2:5000");
        let cases: &[(&[&str], &str)] = &[
            (&["1.1.1.1, 198.51.100.7"], "198.51.100.7:0"),
            (&["1.1.1.1, 198.51.100.7, 10.0.0.9"], "198.51.100.7:0"),
            (
                &["1.1.1.1", "198.51.100.7", "10.0.0.9, 10.0.0.8"],
                "198.51.100.7:0",
            ),
            // Every hop trusted: the leftmost.
            (&["10.0.0.7, 10.0.0.9"], "10.0.0.7:0"),
            // An entry that is not an address stops the walk at the proxy that wrote it.
            (&["198.51.100.7, unknown"], "10.0.0.2:5000"),
            (&["198.51.100.7, garbage, 10.0.0.9"], "10.0.0.9:0"),
            // Forms with ports and brackets; a mapped address is named as IPv4.
            (&["198.51.100.7:4711"], "198.51.100.7:4711"),
            (&["[2001:db8::7]:4711"], "[2001:db8::7]:4711"),
            (&["[2001:db8::7]"], "[2001:db8::7]:0"),
            (&["2001:db8::7"], "[2001:db8::7]:0"),
            (&["::ffff:198.51.100.7"], "198.51.100.7:0"),
            // Empty entries are skipped.
            (&["198.51.100.7, ,"], "198.51.100.7:0"),
        ];
        for (lines, want) in cases {
            assert_eq!(
                forwarded_client(peer, &headers(lines), &trusted),
                sa(want),
                "{lines:?}"
            );
        }
    }

    #[test]
    fn a_line_that_is_not_text_stops_the_walk() {
        let trusted = sources(&["10.0.0.0/8"]);
        let mut h = headers(&["198.51.100.7"]);
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        assert_eq!(
            forwarded_client(sa("10.0.0.2:5000"), &h, &trusted),
            sa("10.0.0.2:5000")
        );
    }
}
