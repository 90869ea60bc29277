//! The signaling runtime: axum WebSocket glue around the sans-IO [`tsunagi_signal::Hub`].
//! This file holds the options, the handle and the routes; [`connection`] is the task of
//! one WebSocket, [`hub_task`] the task that owns the `Hub`.
//!
//! # Mounting `/ws` (the API the HTTP server builds against)
//!
//! ```ignore
//! use tsunagi::signaling::{self, SignalingHandle, SignalingOptions};
//!
//! // After Config::load and after main.rs has added the generated static-auth-secret
//! // (the TURN credentials in `welcome` are minted with the first secret):
//! let mut options: SignalingOptions = SignalingOptions::from_config(&config);
//! options.turns_port = service.tls_addrs().first().map(|a| a.port()); // when TURN over TLS runs
//! let handle: SignalingHandle = SignalingHandle::start(options); // spawns the core task (needs a tokio runtime)
//! let state = state.with_source(std::sync::Arc::new(handle.clone())); // /api/stats and /metrics
//! let app: axum::Router = http::app(state, signaling::routes(handle.clone())); // GET /ws
//! ...
//! handle.shutdown().await; // closes every signaling WebSocket (1001) and stops the core task
//! let stats: tsunagi_signal::Stats = handle.stats(); // live counters
//! ```
//!
//! Exact signatures:
//! * `pub fn routes(handle: SignalingHandle) -> axum::Router` (a `Router<()>`, state applied)
//! * `impl SignalingOptions { pub fn from_config(config: &crate::config::Config) -> SignalingOptions }`
//! * `impl SignalingHandle { pub fn start(options: SignalingOptions) -> SignalingHandle;
//!   pub async fn shutdown(&self); pub fn stats(&self) -> tsunagi_signal::Stats }`
//! * `SignalingHandle: Clone + Send + Sync + 'static`, and a [`StatsSource`] (`"signaling"`).
//!
//! # Shape
//!
//! One **core task** owns the [`Hub`]: every connection task sends it events over one
//! bounded channel, and it answers through a bounded per-connection queue
//! ([`SignalingOptions::outbound_queue`]) that it fills with `try_send`. It never waits
//! on a connection: a client whose queue is full is sent `server-busy` (out of band)
//! and closed, and its session ends (`peer-left` with reason `kicked`).
//!
//! One **task per connection** reads frames (at most [`SignalingOptions::max_frame_bytes`]
//! at the WebSocket layer: larger frames close the socket with 1009), writes what the
//! core queued for it (each write within [`SignalingOptions::write_timeout`]), pings
//! every [`SignalingOptions::ping_interval`] and closes a connection that sent nothing,
//! not even a pong, for [`SignalingOptions::idle_timeout`].
//!
//! How a connection ended decides what happens to its session: a close frame with code
//! 1000 or without a code is a `leave`; anything else (1001 from a closing tab, a reset,
//! the idle timeout, a failed write) starts the resume grace period.
//!
//! # The SFU
//!
//! With an [`SfuLink`] in [`SignalingOptions::sfu`] (built by the SFU runtime), rooms
//! switch between mesh and SFU (`docs/sfu.md`). The core task hands the hub's
//! [`SfuRequest`]s to the link with `try_send` (never waiting on the SFU: when its queue
//! is full the request is dropped, counted, logged at most every 10 s, and the peer gets
//! `server-busy`) and feeds every [`SfuReply`] to [`Hub::handle_sfu`]. Without a link
//! every room is mesh.

mod connection;
mod edge;
mod hub_task;
pub(crate) mod metrics;
mod remote;

use connection::*;
use hub_task::*;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use rand::RngCore;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use tsunagi_signal::{
    CloseReason, ConnId, Disconnect, ErrorCode, Event as HubEvent, Hub, HubConfig, IceRequest,
    IceServer, IceServerSource, Output, ServerMessage, SfuReply, SfuRequest, Stats, TokenSecret,
};

use crate::cluster::Cluster;
use crate::config::Config;
use crate::redact::Redactor;
use crate::supervise::{Component, Health};

/// Events from connection tasks that the core task can hold before senders wait.
const EVENT_QUEUE: usize = 1024;

/// How long shutdown waits for connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// How long a closing connection waits for the client's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// At most one warning per this long about requests the SFU's queue refused.
const SFU_WARN_EVERY: Duration = Duration::from_secs(10);

