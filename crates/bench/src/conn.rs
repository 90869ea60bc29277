//! The load generator's sockets: non-blocking UDP with batched receive (recvmmsg) and
//! batched send (UDP GSO: many equal-sized datagrams to one destination in one
//! `sendmsg`) through `quinn-udp`, lone datagrams to many destinations in one
//! `sendmmsg` ([`MultiSend`]), and non-blocking TCP with STUN/ChannelData framing.
//! Everything is driven by a `mio` poll in edge-triggered mode, so a socket is read
//! until it would block, or (UDP, [`Udp::recv_once`]) until a receive leaves slots
//! unfilled.

use std::io::{self, IoSliceMut, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Registry, Token};
use quinn_udp::{RecvMeta, Transmit, UdpSocketState, BATCH_SIZE};
use tsunagi_stun::{stream_frame_len, FrameLen};

/// Room for one datagram in a receive batch (the largest UDP payload).
const RECV_BUF: usize = 65_536;
/// Datagrams (or GRO runs) one batched receive returns at most.
pub const RECV_SLOTS: usize = BATCH_SIZE;
/// Bytes a TCP connection may have waiting to be written; a sender that finds less room
/// skips its turn (TCP's backpressure).
pub const TCP_WRITE_MAX: usize = 256 * 1024;
/// Largest TCP read buffer: one maximal STUN frame plus a read's worth.
const TCP_READ_MAX: usize = 2 * 65_556;
/// Largest GSO send (the kernel limits one UDP GSO send to 64 KiB and 64 segments).
pub const GSO_MAX_BYTES: usize = 60_000;

/// Local ports of UDP clients (see [`Conn::open`]).
const CLIENT_PORTS: (u16, u16) = (40_000, 60_999);

thread_local! {
    static NEXT_PORT: std::cell::Cell<u16> = std::cell::Cell::new(
        CLIENT_PORTS.0 + (rand::random::<u16>() % (CLIENT_PORTS.1 - CLIENT_PORTS.0)),
    );
}

/// Receive buffers for one thread, reused by every socket it reads.
#[derive(Debug)]
pub struct RecvScratch {
    bufs: Vec<u8>,
    meta: Vec<RecvMeta>,
}

impl Default for RecvScratch {
    fn default() -> Self {
        Self {
            bufs: vec![0; RECV_BUF * BATCH_SIZE],
            meta: vec![RecvMeta::default(); BATCH_SIZE],
        }
    }
}

/// A UDP socket with quinn-udp's batching state.
#[derive(Debug)]
pub struct Udp {
    pub sock: UdpSocket,
    state: UdpSocketState,
    gso_segments: usize,
}

