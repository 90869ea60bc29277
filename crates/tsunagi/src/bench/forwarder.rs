//! `bench forwarder`: the limit baseline. Receives datagrams on `--listen` and forwards
//! each to `--to` — with `--hops 2` through a second socket of its own first, so that
//! a packet costs two receives and two sends, as through a TURN relay (client →
//! listener → relay socket → peer's relay socket → client). The same batching as the
//! relay (crates/tsunagi/src/turn_runtime/batch.rs): batched receive (recvmmsg, GRO)
//! and runs of equal-sized datagrams to one destination sent as one GSO send; no
//! parsing, no lookups, no TURN.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use super::conn::{RecvScratch, Udp, GSO_MAX_BYTES};
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
                _ => (&hop, a.to),
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
