//! Sockets, and the tasks that read TCP listeners and connections (UDP sockets are
//! read by the core itself, see [`super::poller`]). Each task only moves bytes between
//! a stream and a bounded channel; every decision is the core's.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tracing::debug;
use tsunagi_stun::{stream_frame_len, FrameLen};
use tsunagi_turn::{FiveTuple, Transport};

use super::{ClientInput, Counters};
use tsunagi_net::CoreSender;
use tsunagi_net::{accept_limited, stopped};

/// Longest TCP frame: a STUN message with the largest length that is a multiple of 4.
const MAX_FRAME: usize = 20 + 65_532;
/// Bytes coalesced into one TCP write.
const WRITE_COALESCE: usize = 64 * 1024;
/// A stream client must complete its first frame, and any frame it has started, within
/// this time. Idle connections between frames (an allocation waiting for its next
/// Refresh) are not affected; a stalled or never-framed stream (an HTTP request on the
/// TURN port frames as ChannelData with a huge length) is closed.
const FRAME_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a non-blocking UDP socket bound to `addr`; IPv6 sockets are IPv6-only so
/// that `0.0.0.0` and `::` can share a port.
pub(crate) fn udp_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    udp_socket_shared(addr, false)
}

/// [`udp_socket`], with SO_REUSEPORT when `reuse_port` (a listener shared by workers:
/// the kernel spreads clients over the sockets of the group by a hash of their
/// addresses, the same socket for every datagram of one client).
pub(crate) fn udp_socket_shared(
    addr: SocketAddr,
    reuse_port: bool,
) -> io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    #[cfg(unix)]
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Opens a non-blocking TCP listener on `addr` (IPv6-only for IPv6, SO_REUSEADDR so
/// that a restart does not wait for TIME_WAIT).
pub(crate) fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// The cores' queues of TCP and TLS input, with their wakers: a send that finds its
/// core asleep wakes it. With several workers, a connection's frames all go to the
/// worker its 5-tuple hashes to, which holds its allocation.
#[derive(Debug, Clone)]
pub(crate) struct ClientTx {
    workers: Arc<[CoreSender<ClientInput>]>,
}

impl ClientTx {
    pub(crate) fn new(workers: Vec<CoreSender<ClientInput>>) -> Self {
        Self {
            workers: workers.into(),
        }
    }

    /// Queues `input` for its worker, waiting for room (TCP's backpressure); `Err`
    /// once that core is gone.
    pub(crate) async fn send(&self, input: ClientInput) -> Result<(), ()> {
        let ft = match &input {
            ClientInput::Opened { ft, .. }
            | ClientInput::Frame { ft, .. }
            | ClientInput::Closed { ft } => *ft,
        };
        let Some(tx) = self.workers.get(worker_of(&ft, self.workers.len())) else {
            return Err(());
        };
        tx.send(input).await.map_err(|_| ())
    }
}

/// The worker (of `n`) that serves a stream client: the same for every frame of one
/// connection.
pub(crate) fn worker_of(ft: &FiveTuple, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ft.client.hash(&mut h);
    ft.server.hash(&mut h);
    (h.finish() % n as u64) as usize
}

/// Settings shared by the TCP tasks.
#[derive(Debug, Clone)]
pub(crate) struct TcpSettings {
    pub semaphore: Arc<Semaphore>,
    pub write_queue: usize,
    pub redact: crate::redact::Redactor,
    /// Peers whose connections to the TCP listener begin with a PROXY header
    /// (`proxy-protocol-ip`).
    pub proxy_protocol: crate::proxied::ProxySources,
}

/// Accepts TCP connections while a connection permit is free ([`accept_limited`]).
pub(crate) async fn tcp_acceptor(
    listener: TcpListener,
    tx: ClientTx,
    settings: TcpSettings,
    counters: Arc<Counters>,
    shutdown: watch::Receiver<bool>,
) {
    let limit = settings.semaphore.clone();
    let for_connections = shutdown.clone();
    accept_limited(
        listener,
        limit,
        shutdown,
        "TCP",
        move |stream, client, permit| {
            let conn = Conn {
                client,
                permit,
                tx: tx.clone(),
                settings: settings.clone(),
                counters: counters.clone(),
                shutdown: for_connections.clone(),
            };
            tokio::spawn(tcp_connection(stream, conn));
        },
    )
    .await;
}

/// TURN over streams that another listener accepted and told apart from HTTP: TURN
/// over TLS on a front port (the HTTP port, the TURN-over-TLS port; see
/// `crate::http`), and TURN over TCP that arrives there. Each stream takes a permit of
/// TURN's TCP pool (`max-tcp-connections`) for as long as it lives.
#[derive(Debug, Clone)]
pub struct StreamIntake {
    tx: ClientTx,
    settings: TcpSettings,
    counters: Arc<Counters>,
    shutdown: watch::Receiver<bool>,
}

impl StreamIntake {
    pub(crate) fn new(
        tx: ClientTx,
        settings: TcpSettings,
        counters: Arc<Counters>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            tx,
            settings,
            counters,
            shutdown,
        }
    }

    /// Serves `stream` as a TURN client (`client` → `server` over `transport`),
    /// starting with the bytes already read from it (`first`); `false`, and the
    /// stream closed, when TURN's connection limit is reached.
    pub fn serve<S>(
        &self,
        stream: S,
        client: SocketAddr,
        server: SocketAddr,
        transport: Transport,
        first: &[u8],
    ) -> bool
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let Ok(permit) = self.settings.semaphore.clone().try_acquire_owned() else {
            Counters::inc(&self.counters.streams_refused);
            return false;
        };
        let conn = Conn {
            client,
            permit,
            tx: self.tx.clone(),
            settings: self.settings.clone(),
            counters: self.counters.clone(),
            shutdown: self.shutdown.clone(),
        };
        let ft = FiveTuple {
            client,
            server,
            transport,
        };
        let (rd, wr) = tokio::io::split(stream);
        let buf = BytesMut::from(first);
        tokio::spawn(stream_connection(rd, wr, ft, conn, buf));
        true
    }
}

