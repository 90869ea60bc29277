//! `bench stun` (Binding requests/s) and `bench alloc` (allocations/s, or memory per
//! allocation with `--hold`).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tsunagi_stun::{Class, Message, MessageEncoder, Method, TransactionId};

use super::client::{describe_failures, Auth, Driver, Failures, Outcome, Step};
use super::conn::GSO_MAX_BYTES;
use super::{
    err, procfs, split, AllocArgs, BenchError, BenchTransport, Histogram, Latency, Report,
    ServerWatch, StunArgs,
};

/// A client with requests outstanding and no answer for this long has lost them.
const STALE: Duration = Duration::from_millis(250);
/// Size of a Binding request with FINGERPRINT.
const BINDING_LEN: usize = 28;

/// What a thread measured.
#[derive(Debug, Default)]
struct Out {
    clients: usize,
    sent: u64,
    received: u64,
    hist: Histogram,
    failures: Failures,
}

impl Out {
    fn add(&mut self, o: Out) {
        self.clients += o.clients;
        self.sent += o.sent;
        self.received += o.received;
        self.hist.merge(&o.hist);
        for (k, v) in o.failures {
            *self.failures.entry(k).or_default() += v;
        }
    }
}

/// Spawns one thread per range: `work(n, barrier, failed)` must call `barrier.wait()`
/// exactly once, after its setup. Measures the server around the window and returns the
/// merged results.
fn orchestrate(
    c: &super::CommonArgs,
    ranges: &[std::ops::Range<usize>],
    report: &mut Report,
    work: impl Fn(usize, Arc<Barrier>, Arc<AtomicBool>) -> Result<Out, String>
        + Send
        + Sync
        + Clone
        + 'static,
) -> Result<Out, BenchError> {
    let (warmup, duration) = c.window();
    let barrier = Arc::new(Barrier::new(ranges.len() + 1));
    let failed = Arc::new(AtomicBool::new(false));
    let handles: Vec<JoinHandle<Result<Out, String>>> = ranges
        .iter()
        .map(|r| {
            let (n, b, f, w) = (r.len(), barrier.clone(), failed.clone(), work.clone());
            std::thread::spawn(move || w(n, b, f))
        })
        .collect();
    barrier.wait();
    if !failed.load(Ordering::SeqCst) {
        std::thread::sleep(warmup);
        let watch = ServerWatch::start(c.server_pid);
        std::thread::sleep(duration);
        watch.finish(report, duration.as_secs_f64());
    }
    let mut total = Out::default();
    let mut errors = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(o)) => total.add(o),
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push("a generator thread panicked".into()),
        }
    }
    if !errors.is_empty() {
        return err(errors.join("; "));
    }
    Ok(total)
}

fn finish(report: &mut Report, total: &Out, secs: f64) {
    report.allocations = total.clients;
    report.sent = total.sent;
    report.received = total.received;
    report.lost = total.sent.saturating_sub(total.received);
    report.loss_ratio = if total.sent == 0 {
        0.0
    } else {
        report.lost as f64 / total.sent as f64
    };
    report.per_sec = total.received as f64 / secs;
    report.latency_us = Latency::of(&total.hist);
    report.failures = describe_failures(&total.failures);
}

pub fn run_stun(a: &StunArgs) -> Result<Report, BenchError> {
    let c = a.common.clone();
    c.validate()?;
    if a.window == 0 || a.window > 1024 {
        return err("--window must be in 1..=1024");
    }
    let (warmup, duration) = c.window();
    let ranges = split(c.allocations, c.threads, false);
    let mut report = Report {
        bench: "stun",
        server: c.server.to_string(),
        transport: Some(c.transport),
        threads: ranges.len(),
        duration_s: duration.as_secs_f64(),
        ..Report::default()
    };
    let window = a.window;
    let server = c.server;
    let tcp = c.transport == BenchTransport::Tcp;
    let base = Instant::now();
    let total = orchestrate(&c, &ranges, &mut report, move |n, barrier, failed| {
        let auth = Auth {
            username: String::new(),
            password: String::new(),
            realm: None,
        };
        let setup = (|| -> io::Result<Driver> {
            let mut d = Driver::new(auth)?;
            for _ in 0..n {
                d.open(server, tcp)?;
            }
            Ok(d)
        })();
        if setup.is_err() {
            failed.store(true, Ordering::SeqCst);
        }
        barrier.wait();
        let mut d = setup.map_err(|e| format!("cannot open client sockets: {e}"))?;
        if failed.load(Ordering::SeqCst) {
            return Err("another thread failed to set up".into());
        }
        Ok(stun_loop(&mut d, window, warmup, duration, base))
    })?;
    finish(&mut report, &total, duration.as_secs_f64());
    Ok(report)
}

