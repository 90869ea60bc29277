//! Ports for the servers that tests start, free for TCP and UDP right now, chosen at
//! random from [`FIRST`]..[`END`]: below the ephemeral range that `scripts/netns-run`
//! gives the test run (40000..=60999), so that no socket another test binds to port 0
//! or connects from can take one between this check and the server's bind (a port the
//! kernel had handed out from the ephemeral range and that the check released was
//! taken so, once: "Address already in use" in CI). Relay ranges stay in 20000..33000.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::{Mutex, PoisonError};

pub const FIRST: u16 = 33_000;
pub const END: u16 = 40_000;

fn random_below(n: u16) -> u16 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() % u64::from(n)) as u16
}

/// Ports this process has handed out: the check below releases a port for the server to
/// bind, so two calls before the server starts could pick the same one ("sfu-port 34360
/// is also the TURN listening-port", once in CI).
static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A port free for both TCP and UDP on `ip`, never one this process was given before.
pub fn free_port_on(ip: IpAddr) -> u16 {
    let mut handed = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    for _ in 0..1000 {
        let port = FIRST + random_below(END - FIRST);
        if handed.contains(&port) {
            continue;
        }
        let addr = SocketAddr::new(ip, port);
        let Ok(_tcp) = TcpListener::bind(addr) else {
            continue;
        };
        if UdpSocket::bind(addr).is_ok() {
            handed.push(port);
            return port;
        }
    }
    panic!("no port of {FIRST}..{END} free for both TCP and UDP on {ip}");
}

/// A port free for both TCP and UDP on 127.0.0.1.
pub fn free_port() -> u16 {
    free_port_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
}