/// Why a TCP connection ended, for the debug log.
#[derive(Debug)]
enum Close {
    Eof,
    Error(io::Error),
    Invalid,
    Shutdown,
    CoreGone,
    Stalled,
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Close::Eof => f.write_str("closed by the client"),
            Close::Error(e) => write!(f, "read error: {e}"),
            Close::Invalid => f.write_str("not STUN or ChannelData"),
            Close::Shutdown => f.write_str("server shutting down"),
            Close::CoreGone => f.write_str("server stopped"),
            Close::Stalled => f.write_str("no complete frame within 10 s"),
        }
    }
}

/// What a connection task needs besides its stream.
struct Conn {
    client: SocketAddr,
    permit: OwnedSemaphorePermit,
    tx: ClientTx,
    settings: TcpSettings,
    counters: Arc<Counters>,
    shutdown: watch::Receiver<bool>,
}

/// One plain TCP client. From a `proxy-protocol-ip` address, the client is the one its
/// PROXY header names (read within [`FRAME_STALL_TIMEOUT`]); the server side of the
/// 5-tuple stays this socket's own address (see `crate::proxied`).
async fn tcp_connection(mut stream: TcpStream, mut conn: Conn) {
    // The accepted socket's own address, more specific than a wildcard listener's.
    let Ok(server) = stream.local_addr() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let mut stop = conn.shutdown.clone();
    let Some(client) = crate::proxied::client_of(
        &mut stream,
        conn.client,
        &conn.settings.proxy_protocol,
        FRAME_STALL_TIMEOUT,
        &mut stop,
        &conn.settings.redact,
        &conn.counters.proxy_header_failures,
    )
    .await
    else {
        return;
    };
    conn.client = client;
    let ft = FiveTuple {
        client: conn.client,
        server,
        transport: Transport::Tcp,
    };
    let (rd, wr) = stream.into_split();
    stream_connection(rd, wr, ft, conn, BytesMut::with_capacity(4096)).await;
}

