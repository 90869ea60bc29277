//! UDP sockets with batched IO (the relay fast path), through `quinn-udp`, which wraps
//! the system calls without `unsafe` of our own:
//!
//! * receive: `recvmmsg` fills up to [`RECV_SLOTS`] datagrams per system call, and with
//!   UDP GRO the kernel may hand over a run of equal-sized datagrams from one source in
//!   one buffer (split again here by its stride);
//! * send: a run of equal-sized datagrams from one socket to one destination (the
//!   packets of a video frame; a burst of ChannelData) leaves in one `sendmsg` with UDP
//!   GSO: the UDP/IP stack is traversed once for the whole run.
//!
//! [`FastSocket`] is a non-blocking std socket (it dereferences to it): a core reads
//! it when its poller ([`crate::poller`]) says so, never through a task of its own.
//! `quinn-udp` sets IP_MTU_DISCOVER to "probe" (DF on every packet); [`FastSocket::new`]
//! restores the kernel's default (fragment when needed), and the relay sets DF per
//! packet as DONT-FRAGMENT asks.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::ops::Deref;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};

/// Datagrams (or GRO runs) one receive call can return.
pub const RECV_SLOTS: usize = 16;
/// Room per slot: the largest UDP payload, or the largest GRO run (64 KiB).
const SLOT: usize = 65_536;
/// Largest GSO send: the kernel limits one to 64 KiB and 64 segments.
pub const GSO_MAX_BYTES: usize = 65_000;
pub const GSO_MAX_SEGMENTS: usize = 64;

/// Where one batched receive lands (1 MiB, one per core): datagrams are handled in
/// place, without a copy or an allocation per packet.
pub struct RecvBufs {
    bufs: Vec<u8>,
    meta: Vec<RecvMeta>,
    /// Slots filled by the last receive.
    filled: usize,
}

impl std::fmt::Debug for RecvBufs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBufs")
            .field("filled", &self.filled)
            .finish_non_exhaustive()
    }
}

impl RecvBufs {
    /// Room for one full receive: 1 MiB. Deliberately not `Default`, so that a
    /// `mem::take` cannot allocate one of these by the way (it once did, every turn).
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self {
            bufs: vec![0; SLOT * RECV_SLOTS],
            meta: vec![RecvMeta::default(); RECV_SLOTS],
            filled: 0,
        }
    }

    /// No room at all (nothing allocated): a placeholder while the real one is in use.
    pub fn empty() -> Self {
        Self {
            bufs: Vec::new(),
            meta: Vec::new(),
            filled: 0,
        }
    }

    /// Every datagram of the last receive with its source; a GRO run is split again
    /// by its stride.
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> + '_ {
        self.bufs
            .chunks(SLOT)
            .zip(self.meta.iter())
            .take(self.filled)
            .flat_map(|(buf, meta)| {
                let data = buf.get(..meta.len).unwrap_or_default();
                let stride = if meta.stride == 0 {
                    meta.len
                } else {
                    meta.stride
                };
                data.chunks(stride.max(1)).map(move |d| (d, meta.addr))
            })
    }
}

/// A non-blocking UDP socket with `quinn-udp`'s batching state.
#[derive(Debug)]
pub struct FastSocket {
    pub(crate) sock: UdpSocket,
    state: UdpSocketState,
}

impl Deref for FastSocket {
    type Target = UdpSocket;
    fn deref(&self) -> &UdpSocket {
        &self.sock
    }
}

#[cfg(unix)]
impl std::os::fd::AsFd for FastSocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

#[cfg(unix)]
impl std::os::fd::AsRawFd for FastSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.as_raw_fd()
    }
}

impl FastSocket {
    /// Takes `sock` (made non-blocking here).
    pub fn new(sock: UdpSocket) -> io::Result<Self> {
        sock.set_nonblocking(true)?;
        let state = UdpSocketState::new((&sock).into())?;
        let v6 = sock.local_addr()?.is_ipv6();
        // Back to the kernel's default; best effort where the OS has no such option.
        let _ = set_dont_fragment(&sock, v6, false);
        Ok(Self { sock, state })
    }

