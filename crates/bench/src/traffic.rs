//! `bench turn`: relayed packets through TURN channels (or a plain forwarder: `--mode
//! raw` one way to a sink, `--mode raw-echo` to the tool's echo peer and back), flat out
//! or paced, with per-packet latency.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use tsunagi_stun::{attr, ChannelData, Class, Message, Method};

use super::client::{describe_failures, Driver, Failures, Outcome, Step};
use super::conn::{Conn, RecvScratch, Udp, GSO_MAX_BYTES};
use super::{
    err, split, BenchError, BenchTransport, Histogram, Latency, RelayMode, Report, ServerWatch,
    TurnArgs,
};

/// The channel every allocation binds to its peer.
const CHANNEL: u16 = 0x4000;
/// Token of the raw-mode sink socket.
const SINK: Token = Token(usize::MAX - 1);
/// Timestamp (8), sender (4), sequence (4).
pub const MIN_PAYLOAD: usize = 16;
pub const MAX_PAYLOAD: usize = 16_384;
/// A sender with packets in flight and nothing back for this long has lost them.
const STALE: Duration = Duration::from_millis(250);
/// How long after the window the generator waits for packets still in flight.
const DRAIN: Duration = Duration::from_millis(1000);
/// Requests outstanding at once while setting up or tearing down.
const SETUP_CONCURRENCY: usize = 64;

/// What each generator thread does.
#[derive(Debug, Clone)]
struct Plan {
    mode: RelayMode,
    tcp: bool,
    payload: usize,
    /// Packets per second for this thread; 0 = flat out.
    rate: f64,
    window: usize,
    warmup: Duration,
    duration: Duration,
    server: SocketAddr,
    echo: Option<SocketAddr>,
    sink: Option<SocketAddr>,
}

/// What a generator thread measured.
#[derive(Debug, Default)]
struct ThreadOut {
    ready: usize,
    setup: Duration,
    sent: u64,
    received: u64,
    bytes: u64,
    hist: Histogram,
    failures: Failures,
    send_errors: u64,
}

