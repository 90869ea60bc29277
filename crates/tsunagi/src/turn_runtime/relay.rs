//! Relay sockets: the [`RelayBinder`] the core hands to the sans-IO server.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};
use tsunagi_turn::{BindError, BindRequest, Family, PortRequest, RelayBinder};

use super::batch::FastSocket;
use super::io::{relay_reader, set_dont_fragment, udp_socket};
use super::{Counters, PeerInput};

/// Random ports tried before scanning the range.
const RANDOM_TRIES: usize = 32;

/// One open relay socket and the task that reads it.
#[derive(Debug)]
struct RelaySocket {
    socket: Arc<FastSocket>,
    reader: JoinHandle<()>,
    /// Whether IP_MTU_DISCOVER=DO is currently set.
    dont_fragment: bool,
}

impl Drop for RelaySocket {
    fn drop(&mut self) {
        // The reader holds the other reference to the socket; aborting it closes the
        // socket and frees the port as soon as the runtime drops the task (a scheduler
        // tick later). Until then the port is "in use" and `bind` picks another.
        self.reader.abort();
    }
}

/// Relay addresses, the port range, and every open relay socket.
#[derive(Debug)]
pub(crate) struct RelayPool {
    v4: Vec<IpAddr>,
    v6: Vec<IpAddr>,
    /// Round-robin position among addresses of one family.
    next_v4: usize,
    next_v6: usize,
    min_port: u16,
    max_port: u16,
    sockets: HashMap<SocketAddr, RelaySocket>,
    peer_tx: mpsc::Sender<PeerInput>,
    counters: Arc<Counters>,
    /// Relay ports must be hard to guess (RFC 8656 §7.2): a CSPRNG.
    rng: StdRng,
}

