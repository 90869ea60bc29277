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
//! listener are gathered and leave in one `sendmmsg` ([`batch::MultiSend`]) once 16 are
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
//! TURN over TLS (`turns:`, RFC 8656 §3.1) is TCP with a TLS handshake first: after
//! it, a TLS connection is framed and handled exactly like a TCP one, with
//! `Transport::Tls` in its 5-tuple.
//!
//! The core publishes the server's [`Stats`] into a `watch` after each turn (skipped
//! when nothing changed); [`StatsHandle`] reads it, with the runtime [`Counters`], for
//! the HTTP endpoints, without touching the core.
//!
//! Shutdown is one `watch` broadcast and a wake-up of the core: listeners stop
//! accepting, connections close, the core releases every relay socket and returns the
//! server's final [`Stats`]. Dropping the [`TurnService`] does the same.

mod batch;
mod io;
mod poller;
mod relay;

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
use crate::redact::Redactor;
use crate::supervise::{Component, Health};
use batch::{FastSocket, MultiSend, RecvBufs};
use poller::{CoreWaker, Poller, Token, WAKER};
use relay::{RelayPool, LISTENER_TOKEN};

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
    /// TLS connections that failed or timed out in the handshake.
    pub tls_handshake_failures: AtomicU64,
    /// TCP connections closed because the stream was not STUN/ChannelData.
    pub tcp_invalid: AtomicU64,
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
    pub tls_handshake_failures: u64,
    pub tcp_invalid: u64,
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
            tls_handshake_failures: l(&self.tls_handshake_failures),
            tcp_invalid: l(&self.tcp_invalid),
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
    /// TCP listeners for TURN over TLS; they need [`RuntimeOptions::tls`].
    pub tls: Vec<std::net::TcpListener>,
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

    /// Binds TCP listeners for TURN over TLS on every address (`tls-listening-port`).
    pub fn bind_tls(addrs: &[SocketAddr]) -> Result<Vec<std::net::TcpListener>, BindFailure> {
        addrs
            .iter()
            .map(|&addr| {
                io::tcp_listener(addr).map_err(|error| BindFailure {
                    transport: "tls",
                    addr,
                    error,
                })
            })
            .collect()
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
    /// Certificate and key for the TLS listeners (see [`crate::tls`]).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Where the worker threads and acceptors report how they end.
    pub health: Health,
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
            tls: None,
            health: Health::default(),
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
    tls_addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    /// Each core thread's final counters, sent as it ends.
    cores: Vec<oneshot::Receiver<Stats>>,
    wakers: Vec<CoreWaker>,
    tasks: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
    /// Each worker's counters, by worker.
    stats: watch::Receiver<Vec<Stats>>,
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
        if !listeners.tls.is_empty() && opts.tls.is_none() {
            return Err(StartError(
                "TLS listeners without a certificate: set tls-cert and tls-key, or tls-self-signed"
                    .into(),
            ));
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
            let (tx, rx) = mpsc::channel(queue);
            client_txs.push((tx, p.waker()));
            client_rxs.push(rx);
        }
        let client_tx = io::ClientTx::new(client_txs);
        let settings = io::TcpSettings {
            semaphore: Arc::new(Semaphore::new(
                opts.max_tcp_connections.clamp(1, Semaphore::MAX_PERMITS),
            )),
            write_queue: opts.tcp_write_queue.max(1),
            redact: redact.clone(),
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
                    None,
                    client_tx.clone(),
                    settings.clone(),
                    counters.clone(),
                    shutdown_rx.clone(),
                ),
            ));
        }
        let mut tls_addrs = Vec::new();
        if let Some(tls) = &opts.tls {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
            for l in listeners.tls {
                let local = l.local_addr().map_err(|e| start_err("TLS listener", e))?;
                let l = TcpListener::from_std(l).map_err(|e| start_err("TLS listener", e))?;
                info!("TURN over TLS listening on tcp {local}");
                tls_addrs.push(local);
                tasks.push(opts.health.spawn(
                    Component::Turn,
                    format!("turn tls {local}"),
                    io::tcp_acceptor(
                        l,
                        Some(acceptor.clone()),
                        client_tx.clone(),
                        settings.clone(),
                        counters.clone(),
                        shutdown_rx.clone(),
                    ),
                ));
            }
        }
        drop(client_tx);
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
            tls_addrs,
            shutdown,
            cores: done,
            wakers,
            tasks,
            counters,
            stats,
        })
    }

    /// Bound UDP listener addresses (useful with port 0).
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }

    /// Bound TCP listener addresses.
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp_addrs
    }

    /// Bound TURN-over-TLS listener addresses.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
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

