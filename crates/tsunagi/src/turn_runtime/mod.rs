//! The IO that drives the sans-IO [`tsunagi_turn::Server`].
//!
//! One core thread owns the `Server`, the UDP listeners and the relay sockets
//! ([`relay::RelayPool`], the server's `RelayBinder`), all registered with one epoll
//! instance ([`poller`]) in which it blocks. With `workers` > 1 there are that many
//! cores, sharing nothing but a [`RelayDirectory`] of live relayed addresses (lock-free
//! bits, written when an allocation is created or deleted): each has its own `Server`
//! and relay sockets and one socket of every UDP listener's SO_REUSEPORT group, so the
//! kernel keeps each client on one worker; TCP and TLS connections go to the worker
//! their 5-tuple hashes to. The directory lets every worker allow the relays of the
//! others as peers on a private or loopback relay address. TCP and TLS connections are
//! small tokio tasks that move frames between a stream and a bounded channel, and wake
//! the core when it sleeps:
//!
//! ```text
//!  UDP listeners ───────┐ epoll_wait, recvmmsg in place
//!  relay sockets ───────┤                          ┌───────────────┐   send_run (GSO), sendmmsg
//!  TCP/TLS conn. tasks ─► client queue + waker ───► │ core thread:  │ ─► UDP listeners, relay sockets
//!                         send().await             │ Server        │ ─► per-connection TCP write queues
//!  Server::poll_timeout ─ epoll_wait's timeout ───► │ + RelayPool   │   try_send (drop when full)
//!                                                  └───────────────┘
//! ```
//!
//! When epoll reports ready sockets the core reads each one once (`recvmmsg`, up to 16
//! datagrams or GRO runs) and handles every datagram where it landed: no task, channel
//! message or copy per packet. At most 64 sockets are read per turn; one whose receive
//! filled every slot is read again on the next turn. After each turn (and each batch
//! of at most 64 TCP inputs) the core drains `poll_transmit` and `poll_event`, and
//! consecutive transmits of equal size from one socket to one destination leave as one
//! GSO send ([`batch`]): the relay fast path. Lone datagrams for clients from one
//! listener are gathered and leave in one `sendmmsg` ([`tsunagi_net::MultiSend`]) once 16 are
//! gathered or the turn ends. A packet from one of our relay sockets to another (both
//! clients of a call relayed by this server) is handed from one allocation to the
//! other without the kernel ([`Core::hand_off`]): the round trip through the loopback
//! (a send, a delivery, a wake-up and a receive) was half of the relay's CPU time.
//! Sends never wait: a full socket buffer or queue drops the packet (UDP semantics)
//! and counts it, and a send error to one destination (ENETUNREACH, EMSGSIZE, ...) is
//! logged at debug and counted; neither stops anything else. The one exception to
//! "never wait" is the TCP reader, which awaits room in the client queue: that is
//! TCP's own backpressure. A UDP datagram that arrives while the core is busy waits in
//! the socket's receive buffer (4 MiB asked for on listeners), where the kernel drops
//! it when full.
//!
//! TURN over TLS (`turns:`, RFC 8656 §3.1) is TCP with a TLS handshake first. The
//! handshake happens where every TLS connection of tsunagi's is accepted (the front
//! ports of `crate::http`, which tell TURN from HTTPS); the decrypted stream comes in
//! through [`StreamIntake`] and is framed and handled exactly like a TCP one, with
//! `Transport::Tls` in its 5-tuple.
//!
//! `user-quota` and `total-quota` count the allocations of every worker (and, in a
//! cluster, of every node): each worker writes its server's usage on a shared
//! [`quota::QuotaBoard`] and gives its server the others' counts, every
//! [`quota::EXCHANGE`] (100 ms) inside its own loop. An allocation is counted by the
//! other workers within two exchanges, so a quota can be exceeded by at most what the
//! other workers grant within about 200 ms.
//!
//! The core publishes the server's [`Stats`] into a `watch` after each turn (skipped
//! when nothing changed); [`StatsHandle`] reads it, with the runtime [`Counters`], for
//! the HTTP endpoints, without touching the core.
//!
//! Shutdown is one `watch` broadcast and a wake-up of the core: listeners stop
//! accepting, connections close, the core releases every relay socket and returns the
//! server's final [`Stats`]. Dropping the [`TurnService`] does the same.