impl Udp {
    /// Binds `local` (port 0 for any) non-blocking.
    pub fn bind(local: SocketAddr) -> io::Result<Self> {
        let std = std::net::UdpSocket::bind(local)?;
        std.set_nonblocking(true)?;
        let state = UdpSocketState::new((&std).into())?;
        let gso_segments = state.max_gso_segments().max(1);
        // Bigger buffers than the default 208 KiB ride out bursts (best effort: capped
        // by net.core.rmem_max / wmem_max).
        let _ = state.set_recv_buffer_size((&std).into(), 4 << 20);
        let _ = state.set_send_buffer_size((&std).into(), 4 << 20);
        Ok(Self {
            sock: UdpSocket::from_std(std),
            state,
            gso_segments,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Datagrams one `send_batch` may carry.
    pub fn max_segments(&self) -> usize {
        self.gso_segments
    }

    /// Sends `contents`, which holds datagrams of `segment` bytes each (the last may be
    /// shorter), to `to`: one GSO send when there are several and the kernel supports
    /// it, else one send per datagram. Returns how many datagrams went out.
    pub fn send_batch(&self, to: SocketAddr, contents: &[u8], segment: usize) -> io::Result<usize> {
        let segment = segment.max(1);
        let count = contents.len().div_ceil(segment);
        if count <= 1 || self.gso_segments > 1 {
            let t = Transmit {
                destination: to,
                ecn: None,
                contents,
                segment_size: (count > 1).then_some(segment),
                src_ip: None,
            };
            self.state.try_send((&self.sock).into(), &t)?;
            return Ok(count);
        }
        let mut sent = 0;
        for chunk in contents.chunks(segment) {
            match self.sock.send_to(chunk, to) {
                Ok(_) => sent += 1,
                Err(e) if sent == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(sent)
    }

    /// Receives until the socket would block, calling `f(datagram, from)` for each.
    /// Returns the number of datagrams; errors other than "would block" end the loop.
    pub fn recv_all(
        &self,
        scratch: &mut RecvScratch,
        mut f: impl FnMut(&[u8], SocketAddr),
    ) -> usize {
        let mut total = 0;
        let mut count = |d: &[u8], from: SocketAddr| {
            f(d, from);
            total += 1;
        };
        while self.recv_once(scratch, &mut count) > 0 {}
        total
    }

    /// One batched receive (one `recvmmsg`), calling `f(datagram, from)` for each
    /// datagram. Returns how many of the [`RECV_SLOTS`] it filled: 0 when nothing was
    /// waiting (or on an error). A receive that fills fewer slots has emptied the
    /// socket's queue, so a caller that stops there needs no further read to see the
    /// next datagram: its arrival is a new edge for the (edge-triggered) poll. One that
    /// fills every slot may leave more behind.
    pub fn recv_once(
        &self,
        scratch: &mut RecvScratch,
        f: &mut impl FnMut(&[u8], SocketAddr),
    ) -> usize {
        loop {
            let mut chunks = scratch.bufs.chunks_mut(RECV_BUF);
            let mut iovs: [IoSliceMut<'_>; BATCH_SIZE] =
                std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
            let n = match self
                .state
                .recv((&self.sock).into(), &mut iovs, &mut scratch.meta)
            {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return 0,
            };
            for (iov, meta) in iovs.iter().zip(&scratch.meta).take(n) {
                let data = iov.get(..meta.len).unwrap_or_default();
                // With GRO, one buffer holds several datagrams `stride` bytes apart.
                let stride = if meta.stride == 0 {
                    meta.len
                } else {
                    meta.stride
                };
                for d in data.chunks(stride.max(1)) {
                    f(d, meta.addr);
                }
            }
            return n;
        }
    }
}

/// Most datagrams one [`MultiSend::send`] hands to the kernel in one system call.
pub const MULTI_SEND_MAX: usize = 64;

/// Lone datagrams from one socket to different destinations, gathered and sent with
/// one `sendmmsg` per [`MULTI_SEND_MAX`] on Linux (one `sendto` each elsewhere): the
/// same as the relay sends datagrams for many clients from its listener
/// (crates/tsunagi/src/turn_runtime/batch.rs `MultiSend`). The buffers keep their
/// capacity: no allocation per datagram.
#[derive(Debug, Default)]
pub struct MultiSend {
    /// Destination and end offset in `bytes` of each datagram.
    entries: Vec<(SocketAddr, usize)>,
    bytes: Vec<u8>,
}

impl MultiSend {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn push(&mut self, to: SocketAddr, datagram: &[u8]) {
        self.bytes.extend_from_slice(datagram);
        self.entries.push((to, self.bytes.len()));
    }

    /// Sends every datagram from `udp` and empties the batch. Returns (sent, not sent):
    /// a datagram the kernel refuses is skipped and the rest still go; a full socket
    /// buffer (would block) drops the rest of the batch.
    pub fn send(&mut self, udp: &Udp) -> (usize, usize) {
        let (mut sent, mut failed) = (0, 0);
        let mut start = 0;
        let mut i = 0;
        while i < self.entries.len() {
            let end = (i + MULTI_SEND_MAX).min(self.entries.len());
            match self.send_some(udp, start, i, end) {
                Ok(n) => {
                    let n = n.clamp(1, end - i);
                    start = self.entries.get(i + n - 1).map_or(start, |e| e.1);
                    i += n;
                    sent += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    failed += self.entries.len() - i;
                    break;
                }
                Err(_) => {
                    // The first datagram of this call was refused: skip it.
                    start = self.entries.get(i).map_or(start, |e| e.1);
                    i += 1;
                    failed += 1;
                }
            }
        }
        self.entries.clear();
        self.bytes.clear();
        (sent, failed)
    }

    /// `sendmmsg` of entries `i..end`, whose bytes start at `start`; the number sent.
    #[cfg(target_os = "linux")]
    fn send_some(&self, udp: &Udp, start: usize, i: usize, end: usize) -> io::Result<usize> {
        use rustix::net::addr::SocketAddrArg;
        use rustix::net::{sendmmsg, MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};
        use std::io::IoSlice;
        let entries = self.entries.get(i..end).unwrap_or_default();
        let addrs: Vec<SocketAddrAny> = entries.iter().map(|(to, _)| to.as_any()).collect();
        let mut from = start;
        let iovs: Vec<[IoSlice<'_>; 1]> = entries
            .iter()
            .map(|&(_, e)| {
                let d = self.bytes.get(from..e).unwrap_or_default();
                from = e;
                [IoSlice::new(d)]
            })
            .collect();
        let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = entries
            .iter()
            .map(|_| SendAncillaryBuffer::default())
            .collect();
        let mut msgs: Vec<MMsgHdr<'_>> = addrs
            .iter()
            .zip(iovs.iter())
            .zip(controls.iter_mut())
            .map(|((a, iov), c)| MMsgHdr::new_with_addr(a, iov, c))
            .collect();
        sendmmsg(&udp.sock, &mut msgs, SendFlags::DONTWAIT).map_err(io::Error::from)
    }

    /// Elsewhere: one `sendto` per datagram.
    #[cfg(not(target_os = "linux"))]
    fn send_some(&self, udp: &Udp, start: usize, i: usize, _end: usize) -> io::Result<usize> {
        let (to, e) = self
            .entries
            .get(i)
            .copied()
            .ok_or(io::ErrorKind::InvalidInput)?;
        udp.sock
            .send_to(self.bytes.get(start..e).unwrap_or_default(), to)?;
        Ok(1)
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
            Conn::Udp { udp, .. } => registry.register(&mut udp.sock, token, Interest::READABLE),
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
