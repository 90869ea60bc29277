//! The types a runtime uses to drive the [`Server`]: transports and 5-tuples, the relay
//! binder it provides, what the server sends and reports, its settings and counters.

use super::*;

/// Transport between client and server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// Stream transports pad ChannelData to 4 bytes (RFC 8656 §12.5).
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// The client's 5-tuple: client address, server address and transport (RFC 8656 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub transport: Transport,
}

/// IP family of a relay address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// Which relay port the server needs (RFC 8656 §7.2, EVEN-PORT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRequest {
    Any,
    /// An even port.
    Even,
    /// An even port, with the next (odd) port bound too and kept for a later
    /// Allocate that presents the RESERVATION-TOKEN.
    EvenReserveNext,
}

/// A relay socket the runtime is asked to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindRequest {
    pub family: Family,
    pub port: PortRequest,
    /// Set the DF bit on packets sent to peers (DONT-FRAGMENT, RFC 8656 §18.8).
    pub dont_fragment: bool,
}

/// Why a relay socket could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BindError {
    /// No free port in the relay range (508).
    Exhausted,
    /// No relay address of that family is configured (440).
    FamilyUnsupported,
}

/// Opens and closes relay sockets for the server: the one place where the core asks
/// the runtime for a resource. For `PortRequest::EvenReserveNext` the runtime binds
/// both `port` and `port + 1` and returns the even one; the odd one stays bound until
/// the server either hands it to another allocation or calls `release` for it.
pub trait RelayBinder {
    fn bind(&mut self, req: BindRequest) -> Result<SocketAddr, BindError>;
    fn release(&mut self, relay: SocketAddr);
}

/// Where a transmit goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// To a client, on the connection or listener of this 5-tuple.
    Client(FiveTuple),
    /// To a peer, from the relay socket bound at `relay`.
    Peer {
        relay: SocketAddr,
        peer: SocketAddr,
        dont_fragment: bool,
    },
    /// A UDP datagram to `client`, sent from the listener socket bound at `local`.
    /// Only Binding responses to RFC 5780 requests use it: CHANGE-REQUEST moves the
    /// source to another listener (`local` is one of a [`DiscoveryAddresses`]), and
    /// RESPONSE-PORT moves the destination to another port of the client's IP.
    ClientFrom {
        local: SocketAddr,
        client: SocketAddr,
    },
}

/// The listener addresses of RFC 5780 NAT behaviour discovery: a primary address and
/// an alternate IP and/or port, making two or four UDP listeners.
///
/// With `alt_ip`, the server answers CHANGE-REQUEST with change-IP and change-port
/// (the four combinations of two IPs and two ports). Without it (one IP, two ports),
/// it can only change the port: change-IP is refused with 420, and a client can run
/// the filtering test for address-and-port-dependent filtering but cannot tell
/// address-dependent from endpoint-independent behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscoveryAddresses {
    /// `listening-ip` and `listening-port`.
    pub primary: SocketAddr,
    /// `alt-listening-ip`, of the same family as the primary IP.
    pub alt_ip: Option<IpAddr>,
    /// `alt-listening-port`, different from the primary port.
    pub alt_port: u16,
}

