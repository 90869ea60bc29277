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
//! Everything else about the sockets is unchanged: [`FastSocket`] dereferences to the
//! tokio `UdpSocket`. `quinn-udp` sets IP_MTU_DISCOVER to "probe" (DF on every packet);
//! [`FastSocket::new`] restores the kernel's default (fragment when needed), and the
//! relay sets DF per packet as DONT-FRAGMENT asks.

use std::cell::RefCell;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::ops::Deref;

use bytes::{Bytes, BytesMut};
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::io::set_dont_fragment;

/// Datagrams (or GRO runs) one receive call can return.
pub(crate) const RECV_SLOTS: usize = 16;
/// Room per slot: the largest UDP payload, or the largest GRO run (64 KiB).
const SLOT: usize = 65_536;
/// Receive arenas are allocated in chunks of this size.
const ARENA_CHUNK: usize = 256 * 1024;
/// Largest GSO send: the kernel limits one to 64 KiB and 64 segments.
pub(crate) const GSO_MAX_BYTES: usize = 65_000;
pub(crate) const GSO_MAX_SEGMENTS: usize = 64;

struct Scratch {
    bufs: Vec<u8>,
    meta: Vec<RecvMeta>,
    /// Received datagrams are copied here and split off as `Bytes` that share the
    /// chunk: no allocation per packet, and memory is per thread, not per socket.
    arena: BytesMut,
}

thread_local! {
    /// One receive scratch per worker thread (1 MiB), shared by every socket task that
    /// runs on it: a receive fills it and copies out before returning.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        bufs: vec![0; SLOT * RECV_SLOTS],
        meta: vec![RecvMeta::default(); RECV_SLOTS],
        arena: BytesMut::new(),
    });
}

/// A tokio UDP socket with `quinn-udp`'s batching state.
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

impl FastSocket {
    pub(crate) fn new(sock: UdpSocket) -> io::Result<Self> {
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

    /// One batched receive without waiting: calls `f(datagram, source)` for each
    /// datagram. Returns `Ok(count)` when the socket may hold more, and `WouldBlock`
    /// when it is drained — also after delivering datagrams: a `recvmmsg` that returns
    /// fewer than it could take has met an empty queue, so tokio can forget the
    /// readiness now instead of after one more system call that finds nothing (with
    /// many allocations, most relay sockets hold one datagram per wake-up).
    pub(crate) fn recv_batch(&self, mut f: impl FnMut(Bytes, SocketAddr)) -> io::Result<usize> {
        SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            let Scratch { bufs, meta, arena } = s;
            let mut count = 0;
            let r = self.sock.try_io(Interest::READABLE, || {
                let mut chunks = bufs.chunks_mut(SLOT);
                let mut iovs: [IoSliceMut<'_>; RECV_SLOTS] =
                    std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
                let n = self.state.recv((&self.sock).into(), &mut iovs, meta)?;
                for (iov, meta) in iovs.iter().zip(meta.iter()).take(n) {
                    let data = iov.get(..meta.len).unwrap_or_default();
                    let stride = if meta.stride == 0 {
                        meta.len
                    } else {
                        meta.stride
                    };
                    for d in data.chunks(stride.max(1)) {
                        if arena.capacity() < d.len() {
                            // Reclaims the chunk if every packet split from it is gone.
                            arena.reserve(ARENA_CHUNK.max(d.len()));
                        }
                        arena.extend_from_slice(d);
                        f(arena.split().freeze(), meta.addr);
                        count += 1;
                    }
                }
                if n < RECV_SLOTS {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(count)
                }
            });
            r
        })
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
            return self.sock.try_send_to(contents, to).map(|_| ());
        }
        if self.max_segments() == 1 {
            for d in contents.chunks(segment.max(1)) {
                self.sock.try_send_to(d, to)?;
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
        self.sock.try_io(Interest::WRITABLE, || {
            self.state.try_send((&self.sock).into(), &t)
        })
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
        sock.try_io(tokio::io::Interest::WRITABLE, || {
            sendmmsg(&sock.sock, &mut msgs, SendFlags::DONTWAIT).map_err(io::Error::from)
        })
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
        sock.try_send_to(self.bytes.get(start..e).unwrap_or_default(), to)?;
        Ok(1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn pair() -> (FastSocket, FastSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        (FastSocket::new(a).unwrap(), FastSocket::new(b).unwrap())
    }

    #[tokio::test]
    async fn runs_go_out_and_come_back_as_datagrams() {
        let (a, b) = pair().await;
        let to = b.local_addr().unwrap();
        let mut run = Vec::new();
        for i in 0..10u8 {
            run.extend_from_slice(&[i; 100]);
        }
        // A shorter last one.
        run.extend_from_slice(&[10; 40]);
        // tokio knows a new socket is writable once its reactor has seen it.
        a.writable().await.unwrap();
        a.send_run(to, &run, 100).unwrap();
        a.send_run(to, b"single", 6).unwrap();
        let mut got: Vec<Vec<u8>> = Vec::new();
        while got.len() < 12 {
            b.readable().await.unwrap();
            match b.recv_batch(|d, from| {
                assert_eq!(from, a.local_addr().unwrap());
                got.push(d.to_vec());
            }) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        for (i, d) in got.iter().take(10).enumerate() {
            assert_eq!(d, &vec![i as u8; 100]);
        }
        assert_eq!(got[10], vec![10; 40]);
        assert_eq!(got[11], b"single");
    }

    #[tokio::test]
    async fn multi_send_skips_a_refused_datagram_and_sends_the_rest() {
        let (a, b) = pair().await;
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (to_b, to_c) = (b.local_addr().unwrap(), c.local_addr().unwrap());
        a.writable().await.unwrap();
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
        let mut buf = [0u8; 16];
        let (n, _) = c.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"two");
        let mut got = Vec::new();
        while got.len() < 101 {
            b.readable().await.unwrap();
            let _ = b.recv_batch(|d, _| got.push(d.to_vec()));
        }
        assert_eq!(got[0], b"one");
        assert_eq!(got[100], vec![99u8; 3]);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn fragmentation_default_is_restored() {
        use rustix::net::sockopt::{ip_mtu_discover, Ipv4PathMtuDiscovery};
        let (a, _b) = pair().await;
        assert_eq!(ip_mtu_discover(&*a).unwrap(), Ipv4PathMtuDiscovery::WANT);
    }
}