/// The two channels between the signaling core task and the SFU runtime, built by the
/// SFU runtime (which keeps the other ends). Both are bounded: the core never waits on
/// `requests` (a full queue drops the request, see the module docs).
pub struct SfuLink {
    pub requests: mpsc::Sender<SfuRequest>,
    pub replies: mpsc::Receiver<SfuReply>,
}

impl fmt::Debug for SfuLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SfuLink")
            .field("requests_capacity", &self.requests.max_capacity())
            .finish_non_exhaustive()
    }
}

/// Settings of the signaling runtime. Not `Clone`: the [`SfuLink`] has one owner.
pub struct SignalingOptions {
    /// The room state machine's limits and token secret. `hub.sfu` here means "rooms
    /// may run as SFU" (false with `no-sfu`); [`SignalingHandle::start`] turns it off
    /// when there is no [`SignalingOptions::sfu`] link.
    pub hub: HubConfig,
    /// The SFU runtime's channels; `None`: every room is mesh.
    pub sfu: Option<SfuLink>,
    /// TURN REST secret for the credentials in `welcome`; without it, no TURN servers
    /// are offered (STUN only).
    pub turn_secret: Option<String>,
    /// Lifetime of those credentials.
    pub turn_credential_ttl: Duration,
    /// Host for the STUN/TURN URLs (a name, an IPv4 address or a bracketed IPv6
    /// address). `None`: the host part of the request's `Host` header.
    pub public_host: Option<String>,
    /// STUN/TURN port (UDP and TCP).
    pub turn_port: u16,
    /// Whether TURN listens on UDP / on TCP (which URLs to offer).
    pub turn_udp: bool,
    pub turn_tcp: bool,
    /// TURN over TLS port; `Some` adds `turns:HOST:PORT?transport=tcp`.
    pub turns_port: Option<u16>,
    /// Frames larger than this close the socket (1009) at the WebSocket layer; frames
    /// between `hub.max_message_bytes` and this get `too-large` and are discarded.
    pub max_frame_bytes: usize,
    /// Messages waiting to be written to one connection; beyond it, `server-busy`.
    pub outbound_queue: usize,
    /// Close a connection that sent nothing (not even a pong) for this long.
    pub idle_timeout: Duration,
    /// WebSocket ping interval (browsers answer pings by themselves).
    pub ping_interval: Duration,
    /// Longest a single write may take before the connection is given up.
    pub write_timeout: Duration,
    /// Show client addresses as hashes in logs.
    pub redact_logs: bool,
    /// Where the core task reports how it ends.
    pub health: Health,
    /// This node's cluster membership (`redis`): rooms are placed across nodes and
    /// sessions of other nodes' rooms are relayed (docs/cluster.md).
    pub cluster: Option<Cluster>,
}

