//! `bench churn`: holds N allocations for a bounded time while they refresh, end and
//! are replaced, and samples the server's memory, so that a leak or a relay port range
//! that does not refill shows up.
//!
//! Every allocation is made from its own client socket (Allocate with `--lifetime`,
//! then a ChannelBind to a peer nobody listens on, which also installs a permission).
//! It refreshes at half of the LIFETIME the server granted (Refresh, then the
//! ChannelBind again, which refreshes channel and permission). Each second `--churn`
//! allocations end: half are deleted (Refresh with LIFETIME 0), half abandoned (the
//! client socket is closed without a word, so the server must expire them after their
//! lifetime); each is replaced at once by a new allocation from a new socket. With a
//! short lifetime on the server (`--max-allocate-lifetime 60` for both tsunagi and
//! coturn), abandoned allocations expire within the run: the server holds N plus
//! those waiting to expire, and its relay ports must come back (a 508 "insufficient
//! capacity" answer means they did not).
//!
//! The report: the server's RSS when all N were first up and every `--sample`
//! seconds after that, allocations created per second, refreshes, deletes and
//! abandons done, and failed requests by error code. At the end every allocation
//! still held is deleted.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;

use super::client::{describe_failures, Auth, Driver, Outcome, Step};
use super::{err, procfs, BenchError, BenchTransport, ChurnArgs, Report};

/// Requests outstanding at once.
const CONCURRENCY: usize = 512;
/// A session whose request failed waits this long before it starts over.
const BACKOFF: Duration = Duration::from_secs(1);

/// The server's RSS at one moment of the run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RssSample {
    /// Seconds since every allocation was first up.
    pub t_s: f64,
    pub rss_kib: u64,
    /// Allocations the generator held at that moment.
    pub held: usize,
}

/// What `bench churn` counted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChurnReport {
    /// Allocations asked for (N).
    pub target: usize,
    /// Time to bring all N up.
    pub ramp_s: f64,
    /// Allocations created after the ramp, and per second.
    pub created: u64,
    pub created_per_sec: f64,
    pub refreshed: u64,
    pub deleted: u64,
    pub abandoned: u64,
    /// Failed requests answered 508 (no relay port free).
    pub insufficient_capacity: u64,
    /// Allocations held at the end, before the final deletes.
    pub held_at_end: usize,
    /// Fewest held at any sample after the ramp.
    pub min_held: usize,
    /// Shortest and longest LIFETIME the server granted.
    pub granted_lifetime_s: (u32, u32),
    pub rss: Vec<RssSample>,
}

/// What a session does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Allocate (from a new socket when `reopen` is set).
    Allocate,
    /// Refresh, then ChannelBind again.
    Refresh,
}

/// Where a session is in its cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting in the schedule.
    Idle,
    /// A request is outstanding.
    Busy,
}

