//! The sockets and the task that drive the sans-IO [`tsunagi_sfu::Sfu`].
//!
//! One core task owns the `Sfu`. Around it:
//!
//! * one UDP socket per advertised address, all on the SFU port (ICE-lite: every SFU
//!   peer shares them; the core demultiplexes by ICE username and remote address). A
//!   reader task per socket hands datagrams to the core over a bounded queue; the core
//!   sends with `try_send_to` and never waits (a full socket buffer drops the packet,
//!   which is counted);
//! * ICE-TCP (RFC 6544 passive candidates, RFC 4571 framing) on the same port number,
//!   for networks that block UDP ([`tcp`]);
//! * the signaling link ([`SfuLink`]): the room state machine tells the SFU who is in
//!   an SFU room and passes their offers, answers, candidates and tile sizes; the SFU
//!   answers with SDP, speaker changes and per-peer stats;
//! * WHIP and WHEP over HTTP ([`whip`]), which reach the core through [`SfuHandle`].
//!
//! Every queue is bounded; when one is full the newest item is dropped and counted.

pub mod api;
mod driver;
pub mod tcp;
pub mod whip;

use driver::*;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use tsunagi_sfu::{Layer, Protocol, Role, Sfu, SfuConfig, SfuError, SfuEvent, SfuStats};
use tsunagi_signal::{SfuReply, SfuRequest};

use crate::http::{Prometheus, StatsSource};
use crate::signaling::SfuLink;
use crate::supervise::{Component, Health};

/// Datagrams waiting for the core.
const INCOMING_QUEUE: usize = 4096;

/// Requests from signaling waiting for the core.
const REQUEST_QUEUE: usize = 1024;

/// Replies to signaling waiting for its core.
const REPLY_QUEUE: usize = 1024;

/// WHIP/WHEP commands waiting for the core.
const COMMAND_QUEUE: usize = 256;

/// Largest datagram read.
const MAX_DATAGRAM: usize = 2048;

/// How often the stats watch is refreshed.
const STATS_EVERY: Duration = Duration::from_millis(500);

/// How the SFU runtime is set up.
#[derive(Debug, Clone)]
pub struct SfuOptions {
    /// The forwarding core's limits. Its candidate lists are filled in by
    /// [`SfuService::start`] from the bound sockets.
    pub core: SfuConfig,
    /// How long a peer's SFU session is kept after its room switched back to mesh, so
    /// that media continues while the mesh connections come up (a loaded browser takes
    /// 10 to 20 s for them; the client closes the SFU connection sooner, once the mesh
    /// carries every peer's video).
    pub linger: Duration,
    /// With a secret, WHIP needs `Authorization: Bearer <access token>`.
    pub token_secret: Option<Vec<u8>>,
    /// ICE-TCP connections at once.
    pub max_tcp_connections: usize,
    /// WHIP and WHEP sessions at once.
    pub max_http_sessions: usize,
    /// Where the core and the socket tasks report how they end.
    pub health: Health,
}

impl Default for SfuOptions {
    fn default() -> Self {
        SfuOptions {
            core: SfuConfig::default(),
            linger: Duration::from_secs(30),
            token_secret: None,
            max_tcp_connections: 512,
            max_http_sessions: 256,
            health: Health::default(),
        }
    }
}

/// One bound UDP socket and the address advertised for it in SDP.
#[derive(Debug)]
pub struct BoundUdp {
    pub socket: std::net::UdpSocket,
    /// The host candidate: the bound address, or the configured external address
    /// that maps to it.
    pub advertised: SocketAddr,
}

/// One bound ICE-TCP listener and its advertised address.
#[derive(Debug)]
pub struct BoundTcp {
    pub listener: std::net::TcpListener,
    pub advertised: SocketAddr,
}

/// The SFU's sockets, bound before the runtime starts (tests bind port 0).
#[derive(Debug, Default)]
pub struct SfuSockets {
    pub udp: Vec<BoundUdp>,
    pub tcp: Vec<BoundTcp>,
}