/// One stream client (TCP, or TLS after the handshake): frames the byte stream (RFC
/// 8489 §6.2.2, RFC 8656 §12.5), starting with what `buf` holds already, into the
/// core's client queue, and writes the core's responses from a bounded queue.
async fn stream_connection<R, W>(mut rd: R, wr: W, ft: FiveTuple, conn: Conn, mut buf: BytesMut)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        client,
        permit,
        tx,
        settings,
        counters,
        mut shutdown,
    } = conn;
    let (wtx, wrx) = mpsc::channel(settings.write_queue);
    if tx.send(ClientInput::Opened { ft, tx: wtx }).await.is_err() {
        return;
    }
    Counters::inc(&counters.tcp_connections);
    let writer = tokio::spawn(tcp_writer(wr, wrx));
    // Deadline for the frame being waited on: the first one, or a started one.
    let mut frame_deadline = Some(tokio::time::Instant::now() + FRAME_STALL_TIMEOUT);
    let mut framed_any = false;
    let close = 'conn: loop {
        // Hand every complete frame to the core.
        loop {
            let n = match stream_frame_len(&buf) {
                FrameLen::Incomplete => break,
                FrameLen::Invalid => break 'conn Close::Invalid,
                FrameLen::Stun(n) | FrameLen::ChannelData(n) => n,
            };
            if n > MAX_FRAME {
                break 'conn Close::Invalid;
            }
            if buf.len() < n {
                buf.reserve(n - buf.len());
                break;
            }
            let data = buf.split_to(n).freeze();
            framed_any = true;
            frame_deadline = None;
            // Awaiting here is TCP backpressure: a full core queue stops this reader.
            if tx.send(ClientInput::Frame { ft, data }).await.is_err() {
                break 'conn Close::CoreGone;
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        if framed_any && buf.is_empty() {
            frame_deadline = None;
        } else if frame_deadline.is_none() {
            frame_deadline = Some(tokio::time::Instant::now() + FRAME_STALL_TIMEOUT);
        }
        let stall = async {
            match frame_deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) => break Close::Eof,
                Ok(_) => {}
                Err(e) => break Close::Error(e),
            },
            _ = stall => break Close::Stalled,
            _ = stopped(&mut shutdown) => break Close::Shutdown,
        }
    };
    if matches!(close, Close::Invalid | Close::Stalled) {
        Counters::inc(&counters.tcp_invalid);
    }
    debug!(client = %settings.redact.addr(client), reason = %close, "TCP connection closed");
    writer.abort();
    // Tell the core, so that the allocation of this connection goes with it; not at
    // shutdown, when the core releases everything itself (and its final counters
    // should show what was live, not a race between connections and the core).
    if !matches!(close, Close::Shutdown) {
        let _ = tx.send(ClientInput::Closed { ft }).await;
    }
    Counters::dec(&counters.tcp_connections);
    drop(permit);
}

/// Writes queued messages to a TCP or TLS client, coalescing what is already queued.
/// The flush matters for TLS only (it pushes out the records of what was written).
async fn tcp_writer<W: AsyncWrite + Unpin>(mut wr: W, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut out: Vec<u8> = Vec::new();
    while let Some(first) = rx.recv().await {
        if rx.is_empty() {
            if wr.write_all(&first).await.is_err() || wr.flush().await.is_err() {
                return;
            }
            continue;
        }
        out.clear();
        out.extend_from_slice(&first);
        while out.len() < WRITE_COALESCE {
            match rx.try_recv() {
                Ok(m) => out.extend_from_slice(&m),
                Err(_) => break,
            }
        }
        if wr.write_all(&out).await.is_err() || wr.flush().await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}
