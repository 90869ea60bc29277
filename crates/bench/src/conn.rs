//! The load generator's sockets: non-blocking UDP with batched receive (recvmmsg) and
//! batched send (UDP GSO: many equal-sized datagrams to one destination in one
//! `sendmsg`), lone datagrams to many destinations in one `sendmmsg` ([`MultiSend`]),
//! all the server's own IO layer (`tsunagi-net`), and non-blocking TCP with
//! STUN/ChannelData framing.
//! Everything is driven by a `mio` poll in edge-triggered mode, so a socket is read
//! until it would block, or (UDP, [`Udp::recv_once`]) until a receive leaves slots
//! unfilled.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use tsunagi_net::FastSocket;
pub use tsunagi_net::{MultiSend, RecvBufs, MULTI_SEND_MAX, RECV_SLOTS};
use tsunagi_stun::{stream_frame_len, FrameLen};

/// Bytes a TCP connection may have waiting to be written; a sender that finds less room
/// skips its turn (TCP's backpressure).
pub const TCP_WRITE_MAX: usize = 256 * 1024;
/// Largest TCP read buffer: one maximal STUN frame plus a read's worth.
const TCP_READ_MAX: usize = 2 * 65_556;
/// Largest GSO send the generator makes (under the kernel's 64 KiB).
pub const GSO_MAX_BYTES: usize = 60_000;
/// Kernel receive and send buffer asked for on each UDP socket: bigger than the
/// default 208 KiB to ride out bursts (the kernel caps it at rmem_max / wmem_max).
const UDP_BUFFER: usize = 4 << 20;

/// Local ports of UDP clients (see [`Conn::open`]).
const CLIENT_PORTS: (u16, u16) = (40_000, 60_999);

thread_local! {
    static NEXT_PORT: std::cell::Cell<u16> = std::cell::Cell::new(
        CLIENT_PORTS.0 + (rand::random::<u16>() % (CLIENT_PORTS.1 - CLIENT_PORTS.0)),
    );
}

/// Receive buffers for one thread, reused by every socket it reads.
pub type RecvScratch = RecvBufs;

/// A UDP socket of the generator: the server's own batched socket
/// ([`tsunagi_net::FastSocket`]), registered with the generator's `mio` poll.
#[derive(Debug)]
pub struct Udp {
    sock: FastSocket,
}

impl Udp {
    /// Binds `local` (port 0 for any) non-blocking.
    pub fn bind(local: SocketAddr) -> io::Result<Self> {
        Ok(Self {
            sock: FastSocket::bind(local, UDP_BUFFER)?,
        })
    }

    /// Registers for readable (edge-triggered) with `registry` under `token`.
    pub fn register(&self, registry: &Registry, token: Token) -> io::Result<()> {
        let fd = self.sock.as_raw_fd();
        registry.register(&mut SourceFd(&fd), token, Interest::READABLE)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Datagrams one `send_batch` may carry.
    pub fn max_segments(&self) -> usize {
        self.sock.max_segments()
    }

    /// Sends `contents`, which holds datagrams of `segment` bytes each (the last may be
    /// shorter), to `to`: one GSO send when there are several and the kernel supports
    /// it, else one send per datagram. Returns how many datagrams went out.
    pub fn send_batch(&self, to: SocketAddr, contents: &[u8], segment: usize) -> io::Result<usize> {
        self.sock.send_run(to, contents, segment)
    }

    /// Lone datagrams to many destinations, in one `sendmmsg` per
    /// [`tsunagi_net::MULTI_SEND_MAX`]. Returns (sent, not sent).
    pub fn send_multi(&self, multi: &mut MultiSend) -> (usize, usize) {
        let total = multi.len();
        let mut failed = 0;
        multi.send(&self.sock, |_, _| failed += 1);
        (total - failed, failed)
    }

    /// Receives until the socket would block, calling `f(datagram, from)` for each.
    /// Returns the number of datagrams; errors other than "would block" end the loop.
    pub fn recv_all(&self, scratch: &mut RecvScratch, f: impl FnMut(&[u8], SocketAddr)) -> usize {
        self.sock.recv_all(scratch, f)
    }

    /// One batched receive (one `recvmmsg`), calling `f(datagram, from)` for each
    /// datagram. Returns how many of the [`RECV_SLOTS`] it filled: 0 when nothing was
    /// waiting (or on an error). A receive that fills fewer slots has emptied the
    /// socket's queue, so a caller that stops there needs no further read to see the
    /// next datagram: its arrival is a new edge for the (edge-triggered) poll. One that
    /// fills every slot may leave more behind.
    pub fn recv_once(&self, scratch: &mut RecvScratch, f: impl FnMut(&[u8], SocketAddr)) -> usize {
        self.sock.recv_each(scratch, f)
    }
}

/// A TCP connection with framing and a bounded write buffer.
#[derive(Debug)]
pub struct Tcp {
    pub stream: TcpStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Written bytes at the front of `wbuf`.
    wpos: usize,
    pub closed: bool,
}

impl Tcp {
    /// Connects (blocking; loopback connects at once) and switches to non-blocking.
    pub fn connect(server: SocketAddr) -> io::Result<Self> {
        let s = std::net::TcpStream::connect(server)?;
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        Ok(Self {
            stream: TcpStream::from_std(s),
            rbuf: Vec::with_capacity(16 * 1024),
            wbuf: Vec::new(),
            wpos: 0,
            closed: false,
        })
    }

