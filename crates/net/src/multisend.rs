//! Lone datagrams from one socket to many destinations (responses to many clients,
//! relayed packets for many clients, one media packet for every subscriber), gathered
//! and sent with one `sendmmsg` per [`MULTI_SEND_MAX`]: one system call instead of one
//! per datagram. Elsewhere than Linux, one `sendto` each.

use std::io;
use std::net::SocketAddr;

use crate::udp::FastSocket;

/// Most datagrams one [`MultiSend::send`] hands to the kernel at once.
pub const MULTI_SEND_MAX: usize = 64;

/// Lone datagrams from one socket to different destinations (responses to many
/// clients, relayed packets for many clients), gathered until the end of a batch and
/// sent with one `sendmmsg`: one system call instead of one per datagram. The buffers
/// keep their capacity: no allocation per packet.
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

    pub fn push(&mut self, to: SocketAddr, payload: &[u8]) {
        self.bytes.extend_from_slice(payload);
        self.entries.push((to, self.bytes.len()));
    }

    /// Sends every datagram from `sock` and empties the batch. `failed` is called for
    /// each datagram that was not sent, with the error: a datagram the kernel refuses
    /// (EMSGSIZE, ENETUNREACH, ...) is skipped and the rest still go; a full socket
    /// buffer (WouldBlock) drops the rest of the batch (UDP semantics).
    pub fn send(&mut self, sock: &FastSocket, mut failed: impl FnMut(io::Error, SocketAddr)) {
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
    pub fn send_none(&mut self) {
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
    use crate::udp::tests::{pair, receive};
    use std::net::UdpSocket;

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
}
