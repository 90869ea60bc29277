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
//! [`FastSocket`] is a non-blocking std socket (it dereferences to it): the core reads
//! it when its poller ([`super::poller`]) says so, never through a task of its own.
//! `quinn-udp` sets IP_MTU_DISCOVER to "probe" (DF on every packet); [`FastSocket::new`]
//! restores the kernel's default (fragment when needed), and the relay sets DF per
//! packet as DONT-FRAGMENT asks.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::ops::Deref;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};

use super::io::set_dont_fragment;

/// Datagrams (or GRO runs) one receive call can return.
pub(crate) const RECV_SLOTS: usize = 16;
/// Room per slot: the largest UDP payload, or the largest GRO run (64 KiB).
const SLOT: usize = 65_536;
/// Largest GSO send: the kernel limits one to 64 KiB and 64 segments.
pub(crate) const GSO_MAX_BYTES: usize = 65_000;
pub(crate) const GSO_MAX_SEGMENTS: usize = 64;

/// Where one batched receive lands (1 MiB, one per core): datagrams are handled in
/// place, without a copy or an allocation per packet.
pub(crate) struct RecvBufs {
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
    pub(crate) fn new() -> Self {
        Self {
            bufs: vec![0; SLOT * RECV_SLOTS],
            meta: vec![RecvMeta::default(); RECV_SLOTS],
            filled: 0,
        }
    }

    /// No room at all (nothing allocated): a placeholder while the real one is in use.
    pub(crate) fn empty() -> Self {
        Self {
            bufs: Vec::new(),
            meta: Vec::new(),
            filled: 0,
        }
    }

    /// Every datagram of the last receive with its source; a GRO run is split again
    /// by its stride.
    pub(crate) fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> + '_ {
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
pub(crate) struct FastSocket {
    sock: UdpSocket,
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
    pub(crate) fn new(sock: UdpSocket) -> io::Result<Self> {
        sock.set_nonblocking(true)?;
        let state = UdpSocketState::new((&sock).into())?;
        let v6 = sock.local_addr()?.is_ipv6();
        // Back to the kernel's default; best effort where the OS has no such option.
        let _ = set_dont_fragment(&sock, v6, false);
        Ok(Self { sock, state })
    }

    /// Datagrams one [`FastSocket::send_run`] may carry.
    pub(crate) fn max_segments(&self) -> usize {
        // Read each time: quinn-udp turns GSO off for good when the kernel or the NIC
        // refuses a segmented send (EIO).
        self.state.max_gso_segments().clamp(1, GSO_MAX_SEGMENTS)
    }

    /// One batched receive (`recvmmsg`, with GRO runs) into `rx`, without waiting.
    /// Returns whether the socket may hold more: a receive that fills fewer slots than
    /// it could has met an empty queue, so no second system call is needed to learn
    /// that (with many allocations, most relay sockets hold one datagram when read).
    /// `WouldBlock` when there was nothing at all.
    pub(crate) fn recv_into(&self, rx: &mut RecvBufs) -> io::Result<bool> {
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

    /// Sends `contents`, datagrams of `segment` bytes each (the last may be shorter),
    /// to `to`: one GSO send when there are several, without waiting.
    pub(crate) fn send_run(
        &self,
        to: SocketAddr,
        contents: &[u8],
        segment: usize,
    ) -> io::Result<()> {
        let several = contents.len() > segment;
        if !several {
            // A lone datagram: plain sendto, without sendmsg's control messages.
            return self.sock.send_to(contents, to).map(|_| ());
        }
        if self.max_segments() == 1 {
            for d in contents.chunks(segment.max(1)) {
                self.sock.send_to(d, to)?;
            }
            return Ok(());
        }
        let t = Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: Some(segment),
            src_ip: None,
        };
        self.state.try_send((&self.sock).into(), &t)
    }
}

/// Most datagrams one [`MultiSend::send`] hands to the kernel at once.
pub(crate) const MULTI_SEND_MAX: usize = 64;

/// Lone datagrams from one socket to different destinations (responses to many
/// clients, relayed packets for many clients), gathered until the end of a batch and
/// sent with one `sendmmsg`: one system call instead of one per datagram. The buffers
/// keep their capacity: no allocation per packet.
#[derive(Debug, Default)]
pub(crate) struct MultiSend {
    /// Destination and end offset in `bytes` of each datagram.
    entries: Vec<(SocketAddr, usize)>,
    bytes: Vec<u8>,
}

impl MultiSend {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn push(&mut self, to: SocketAddr, payload: &[u8]) {
        self.bytes.extend_from_slice(payload);
        self.entries.push((to, self.bytes.len()));
    }

