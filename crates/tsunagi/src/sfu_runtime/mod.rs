//! The sockets and the thread that drive the sans-IO [`tsunagi_sfu::Sfu`].
//!
//! One core owns the `Sfu`, on a thread of its own ([`core`]). Around it:
//!
//! * one UDP socket per advertised address, all on the SFU port (ICE-lite: every SFU
//!   peer shares them; the core demultiplexes by ICE username and remote address). The
//!   core reads them itself when its poller says so (`recvmmsg` into reused buffers,
//!   each datagram handled in place) and sends what the `Sfu` emits with `sendmmsg`,
//!   one system call per batch; it never waits (a full socket buffer drops the packet,
//!   which is counted);
//! * ICE-TCP (RFC 6544 passive candidates, RFC 4571 framing) on the same port number,
//!   for networks that block UDP ([`tcp`]): tokio tasks that queue frames for the core;
//! * the signaling link ([`SfuLink`]): the room state machine tells the SFU who is in
//!   an SFU room and passes their offers, answers, candidates and tile sizes; the SFU
//!   answers with SDP, speaker changes and per-peer stats;
//! * WHIP and WHEP over HTTP ([`whip`]), which reach the core through [`SfuHandle`].
//!
//! Every queue is bounded; when one is full the newest item is dropped and counted.
//! Shutdown is one `watch` broadcast (the accept loops and the core see it) and a
//! wake-up of the core.

pub mod api;
mod core;
mod driver;
mod handle;
pub(crate) mod metrics;
mod sockets;
pub mod tcp;
pub mod whip;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::info;
use tsunagi_net::{core_channel, CoreWaker, FastSocket, MultiSend, Poller, RecvBufs, Token};
use tsunagi_sfu::{Protocol, Sfu, SfuConfig, SfuStats};
use tsunagi_signal::{SfuReply, SfuRequest};

use crate::signaling::SfuLink;
use crate::supervise::{Component, Health};
use core::{Core, SfuSocket};

pub use handle::SfuHandle;
pub use sockets::{advertise, BoundTcp, BoundUdp, SfuSockets};

/// ICE-TCP frames waiting for the core.
const INCOMING_QUEUE: usize = 4096;

/// Requests from signaling waiting for the core.
const REQUEST_QUEUE: usize = 1024;

/// Replies to signaling waiting for its core.
const REPLY_QUEUE: usize = 1024;

/// WHIP/WHEP commands waiting for the core.
const COMMAND_QUEUE: usize = 256;

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
    /// WHIP and WHEP sessions at once (each is also an SFU peer, under the core's
    /// `max_peers`).
    pub max_http_sessions: usize,
    /// Where the core and the socket tasks report how they end.
    pub health: Health,
}

impl Default for SfuOptions {
    fn default() -> Self {
        let core = SfuConfig::default();
        SfuOptions {
            // As many as the core takes peers: a WHEP audience of hundreds is what a
            // core carries (docs/benchmarks.md, against Janus).
            max_http_sessions: core.max_peers,
            core,
            linger: Duration::from_secs(30),
            token_secret: None,
            max_tcp_connections: 512,
            health: Health::default(),
        }
    }
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

/// The running SFU.
#[derive(Debug)]
pub struct SfuService {
    handle: SfuHandle,
    udp_addrs: Vec<SocketAddr>,
    tcp_addrs: Vec<SocketAddr>,
    /// Ends the core and the ICE-TCP accept loops (set, or dropped with the service).
    shutdown: watch::Sender<bool>,
    waker: CoreWaker,
    /// The core's end (its last counters); `None` if it panicked.
    core: Option<oneshot::Receiver<()>>,
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

        let poller = Poller::new()?;
        let registry = poller.registry()?;
        let waker = poller.waker();
        let mut udp = Vec::new();
        for (i, bound) in sockets.udp.into_iter().enumerate() {
            let socket = FastSocket::new(bound.socket)?;
            registry.register(&socket, Token(i))?;
            udp.push(SfuSocket {
                advertised: bound.advertised,
                socket,
                out: MultiSend::default(),
            });
        }

        let (in_tx, in_rx) = core_channel::<Incoming>(INCOMING_QUEUE, waker.clone());
        let (req_tx, mut bridge_rx) = mpsc::channel::<SfuRequest>(REQUEST_QUEUE);
        let (core_req_tx, req_rx) = core_channel::<SfuRequest>(REQUEST_QUEUE, waker.clone());
        let (rep_tx, rep_rx) = mpsc::channel::<SfuReply>(REPLY_QUEUE);
        let (cmd_tx, cmd_rx) = core_channel::<Command>(COMMAND_QUEUE, waker.clone());
        let (stats_tx, stats_rx) = watch::channel(SfuSnapshot::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let dropped = Arc::new(AtomicU64::new(0));

        let mut tasks = Vec::new();
        for bound in sockets.tcp {
            let listener = tokio::net::TcpListener::from_std(bound.listener)?;
            tasks.push(options.health.spawn(
                Component::Sfu,
                format!("sfu tcp {}", bound.advertised),
                tcp::accept_loop(
                    listener,
                    bound.advertised,
                    tcp::ToCore {
                        frames: in_tx.clone(),
                        dropped: dropped.clone(),
                        commands: cmd_tx.clone(),
                    },
                    options.max_tcp_connections,
                    shutdown_rx.clone(),
                ),
            ));
        }
        drop(in_tx);
        // Signaling's requests (a plain channel: signaling does not know the core's
        // waker) into the core's queue. Control messages, never media.
        tasks.push(tokio::spawn(async move {
            while let Some(req) = bridge_rx.recv().await {
                if core_req_tx.send(req).await.is_err() {
                    return;
                }
            }
        }));

        info!(
            udp = ?udp_addrs,
            tcp = ?tcp_addrs,
            "SFU listening (ICE-lite host candidates)"
        );
        let core = Core {
            sfu: Sfu::new(options.core.clone(), now),
            options: options.clone(),
            poller,
            udp,
            rx: RecvBufs::new(),
            again: Vec::new(),
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
            join_refusals: (0, None),
        };
        let (done_tx, done_rx) = oneshot::channel();
        let health = options.health.clone();
        std::thread::Builder::new()
            .name("sfu-core".to_owned())
            .spawn(move || {
                let inputs = core::Inputs {
                    frames: in_rx,
                    requests: req_rx,
                    commands: cmd_rx,
                    shutdown: shutdown_rx,
                };
                if health
                    .thread(Component::Sfu, "sfu core", || core.run(inputs))
                    .is_some()
                {
                    let _ = done_tx.send(());
                }
            })?;

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
            shutdown,
            waker,
            core: Some(done_rx),
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

    /// Stops the core and every task, and waits for them (two seconds at most).
    pub async fn shutdown(mut self) -> SfuSnapshot {
        let _ = self.shutdown.send(true);
        self.waker.force();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        if let Some(core) = self.core.take() {
            let _ = tokio::time::timeout_at(deadline, core).await;
        }
        for t in std::mem::take(&mut self.tasks) {
            let abort = t.abort_handle();
            abort.abort();
            let _ = tokio::time::timeout_at(deadline, t).await;
        }
        self.handle.snapshot()
    }
}

/// A service dropped without [`SfuService::shutdown`] stops all the same: its core
/// thread ends and closes the sockets, the accept loops see the shutdown.
impl Drop for SfuService {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.waker.force();
        for t in &self.tasks {
            t.abort();
        }
    }
}