    /// Datagrams one [`FastSocket::send_run`] may carry.
    pub fn max_segments(&self) -> usize {
        // Read each time: quinn-udp turns GSO off for good when the kernel or the NIC
        // refuses a segmented send (EIO).
        self.state.max_gso_segments().clamp(1, GSO_MAX_SEGMENTS)
    }

    /// One batched receive (`recvmmsg`, with GRO runs) into `rx`, without waiting.
    /// Returns whether the socket may hold more: a receive that fills fewer slots than
    /// it could has met an empty queue, so no second system call is needed to learn
    /// that (with many allocations, most relay sockets hold one datagram when read).
    /// `WouldBlock` when there was nothing at all.
    pub fn recv_into(&self, rx: &mut RecvBufs) -> io::Result<bool> {
        rx.filled = 0;
        let mut chunks = rx.bufs.chunks_mut(SLOT);
        let mut iovs: [IoSliceMut<'_>; RECV_SLOTS] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        let n = self
            .state
            .recv((&self.sock).into(), &mut iovs, &mut rx.meta)?;
        rx.filled = n.min(RECV_SLOTS);
        Ok(n >= RECV_SLOTS)
    }

    /// Binds `local` and asks for `buffer` bytes of kernel receive and send buffer
    /// (best effort: the kernel caps them at rmem_max / wmem_max).
    pub fn bind(local: SocketAddr, buffer: usize) -> io::Result<Self> {
        let s = Self::new(UdpSocket::bind(local)?)?;
        let _ = s.state.set_recv_buffer_size((&s.sock).into(), buffer);
        let _ = s.state.set_send_buffer_size((&s.sock).into(), buffer);
        Ok(s)
    }

    /// One batched receive into `rx`, calling `f(datagram, source)` for each datagram.
    /// Returns how many slots it filled: 0 when nothing was waiting or on an error
    /// (ICMP errors surface here; they concern one peer, never the socket). Fewer than
    /// [`RECV_SLOTS`] means the socket's queue is empty now.
    pub fn recv_each(&self, rx: &mut RecvBufs, mut f: impl FnMut(&[u8], SocketAddr)) -> usize {
        loop {
            match self.recv_into(rx) {
                Ok(_) => {
                    for (d, from) in rx.datagrams() {
                        f(d, from);
                    }
                    return rx.filled;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return 0,
            }
        }
    }

    /// Receives until the socket would block, calling `f(datagram, source)` for each;
    /// the number of datagrams.
    pub fn recv_all(&self, rx: &mut RecvBufs, mut f: impl FnMut(&[u8], SocketAddr)) -> usize {
        let mut total = 0;
        while self.recv_each(rx, |d, from| {
            total += 1;
            f(d, from);
        }) > 0
        {}
        total
    }

    /// Sends `contents`, datagrams of `segment` bytes each (the last may be shorter),
    /// to `to`: one GSO send when there are several (one `sendto` each where the
    /// kernel has no GSO), without waiting. Returns how many datagrams went out; an
    /// error only when none did.
    pub fn send_run(&self, to: SocketAddr, contents: &[u8], segment: usize) -> io::Result<usize> {
        let segment = segment.max(1);
        let count = contents.len().div_ceil(segment);
        if count <= 1 {
            // A lone datagram: plain sendto, without sendmsg's control messages.
            return self.sock.send_to(contents, to).map(|_| 1);
        }
        if self.max_segments() == 1 {
            let mut sent = 0;
            for d in contents.chunks(segment) {
                match self.sock.send_to(d, to) {
                    Ok(_) => sent += 1,
                    Err(e) if sent == 0 => return Err(e),
                    Err(_) => break,
                }
            }
            return Ok(sent);
        }
        let t = Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: Some(segment),
            src_ip: None,
        };
        self.state.try_send((&self.sock).into(), &t).map(|()| count)
    }
}

/// Sets or clears "don't fragment" (IP_MTU_DISCOVER / IPV6_MTU_DISCOVER = DO) on a
/// relay socket (RFC 8656 §14.1, DONT-FRAGMENT). Clearing restores Linux's default
/// (WANT), under which the kernel fragments datagrams larger than the path MTU.
#[cfg(target_os = "linux")]
pub fn set_dont_fragment(sock: impl std::os::fd::AsFd, v6: bool, on: bool) -> io::Result<()> {
    use rustix::net::sockopt::{self, Ipv4PathMtuDiscovery as V4, Ipv6PathMtuDiscovery as V6};
    let r = if v6 {
        sockopt::set_ipv6_mtu_discover(sock, if on { V6::DO } else { V6::WANT })
    } else {
        sockopt::set_ip_mtu_discover(sock, if on { V4::DO } else { V4::WANT })
    };
    r.map_err(io::Error::from)
}

/// Elsewhere DONT-FRAGMENT is refused (the server answers 420 to a request with it).
#[cfg(not(target_os = "linux"))]
pub fn set_dont_fragment<S>(_sock: S, _v6: bool, _on: bool) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "DONT-FRAGMENT is implemented for Linux only",
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    pub(crate) fn pair() -> (FastSocket, FastSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        (FastSocket::new(a).unwrap(), FastSocket::new(b).unwrap())
    }