mod io;
pub use io::StreamIntake;
pub mod quota;
mod relay;
mod worker;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use tsunagi_turn::relays::RelayDirectory;
use tsunagi_turn::{DeleteReason, Destination, Event, FiveTuple, Server, Stats, Transport};

use crate::config::Config;
use crate::proxied::ProxySources;
use crate::redact::Redactor;
use crate::supervise::{Component, Health};
use relay::{RelayPool, LISTENER_TOKEN};
use tsunagi_net::{CoreWaker, Poller, Token, WAKER};
use tsunagi_net::{FastSocket, MultiSend, RecvBufs};
use worker::*;

pub(crate) use io::tcp_listener;

/// An input for the core from a TCP or TLS connection.
#[derive(Debug)]
pub(crate) enum ClientInput {
    /// A TCP connection was accepted; `tx` is its bounded write queue.
    Opened {
        ft: FiveTuple,
        tx: mpsc::Sender<Vec<u8>>,
    },
    /// One STUN or ChannelData frame from a TCP connection.
    Frame {
        ft: FiveTuple,
        data: Bytes,
    },
    Closed {
        ft: FiveTuple,
    },
}

/// Runtime counters (the server's own are in [`Stats`]). Updated live with relaxed
/// atomics; read them with [`Counters::snapshot`].
#[derive(Debug, Default)]
pub struct Counters {
    /// Packets dropped because a socket's send buffer was full.
    pub send_would_block: AtomicU64,
    /// Sends that failed (ENETUNREACH, EMSGSIZE, EACCES, ...).
    pub send_errors: AtomicU64,
    /// Messages dropped because a TCP connection's write queue was full.
    pub tcp_queue_full: AtomicU64,
    /// Receive errors on listener or relay sockets.
    pub recv_errors: AtomicU64,
    /// TCP and TLS connections open now.
    pub tcp_connections: AtomicU64,
    /// Streams handed over from a front port (TURN over TLS, or TCP, on the HTTP
    /// port) and refused because `max-tcp-connections` were open.
    pub streams_refused: AtomicU64,
    /// TCP connections closed because the stream was not STUN/ChannelData.
    pub tcp_invalid: AtomicU64,
    /// TCP connections from a `proxy-protocol-ip` address closed for want of a valid
    /// PROXY header in time.
    pub proxy_header_failures: AtomicU64,
    /// Relay allocations refused for lack of a free port.
    pub relay_exhausted: AtomicU64,
    /// Relay sockets that could not be opened for a reason other than "port in use".
    pub relay_bind_errors: AtomicU64,
}

/// A copy of [`Counters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub send_would_block: u64,
    pub send_errors: u64,
    pub tcp_queue_full: u64,
    pub recv_errors: u64,
    pub tcp_connections: u64,
    pub streams_refused: u64,
    pub tcp_invalid: u64,
    pub proxy_header_failures: u64,
    pub relay_exhausted: u64,
    pub relay_bind_errors: u64,
}

impl Counters {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dec(c: &AtomicU64) {
        c.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            send_would_block: l(&self.send_would_block),
            send_errors: l(&self.send_errors),
            tcp_queue_full: l(&self.tcp_queue_full),
            recv_errors: l(&self.recv_errors),
            tcp_connections: l(&self.tcp_connections),
            streams_refused: l(&self.streams_refused),
            tcp_invalid: l(&self.tcp_invalid),
            proxy_header_failures: l(&self.proxy_header_failures),
            relay_exhausted: l(&self.relay_exhausted),
            relay_bind_errors: l(&self.relay_bind_errors),
        }
    }
}

/// Bound listener sockets, made before the runtime starts (DESIGN practice 13), so
/// that tests can bind port 0 and the binary can report bind errors before anything
/// else happens.
#[derive(Debug, Default)]
pub struct Listeners {
    pub udp: Vec<std::net::UdpSocket>,
    pub tcp: Vec<std::net::TcpListener>,
}

/// A listener that could not be bound.
#[derive(Debug)]
pub struct BindFailure {
    pub transport: &'static str,
    pub addr: SocketAddr,
    pub error: std::io::Error,
}