impl RelayPool {
    pub(crate) fn new(
        ips: &[IpAddr],
        min_port: u16,
        max_port: u16,
        peer_tx: mpsc::Sender<PeerInput>,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            v4: ips.iter().copied().filter(IpAddr::is_ipv4).collect(),
            v6: ips.iter().copied().filter(IpAddr::is_ipv6).collect(),
            next_v4: 0,
            next_v6: 0,
            min_port,
            max_port,
            sockets: HashMap::new(),
            peer_tx,
            counters,
            rng: StdRng::from_entropy(),
        }
    }

    /// Number of open relay sockets (reserved odd ports included).
    pub(crate) fn len(&self) -> usize {
        self.sockets.len()
    }

    /// Whether `addr` is an open relay socket of this pool (never true for an
    /// unspecified address).
    pub(crate) fn is_open(&self, addr: SocketAddr) -> bool {
        !addr.ip().is_unspecified() && self.sockets.contains_key(&addr)
    }

    /// Closes every relay socket.
    pub(crate) fn release_all(&mut self) {
        self.sockets.clear();
    }

    fn pick_ip(&mut self, family: Family) -> Option<IpAddr> {
        let (ips, next) = match family {
            Family::V4 => (&self.v4, &mut self.next_v4),
            Family::V6 => (&self.v6, &mut self.next_v6),
        };
        if ips.is_empty() {
            return None;
        }
        let ip = ips[*next % ips.len()];
        *next = next.wrapping_add(1);
        Some(ip)
    }

    /// Opens the relay socket at `addr` and starts its reader.
    fn open(&mut self, addr: SocketAddr, dont_fragment: bool) -> io::Result<()> {
        let std_sock = udp_socket(addr)?;
        let socket = Arc::new(FastSocket::new(UdpSocket::from_std(std_sock)?)?);
        let mut df = false;
        if dont_fragment {
            match set_dont_fragment(&socket, addr.is_ipv6(), true) {
                Ok(()) => df = true,
                Err(e) => debug!(relay = %addr, error = %e, "cannot set don't-fragment"),
            }
        }
        let reader = tokio::spawn(relay_reader(
            socket.clone(),
            addr,
            self.peer_tx.clone(),
            self.counters.clone(),
        ));
        self.sockets.insert(
            addr,
            RelaySocket {
                socket,
                reader,
                dont_fragment: df,
            },
        );
        Ok(())
    }

    /// Tries to bind `port` (and `port + 1` for a pair). `Ok(false)` means "in use, try
    /// another"; `Err` means no port will work.
    fn try_port(&mut self, ip: IpAddr, port: u16, pair: bool, df: bool) -> Result<bool, BindError> {
        let a = SocketAddr::new(ip, port);
        let b = SocketAddr::new(ip, port.wrapping_add(1));
        if self.sockets.contains_key(&a) || (pair && self.sockets.contains_key(&b)) {
            return Ok(false);
        }
        if let Err(e) = self.open(a, df) {
            return self.bind_failed(a, e);
        }
        if pair {
            if let Err(e) = self.open(b, false) {
                self.sockets.remove(&a);
                return self.bind_failed(b, e);
            }
        }
        Ok(true)
    }

    fn bind_failed(&self, addr: SocketAddr, e: io::Error) -> Result<bool, BindError> {
        match e.kind() {
            // Taken by another process (or a socket of ours still closing); privileged.
            io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied => Ok(false),
            _ => {
                warn!(relay = %addr, error = %e, "cannot open a relay socket");
                Counters::inc(&self.counters.relay_bind_errors);
                Err(BindError::Exhausted)
            }
        }
    }

    /// Binds a port of the range that satisfies `req`: random candidates first, then
    /// a scan from a random start, so that a nearly full range still finds its last
    /// free port.
    fn bind_in_range(&mut self, ip: IpAddr, req: BindRequest) -> Result<SocketAddr, BindError> {
        let (even, pair) = match req.port {
            PortRequest::Any => (false, false),
            PortRequest::Even => (true, false),
            PortRequest::EvenReserveNext => (true, true),
        };
        // Candidate ports as indexes 0..count into the range.
        let (first, step) = if even {
            (self.min_port.saturating_add(self.min_port % 2), 2u32)
        } else {
            (self.min_port, 1u32)
        };
        let last = if pair {
            self.max_port.saturating_sub(1)
        } else {
            self.max_port
        };
        if first > last || (even && first % 2 == 1) {
            return Err(BindError::Exhausted);
        }
        let count = (u32::from(last) - u32::from(first)) / step + 1;
        let port_at = |i: u32| (u32::from(first) + i * step) as u16;
        for _ in 0..RANDOM_TRIES.min(count as usize) {
            let p = port_at(self.rng.gen_range(0..count));
            if self.try_port(ip, p, pair, req.dont_fragment)? {
                return Ok(SocketAddr::new(ip, p));
            }
        }
        let start = self.rng.gen_range(0..count);
        for k in 0..count {
            let p = port_at((start + k) % count);
            if self.try_port(ip, p, pair, req.dont_fragment)? {
                return Ok(SocketAddr::new(ip, p));
            }
        }
        Err(BindError::Exhausted)
    }

    /// Sends one datagram to a peer from the relay socket at `relay`, setting or
    /// clearing don't-fragment first if this packet needs the other setting.
    pub(crate) fn send(
        &mut self,
        relay: SocketAddr,
        peer: SocketAddr,
        dont_fragment: bool,
        payload: &[u8],
    ) -> io::Result<()> {
        self.send_run(relay, peer, dont_fragment, payload, payload.len())
    }

    /// How many datagrams one [`RelayPool::send_run`] from `relay` may carry.
    pub(crate) fn max_segments(&self, relay: SocketAddr) -> usize {
        self.sockets
            .get(&relay)
            .map_or(1, |s| s.socket.max_segments())
    }

    /// Sends a run of datagrams of `segment` bytes each (see [`FastSocket::send_run`]).
    pub(crate) fn send_run(
        &mut self,
        relay: SocketAddr,
        peer: SocketAddr,
        dont_fragment: bool,
        payload: &[u8],
        segment: usize,
    ) -> io::Result<()> {
        let Some(s) = self.sockets.get_mut(&relay) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "relay socket already closed",
            ));
        };
        if s.dont_fragment != dont_fragment {
            match set_dont_fragment(&s.socket, relay.is_ipv6(), dont_fragment) {
                Ok(()) => s.dont_fragment = dont_fragment,
                // Sent anyway: DF is best effort where the OS lacks it.
                Err(e) => debug!(%relay, error = %e, "cannot change don't-fragment"),
            }
        }
        s.socket.send_run(peer, payload, segment)
    }
}

impl RelayBinder for RelayPool {
    fn bind(&mut self, req: BindRequest) -> Result<SocketAddr, BindError> {
        let ip = self
            .pick_ip(req.family)
            .ok_or(BindError::FamilyUnsupported)?;
        let r = self.bind_in_range(ip, req);
        if r.is_err() {
            Counters::inc(&self.counters.relay_exhausted);
        }
        r
    }

