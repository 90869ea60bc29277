//! `bench forwarder`: the limit baseline, a UDP forwarder with the relay's batching and
//! no parsing, no TURN. Two shapes:
//!
//! * `--hops` (the default): receives datagrams on `--listen` and forwards each to
//!   `--to` — with `--hops 2` through a second socket of its own first, so that a
//!   packet costs two receives and two sends, as through a TURN relay (client →
//!   listener → relay socket → peer's relay socket → client). Batched receive
//!   (recvmmsg, GRO) until a socket would block, and runs of equal-sized datagrams to
//!   one destination sent as one GSO send.
//! * `--relays N`, the echo shape: N "relay" sockets on the listen IP besides the
//!   listen socket, as N TURN allocations whose peer is outside the server. A datagram
//!   from client C on the listen socket goes out unchanged from C's relay socket to
//!   `--to` (an echo peer); a datagram that arrives on relay socket k goes out from the
//!   listen socket to k's client. Each new client address takes the next relay socket
//!   round-robin, one client per socket, in a table of at most N clients (when all are
//!   taken, the socket's earlier client is replaced). Every socket is in one epoll
//!   (edge-triggered) and read as the relay reads its sockets
//!   (crates/net/src/poller.rs): one batched receive (recvmmsg) per
//!   ready socket, read again on the next turn only when that receive filled every
//!   slot. Sends: from a relay socket, a run of equal-sized datagrams of one client as
//!   one GSO send (else one `sendmsg` per datagram: one socket each); from the listen
//!   socket, a run to one client as one GSO send, and lone datagrams to different
//!   clients gathered and sent with `sendmmsg`, [`MULTI_SEND_MAX`] per call
//!   ([`MultiSend`], as the relay sends to its clients).
//!
//! * `--reflect`, the STUN shape: every datagram goes back to its source from the
//!   listen socket, as a Binding response would (runs to one client as one GSO send,
//!   lone datagrams to different clients with `sendmmsg`).
//!
//! The per-datagram work that is left is the kernel's and the client table lookup, so
//! what this forwards per CPU-second bounds what any relay of the same shape can.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use super::conn::{MultiSend, RecvScratch, Udp, GSO_MAX_BYTES, MULTI_SEND_MAX, RECV_SLOTS};
use super::{BenchError, ForwarderArgs, MAX_DURATION_SECS};

const LISTEN: Token = Token(0);
const HOP: Token = Token(1);

pub fn run(a: &ForwarderArgs) -> Result<(), BenchError> {
    if !(a.duration > 0.0 && a.duration <= MAX_DURATION_SECS) {
        return Err(BenchError(format!(
            "--duration must be in (0, {MAX_DURATION_SECS}] seconds"
        )));
    }
    if a.reflect {
        return run_reflect(a);
    }
    let Some(to) = a.to else {
        return Err(BenchError("--to is needed unless --reflect".into()));
    };
    match a.relays {
        Some(n) => run_relays(a, to, n as usize),
        None => run_hops(a, to),
    }
}

fn io_err(what: &str, e: std::io::Error) -> BenchError {
    BenchError(format!("{what}: {e}"))
}

/// `--hops 1|2`: everything to `--to`, straight or through a second socket.
fn run_hops(a: &ForwarderArgs, to: SocketAddr) -> Result<(), BenchError> {
    let io = io_err;
    let listen = Udp::bind(a.listen).map_err(|e| io("cannot bind --listen", e))?;
    let hop = Udp::bind(SocketAddr::new(a.listen.ip(), 0))
        .map_err(|e| io("cannot bind the second socket", e))?;
    let hop_addr = hop.local_addr().map_err(|e| io("local address", e))?;
    let mut poll = Poll::new().map_err(|e| io("poll", e))?;
    listen
        .register(poll.registry(), LISTEN)
        .map_err(|e| io("poll", e))?;
    hop.register(poll.registry(), HOP)
        .map_err(|e| io("poll", e))?;
    eprintln!(
        "forwarding {} -> {}{} for at most {} s",
        a.listen,
        if a.hops == 2 {
            format!("{hop_addr} -> ")
        } else {
            String::new()
        },
        to,
        a.duration
    );
    let end = Instant::now() + Duration::from_secs_f64(a.duration);
    let mut events = Events::with_capacity(16);
    let mut scratch = RecvScratch::new();
    let first = if a.hops == 2 { hop_addr } else { to };
    let (mut forwarded, mut dropped) = (0u64, 0u64);
    let mut out = Vec::with_capacity(GSO_MAX_BYTES);
    while Instant::now() < end {
        if poll
            .poll(&mut events, Some(Duration::from_millis(100)))
            .is_err()
        {
            continue;
        }
        for ev in events.iter() {
            let (from, to) = match ev.token() {
                LISTEN => (&listen, first),
                _ => (&hop, to),
            };
            // The first hop sends from the listener socket; the second from `hop`.
            // Runs of equal-sized datagrams go out as one GSO send, as in the relay.
            let mut size = 0;
            from.recv_all(&mut scratch, |d, _| {
                let full = out.len() + d.len() > GSO_MAX_BYTES
                    || out.len() / size.max(1) >= from.max_segments();
                if !out.is_empty() && (d.len() != size || full) {
                    match from.send_batch(to, &out, size) {
                        Ok(n) => forwarded += n as u64,
                        Err(_) => dropped += 1,
                    }
                    out.clear();
                }
                size = d.len();
                out.extend_from_slice(d);
            });
            if !out.is_empty() {
                match from.send_batch(to, &out, size) {
                    Ok(n) => forwarded += n as u64,
                    Err(_) => dropped += 1,
                }
                out.clear();
            }
        }
    }
    eprintln!("forwarder: {forwarded} sends, {dropped} dropped");
    Ok(())
}