pub fn run(a: &ChurnArgs) -> Result<Report, BenchError> {
    let c = &a.common;
    c.validate()?;
    if a.lifetime < 2 {
        return err("--lifetime must be at least 2 seconds");
    }
    if !(1.0..=c.duration).contains(&a.sample) {
        return err("--sample must be between 1 second and --duration");
    }
    let Some(pid) = c.server_pid else {
        return err("bench churn needs --server-pid to read the server's memory");
    };
    if procfs::rss_kib(pid).is_none() {
        return err(format!("cannot read /proc/{pid}/status"));
    }
    let auth: Auth = a.cred.auth()?;
    let tcp = c.transport == BenchTransport::Tcp;
    let n = c.allocations;
    let mut d = Driver::new(auth).map_err(|e| BenchError(format!("poll: {e}")))?;
    d.allocate_lifetime = Some(a.lifetime);
    for _ in 0..n {
        d.open(c.server, tcp)
            .map_err(|e| BenchError(format!("cannot open a client socket: {e}")))?;
    }
    // A peer nobody listens on: nothing is ever sent to it.
    let peer = SocketAddr::new(c.server.ip(), 9);
    let duration = Duration::from_secs_f64(c.duration);
    let sample = Duration::from_secs_f64(a.sample);
    let mut out = ChurnReport {
        target: n,
        ..ChurnReport::default()
    };
    let mut state = vec![State::Idle; n];
    let mut held = vec![false; n];
    let mut held_count = 0usize;
    // (due, session, what): the schedule of idle sessions.
    let mut queue: BinaryHeap<Reverse<(Instant, usize, u8)>> = BinaryHeap::new();
    let code = |x: Next| match x {
        Next::Allocate => 0u8,
        Next::Refresh => 1u8,
    };
    let t_start = Instant::now();
    for i in 0..n {
        queue.push(Reverse((t_start, i, code(Next::Allocate))));
    }
    let mut rng = rand::rng();
    let mut outstanding = 0usize;
    let mut done = Vec::new();
    let mut last_scan = t_start;
    // Set once all N are up: the measured part starts there.
    let mut t0: Option<Instant> = None;
    let mut next_sample = t_start;
    let mut churn_due = t_start;
    let mut churn_debt = 0.0f64;
    let mut ended = 0u64;
    let ramp_deadline = t_start + Duration::from_secs(120);
    let mut end = t_start + duration + Duration::from_secs(120);
    loop {
        let now = Instant::now();
        if t0.is_none() && (held_count == n || now >= ramp_deadline) {
            t0 = Some(now);
            out.ramp_s = now.duration_since(t_start).as_secs_f64();
            end = now + duration;
            next_sample = now;
            churn_due = now;
            out.min_held = held_count;
            d.failures.clear();
        }
        if now >= end {
            break;
        }
        if let Some(t0) = t0 {
            if now >= next_sample {
                out.rss.push(RssSample {
                    t_s: now.duration_since(t0).as_secs_f64(),
                    rss_kib: procfs::rss_kib(pid).unwrap_or(0),
                    held: held_count,
                });
                out.min_held = out.min_held.min(held_count);
                next_sample += sample;
            }
            // Churn: end some held, idle allocations (never more than are idle).
            if now >= churn_due {
                churn_debt += a.churn * 0.1;
                churn_due += Duration::from_millis(100);
                let mut tries = 0;
                while churn_debt >= 1.0 && tries < 64 {
                    tries += 1;
                    let i = rng.random_range(0..n);
                    if !held[i] || state[i] != State::Idle {
                        continue;
                    }
                    churn_debt -= 1.0;
                    // Its scheduled refresh is dropped below (stale entry).
                    held[i] = false;
                    held_count -= 1;
                    ended += 1;
                    let delete = ended % 2 == 1;
                    let s = &mut d.sessions[i];
                    if delete {
                        state[i] = State::Busy;
                        outstanding += 1;
                        d.start(i, Step::Delete, 0, now);
                    } else {
                        out.abandoned += 1;
                        s.nonce = None;
                        s.relay = None;
                        s.reopen = true;
                        queue.push(Reverse((now, i, code(Next::Allocate))));
                    }
                }
                churn_debt = churn_debt.min(a.churn);
            }
        }
        while outstanding < CONCURRENCY {
            let Some(&Reverse((due, i, what))) = queue.peek() else {
                break;
            };
            if due > now {
                break;
            }
            queue.pop();
            if state[i] != State::Idle {
                continue;
            }
            let step = if what == code(Next::Allocate) {
                if held[i] {
                    continue;
                }
                Step::Allocate
            } else {
                if !held[i] {
                    // Ended by the churn since this refresh was scheduled.
                    continue;
                }
                Step::Refresh(a.lifetime)
            };
            state[i] = State::Busy;
            outstanding += 1;
            d.start(i, step, 0, now);
        }
        d.poll_once(Duration::from_millis(5), &mut done);
        let now = Instant::now();
        if now.duration_since(last_scan) >= Duration::from_millis(50) {
            last_scan = now;
            d.check_pending(now, &mut done);
        }
        for (i, step, outcome) in done.drain(..) {
            let s = &mut d.sessions[i];
            match outcome {
                Outcome::Ok(_) => {}
                Outcome::Error(code) => {
                    *d.failures.entry(code).or_default() += 1;
                    if code == 508 {
                        out.insufficient_capacity += 1;
                    }
                }
                Outcome::Timeout => *d.failures.entry(0).or_default() += 1,
            }
            let ok = matches!(outcome, Outcome::Ok(_));
            if ok && matches!(step, Step::Allocate | Step::Refresh(_)) {
                if let Some(l) = s.lifetime {
                    let g = &mut out.granted_lifetime_s;
                    *g = if *g == (0, 0) {
                        (l, l)
                    } else {
                        (g.0.min(l), g.1.max(l))
                    };
                }
            }
            let refresh_in = |s: &super::client::Session| {
                Duration::from_secs(u64::from(s.lifetime.unwrap_or(a.lifetime).max(2) / 2))
            };
            match (step, ok) {
                (Step::Allocate, true) => {
                    d.start(i, Step::ChannelBind(0x4000, peer), 0, now);
                    continue;
                }
                (Step::ChannelBind(..), true) => {
                    if !held[i] {
                        held[i] = true;
                        held_count += 1;
                        if t0.is_some() {
                            out.created += 1;
                        }
                    }
                    let due = now + refresh_in(s);
                    queue.push(Reverse((due, i, code(Next::Refresh))));
                }
                (Step::Refresh(_), true) => {
                    out.refreshed += 1;
                    d.start(i, Step::ChannelBind(0x4000, peer), 0, now);
                    continue;
                }
                (Step::Delete, true) => {
                    out.deleted += 1;
                    s.nonce = None;
                    s.relay = None;
                    s.reopen = true;
                    queue.push(Reverse((now, i, code(Next::Allocate))));
                }
                (_, false) => {
                    // Start over from a new socket; the old allocation, if any,
                    // expires on the server.
                    if held[i] {
                        held[i] = false;
                        held_count -= 1;
                    }
                    s.nonce = None;
                    s.relay = None;
                    s.reopen = true;
                    queue.push(Reverse((now + BACKOFF, i, code(Next::Allocate))));
                }
            }
            state[i] = State::Idle;
            outstanding -= 1;
        }
        for s in &mut d.sessions {
            s.conn.flush();
        }
    }
    let t_end = Instant::now();
    let t0 = t0.unwrap_or(t_start);
    out.rss.push(RssSample {
        t_s: t_end.duration_since(t0).as_secs_f64(),
        rss_kib: procfs::rss_kib(pid).unwrap_or(0),
        held: held_count,
    });
    out.held_at_end = held_count;
    let secs = t_end.duration_since(t0).as_secs_f64().max(1e-9);
    out.created_per_sec = out.created as f64 / secs;
    let failures = describe_failures(&d.failures);
    // Delete what is still held (requests still outstanding are abandoned).
    d.run(
        0..n,
        CONCURRENCY,
        Instant::now() + Duration::from_secs(60),
        |i, s, r| match r {
            None if held[i] && s.relay.is_some() => Some(Step::Delete),
            _ => None,
        },
    );
    if out.rss.len() < 2 || held_count == 0 {
        return err(format!("no allocation was held ({failures})"));
    }
    let (first, last) = (out.rss[0], out.rss[out.rss.len() - 1]);
    Ok(Report {
        bench: "churn",
        server: c.server.to_string(),
        transport: Some(c.transport),
        allocations: n,
        threads: 1,
        duration_s: secs,
        setup_s: out.ramp_s,
        sent: out.created,
        received: out.created,
        per_sec: out.created_per_sec,
        server_rss_start_kib: Some(first.rss_kib),
        server_rss_end_kib: Some(last.rss_kib),
        server_peak_rss_kib: procfs::peak_rss_kib(pid),
        failures,
        churn: Some(out),
        ..Report::default()
    })
}