impl std::fmt::Display for BindFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hint = match (self.error.kind(), self.transport) {
            (std::io::ErrorKind::AddrInUse, "http") => {
                "; another process holds the port: stop it or change http-port"
            }
            (std::io::ErrorKind::AddrInUse, "tls") => {
                "; another process (coturn?) holds the port: stop it or change tls-listening-port"
            }
            (std::io::ErrorKind::AddrInUse, _) => {
                "; another process (coturn?) holds the port: stop it or change listening-port"
            }
            (std::io::ErrorKind::AddrNotAvailable, "http") => {
                "; this host has no such address: fix http-ip"
            }
            (std::io::ErrorKind::AddrNotAvailable, _) => {
                "; this host has no such address: fix listening-ip"
            }
            (std::io::ErrorKind::PermissionDenied, _) => {
                "; ports below 1024 need CAP_NET_BIND_SERVICE"
            }
            _ => "",
        };
        write!(
            f,
            "cannot listen on {} {}: {}{hint}",
            self.transport, self.addr, self.error
        )
    }
}

impl std::error::Error for BindFailure {}

impl Listeners {
    /// Binds UDP and/or TCP on every address. IPv6 sockets are IPv6-only, so `0.0.0.0`
    /// and `::` can both take one port.
    pub fn bind(addrs: &[SocketAddr], udp: bool, tcp: bool) -> Result<Self, BindFailure> {
        Self::bind_workers(addrs, udp, tcp, 1)
    }

    /// [`Listeners::bind`] for `workers` core threads: each UDP address gets a
    /// SO_REUSEPORT group of `workers` sockets (one per worker; the kernel keeps each
    /// client on one of them). Port 0 is resolved by the first socket of a group.
    pub fn bind_workers(
        addrs: &[SocketAddr],
        udp: bool,
        tcp: bool,
        workers: usize,
    ) -> Result<Self, BindFailure> {
        let mut l = Listeners::default();
        let workers = workers.max(1);
        for &addr in addrs {
            if udp {
                let fail = |error| BindFailure {
                    transport: "udp",
                    addr,
                    error,
                };
                let first = io::udp_socket_shared(addr, workers > 1).map_err(fail)?;
                let bound = first.local_addr().map_err(fail)?;
                l.udp.push(first);
                for _ in 1..workers {
                    l.udp
                        .push(io::udp_socket_shared(bound, true).map_err(fail)?);
                }
            }
            if tcp {
                let s = io::tcp_listener(addr).map_err(|error| BindFailure {
                    transport: "tcp",
                    addr,
                    error,
                })?;
                l.tcp.push(s);
            }
        }
        Ok(l)
    }
}

/// What the runtime needs besides the server and the listeners.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Addresses relay sockets bind to.
    pub relay_ips: Vec<IpAddr>,
    pub min_port: u16,
    pub max_port: u16,
    pub max_tcp_connections: usize,
    /// Core threads, each with its own `Server`, relay sockets and one socket of each
    /// UDP listener's SO_REUSEPORT group (see [`Listeners::bind_workers`]).
    pub workers: usize,
    pub redact_logs: bool,
    /// Capacity of the core's queue of TCP and TLS frames.
    pub queue_capacity: usize,
    /// Capacity of each TCP connection's write queue, in messages.
    pub tcp_write_queue: usize,
    /// Where the worker threads and acceptors report how they end.
    pub health: Health,
    /// Peers whose connections to the TCP listeners begin with a PROXY header
    /// (`proxy-protocol-ip`).
    pub proxy_protocol: ProxySources,
}

impl RuntimeOptions {
    pub fn from_config(c: &Config) -> Self {
        Self {
            relay_ips: c.relay_ips.clone(),
            min_port: c.min_port,
            max_port: c.max_port,
            max_tcp_connections: c.max_tcp_connections,
            workers: c.turn_workers,
            redact_logs: c.redact_logs,
            queue_capacity: 8192,
            tcp_write_queue: 256,
            health: Health::default(),
            proxy_protocol: ProxySources::new(c.proxy_protocol.clone()),
        }
    }
}

/// A failure to start the runtime.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// A running STUN/TURN service.
#[derive(Debug)]
pub struct TurnService {
    udp_addrs: Vec<SocketAddr>,
    tcp_addrs: Vec<SocketAddr>,
    streams: io::StreamIntake,
    shutdown: watch::Sender<bool>,
    /// Each core thread's final counters, sent as it ends.
    cores: Vec<oneshot::Receiver<Stats>>,
    wakers: Vec<CoreWaker>,
    tasks: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
    /// Each worker's counters, by worker.
    stats: watch::Receiver<Vec<Stats>>,
    /// The workers' allocation counts, when a quota is set.
    quota: Option<quota::QuotaBoard>,
}

