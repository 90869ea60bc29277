//! The echo-shaped limit baseline on 127.0.0.1: `tsunagi bench forwarder --relays 8`
//! (the real binary) driven by `bench turn --mode raw-echo` (in process), whose echo
//! peer sits on the forwarder's `--to`. Each client's datagrams go out from a relay
//! socket of its own to the echo peer and come back through the forwarder: at a modest
//! rate nothing is lost, every client takes one relay socket, and the forwarder counts
//! two sends per packet. Performance itself is measured by `scripts/bench-vs-coturn`,
//! never asserted here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use tsunagi_bench::{self as bench, BenchArgs, Report};

const BIN: &str = env!("CARGO_BIN_EXE_tsunagi");

mod ports;

/// A free port (tests/ports), for the forwarder or the echo peer to bind.
fn free() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], ports::free_port()))
}

fn parse(s: &str) -> Result<BenchArgs, clap::Error> {
    BenchArgs::parse_from(s.split_whitespace())
}

fn bench(s: &str) -> Report {
    let b = parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    bench::report(&b).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The forwarder process, killed (by its handle) if the test ends before it does.
struct Forwarder(Child);

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for the forwarder to end by itself and returns its summary line
/// (`forwarder: ...`) and the numbers in it.
fn summary(fwd: &mut Forwarder, stderr: &mut impl Read) -> (String, Vec<u64>) {
    let status = fwd.0.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let summary = rest
        .lines()
        .find(|l| l.starts_with("forwarder: "))
        .unwrap_or_else(|| panic!("no summary: {rest}"))
        .to_owned();
    let numbers = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (summary, numbers)
}

#[test]
fn raw_echo_through_relay_sockets() {
    let (listen, peer) = (free(), free());
    let mut fwd = Forwarder(
        Command::new(BIN)
            .args(["bench", "forwarder", "--listen", &listen.to_string()])
            .args([
                "--to",
                &peer.to_string(),
                "--relays",
                "8",
                "--duration",
                "6",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = fwd.0.id();
    // Its first line comes once every socket is bound (or it exits: end of file).
    let mut stderr = BufReader::new(fwd.0.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(
        line.starts_with(&format!("forwarding {listen} -> 8 relay sockets -> {peer}")),
        "{line}"
    );

    // Paced: 8 clients, 1600 packets/s in total, 100-byte payloads.
    let paced = bench(&format!(
        "turn --mode raw-echo --server {listen} --sink {peer} --allocations 8 --rate 1600 \
         --payload 100 --duration 2 --warmup 0.5 --server-pid {pid}"
    ));
    assert_eq!(paced.allocations, 8, "{paced:?}");
    assert!(paced.sent > 2500, "{paced:?}");
    assert_eq!((paced.lost, paced.received), (0, paced.sent), "{paced:?}");
    assert!(paced.failures.is_empty(), "{paced:?}");
    assert!(paced.server_cpu_s.is_some(), "{paced:?}");
    let l = &paced.latency_us;
    assert!(
        l.p50 > 0.0 && l.p50 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max,
        "{paced:?}"
    );
    assert!(paced.per_sec > 0.0, "{paced:?}");

    // Flat out in bursts of 1200-byte payloads (GSO runs in both directions), with 8
    // new client addresses that take the relay sockets over. Only that it relays is
    // checked, not how fast.
    let flat = bench(&format!(
        "turn --mode raw-echo --server {listen} --sink {peer} --allocations 8 --window 64 \
         --payload 1200 --duration 1 --warmup 0.2"
    ));
    assert!(flat.received > 100, "{flat:?}");
    assert!(flat.per_sec > 0.0 && flat.latency_us.p50 > 0.0, "{flat:?}");

    // The forwarder ends after its --duration and sums up: two sends per packet (to
    // the echo peer and back to the client), one relay socket per client address.
    let (summary, numbers) = summary(&mut fwd, &mut stderr);
    let [sends, dropped, clients, unclaimed] = numbers[..] else {
        panic!("{summary}");
    };
    assert!(
        sends >= 2 * (paced.received + flat.received),
        "{summary}; {paced:?}; {flat:?}"
    );
    assert_eq!((dropped, clients, unclaimed), (0, 16, 0), "{summary}");
}

/// `--reflect`, the STUN shape: each datagram goes back to its sender from the listen
/// socket; 16 clients with one datagram in flight each lose nothing, and the forwarder
/// counts one send per datagram received.
#[test]
fn reflect_sends_each_datagram_back() {
    let (listen, idle_peer) = (free(), free());
    let mut fwd = Forwarder(
        Command::new(BIN)
            .args(["bench", "forwarder", "--listen", &listen.to_string()])
            .args(["--reflect", "--duration", "4"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = BufReader::new(fwd.0.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(
        line.starts_with(&format!("forwarding {listen} -> back to each sender")),
        "{line}"
    );
    let r = bench(&format!(
        "turn --mode raw-echo --server {listen} --sink {idle_peer} --allocations 16 \
         --window 16 --payload 64 --duration 1.5 --warmup 0.3"
    ));
    assert!(r.received > 1000, "{r:?}");
    assert_eq!(r.lost, 0, "{r:?}");
    let (summary, numbers) = summary(&mut fwd, &mut stderr);
    let [sends, dropped] = numbers[..] else {
        panic!("{summary}");
    };
    assert!(sends >= r.received, "{summary}; {r:?}");
    assert_eq!(dropped, 0, "{summary}");
}

#[test]
fn bad_options_are_refused() {
    // --relays is its own shape: not with --hops, and at least one socket; --reflect
    // takes no --to and no other shape; the other shapes need --to.
    for a in [
        "forwarder --listen 127.0.0.1:9 --to 127.0.0.1:9 --relays 4 --hops 1",
        "forwarder --listen 127.0.0.1:9 --to 127.0.0.1:9 --relays 0",
        "forwarder --listen 127.0.0.1:9 --reflect --to 127.0.0.1:9",
        "forwarder --listen 127.0.0.1:9 --reflect --relays 4",
        "forwarder --listen 127.0.0.1:9",
    ] {
        assert!(parse(a).is_err(), "{a}");
    }
    // raw-echo needs the echo peer's address, over UDP.
    for a in [
        "turn --server 127.0.0.1:9 --mode raw-echo",
        "turn --server 127.0.0.1:9 --mode raw-echo --sink 127.0.0.1:0",
        "turn --server 127.0.0.1:9 --mode raw-echo --sink 127.0.0.1:9 --transport tcp",
    ] {
        let b = parse(a).unwrap_or_else(|e| panic!("{a}: {e}"));
        assert!(bench::report(&b).is_err(), "{a}");
    }
}
