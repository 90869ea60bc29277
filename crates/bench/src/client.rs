//! TURN client sessions for the load generator: one [`Session`] per client 5-tuple, and
//! a [`Driver`] that runs requests (Allocate, ChannelBind, Refresh, Binding) on many
//! sessions at once with bounded concurrency, long-term authentication (the first 401
//! supplies realm and nonce; 438 renews the nonce) and retransmission over UDP.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use rand::RngCore;
use tsunagi_stun::{
    attr, Class, IntegrityKey, Message, MessageEncoder, Method, PasswordAlgorithm, TransactionId,
};

use super::conn::{Conn, RecvScratch};

/// First UDP retransmission timeout; doubles up to [`MAX_TRIES`] sends (RFC 8489 §6.2.1
/// uses 500 ms and 7 sends).
const RTO: Duration = Duration::from_millis(500);
const MAX_TRIES: u32 = 7;
/// Times a request may be re-sent with new credentials (401 then 438s).
const MAX_CHALLENGES: u32 = 3;
/// How often pending requests are checked for retransmission.
const RETRANSMIT_SCAN: Duration = Duration::from_millis(50);

/// Credentials for every session.
#[derive(Debug, Clone)]
pub struct Auth {
    pub username: String,
    pub password: String,
    /// Realm to use; `None` takes the one in the server's 401.
    pub realm: Option<String>,
}

/// A request a session can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Allocate a UDP relay.
    Allocate,
    /// Bind `channel` to `peer` (this also installs a permission for the peer's IP).
    ChannelBind(u16, SocketAddr),
    /// Refresh with LIFETIME 0: delete the allocation.
    Delete,
    /// Refresh with this LIFETIME in seconds.
    Refresh(u32),
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Success; for Allocate, the XOR-RELAYED-ADDRESS.
    Ok(Option<SocketAddr>),
    /// An error response with this code.
    Error(u16),
    /// No response after every retransmission, or the connection closed.
    Timeout,
}

#[derive(Debug)]
struct Pending {
    step: Step,
    tid: [u8; 12],
    sent: Instant,
    rto: Duration,
    tries: u32,
    challenges: u32,
    /// Whether the request carried credentials.
    authed: bool,
    /// The encoded request, for retransmission.
    wire: Vec<u8>,
}

/// One client 5-tuple and what the server told it.
#[derive(Debug)]
pub struct Session {
    pub conn: Conn,
    pub nonce: Option<Vec<u8>>,
    pub relay: Option<SocketAddr>,
    /// LIFETIME granted by the last successful Allocate or Refresh.
    pub lifetime: Option<u32>,
    /// Replace the connection by a new one (a new 5-tuple) before the next request.
    pub reopen: bool,
    pending: Option<Pending>,
}

impl Session {
    pub fn new(conn: Conn) -> Self {
        Self {
            conn,
            nonce: None,
            relay: None,
            lifetime: None,
            reopen: false,
            pending: None,
        }
    }
}

/// Counts of failed requests by error code (0 = timeout), for the report.
pub type Failures = HashMap<u16, u64>;

/// Sessions on one thread and the poll that reads them. Session `i` has token `i`.
#[derive(Debug)]
pub struct Driver {
    pub poll: Poll,
    pub events: Events,
    pub sessions: Vec<Session>,
    pub scratch: RecvScratch,
    auth: Auth,
    /// Where sessions connect, for [`Session::reopen`].
    server: Option<(SocketAddr, bool)>,
    /// The realm learned from the server and the key for it.
    key: Option<(String, IntegrityKey)>,
    pub failures: Failures,
    /// LIFETIME asked for in Allocate requests; none by default.
    pub allocate_lifetime: Option<u32>,
    /// Messages read but not yet handled: (session, start, end) into `inbox`.
    inbox: Vec<u8>,
    inbox_idx: Vec<(usize, usize, usize)>,
}

/// Encodes a request into `buf`, authenticated when `cred` is given.
fn encode(
    buf: &mut [u8],
    step: Step,
    tid: [u8; 12],
    cred: Option<(&str, &str, &[u8], &IntegrityKey)>,
    allocate_lifetime: Option<u32>,
) -> Result<usize, tsunagi_stun::EncodeError> {
    let method = match step {
        Step::Allocate => Method::ALLOCATE,
        Step::ChannelBind(..) => Method::CHANNEL_BIND,
        Step::Delete | Step::Refresh(_) => Method::REFRESH,
    };
    let mut enc = MessageEncoder::new(buf, Class::Request, method, TransactionId::new(tid))?;
    match step {
        Step::Allocate => {
            enc.requested_transport(attr::PROTO_UDP)?;
            if let Some(secs) = allocate_lifetime {
                enc.u32(attr::LIFETIME, secs)?;
            }
        }
        Step::ChannelBind(ch, peer) => {
            enc.channel_number(ch)?;
            enc.xor_address(attr::XOR_PEER_ADDRESS, &peer)?;
        }
        Step::Delete => {
            enc.u32(attr::LIFETIME, 0)?;
        }
        Step::Refresh(secs) => {
            enc.u32(attr::LIFETIME, secs)?;
        }
    }
    if let Some((user, realm, nonce, key)) = cred {
        enc.string(attr::USERNAME, user)?;
        enc.string(attr::REALM, realm)?;
        enc.attr(attr::NONCE, nonce)?;
        enc.message_integrity(key)?;
    }
    enc.fingerprint()?;
    Ok(enc.finish())
}

