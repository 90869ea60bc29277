//! The SFU's sockets: UDP on every advertised address and ICE-TCP on the same port
//! number, bound before the runtime starts (port 0 picks one free for both), and the
//! address each one is advertised as in candidates.

use std::io;
use std::net::{IpAddr, SocketAddr};

/// One bound UDP socket and the address advertised for it in SDP.
#[derive(Debug)]
pub struct BoundUdp {
    pub socket: std::net::UdpSocket,
    /// The host candidate: the bound address, or the configured external address
    /// that maps to it.
    pub advertised: SocketAddr,
}

/// One bound ICE-TCP listener and its advertised address.
#[derive(Debug)]
pub struct BoundTcp {
    pub listener: std::net::TcpListener,
    pub advertised: SocketAddr,
}

/// The SFU's sockets, bound before the runtime starts (tests bind port 0).
#[derive(Debug, Default)]
pub struct SfuSockets {
    pub udp: Vec<BoundUdp>,
    pub tcp: Vec<BoundTcp>,
}

impl SfuSockets {
    /// Binds UDP (and, with `tcp`, TCP on the same port number) on each of `ips` at
    /// `port` (0: the first UDP socket picks a free port and the rest use it).
    /// `advertise` maps a bound IP to the IP put in candidates (external address).
    ///
    /// With port 0 the kernel picks a port that is free for UDP on the first IP only;
    /// the same number may be taken for TCP (any outgoing connection's local port) or on
    /// another IP. Such a pick is let go and another tried, up to
    /// [`EPHEMERAL_ATTEMPTS`] times.
    pub fn bind(
        ips: &[IpAddr],
        port: u16,
        tcp: bool,
        advertise: impl Fn(IpAddr) -> IpAddr,
    ) -> io::Result<SfuSockets> {
        let attempts = if port == 0 { EPHEMERAL_ATTEMPTS } else { 1 };
        Self::bind_first(ips, std::iter::repeat_n(port, attempts), tcp, &advertise)
    }

    /// Tries each port of `ports` in turn; a port whose UDP or TCP bind finds the address
    /// in use gives way to the next one. Any other error, or the last one, is returned.
    fn bind_first(
        ips: &[IpAddr],
        ports: impl Iterator<Item = u16>,
        tcp: bool,
        advertise: &dyn Fn(IpAddr) -> IpAddr,
    ) -> io::Result<SfuSockets> {
        let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no port to bind");
        for port in ports {
            match Self::bind_at(ips, port, tcp, advertise) {
                Ok(s) => return Ok(s),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn bind_at(
        ips: &[IpAddr],
        port: u16,
        tcp: bool,
        advertise: &dyn Fn(IpAddr) -> IpAddr,
    ) -> io::Result<SfuSockets> {
        let mut out = SfuSockets::default();
        let mut port = port;
        for &ip in ips {
            let socket = bind_udp(SocketAddr::new(ip, port))?;
            let local = socket.local_addr()?;
            port = local.port();
            out.udp.push(BoundUdp {
                socket,
                advertised: SocketAddr::new(advertise(ip), local.port()),
            });
            if tcp {
                let listener = bind_tcp(SocketAddr::new(ip, port))?;
                let local = listener.local_addr()?;
                out.tcp.push(BoundTcp {
                    listener,
                    advertised: SocketAddr::new(advertise(ip), local.port()),
                });
            }
        }
        Ok(out)
    }
}

/// How many kernel-picked ports [`SfuSockets::bind`] tries with port 0.
const EPHEMERAL_ATTEMPTS: usize = 32;

/// The address to advertise for a socket bound on `ip`: the `external-ip` whose private
/// address is `ip`, else the first one of `ip`'s family without a private address, else
/// `ip` itself.
pub fn advertise(external: &[crate::config::ExternalIp], ip: IpAddr) -> IpAddr {
    external
        .iter()
        .find(|e| e.private == Some(ip))
        .or_else(|| {
            external
                .iter()
                .find(|e| e.private.is_none() && e.public.is_ipv4() == ip.is_ipv4())
        })
        .map_or(ip, |e| e.public)
}

fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Room for bursts of video packets (the kernel caps these at rmem_max / wmem_max).
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// A port free for UDP whose TCP number is held by a listener: the bind moves on to
    /// the next candidate instead of failing the start (a kernel-picked UDP port can
    /// collide with a TCP socket's local port the same way).
    #[test]
    fn a_port_taken_for_tcp_gives_way_to_the_next() {
        let held = std::net::TcpListener::bind((LO, 0)).unwrap();
        let taken = held.local_addr().unwrap().port();
        // Nothing holds UDP `taken` (checked, so the test shows the TCP clash).
        drop(std::net::UdpSocket::bind((LO, taken)).unwrap());
        let s = SfuSockets::bind_first(&[LO], [taken, 0].into_iter(), true, &|ip| ip).unwrap();
        let port = s.udp[0].socket.local_addr().unwrap().port();
        assert_ne!(port, taken);
        assert_eq!(s.tcp[0].listener.local_addr().unwrap().port(), port);
        assert_eq!(s.udp[0].advertised, SocketAddr::new(LO, port));
    }

    /// The only candidate in use: the error says so (the start reports it).
    #[test]
    fn a_fixed_port_in_use_is_an_error() {
        let held = std::net::TcpListener::bind((LO, 0)).unwrap();
        let taken = held.local_addr().unwrap().port();
        let e = SfuSockets::bind(&[LO], taken, true, |ip| ip).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    }

    /// Port 0 binds UDP and TCP on one number, many times over.
    #[test]
    fn port_zero_binds_udp_and_tcp_on_one_number() {
        let sets: Vec<_> = (0..50)
            .map(|_| SfuSockets::bind(&[LO], 0, true, |ip| ip).unwrap())
            .collect();
        for s in &sets {
            let port = s.udp[0].socket.local_addr().unwrap().port();
            assert_eq!(s.tcp[0].listener.local_addr().unwrap().port(), port);
        }
    }
}