pub fn run(a: &TurnArgs) -> Result<Report, BenchError> {
    let c = &a.common;
    c.validate()?;
    if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&a.payload) {
        return err(format!(
            "--payload must be in {MIN_PAYLOAD}..={MAX_PAYLOAD}"
        ));
    }
    if a.window == 0 || a.window > 65_536 {
        return err("--window must be in 1..=65536");
    }
    if a.rate > 10_000_000 {
        return err("--rate must be at most 10000000 packets/s");
    }
    let tcp = c.transport == BenchTransport::Tcp;
    let raw = a.mode.is_raw();
    // Raw mode's sink is one socket, read by one thread.
    let threads = if a.mode == RelayMode::Raw {
        1
    } else {
        c.threads
    };
    if raw && (tcp || a.sink.is_none_or(|s| s.port() == 0)) {
        return err(
            "--mode raw and raw-echo need --transport udp and --sink IP:PORT (where the forwarder sends)",
        );
    }
    let auth = if raw { None } else { Some(a.cred.auth()?) };
    let (warmup, duration) = c.window();

    let stop = Arc::new(AtomicBool::new(false));
    let echo_at = match (a.mode, a.sink) {
        (RelayMode::Echo, _) => Some(SocketAddr::new(a.peer_ip, 0)),
        (RelayMode::RawEcho, Some(sink)) => Some(sink),
        _ => None,
    };
    let echo = match echo_at {
        Some(at) => Some(
            EchoPeer::start(at, stop.clone())
                .map_err(|e| BenchError(format!("cannot start the echo peer on {at}: {e}")))?,
        ),
        None => None,
    };
    let ranges = split(c.allocations, threads, a.mode == RelayMode::Pairs);
    let per_thread_rate = a.rate as f64 / ranges.len() as f64;
    let plan = Plan {
        mode: a.mode,
        tcp,
        payload: a.payload,
        rate: per_thread_rate,
        window: a.window,
        warmup,
        duration,
        server: c.server,
        echo: echo.as_ref().map(|e| e.addr),
        sink: a.sink,
    };
    let barrier = Arc::new(Barrier::new(ranges.len() + 1));
    let failed = Arc::new(AtomicBool::new(false));
    let base = Instant::now();
    let mut handles: Vec<JoinHandle<Result<ThreadOut, String>>> = Vec::new();
    for r in &ranges {
        let n = r.len();
        let plan = plan.clone();
        let auth = auth.clone();
        let barrier = barrier.clone();
        let failed = failed.clone();
        handles.push(std::thread::spawn(move || {
            let t = Instant::now();
            let setup = setup(n, &plan, auth);
            if setup.is_err() {
                failed.store(true, Ordering::SeqCst);
            }
            let setup_time = t.elapsed();
            barrier.wait();
            let (mut driver, ready, sink) = setup?;
            if failed.load(Ordering::SeqCst) {
                teardown(&mut driver, plan.mode);
                return Err("another thread failed to set up".into());
            }
            let mut out = traffic(&mut driver, &ready, sink.as_ref(), &plan, base);
            out.setup = setup_time;
            out.ready = ready.len();
            teardown(&mut driver, plan.mode);
            out.failures.extend(driver.failures.drain());
            Ok(out)
        }));
    }
    barrier.wait();
    let mut report = Report {
        bench: "turn",
        server: c.server.to_string(),
        transport: Some(c.transport),
        mode: Some(a.mode),
        payload: Some(a.payload),
        rate: Some(a.rate),
        threads: ranges.len(),
        duration_s: duration.as_secs_f64(),
        ..Report::default()
    };
    if !failed.load(Ordering::SeqCst) {
        std::thread::sleep(warmup);
        let watch = ServerWatch::start(c.server_pid);
        std::thread::sleep(duration);
        watch.finish(&mut report, duration.as_secs_f64());
    }
    let mut total = ThreadOut::default();
    let mut errors = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(o)) => {
                total.ready += o.ready;
                total.setup = total.setup.max(o.setup);
                total.sent += o.sent;
                total.received += o.received;
                total.bytes += o.bytes;
                total.hist.merge(&o.hist);
                total.send_errors += o.send_errors;
                for (k, v) in o.failures {
                    *total.failures.entry(k).or_default() += v;
                }
            }
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push("a generator thread panicked".into()),
        }
    }
    stop.store(true, Ordering::SeqCst);
    if let Some(e) = echo {
        e.join();
    }
    if !errors.is_empty() {
        return err(errors.join("; "));
    }
    let secs = duration.as_secs_f64();
    report.allocations = total.ready;
    report.setup_s = total.setup.as_secs_f64();
    report.sent = total.sent;
    report.received = total.received;
    report.lost = total.sent.saturating_sub(total.received);
    report.loss_ratio = if total.sent == 0 {
        0.0
    } else {
        report.lost as f64 / total.sent as f64
    };
    report.per_sec = total.received as f64 / secs;
    report.mbit_per_sec = Some(total.bytes as f64 * 8.0 / secs / 1e6);
    report.latency_us = Latency::of(&total.hist);
    report.failures = describe_failures(&total.failures);
    if total.send_errors > 0 {
        if !report.failures.is_empty() {
            report.failures.push_str(", ");
        }
        report
            .failures
            .push_str(&format!("send errors x{}", total.send_errors));
    }
    Ok(report)
}