impl SfuSockets {
    /// Binds UDP (and, with `tcp`, TCP on the same port number) on each of `ips` at
    /// `port` (0: the first UDP socket picks a free port and the rest use it).
    /// `advertise` maps a bound IP to the IP put in candidates (external address).
    ///
    /// With port 0 the kernel picks a port that is free for UDP on the first IP only;
    /// the same number may be taken for TCP (any outgoing connection's local port) or on
    /// another IP. Such a pick is let go and another tried, up to
    /// [`EPHEMERAL_ATTEMPTS`] times.
    pub fn bind(
        ips: &[IpAddr],
        port: u16,
        tcp: bool,
        advertise: impl Fn(IpAddr) -> IpAddr,
    ) -> io::Result<SfuSockets> {
        let attempts = if port == 0 { EPHEMERAL_ATTEMPTS } else { 1 };
        Self::bind_first(ips, std::iter::repeat_n(port, attempts), tcp, &advertise)
    }

    /// Tries each port of `ports` in turn; a port whose UDP or TCP bind finds the address
    /// in use gives way to the next one. Any other error, or the last one, is returned.
    fn bind_first(
        ips: &[IpAddr],
        ports: impl Iterator<Item = u16>,
        tcp: bool,
        advertise: &dyn Fn(IpAddr) -> IpAddr,
    ) -> io::Result<SfuSockets> {
        let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no port to bind");
        for port in ports {
            match Self::bind_at(ips, port, tcp, advertise) {
                Ok(s) => return Ok(s),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn bind_at(
        ips: &[IpAddr],
        port: u16,
        tcp: bool,
        advertise: &dyn Fn(IpAddr) -> IpAddr,
    ) -> io::Result<SfuSockets> {
        let mut out = SfuSockets::default();
        let mut port = port;
        for &ip in ips {
            let socket = bind_udp(SocketAddr::new(ip, port))?;
            let local = socket.local_addr()?;
            port = local.port();
            out.udp.push(BoundUdp {
                socket,
                advertised: SocketAddr::new(advertise(ip), local.port()),
            });
            if tcp {
                let listener = bind_tcp(SocketAddr::new(ip, port))?;
                let local = listener.local_addr()?;
                out.tcp.push(BoundTcp {
                    listener,
                    advertised: SocketAddr::new(advertise(ip), local.port()),
                });
            }
        }
        Ok(out)
    }
}

/// How many kernel-picked ports [`SfuSockets::bind`] tries with port 0.
const EPHEMERAL_ATTEMPTS: usize = 32;

/// The address to advertise for a socket bound on `ip`: the `external-ip` whose private
/// address is `ip`, else the first one of `ip`'s family without a private address, else
/// `ip` itself.
pub fn advertise(external: &[crate::config::ExternalIp], ip: IpAddr) -> IpAddr {
    external
        .iter()
        .find(|e| e.private == Some(ip))
        .or_else(|| {
            external
                .iter()
                .find(|e| e.private.is_none() && e.public.is_ipv4() == ip.is_ipv4())
        })
        .map_or(ip, |e| e.public)
}

fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Room for bursts of video packets (the kernel caps these at rmem_max / wmem_max).
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

/// A datagram or RFC 4571 frame for the core.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub proto: Protocol,
    pub source: SocketAddr,
    /// The advertised address of the socket it arrived on.
    pub destination: SocketAddr,
    pub data: Vec<u8>,
}

/// What WHIP and WHEP ask of the core.
#[derive(Debug)]
pub(crate) enum Command {
    /// Create a publisher (`whip`) or a viewer (`whep`) in `room` from `offer`.
    Create {
        kind: SessionKind,
        room: String,
        offer: String,
        /// Whether signaling has browser peers in the room (a WHEP viewer of such a
        /// room waits for them to publish through the SFU).
        room_has_peers: bool,
        reply: oneshot::Sender<Result<Created, HttpFailure>>,
    },
    /// Remote candidates (trickle-ice-sdpfrag lines) for a session.
    Candidates {
        kind: SessionKind,
        room: String,
        id: String,
        candidates: Vec<String>,
        reply: oneshot::Sender<Result<(), HttpFailure>>,
    },
    /// End a session.
    Delete {
        kind: SessionKind,
        room: String,
        id: String,
        reply: oneshot::Sender<Result<(), HttpFailure>>,
    },
    /// The subscription state of a room (`GET /api/rooms/{room}/sfu`).
    RoomState {
        room: String,
        reply: oneshot::Sender<Result<serde_json::Value, HttpFailure>>,
    },
    /// A TCP connection opened (its writer) or closed (`None`).
    Tcp {
        remote: SocketAddr,
        writer: Option<mpsc::Sender<Vec<u8>>>,
    },
}

/// WHIP publisher or WHEP viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionKind {
    Whip,
    Whep,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Whip => "whip",
            SessionKind::Whep => "whep",
        }
    }
}