    fn release(&mut self, relay: SocketAddr) {
        self.sockets.remove(&relay);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn pool(min: u16, max: u16) -> (RelayPool, mpsc::Receiver<PeerInput>) {
        let (tx, rx) = mpsc::channel(16);
        (
            RelayPool::new(&[LO], min, max, tx, Arc::new(Counters::default())),
            rx,
        )
    }

    /// A random even base for a range of `len` ports in 10000..20000.
    fn base(len: u16) -> u16 {
        rand::thread_rng().gen_range(5_000..10_000 - len) * 2
    }

    fn req(port: PortRequest) -> BindRequest {
        BindRequest {
            family: Family::V4,
            port,
            dont_fragment: false,
        }
    }

    #[tokio::test]
    async fn binds_within_the_range_until_exhausted() {
        let min = base(4);
        let (mut p, _rx) = pool(min, min + 3);
        let mut got = Vec::new();
        while let Ok(a) = p.bind(req(PortRequest::Any)) {
            assert!((min..=min + 3).contains(&a.port()), "{a}");
            assert!(!got.contains(&a));
            got.push(a);
        }
        // Another process (a parallel test) may hold some of the four.
        assert!(!got.is_empty() && got.len() <= 4);
        assert_eq!(p.bind(req(PortRequest::Any)), Err(BindError::Exhausted));
        p.release(got[0]);
        // The port is free once the aborted reader has been dropped, a moment later.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(p.bind(req(PortRequest::Any)).unwrap().port(), got[0].port());
        assert_eq!(
            p.bind(BindRequest {
                family: Family::V6,
                ..req(PortRequest::Any)
            }),
            Err(BindError::FamilyUnsupported)
        );
    }

    #[tokio::test]
    async fn even_ports_and_reserved_pairs() {
        let min = base(8) + 1; // odd start: the first even port is min + 1
        let (mut p, _rx) = pool(min, min + 7);
        let a = p.bind(req(PortRequest::Even)).unwrap();
        assert_eq!(a.port() % 2, 0);
        let b = p.bind(req(PortRequest::EvenReserveNext)).unwrap();
        assert_eq!(b.port() % 2, 0);
        assert!(b.port() < min + 7, "the odd port must fit in the range");
        // Both of the pair are open.
        let odd = SocketAddr::new(LO, b.port() + 1);
        assert!(p.sockets.contains_key(&odd));
        assert!(std::net::UdpSocket::bind(odd).is_err());
        p.release(odd);
        assert!(!p.sockets.contains_key(&odd));
        // A range with no even port that has room for its pair.
        let (mut q, _rx) = pool(min + 6, min + 6);
        assert_eq!(
            q.bind(req(PortRequest::EvenReserveNext)),
            Err(BindError::Exhausted)
        );
    }

    #[tokio::test]
    async fn delivers_datagrams_and_sends() {
        let min = base(16);
        let (mut p, mut rx) = pool(min, min + 15);
        let relay = p.bind(req(PortRequest::Any)).unwrap();
        let peer = std::net::UdpSocket::bind((LO, 0)).unwrap();
        peer.send_to(b"ping", relay).unwrap();
        let got = rx.recv().await.unwrap();
        assert_eq!(
            (got.relay, got.peer, &got.data[..]),
            (relay, peer.local_addr().unwrap(), &b"ping"[..])
        );
        p.send(relay, peer.local_addr().unwrap(), true, b"pong")
            .unwrap();
        let mut buf = [0u8; 8];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"pong"[..], relay));
        #[cfg(target_os = "linux")]
        {
            use rustix::net::sockopt::{ip_mtu_discover, Ipv4PathMtuDiscovery};
            let s = &p.sockets[&relay].socket;
            assert_eq!(ip_mtu_discover(&**s).unwrap(), Ipv4PathMtuDiscovery::DO);
            p.send(relay, peer.local_addr().unwrap(), false, b"x")
                .unwrap();
            let s = &p.sockets[&relay].socket;
            assert_eq!(ip_mtu_discover(&**s).unwrap(), Ipv4PathMtuDiscovery::WANT);
        }
        // A send to an address family the socket cannot reach is an error, not a panic.
        assert!(p
            .send(relay, "[::1]:9".parse().unwrap(), false, b"x")
            .is_err());
        p.release(relay);
        assert!(p
            .send(relay, peer.local_addr().unwrap(), false, b"x")
            .is_err());
    }
}
