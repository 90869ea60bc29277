//! `bench forwarder`: the limit baseline. Receives datagrams on `--listen` and forwards
//! each to `--to` — with `--hops 2` through a second socket of its own first, so that
//! a packet costs two receives and two sends, as through a TURN relay (client →
//! listener → relay socket → peer's relay socket → client). Batched receive (recvmmsg)
//! and one send per datagram, like the relay; no parsing, no lookups, no TURN.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use super::conn::{RecvScratch, Udp};
use super::{BenchError, ForwarderArgs, MAX_DURATION_SECS};

const LISTEN: Token = Token(0);
const HOP: Token = Token(1);

pub fn run(a: &ForwarderArgs) -> Result<(), BenchError> {
    if !(a.duration > 0.0 && a.duration <= MAX_DURATION_SECS) {
        return Err(BenchError(format!(
            "--duration must be in (0, {MAX_DURATION_SECS}] seconds"
        )));
    }
    let io = |what: &str, e: std::io::Error| BenchError(format!("{what}: {e}"));
    let mut listen = Udp::bind(a.listen).map_err(|e| io("cannot bind --listen", e))?;
    let mut hop = Udp::bind(SocketAddr::new(a.listen.ip(), 0))
        .map_err(|e| io("cannot bind the second socket", e))?;
    let hop_addr = hop.local_addr().map_err(|e| io("local address", e))?;
    let mut poll = Poll::new().map_err(|e| io("poll", e))?;
    poll.registry()
        .register(&mut listen.sock, LISTEN, Interest::READABLE)
        .map_err(|e| io("poll", e))?;
    poll.registry()
        .register(&mut hop.sock, HOP, Interest::READABLE)
        .map_err(|e| io("poll", e))?;
    eprintln!(
        "forwarding {} -> {}{} for at most {} s",
        a.listen,
        if a.hops == 2 {
            format!("{hop_addr} -> ")
        } else {
            String::new()
        },
        a.to,
        a.duration
    );
    let end = Instant::now() + Duration::from_secs_f64(a.duration);
    let mut events = Events::with_capacity(16);
    let mut scratch = RecvScratch::default();
    let first = if a.hops == 2 { hop_addr } else { a.to };
    let (mut forwarded, mut dropped) = (0u64, 0u64);
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
                _ => (&hop, a.to),
            };
            // The first hop sends from the listener socket; the second from `hop`.
            let out = from;
            from.recv_all(&mut scratch, |d, _| match out.send_batch(to, d, d.len()) {
                Ok(_) => forwarded += 1,
                Err(_) => dropped += 1,
            });
        }
    }
    eprintln!("forwarder: {forwarded} sends, {dropped} dropped");
    Ok(())
}
