//! The TURN server state machine (RFC 8656) and STUN Binding (RFC 8489).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tsunagi_stun::attr;
use tsunagi_stun::{
    classify, ChannelData, Class, IntegrityKey, Message, MessageEncoder, Method, PacketKind,
    PasswordAlgorithm, TransactionId,
};

use crate::auth::{AuthError, Credentials};
use crate::nonce::{self, NonceCheck};
use crate::policy::{Denied, PeerPolicy, PeerScope};
use crate::relays::RelayDirectory;

type Map<K, V> = HashMap<K, V, ahash::RandomState>;

fn new_map<K, V>() -> Map<K, V> {
    HashMap::with_hasher(ahash::RandomState::new())
}

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

/// RFC 8656 §12: a channel number and peer may not be rebound to something else for
/// 5 minutes after the binding expires.
const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);

/// Attributes this server understands (the rest, if comprehension-required, earn 420).
const KNOWN_ATTRIBUTES: &[u16] = &[
    attr::MAPPED_ADDRESS,
    attr::USERNAME,
    attr::MESSAGE_INTEGRITY,
    attr::ERROR_CODE,
    attr::UNKNOWN_ATTRIBUTES,
    attr::CHANNEL_NUMBER,
    attr::LIFETIME,
    attr::XOR_PEER_ADDRESS,
    attr::DATA,
    attr::REALM,
    attr::NONCE,
    attr::XOR_RELAYED_ADDRESS,
    attr::REQUESTED_ADDRESS_FAMILY,
    attr::EVEN_PORT,
    attr::REQUESTED_TRANSPORT,
    attr::DONT_FRAGMENT,
    attr::MESSAGE_INTEGRITY_SHA256,
    attr::PASSWORD_ALGORITHM,
    attr::USERHASH,
    attr::XOR_MAPPED_ADDRESS,
    attr::RESERVATION_TOKEN,
    attr::PRIORITY,
    attr::USE_CANDIDATE,
    attr::PADDING,
];

/// Request attributes that only a Binding understands (RFC 5780 §7).
const BINDING_ATTRIBUTES: &[u16] = &[attr::CHANGE_REQUEST, attr::RESPONSE_PORT];

/// Largest response we build (error responses with long reason phrases, dual relays).
const RESPONSE_BUF: usize = 1024;
/// Largest DATA we relay: a UDP datagram payload.
const MAX_DATA: usize = 65_507;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct AllocId(u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Allocation(AllocId),
    Reservation([u8; 8]),
}

#[derive(Debug, Clone, Copy)]
struct Relay {
    local: SocketAddr,
    advertised: SocketAddr,
}

/// A permission for one peer IP (RFC 8656 §9).
#[derive(Debug, Clone, Copy)]
struct Permission {
    expires: Instant,
    /// The IP is refused but has allowed endpoints or live relays of this server:
    /// data goes to and comes from those addresses only.
    endpoints_only: bool,
    /// A packet to another port was dropped and reported (once per permission).
    denial_reported: bool,
}

