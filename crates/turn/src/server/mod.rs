//! The TURN server state machine (RFC 8656) and STUN Binding (RFC 8489): the [`Server`],
//! its inputs (client and peer packets, closed connections, time), its timers and the
//! dispatch of requests. The rest is in the submodules: [`api`] (the types a runtime
//! sees), [`state`], [`authenticate`], [`binding`], [`allocation`], [`permissions`] and
//! [`data`] (the relay data path).

mod allocation;
mod api;
mod authenticate;
mod binding;
mod data;
mod permissions;
mod quota;
mod state;

pub use api::*;
use authenticate::*;
use permissions::*;
pub use quota::{Across, Elsewhere, Usage};
use state::*;

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

/// The hasher of the server's maps, keyed by its secret nonce key (domain-separated):
/// no OS randomness, and no collisions a client could predict.
fn map_hasher(key: &[u8; 32]) -> ahash::RandomState {
    use hmac::{Hmac, Mac};
    let mut m =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(b"tsunagi-turn map hasher");
    let k: [u8; 32] = m.finalize().into_bytes().into();
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&k[i * 8..i * 8 + 8]);
        u64::from_le_bytes(w)
    };
    ahash::RandomState::with_seeds(word(0), word(1), word(2), word(3))
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
    /// The allocations of other servers (workers, nodes), as the runtime last told
    /// ([`Server::set_elsewhere`]); `None` until it does.
    elsewhere: Option<Elsewhere>,
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
    /// The hasher of every map, per-allocation ones and the credentials' users included
    /// ([`map_hasher`]).
    hasher: ahash::RandomState,
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
    pub fn new(mut config: ServerConfig, now: Instant, unix_now: u64) -> Self {
        let hasher = map_hasher(&config.nonce_key);
        config.credentials.set_hasher(&hasher);
        Self {
            instant_base: now,
            unix_base: unix_now,
            next_id: 1,
            allocations: Map::with_hasher(hasher.clone()),
            by_five_tuple: Map::with_hasher(hasher.clone()),
            live_relays: LiveRelays {
                own: Map::with_hasher(hasher.clone()),
                shared: None,
            },
            per_user: Map::with_hasher(hasher.clone()),
            elsewhere: None,
            reservations: Map::with_hasher(hasher.clone()),
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
            hasher,
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
}

fn config_seed(key: &[u8; 32], i: usize) -> u8 {
    key[i] ^ key[i + 8] ^ key[i + 16] ^ key[i + 24]
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
