//! A bound on connections per client address that have not yet become a request or a
//! TURN stream (waiting for their first byte, their TLS handshake, or their first byte
//! after it): a client that opens many and stays silent, or handshakes slowly, holds at
//! most [`PENDING_PER_IP`] of them, each at most the handshake timeout, and cannot use
//! up the connection cap on its own. The map holds only addresses with a pending
//! connection (bounded by live connections).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Connections one address may have before they are served.
pub const PENDING_PER_IP: u32 = 32;

#[derive(Debug, Default)]
pub(super) struct Pending {
    per_ip: Mutex<HashMap<IpAddr, u32>>,
}

/// One pending connection; dropping it ends its pending time.
#[derive(Debug)]
pub(super) struct PendingGuard {
    pending: Arc<Pending>,
    ip: IpAddr,
}

impl Pending {
    /// `None` when `ip` has [`PENDING_PER_IP`] pending connections already.
    pub(super) fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<PendingGuard> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let mut map = self
            .per_ip
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(ip).or_insert(0);
        if *n >= PENDING_PER_IP {
            return None;
        }
        *n += 1;
        Some(PendingGuard {
            pending: self.clone(),
            ip,
        })
    }

    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.per_ip.lock().map_or(0, |m| m.len())
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let mut map = self
            .pending
            .per_ip
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_the_limit_per_address_and_nothing_kept_after() {
        let p = Arc::new(Pending::default());
        let a: IpAddr = [198, 51, 100, 1].into();
        let mapped: IpAddr = "::ffff:198.51.100.1".parse().unwrap_or(a);
        let b: IpAddr = [198, 51, 100, 2].into();
        let mut held: Vec<PendingGuard> = (0..PENDING_PER_IP).filter_map(|_| p.enter(a)).collect();
        assert_eq!(held.len(), PENDING_PER_IP as usize);
        assert!(p.enter(a).is_none());
        assert!(p.enter(mapped).is_none(), "the same address, IPv4-mapped");
        let other = p.enter(b);
        assert!(other.is_some());
        held.pop();
        assert!(p.enter(a).is_some());
        held.clear();
        drop(other);
        assert_eq!(p.addresses(), 0);
    }
}