/// The sum of the workers' counters.
fn total(per_worker: &[Stats]) -> Stats {
    let mut t = Stats::default();
    for s in per_worker {
        t += *s;
    }
    t
}

impl TurnService {
    /// Starts the listeners and the core; must be called inside a tokio runtime.
    /// Checks first that every relay address belongs to this host.
    pub fn start(
        server: Server,
        listeners: Listeners,
        opts: RuntimeOptions,
    ) -> Result<Self, StartError> {
        if opts.relay_ips.is_empty() {
            return Err(StartError("no relay address: set relay-ip".into()));
        }
        for ip in &opts.relay_ips {
            io::udp_socket(SocketAddr::new(*ip, 0)).map_err(|e| {
                StartError(format!(
                    "relay-ip {ip} cannot be bound ({e}); name an address of this host (use external-ip for a public address behind NAT)"
                ))
            })?;
        }
        if opts.min_port > opts.max_port {
            return Err(StartError(format!(
                "min-port {} is above max-port {}",
                opts.min_port, opts.max_port
            )));
        }
        // RFC 5780 answers CHANGE-REQUEST from the other listeners of a discovery
        // group: every one of them must exist.
        for g in &server.config().discovery {
            for a in g.addresses() {
                if !listeners
                    .udp
                    .iter()
                    .any(|s| s.local_addr().is_ok_and(|l| l == a))
                {
                    return Err(StartError(format!(
                        "NAT discovery (RFC 5780) needs a UDP listener on {a}, and there is none"
                    )));
                }
            }
        }
        let queue = opts.queue_capacity.max(1);
        let workers = opts.workers.max(1);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let stats_tx = Arc::new(watch::channel(vec![Stats::default(); workers]).0);
        let stats = stats_tx.subscribe();
        let start_err = |what: &str, e: std::io::Error| StartError(format!("{what}: {e}"));
        let redact = Redactor::new(opts.redact_logs);
        let mut tasks = Vec::new();

        // One poller per worker; the UDP sockets of each listening address are
        // SO_REUSEPORT groups of `workers` sockets (`Listeners::bind_workers`), the
        // k-th socket of each address goes to worker k.
        let mut pollers = Vec::with_capacity(workers);
        let mut udp_in: Vec<Vec<(SocketAddr, Arc<FastSocket>)>> = vec![Vec::new(); workers];
        for _ in 0..workers {
            pollers.push(Poller::new().map_err(|e| start_err("epoll", e))?);
        }
        let mut udp_addrs: Vec<SocketAddr> = Vec::new();
        let mut taken: HashMap<SocketAddr, usize> = HashMap::new();
        for s in listeners.udp {
            let local = s.local_addr().map_err(|e| start_err("UDP listener", e))?;
            let k = taken.entry(local).or_insert(0);
            let w = *k;
            *k += 1;
            let Some(poller) = pollers.get(w) else {
                return Err(StartError(format!(
                    "UDP listener {local} has more sockets than the {workers} workers"
                )));
            };
            // Every client datagram of this address queues here, relayed ones included:
            // room for a few milliseconds of traffic at a million packets/s, so that a
            // moment without the CPU does not drop what arrives meanwhile. Best effort:
            // the kernel caps it at net.core.rmem_max.
            if let Err(e) = socket2::SockRef::from(&s).set_recv_buffer_size(LISTENER_RCVBUF) {
                debug!(%local, error = %e, "cannot enlarge the receive buffer");
            }
            // Made non-blocking here; sockets bound outside `Listeners::bind` may not be.
            let sock = Arc::new(FastSocket::new(s).map_err(|e| start_err("UDP listener", e))?);
            let mine = &mut udp_in[w];
            poller
                .registry()
                .and_then(|r| r.register(&**sock, Token(LISTENER_TOKEN | mine.len())))
                .map_err(|e| start_err("UDP listener", e))?;
            mine.push((local, sock));
            if w == 0 {
                info!("STUN/TURN listening on udp {local}");
                udp_addrs.push(local);
            }
        }
        for (local, n) in &taken {
            if *n != workers {
                return Err(StartError(format!(
                    "UDP listener {local} has {n} sockets for {workers} workers; bind one per worker (SO_REUSEPORT)"
                )));
            }
        }
        let mut client_rxs = Vec::with_capacity(workers);
        let mut client_txs = Vec::with_capacity(workers);
        for p in &pollers {
            let (tx, rx) = tsunagi_net::core_channel(queue, p.waker());
            client_txs.push(tx);
            client_rxs.push(rx);
        }
        let client_tx = io::ClientTx::new(client_txs);
        let settings = io::TcpSettings {
            semaphore: Arc::new(Semaphore::new(
                opts.max_tcp_connections.clamp(1, Semaphore::MAX_PERMITS),
            )),
            write_queue: opts.tcp_write_queue.max(1),
            redact: redact.clone(),
            proxy_protocol: opts.proxy_protocol.clone(),
        };
        let mut tcp_addrs = Vec::new();
        for l in listeners.tcp {
            let local = l.local_addr().map_err(|e| start_err("TCP listener", e))?;
            let l = TcpListener::from_std(l).map_err(|e| start_err("TCP listener", e))?;
            info!("STUN/TURN listening on tcp {local}");
            tcp_addrs.push(local);
            tasks.push(opts.health.spawn(
                Component::Turn,
                format!("turn tcp {local}"),
                io::tcp_acceptor(
                    l,
                    client_tx.clone(),
                    settings.clone(),
                    counters.clone(),
                    shutdown_rx.clone(),
                ),
            ));
        }
        let streams =
            io::StreamIntake::new(client_tx, settings, counters.clone(), shutdown_rx.clone());
        info!(
            relay_ips = %opts.relay_ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            "relay ports {}-{}",
            opts.min_port,
            opts.max_port
        );

        if workers > 1 {
            info!(workers, "STUN/TURN workers (SO_REUSEPORT)");
        }
        let config = server.config().clone();
        // user-quota and total-quota count every worker's allocations (and, in a
        // cluster, every node's): the workers exchange counts on a board.
        let board = (config.user_quota > 0 || config.total_quota > 0)
            .then(|| quota::QuotaBoard::new(workers));
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut servers = vec![server];
        while servers.len() < workers {
            // Stateless nonces from one key: any worker accepts them.
            servers.push(Server::new(config.clone(), Instant::now(), unix_now));
        }
        // Every worker knows every worker's live relayed addresses: this server's own
        // relays are peers even on a private or loopback relay-ip (tsunagi_turn::relays).
        let directory = RelayDirectory::new(&opts.relay_ips);
        for s in &mut servers {
            s.share_relays(directory.clone());
        }
        let mut done = Vec::with_capacity(workers);
        let mut wakers = Vec::with_capacity(workers);
        for (index, ((server, poller), (udp_in, client_rx))) in servers
            .into_iter()
            .zip(pollers)
            .zip(udp_in.into_iter().zip(client_rxs))
            .enumerate()
        {
            let registry = poller.registry().map_err(|e| start_err("epoll", e))?;
            let relays = RelayPool::new(
                &opts.relay_ips,
                opts.min_port,
                opts.max_port,
                registry,
                counters.clone(),
            );
            let udp_out = udp_in.iter().cloned().collect();
            wakers.push(poller.waker());
            let published = server.stats();
            let core = Core {
                server,
                relays,
                udp_out,
                tcp_out: HashMap::new(),
                counters: counters.clone(),
                redact: redact.clone(),
                published,
                stats_tx: stats_tx.clone(),
                index,
                auth_log: LogLimiter::new(20),
                run: Run::default(),
                scratch: vec![0; 65_536 + 128],
                now: Instant::now(),
                multi: MultiSend::default(),
                multi_from: None,
                poller,
                udp_in,
                rx: RecvBufs::new(),
                again: Vec::new(),
                quota: board
                    .clone()
                    .map(|b| quota::Exchange::new(b, Instant::now())),
            };
            let (done_tx, done_rx) = oneshot::channel();
            let shutdown_rx = shutdown_rx.clone();
            let health = opts.health.clone();
            std::thread::Builder::new()
                .name(format!("turn-core-{index}"))
                .spawn(move || {
                    let name = format!("turn worker {index}");
                    if let Some(stats) =
                        health.thread(Component::Turn, name, || core.run(client_rx, shutdown_rx))
                    {
                        let _ = done_tx.send(stats);
                    }
                })
                .map_err(|e| start_err("core thread", e))?;
            done.push(done_rx);
        }
        Ok(Self {
            udp_addrs,
            tcp_addrs,
            streams,
            shutdown,
            cores: done,
            wakers,
            tasks,
            counters,
            stats,
            quota: board,
        })
    }