impl DiscoveryAddresses {
    /// Every listener address of the group, the primary first: two or four.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        let ip = self.primary.ip();
        let p = self.primary.port();
        let mut v = vec![self.primary, SocketAddr::new(ip, self.alt_port)];
        if let Some(alt) = self.alt_ip {
            v.push(SocketAddr::new(alt, p));
            v.push(SocketAddr::new(alt, self.alt_port));
        }
        v
    }

    /// Whether `local` is one of [`DiscoveryAddresses::addresses`].
    pub fn contains(&self, local: SocketAddr) -> bool {
        let ip_ok = local.ip() == self.primary.ip() || Some(local.ip()) == self.alt_ip;
        let port_ok = local.port() == self.primary.port() || local.port() == self.alt_port;
        ip_ok && port_ok
    }

    /// The listener that answers a request received on `local` with the IP and/or the
    /// port changed; `None` if `local` is not in the group or the IP cannot change.
    pub fn changed(
        &self,
        local: SocketAddr,
        change_ip: bool,
        change_port: bool,
    ) -> Option<SocketAddr> {
        if !self.contains(local) {
            return None;
        }
        let ip = if change_ip {
            let alt = self.alt_ip?;
            if local.ip() == alt {
                self.primary.ip()
            } else {
                alt
            }
        } else {
            local.ip()
        };
        let port = match (change_port, local.port() == self.alt_port) {
            (false, _) => local.port(),
            (true, true) => self.primary.port(),
            (true, false) => self.alt_port,
        };
        Some(SocketAddr::new(ip, port))
    }

    /// OTHER-ADDRESS for a request received on `local` (RFC 5780 §7.4): where
    /// "change IP and port" answers from, or "change port" with one IP.
    pub fn other(&self, local: SocketAddr) -> Option<SocketAddr> {
        self.changed(local, self.alt_ip.is_some(), true)
    }
}

/// A packet to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub destination: Destination,
    pub payload: Vec<u8>,
}

/// Why an allocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    Expired,
    /// Refresh with LIFETIME 0.
    Refreshed,
    /// The client's TCP/TLS connection closed (RFC 8656 §6.1... allocations over TCP die with it).
    ConnectionClosed,
}

/// Something the runtime may log or count.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    AllocationCreated {
        five_tuple: FiveTuple,
        username: String,
        relays: Vec<SocketAddr>,
        lifetime: Duration,
    },
    AllocationDeleted {
        five_tuple: FiveTuple,
        username: String,
        reason: DeleteReason,
        relays: Vec<SocketAddr>,
    },
    /// A CreatePermission or ChannelBind named a peer the policy refuses (403); or
    /// client data went to a port outside the allowed endpoints of an IP that only
    /// [`PeerPolicy::allowed_endpoints`] or this server's relays make reachable
    /// (dropped; reported once per permission, with the category
    /// [`Denied::OUTSIDE_ENDPOINTS`] or [`Denied::NOT_A_RELAY`]).
    PeerDenied {
        five_tuple: FiveTuple,
        username: String,
        peer: IpAddr,
        category: &'static str,
        config_key: &'static str,
    },
    /// A request failed authentication (401) for a reason worth logging.
    AuthFailed {
        five_tuple: FiveTuple,
        username: String,
        reason: &'static str,
    },
    /// A quota refused an Allocate (486 or 508).
    QuotaReached {
        five_tuple: FiveTuple,
        username: String,
        which: &'static str,
    },
}

/// Live counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub allocations: u64,
    pub allocations_created: u64,
    pub allocations_deleted: u64,
    pub permissions: u64,
    pub channels: u64,
    pub binding_requests: u64,
    pub auth_failures: u64,
    /// [`Event::PeerDenied`] reports: refused requests, and permissions whose data
    /// went to a port outside the allowed endpoints (once per permission).
    pub peers_denied: u64,
    pub packets_to_peers: u64,
    pub bytes_to_peers: u64,
    pub packets_from_peers: u64,
    pub bytes_from_peers: u64,
    /// Peer data dropped because no permission covers the peer. A permission for an
    /// IP that only allowed endpoints or this server's relays make reachable covers
    /// those addresses only: data from another port of the IP counts here too.
    pub dropped_no_permission: u64,
    /// Data dropped by the per-allocation bandwidth limit (max-bps).
    pub dropped_rate_limited: u64,
    /// Client data dropped because its peer IP is reachable only at
    /// [`PeerPolicy::allowed_endpoints`] or this server's live relayed addresses, and
    /// the peer is none of them.
    pub dropped_peer_denied: u64,
    /// Client packets that were neither valid STUN nor ChannelData for a bound channel.
    pub dropped_invalid: u64,
}