/// Allows `per_sec` log lines per second and counts the rest, so that a flood of bad
/// requests cannot flood the log.
#[derive(Debug)]
struct LogLimiter {
    per_sec: u32,
    window: Instant,
    used: u32,
    suppressed: u64,
}

impl LogLimiter {
    fn new(per_sec: u32) -> Self {
        Self {
            per_sec,
            window: Instant::now(),
            used: 0,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last allowed line)` if a line may be logged now.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.used = 0;
        }
        if self.used < self.per_sec {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// The task that owns the server.
struct Core {
    server: Server,
    relays: RelayPool,
    /// UDP listener sockets by local address, for responses.
    udp_out: HashMap<SocketAddr, Arc<FastSocket>>,
    /// Write queues of open TCP connections. Bounded by max-tcp-connections; the
    /// default hasher is SipHash with random keys, as keys come from clients.
    tcp_out: HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>,
    counters: Arc<Counters>,
    redact: Redactor,
    /// Every worker's counters; this core writes slot `index`.
    stats_tx: Arc<watch::Sender<Vec<Stats>>>,
    index: usize,
    /// What `stats_tx` holds, so that an unchanged batch does not touch its lock.
    published: Stats,
    auth_log: LogLimiter,
    /// The run of messages being gathered until the end of a batch.
    run: Run,
    /// Where `handle_peer_into` builds messages for clients: a ChannelData or Data
    /// indication around the largest UDP payload.
    scratch: Vec<u8>,
    /// The clock reading of the batch being handled (see [`Core::hand_off`]).
    now: Instant,
    /// Lone datagrams for clients from the listener `multi_from`, sent together
    /// (`sendmmsg`) once [`MULTI_FLUSH_AT`] are gathered or at the end of the batch.
    multi: MultiSend,
    multi_from: Option<SocketAddr>,
    /// Every UDP socket of the core is registered here.
    poller: Poller,
    /// UDP listeners by token (`LISTENER_TOKEN | index`).
    udp_in: Vec<(SocketAddr, Arc<FastSocket>)>,
    /// Where each receive lands.
    rx: RecvBufs,
    /// Sockets whose last receive filled every slot: read again next turn.
    again: Vec<Token>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("relays", &self.relays.len())
            .field("tcp_connections", &self.tcp_out.len())
            .finish_non_exhaustive()
    }
}

/// Receive buffer asked for on UDP listeners (SO_RCVBUF; the kernel doubles it for
/// its bookkeeping and caps the request at net.core.rmem_max).
const LISTENER_RCVBUF: usize = 4 << 20;

/// TCP inputs handled in one turn of the core's loop (UDP sockets: at most
/// [`poller::EVENTS`] reported ones and as many to read again). Everything gathered in
/// a turn leaves at its end.
const BATCH: usize = 64;

/// Longest sleep of the core without anything to do: a bound, not a tick (input,
/// deadlines and shutdown wake it).
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Receives (of up to 16 datagrams each) from one socket in one turn, while each fills
/// every slot: a busy socket's datagrams are handled 64 at a time, in runs that leave
/// together, as before the core read the sockets itself.
const READS_PER_TURN: usize = 4;

/// Lone datagrams for clients gathered for one `sendmmsg` before it is sent, even in
/// the middle of a batch: 16 per call still saves 15 system calls of 16 under full
/// load (63 of 64 before), and the first datagram gathered no longer waits for the
/// handling of up to 63 more inputs.
const MULTI_FLUSH_AT: usize = 16;

/// Where a run of UDP transmits goes: from a listener to a client, or from a relay
/// socket to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunKey {
    Listener {
        local: SocketAddr,
        to: SocketAddr,
    },
    Relay {
        relay: SocketAddr,
        to: SocketAddr,
        df: bool,
    },
}

/// Equal-sized datagrams for one destination, waiting to be sent together. The first
/// stays in its own buffer: a run of one (the common case with many allocations) is
/// sent from there. Both buffers keep their capacity: no allocation per packet.
#[derive(Debug, Default)]
struct Run {
    key: Option<RunKey>,
    first: Vec<u8>,
    /// The second and later datagrams back to back; its capacity is kept.
    rest: Vec<u8>,
    count: usize,
}

impl Run {
    /// Appends `payload` if it continues this run.
    fn extend(&mut self, key: RunKey, payload: &[u8]) -> bool {
        let fits = self.key == Some(key)
            && payload.len() == self.first.len()
            && self.count < batch::GSO_MAX_SEGMENTS
            && (self.count + 1) * payload.len() <= batch::GSO_MAX_BYTES;
        if fits {
            self.rest.extend_from_slice(payload);
            self.count += 1;
        }
        fits
    }

    /// Starts a new run (the previous one must have been flushed).
    fn start(&mut self, key: RunKey, payload: &[u8]) {
        self.key = Some(key);
        self.first.clear();
        self.first.extend_from_slice(payload);
        self.rest.clear();
        self.count = 1;
    }

    /// The whole run back to back (moves the first datagram in front of the rest).
    fn contents(&mut self) -> &[u8] {
        if self.count > 1 {
            self.rest.splice(0..0, self.first.iter().copied());
            &self.rest
        } else {
            &self.first
        }
    }
}

/// The run a UDP message to `dest` can join; `None` for TCP/TLS clients and RFC 5780
/// responses from another listener.
fn run_key(dest: &Destination) -> Option<RunKey> {
    match *dest {
        Destination::Client(ft) if ft.transport == Transport::Udp => Some(RunKey::Listener {
            local: ft.server,
            to: ft.client,
        }),
        Destination::Peer {
            relay,
            peer,
            dont_fragment,
        } => Some(RunKey::Relay {
            relay,
            to: peer,
            df: dont_fragment,
        }),
        _ => None,
    }
}

impl Core {
    /// The core's loop, on a thread of its own: waits in `epoll_wait` for sockets,
    /// the waker (TCP input, shutdown) or the server's next deadline; then reads the
    /// ready sockets, takes queued TCP input, handles due timers and sends what all of
    /// that produced. Returns the server's final counters once `shutdown` is set or
    /// its sender is gone.
    fn run(
        mut self,
        mut client_rx: mpsc::Receiver<ClientInput>,
        shutdown: watch::Receiver<bool>,
    ) -> Stats {
        let waker = self.poller.waker();
        let mut tokens = Vec::with_capacity(2 * poller::EVENTS);
        let mut busy = false;
        loop {
            if *shutdown.borrow() || shutdown.has_changed().is_err() {
                break;
            }
            // Sockets first read again (`again`), then the ones epoll reports.
            tokens.clear();
            let again = self.again.len().min(poller::EVENTS);
            tokens.extend(self.again.drain(..again));
            let timeout = if busy || !tokens.is_empty() {
                Some(Duration::ZERO)
            } else {
                waker.sleeping();
                if client_rx.is_empty() {
                    // Until the next deadline of the server (rounded up, so that it is
                    // due when the wait ends), or a while: shutdown wakes it anyway.
                    Some(
                        self.server
                            .poll_timeout()
                            .map_or(IDLE_WAIT, |t| {
                                t.saturating_duration_since(Instant::now())
                                    + Duration::from_micros(500)
                            })
                            .min(IDLE_WAIT),
                    )
                } else {
                    Some(Duration::ZERO)
                }
            };
            let more = match self.poller.wait(&mut tokens, timeout) {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %e, "waiting for UDP sockets failed");
                    Counters::inc(&self.counters.recv_errors);
                    std::thread::sleep(Duration::from_millis(10));
                    false
                }
            };
            waker.awake();
            let now = Instant::now();
            self.now = now;
            let mut rx = std::mem::replace(&mut self.rx, RecvBufs::empty());
            for &t in &tokens {
                if t != WAKER {
                    self.read_socket(t, &mut rx);
                }
            }
            self.rx = rx;
            // TCP and TLS frames, a batch at a time.
            let mut taken = 0;
            while taken < BATCH {
                match client_rx.try_recv() {
                    Ok(input) => {
                        self.on_client(input, now);
                        taken += 1;
                    }
                    Err(_) => break,
                }
            }
            if self.server.poll_timeout().is_some_and(|t| t <= now) {
                self.server.handle_timeout(now, &mut self.relays);
            }
            self.drain();
            self.publish_stats();
            busy = more || taken == BATCH || !self.again.is_empty();
        }
        let live = self.server.allocation_count();
        self.relays.release_all();
        self.tcp_out.clear();
        info!(
            allocations = live,
            "STUN/TURN stopped; relay sockets closed"
        );
        self.publish_stats();
        self.server.stats()
    }

    fn publish_stats(&mut self) {
        let now = self.server.stats();
        if now != self.published {
            self.published = now;
            let i = self.index;
            self.stats_tx.send_modify(|v| {
                if let Some(slot) = v.get_mut(i) {
                    *slot = now;
                }
            });
        }
    }

    /// Receives from the socket `t` names, and handles every datagram in place: up to
    /// [`READS_PER_TURN`] receives while each fills every slot; a socket that still
    /// may hold more is read again next turn.
    fn read_socket(&mut self, t: Token, rx: &mut RecvBufs) {
        for _ in 0..READS_PER_TURN {
            let (local, relay, r) = if t.0 & LISTENER_TOKEN != 0 {
                let Some((local, sock)) = self.udp_in.get(t.0 & !LISTENER_TOKEN) else {
                    return;
                };
                (*local, None, sock.recv_into(rx))
            } else {
                // A socket released since epoll reported it names nothing now (also one
                // released by a datagram handled below).
                let Some((relay, sock)) = self.relays.by_token(t) else {
                    return;
                };
                (relay, Some(relay), sock.recv_into(rx))
            };
            let full = match r {
                Ok(full) => full,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // E.g. ECONNREFUSED left by an ICMP error: per socket, not fatal.
                    // The error is consumed by this receive; what is queued behind it
                    // is read next turn.
                    debug!(socket = %local, error = %e, "UDP receive error");
                    Counters::inc(&self.counters.recv_errors);
                    self.again.push(t);
                    return;
                }
            };
            let now = self.now;
            for (data, from) in rx.datagrams() {
                match relay {
                    Some(relay) => self.on_peer(relay, from, data, now),
                    None => {
                        let ft = FiveTuple {
                            client: from,
                            server: local,
                            transport: Transport::Udp,
                        };
                        self.client_input(now, ft, data);
                    }
                }
            }
            if !full {
                return;
            }
        }
        self.again.push(t);
    }

    fn on_client(&mut self, input: ClientInput, now: Instant) {
        match input {
            ClientInput::Frame { ft, data } => {
                self.client_input(now, ft, &data);
            }
            ClientInput::Opened { ft, tx } => {
                self.tcp_out.insert(ft, tx);
            }
            ClientInput::Closed { ft } => {
                self.tcp_out.remove(&ft);
                self.server
                    .handle_connection_closed(now, ft, &mut self.relays);
            }
        }
    }

    /// A client's datagram or frame; relayed ChannelData takes the fast path (no
    /// transmit queued, no copy until it joins a run).
    fn client_input(&mut self, now: Instant, ft: FiveTuple, data: &[u8]) {
        if let Some((dest, range)) =
            self.server
                .handle_client_relay(now, ft, data, &mut self.relays)
        {
            self.push(dest, data.get(range).unwrap_or_default());
        }
    }

    /// A peer's datagram: the message for the client is built in `scratch`.
    fn on_peer(&mut self, relay: SocketAddr, peer: SocketAddr, data: &[u8], now: Instant) {
        let mut scratch = std::mem::take(&mut self.scratch);
        if let Some((dest, n)) = self
            .server
            .handle_peer_into(now, relay, peer, data, &mut scratch)
        {
            self.push(dest, scratch.get(..n).unwrap_or_default());
        }
        self.scratch = scratch;
    }

    /// Adds a message from a fast path to the current run (sent at the end of the
    /// batch), or sends it now when it cannot be part of a run.
    fn push(&mut self, dest: Destination, payload: &[u8]) {
        if let Destination::Peer { relay, peer, .. } = dest {
            if self.hand_off(relay, peer, payload) {
                return;
            }
        }
        match run_key(&dest) {
            Some(key) => {
                let mut run = std::mem::take(&mut self.run);
                if !run.extend(key, payload) {
                    self.flush(&mut run);
                    run.start(key, payload);
                }
                self.run = run;
            }
            None => {
                if let Destination::Client(ft) = dest {
                    self.send_to_client(ft, payload.to_vec());
                }
            }
        }
    }

    /// A datagram from relay socket `relay` to `peer`, when `peer` is another open
    /// relay socket of this server (both clients of a call relayed by this server):
    /// handed to the server as if it had been received there, without the round trip
    /// through the kernel (a send, a loopback delivery and a receive saved per packet).
    /// The server sees exactly what the kernel would deliver: the same bytes from the
    /// same source address; every check of both allocations applies as before.
    /// Returns false, and does nothing, when `peer` is not one of ours.
    fn hand_off(&mut self, relay: SocketAddr, peer: SocketAddr, payload: &[u8]) -> bool {
        if !self.relays.is_open(peer) {
            return false;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        if let Some((dest, n)) =
            self.server
                .handle_peer_into(self.now, peer, relay, payload, &mut scratch)
        {
            // A message for a client: never a peer, so no recursion.
            self.push(dest, scratch.get(..n).unwrap_or_default());
        }
        self.scratch = scratch;
        true
    }

    /// Sends every transmit and logs every event the server has queued. Consecutive
    /// UDP transmits of equal size from one socket to one destination (a burst of
    /// ChannelData, the packets of a video frame) are sent as one run: one GSO send.
    fn drain(&mut self) {
        let mut run = std::mem::take(&mut self.run);
        while let Some(t) = self.server.poll_transmit() {
            if let Destination::Peer { relay, peer, .. } = t.destination {
                if self.relays.is_open(peer) {
                    self.run = std::mem::take(&mut run);
                    self.hand_off(relay, peer, &t.payload);
                    run = std::mem::take(&mut self.run);
                    continue;
                }
            }
            if let Some(key) = run_key(&t.destination) {
                if !run.extend(key, &t.payload) {
                    self.flush(&mut run);
                    run.start(key, &t.payload);
                }
                continue;
            }
            self.flush(&mut run);
            match t.destination {
                Destination::Client(ft) => self.send_to_client(ft, t.payload),
                // RFC 5780: a Binding response from another listener or to another port.
                Destination::ClientFrom { local, client } => {
                    let r = match self.udp_out.get(&local) {
                        Some(s) => s.send_to(&t.payload, client).map(|_| ()),
                        None => continue,
                    };
                    self.count_send(r, "client", client, None);
                }
                Destination::Peer {
                    relay,
                    peer,
                    dont_fragment,
                } => {
                    let r = self.relays.send(relay, peer, dont_fragment, &t.payload);
                    self.count_send(r, "peer", peer, Some(relay));
                }
            }
        }
        self.flush(&mut run);
        self.run = run;
        self.send_multi();
        while let Some(ev) = self.server.poll_event() {
            self.log_event(ev);
        }
    }

    /// Sends the run, in pieces of as many datagrams as the socket's GSO takes. A send
    /// error or a full socket buffer drops (and counts) the rest of the run.
    fn flush(&mut self, run: &mut Run) {
        let Some(key) = run.key.take() else {
            return;
        };
        let segment = run.first.len().max(1);
        let several = run.count > 1;
        let contents = run.contents();
        match key {
            RunKey::Listener { local, to } if !several => {
                // Joins the listener's batch of lone datagrams, which leaves once it
                // holds MULTI_FLUSH_AT of them (or at the end of the batch of inputs).
                if self.multi_from != Some(local) {
                    self.send_multi();
                    self.multi_from = Some(local);
                }
                self.multi.push(to, contents);
                if self.multi.len() >= MULTI_FLUSH_AT.min(batch::MULTI_SEND_MAX) {
                    self.send_multi();
                }
            }
            RunKey::Listener { local, to } => {
                if let Some(s) = self.udp_out.get(&local) {
                    let r = if several {
                        contents
                            .chunks(segment * s.max_segments())
                            .try_for_each(|piece| s.send_run(to, piece, segment))
                    } else {
                        s.send_run(to, contents, segment)
                    };
                    self.count_send(r, "client", to, None);
                }
            }
            RunKey::Relay { relay, to, df } => {
                let r = if several {
                    let max = self.relays.max_segments(relay);
                    let mut r = Ok(());
                    for piece in contents.chunks(segment * max) {
                        r = self.relays.send_run(relay, to, df, piece, segment);
                        if r.is_err() {
                            break;
                        }
                    }
                    r
                } else {
                    self.relays.send(relay, to, df, contents)
                };
                self.count_send(r, "peer", to, Some(relay));
            }
        }
        run.rest.clear();
        run.count = 0;
    }

    /// Sends the listener's batch of lone datagrams.
    fn send_multi(&mut self) {
        let Some(local) = self.multi_from.take() else {
            return;
        };
        if self.multi.is_empty() {
            return;
        }
        let mut multi = std::mem::take(&mut self.multi);
        match self.udp_out.get(&local).cloned() {
            Some(s) => multi.send(&s, |e, to| self.count_send(Err(e), "client", to, None)),
            None => multi.send_none(),
        }
        self.multi = multi;
    }

    fn send_to_client(&mut self, ft: FiveTuple, payload: Vec<u8>) {
        match ft.transport {
            Transport::Udp => {
                let r = match self.udp_out.get(&ft.server) {
                    Some(s) => s.send_to(&payload, ft.client).map(|_| ()),
                    None => return,
                };
                self.count_send(r, "client", ft.client, None);
            }
            Transport::Tcp | Transport::Tls => {
                if let Some(tx) = self.tcp_out.get(&ft) {
                    match tx.try_send(payload) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            Counters::inc(&self.counters.tcp_queue_full)
                        }
                        // Closing; Closed is on its way.
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                }
            }
        }
    }

    fn count_send(
        &self,
        r: std::io::Result<()>,
        to: &'static str,
        addr: SocketAddr,
        relay: Option<SocketAddr>,
    ) {
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                Counters::inc(&self.counters.send_would_block)
            }
            Err(e) => {
                Counters::inc(&self.counters.send_errors);
                match relay {
                    Some(relay) => debug!(
                        to,
                        addr = %self.redact.addr(addr),
                        %relay,
                        error = %e,
                        "send failed; packet dropped"
                    ),
                    None => debug!(
                        to,
                        addr = %self.redact.addr(addr),
                        error = %e,
                        "send failed; packet dropped"
                    ),
                }
            }
        }
    }

    fn log_event(&mut self, ev: Event) {
        let r = &self.redact;
        match ev {
            Event::AllocationCreated {
                five_tuple,
                username,
                relays,
                lifetime,
            } => info!(
                client = %r.addr(five_tuple.client),
                transport = ?five_tuple.transport,
                user = %r.user(&username),
                relays = ?relays,
                lifetime_s = lifetime.as_secs(),
                "allocation created"
            ),
            Event::AllocationDeleted {
                five_tuple,
                username,
                reason,
                relays,
            } => info!(
                client = %r.addr(five_tuple.client),
                transport = ?five_tuple.transport,
                user = %r.user(&username),
                relays = ?relays,
                reason = match reason {
                    DeleteReason::Expired => "expired",
                    DeleteReason::Refreshed => "refreshed to 0",
                    DeleteReason::ConnectionClosed => "connection closed",
                },
                "allocation deleted"
            ),
            Event::PeerDenied {
                five_tuple,
                username,
                peer,
                category,
                config_key,
            } => info!(
                client = %r.addr(five_tuple.client),
                user = %r.user(&username),
                peer = %r.ip(peer),
                category,
                "peer denied ({category}); to allow it set {config_key}"
            ),
            Event::AuthFailed {
                five_tuple,
                username,
                reason,
            } => {
                // Anyone can cause these: rate-limited.
                if let Some(suppressed) = self.auth_log.allow(Instant::now()) {
                    info!(
                        client = %r.addr(five_tuple.client),
                        user = %r.user(&username),
                        reason,
                        suppressed,
                        "authentication failed"
                    );
                }
            }
            Event::QuotaReached {
                five_tuple,
                username,
                which,
            } => warn!(
                client = %r.addr(five_tuple.client),
                user = %r.user(&username),
                which,
                "allocation refused: {which} reached"
            ),
            // Newer event kinds may carry addresses and names: only shown unredacted.
            other if !r.is_enabled() => debug!(event = ?other, "TURN event"),
            _ => {}
        }
    }
}