impl Driver {
    pub fn new(auth: Auth) -> io::Result<Self> {
        Ok(Self {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            sessions: Vec::new(),
            scratch: RecvScratch::new(),
            auth,
            server: None,
            key: None,
            failures: Failures::new(),
            allocate_lifetime: None,
            inbox: Vec::new(),
            inbox_idx: Vec::new(),
        })
    }

    /// Opens a session to `server` and registers it.
    pub fn open(&mut self, server: SocketAddr, tcp: bool) -> io::Result<usize> {
        let mut conn = Conn::open(server, tcp)?;
        self.server = Some((server, tcp));
        let i = self.sessions.len();
        conn.register(self.poll.registry(), Token(i))?;
        self.sessions.push(Session::new(conn));
        Ok(i)
    }

    fn realm(&self) -> Option<&str> {
        self.auth
            .realm
            .as_deref()
            .or(self.key.as_ref().map(|(r, _)| r.as_str()))
    }

    /// Encodes and sends `step` on session `i`.
    pub(super) fn start(&mut self, i: usize, step: Step, challenges: u32, now: Instant) {
        if std::mem::take(&mut self.sessions[i].reopen) {
            if let Some((server, tcp)) = self.server {
                // The old socket closes when dropped, which also takes it out of the poll.
                let opened = Conn::open(server, tcp).and_then(|mut c| {
                    c.register(self.poll.registry(), Token(i))?;
                    Ok(c)
                });
                match opened {
                    Ok(c) => self.sessions[i].conn = c,
                    Err(_) => *self.failures.entry(2).or_default() += 1,
                }
            }
        }
        let mut tid = [0u8; 12];
        rand::rng().fill_bytes(&mut tid);
        let mut buf = [0u8; 512];
        let s = &self.sessions[i];
        let mut authed = false;
        let n = match (&s.nonce, self.realm(), &self.key) {
            (Some(nonce), Some(realm), Some((_, key))) => {
                authed = true;
                encode(
                    &mut buf,
                    step,
                    tid,
                    Some((&self.auth.username, realm, nonce, key)),
                    self.allocate_lifetime,
                )
            }
            _ => encode(&mut buf, step, tid, None, self.allocate_lifetime),
        };
        let Ok(n) = n else {
            // Only a realm or username too long for 512 bytes gets here.
            *self.failures.entry(1).or_default() += 1;
            return;
        };
        let wire = buf[..n].to_vec();
        let s = &mut self.sessions[i];
        // A full socket buffer is a lost datagram: the retransmission covers it.
        let _ = s.conn.send(&wire);
        s.pending = Some(Pending {
            step,
            tid,
            sent: now,
            rto: RTO,
            tries: 1,
            challenges,
            authed,
            wire,
        });
    }

    /// Handles a message that arrived on session `i`; returns the outcome if it
    /// finished that session's request.
    fn on_message(&mut self, i: usize, msg: &[u8], now: Instant) -> Option<(Step, Outcome)> {
        let m = Message::parse(msg).ok()?;
        let p = self.sessions[i].pending.as_ref()?;
        if m.transaction_id().0 != p.tid || !matches!(m.class(), Class::Success | Class::Error) {
            return None;
        }
        let (step, challenges, authed) = (p.step, p.challenges, p.authed);
        if m.class() == Class::Success {
            let relay = m.get_xor_address(attr::XOR_RELAYED_ADDRESS).ok().flatten();
            let lifetime = m.get_u32(attr::LIFETIME).ok().flatten();
            let s = &mut self.sessions[i];
            s.pending = None;
            if step == Step::Allocate {
                s.relay = relay;
            }
            if lifetime.is_some() {
                s.lifetime = lifetime;
            }
            return Some((step, Outcome::Ok(relay)));
        }
        let code = m.error_code().ok().flatten().map_or(0, |e| e.code);
        // 401 to a request without credentials is the challenge; 401 to one with
        // credentials means they are wrong, and retrying cannot help. 438: new nonce.
        let retry = (code == 401 && !authed || code == 438) && challenges < MAX_CHALLENGES;
        if retry {
            if let (Some(nonce), Ok(Some(realm))) = (m.get(attr::NONCE), m.get_str(attr::REALM)) {
                let realm = self.auth.realm.clone().unwrap_or_else(|| realm.to_owned());
                if self.key.as_ref().is_none_or(|(r, _)| *r != realm) {
                    let key = IntegrityKey::long_term(
                        PasswordAlgorithm::Md5,
                        &self.auth.username,
                        &realm,
                        &self.auth.password,
                    );
                    self.key = Some((realm, key));
                }
                self.sessions[i].nonce = Some(nonce.to_vec());
                self.start(i, step, challenges + 1, now);
                return None;
            }
        }
        if std::env::var_os("BENCH_DEBUG").is_some() {
            eprintln!("{step:?} -> {code} {:?}", m.get_str(attr::ERROR_CODE));
        }
        self.sessions[i].pending = None;
        Some((step, Outcome::Error(code)))
    }