/// A created WHIP/WHEP session.
#[derive(Debug)]
pub(crate) struct Created {
    pub id: String,
    pub answer: String,
}

/// Why a WHIP/WHEP request failed: an HTTP status and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpFailure {
    pub status: u16,
    pub message: String,
}

impl HttpFailure {
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Self {
        HttpFailure {
            status,
            message: message.into(),
        }
    }
}

/// Counters of the runtime (beside the core's).
#[derive(Debug, Clone, Default)]
pub struct RuntimeCounters {
    pub datagrams_in: u64,
    pub incoming_dropped: u64,
    pub send_errors: u64,
    pub requests_dropped: u64,
    pub replies_dropped: u64,
    pub tcp_connections: u64,
    pub whip_sessions: u64,
    pub whep_sessions: u64,
}

/// What `/api/stats` and `/metrics` show of the SFU.
#[derive(Debug, Clone, Default)]
pub struct SfuSnapshot {
    pub core: SfuStats,
    pub runtime: RuntimeCounters,
}

/// Reaches the running SFU from HTTP handlers; cheap to clone.
#[derive(Clone)]
pub struct SfuHandle {
    commands: mpsc::Sender<Command>,
    stats: watch::Receiver<SfuSnapshot>,
    token_secret: Option<Arc<[u8]>>,
    signaling: Option<crate::signaling::SignalingHandle>,
}

impl fmt::Debug for SfuHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SfuHandle").finish_non_exhaustive()
    }
}

impl SfuHandle {
    /// The latest counters.
    pub fn snapshot(&self) -> SfuSnapshot {
        self.stats.borrow().clone()
    }

    /// Lets WHEP see the signaling rooms (a viewer of a room whose peers still run as a
    /// mesh is accepted and switches the room to SFU).
    pub fn with_signaling(mut self, signaling: crate::signaling::SignalingHandle) -> Self {
        self.signaling = Some(signaling);
        self
    }

    pub(crate) fn token_secret(&self) -> Option<&[u8]> {
        self.token_secret.as_deref()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, HttpFailure>>) -> Command,
    ) -> Result<T, HttpFailure> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .try_send(make(tx))
            .map_err(|_| HttpFailure::new(503, "the SFU is busy; retry in a moment"))?;
        rx.await
            .unwrap_or_else(|_| Err(HttpFailure::new(503, "the SFU is shutting down")))
    }

    pub(crate) async fn create(
        &self,
        kind: SessionKind,
        room: String,
        offer: String,
    ) -> Result<Created, HttpFailure> {
        let room_has_peers = match (&self.signaling, kind) {
            (Some(s), SessionKind::Whep) => s.room_size(&room).await.unwrap_or(0) > 0,
            _ => false,
        };
        self.ask(|reply| Command::Create {
            kind,
            room,
            offer,
            room_has_peers,
            reply,
        })
        .await
    }

    pub(crate) async fn candidates(
        &self,
        kind: SessionKind,
        room: String,
        id: String,
        candidates: Vec<String>,
    ) -> Result<(), HttpFailure> {
        self.ask(|reply| Command::Candidates {
            kind,
            room,
            id,
            candidates,
            reply,
        })
        .await
    }

    /// The per-subscription state of `room` (docs/sfu.md, "Subscription state").
    pub(crate) async fn room_state(&self, room: String) -> Result<serde_json::Value, HttpFailure> {
        self.ask(|reply| Command::RoomState { room, reply }).await
    }

    pub(crate) async fn delete(
        &self,
        kind: SessionKind,
        room: String,
        id: String,
    ) -> Result<(), HttpFailure> {
        self.ask(|reply| Command::Delete {
            kind,
            room,
            id,
            reply,
        })
        .await
    }
}