/// Sums the counters of several servers (one per worker thread of a runtime).
impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Self) {
        // Destructured, so that a new field cannot be left out of the sum.
        let Stats {
            allocations,
            allocations_created,
            allocations_deleted,
            permissions,
            channels,
            binding_requests,
            auth_failures,
            peers_denied,
            packets_to_peers,
            bytes_to_peers,
            packets_from_peers,
            bytes_from_peers,
            dropped_no_permission,
            dropped_rate_limited,
            dropped_peer_denied,
            dropped_invalid,
        } = o;
        self.allocations += allocations;
        self.allocations_created += allocations_created;
        self.allocations_deleted += allocations_deleted;
        self.permissions += permissions;
        self.channels += channels;
        self.binding_requests += binding_requests;
        self.auth_failures += auth_failures;
        self.peers_denied += peers_denied;
        self.packets_to_peers += packets_to_peers;
        self.bytes_to_peers += bytes_to_peers;
        self.packets_from_peers += packets_from_peers;
        self.bytes_from_peers += bytes_from_peers;
        self.dropped_no_permission += dropped_no_permission;
        self.dropped_rate_limited += dropped_rate_limited;
        self.dropped_peer_denied += dropped_peer_denied;
        self.dropped_invalid += dropped_invalid;
    }
}

/// Server settings. `Default` gives RFC 8656 timers and safe policy, but a fixed
/// nonce key: the runtime must set `nonce_key` from a random source.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub realm: String,
    /// SOFTWARE attribute in responses; `None` sends none.
    pub software: Option<String>,
    pub credentials: Credentials,
    pub peer_policy: PeerPolicy,
    /// Key for stateless nonces.
    pub nonce_key: [u8; 32],
    /// How long a nonce stays valid (coturn `stale-nonce`, 600 s).
    pub nonce_lifetime: Duration,
    /// Allocation lifetime when the client asks for less (RFC 8656: 600 s).
    pub default_lifetime: Duration,
    /// Longest allocation lifetime granted (coturn `max-allocate-lifetime`, 3600 s).
    pub max_lifetime: Duration,
    /// RFC 8656 §9: 300 s.
    pub permission_lifetime: Duration,
    /// RFC 8656 §12: 600 s.
    pub channel_lifetime: Duration,
    /// How long an EVEN-PORT reservation is kept (RFC 8656 §7.2 suggests 30 s).
    pub reservation_lifetime: Duration,
    /// Allocations per username; 0 = unlimited (coturn `user-quota`).
    pub user_quota: u32,
    /// Allocations in total; 0 = unlimited, bounded by the relay port range (coturn `total-quota`).
    pub total_quota: u32,
    /// Permissions per allocation.
    pub max_permissions: u32,
    /// Channels per allocation (at most 4096 exist).
    pub max_channels: u32,
    /// Relay bandwidth per allocation in bits per second, each direction; 0 = unlimited (coturn `max-bps`).
    pub max_bps: u64,
    /// Advertise `public` in XOR-RELAYED-ADDRESS for relays bound on `private`
    /// (coturn `external-ip=PUBLIC/PRIVATE`); a `private` of `None` maps every relay IP of that family.
    pub external_ips: Vec<(IpAddr, Option<IpAddr>)>,
    /// RFC 5780 NAT behaviour discovery, per address family; empty: CHANGE-REQUEST
    /// and RESPONSE-PORT are answered with 420 (coturn without an alternate address).
    pub discovery: Vec<DiscoveryAddresses>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            realm: "tsunagi".into(),
            software: Some(concat!("tsunagi/", env!("CARGO_PKG_VERSION")).into()),
            credentials: Credentials::default(),
            peer_policy: PeerPolicy::default(),
            nonce_key: [0x5a; 32],
            nonce_lifetime: Duration::from_secs(600),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            reservation_lifetime: Duration::from_secs(30),
            user_quota: 0,
            total_quota: 0,
            max_permissions: 128,
            max_channels: 128,
            max_bps: 0,
            external_ips: Vec::new(),
            discovery: Vec::new(),
        }
    }
}