    /// The board of allocation counts that `user-quota` and `total-quota` count over
    /// (every worker; the cluster adds the other nodes): `None` without a quota.
    pub fn quota_board(&self) -> Option<quota::QuotaBoard> {
        self.quota.clone()
    }

    /// Bound UDP listener addresses (useful with port 0).
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }

    /// Bound TCP listener addresses.
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp_addrs
    }

    /// Where another listener hands over the TURN streams it accepted (TURN over TLS
    /// on a front port; see `crate::http`).
    pub fn streams(&self) -> io::StreamIntake {
        self.streams.clone()
    }

    /// A cheap, cloneable reader of the counters, for the HTTP endpoints. It stays
    /// valid after shutdown (showing the last values).
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle {
            stats: self.stats.clone(),
            counters: self.counters.clone(),
        }
    }

    /// The runtime's counters, live.
    pub fn counters(&self) -> CounterSnapshot {
        self.counters.snapshot()
    }

    /// The server's counters (all workers) as of their last input.
    pub fn stats(&self) -> Stats {
        total(&self.stats.borrow())
    }

    /// Each worker's counters.
    pub fn worker_stats(&self) -> Vec<Stats> {
        self.stats.borrow().clone()
    }

    /// Sees the server's counters change.
    pub fn watch_stats(&self) -> StatsWatch {
        StatsWatch(self.stats.clone())
    }

    /// Stops listening, closes connections and relay sockets, and returns the final
    /// server counters. Tasks that do not stop within two seconds are aborted.
    pub async fn shutdown(mut self) -> Stats {
        let _ = self.shutdown.send(true);
        for w in &self.wakers {
            w.force();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let mut stats = Stats::default();
        let last = self.stats.borrow().clone();
        for (i, core) in std::mem::take(&mut self.cores).into_iter().enumerate() {
            stats += match tokio::time::timeout_at(deadline, core).await {
                Ok(Ok(s)) => s,
                _ => last.get(i).copied().unwrap_or_default(),
            };
        }
        for t in std::mem::take(&mut self.tasks) {
            let abort = t.abort_handle();
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                abort.abort();
            }
        }
        stats
    }
}