impl StatsSource for SfuHandle {
    fn key(&self) -> &'static str {
        "sfu"
    }

    fn json(&self) -> Value {
        let s = self.snapshot();
        let c = &s.core;
        let r = &s.runtime;
        json!({
            "rooms": c.rooms,
            "peers": c.peers,
            "publishers": c.publishers,
            "subscriptions": c.subscriptions,
            "packetsIn": c.packets_in,
            "packetsOut": c.packets_out,
            "bytesIn": c.bytes_in,
            "bytesOut": c.bytes_out,
            "mediaForwarded": c.media_forwarded,
            "keyframeRequests": c.keyframe_requests,
            "layerSwitches": c.layer_switches,
            "faults": c.faults,
            "demuxMisses": c.demux_misses,
            "datagramsIn": r.datagrams_in,
            "incomingDropped": r.incoming_dropped,
            "sendErrors": r.send_errors,
            "tcpConnections": r.tcp_connections,
            "whipSessions": r.whip_sessions,
            "whepSessions": r.whep_sessions,
        })
    }

    fn prometheus(&self, p: &mut Prometheus) {
        let s = self.snapshot();
        let c = &s.core;
        let r = &s.runtime;
        p.gauge("tsunagi_sfu_rooms", "Rooms with SFU peers.", c.rooms);
        p.gauge("tsunagi_sfu_peers", "Peers connected to the SFU.", c.peers);
        p.gauge(
            "tsunagi_sfu_publishers",
            "Peers publishing media to the SFU.",
            c.publishers,
        );
        p.gauge(
            "tsunagi_sfu_subscriptions",
            "Tracks forwarded to subscribers.",
            c.subscriptions,
        );
        p.counter(
            "tsunagi_sfu_packets_in_total",
            "Datagrams and frames received.",
            c.packets_in,
        );
        p.counter(
            "tsunagi_sfu_packets_out_total",
            "Packets sent.",
            c.packets_out,
        );
        p.counter("tsunagi_sfu_bytes_in_total", "Bytes received.", c.bytes_in);
        p.counter("tsunagi_sfu_bytes_out_total", "Bytes sent.", c.bytes_out);
        p.counter(
            "tsunagi_sfu_media_forwarded_total",
            "Frames and audio samples written to subscribers.",
            c.media_forwarded,
        );
        p.counter(
            "tsunagi_sfu_keyframe_requests_total",
            "Keyframe requests sent to publishers.",
            c.keyframe_requests,
        );
        p.counter(
            "tsunagi_sfu_layer_switches_total",
            "Simulcast layer switches.",
            c.layer_switches,
        );
        p.counter(
            "tsunagi_sfu_faults_total",
            "Peers dropped after an internal fault.",
            c.faults,
        );
        p.counter(
            "tsunagi_sfu_demux_misses_total",
            "Datagrams no peer accepted.",
            c.demux_misses,
        );
        p.counter(
            "tsunagi_sfu_incoming_dropped_total",
            "Datagrams dropped because the core was behind.",
            r.incoming_dropped,
        );
        p.counter(
            "tsunagi_sfu_send_errors_total",
            "Sends that failed (full socket buffer, unreachable).",
            r.send_errors,
        );
        p.gauge(
            "tsunagi_sfu_tcp_connections",
            "ICE-TCP connections open.",
            r.tcp_connections,
        );
        p.gauge(
            "tsunagi_sfu_whip_sessions",
            "WHIP publishers.",
            r.whip_sessions,
        );
        p.gauge(
            "tsunagi_sfu_whep_sessions",
            "WHEP viewers.",
            r.whep_sessions,
        );
    }
}

/// The running SFU.
#[derive(Debug)]
pub struct SfuService {
    handle: SfuHandle,
    udp_addrs: Vec<SocketAddr>,
    tcp_addrs: Vec<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    /// Ends the ICE-TCP accept loops (set, or dropped with the service).
    stop_accepting: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl SfuService {
    /// Starts the SFU on `sockets` and returns it with the link for signaling.
    /// Must be called within a Tokio runtime.
    pub fn start(
        sockets: SfuSockets,
        mut options: SfuOptions,
    ) -> io::Result<(SfuService, SfuLink)> {
        let now = Instant::now();
        options.core.udp_candidates = sockets.udp.iter().map(|u| u.advertised).collect();
        options.core.tcp_candidates = sockets.tcp.iter().map(|t| t.advertised).collect();
        let udp_addrs: Vec<SocketAddr> = sockets.udp.iter().map(|u| u.advertised).collect();
        let tcp_addrs: Vec<SocketAddr> = sockets.tcp.iter().map(|t| t.advertised).collect();

        let (in_tx, in_rx) = mpsc::channel::<Incoming>(INCOMING_QUEUE);
        let (req_tx, req_rx) = mpsc::channel::<SfuRequest>(REQUEST_QUEUE);
        let (rep_tx, rep_rx) = mpsc::channel::<SfuReply>(REPLY_QUEUE);
        let (cmd_tx, cmd_rx) = mpsc::channel::<Command>(COMMAND_QUEUE);
        let (stats_tx, stats_rx) = watch::channel(SfuSnapshot::default());
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let (stop_accepting, accepting) = watch::channel(false);
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));