    /// Room left in the write buffer.
    pub fn write_room(&self) -> usize {
        TCP_WRITE_MAX.saturating_sub(self.wbuf.len() - self.wpos)
    }

    /// Queues `data` (refused when it does not fit) and writes what the socket takes.
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        if data.len() > self.write_room() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.wbuf.extend_from_slice(data);
        self.flush()
    }

    /// Writes queued bytes until the socket would block.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.wpos < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => {
                    self.closed = true;
                    return Err(io::ErrorKind::WriteZero.into());
                }
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.closed = true;
                    return Err(e);
                }
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        } else if self.wpos > TCP_WRITE_MAX {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        Ok(())
    }

    /// Reads until the socket would block, calling `f(frame)` for each complete
    /// STUN or ChannelData frame. A stream that is not STUN closes the connection.
    pub fn recv_all(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        let mut total = 0;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => {
                    if self.rbuf.len() + n > TCP_READ_MAX {
                        self.closed = true;
                        break;
                    }
                    self.rbuf.extend_from_slice(&chunk[..n]);
                    let mut start = 0;
                    loop {
                        match stream_frame_len(&self.rbuf[start..]) {
                            FrameLen::Stun(len) | FrameLen::ChannelData(len)
                                if self.rbuf.len() - start >= len =>
                            {
                                f(&self.rbuf[start..start + len]);
                                total += 1;
                                start += len;
                            }
                            FrameLen::Invalid => {
                                self.closed = true;
                                return total;
                            }
                            _ => break,
                        }
                    }
                    self.rbuf.drain(..start);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.closed = true;
                    break;
                }
            }
        }
        total
    }
}

/// One client 5-tuple to the server: a UDP socket or a TCP connection.
#[derive(Debug)]
pub enum Conn {
    Udp { udp: Udp, server: SocketAddr },
    Tcp(Tcp),
}

impl Conn {
    pub fn open(server: SocketAddr, tcp: bool) -> io::Result<Self> {
        if tcp {
            return Ok(Conn::Tcp(Tcp::connect(server)?));
        }
        let ip: std::net::IpAddr = if server.is_ipv4() {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        };
        // Client ports go round a range rather than being the kernel's choice: the
        // kernel may hand out a port that was closed a moment ago, and a server that
        // still remembers the deleted allocation of that 5-tuple (coturn does, for a
        // while) answers the new client's Allocate with 437.
        let mut last = None;
        for _ in 0..256 {
            let port = NEXT_PORT.with(|p| {
                let port = p.get();
                p.set(if port >= CLIENT_PORTS.1 {
                    CLIENT_PORTS.0
                } else {
                    port + 1
                });
                port
            });
            match Udp::bind(SocketAddr::new(ip, port)) {
                Ok(udp) => return Ok(Conn::Udp { udp, server }),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::ErrorKind::AddrInUse.into()))
    }

    pub fn is_tcp(&self) -> bool {
        matches!(self, Conn::Tcp(_))
    }

    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        match self {
            Conn::Udp { udp, .. } => udp.register(registry, token),
            Conn::Tcp(t) => registry.register(
                &mut t.stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            ),
        }
    }

    /// Sends one message (a datagram, or a frame over TCP).
    pub fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        match self {
            Conn::Udp { udp, server } => udp.send_batch(*server, msg, msg.len()).map(|_| ()),
            Conn::Tcp(t) => t.send(msg),
        }
    }

    /// Sends `contents` made of messages of `segment` bytes each.
    pub fn send_batch(&mut self, contents: &[u8], segment: usize) -> io::Result<usize> {
        match self {
            Conn::Udp { udp, server } => udp.send_batch(*server, contents, segment),
            Conn::Tcp(t) => t
                .send(contents)
                .map(|()| contents.len().div_ceil(segment.max(1))),
        }
    }

    /// How many messages of `segment` bytes one `send_batch` may carry now.
    pub fn batch_room(&self, segment: usize) -> usize {
        match self {
            Conn::Udp { udp, .. } => udp
                .max_segments()
                .min(GSO_MAX_BYTES / segment.max(1))
                .max(1),
            Conn::Tcp(t) => t.write_room() / segment.max(1),
        }
    }

    /// Reads until the socket would block; `f` gets each message.
    pub fn recv_all(&mut self, scratch: &mut RecvScratch, mut f: impl FnMut(&[u8])) -> usize {
        match self {
            Conn::Udp { udp, .. } => udp.recv_all(scratch, |d, _| f(d)),
            Conn::Tcp(t) => {
                // A writable event means queued bytes can go out.
                let _ = t.flush();
                t.recv_all(f)
            }
        }
    }

    pub fn flush(&mut self) {
        if let Conn::Tcp(t) = self {
            let _ = t.flush();
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self, Conn::Tcp(t) if t.closed)
    }
}
