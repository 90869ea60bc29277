//! What the server holds per allocation: relays, permissions, channels, bandwidth
//! buckets, reservations, and the live relayed addresses.

use super::*;
use tsunagi_rate::TokenBucket;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct AllocId(pub(super) u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKey {
    Allocation(AllocId),
    Reservation([u8; 8]),
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Relay {
    pub(super) local: SocketAddr,
    pub(super) advertised: SocketAddr,
}

/// A permission for one peer IP (RFC 8656 §9).
#[derive(Debug, Clone, Copy)]
pub(super) struct Permission {
    pub(super) expires: Instant,
    /// The IP is refused but has allowed endpoints or live relays of this server:
    /// data goes to and comes from those addresses only.
    pub(super) endpoints_only: bool,
    /// A packet to another port was dropped and reported (once per permission).
    pub(super) denial_reported: bool,
}

impl Permission {
    /// A new permission, or `old` with a new expiry.
    pub(super) fn refreshed(
        old: Option<Permission>,
        expires: Instant,
        scope: PeerScope,
    ) -> Permission {
        Permission {
            expires,
            endpoints_only: scope == PeerScope::EndpointsOnly,
            denial_reported: old.is_some_and(|p| p.denial_reported),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Channel {
    pub(super) peer: SocketAddr,
    pub(super) expires: Instant,
}

#[derive(Debug)]
pub(super) struct Allocation {
    pub(super) five_tuple: FiveTuple,
    pub(super) username: String,
    pub(super) relays: Vec<Relay>,
    pub(super) expires: Instant,
    pub(super) permissions: Map<IpAddr, Permission>,
    /// Channel number → binding; includes bindings in their cooldown after expiry.
    pub(super) channels: Map<u16, Channel>,
    /// Peer → channel number, for active and cooling-down bindings.
    pub(super) peer_channels: Map<SocketAddr, u16>,
    pub(super) dont_fragment: bool,
    pub(super) to_peer: TokenBucket,
    pub(super) to_client: TokenBucket,
    /// Deadline currently in the timer heap for this allocation.
    pub(super) scheduled: Option<Instant>,
    /// Transaction and encoded success response of the Allocate that created this
    /// allocation, for retransmissions over UDP (RFC 8656 §7.2).
    pub(super) allocate_tid: TransactionId,
    pub(super) allocate_response: Vec<u8>,
}

impl Allocation {
    pub(super) fn relay_for(&self, family: Family) -> Option<&Relay> {
        self.relays
            .iter()
            .find(|r| Family::of(r.local.ip()) == family)
    }

    pub(super) fn active_channel(&self, ch: u16, now: Instant) -> Option<&Channel> {
        self.channels.get(&ch).filter(|c| c.expires > now)
    }

    /// The next instant at which something in this allocation changes state. Every
    /// deadline returned is later than `now`, except an allocation expiry that is due.
    pub(super) fn next_deadline(&self, now: Instant) -> Instant {
        let mut d = self.expires;
        for p in self.permissions.values() {
            d = d.min(p.expires);
        }
        for c in self.channels.values() {
            // Active bindings change at expiry, cooling ones at the end of the cooldown.
            let t = if c.expires > now {
                c.expires
            } else {
                c.expires + CHANNEL_COOLDOWN
            };
            d = d.min(t);
        }
        d
    }
}

#[derive(Debug)]
pub(super) struct Reservation {
    pub(super) relay: SocketAddr,
    pub(super) expires: Instant,
}

/// The relayed addresses of this server's live allocations: its own (by address, to
/// find the allocation of a relay socket), and with a shared [`RelayDirectory`] those
/// of the servers of the other workers too. Every change goes through here, so that
/// the map and the directory agree.
#[derive(Debug)]
pub(super) struct LiveRelays {
    pub(super) own: Map<SocketAddr, AllocId>,
    pub(super) shared: Option<RelayDirectory>,
}

impl LiveRelays {
    pub(super) fn get(&self, relay: &SocketAddr) -> Option<AllocId> {
        self.own.get(relay).copied()
    }

    pub(super) fn insert(&mut self, relay: SocketAddr, id: AllocId) {
        self.own.insert(relay, id);
        if let Some(d) = &self.shared {
            d.insert(relay);
        }
    }

    /// Forgets `relay`; call it before the socket is released.
    pub(super) fn remove(&mut self, relay: &SocketAddr) {
        self.own.remove(relay);
        if let Some(d) = &self.shared {
            d.remove(*relay);
        }
    }

    /// Whether `addr` is a relayed address of a live allocation of this server (any
    /// worker sharing the directory). Never an unspecified address.
    pub(super) fn contains(&self, addr: SocketAddr) -> bool {
        !addr.ip().is_unspecified()
            && (self.own.contains_key(&addr)
                || self.shared.as_ref().is_some_and(|d| d.contains(addr)))
    }

    /// Whether `ip` is a relay IP of the shared directory.
    pub(super) fn is_relay_ip(&self, ip: IpAddr) -> bool {
        self.shared.as_ref().is_some_and(|d| d.has_ip(ip))
    }
}

/// Whether a permission limited to endpoints (`endpoints_only`) covers `peer`: an
/// allowed endpoint, or a live relayed address of this server.
pub(super) fn endpoint_covered(policy: &PeerPolicy, relays: &LiveRelays, peer: SocketAddr) -> bool {
    policy.is_allowed_endpoint(peer) || relays.contains(peer)
}

/// The bandwidth limit of one direction of an allocation: `bps` bits per second as bytes,
/// with one second of burst; 0 = unlimited.
pub(super) fn byte_bucket(bps: u64, now: Instant) -> TokenBucket {
    let rate = bps / 8;
    TokenBucket::new(now, rate, rate)
}