    /// Retransmits (UDP) or times out pending requests; returns the timed-out ones.
    pub(super) fn check_pending(&mut self, now: Instant, out: &mut Vec<(usize, Step, Outcome)>) {
        for (i, s) in self.sessions.iter_mut().enumerate() {
            let Some(p) = s.pending.as_mut() else {
                continue;
            };
            if s.conn.is_closed() {
                out.push((i, p.step, Outcome::Timeout));
                s.pending = None;
                continue;
            }
            if now.duration_since(p.sent) < p.rto {
                continue;
            }
            // Over TCP nothing is re-sent: the request times out after 500+1000+...+4000 ms.
            if p.tries >= MAX_TRIES || s.conn.is_tcp() && p.rto >= RTO * 8 {
                out.push((i, p.step, Outcome::Timeout));
                s.pending = None;
                continue;
            }
            if !s.conn.is_tcp() {
                let _ = s.conn.send(&p.wire);
                p.tries += 1;
            }
            p.sent = now;
            p.rto = (p.rto * 2).min(Duration::from_secs(8));
        }
    }

    /// Polls once (up to `timeout`) and handles what arrived; finished requests go to
    /// `done`.
    pub(super) fn poll_once(&mut self, timeout: Duration, done: &mut Vec<(usize, Step, Outcome)>) {
        if self.poll.poll(&mut self.events, Some(timeout)).is_err() {
            return;
        }
        self.inbox.clear();
        self.inbox_idx.clear();
        for ev in self.events.iter() {
            let i = ev.token().0;
            let Some(s) = self.sessions.get_mut(i) else {
                continue;
            };
            let inbox = &mut self.inbox;
            let idx = &mut self.inbox_idx;
            s.conn.recv_all(&mut self.scratch, |m| {
                let start = inbox.len();
                inbox.extend_from_slice(m);
                idx.push((i, start, inbox.len()));
            });
        }
        let now = Instant::now();
        let inbox = std::mem::take(&mut self.inbox);
        let idx = std::mem::take(&mut self.inbox_idx);
        for &(i, a, b) in &idx {
            if let Some((step, outcome)) = self.on_message(i, &inbox[a..b], now) {
                done.push((i, step, outcome));
            }
        }
        self.inbox = inbox;
        self.inbox_idx = idx;
    }

    /// Runs requests on sessions `range`: `next(i, session, None)` names the first
    /// request of session `i` (or `None`), `next(i, session, Some((step, outcome)))` the one after `step`
    /// finished. At most `concurrency` sessions have a request outstanding. Returns when
    /// every session is done, or at `deadline` (requests still outstanding then are
    /// abandoned and counted as timeouts).
    pub fn run(
        &mut self,
        range: std::ops::Range<usize>,
        concurrency: usize,
        deadline: Instant,
        mut next: impl FnMut(usize, &mut Session, Option<(Step, Outcome)>) -> Option<Step>,
    ) {
        let concurrency = concurrency.max(1);
        let mut cursor = range.start;
        let mut outstanding = 0usize;
        let mut done = Vec::new();
        let mut last_scan = Instant::now();
        loop {
            let now = Instant::now();
            while outstanding < concurrency && cursor < range.end {
                let i = cursor;
                cursor += 1;
                if let Some(step) = next(i, &mut self.sessions[i], None) {
                    self.start(i, step, 0, now);
                    outstanding += 1;
                }
            }
            if outstanding == 0 && cursor >= range.end {
                return;
            }
            if now >= deadline {
                for s in &mut self.sessions[range.clone()] {
                    if s.pending.take().is_some() {
                        *self.failures.entry(0).or_default() += 1;
                    }
                }
                return;
            }
            self.poll_once(Duration::from_millis(5), &mut done);
            let now = Instant::now();
            if now.duration_since(last_scan) >= RETRANSMIT_SCAN {
                last_scan = now;
                self.check_pending(now, &mut done);
            }
            for (i, step, outcome) in done.drain(..) {
                if !range.contains(&i) {
                    continue;
                }
                match outcome {
                    Outcome::Ok(_) => {}
                    Outcome::Error(code) => *self.failures.entry(code).or_default() += 1,
                    Outcome::Timeout => *self.failures.entry(0).or_default() += 1,
                }
                match next(i, &mut self.sessions[i], Some((step, outcome))) {
                    Some(step) => self.start(i, step, 0, now),
                    None => outstanding -= 1,
                }
            }
            for s in &mut self.sessions[range.clone()] {
                s.conn.flush();
            }
        }
    }
}

/// One line summary of failures, e.g. "401 x3, timeout x1".
pub fn describe_failures(f: &Failures) -> String {
    let mut v: Vec<_> = f.iter().collect();
    v.sort();
    v.iter()
        .map(|(code, n)| match code {
            0 => format!("timeout x{n}"),
            1 => format!("encode x{n}"),
            2 => format!("socket x{n}"),
            c => format!("{c} x{n}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