/// Which relay socket serves which client address: one client per socket, at most N.
#[derive(Debug)]
struct Clients {
    by_addr: HashMap<SocketAddr, usize, ahash::RandomState>,
    of_relay: Vec<Option<SocketAddr>>,
    /// The relay socket the next new client takes.
    next: usize,
    /// Client addresses that took a relay socket.
    assigned: u64,
}

impl Clients {
    fn new(relays: usize) -> Self {
        Self {
            by_addr: HashMap::with_capacity_and_hasher(relays, ahash::RandomState::new()),
            of_relay: vec![None; relays],
            next: 0,
            assigned: 0,
        }
    }

    /// The relay socket of `client`; a new client takes the next one round-robin (and
    /// that socket's earlier client, if any, loses it).
    fn relay_of(&mut self, client: SocketAddr) -> usize {
        if let Some(&k) = self.by_addr.get(&client) {
            return k;
        }
        let k = self.next;
        self.next = (k + 1) % self.of_relay.len().max(1);
        if let Some(slot) = self.of_relay.get_mut(k) {
            if let Some(old) = slot.replace(client) {
                self.by_addr.remove(&old);
            }
        }
        self.by_addr.insert(client, k);
        self.assigned += 1;
        k
    }

    fn client_of(&self, relay: usize) -> Option<SocketAddr> {
        self.of_relay.get(relay).copied().flatten()
    }
}

/// A run of equal-sized datagrams from one socket to one destination, gathered for
/// one GSO send.
#[derive(Debug)]
struct Run {
    /// Index of the sending socket in the socket list (0: the listen socket).
    from: usize,
    to: Option<SocketAddr>,
    size: usize,
    count: usize,
    bytes: Vec<u8>,
}

/// What goes out of the echo-shaped forwarder, and how much.
#[derive(Debug)]
struct Out {
    run: Run,
    /// Lone datagrams for clients, from the listen socket.
    multi: MultiSend,
    forwarded: u64,
    dropped: u64,
}

impl Out {
    fn new() -> Self {
        Out {
            run: Run {
                from: 0,
                to: None,
                size: 0,
                count: 0,
                bytes: Vec::with_capacity(GSO_MAX_BYTES),
            },
            multi: MultiSend::default(),
            forwarded: 0,
            dropped: 0,
        }
    }

    /// Queues `d` from socket `from` (an index into `socks`) to `to`.
    fn send(&mut self, socks: &[Udp], from: usize, to: SocketAddr, d: &[u8]) {
        let r = &self.run;
        let max = socks.get(from).map_or(1, Udp::max_segments);
        let continues = r.from == from
            && r.to == Some(to)
            && r.size == d.len()
            && r.count < max
            && r.bytes.len() + d.len() <= GSO_MAX_BYTES;
        if r.count > 0 && !continues {
            self.flush_run(socks);
        }
        if self.run.count == 0 {
            self.run.from = from;
            self.run.to = Some(to);
            self.run.size = d.len();
        }
        self.run.count += 1;
        self.run.bytes.extend_from_slice(d);
    }

    /// Sends the run: one GSO send, or a lone datagram from the listen socket into the
    /// `sendmmsg` batch.
    fn flush_run(&mut self, socks: &[Udp]) {
        let (Some(to), Some(sock)) = (self.run.to, socks.get(self.run.from)) else {
            self.run.count = 0;
            self.run.bytes.clear();
            return;
        };
        if self.run.count == 0 {
            return;
        }
        if self.run.from == 0 && self.run.count == 1 {
            self.multi.push(to, &self.run.bytes);
            if self.multi.len() >= MULTI_SEND_MAX {
                self.flush_multi(socks);
            }
        } else {
            match sock.send_batch(to, &self.run.bytes, self.run.size) {
                Ok(n) => {
                    self.forwarded += n as u64;
                    self.dropped += (self.run.count - n.min(self.run.count)) as u64;
                }
                Err(_) => self.dropped += self.run.count as u64,
            }
        }
        self.run.count = 0;
        self.run.bytes.clear();
    }