impl fmt::Debug for SignalingOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalingOptions")
            .field("hub", &self.hub)
            .field(
                "turn_secret",
                &self.turn_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("turn_credential_ttl", &self.turn_credential_ttl)
            .field("public_host", &self.public_host)
            .field("turn_port", &self.turn_port)
            .field("turn_udp", &self.turn_udp)
            .field("turn_tcp", &self.turn_tcp)
            .field("turns_port", &self.turns_port)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("outbound_queue", &self.outbound_queue)
            .field("idle_timeout", &self.idle_timeout)
            .field("ping_interval", &self.ping_interval)
            .field("write_timeout", &self.write_timeout)
            .field("sfu", &self.sfu)
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl Default for SignalingOptions {
    fn default() -> Self {
        let hub = HubConfig {
            // Used only with a link in `sfu`.
            sfu: true,
            ..HubConfig::default()
        };
        SignalingOptions {
            max_frame_bytes: hub.max_message_bytes * 4,
            hub,
            sfu: None,
            turn_secret: None,
            turn_credential_ttl: Duration::from_secs(86_400),
            public_host: None,
            turn_port: 3478,
            turn_udp: true,
            turn_tcp: true,
            turns_port: None,
            outbound_queue: 256,
            idle_timeout: Duration::from_secs(60),
            ping_interval: Duration::from_secs(20),
            write_timeout: Duration::from_secs(10),
            redact_logs: false,
            health: Health::default(),
            cluster: None,
        }
    }
}

impl SignalingOptions {
    /// The options of a validated configuration. Call it after the TURN secret has been
    /// generated (main.rs adds one when none is configured). `turns_port` is set when
    /// TLS is on and `tls-listening-port` is not 0; with port 0, set it from the bound
    /// address.
    pub fn from_config(config: &Config) -> SignalingOptions {
        let s = &config.signaling;
        let hub = HubConfig {
            max_peers: s.max_room_peers,
            mesh_max_peers: s.mesh_max_peers,
            sfu: s.sfu,
            default_mode: s.room_mode,
            max_rooms: s.max_rooms,
            max_connections: config.http_max_connections,
            max_message_bytes: s.max_message_bytes,
            messages_per_second: s.messages_per_second,
            resume_grace: s.resume_grace,
            token_secret: s
                .token_secret
                .as_ref()
                .map(|t| TokenSecret(t.0.clone().into_bytes())),
            ..HubConfig::default()
        };
        let public_host = s.public_host.clone().or_else(|| {
            // The first public external-ip, IPv4 first: what TURN clients reach.
            let ips: Vec<IpAddr> = config.external_ips.iter().map(|e| e.public).collect();
            ips.iter()
                .find(|ip| ip.is_ipv4())
                .or(ips.first())
                .map(|ip| host_of_ip(*ip))
        });
        SignalingOptions {
            max_frame_bytes: s.max_message_bytes.saturating_mul(4),
            hub,
            turn_secret: config.credentials.first_secret().map(str::to_owned),
            turn_credential_ttl: s.turn_credential_ttl,
            public_host,
            turn_port: config.listening_port,
            turn_udp: config.udp,
            turn_tcp: config.tcp,
            turns_port: (config.turn_tls() && config.tls_listening_port != 0)
                .then_some(config.tls_listening_port),
            redact_logs: config.redact_logs,
            ..SignalingOptions::default()
        }
    }
}

fn host_of_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The host part of a `Host` header value, if it is a plausible host: a DNS name, an
/// IPv4 address or a bracketed IPv6 address (the port is dropped). Anything else
/// (userinfo, odd characters, zone ids) is refused, since it goes into ICE URLs.
pub fn host_from_header(value: &str) -> Option<String> {
    let value = value.trim();
    if value.len() > 260 {
        return None;
    }
    let host = if let Some(rest) = value.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        let v6: std::net::Ipv6Addr = inner.parse().ok()?;
        return Some(format!("[{v6}]"));
    } else {
        match value.split_once(':') {
            Some((h, port)) if is_port(port) => h,
            Some(_) => return None,
            None => value,
        }
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(host_of_ip(ip));
    }
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    ok.then(|| host.to_ascii_lowercase())
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.parse::<u16>().is_ok()
}

/// ICE servers for `welcome`: STUN and TURN on the public host (or the host the client
/// used), TURN credentials minted per peer with the REST secret.
#[derive(Debug)]
struct RuntimeIce {
    public_host: Option<String>,
    turn_secret: Option<String>,
    ttl: Duration,
    port: u16,
    udp: bool,
    tcp: bool,
    turns_port: Option<u16>,
    /// The `Host` of each open connection's request (bounded by the connections).
    hosts: HashMap<ConnId, String, ahash::RandomState>,
}

impl IceServerSource for RuntimeIce {
    fn ice_servers(&mut self, req: &IceRequest<'_>) -> Vec<IceServer> {
        let Some(host) = self
            .public_host
            .as_deref()
            .or_else(|| self.hosts.get(&req.conn).map(String::as_str))
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if self.udp {
            out.push(IceServer {
                urls: vec![format!("stun:{host}:{}", self.port)],
                username: None,
                credential: None,
            });
        }
        let Some(secret) = &self.turn_secret else {
            return out;
        };
        let mut urls = Vec::new();
        if self.udp {
            urls.push(format!("turn:{host}:{}?transport=udp", self.port));
        }
        if self.tcp {
            urls.push(format!("turn:{host}:{}?transport=tcp", self.port));
        }
        if let Some(p) = self.turns_port {
            urls.push(format!("turns:{host}:{p}?transport=tcp"));
        }
        if urls.is_empty() {
            return out;
        }
        let expiry = req.unix_secs.saturating_add(self.ttl.as_secs());
        let (username, credential) =
            tsunagi_turn::auth::rest_credential(secret, req.peer_id, expiry);
        out.push(IceServer {
            urls,
            username: Some(username),
            credential: Some(credential),
        });
        out
    }
}

