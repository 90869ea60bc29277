//! This server's own live relayed transport addresses, as peers.
//!
//! Two clients of one call relayed by this server name each other's relayed address as
//! their peer. When the relay address is private or loopback (a LAN, a cloud VM without
//! `external-ip`) the peer policy refuses that IP, yet the peer is no foreign host: it
//! is this server. So a relayed address of a live allocation is allowed as a peer
//! exactly (IP and port), like an allowed endpoint
//! ([`crate::policy::PeerPolicy::allowed_endpoints`]), and nothing else on its IP is:
//! a permission for the IP reaches only those addresses, in both directions.
//!
//! A [`crate::Server`] knows its own allocations. A runtime that runs several servers
//! (one per worker thread, each with its own allocations) gives them one
//! [`RelayDirectory`] ([`crate::Server::share_relays`]): each server marks the
//! relayed addresses of the allocations it creates and clears them when it deletes
//! them (before releasing the socket), and asks the directory about the others'.
//!
//! The directory is one bit per port of each relay IP (8 KiB per IP), in atomics: no
//! lock, no allocation after [`RelayDirectory::new`], a few nanoseconds per question.
//! A relay port is held by at most one socket (relay sockets do not share ports), so
//! one bit per address is exact. Only the IPs given to `new` are tracked: an address
//! on another IP is never in the directory.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Words of 64 bits for every port of one IP.
const WORDS: usize = (u16::MAX as usize + 1) / 64;

/// The live relayed addresses of every [`crate::Server`] that shares it. Cloning gives
/// another handle to the same directory.
#[derive(Clone)]
pub struct RelayDirectory {
    inner: Arc<[(IpAddr, Box<[AtomicU64]>)]>,
}

impl RelayDirectory {
    /// A directory for relay sockets bound on `relay_ips` (the runtime's relay
    /// addresses). Duplicates and unspecified addresses are left out: a wildcard is not
    /// an address a peer can be sent to.
    pub fn new(relay_ips: &[IpAddr]) -> Self {
        let mut ips: Vec<IpAddr> = Vec::new();
        for ip in relay_ips {
            if !ip.is_unspecified() && !ips.contains(ip) {
                ips.push(*ip);
            }
        }
        let inner = ips
            .into_iter()
            .map(|ip| (ip, (0..WORDS).map(|_| AtomicU64::new(0)).collect()))
            .collect();
        Self { inner }
    }

    /// The bits of `ip`, if it is tracked (a linear scan: a host has few relay IPs).
    fn bits(&self, ip: IpAddr) -> Option<&[AtomicU64]> {
        self.inner
            .iter()
            .find(|(i, _)| *i == ip)
            .map(|(_, bits)| &bits[..])
    }

    /// Word and mask of `port`.
    fn slot(port: u16) -> (usize, u64) {
        (usize::from(port / 64), 1u64 << (port % 64))
    }

    /// Whether `addr` is the relayed address of a live allocation of a server sharing
    /// this directory.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        let (word, mask) = Self::slot(addr.port());
        self.bits(addr.ip())
            .and_then(|b| b.get(word))
            .is_some_and(|w| w.load(Ordering::Acquire) & mask != 0)
    }

    /// Whether `ip` is one of the relay IPs the directory tracks.
    pub fn has_ip(&self, ip: IpAddr) -> bool {
        self.bits(ip).is_some()
    }

    /// Marks `relay` live; `false` (and nothing marked) when its IP is not tracked.
    pub(crate) fn insert(&self, relay: SocketAddr) -> bool {
        let (word, mask) = Self::slot(relay.port());
        match self.bits(relay.ip()).and_then(|b| b.get(word)) {
            Some(w) => {
                w.fetch_or(mask, Ordering::AcqRel);
                true
            }
            None => false,
        }
    }

    /// Clears `relay`: called before its socket is released, so that a server that
    /// binds the port next marks it after this clear.
    pub(crate) fn remove(&self, relay: SocketAddr) {
        let (word, mask) = Self::slot(relay.port());
        if let Some(w) = self.bits(relay.ip()).and_then(|b| b.get(word)) {
            w.fetch_and(!mask, Ordering::AcqRel);
        }
    }

    /// Number of live relayed addresses (a scan of every bit; for tests and logs).
    pub fn len(&self) -> usize {
        self.inner
            .iter()
            .flat_map(|(_, bits)| bits.iter())
            .map(|w| w.load(Ordering::Acquire).count_ones() as usize)
            .sum()
    }

    /// Whether no relayed address is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for RelayDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayDirectory")
            .field(
                "ips",
                &self.inner.iter().map(|(ip, _)| *ip).collect::<Vec<_>>(),
            )
            .field("live", &self.len())
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn marks_exact_addresses_of_tracked_ips() {
        let d = RelayDirectory::new(&[
            "10.0.0.5".parse().unwrap(),
            "::1".parse().unwrap(),
            "10.0.0.5".parse().unwrap(),
            "0.0.0.0".parse().unwrap(),
        ]);
        assert!(d.is_empty());
        assert!(d.has_ip("10.0.0.5".parse().unwrap()));
        assert!(!d.has_ip("0.0.0.0".parse().unwrap()));
        for a in ["10.0.0.5:0", "10.0.0.5:63", "10.0.0.5:64", "10.0.0.5:65535"] {
            assert!(d.insert(addr(a)), "{a}");
            assert!(d.contains(addr(a)), "{a}");
        }
        assert!(d.insert(addr("[::1]:50000")));
        assert_eq!(d.len(), 5);
        // Neighbours, other IPs and other encodings of a tracked IP are not marked.
        for a in [
            "10.0.0.5:1",
            "10.0.0.5:62",
            "10.0.0.6:64",
            "[::ffff:10.0.0.5]:64",
            "[::1]:50001",
            "127.0.0.1:50000",
        ] {
            assert!(!d.contains(addr(a)), "{a}");
        }
        // An untracked IP cannot be marked.
        assert!(!d.insert(addr("10.0.0.6:64")));
        assert!(!d.contains(addr("10.0.0.6:64")));
        // Clones share the bits.
        let other = d.clone();
        other.remove(addr("10.0.0.5:64"));
        assert!(!d.contains(addr("10.0.0.5:64")));
        assert!(d.contains(addr("10.0.0.5:63")));
        d.remove(addr("10.0.0.6:64"));
        assert_eq!(other.len(), 4);
    }
}
