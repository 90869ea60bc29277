//! Relay sockets: the [`RelayBinder`] the core hands to the sans-IO server.
//!
//! Each open relay socket is registered with the core's poller under a token that
//! names its slot and the slot's generation, so that a readiness event of a socket
//! closed in the meantime never reaches the socket that took its slot.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, warn};
use tsunagi_turn::{BindError, BindRequest, Family, PortRequest, RelayBinder};

use super::io::udp_socket;
use super::Counters;
use tsunagi_net::set_dont_fragment;
use tsunagi_net::FastSocket;
use tsunagi_net::{Registry, Token};

/// Random ports tried before scanning the range.
const RANDOM_TRIES: usize = 32;

/// Tokens with this bit set are the core's listeners, never relay sockets.
pub(crate) const LISTENER_TOKEN: usize = 1 << 63;

/// One open relay socket.
#[derive(Debug)]
struct RelaySocket {
    addr: SocketAddr,
    socket: FastSocket,
    /// Whether IP_MTU_DISCOVER=DO is currently set.
    dont_fragment: bool,
}

/// A place for a relay socket; `generation` changes each time the slot is emptied.
#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    socket: Option<RelaySocket>,
}

fn token(slot: usize, generation: u32) -> Token {
    Token(((generation as usize & 0x7fff_ffff) << 32) | (slot & 0xffff_ffff))
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
    /// Slot of each open relay socket.
    by_addr: HashMap<SocketAddr, usize>,
    slots: Vec<Slot>,
    /// Empty slots, reused before the table grows (it never holds more slots than
    /// the most sockets ever open at once).
    free: Vec<usize>,
    registry: Registry,
    counters: Arc<Counters>,
    /// Relay ports must be hard to guess (RFC 8656 §7.2): a CSPRNG.
    rng: StdRng,
}