/// From connection tasks to the core task.
enum Event {
    Open {
        conn: ConnId,
        host: Option<String>,
        out: mpsc::Sender<Outbound>,
        control: oneshot::Sender<Control>,
    },
    Text {
        conn: ConnId,
        text: Utf8Bytes,
    },
    Binary {
        conn: ConnId,
        len: usize,
    },
    Closed {
        conn: ConnId,
        how: Disconnect,
    },
    /// This node drains: move every room away (`rejoin`, at `url` when given) now
    /// and whenever one appears again.
    Drain {
        url: Option<String>,
    },
    /// How many peers a room has (WHEP asks before it waits for a publisher).
    RoomSize {
        room: String,
        reply: oneshot::Sender<usize>,
    },
}

/// From the core task to a connection, in order.
#[derive(Debug)]
enum Outbound {
    Text(Arc<str>),
    Close(CloseReason),
}

/// From the core task to a connection, ahead of its queue.
#[derive(Debug)]
enum Control {
    /// The queue overflowed: send `server-busy` and close.
    Busy,
    /// The queue is full but the hub wants it closed.
    Close(CloseReason),
}

struct ConnTx {
    out: mpsc::Sender<Outbound>,
    control: Option<oneshot::Sender<Control>>,
}

impl ConnTx {
    fn control(&mut self, c: Control) {
        if let Some(tx) = self.control.take() {
            let _ = tx.send(c);
        }
    }
}

struct Inner {
    events: mpsc::Sender<Event>,
    /// Set once: the core closes every connection and stops (as every runtime stops:
    /// one `watch`, never behind a full queue).
    shutdown: watch::Sender<bool>,
    next_conn: AtomicU64,
    stats: Arc<Mutex<Stats>>,
    options: SignalingOptions,
    core: Mutex<Option<JoinHandle<()>>>,
    redact: Redactor,
}

/// The running signaling service: cheap to clone; the state of [`routes`].
#[derive(Clone)]
pub struct SignalingHandle {
    inner: Arc<Inner>,
}

impl fmt::Debug for SignalingHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalingHandle")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl SignalingHandle {
    /// Starts the core task on the current tokio runtime. The [`SfuLink`] is taken out
    /// of `options` (what [`SignalingHandle::options`] shows has `sfu: None`).
    pub fn start(mut options: SignalingOptions) -> SignalingHandle {
        let mut link = options.sfu.take();
        if link.is_some() && !options.hub.sfu {
            warn!("an SFU link was given but the SFU is off (no-sfu): every room is mesh");
            link = None;
        }
        options.hub.sfu = link.is_some();
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let ice = RuntimeIce {
            public_host: options.public_host.clone(),
            turn_secret: options.turn_secret.clone(),
            ttl: options.turn_credential_ttl,
            port: options.turn_port,
            udp: options.turn_udp,
            tcp: options.turn_tcp,
            turns_port: options.turns_port,
            hosts: HashMap::with_hasher(ahash::RandomState::new()),
        };
        let hub = Hub::new(
            options.hub.clone(),
            ice,
            seed,
            Instant::now().into_std(),
            unix_ms,
        );
        let (events, rx) = mpsc::channel(EVENT_QUEUE);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let stats = Arc::new(Mutex::new(hub.stats()));
        let mut remote_rx = None;
        let cluster = options.cluster.clone().map(|c| {
            let (accept, accept_rx) = mpsc::channel(EVENT_QUEUE);
            let (evict, evict_rx) = mpsc::channel(EVENT_QUEUE);
            c.attach(accept, evict);
            remote_rx = Some(accept_rx);
            (c, evict_rx)
        });
        let core = options.health.spawn(
            Component::Signaling,
            "signaling core",
            core(hub, rx, shutdown_rx, stats.clone(), link, cluster),
        );
        info!(
            sfu = options.hub.sfu,
            room_mode = %options.hub.default_mode,
            mesh_max_peers = options.hub.mesh_max_peers,
            max_room_peers = options.hub.max_peers,
            tokens = options.hub.token_secret.is_some(),
            turn = options.turn_secret.is_some(),
            "signaling ready at /ws"
        );
        let handle = SignalingHandle {
            inner: Arc::new(Inner {
                events,
                shutdown,
                next_conn: AtomicU64::new(1),
                stats,
                redact: Redactor::new(options.redact_logs),
                options,
                core: Mutex::new(Some(core)),
            }),
        };
        if let Some(rx) = remote_rx {
            handle.inner.options.health.spawn(
                Component::Signaling,
                "signaling relayed sessions",
                remote::accept(handle.clone(), rx),
            );
        }
        handle
    }

    /// Live counters (copied from the core task after every event).
    pub fn stats(&self) -> Stats {
        self.inner
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The options it was started with.
    pub fn options(&self) -> &SignalingOptions {
        &self.inner.options
    }

    /// How many peers `room` has now; `None` when the core is not answering.
    pub async fn room_size(&self, room: &str) -> Option<usize> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .events
            .try_send(Event::RoomSize {
                room: room.to_owned(),
                reply,
            })
            .ok()?;
        rx.await.ok()
    }

    /// Moves every room of this node to other nodes of its cluster: each peer gets
    /// `rejoin` (with `url`, a node to join at, when given) and its WebSocket is
    /// closed (4001). Rooms that appear later (joins still on their way) move too.
    pub async fn drain(&self, url: Option<String>) {
        let _ = self.inner.events.send(Event::Drain { url }).await;
    }

    /// Closes every connection with 1001, waits for them (up to a few seconds) and
    /// stops the core task. New WebSockets are closed at once from then on.
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        let core = self
            .inner
            .core
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(core) = core {
            let _ = core.await;
        }
    }
}