/// Keeps `window` Binding requests outstanding on every session; the transaction ID
/// carries the send time and the client, so responses need no lookup.
fn stun_loop(
    d: &mut Driver,
    window: usize,
    warmup: Duration,
    duration: Duration,
    base: Instant,
) -> Out {
    let n = d.sessions.len();
    let mut out = Out {
        clients: n,
        ..Out::default()
    };
    let t0 = Instant::now();
    let (win_start, win_end) = (t0 + warmup, t0 + warmup + duration);
    let ns = |t: Instant| {
        u64::try_from(t.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX)
    };
    let (ws, we) = (ns(win_start), ns(win_end));
    let mut inflight = vec![0usize; n];
    let mut last = vec![t0; n];
    let mut buf = vec![0u8; GSO_MAX_BYTES];
    let mut seq = 0u16;
    let mut last_check = t0;
    loop {
        let now = Instant::now();
        let sending = now < win_end;
        if sending {
            let ts = ns(now);
            for i in 0..n {
                let k = window
                    .saturating_sub(inflight[i])
                    .min(d.sessions[i].conn.batch_room(BINDING_LEN))
                    .min(buf.len() / BINDING_LEN);
                if k == 0 {
                    continue;
                }
                for j in 0..k {
                    let mut tid = [0u8; 12];
                    tid[0..8].copy_from_slice(&ts.to_le_bytes());
                    tid[8..10].copy_from_slice(&(i as u16).to_le_bytes());
                    tid[10..12].copy_from_slice(&seq.to_le_bytes());
                    seq = seq.wrapping_add(1);
                    let slot = &mut buf[j * BINDING_LEN..(j + 1) * BINDING_LEN];
                    let Ok(mut enc) = MessageEncoder::new(
                        slot,
                        Class::Request,
                        Method::BINDING,
                        TransactionId::new(tid),
                    ) else {
                        return out;
                    };
                    if enc.fingerprint().is_err() {
                        return out;
                    }
                    enc.finish();
                }
                if let Ok(sent) = d.sessions[i]
                    .conn
                    .send_batch(&buf[..k * BINDING_LEN], BINDING_LEN)
                {
                    if inflight[i] == 0 {
                        last[i] = now;
                    }
                    inflight[i] += sent;
                    if now >= win_start {
                        out.sent += sent as u64;
                    }
                }
            }
        }
        let all_full = inflight.iter().all(|&f| f >= window);
        let timeout = if !sending || all_full {
            Duration::from_millis(1)
        } else {
            Duration::ZERO
        };
        if d.poll.poll(&mut d.events, Some(timeout)).is_ok() {
            for ev in d.events.iter() {
                let Some(s) = d.sessions.get_mut(ev.token().0) else {
                    continue;
                };
                s.conn.recv_all(&mut d.scratch, |m| {
                    let Ok(msg) = Message::parse(m) else {
                        return;
                    };
                    if msg.method() != Method::BINDING || msg.class() != Class::Success {
                        return;
                    }
                    let tid = msg.transaction_id().0;
                    let mut t = [0u8; 8];
                    t.copy_from_slice(&tid[0..8]);
                    let ts = u64::from_le_bytes(t);
                    let i = u16::from_le_bytes([tid[8], tid[9]]) as usize;
                    let now = Instant::now();
                    if let Some(f) = inflight.get_mut(i) {
                        *f = f.saturating_sub(1);
                        last[i] = now;
                    }
                    if (ws..we).contains(&ts) {
                        out.received += 1;
                        out.hist.record(ns(now).saturating_sub(ts));
                    }
                });
            }
        }
        let now = Instant::now();
        if now.duration_since(last_check) >= Duration::from_millis(50) {
            last_check = now;
            for i in 0..n {
                if inflight[i] > 0 && now.duration_since(last[i]) > STALE {
                    inflight[i] = 0;
                }
            }
            for s in &mut d.sessions {
                s.conn.flush();
            }
        }
        if now >= win_end {
            let all_back = inflight.iter().all(|&f| f == 0);
            if all_back || now >= win_end + Duration::from_secs(1) {
                return out;
            }
        }
    }
}