    fn flush_multi(&mut self, socks: &[Udp]) {
        if let Some(listen) = socks.first() {
            let (sent, failed) = listen.send_multi(&mut self.multi);
            self.forwarded += sent as u64;
            self.dropped += failed as u64;
        }
    }

    fn flush(&mut self, socks: &[Udp]) {
        self.flush_run(socks);
        if !self.multi.is_empty() {
            self.flush_multi(socks);
        }
    }
}

/// `--relays N`: the echo shape (see the module docs).
fn run_relays(a: &ForwarderArgs, to: SocketAddr, n: usize) -> Result<(), BenchError> {
    let io = io_err;
    if n == 0 {
        return Err(BenchError("--relays must be at least 1".into()));
    }
    // socks[0] is the listen socket, socks[1 + k] relay socket k; the token of each is
    // its index.
    let mut socks = Vec::with_capacity(n + 1);
    socks.push(Udp::bind(a.listen).map_err(|e| io("cannot bind --listen", e))?);
    for _ in 0..n {
        socks.push(
            Udp::bind(SocketAddr::new(a.listen.ip(), 0))
                .map_err(|e| io("cannot bind a relay socket (is ulimit -n high enough?)", e))?,
        );
    }
    let mut poll = Poll::new().map_err(|e| io("poll", e))?;
    for (i, s) in socks.iter_mut().enumerate() {
        s.register(poll.registry(), Token(i))
            .map_err(|e| io("poll", e))?;
    }
    eprintln!(
        "forwarding {} -> {n} relay sockets -> {} and back, for at most {} s",
        a.listen, to, a.duration
    );
    let end = Instant::now() + Duration::from_secs_f64(a.duration);
    let mut events = Events::with_capacity(1024);
    let mut scratch = RecvScratch::new();
    let mut clients = Clients::new(n);
    let mut out = Out::new();
    // Sockets to read this turn, and those whose last receive filled every slot.
    let mut ready: Vec<usize> = Vec::with_capacity(1024);
    let mut again: Vec<usize> = Vec::new();
    let mut unclaimed = 0u64;
    while Instant::now() < end {
        let timeout = if again.is_empty() {
            Duration::from_millis(100)
        } else {
            Duration::ZERO
        };
        if poll.poll(&mut events, Some(timeout)).is_err() {
            continue;
        }
        ready.clear();
        ready.extend(events.iter().map(|e| e.token().0));
        ready.append(&mut again);
        for &i in &ready {
            let Some(sock) = socks.get(i) else {
                continue;
            };
            let filled = if i == 0 {
                sock.recv_once(&mut scratch, |d, from| {
                    let k = clients.relay_of(from);
                    out.send(&socks, 1 + k, to, d);
                })
            } else {
                let client = clients.client_of(i - 1);
                sock.recv_once(&mut scratch, |d, _| match client {
                    Some(c) => out.send(&socks, 0, c, d),
                    None => unclaimed += 1,
                })
            };
            if filled >= RECV_SLOTS {
                again.push(i);
            }
        }
        out.flush(&socks);
    }
    eprintln!(
        "forwarder: {} sends, {} dropped, {} client addresses, {unclaimed} datagrams on relay sockets without a client",
        out.forwarded, out.dropped, clients.assigned
    );
    Ok(())
}

/// `--reflect`: the STUN shape (see the module docs).
fn run_reflect(a: &ForwarderArgs) -> Result<(), BenchError> {
    let io = io_err;
    let mut socks = vec![Udp::bind(a.listen).map_err(|e| io("cannot bind --listen", e))?];
    let mut poll = Poll::new().map_err(|e| io("poll", e))?;
    if let Some(s) = socks.first_mut() {
        s.register(poll.registry(), LISTEN)
            .map_err(|e| io("poll", e))?;
    }
    eprintln!(
        "forwarding {} -> back to each sender, for at most {} s",
        a.listen, a.duration
    );
    let end = Instant::now() + Duration::from_secs_f64(a.duration);
    let mut events = Events::with_capacity(16);
    let mut scratch = RecvScratch::new();
    let mut out = Out::new();
    let mut again = false;
    while Instant::now() < end {
        let timeout = if again {
            Duration::ZERO
        } else {
            Duration::from_millis(100)
        };
        if poll.poll(&mut events, Some(timeout)).is_err() {
            continue;
        }
        if !again && events.is_empty() {
            continue;
        }
        let Some(sock) = socks.first() else {
            break;
        };
        let filled = sock.recv_once(&mut scratch, |d, from| {
            out.send(&socks, 0, from, d);
        });
        again = filled >= RECV_SLOTS;
        out.flush(&socks);
    }
    eprintln!(
        "forwarder: {} sends, {} dropped",
        out.forwarded, out.dropped
    );
    Ok(())
}