    /// Receives until `want` datagrams arrived (or 5 s passed).
    pub(crate) fn receive(sock: &FastSocket, want: usize) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut rx = RecvBufs::new();
        let mut got = Vec::new();
        let until = Instant::now() + Duration::from_secs(5);
        while got.len() < want && Instant::now() < until {
            match sock.recv_into(&mut rx) {
                Ok(_) => got.extend(rx.datagrams().map(|(d, a)| (d.to_vec(), a))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[test]
    fn runs_go_out_and_come_back_as_datagrams() {
        let (a, b) = pair();
        let to = b.local_addr().unwrap();
        let mut run = Vec::new();
        for i in 0..10u8 {
            run.extend_from_slice(&[i; 100]);
        }
        // A shorter last one.
        run.extend_from_slice(&[10; 40]);
        a.send_run(to, &run, 100).unwrap();
        a.send_run(to, b"single", 6).unwrap();
        let got = receive(&b, 12);
        assert_eq!(got.len(), 12);
        assert!(got.iter().all(|(_, from)| *from == a.local_addr().unwrap()));
        for (i, (d, _)) in got.iter().take(10).enumerate() {
            assert_eq!(d, &vec![i as u8; 100]);
        }
        assert_eq!(got[10].0, vec![10; 40]);
        assert_eq!(got[11].0, b"single");
    }

    /// A receive that fills every slot says the socket may hold more; one that does
    /// not, that it is drained; an empty socket is WouldBlock.
    #[test]
    fn a_full_receive_asks_for_another() {
        let (a, b) = pair();
        let to = b.local_addr().unwrap();
        for i in 0..(RECV_SLOTS + 3) {
            // Distinct sizes: no GRO run merges them.
            a.send_to(&vec![1u8; 10 + i], to).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        let mut rx = RecvBufs::new();
        assert!(b.recv_into(&mut rx).unwrap());
        let n = rx.datagrams().count();
        assert!(n >= RECV_SLOTS, "{n}");
        let mut total = n;
        while total < RECV_SLOTS + 3 {
            let more = b.recv_into(&mut rx).unwrap();
            total += rx.datagrams().count();
            if !more {
                break;
            }
        }
        assert_eq!(total, RECV_SLOTS + 3);
        assert_eq!(
            b.recv_into(&mut rx).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn fragmentation_default_is_restored() {
        use rustix::net::sockopt::{ip_mtu_discover, Ipv4PathMtuDiscovery};
        let (a, _b) = pair();
        assert_eq!(ip_mtu_discover(&*a).unwrap(), Ipv4PathMtuDiscovery::WANT);
    }
}