impl RelayPool {
    pub(crate) fn new(
        ips: &[IpAddr],
        min_port: u16,
        max_port: u16,
        registry: Registry,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            v4: ips.iter().copied().filter(IpAddr::is_ipv4).collect(),
            v6: ips.iter().copied().filter(IpAddr::is_ipv6).collect(),
            next_v4: 0,
            next_v6: 0,
            min_port,
            max_port,
            by_addr: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            registry,
            counters,
            rng: StdRng::from_os_rng(),
        }
    }

    /// Number of open relay sockets (reserved odd ports included).
    pub(crate) fn len(&self) -> usize {
        self.by_addr.len()
    }

    /// Whether `addr` is an open relay socket of this pool (never true for an
    /// unspecified address).
    pub(crate) fn is_open(&self, addr: SocketAddr) -> bool {
        !addr.ip().is_unspecified() && self.by_addr.contains_key(&addr)
    }

    /// The relay socket a readiness event names, if it is still open.
    pub(crate) fn by_token(&self, t: Token) -> Option<(SocketAddr, &FastSocket)> {
        if t.0 & LISTENER_TOKEN != 0 {
            return None;
        }
        let slot = self.slots.get(t.0 & 0xffff_ffff)?;
        let s = slot.socket.as_ref()?;
        (token(t.0 & 0xffff_ffff, slot.generation) == t).then_some((s.addr, &s.socket))
    }

    /// Closes every relay socket.
    pub(crate) fn release_all(&mut self) {
        let open: Vec<SocketAddr> = self.by_addr.keys().copied().collect();
        for a in open {
            self.close(a);
        }
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

    /// Opens the relay socket at `addr` and registers it with the poller.
    fn open(&mut self, addr: SocketAddr, dont_fragment: bool) -> io::Result<()> {
        let socket = FastSocket::new(udp_socket(addr)?)?;
        let mut df = false;
        if dont_fragment {
            match set_dont_fragment(&*socket, addr.is_ipv6(), true) {
                Ok(()) => df = true,
                Err(e) => debug!(relay = %addr, error = %e, "cannot set don't-fragment"),
            }
        }
        let slot = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                self.slots.len() - 1
            }
        };
        let generation = self.slots.get(slot).map_or(0, |s| s.generation);
        if let Err(e) = self.registry.register(&*socket, token(slot, generation)) {
            self.free.push(slot);
            return Err(e);
        }
        if let Some(s) = self.slots.get_mut(slot) {
            s.socket = Some(RelaySocket {
                addr,
                socket,
                dont_fragment: df,
            });
        }
        self.by_addr.insert(addr, slot);
        Ok(())
    }

    /// Closes the relay socket at `addr` (its port is free at once).
    fn close(&mut self, addr: SocketAddr) {
        let Some(slot) = self.by_addr.remove(&addr) else {
            return;
        };
        if let Some(s) = self.slots.get_mut(slot) {
            if let Some(r) = s.socket.take() {
                let _ = self.registry.deregister(&*r.socket);
            }
            s.generation = s.generation.wrapping_add(1);
            self.free.push(slot);
        }
    }

    fn get_mut(&mut self, addr: SocketAddr) -> Option<&mut RelaySocket> {
        let slot = *self.by_addr.get(&addr)?;
        self.slots.get_mut(slot)?.socket.as_mut()
    }

    /// Tries to bind `port` (and `port + 1` for a pair). `Ok(false)` means "in use, try
    /// another"; `Err` means no port will work.
    fn try_port(&mut self, ip: IpAddr, port: u16, pair: bool, df: bool) -> Result<bool, BindError> {
        let a = SocketAddr::new(ip, port);
        let b = SocketAddr::new(ip, port.wrapping_add(1));
        if self.by_addr.contains_key(&a) || (pair && self.by_addr.contains_key(&b)) {
            return Ok(false);
        }
        if let Err(e) = self.open(a, df) {
            return self.bind_failed(a, e);
        }
        if pair {
            if let Err(e) = self.open(b, false) {
                self.close(a);
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
            let p = port_at(self.rng.random_range(0..count));
            if self.try_port(ip, p, pair, req.dont_fragment)? {
                return Ok(SocketAddr::new(ip, p));
            }
        }
        let start = self.rng.random_range(0..count);
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
        self.by_addr
            .get(&relay)
            .and_then(|&i| self.slots.get(i)?.socket.as_ref())
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
        let Some(s) = self.get_mut(relay) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "relay socket already closed",
            ));
        };
        if s.dont_fragment != dont_fragment {
            match set_dont_fragment(&*s.socket, relay.is_ipv6(), dont_fragment) {
                Ok(()) => s.dont_fragment = dont_fragment,
                // Sent anyway: DF is best effort where the OS lacks it.
                Err(e) => debug!(%relay, error = %e, "cannot change don't-fragment"),
            }
        }
        s.socket.send_run(peer, payload, segment).map(|_| ())
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
        self.close(relay);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;
    use tsunagi_net::Poller;
    use tsunagi_net::RecvBufs;

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn pool(min: u16, max: u16) -> (RelayPool, Poller) {
        let poll = Poller::new().unwrap();
        let reg = poll.registry().unwrap();
        (
            RelayPool::new(&[LO], min, max, reg, Arc::new(Counters::default())),
            poll,
        )
    }

    /// A random even base for a range of `len` ports in 10000..20000.
    fn base(len: u16) -> u16 {
        rand::rng().random_range(5_000..10_000 - len) * 2
    }

    fn req(port: PortRequest) -> BindRequest {
        BindRequest {
            family: Family::V4,
            port,
            dont_fragment: false,
        }
    }

    #[test]
    fn binds_within_the_range_until_exhausted() {
        let min = base(4);
        let (mut p, _poll) = pool(min, min + 3);
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
        // The port is free at once: the socket is closed on release.
        assert_eq!(p.bind(req(PortRequest::Any)).unwrap().port(), got[0].port());
        assert_eq!(
            p.bind(BindRequest {
                family: Family::V6,
                ..req(PortRequest::Any)
            }),
            Err(BindError::FamilyUnsupported)
        );
        // Slots are reused: no more than were ever open at once.
        assert_eq!(p.slots.len(), got.len());
    }

    #[test]
    fn even_ports_and_reserved_pairs() {
        let min = base(8) + 1; // odd start: the first even port is min + 1
        let (mut p, _poll) = pool(min, min + 7);
        let a = p.bind(req(PortRequest::Even)).unwrap();
        assert_eq!(a.port() % 2, 0);
        let b = p.bind(req(PortRequest::EvenReserveNext)).unwrap();
        assert_eq!(b.port() % 2, 0);
        assert!(b.port() < min + 7, "the odd port must fit in the range");
        // Both of the pair are open.
        let odd = SocketAddr::new(LO, b.port() + 1);
        assert!(p.is_open(odd));
        assert!(std::net::UdpSocket::bind(odd).is_err());
        p.release(odd);
        assert!(!p.is_open(odd));
        // A range with no even port that has room for its pair.
        let (mut q, _poll) = pool(min + 6, min + 6);
        assert_eq!(
            q.bind(req(PortRequest::EvenReserveNext)),
            Err(BindError::Exhausted)
        );
    }

    /// The tokens of relay sockets that became readable.
    fn ready(poll: &mut Poller) -> Vec<Token> {
        let mut out = Vec::new();
        poll.wait(&mut out, Some(Duration::from_secs(5))).unwrap();
        out
    }

    #[test]
    fn delivers_datagrams_and_sends() {
        let min = base(16);
        let (mut p, mut poll) = pool(min, min + 15);
        let relay = p.bind(req(PortRequest::Any)).unwrap();
        let peer = std::net::UdpSocket::bind((LO, 0)).unwrap();
        peer.send_to(b"ping", relay).unwrap();
        let tokens = ready(&mut poll);
        assert_eq!(tokens.len(), 1);
        let (addr, sock) = p.by_token(tokens[0]).unwrap();
        assert_eq!(addr, relay);
        let mut rx = RecvBufs::new();
        assert!(!sock.recv_into(&mut rx).unwrap(), "drained in one receive");
        let got: Vec<_> = rx.datagrams().map(|(d, a)| (d.to_vec(), a)).collect();
        assert_eq!(got, vec![(b"ping".to_vec(), peer.local_addr().unwrap())]);
        p.send(relay, peer.local_addr().unwrap(), true, b"pong")
            .unwrap();
        let mut buf = [0u8; 8];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"pong"[..], relay));
        #[cfg(target_os = "linux")]
        {
            use rustix::net::sockopt::{ip_mtu_discover, Ipv4PathMtuDiscovery};
            let s = &p.get_mut(relay).unwrap().socket;
            assert_eq!(ip_mtu_discover(&**s).unwrap(), Ipv4PathMtuDiscovery::DO);
            p.send(relay, peer.local_addr().unwrap(), false, b"x")
                .unwrap();
            let s = &p.get_mut(relay).unwrap().socket;
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
        // A stale token (its slot emptied, then taken by another socket) names nothing.
        assert!(p.by_token(tokens[0]).is_none());
        let again = p.bind(req(PortRequest::Any)).unwrap();
        assert!(p.by_token(tokens[0]).is_none());
        peer.send_to(b"new", again).unwrap();
        let t = ready(&mut poll);
        assert_eq!(p.by_token(t[0]).unwrap().0, again);
        // Listener tokens are never relay sockets.
        assert!(p.by_token(Token(LISTENER_TOKEN)).is_none());
    }
}