pub fn run_alloc(a: &AllocArgs) -> Result<Report, BenchError> {
    let c = a.common.clone();
    c.validate()?;
    let auth = a.cred.auth()?;
    if a.hold {
        return hold(&c, auth);
    }
    let (warmup, duration) = c.window();
    let ranges = split(c.allocations, c.threads, false);
    let mut report = Report {
        bench: "alloc",
        server: c.server.to_string(),
        transport: Some(c.transport),
        threads: ranges.len(),
        duration_s: duration.as_secs_f64(),
        ..Report::default()
    };
    let server = c.server;
    let tcp = c.transport == BenchTransport::Tcp;
    let total = orchestrate(&c, &ranges, &mut report, move |n, barrier, failed| {
        let setup = (|| -> io::Result<Driver> {
            let mut d = Driver::new(auth.clone())?;
            for _ in 0..n {
                d.open(server, tcp)?;
            }
            Ok(d)
        })();
        if setup.is_err() {
            failed.store(true, Ordering::SeqCst);
        }
        barrier.wait();
        let mut d = setup.map_err(|e| format!("cannot open client sockets: {e}"))?;
        if failed.load(Ordering::SeqCst) {
            return Err("another thread failed to set up".into());
        }
        let t0 = Instant::now();
        let (win_start, win_end) = (t0 + warmup, t0 + warmup + duration);
        let mut out = Out {
            clients: n,
            ..Out::default()
        };
        let mut started = vec![t0; n];
        // A cycle: Allocate (401), Allocate with credentials, Refresh 0, from a new
        // client socket each time, so every cycle pays for the challenge as a new
        // client does.
        d.run(0..n, n, win_end + Duration::from_secs(5), |i, s, r| {
            let now = Instant::now();
            match r {
                None => {
                    started[i] = now;
                    (now < win_end).then_some(Step::Allocate)
                }
                Some((Step::Allocate, Outcome::Ok(_))) => Some(Step::Delete),
                Some((Step::Delete, Outcome::Ok(_))) => {
                    if started[i] >= win_start && started[i] < win_end {
                        out.sent += 1;
                        out.received += 1;
                        out.hist.record(
                            u64::try_from(now.duration_since(started[i]).as_nanos())
                                .unwrap_or(u64::MAX),
                        );
                    }
                    // The next cycle is a new client: a new 5-tuple (coturn answers
                    // 437 to an Allocate from a 5-tuple whose allocation it just
                    // deleted) that has no nonce yet.
                    s.nonce = None;
                    s.relay = None;
                    s.reopen = true;
                    started[i] = now;
                    (now < win_end).then_some(Step::Allocate)
                }
                Some(_) => {
                    if started[i] >= win_start && started[i] < win_end {
                        out.sent += 1;
                    }
                    // The allocation may exist (a lost Refresh): delete it before leaving.
                    if s.relay.take().is_some() {
                        return Some(Step::Delete);
                    }
                    None
                }
            }
        });
        out.failures = std::mem::take(&mut d.failures);
        Ok(out)
    })?;
    finish(&mut report, &total, duration.as_secs_f64());
    Ok(report)
}

/// `bench alloc --hold`: creates N allocations with a channel each, measures the
/// server's RSS growth, deletes them.
fn hold(c: &super::CommonArgs, auth: Auth) -> Result<Report, BenchError> {
    let Some(pid) = c.server_pid else {
        return err("--hold needs --server-pid to read the server's memory");
    };
    let rss_before = procfs::rss_kib(pid)
        .ok_or_else(|| BenchError(format!("cannot read /proc/{pid}/status")))?;
    let tcp = c.transport == BenchTransport::Tcp;
    let t = Instant::now();
    let mut d = Driver::new(auth).map_err(|e| BenchError(format!("poll: {e}")))?;
    for _ in 0..c.allocations {
        d.open(c.server, tcp)
            .map_err(|e| BenchError(format!("cannot open a client socket: {e}")))?;
    }
    let n = c.allocations;
    // A peer nobody listens on: the channel installs a permission; nothing is sent.
    let peer = std::net::SocketAddr::new(c.server.ip(), 9);
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut held = 0usize;
    d.run(0..n, 64, deadline, |_, _, r| match r {
        None => Some(Step::Allocate),
        Some((Step::Allocate, Outcome::Ok(_))) => Some(Step::ChannelBind(0x4000, peer)),
        Some((Step::ChannelBind(..), Outcome::Ok(_))) => {
            held += 1;
            None
        }
        Some(_) => None,
    });
    let setup = t.elapsed();
    // Let the server settle (lazy frees, log buffers) before reading.
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = procfs::rss_kib(pid).unwrap_or(rss_before);
    let failures = describe_failures(&d.failures);
    d.run(
        0..n,
        64,
        Instant::now() + Duration::from_secs(60),
        |_, s, r| match r {
            None if s.relay.is_some() => Some(Step::Delete),
            _ => None,
        },
    );
    if held == 0 {
        return err(format!("no allocation could be created ({failures})"));
    }
    let mut report = Report {
        bench: "alloc-hold",
        server: c.server.to_string(),
        transport: Some(c.transport),
        allocations: held,
        threads: 1,
        setup_s: setup.as_secs_f64(),
        server_rss_start_kib: Some(rss_before),
        server_rss_end_kib: Some(rss_after),
        server_peak_rss_kib: procfs::peak_rss_kib(pid),
        bytes_per_allocation: Some(
            (rss_after.saturating_sub(rss_before) as f64 * 1024.0) / held as f64,
        ),
        failures,
        ..Report::default()
    };
    report.per_sec = held as f64 / setup.as_secs_f64().max(1e-9);
    Ok(report)
}