impl Permission {
    /// A new permission, or `old` with a new expiry.
    fn refreshed(old: Option<Permission>, expires: Instant, scope: PeerScope) -> Permission {
        Permission {
            expires,
            endpoints_only: scope == PeerScope::EndpointsOnly,
            denial_reported: old.is_some_and(|p| p.denial_reported),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Channel {
    peer: SocketAddr,
    expires: Instant,
}

#[derive(Debug)]
struct TokenBucket {
    /// Bytes per second; 0 = unlimited.
    rate: u64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(bps: u64, now: Instant) -> Self {
        let rate = bps / 8;
        Self {
            rate,
            tokens: rate as f64,
            last: now,
        }
    }

    fn take(&mut self, now: Instant, bytes: usize) -> bool {
        if self.rate == 0 {
            return true;
        }
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        // One second of burst.
        self.tokens = (self.tokens + dt * self.rate as f64).min(self.rate as f64);
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct Allocation {
    five_tuple: FiveTuple,
    username: String,
    relays: Vec<Relay>,
    expires: Instant,
    permissions: Map<IpAddr, Permission>,
    /// Channel number → binding; includes bindings in their cooldown after expiry.
    channels: Map<u16, Channel>,
    /// Peer → channel number, for active and cooling-down bindings.
    peer_channels: Map<SocketAddr, u16>,
    dont_fragment: bool,
    to_peer: TokenBucket,
    to_client: TokenBucket,
    /// Deadline currently in the timer heap for this allocation.
    scheduled: Option<Instant>,
    /// Transaction and encoded success response of the Allocate that created this
    /// allocation, for retransmissions over UDP (RFC 8656 §7.2).
    allocate_tid: TransactionId,
    allocate_response: Vec<u8>,
}

impl Allocation {
    fn relay_for(&self, family: Family) -> Option<&Relay> {
        self.relays
            .iter()
            .find(|r| Family::of(r.local.ip()) == family)
    }

    fn active_channel(&self, ch: u16, now: Instant) -> Option<&Channel> {
        self.channels.get(&ch).filter(|c| c.expires > now)
    }

    /// The next instant at which something in this allocation changes state. Every
    /// deadline returned is later than `now`, except an allocation expiry that is due.
    fn next_deadline(&self, now: Instant) -> Instant {
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
struct Reservation {
    relay: SocketAddr,
    expires: Instant,
}

/// How a Binding request is answered (RFC 5780 §6.1).
#[derive(Debug, Clone, Copy)]
struct BindingPlan {
    /// The listener the response leaves from (RESPONSE-ORIGIN).
    from: SocketAddr,
    /// Where it goes: the client, or another port of the client's IP (RESPONSE-PORT).
    to: SocketAddr,
    /// OTHER-ADDRESS, when discovery is on for the listener the request reached.
    other: Option<SocketAddr>,
    /// Length of the PADDING value to include; 0 for none.
    padding: usize,
}

/// What [`Server::check_peer`] judges: the XOR-PEER-ADDRESS of a CreatePermission
/// (a permission for its IP) or of a ChannelBind (a channel to the address).
#[derive(Debug, Clone, Copy)]
enum PeerTarget {
    Permission(SocketAddr),
    Channel(SocketAddr),
}

/// The relayed addresses of this server's live allocations: its own (by address, to
/// find the allocation of a relay socket), and with a shared [`RelayDirectory`] those
/// of the servers of the other workers too. Every change goes through here, so that
/// the map and the directory agree.
#[derive(Debug)]
struct LiveRelays {
    own: Map<SocketAddr, AllocId>,
    shared: Option<RelayDirectory>,
}

impl LiveRelays {
    fn get(&self, relay: &SocketAddr) -> Option<AllocId> {
        self.own.get(relay).copied()
    }

    fn insert(&mut self, relay: SocketAddr, id: AllocId) {
        self.own.insert(relay, id);
        if let Some(d) = &self.shared {
            d.insert(relay);
        }
    }

    /// Forgets `relay`; call it before the socket is released.
    fn remove(&mut self, relay: &SocketAddr) {
        self.own.remove(relay);
        if let Some(d) = &self.shared {
            d.remove(*relay);
        }
    }

    /// Whether `addr` is a relayed address of a live allocation of this server (any
    /// worker sharing the directory). Never an unspecified address.
    fn contains(&self, addr: SocketAddr) -> bool {
        !addr.ip().is_unspecified()
            && (self.own.contains_key(&addr)
                || self.shared.as_ref().is_some_and(|d| d.contains(addr)))
    }

    /// Whether `ip` is a relay IP of the shared directory.
    fn is_relay_ip(&self, ip: IpAddr) -> bool {
        self.shared.as_ref().is_some_and(|d| d.has_ip(ip))
    }
}

/// Whether a permission limited to endpoints (`endpoints_only`) covers `peer`: an
/// allowed endpoint, or a live relayed address of this server.
fn endpoint_covered(policy: &PeerPolicy, relays: &LiveRelays, peer: SocketAddr) -> bool {
    policy.is_allowed_endpoint(peer) || relays.contains(peer)
}

/// The result of a successful authentication.
#[derive(Debug)]
struct Authed {
    username: String,
    key: IntegrityKey,
    sha256: bool,
}

/// An error response in the making.
#[derive(Debug)]
struct Reject {
    code: u16,
    reason: String,
    /// Include REALM and NONCE (401, 438).
    challenge: bool,
    unknown: Vec<u16>,
}

impl Reject {
    fn new(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            challenge: false,
            unknown: Vec::new(),
        }
    }
    fn challenge(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            challenge: true,
            unknown: Vec::new(),
        }
    }
}

/// The sans-IO TURN server. See the crate documentation for the driving loop.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    /// Wall clock anchor: `unix_base` seconds at `instant_base`.
    instant_base: Instant,
    unix_base: u64,
    next_id: u64,
    /// Boxed: under churn a table of inline entries (about 450 bytes each) doubles once
    /// its deleted slots pile up, and never shrinks; boxes keep that table small.
    allocations: Map<AllocId, Box<Allocation>>,
    by_five_tuple: Map<FiveTuple, AllocId>,
    /// The allocation of each relayed address, and the shared directory.
    live_relays: LiveRelays,
    per_user: Map<String, u32>,
    reservations: Map<[u8; 8], Reservation>,
    /// Deadlines in order: exactly one entry per live allocation (its `scheduled`) and
    /// one per live reservation (its `expires`). Entries leave with what they time, so
    /// the set is bounded by live state, not by churn.
    timers: BTreeSet<(Instant, TimerKey)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
    /// Counter mixed into reservation tokens.
    token_counter: u64,
    /// State of the generator for Data indication transaction IDs.
    tid_state: u64,
    /// The latest `now` given to any input.
    clock: Instant,
}

/// A server that goes away takes its relayed addresses out of a shared directory: the
/// other servers must not keep allowing them as peers.
impl Drop for Server {
    fn drop(&mut self) {
        if let Some(d) = &self.live_relays.shared {
            for relay in self.live_relays.own.keys() {
                d.remove(*relay);
            }
        }
    }
}

/// Events waiting to be polled are capped: a runtime that never polls them must not
/// make the server grow without bound. Transmits are not capped (every input produces
/// at most two, and the runtime drains them after each input).
const MAX_QUEUED_EVENTS: usize = 4096;

impl Server {
    /// `now` and `unix_now` anchor the wall clock: REST credential expiry and nonce
    /// expiry are computed as `unix_now + (t - now)` for later instants `t`.
    pub fn new(config: ServerConfig, now: Instant, unix_now: u64) -> Self {
        Self {
            instant_base: now,
            unix_base: unix_now,
            next_id: 1,
            allocations: new_map(),
            by_five_tuple: new_map(),
            live_relays: LiveRelays {
                own: new_map(),
                shared: None,
            },
            per_user: new_map(),
            reservations: new_map(),
            timers: BTreeSet::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            tid_state: u64::from_le_bytes([
                config_seed(&config.nonce_key, 0),
                config_seed(&config.nonce_key, 1),
                config_seed(&config.nonce_key, 2),
                config_seed(&config.nonce_key, 3),
                config_seed(&config.nonce_key, 4),
                config_seed(&config.nonce_key, 5),
                config_seed(&config.nonce_key, 6),
                config_seed(&config.nonce_key, 7),
            ]),
            config,
            stats: Stats::default(),
            token_counter: 0,
            clock: now,
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Number of live allocations.
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// The relay addresses of the allocation on this 5-tuple, if any.
    pub fn relays_of(&self, ft: &FiveTuple) -> Option<Vec<SocketAddr>> {
        let id = self.by_five_tuple.get(ft)?;
        self.allocations
            .get(id)
            .map(|a| a.relays.iter().map(|r| r.local).collect())
    }

    /// Shares `directory` with the other servers of a runtime (one per worker thread):
    /// this server marks the relayed addresses of its live allocations in it, and
    /// treats every address marked there as this server's own relay, a peer allowed
    /// exactly even when its IP is refused ([`crate::relays`]). Give every server of
    /// one runtime the same directory, built for the runtime's relay IPs.
    pub fn share_relays(&mut self, directory: RelayDirectory) {
        if let Some(old) = &self.live_relays.shared {
            for relay in self.live_relays.own.keys() {
                old.remove(*relay);
            }
        }
        for relay in self.live_relays.own.keys() {
            directory.insert(*relay);
        }
        self.live_relays.shared = Some(directory);
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next instant at which [`Server::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Number of pending timer entries: one per live allocation and reservation.
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    fn tick(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
    }

    fn unix_now(&self, now: Instant) -> u64 {
        self.unix_base + now.saturating_duration_since(self.instant_base).as_secs()
    }

    fn event(&mut self, e: Event) {
        if self.events.len() < MAX_QUEUED_EVENTS {
            self.events.push_back(e);
        }
    }

    // ----------------------------------------------------------------- inputs

    /// A datagram (UDP) or one framed message (TCP/TLS) from a client.
    pub fn handle_client(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        data: &[u8],
        binder: &mut dyn RelayBinder,
    ) {
        self.tick(now);
        match classify(data) {
            PacketKind::ChannelData => self.client_channel_data(now, ft, data),
            PacketKind::Stun => match Message::parse(data) {
                Ok(msg) => self.client_stun(now, ft, &msg, binder),
                Err(_) => self.stats.dropped_invalid += 1,
            },
            PacketKind::Other => self.stats.dropped_invalid += 1,
        }
    }

    /// [`Server::handle_client`] with the relay fast path: ChannelData for a bound
    /// channel is not queued as a transmit; its destination and the range of `data`
    /// to send to the peer are returned instead (same checks and counters). Anything
    /// else is handled by `handle_client`, its transmits queued, and `None` returned.
    pub fn handle_client_relay(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        data: &[u8],
        binder: &mut dyn RelayBinder,
    ) -> Option<(Destination, std::ops::Range<usize>)> {
        if classify(data) != PacketKind::ChannelData {
            self.handle_client(now, ft, data, binder);
            return None;
        }
        self.tick(now);
        self.channel_data_route(now, ft, data)
    }

    /// A datagram that arrived from `peer` on the relay socket bound at `relay`.
    pub fn handle_peer(&mut self, now: Instant, relay: SocketAddr, peer: SocketAddr, data: &[u8]) {
        // With no room to write in, the message is queued.
        let _ = self.handle_peer_into(now, relay, peer, data, &mut []);
    }

    /// [`Server::handle_peer`] that writes the message for the client (ChannelData,
    /// or a Data indication) into `out` instead of queuing a transmit, and returns its
    /// destination and length: no allocation per packet. Same checks, counters and
    /// bytes as `handle_peer`. When `out` is too small, the message is queued as
    /// `handle_peer` queues it and `None` is returned, as it is when nothing is sent.
    pub fn handle_peer_into(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
        out: &mut [u8],
    ) -> Option<(Destination, usize)> {
        self.tick(now);
        let id = self.live_relays.get(&relay)?;
        let a = self.allocations.get_mut(&id)?;
        let covered = a
            .permissions
            .get(&peer.ip())
            .filter(|p| p.expires > now)
            .is_some_and(|p| {
                !p.endpoints_only
                    || endpoint_covered(&self.config.peer_policy, &self.live_relays, peer)
            });
        if !covered {
            self.stats.dropped_no_permission += 1;
            return None;
        }
        if data.len() > MAX_DATA {
            self.stats.dropped_invalid += 1;
            return None;
        }
        if !a.to_client.take(now, data.len()) {
            self.stats.dropped_rate_limited += 1;
            return None;
        }
        let ft = a.five_tuple;
        let channel = a
            .peer_channels
            .get(&peer)
            .copied()
            .filter(|ch| a.active_channel(*ch, now).is_some());
        let stream = ft.transport.is_stream();
        // A Data indication adds a header, XOR-PEER-ADDRESS and DATA's own header and
        // padding: less than 64 bytes.
        let needed = match channel {
            Some(_) => ChannelData::encoded_len(data.len(), stream),
            None => data.len() + 64,
        };
        let mut owned = Vec::new();
        let in_place = out.len() >= needed;
        let buf: &mut [u8] = match out.get_mut(..needed) {
            Some(b) => b,
            None => {
                owned.resize(needed, 0);
                &mut owned
            }
        };
        let n = match channel {
            // `buf` is sized for exactly this frame.
            Some(ch) => ChannelData { channel: ch, data }
                .encode(buf, stream)
                .unwrap_or(0),
            None => {
                let tid = TransactionId::new(self.next_indication_tid());
                (|| {
                    let mut enc = MessageEncoder::new(buf, Class::Indication, Method::DATA, tid)?;
                    enc.xor_address(attr::XOR_PEER_ADDRESS, &peer)?;
                    enc.attr(attr::DATA, data)?;
                    Ok::<_, tsunagi_stun::EncodeError>(enc.finish())
                })()
                .unwrap_or(0)
            }
        };
        if n == 0 {
            return None;
        }
        self.stats.packets_from_peers += 1;
        self.stats.bytes_from_peers += data.len() as u64;
        let destination = Destination::Client(ft);
        if in_place {
            return Some((destination, n));
        }
        owned.truncate(n);
        self.transmits.push_back(Transmit {
            destination,
            payload: owned,
        });
        None
    }

    /// The client's TCP or TLS connection closed: its allocation goes with it.
    pub fn handle_connection_closed(
        &mut self,
        _now: Instant,
        ft: FiveTuple,
        binder: &mut dyn RelayBinder,
    ) {
        if let Some(id) = self.by_five_tuple.get(&ft).copied() {
            self.delete_allocation(id, DeleteReason::ConnectionClosed, binder);
        }
    }

    /// Expire whatever is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, binder: &mut dyn RelayBinder) {
        self.tick(now);
        while let Some(&(t, key)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.remove(&(t, key));
            match key {
                TimerKey::Reservation(token) => {
                    if let Some(r) = self.reservations.remove(&token) {
                        binder.release(r.relay);
                    }
                }
                TimerKey::Allocation(id) => self.expire_allocation(id, now, binder),
            }
        }
    }

    /// The allocation's timer entry fired (and is already out of the set).
    fn expire_allocation(&mut self, id: AllocId, now: Instant, binder: &mut dyn RelayBinder) {
        let Some(a) = self.allocations.get_mut(&id) else {
            return;
        };
        a.scheduled = None;
        if a.expires <= now {
            self.delete_allocation(id, DeleteReason::Expired, binder);
            return;
        }
        let before_p = a.permissions.len();
        a.permissions.retain(|_, p| p.expires > now);
        let removed_p = (before_p - a.permissions.len()) as u64;
        let before_c = a.channels.len();
        a.channels.retain(|_, c| c.expires + CHANNEL_COOLDOWN > now);
        let removed_c = (before_c - a.channels.len()) as u64;
        let channels = &a.channels;
        a.peer_channels.retain(|_, ch| channels.contains_key(ch));
        self.stats.permissions -= removed_p;
        self.stats.channels -= removed_c;
        self.schedule(id);
    }

    fn schedule(&mut self, id: AllocId) {
        let now = self.clock;
        let Some(a) = self.allocations.get_mut(&id) else {
            return;
        };
        let d = a.next_deadline(now);
        // Only an earlier deadline moves the entry: a later one is found when the
        // current entry fires and reschedules.
        if a.scheduled.is_none_or(|s| d < s) {
            if let Some(old) = a.scheduled.replace(d) {
                self.timers.remove(&(old, TimerKey::Allocation(id)));
            }
            self.timers.insert((d, TimerKey::Allocation(id)));
        }
    }

    fn delete_allocation(
        &mut self,
        id: AllocId,
        reason: DeleteReason,
        binder: &mut dyn RelayBinder,
    ) {
        let Some(a) = self.allocations.remove(&id) else {
            return;
        };
        if let Some(s) = a.scheduled {
            self.timers.remove(&(s, TimerKey::Allocation(id)));
        }
        self.by_five_tuple.remove(&a.five_tuple);
        for r in &a.relays {
            // Forgotten before the socket is released: see `RelayDirectory::remove`.
            self.live_relays.remove(&r.local);
            binder.release(r.local);
        }
        if let Some(n) = self.per_user.get_mut(&a.username) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(&a.username);
            }
        }
        self.stats.allocations = self.allocations.len() as u64;
        self.stats.allocations_deleted += 1;
        self.stats.permissions -= a.permissions.len() as u64;
        self.stats.channels -= a.channels.len() as u64;
        let relays = a.relays.iter().map(|r| r.local).collect();
        self.event(Event::AllocationDeleted {
            five_tuple: a.five_tuple,
            username: a.username,
            reason,
            relays,
        });
    }

    // ------------------------------------------------------------ ChannelData

    fn client_channel_data(&mut self, now: Instant, ft: FiveTuple, data: &[u8]) {
        if let Some((destination, range)) = self.channel_data_route(now, ft, data) {
            self.transmits.push_back(Transmit {
                destination,
                payload: data.get(range).unwrap_or_default().to_vec(),
            });
        }
    }

    /// Checks and counts ChannelData from a client; returns where its data goes and
    /// where the data is in `data`.
    fn channel_data_route(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        data: &[u8],
    ) -> Option<(Destination, std::ops::Range<usize>)> {
        let Ok(cd) = ChannelData::parse(data) else {
            self.stats.dropped_invalid += 1;
            return None;
        };
        let Some(id) = self.by_five_tuple.get(&ft).copied() else {
            self.stats.dropped_invalid += 1;
            return None;
        };
        let a = self.allocations.get_mut(&id)?;
        let Some(peer) = a.active_channel(cd.channel, now).map(|c| c.peer) else {
            self.stats.dropped_invalid += 1;
            return None;
        };
        // The data follows the 4-byte ChannelData header.
        let range = 4..4 + cd.data.len();
        self.route_to_peer(now, id, peer, cd.data.len(), false)
            .map(|d| (d, range))
    }

    fn relay_to_peer(
        &mut self,
        now: Instant,
        id: AllocId,
        peer: SocketAddr,
        data: &[u8],
        df: bool,
    ) {
        if let Some(destination) = self.route_to_peer(now, id, peer, data.len(), df) {
            self.transmits.push_back(Transmit {
                destination,
                payload: data.to_vec(),
            });
        }
    }

    /// Checks (permission, allowed endpoints, relay family, bandwidth) and counts
    /// `len` bytes from the client of allocation `id` to `peer`; returns where they go.
    /// Every relay path to a peer goes through here.
    fn route_to_peer(
        &mut self,
        now: Instant,
        id: AllocId,
        peer: SocketAddr,
        len: usize,
        df: bool,
    ) -> Option<Destination> {
        let a = self.allocations.get_mut(&id)?;
        let Some(perm) = a
            .permissions
            .get_mut(&peer.ip())
            .filter(|p| p.expires > now)
        else {
            self.stats.dropped_no_permission += 1;
            return None;
        };
        // Only for an IP that allowed endpoints or this server's relays alone make
        // reachable.
        if perm.endpoints_only
            && !endpoint_covered(&self.config.peer_policy, &self.live_relays, peer)
        {
            self.stats.dropped_peer_denied += 1;
            if !perm.denial_reported {
                perm.denial_reported = true;
                let (five_tuple, username) = (a.five_tuple, a.username.clone());
                self.report_outside_endpoints(id, five_tuple, username, peer);
            }
            return None;
        }
        let Some(relay) = a.relay_for(Family::of(peer.ip())).map(|r| r.local) else {
            self.stats.dropped_invalid += 1;
            return None;
        };
        if !a.to_peer.take(now, len) {
            self.stats.dropped_rate_limited += 1;
            return None;
        }
        let dont_fragment = df || a.dont_fragment;
        self.stats.packets_to_peers += 1;
        self.stats.bytes_to_peers += len as u64;
        Some(Destination::Peer {
            relay,
            peer,
            dont_fragment,
        })
    }

    /// Client data went to a port outside the allowed endpoints and live relays: one
    /// event per permission, not per packet.
    #[cold]
    fn report_outside_endpoints(
        &mut self,
        id: AllocId,
        five_tuple: FiveTuple,
        username: String,
        peer: SocketAddr,
    ) {
        let Err(d) = self.judge_peer(id, PeerTarget::Channel(peer)) else {
            return;
        };
        self.stats.peers_denied += 1;
        self.event(Event::PeerDenied {
            five_tuple,
            username,
            peer: peer.ip(),
            category: d.category,
            config_key: d.config_key,
        });
    }

    // ------------------------------------------------------------------- STUN

    fn client_stun(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        binder: &mut dyn RelayBinder,
    ) {
        // RFC 8489 §6.3: a FINGERPRINT that does not match means "not STUN".
        if msg.has_fingerprint() && !msg.has_valid_fingerprint() {
            self.stats.dropped_invalid += 1;
            return;
        }
        match msg.class() {
            Class::Request => {}
            Class::Indication => {
                if msg.method() == Method::SEND {
                    self.send_indication(now, ft, msg);
                }
                // Binding indications are keepalives; other indications are ignored.
                return;
            }
            // Responses are never sent to a server.
            Class::Success | Class::Error => return,
        }
        // CHANGE-REQUEST and RESPONSE-PORT mean something in a Binding request only;
        // `binding` refuses them itself when discovery is off.
        let binding = msg.method() == Method::BINDING;
        let unknown: Vec<u16> = msg
            .unknown_required(KNOWN_ATTRIBUTES)
            .filter(|t| !(binding && BINDING_ATTRIBUTES.contains(t)))
            .take(16)
            .collect();
        if !unknown.is_empty() {
            let mut r = Reject::new(
                420,
                "Unknown Attribute: remove the listed comprehension-required attributes",
            );
            r.unknown = unknown;
            self.respond_error(ft, msg, r, None);
            return;
        }
        match msg.method() {
            Method::BINDING => self.binding(ft, msg),
            Method::ALLOCATE => self.with_auth(now, ft, msg, |s, auth| {
                s.allocate(now, ft, msg, auth, binder)
            }),
            Method::REFRESH => self.with_auth(now, ft, msg, |s, auth| {
                s.refresh(now, ft, msg, auth, binder)
            }),
            Method::CREATE_PERMISSION => self.with_auth(now, ft, msg, |s, auth| {
                s.create_permission(now, ft, msg, auth)
            }),
            Method::CHANNEL_BIND => {
                self.with_auth(now, ft, msg, |s, auth| s.channel_bind(now, ft, msg, auth))
            }
            Method::CONNECT | Method::CONNECTION_BIND => self.respond_error(
                ft,
                msg,
                Reject::new(
                    400,
                    "Bad Request: TCP relaying (RFC 6062) is not enabled on this server",
                ),
                None,
            ),
            _ => self.respond_error(
                ft,
                msg,
                Reject::new(400, "Bad Request: unknown STUN method"),
                None,
            ),
        }
    }

    /// STUN Binding (RFC 8489 §6.3) with NAT behaviour discovery (RFC 5780 §6.1).
    fn binding(&mut self, ft: FiveTuple, msg: &Message<'_>) {
        self.stats.binding_requests += 1;
        let plan = match self.binding_plan(ft, msg) {
            Ok(p) => p,
            Err(rej) => {
                self.respond_error(ft, msg, rej, None);
                return;
            }
        };
        let mut buf = vec![0u8; RESPONSE_BUF + plan.padding];
        let fp = msg.has_fingerprint();
        let software = self.config.software.as_deref();
        let n = (|| {
            let mut enc = MessageEncoder::new(
                &mut buf,
                Class::Success,
                Method::BINDING,
                msg.transaction_id(),
            )?;
            enc.xor_address(attr::XOR_MAPPED_ADDRESS, &ft.client)?;
            // A wildcard listener does not know which of the host's addresses the
            // request reached: saying 0.0.0.0 would help no one.
            if !plan.from.ip().is_unspecified() {
                enc.address(attr::RESPONSE_ORIGIN, &plan.from)?;
            }
            if let Some(other) = plan.other {
                enc.address(attr::OTHER_ADDRESS, &other)?;
            }
            if plan.padding > 0 {
                enc.attr_with(attr::PADDING, plan.padding, |v| v.fill(0))?;
            }
            if let Some(s) = software {
                enc.software(s)?;
            }
            if fp {
                enc.fingerprint()?;
            }
            Ok::<_, tsunagi_stun::EncodeError>(enc.finish())
        })();
        let Ok(n) = n else { return };
        buf.truncate(n);
        let destination = if plan.from == ft.server && plan.to == ft.client {
            Destination::Client(ft)
        } else {
            Destination::ClientFrom {
                local: plan.from,
                client: plan.to,
            }
        };
        self.transmits.push_back(Transmit {
            destination,
            payload: buf,
        });
    }

    /// Where a Binding response comes from and goes to, following CHANGE-REQUEST,
    /// RESPONSE-PORT and PADDING. The error cases follow coturn's where RFC 5780
    /// leaves the choice open: the RFC 5780 attributes are UDP-only (400 over a
    /// stream), and PADDING cannot be combined with RESPONSE-PORT (400).
    fn binding_plan(&self, ft: FiveTuple, msg: &Message<'_>) -> Result<BindingPlan, Reject> {
        let group = self
            .config
            .discovery
            .iter()
            .find(|g| g.contains(ft.server))
            .copied();
        let udp = ft.transport == Transport::Udp;
        // RFC 5780 §6.1: a server that cannot honour the attribute treats it as unknown.
        let unsupported = |typ: u16, why: &str| {
            let mut r = Reject::new(420, format!("Unknown Attribute: {why}"));
            r.unknown = vec![typ];
            r
        };
        let mut from = ft.server;
        if let Some(v) = msg.get(attr::CHANGE_REQUEST) {
            let (change_ip, change_port) = attr::decode_change_request(v)
                .map_err(|_| Reject::new(400, "Bad Request: malformed CHANGE-REQUEST"))?;
            // Both flags clear asks for nothing (some clients always send it).
            if change_ip || change_port {
                let Some(g) = group else {
                    return Err(unsupported(
                        attr::CHANGE_REQUEST,
                        "CHANGE-REQUEST needs a second server address (RFC 5780: set alt-listening-ip)",
                    ));
                };
                if !udp {
                    return Err(Reject::new(
                        400,
                        "Bad Request: CHANGE-REQUEST works over UDP only (RFC 5780)",
                    ));
                }
                from = g.changed(ft.server, change_ip, change_port).ok_or_else(|| {
                    unsupported(
                        attr::CHANGE_REQUEST,
                        "CHANGE-REQUEST: one server IP (no alt-listening-ip), so the port can change but not the IP",
                    )
                })?;
            }
        }
        let mut to = ft.client;
        let response_port = msg.get(attr::RESPONSE_PORT);
        if let Some(v) = response_port {
            if group.is_none() {
                return Err(unsupported(
                    attr::RESPONSE_PORT,
                    "RESPONSE-PORT needs NAT discovery on (RFC 5780: set alt-listening-ip or -port)",
                ));
            }
            if !udp {
                return Err(Reject::new(
                    400,
                    "Bad Request: RESPONSE-PORT works over UDP only (RFC 5780)",
                ));
            }
            let port = attr::decode_response_port(v)
                .map_err(|_| Reject::new(400, "Bad Request: malformed RESPONSE-PORT"))?;
            if port == 0 {
                return Err(Reject::new(400, "Bad Request: RESPONSE-PORT is 0"));
            }
            to = SocketAddr::new(ft.client.ip(), port);
        }
        let mut padding = 0;
        if let Some(v) = msg.get(attr::PADDING) {
            if !udp {
                return Err(Reject::new(
                    400,
                    "Bad Request: PADDING works over UDP only (RFC 5780)",
                ));
            }
            if response_port.is_some() {
                return Err(Reject::new(
                    400,
                    "Bad Request: PADDING and RESPONSE-PORT cannot be used together",
                ));
            }
            // As long as the request's: the response is never larger than what the
            // client sent plus the fixed attributes, so PADDING cannot amplify.
            padding = v.len();
        }
        Ok(BindingPlan {
            from,
            to,
            other: group.and_then(|g| g.other(ft.server)),
            padding,
        })
    }

    fn send_indication(&mut self, now: Instant, ft: FiveTuple, msg: &Message<'_>) {
        let Some(id) = self.by_five_tuple.get(&ft).copied() else {
            return;
        };
        let (Ok(Some(peer)), Some(data)) = (
            msg.get_xor_address(attr::XOR_PEER_ADDRESS),
            msg.get(attr::DATA),
        ) else {
            self.stats.dropped_invalid += 1;
            return;
        };
        let df = msg.contains(attr::DONT_FRAGMENT);
        self.relay_to_peer(now, id, peer, data, df);
    }

    // ---------------------------------------------------------- authentication

    fn with_auth(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        f: impl FnOnce(&mut Self, &Authed) -> Result<Vec<u8>, Reject>,
    ) {
        match self.authenticate(now, ft, msg) {
            Ok(auth) => match f(self, &auth) {
                Ok(resp) => self.queue_to_client(ft, resp),
                Err(rej) => self.respond_error(ft, msg, rej, Some(&auth)),
            },
            Err(rej) => {
                if rej.code == 401 && msg.has_message_integrity() {
                    self.stats.auth_failures += 1;
                }
                self.respond_error(ft, msg, rej, None)
            }
        }
    }

    /// RFC 8489 §9.2.4 with the stateless nonce of `nonce.rs`.
    fn authenticate(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
    ) -> Result<Authed, Reject> {
        if !msg.has_message_integrity() {
            return Err(Reject::challenge(
                401,
                "Unauthorized: authenticate with the long-term credentials of this realm",
            ));
        }
        let username = match (msg.get_str(attr::USERNAME), msg.get(attr::USERHASH)) {
            (Ok(Some(u)), _) => Some(u.to_owned()),
            (Ok(None), Some(h)) => {
                let h: Option<[u8; 32]> = h.try_into().ok();
                match h.and_then(|h| {
                    self.config
                        .credentials
                        .username_for_hash(&h, &self.config.realm)
                }) {
                    Some(u) => Some(u.to_owned()),
                    None => {
                        return Err(Reject::challenge(
                            401,
                            "Unauthorized: unknown USERHASH; send USERNAME instead",
                        ));
                    }
                }
            }
            (Err(_), _) => {
                return Err(Reject::new(400, "Bad Request: USERNAME is not valid UTF-8"))
            }
            (Ok(None), None) => None,
        };
        let realm = msg.get(attr::REALM);
        let nonce = msg.get(attr::NONCE);
        let (Some(username), Some(realm), Some(nonce)) = (username, realm, nonce) else {
            return Err(Reject::new(
                400,
                "Bad Request: MESSAGE-INTEGRITY needs USERNAME, REALM and NONCE",
            ));
        };
        if username.len() > attr::MAX_USERNAME_BYTES {
            return Err(Reject::new(
                400,
                "Bad Request: USERNAME longer than 513 bytes",
            ));
        }
        // PASSWORD-ALGORITHMS must echo ours when the nonce offered them (§9.2.4 item 4).
        let mut alg = PasswordAlgorithm::Md5;
        let pw_algs = msg.get(attr::PASSWORD_ALGORITHMS);
        let pw_alg = msg.get(attr::PASSWORD_ALGORITHM);
        if nonce::offers_password_algorithms(nonce) {
            match (pw_algs, pw_alg) {
                (None, None) => {}
                (Some(list), Some(chosen)) => {
                    if list != offered_password_algorithms() {
                        return Err(Reject::new(
                            400,
                            "Bad Request: PASSWORD-ALGORITHMS differs from the server's list",
                        ));
                    }
                    let chosen = attr::decode_password_algorithm(chosen)
                        .ok()
                        .and_then(|(c, _)| PasswordAlgorithm::from_code(c));
                    match chosen {
                        Some(a) => alg = a,
                        None => {
                            return Err(Reject::new(
                                400,
                                "Bad Request: PASSWORD-ALGORITHM is not one the server offered",
                            ))
                        }
                    }
                }
                _ => {
                    return Err(Reject::new(
                        400,
                        "Bad Request: send PASSWORD-ALGORITHMS and PASSWORD-ALGORITHM together",
                    ))
                }
            }
        }
        if realm != self.config.realm.as_bytes() {
            return Err(Reject::challenge(
                401,
                "Unauthorized: wrong REALM; use the realm of this challenge",
            ));
        }
        let unix_now = self.unix_now(now);
        match nonce::check(&self.config.nonce_key, nonce, unix_now, ft.client.ip()) {
            NonceCheck::Valid => {}
            NonceCheck::Stale | NonceCheck::Invalid => {
                return Err(Reject::challenge(
                    438,
                    "Stale Nonce: retry with the NONCE in this response",
                ));
            }
        }
        let keys = match self
            .config
            .credentials
            .keys(&username, &self.config.realm, alg, unix_now)
        {
            Ok(k) => k,
            Err(e) => {
                let (why, phrase) = match e {
                    AuthError::Expired => (
                        "REST credential expired",
                        "Unauthorized: the time-limited credential has expired; fetch a new one",
                    ),
                    AuthError::AlgorithmUnavailable => (
                        "password algorithm unavailable",
                        "Unauthorized: this user has no key for the chosen PASSWORD-ALGORITHM",
                    ),
                    _ => ("unknown user", "Unauthorized: wrong username or password"),
                };
                self.event(Event::AuthFailed {
                    five_tuple: ft,
                    username: username.clone(),
                    reason: why,
                });
                return Err(Reject::challenge(401, phrase));
            }
        };
        for key in keys {
            if msg.verify_integrity(&key).is_ok() {
                return Ok(Authed {
                    username,
                    key,
                    sha256: msg.has_message_integrity_sha256(),
                });
            }
        }
        self.event(Event::AuthFailed {
            five_tuple: ft,
            username,
            reason: "wrong password",
        });
        Err(Reject::challenge(
            401,
            "Unauthorized: wrong username or password",
        ))
    }

    // ------------------------------------------------------------------ methods

    fn allocate(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        auth: &Authed,
        binder: &mut dyn RelayBinder,
    ) -> Result<Vec<u8>, Reject> {
        // §7.2 step 2: one allocation per 5-tuple; a retransmission gets the same answer.
        if let Some(id) = self.by_five_tuple.get(&ft) {
            let a = &self.allocations[id];
            if a.allocate_tid == msg.transaction_id() {
                return Ok(a.allocate_response.clone());
            }
            return Err(Reject::new(437, "Allocation Mismatch: this 5-tuple already has an allocation; Refresh it or use a new source port"));
        }
        // Step 3.
        let transport = msg.get(attr::REQUESTED_TRANSPORT).ok_or_else(|| {
            Reject::new(
                400,
                "Bad Request: Allocate needs REQUESTED-TRANSPORT (17 for UDP)",
            )
        })?;
        let proto = attr::decode_requested_transport(transport)
            .map_err(|_| Reject::new(400, "Bad Request: malformed REQUESTED-TRANSPORT"))?;
        if proto != attr::PROTO_UDP {
            return Err(Reject::new(442, "Unsupported Transport Protocol: only UDP relaying (REQUESTED-TRANSPORT 17) is offered"));
        }
        // Step 4: DONT-FRAGMENT is supported.
        let dont_fragment = msg.contains(attr::DONT_FRAGMENT);
        let token = msg.get(attr::RESERVATION_TOKEN);
        let even = msg.get(attr::EVEN_PORT);
        let requested_family = msg.get(attr::REQUESTED_ADDRESS_FAMILY);
        let additional_family = msg.get(attr::ADDITIONAL_ADDRESS_FAMILY);
        // Step 5.
        if token.is_some()
            && (even.is_some() || requested_family.is_some() || additional_family.is_some())
        {
            return Err(Reject::new(400, "Bad Request: RESERVATION-TOKEN cannot be combined with EVEN-PORT or an address family"));
        }
        // Step 6.
        if requested_family.is_some() && additional_family.is_some() {
            return Err(Reject::new(
                400,
                "Bad Request: send REQUESTED-ADDRESS-FAMILY or ADDITIONAL-ADDRESS-FAMILY, not both",
            ));
        }
        let family = match requested_family {
            None => Family::V4,
            Some(v) => match attr::decode_address_family(v) {
                Ok(attr::FAMILY_IPV4) => Family::V4,
                Ok(attr::FAMILY_IPV6) => Family::V6,
                Ok(_) => {
                    return Err(Reject::new(
                        440,
                        "Address Family not Supported: use 0x01 (IPv4) or 0x02 (IPv6)",
                    ))
                }
                Err(_) => {
                    return Err(Reject::new(
                        400,
                        "Bad Request: malformed REQUESTED-ADDRESS-FAMILY",
                    ))
                }
            },
        };
        let dual = match additional_family {
            None => false,
            Some(v) => match attr::decode_address_family(v) {
                Ok(attr::FAMILY_IPV6) => true,
                _ => {
                    return Err(Reject::new(
                        400,
                        "Bad Request: ADDITIONAL-ADDRESS-FAMILY must be 0x02 (IPv6)",
                    ))
                }
            },
        };
        let port = match even.map(attr::decode_even_port) {
            None => PortRequest::Any,
            Some(Ok(false)) => PortRequest::Even,
            Some(Ok(true)) => PortRequest::EvenReserveNext,
            Some(Err(_)) => return Err(Reject::new(400, "Bad Request: malformed EVEN-PORT")),
        };
        // Quotas.
        let used = self.per_user.get(&auth.username).copied().unwrap_or(0);
        if self.config.user_quota > 0 && used >= self.config.user_quota {
            self.event(Event::QuotaReached {
                five_tuple: ft,
                username: auth.username.clone(),
                which: "user-quota",
            });
            return Err(Reject::new(486, format!(
                "Allocation Quota Reached: this user has {used} allocations (user-quota); delete one first"
            )));
        }
        if self.config.total_quota > 0
            && self.allocations.len() as u64 >= self.config.total_quota as u64
        {
            self.event(Event::QuotaReached {
                five_tuple: ft,
                username: auth.username.clone(),
                which: "total-quota",
            });
            return Err(Reject::new(508, "Insufficient Capacity: the server is at total-quota allocations; try later or another server"));
        }
        // Relays.
        let mut relays: Vec<SocketAddr> = Vec::with_capacity(2);
        let mut address_error: Option<(u8, u16, &'static str)> = None;
        let mut reservation: Option<[u8; 8]> = None;
        if let Some(t) = token {
            let t = attr::decode_reservation_token(t)
                .map_err(|_| Reject::new(400, "Bad Request: malformed RESERVATION-TOKEN"))?;
            let taken = self.reservations.remove(&t);
            if let Some(r) = &taken {
                self.timers.remove(&(r.expires, TimerKey::Reservation(t)));
            }
            match taken {
                Some(r) if r.expires > now => relays.push(r.relay),
                Some(r) => {
                    binder.release(r.relay);
                    return Err(Reject::new(508, "Insufficient Capacity: the RESERVATION-TOKEN has expired; allocate without it"));
                }
                None => {
                    return Err(Reject::new(
                        508,
                        "Insufficient Capacity: unknown RESERVATION-TOKEN; allocate without it",
                    ))
                }
            }
        } else {
            match binder.bind(BindRequest { family, port, dont_fragment }) {
                Ok(a) => relays.push(a),
                Err(BindError::FamilyUnsupported) => {
                    return Err(Reject::new(440, match family {
                        Family::V4 => "Address Family not Supported: this server has no IPv4 relay address; request IPv6",
                        Family::V6 => "Address Family not Supported: this server has no IPv6 relay address; request IPv4",
                    }))
                }
                Err(BindError::Exhausted) => {
                    self.event(Event::QuotaReached { five_tuple: ft, username: auth.username.clone(), which: "relay ports" });
                    return Err(Reject::new(508, "Insufficient Capacity: no relay port is free in min-port..max-port; try later"));
                }
            }
            if port == PortRequest::EvenReserveNext {
                let even_addr = relays[0];
                let odd = SocketAddr::new(even_addr.ip(), even_addr.port().wrapping_add(1));
                let t = self.new_token();
                self.reservations.insert(
                    t,
                    Reservation {
                        relay: odd,
                        expires: now + self.config.reservation_lifetime,
                    },
                );
                self.timers.insert((
                    now + self.config.reservation_lifetime,
                    TimerKey::Reservation(t),
                ));
                reservation = Some(t);
            }
            if dual {
                match binder.bind(BindRequest {
                    family: Family::V6,
                    port: PortRequest::Any,
                    dont_fragment,
                }) {
                    Ok(a) => relays.push(a),
                    Err(BindError::FamilyUnsupported) => {
                        address_error = Some((
                            attr::FAMILY_IPV6,
                            440,
                            "Address Family not Supported: no IPv6 relay address",
                        ))
                    }
                    Err(BindError::Exhausted) => {
                        address_error = Some((
                            attr::FAMILY_IPV6,
                            508,
                            "Insufficient Capacity: no IPv6 relay port free",
                        ))
                    }
                }
            }
        }
        let lifetime = match self.desired_lifetime(msg) {
            l if l.is_zero() => self.config.default_lifetime.min(self.config.max_lifetime),
            l => l,
        };
        let relays: Vec<Relay> = relays
            .into_iter()
            .map(|local| Relay {
                local,
                advertised: self.advertised(local),
            })
            .collect();

        // Encode the success response before storing, so a retransmission gets it.
        let mut buf = [0u8; RESPONSE_BUF];
        let software = self.config.software.clone();
        let n = (|| {
            let mut enc = MessageEncoder::new(
                &mut buf,
                Class::Success,
                Method::ALLOCATE,
                msg.transaction_id(),
            )?;
            for r in &relays {
                enc.xor_address(attr::XOR_RELAYED_ADDRESS, &r.advertised)?;
            }
            if let Some((fam, code, reason)) = address_error {
                enc.attr_with(attr::ADDRESS_ERROR_CODE, 4 + reason.len(), |o| {
                    o[0] = fam;
                    o[1] = 0;
                    o[2] = (code / 100) as u8;
                    o[3] = (code % 100) as u8;
                    o[4..].copy_from_slice(reason.as_bytes());
                })?;
            }
            enc.u32(
                attr::LIFETIME,
                lifetime.as_secs().min(u32::MAX as u64) as u32,
            )?;
            if let Some(t) = reservation {
                enc.attr(attr::RESERVATION_TOKEN, &t)?;
            }
            enc.xor_address(attr::XOR_MAPPED_ADDRESS, &ft.client)?;
            if let Some(s) = &software {
                enc.software(s)?;
            }
            finish_auth(&mut enc, auth, msg.has_fingerprint())?;
            Ok::<_, tsunagi_stun::EncodeError>(enc.finish())
        })();
        let Ok(n) = n else {
            for r in &relays {
                binder.release(r.local);
            }
            return Err(Reject::new(500, "Server Error: response did not fit"));
        };
        let response = buf[..n].to_vec();

        let id = AllocId(self.next_id);
        self.next_id += 1;
        for r in &relays {
            self.live_relays.insert(r.local, id);
        }
        self.by_five_tuple.insert(ft, id);
        *self.per_user.entry(auth.username.clone()).or_insert(0) += 1;
        self.allocations.insert(
            id,
            Box::new(Allocation {
                five_tuple: ft,
                username: auth.username.clone(),
                relays: relays.clone(),
                expires: now + lifetime,
                permissions: new_map(),
                channels: new_map(),
                peer_channels: new_map(),
                dont_fragment,
                to_peer: TokenBucket::new(self.config.max_bps, now),
                to_client: TokenBucket::new(self.config.max_bps, now),
                scheduled: None,
                allocate_tid: msg.transaction_id(),
                allocate_response: response.clone(),
            }),
        );
        self.schedule(id);
        self.stats.allocations = self.allocations.len() as u64;
        self.stats.allocations_created += 1;
        self.event(Event::AllocationCreated {
            five_tuple: ft,
            username: auth.username.clone(),
            relays: relays.iter().map(|r| r.local).collect(),
            lifetime,
        });
        Ok(response)
    }

    /// RFC 8656 §7.2 / §7.3 "desired lifetime": min(requested, max) but at least the
    /// default; zero only when the client asks for zero.
    fn desired_lifetime(&self, msg: &Message<'_>) -> Duration {
        match msg.get_u32(attr::LIFETIME) {
            Ok(Some(0)) => Duration::ZERO,
            Ok(Some(s)) => Duration::from_secs(s as u64)
                .min(self.config.max_lifetime)
                .max(self.config.default_lifetime.min(self.config.max_lifetime)),
            _ => self.config.default_lifetime.min(self.config.max_lifetime),
        }
    }

    fn advertised(&self, local: SocketAddr) -> SocketAddr {
        for (public, private) in &self.config.external_ips {
            let matches = match private {
                Some(p) => *p == local.ip(),
                None => Family::of(*public) == Family::of(local.ip()),
            };
            if matches {
                return SocketAddr::new(*public, local.port());
            }
        }
        local
    }

    fn new_token(&mut self) -> [u8; 8] {
        let mut t = [0u8; 8];
        let tid = rand_tid(&mut self.token_counter, &self.config.nonce_key);
        t.copy_from_slice(&tid[..8]);
        t
    }

    /// The allocation of this 5-tuple, checked against the authenticated user.
    fn own_allocation(&self, ft: &FiveTuple, auth: &Authed) -> Result<AllocId, Reject> {
        let id = *self.by_five_tuple.get(ft).ok_or_else(|| {
            Reject::new(
                437,
                "Allocation Mismatch: no allocation on this 5-tuple; send Allocate first",
            )
        })?;
        if self.allocations[&id].username != auth.username {
            return Err(Reject::new(
                441,
                "Wrong Credentials: use the username that created this allocation",
            ));
        }
        Ok(id)
    }

    fn refresh(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        auth: &Authed,
        binder: &mut dyn RelayBinder,
    ) -> Result<Vec<u8>, Reject> {
        let id = self.own_allocation(&ft, auth)?;
        if let Some(v) = msg.get(attr::REQUESTED_ADDRESS_FAMILY) {
            let fam = match attr::decode_address_family(v) {
                Ok(attr::FAMILY_IPV4) => Family::V4,
                Ok(attr::FAMILY_IPV6) => Family::V6,
                _ => {
                    return Err(Reject::new(
                        400,
                        "Bad Request: malformed REQUESTED-ADDRESS-FAMILY",
                    ))
                }
            };
            if self.allocations[&id].relay_for(fam).is_none() {
                return Err(Reject::new(
                    443,
                    "Peer Address Family Mismatch: this allocation has no relay of that family",
                ));
            }
        }
        let lifetime = self.desired_lifetime(msg);
        if lifetime.is_zero() {
            self.delete_allocation(id, DeleteReason::Refreshed, binder);
        } else if let Some(a) = self.allocations.get_mut(&id) {
            a.expires = now + lifetime;
            // A later expiry: the existing heap entry fires first and reschedules.
            self.schedule(id);
        }
        self.success(msg, auth, |enc| {
            enc.u32(
                attr::LIFETIME,
                lifetime.as_secs().min(u32::MAX as u64) as u32,
            )
            .map(|_| ())
        })
    }

    /// The policy's verdict on a peer of allocation `id`, with this server's live
    /// relayed addresses as the one exception the policy cannot know. A permission
    /// (CreatePermission) passes if its IP does, if the IP has allowed endpoints
    /// (the port is not judged: RFC 8656 permissions are per IP), or if the address
    /// named is a live relay of this server; a channel (ChannelBind, and each relayed
    /// packet) if its IP does or the address is an allowed endpoint or a live relay.
    /// Another port of a relay IP is refused with [`Denied::NOT_A_RELAY`].
    fn judge_peer(&self, id: AllocId, peer: PeerTarget) -> Result<PeerScope, Denied> {
        let policy = &self.config.peer_policy;
        let (checked, addr) = match peer {
            PeerTarget::Permission(a) => (policy.check_permission(a.ip()), a),
            PeerTarget::Channel(a) => (policy.check_address(a), a),
        };
        checked.or_else(|d| {
            if self.live_relays.contains(addr) {
                return Ok(PeerScope::EndpointsOnly);
            }
            let ip = addr.ip();
            let relay_ip = self.live_relays.is_relay_ip(ip)
                || self
                    .allocations
                    .get(&id)
                    .is_some_and(|a| a.relays.iter().any(|r| r.local.ip() == ip));
            if relay_ip && !d.is_outside_endpoints() {
                Err(d.not_a_relay())
            } else {
                Err(d)
            }
        })
    }

    /// Check a peer for an allocation: family, then [`Server::judge_peer`]; a refusal
    /// is reported and answered with 403.
    fn check_peer(
        &mut self,
        ft: FiveTuple,
        id: AllocId,
        auth: &Authed,
        peer: PeerTarget,
    ) -> Result<PeerScope, Reject> {
        let ip = match peer {
            PeerTarget::Permission(a) | PeerTarget::Channel(a) => a.ip(),
        };
        let a = &self.allocations[&id];
        if a.relay_for(Family::of(ip)).is_none() {
            return Err(Reject::new(443, "Peer Address Family Mismatch: the peer's IP family differs from the relay's; allocate that family"));
        }
        self.judge_peer(id, peer).map_err(|d| {
            self.stats.peers_denied += 1;
            self.event(Event::PeerDenied {
                five_tuple: ft,
                username: auth.username.clone(),
                peer: ip,
                category: d.category,
                config_key: d.config_key,
            });
            Reject::new(403, d.reason_phrase())
        })
    }

    fn create_permission(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        auth: &Authed,
    ) -> Result<Vec<u8>, Reject> {
        let id = self.own_allocation(&ft, auth)?;
        let mut peers: Vec<SocketAddr> = Vec::new();
        for p in msg.xor_addresses(attr::XOR_PEER_ADDRESS) {
            let p = p.map_err(|_| Reject::new(400, "Bad Request: malformed XOR-PEER-ADDRESS"))?;
            if peers.len() >= self.config.max_permissions as usize {
                return Err(Reject::new(
                    508,
                    "Insufficient Capacity: too many XOR-PEER-ADDRESS in one request",
                ));
            }
            peers.push(p);
        }
        if peers.is_empty() {
            return Err(Reject::new(
                400,
                "Bad Request: CreatePermission needs at least one XOR-PEER-ADDRESS",
            ));
        }
        // All or nothing (RFC 8656 §10.2). One permission per IP: an IP named twice
        // (e.g. two live relays on it) is installed once, with the widest scope.
        let mut granted: Vec<(IpAddr, PeerScope)> = Vec::with_capacity(peers.len());
        for p in &peers {
            let scope = self.check_peer(ft, id, auth, PeerTarget::Permission(*p))?;
            match granted.iter_mut().find(|(ip, _)| *ip == p.ip()) {
                Some((_, s)) if scope == PeerScope::AnyPort => *s = scope,
                Some(_) => {}
                None => granted.push((p.ip(), scope)),
            }
        }
        let max = self.config.max_permissions as usize;
        let a = self
            .allocations
            .get_mut(&id)
            .expect("own_allocation returned a live id");
        let new = granted
            .iter()
            .filter(|(ip, _)| !a.permissions.contains_key(ip))
            .count();
        if a.permissions.len() + new > max {
            return Err(Reject::new(
                508,
                "Insufficient Capacity: this allocation has the maximum number of permissions",
            ));
        }
        let expires = now + self.config.permission_lifetime;
        for (p, scope) in granted {
            let old = a.permissions.get(&p).copied();
            a.permissions
                .insert(p, Permission::refreshed(old, expires, scope));
        }
        self.stats.permissions += new as u64;
        self.schedule(id);
        self.success(msg, auth, |_| Ok(()))
    }

    fn channel_bind(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        auth: &Authed,
    ) -> Result<Vec<u8>, Reject> {
        let id = self.own_allocation(&ft, auth)?;
        let ch = msg
            .get(attr::CHANNEL_NUMBER)
            .ok_or_else(|| Reject::new(400, "Bad Request: ChannelBind needs CHANNEL-NUMBER"))
            .and_then(|v| {
                attr::decode_channel_number(v)
                    .map_err(|_| Reject::new(400, "Bad Request: malformed CHANNEL-NUMBER"))
            })?;
        // RFC 8656 narrows channels to 0x4000..=0x4FFF; RFC 5766 clients use up to 0x7FFE.
        if !(ChannelData::MIN_CHANNEL..=ChannelData::MAX_CHANNEL_RFC5766).contains(&ch) {
            return Err(Reject::new(
                400,
                "Bad Request: CHANNEL-NUMBER must be in 0x4000..0x7FFE",
            ));
        }
        let peer = match msg.get_xor_address(attr::XOR_PEER_ADDRESS) {
            Ok(Some(p)) => p,
            Ok(None) => {
                return Err(Reject::new(
                    400,
                    "Bad Request: ChannelBind needs XOR-PEER-ADDRESS",
                ))
            }
            Err(_) => return Err(Reject::new(400, "Bad Request: malformed XOR-PEER-ADDRESS")),
        };
        let scope = self.check_peer(ft, id, auth, PeerTarget::Channel(peer))?;
        let max_ch = self.config.max_channels as usize;
        let max_perm = self.config.max_permissions as usize;
        let a = self
            .allocations
            .get_mut(&id)
            .expect("own_allocation returned a live id");
        // §11.2: the channel must be unbound or bound to this peer, and the peer
        // unbound or bound to this channel (cooling-down bindings included).
        if let Some(c) = a.channels.get(&ch) {
            if c.peer != peer {
                return Err(Reject::new(400, "Bad Request: this channel is bound to another peer; pick another channel number"));
            }
        }
        if let Some(other) = a.peer_channels.get(&peer) {
            if *other != ch {
                return Err(Reject::new(
                    400,
                    "Bad Request: this peer is bound to another channel; reuse that channel number",
                ));
            }
        }
        if !a.channels.contains_key(&ch) && a.channels.len() >= max_ch {
            return Err(Reject::new(
                508,
                "Insufficient Capacity: this allocation has the maximum number of channels",
            ));
        }
        let new_perm = !a.permissions.contains_key(&peer.ip());
        if new_perm && a.permissions.len() >= max_perm {
            return Err(Reject::new(
                508,
                "Insufficient Capacity: this allocation has the maximum number of permissions",
            ));
        }
        let new_channel = a
            .channels
            .insert(
                ch,
                Channel {
                    peer,
                    expires: now + self.config.channel_lifetime,
                },
            )
            .is_none();
        a.peer_channels.insert(peer, ch);
        let old = a.permissions.get(&peer.ip()).copied();
        a.permissions.insert(
            peer.ip(),
            Permission::refreshed(old, now + self.config.permission_lifetime, scope),
        );
        self.stats.permissions += new_perm as u64;
        self.stats.channels += new_channel as u64;
        self.schedule(id);
        self.success(msg, auth, |_| Ok(()))
    }

    // --------------------------------------------------------------- responses

    fn queue_to_client(&mut self, ft: FiveTuple, payload: Vec<u8>) {
        self.transmits.push_back(Transmit {
            destination: Destination::Client(ft),
            payload,
        });
    }

    /// An authenticated success response with extra attributes from `f`.
    fn success(
        &self,
        msg: &Message<'_>,
        auth: &Authed,
        f: impl FnOnce(&mut MessageEncoder<'_>) -> Result<(), tsunagi_stun::EncodeError>,
    ) -> Result<Vec<u8>, Reject> {
        let mut buf = [0u8; RESPONSE_BUF];
        let n = (|| {
            let mut enc =
                MessageEncoder::new(&mut buf, Class::Success, msg.method(), msg.transaction_id())?;
            f(&mut enc)?;
            if let Some(s) = &self.config.software {
                enc.software(s)?;
            }
            finish_auth(&mut enc, auth, msg.has_fingerprint())?;
            Ok::<_, tsunagi_stun::EncodeError>(enc.finish())
        })()
        .map_err(|_| Reject::new(500, "Server Error: response did not fit"))?;
        Ok(buf[..n].to_vec())
    }

    fn respond_error(
        &mut self,
        ft: FiveTuple,
        msg: &Message<'_>,
        rej: Reject,
        auth: Option<&Authed>,
    ) {
        let nonce = rej.challenge.then(|| {
            let expiry = self.unix_now_for_nonce();
            nonce::make(&self.config.nonce_key, expiry, ft.client.ip())
        });
        let mut buf = [0u8; RESPONSE_BUF];
        let n = (|| {
            let mut enc =
                MessageEncoder::new(&mut buf, Class::Error, msg.method(), msg.transaction_id())?;
            enc.error_code(rej.code, &rej.reason)?;
            if !rej.unknown.is_empty() {
                enc.unknown_attributes(&rej.unknown)?;
            }
            if let Some(n) = &nonce {
                enc.string(attr::REALM, &self.config.realm)?;
                enc.string(attr::NONCE, n)?;
                enc.password_algorithms(&offered_password_algorithm_codes())?;
            }
            if let Some(s) = &self.config.software {
                enc.software(s)?;
            }
            match auth {
                Some(a) => finish_auth(&mut enc, a, msg.has_fingerprint())?,
                None if msg.has_fingerprint() => {
                    enc.fingerprint()?;
                }
                None => {}
            }
            Ok::<_, tsunagi_stun::EncodeError>(enc.finish())
        })();
        if let Ok(n) = n {
            self.queue_to_client(ft, buf[..n].to_vec());
        }
    }

    fn unix_now_for_nonce(&self) -> u64 {
        self.unix_now(self.clock) + self.config.nonce_lifetime.as_secs()
    }

    /// splitmix64: Data indication transaction IDs need to be unique, not secret.
    fn next_indication_tid(&mut self) -> [u8; 12] {
        let mut out = [0u8; 12];
        for chunk in out.chunks_mut(6) {
            self.tid_state = self.tid_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.tid_state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..6]);
        }
        out
    }
}

fn config_seed(key: &[u8; 32], i: usize) -> u8 {
    key[i] ^ key[i + 8] ^ key[i + 16] ^ key[i + 24]
}

/// The PASSWORD-ALGORITHMS value the server offers, SHA-256 first (RFC 8489 §14.11).
fn offered_password_algorithm_codes() -> [u16; 2] {
    [
        PasswordAlgorithm::Sha256.code(),
        PasswordAlgorithm::Md5.code(),
    ]
}

fn offered_password_algorithms() -> &'static [u8] {
    &[0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
}

/// MESSAGE-INTEGRITY(-SHA256) matching the request's, then FINGERPRINT if the request had one.
fn finish_auth(
    enc: &mut MessageEncoder<'_>,
    auth: &Authed,
    fingerprint: bool,
) -> Result<(), tsunagi_stun::EncodeError> {
    if auth.sha256 {
        enc.message_integrity_sha256(&auth.key)?;
    } else {
        enc.message_integrity(&auth.key)?;
    }
    if fingerprint {
        enc.fingerprint()?;
    }
    Ok(())
}

/// Transaction IDs for Data indications and reservation tokens: unpredictable to
/// outsiders (keyed by the nonce key), unique (a counter).
fn rand_tid(counter: &mut u64, key: &[u8; 32]) -> [u8; 12] {
    use hmac::{Hmac, Mac};
    *counter += 1;
    let mut m =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(&counter.to_be_bytes());
    let out = m.finalize().into_bytes();
    let mut t = [0u8; 12];
    t.copy_from_slice(&out[..12]);
    t
}