/// Opens `n` client sessions; for TURN modes allocates and binds a channel on each.
/// Returns the driver, the sessions ready to send, and the raw-mode sink.
fn setup(
    n: usize,
    plan: &Plan,
    auth: Option<super::client::Auth>,
) -> Result<(Driver, Vec<usize>, Option<Udp>), String> {
    let auth = auth.unwrap_or(super::client::Auth {
        username: String::new(),
        password: String::new(),
        realm: None,
    });
    let mut driver = Driver::new(auth).map_err(|e| format!("poll: {e}"))?;
    for _ in 0..n {
        driver
            .open(plan.server, plan.tcp)
            .map_err(|e| format!("cannot open a client socket to {}: {e}", plan.server))?;
    }
    if plan.mode == RelayMode::Raw {
        let Some(sink_addr) = plan.sink else {
            return Err("raw mode needs --sink".into());
        };
        let sink =
            Udp::bind(sink_addr).map_err(|e| format!("cannot bind --sink {sink_addr}: {e}"))?;
        sink.register(driver.poll.registry(), SINK)
            .map_err(|e| format!("poll: {e}"))?;
        return Ok((driver, (0..n).collect(), Some(sink)));
    }
    if plan.mode == RelayMode::RawEcho {
        // Replies come back to each client socket from the forwarder.
        return Ok((driver, (0..n).collect(), None));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    driver.run(0..n, SETUP_CONCURRENCY, deadline, |_, _, r| match r {
        None => Some(Step::Allocate),
        Some(_) => None,
    });
    let relays: Vec<Option<SocketAddr>> = driver.sessions.iter().map(|s| s.relay).collect();
    let peer_of = |i: usize| -> Option<SocketAddr> {
        match plan.mode {
            RelayMode::Echo => plan.echo,
            _ => {
                let partner = if i ^ 1 < n { i ^ 1 } else { i };
                relays[i].and(relays[partner])
            }
        }
    };
    let mut ready = Vec::new();
    driver.run(0..n, SETUP_CONCURRENCY, deadline, |i, _, r| match r {
        None => peer_of(i).map(|p| Step::ChannelBind(CHANNEL, p)),
        Some((_, Outcome::Ok(_))) => {
            ready.push(i);
            None
        }
        Some(_) => None,
    });
    ready.sort_unstable();
    if ready.is_empty() {
        let f = describe_failures(&driver.failures);
        teardown(&mut driver, plan.mode);
        return Err(format!(
            "no allocation is ready to relay (failed requests: {}); check --server, the credentials, and that the server allows loopback peers",
            if f.is_empty() { "none".into() } else { f }
        ));
    }
    Ok((driver, ready, None))
}

/// Deletes every allocation (Refresh with LIFETIME 0), within 10 s.
fn teardown(driver: &mut Driver, mode: RelayMode) {
    if mode.is_raw() {
        return;
    }
    let before = driver.failures.clone();
    let n = driver.sessions.len();
    driver.run(
        0..n,
        SETUP_CONCURRENCY,
        Instant::now() + Duration::from_secs(10),
        |_, s, r| match r {
            None if s.relay.is_some() => Some(Step::Delete),
            _ => None,
        },
    );
    // Failures while deleting do not count against the measurement.
    driver.failures = before;
}

/// The payload of a relayed message: ChannelData, or the DATA of a Data indication.
fn relayed_payload(m: &[u8], raw: bool) -> Option<&[u8]> {
    if raw {
        return Some(m);
    }
    if let Ok(cd) = ChannelData::parse(m) {
        return Some(cd.data);
    }
    let msg = Message::parse(m).ok()?;
    if msg.class() == Class::Indication && msg.method() == Method::DATA {
        return msg.get(attr::DATA);
    }
    None
}

fn nanos_since(base: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX)
}

/// Writes `k` messages of `seg` bytes into `buf`, each stamped with `ts`, sender `p`
/// and a sequence number, and sends them in one batch. Returns how many went out.
#[allow(clippy::too_many_arguments)]
fn send_packets(
    conn: &mut Conn,
    buf: &mut [u8],
    k: usize,
    seg: usize,
    header: bool,
    payload: usize,
    ts: u64,
    p: u32,
    seq: &mut u32,
) -> io::Result<usize> {
    let len = (payload as u16).to_be_bytes();
    for chunk in buf.chunks_mut(seg).take(k) {
        let body = if header {
            chunk[0..2].copy_from_slice(&CHANNEL.to_be_bytes());
            chunk[2..4].copy_from_slice(&len);
            &mut chunk[4..]
        } else {
            chunk
        };
        body[0..8].copy_from_slice(&ts.to_le_bytes());
        body[8..12].copy_from_slice(&p.to_le_bytes());
        body[12..16].copy_from_slice(&seq.to_le_bytes());
        *seq = seq.wrapping_add(1);
    }
    conn.send_batch(&buf[..k * seg], seg)
}

/// Counters of one thread's traffic loop.
#[derive(Debug)]
struct Flow {
    raw: bool,
    payload: usize,
    base: Instant,
    win_start: u64,
    win_end: u64,
    inflight: Vec<u32>,
    inflight_total: usize,
    last_progress: Vec<Instant>,
    out: ThreadOut,
}