/// `GET /ws`, the signaling WebSocket.
pub fn routes(handle: SignalingHandle) -> Router {
    Router::new().route("/ws", get(upgrade)).with_state(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_parsing() {
        assert_eq!(
            host_from_header("example.org").as_deref(),
            Some("example.org")
        );
        assert_eq!(
            host_from_header("Example.ORG:8080").as_deref(),
            Some("example.org")
        );
        assert_eq!(
            host_from_header("127.0.0.1:8080").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(host_from_header("[::1]:8080").as_deref(), Some("[::1]"));
        assert_eq!(
            host_from_header("[2001:DB8::1]").as_deref(),
            Some("[2001:db8::1]")
        );
        for bad in [
            "",
            "user@host",
            "host:port",
            "host:99999",
            "a..b",
            "[::1",
            "[::1]x",
            "[fe80::1%eth0]:80",
            "evil.org/path",
            "evil.org?x=1",
            "::1",
            "ex ample.org",
        ] {
            assert_eq!(host_from_header(bad), None, "{bad:?}");
        }
        assert_eq!(host_from_header(&"a".repeat(300)), None);
    }

    fn ice(udp: bool, tcp: bool, secret: bool, turns: Option<u16>) -> RuntimeIce {
        RuntimeIce {
            public_host: None,
            turn_secret: secret.then(|| "s3cret".to_owned()),
            ttl: Duration::from_secs(3600),
            port: 3478,
            udp,
            tcp,
            turns_port: turns,
            hosts: HashMap::with_hasher(ahash::RandomState::new()),
        }
    }

    fn req(conn: u64) -> IceRequest<'static> {
        IceRequest {
            conn: ConnId(conn),
            peer_id: "p_abc",
            unix_secs: 1_000_000,
        }
    }

    #[test]
    fn ice_servers() {
        let mut i = ice(true, true, true, Some(5349));
        assert!(i.ice_servers(&req(1)).is_empty(), "no host known");
        i.hosts.insert(ConnId(1), "[::1]".into());
        let s = i.ice_servers(&req(1));
        assert_eq!(s[0].urls, vec!["stun:[::1]:3478"]);
        assert_eq!(
            s[1].urls,
            vec![
                "turn:[::1]:3478?transport=udp",
                "turn:[::1]:3478?transport=tcp",
                "turns:[::1]:5349?transport=tcp"
            ]
        );
        let (u, c) = tsunagi_turn::auth::rest_credential("s3cret", "p_abc", 1_003_600);
        assert_eq!(s[1].username.as_deref(), Some(u.as_str()));
        assert_eq!(u, "1003600:p_abc");
        assert_eq!(s[1].credential.as_deref(), Some(c.as_str()));
        // The public host wins over the request's.
        i.public_host = Some("turn.example.org".into());
        assert_eq!(
            i.ice_servers(&req(1))[0].urls,
            vec!["stun:turn.example.org:3478"]
        );

        let mut i = ice(false, true, true, None);
        i.hosts.insert(ConnId(1), "h".into());
        let s = i.ice_servers(&req(1));
        assert_eq!(s.len(), 1, "no STUN without UDP");
        assert_eq!(s[0].urls, vec!["turn:h:3478?transport=tcp"]);
        let mut i = ice(true, true, false, None);
        i.hosts.insert(ConnId(1), "h".into());
        let s = i.ice_servers(&req(1));
        assert_eq!(s.len(), 1, "no TURN without a secret");
    }
}