        let mut tasks = Vec::new();
        let mut sends = Vec::new();
        for bound in sockets.udp {
            let socket = Arc::new(UdpSocket::from_std(bound.socket)?);
            sends.push((bound.advertised, socket.clone()));
            tasks.push(options.health.spawn(
                Component::Sfu,
                format!("sfu udp {}", bound.advertised),
                read_udp(socket, bound.advertised, in_tx.clone(), dropped.clone()),
            ));
        }
        for bound in sockets.tcp {
            let listener = tokio::net::TcpListener::from_std(bound.listener)?;
            tasks.push(options.health.spawn(
                Component::Sfu,
                format!("sfu tcp {}", bound.advertised),
                tcp::accept_loop(
                    listener,
                    bound.advertised,
                    in_tx.clone(),
                    cmd_tx.clone(),
                    options.max_tcp_connections,
                    accepting.clone(),
                ),
            ));
        }
        drop(in_tx);

        info!(
            udp = ?udp_addrs,
            tcp = ?tcp_addrs,
            "SFU listening (ICE-lite host candidates)"
        );
        let core = Core {
            sfu: Sfu::new(options.core.clone(), now),
            options: options.clone(),
            udp: sends,
            tcp: HashMap::new(),
            replies: rep_tx,
            backlog: VecDeque::new(),
            lingering: BTreeMap::new(),
            sessions: HashMap::new(),
            counters: RuntimeCounters::default(),
            dropped,
            stats: stats_tx,
            last_stats: now,
            stats_dirty: false,
            reply_warned: None,
        };
        let health = options.health.clone();
        tasks.push(health.spawn(
            Component::Sfu,
            "sfu core",
            core.run(in_rx, req_rx, cmd_rx, shutdown_rx),
        ));

        let handle = SfuHandle {
            commands: cmd_tx,
            stats: stats_rx,
            token_secret: options.token_secret.map(Arc::from),
            signaling: None,
        };
        let service = SfuService {
            handle,
            udp_addrs,
            tcp_addrs,
            shutdown: Some(shutdown_tx),
            stop_accepting,
            tasks,
        };
        let link = SfuLink {
            requests: req_tx,
            replies: rep_rx,
        };
        Ok((service, link))
    }

    pub fn handle(&self) -> SfuHandle {
        self.handle.clone()
    }

    /// The advertised UDP host candidates.
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }

    /// The advertised ICE-TCP candidates.
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp_addrs
    }

    /// Stops every task and waits for the core.
    pub async fn shutdown(mut self) -> SfuSnapshot {
        let snapshot = self.handle.snapshot();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = self.stop_accepting.send(true);
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// A port free for UDP whose TCP number is held by a listener: the bind moves on to
    /// the next candidate instead of failing the start (a kernel-picked UDP port can
    /// collide with a TCP socket's local port the same way).
    #[test]
    fn a_port_taken_for_tcp_gives_way_to_the_next() {
        let held = std::net::TcpListener::bind((LO, 0)).unwrap();
        let taken = held.local_addr().unwrap().port();
        // Nothing holds UDP `taken` (checked, so the test shows the TCP clash).
        drop(std::net::UdpSocket::bind((LO, taken)).unwrap());
        let s = SfuSockets::bind_first(&[LO], [taken, 0].into_iter(), true, &|ip| ip).unwrap();
        let port = s.udp[0].socket.local_addr().unwrap().port();
        assert_ne!(port, taken);
        assert_eq!(s.tcp[0].listener.local_addr().unwrap().port(), port);
        assert_eq!(s.udp[0].advertised, SocketAddr::new(LO, port));
    }

    /// The only candidate in use: the error says so (the start reports it).
    #[test]
    fn a_fixed_port_in_use_is_an_error() {
        let held = std::net::TcpListener::bind((LO, 0)).unwrap();
        let taken = held.local_addr().unwrap().port();
        let e = SfuSockets::bind(&[LO], taken, true, |ip| ip).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    }

    /// Port 0 binds UDP and TCP on one number, many times over.
    #[test]
    fn port_zero_binds_udp_and_tcp_on_one_number() {
        let sets: Vec<_> = (0..50)
            .map(|_| SfuSockets::bind(&[LO], 0, true, |ip| ip).unwrap())
            .collect();
        for s in &sets {
            let port = s.udp[0].socket.local_addr().unwrap().port();
            assert_eq!(s.tcp[0].listener.local_addr().unwrap().port(), port);
        }
    }
}