    /// Sends every datagram from `sock` and empties the batch. `failed` is called for
    /// each datagram that was not sent, with the error: a datagram the kernel refuses
    /// (EMSGSIZE, ENETUNREACH, ...) is skipped and the rest still go; a full socket
    /// buffer (WouldBlock) drops the rest of the batch (UDP semantics).
    pub(crate) fn send(
        &mut self,
        sock: &FastSocket,
        mut failed: impl FnMut(io::Error, SocketAddr),
    ) {
        let mut start = 0;
        let mut i = 0;
        while i < self.entries.len() {
            let end = (i + MULTI_SEND_MAX).min(self.entries.len());
            match self.send_some(sock, start, i, end) {
                Ok(n) => {
                    let n = n.max(1).min(end - i);
                    start = self.entries.get(i + n - 1).map_or(start, |e| e.1);
                    i += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    for &(to, _) in self.entries.get(i..).unwrap_or_default() {
                        failed(io::ErrorKind::WouldBlock.into(), to);
                    }
                    break;
                }
                Err(e) => {
                    // The first datagram of this call was refused: skip it.
                    if let Some(&(to, e_end)) = self.entries.get(i) {
                        failed(e, to);
                        start = e_end;
                    }
                    i += 1;
                }
            }
        }
        self.entries.clear();
        self.bytes.clear();
    }

    /// Empties the batch without sending (its socket is gone).
    pub(crate) fn send_none(&mut self) {
        self.entries.clear();
        self.bytes.clear();
    }

    /// `sendmmsg` of entries `i..end`, whose bytes start at `start`; the number sent.
    #[cfg(target_os = "linux")]
    fn send_some(
        &self,
        sock: &FastSocket,
        start: usize,
        i: usize,
        end: usize,
    ) -> io::Result<usize> {
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
        sendmmsg(&sock.sock, &mut msgs, SendFlags::DONTWAIT).map_err(io::Error::from)
    }

    /// Elsewhere: one `sendto` per datagram.
    #[cfg(not(target_os = "linux"))]
    fn send_some(
        &self,
        sock: &FastSocket,
        start: usize,
        i: usize,
        end: usize,
    ) -> io::Result<usize> {
        let (to, e) = self
            .entries
            .get(i)
            .copied()
            .ok_or(io::ErrorKind::InvalidInput)?;
        let _ = end;
        sock.send_to(self.bytes.get(start..e).unwrap_or_default(), to)?;
        Ok(1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn pair() -> (FastSocket, FastSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        (FastSocket::new(a).unwrap(), FastSocket::new(b).unwrap())
    }

    /// Receives until `want` datagrams arrived (or 5 s passed).
    fn receive(sock: &FastSocket, want: usize) -> Vec<(Vec<u8>, SocketAddr)> {
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

    #[test]
    fn multi_send_skips_a_refused_datagram_and_sends_the_rest() {
        let (a, b) = pair();
        let c = FastSocket::new(UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
        let (to_b, to_c) = (b.local_addr().unwrap(), c.local_addr().unwrap());
        let mut m = MultiSend::default();
        m.push(to_b, b"one");
        // An IPv6 destination from an IPv4 socket: refused by the kernel.
        m.push("[::1]:9".parse().unwrap(), b"never");
        m.push(to_c, b"two");
        for i in 0..100u8 {
            m.push(to_b, &[i; 3]);
        }
        let mut failed = Vec::new();
        m.send(&a, |e, to| failed.push((e.kind(), to)));
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(m.is_empty());
        assert_eq!(receive(&c, 1)[0].0, b"two");
        let got = receive(&b, 101);
        assert_eq!(got[0].0, b"one");
        assert_eq!(got[100].0, vec![99u8; 3]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn fragmentation_default_is_restored() {
        use rustix::net::sockopt::{ip_mtu_discover, Ipv4PathMtuDiscovery};
        let (a, _b) = pair();
        assert_eq!(ip_mtu_discover(&*a).unwrap(), Ipv4PathMtuDiscovery::WANT);
    }
}
