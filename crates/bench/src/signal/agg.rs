//! What the clients count, behind one lock: joins, membership, chats sent and received,
//! errors.

use super::report::{FanOut, PartResult, ServerResult};
use super::*;

/// Deliveries of chats sent inside the window, of one kind (same server, or across
/// servers).
#[derive(Debug, Clone)]
pub(crate) struct Part {
    pub(crate) expected: u64,
    pub(crate) received: u64,
    /// Send to receipt, ns (µs resolution: the send time travels in µs).
    pub(crate) latency: Histogram,
}

impl Part {
    fn new() -> Self {
        Self {
            expected: 0,
            received: 0,
            latency: Histogram::new(),
        }
    }

    fn result(&self) -> PartResult {
        PartResult {
            expected: self.expected,
            received: self.received,
            lost: self.expected.saturating_sub(self.received),
            latency_us: Latency::of(&self.latency),
        }
    }
}

/// The fan-out counters.
#[derive(Debug, Clone)]
pub(crate) struct FanOutAgg {
    pub(crate) sent_total: u64,
    pub(crate) sent_window: u64,
    /// Sender and receiver on the same server, and on different ones.
    pub(crate) same: Part,
    pub(crate) cross: Part,
    /// Window chats that arrived after the drain period.
    pub(crate) late: u64,
    /// Chats sent during the warm-up (not measured).
    pub(crate) outside_window: u64,
    /// Chats from a bench client of another room: the server delivered to the wrong
    /// room.
    pub(crate) misrouted: u64,
    /// Chats whose text is not ours (another client in the room).
    pub(crate) foreign: u64,
}

impl FanOutAgg {
    pub(crate) fn expected(&self) -> u64 {
        self.same.expected + self.cross.expected
    }

    pub(crate) fn received(&self) -> u64 {
        self.same.received + self.cross.received
    }

    pub(crate) fn result(&self) -> FanOut {
        let (expected, received) = (self.expected(), self.received());
        let mut all = self.same.latency.clone();
        all.merge(&self.cross.latency);
        let lost = expected.saturating_sub(received);
        FanOut {
            expected,
            received,
            lost,
            loss_ratio: if expected == 0 {
                0.0
            } else {
                lost as f64 / expected as f64
            },
            latency_us: Latency::of(&all),
            same_server: self.same.result(),
            cross_server: self.cross.result(),
            late: self.late,
            outside_window: self.outside_window,
            misrouted: self.misrouted,
            foreign: self.foreign,
        }
    }
}

/// Everything the clients count.
#[derive(Debug)]
pub(crate) struct Agg {
    pub(crate) servers: usize,
    pub(crate) joined: u64,
    pub(crate) join_failures: BTreeMap<String, u64>,
    /// Connect to `welcome`, ns.
    pub(crate) join_latency: Histogram,
    pub(crate) first_connect: Option<Instant>,
    pub(crate) last_join_end: Option<Instant>,
    pub(crate) welcome_modes: BTreeMap<String, u64>,
    /// The smallest `maxPeers` of any `welcome`.
    pub(crate) max_peers: Option<u64>,
    pub(crate) mode_messages: u64,
    /// Joined members now, by room and server: `members[room * servers + server]`.
    pub(crate) members: Vec<u32>,
    pub(crate) per_server: Vec<ServerResult>,
    pub(crate) fanout: FanOutAgg,
    /// `error` messages after `welcome` by code; `rejoin: {reason}`.
    pub(crate) errors: BTreeMap<String, u64>,
    /// Connections that ended before the close phase, by cause.
    pub(crate) disconnects: BTreeMap<String, u64>,
    pub(crate) closed_clean: u64,
    pub(crate) close_failures: BTreeMap<String, u64>,
}

impl Agg {
    pub(crate) fn new(rooms: usize, servers: usize) -> Self {
        Self {
            servers,
            joined: 0,
            join_failures: BTreeMap::new(),
            join_latency: Histogram::new(),
            first_connect: None,
            last_join_end: None,
            welcome_modes: BTreeMap::new(),
            max_peers: None,
            mode_messages: 0,
            members: vec![0; rooms * servers],
            per_server: vec![ServerResult::default(); servers],
            fanout: FanOutAgg {
                sent_total: 0,
                sent_window: 0,
                same: Part::new(),
                cross: Part::new(),
                late: 0,
                outside_window: 0,
                misrouted: 0,
                foreign: 0,
            },
            errors: BTreeMap::new(),
            disconnects: BTreeMap::new(),
            closed_clean: 0,
            close_failures: BTreeMap::new(),
        }
    }

    pub(crate) fn connect_started(&mut self, at: Instant, server: usize) {
        self.first_connect = Some(self.first_connect.map_or(at, |f| f.min(at)));
        if let Some(p) = self.per_server.get_mut(server) {
            p.clients += 1;
        }
    }

    fn join_ended(&mut self, at: Instant) {
        self.last_join_end = Some(self.last_join_end.map_or(at, |l| l.max(at)));
    }

    pub(crate) fn joined(&mut self, room: usize, server: usize, started: Instant, at: Instant) {
        self.join_ended(at);
        self.joined += 1;
        self.join_latency
            .record(at.duration_since(started).as_nanos() as u64);
        if let Some(m) = self.members.get_mut(room * self.servers + server) {
            *m += 1;
        }
        if let Some(p) = self.per_server.get_mut(server) {
            p.joined += 1;
        }
    }

    pub(crate) fn join_failed(&mut self, server: usize, why: String, at: Instant) {
        self.join_ended(at);
        count(&mut self.join_failures, why);
        if let Some(p) = self.per_server.get_mut(server) {
            p.join_failed += 1;
        }
    }

    /// A joined client's connection ended before the close phase.
    pub(crate) fn disconnected(&mut self, room: usize, server: usize, why: String) {
        self.left(room, server);
        count(&mut self.disconnects, why);
        if let Some(p) = self.per_server.get_mut(server) {
            p.disconnected += 1;
        }
    }

    /// A joined client is no longer a member.
    pub(crate) fn left(&mut self, room: usize, server: usize) {
        if let Some(m) = self.members.get_mut(room * self.servers + server) {
            *m = m.saturating_sub(1);
        }
    }

    /// A chat was sent: in the window, every other member now should receive it.
    pub(crate) fn sent(&mut self, room: usize, server: usize, in_window: bool) {
        let f = &mut self.fanout;
        f.sent_total += 1;
        if !in_window {
            return;
        }
        f.sent_window += 1;
        let base = room * self.servers;
        for s in 0..self.servers {
            let m = u64::from(self.members.get(base + s).copied().unwrap_or(0));
            if s == server {
                f.same.expected += m.saturating_sub(1);
            } else {
                f.cross.expected += m;
            }
        }
    }

    /// A window chat arrived at a client on `server` from one on `from_server`.
    pub(crate) fn received(&mut self, server: usize, from_server: usize, latency_ns: u64) {
        let part = if server == from_server {
            &mut self.fanout.same
        } else {
            &mut self.fanout.cross
        };
        part.received += 1;
        part.latency.record(latency_ns);
        if let Some(p) = self.per_server.get_mut(server) {
            p.received += 1;
        }
    }

    /// From the first connect to the last join answered (welcome or refusal).
    pub(crate) fn join_span_s(&self) -> f64 {
        match (self.first_connect, self.last_join_end) {
            (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
            _ => 0.0,
        }
    }

    /// Joins completed per second over [`Agg::join_span_s`].
    pub(crate) fn join_rate(&self) -> f64 {
        let s = self.join_span_s();
        if s > 0.0 {
            self.joined as f64 / s
        } else {
            0.0
        }
    }
}