/// A service dropped without [`TurnService::shutdown`] stops all the same: its core
/// thread ends and closes the relay sockets, its tasks see the shutdown.
impl Drop for TurnService {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for w in &self.wakers {
            w.force();
        }
    }
}

/// Waits for the server's counters (all workers summed) to meet a condition.
#[derive(Debug)]
pub struct StatsWatch(watch::Receiver<Vec<Stats>>);

impl StatsWatch {
    /// Returns the counters once `f` holds for them; `Err` once the service is gone.
    pub async fn wait_for(
        &mut self,
        mut f: impl FnMut(&Stats) -> bool,
    ) -> Result<Stats, watch::error::RecvError> {
        let v = self.0.wait_for(|v| f(&total(v))).await?;
        Ok(total(&v))
    }
}

/// Reads the server's [`Stats`] (as of the core's last batch of inputs) and the
/// runtime's [`Counters`] (live) from any task. Reading takes a `watch` read lock for
/// the time of a copy; the core never waits for a reader.
#[derive(Debug, Clone)]
pub struct StatsHandle {
    stats: watch::Receiver<Vec<Stats>>,
    counters: Arc<Counters>,
}

impl StatsHandle {
    /// The server's counters (all workers).
    pub fn stats(&self) -> Stats {
        total(&self.stats.borrow())
    }

    /// The runtime's counters.
    pub fn counters(&self) -> CounterSnapshot {
        self.counters.snapshot()
    }
}

/// Receive buffer asked for on UDP listeners (SO_RCVBUF; the kernel doubles it for
/// its bookkeeping and caps the request at net.core.rmem_max).
const LISTENER_RCVBUF: usize = 4 << 20;

impl Core {}