impl Flow {
    fn on_message(&mut self, m: &[u8]) {
        let Some(d) = relayed_payload(m, self.raw) else {
            return;
        };
        if d.len() != self.payload {
            return;
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&d[0..8]);
        let ts = u64::from_le_bytes(ts);
        let mut p = [0u8; 4];
        p.copy_from_slice(&d[8..12]);
        let p = u32::from_le_bytes(p) as usize;
        let now = Instant::now();
        if let Some(f) = self.inflight.get_mut(p) {
            if *f > 0 {
                *f -= 1;
                self.inflight_total -= 1;
            }
            self.last_progress[p] = now;
        }
        if (self.win_start..self.win_end).contains(&ts) {
            self.out.received += 1;
            self.out.bytes += d.len() as u64;
            self.out
                .hist
                .record(nanos_since(self.base, now).saturating_sub(ts));
        }
    }
}

fn traffic(
    driver: &mut Driver,
    ready: &[usize],
    sink: Option<&Udp>,
    plan: &Plan,
    base: Instant,
) -> ThreadOut {
    let n = ready.len().max(1);
    let raw = plan.mode.is_raw();
    let header = !raw;
    let hdr = if header { 4 } else { 0 };
    let seg = if plan.tcp {
        (hdr + plan.payload + 3) & !3
    } else {
        hdr + plan.payload
    };
    let mut sendbuf = vec![0u8; GSO_MAX_BYTES.max(seg)];
    let max_k = sendbuf.len() / seg;
    let flat = plan.rate <= 0.0;
    let cap_per = plan.window.div_ceil(n).max(1) as u32;
    let t0 = Instant::now();
    let win_start = t0 + plan.warmup;
    let win_end = win_start + plan.duration;
    let mut f = Flow {
        raw,
        payload: plan.payload,
        base,
        win_start: nanos_since(base, win_start),
        win_end: nanos_since(base, win_end),
        inflight: vec![0; n],
        inflight_total: 0,
        last_progress: vec![t0; n],
        out: ThreadOut::default(),
    };
    let mut scratch = RecvScratch::new();
    let mut events = Events::with_capacity(1024);
    let mut cursor = 0usize;
    let mut seq = 0u32;
    let mut paced_sent = 0u64;
    let mut last_stale_check = t0;
    // At most 100 ms of schedule is made up after a stall, 1 ms of it per turn.
    let backlog_cap = ((plan.rate * 0.1) as u64).max(1);
    let burst_cap = ((plan.rate * 0.001) as u64).max(4);
    // epoll waits in whole milliseconds: above this rate the loop spins between sends
    // (the generator has a core of its own in a benchmark); below it, a packet may go
    // out up to a millisecond late.
    let spin = plan.rate > 20_000.0;
    loop {
        let now = Instant::now();
        let sending = now < win_end && !ready.is_empty();
        let ts = nanos_since(base, now);
        let in_window = now >= win_start;
        if sending && flat {
            let mut tries = 0;
            while f.inflight_total < plan.window && tries < n {
                let p = cursor;
                cursor = (cursor + 1) % n;
                tries += 1;
                let conn = &mut driver.sessions[ready[p]].conn;
                let room = (cap_per.saturating_sub(f.inflight[p]) as usize)
                    .min(plan.window - f.inflight_total)
                    .min(conn.batch_room(seg))
                    .min(max_k);
                if room == 0 {
                    continue;
                }
                match send_packets(
                    conn,
                    &mut sendbuf,
                    room,
                    seg,
                    header,
                    plan.payload,
                    ts,
                    p as u32,
                    &mut seq,
                ) {
                    Ok(k) => {
                        if f.inflight[p] == 0 {
                            f.last_progress[p] = now;
                        }
                        f.inflight[p] += k as u32;
                        f.inflight_total += k;
                        f.out.sent += if in_window { k as u64 } else { 0 };
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => f.out.send_errors += 1,
                }
            }
        } else if sending {
            let target = (plan.rate * now.duration_since(t0).as_secs_f64()) as u64;
            let mut due = target.saturating_sub(paced_sent);
            if due > backlog_cap {
                // After a long stall the schedule moves on rather than catching up.
                paced_sent = target - backlog_cap;
                due = backlog_cap;
            }
            // A backlog goes out over several turns of the loop, not in one burst.
            due = due.min(burst_cap);
            while due > 0 {
                let p = cursor;
                cursor = (cursor + 1) % n;
                due -= 1;
                paced_sent += 1;
                let conn = &mut driver.sessions[ready[p]].conn;
                match send_packets(
                    conn,
                    &mut sendbuf,
                    1,
                    seg,
                    header,
                    plan.payload,
                    ts,
                    p as u32,
                    &mut seq,
                ) {
                    Ok(k) => {
                        f.inflight[p] += k as u32;
                        f.inflight_total += k;
                        f.out.sent += if in_window { k as u64 } else { 0 };
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => f.out.send_errors += 1,
                }
            }
        }
        // How long to wait for replies.
        let timeout = if !sending {
            Duration::from_millis(5)
        } else if flat {
            if f.inflight_total >= plan.window {
                Duration::from_millis(1)
            } else {
                Duration::ZERO
            }
        } else {
            let next = t0 + Duration::from_secs_f64((paced_sent + 1) as f64 / plan.rate);
            let wait = next.saturating_duration_since(Instant::now());
            if spin && wait < Duration::from_millis(2) {
                Duration::ZERO
            } else if spin {
                wait - Duration::from_millis(1)
            } else {
                wait
            }
        };
        if driver.poll.poll(&mut events, Some(timeout)).is_ok() {
            for ev in events.iter() {
                if ev.token() == SINK {
                    if let Some(s) = sink {
                        s.recv_all(&mut scratch, |m, _| f.on_message(m));
                    }
                    continue;
                }
                if let Some(s) = driver.sessions.get_mut(ev.token().0) {
                    s.conn.recv_all(&mut scratch, |m| f.on_message(m));
                }
            }
        }
        let now = Instant::now();
        if now.duration_since(last_stale_check) >= Duration::from_millis(50) {
            last_stale_check = now;
            for p in 0..n {
                if f.inflight[p] > 0 && now.duration_since(f.last_progress[p]) > STALE {
                    f.inflight_total -= f.inflight[p] as usize;
                    f.inflight[p] = 0;
                }
            }
            if plan.tcp {
                for &i in ready {
                    driver.sessions[i].conn.flush();
                }
            }
        }
        if now >= win_end {
            let all_back = f.out.received >= f.out.sent && f.inflight_total == 0;
            if all_back || now >= win_end + DRAIN {
                break;
            }
        }
    }
    f.out
}

/// A UDP echo peer on its own thread: every datagram goes back to where it came from
/// (runs of equal-sized datagrams from one source go back in one GSO send).
struct EchoPeer {
    addr: SocketAddr,
    handle: JoinHandle<()>,
}

impl EchoPeer {
    fn start(local: SocketAddr, stop: Arc<AtomicBool>) -> io::Result<Self> {
        let udp = Udp::bind(local)?;
        let addr = udp.local_addr()?;
        let mut poll = Poll::new()?;
        udp.register(poll.registry(), Token(0))?;
        let handle = std::thread::spawn(move || {
            let mut events = Events::with_capacity(16);
            let mut scratch = RecvScratch::new();
            let mut out = Vec::with_capacity(GSO_MAX_BYTES);
            let max_seg = udp.max_segments();
            let mut run: Option<(SocketAddr, usize, usize)> = None; // (to, size, count)
            while !stop.load(Ordering::Relaxed) {
                if poll
                    .poll(&mut events, Some(Duration::from_millis(20)))
                    .is_err()
                {
                    continue;
                }
                if events.is_empty() {
                    continue;
                }
                let udp = &udp;
                udp.recv_all(&mut scratch, |d, from| {
                    if let Some((to, size, count)) = run {
                        let same = to == from
                            && size == d.len()
                            && count < max_seg
                            && out.len() + d.len() <= GSO_MAX_BYTES;
                        if !same {
                            let _ = udp.send_batch(to, &out, size);
                            out.clear();
                            run = None;
                        }
                    }
                    out.extend_from_slice(d);
                    run = Some(match run {
                        Some((to, size, count)) => (to, size, count + 1),
                        None => (from, d.len(), 1),
                    });
                });
                if let Some((to, size, _)) = run.take() {
                    let _ = udp.send_batch(to, &out, size);
                    out.clear();
                }
            }
        });
        Ok(Self { addr, handle })
    }

    fn join(self) {
        let _ = self.handle.join();
    }
}
