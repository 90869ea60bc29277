//! The SFU core's thread: it owns the sans-IO `Sfu` and its UDP sockets, waits in its
//! poller for datagrams, queued input (ICE-TCP frames, signaling requests, WHIP/WHEP
//! commands, each queue ringing the core's waker) or the next deadline; hands every
//! datagram to the `Sfu` in place, in the receive buffer; and sends what the `Sfu`
//! emits, gathered per socket into one `sendmmsg` per batch.

use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{debug, warn};
use tsunagi_net::{EVENTS, MULTI_SEND_MAX, WAKER};

use super::driver::Session;
use super::*;

/// Longest wait when nothing is due (shutdown wakes the core anyway).
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Receives from one socket per turn while each fills every slot; a socket that may
/// still hold more is read again next turn, after the other sockets and the queues.
const READS_PER_TURN: usize = 4;

/// Queued items taken per queue per turn.
const BATCH: usize = 256;

/// One of the SFU's UDP sockets and the datagrams gathered for it.
#[derive(Debug)]
pub(super) struct SfuSocket {
    /// The host candidate it stands for (what the `Sfu` names as a transmit's source).
    pub(super) advertised: SocketAddr,
    pub(super) socket: FastSocket,
    pub(super) out: MultiSend,
}

/// The core's queues and its shutdown signal.
#[derive(Debug)]
pub(super) struct Inputs {
    pub(super) frames: mpsc::Receiver<Incoming>,
    pub(super) requests: mpsc::Receiver<SfuRequest>,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) shutdown: watch::Receiver<bool>,
}

impl Inputs {
    fn any_waiting(&self) -> bool {
        !self.frames.is_empty() || !self.requests.is_empty() || !self.commands.is_empty()
    }
}

pub(super) struct Core {
    pub(super) sfu: Sfu,
    pub(super) options: SfuOptions,
    pub(super) poller: Poller,
    /// Token `i` is `udp[i]`.
    pub(super) udp: Vec<SfuSocket>,
    pub(super) rx: RecvBufs,
    /// Sockets to read again next turn.
    pub(super) again: Vec<Token>,
    pub(super) tcp: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    pub(super) replies: mpsc::Sender<SfuReply>,
    /// Offers, answers and errors waiting for room in `replies` ([`Core::reply`]).
    pub(super) backlog: VecDeque<SfuReply>,
    /// Peers to remove at a time (after a switch back to mesh).
    pub(super) lingering: BTreeMap<Instant, Vec<String>>,
    /// WHIP/WHEP sessions by peer id.
    pub(super) sessions: HashMap<String, Session>,
    pub(super) counters: RuntimeCounters,
    /// ICE-TCP frames dropped because the core's queue was full (counted by the
    /// connections' tasks).
    pub(super) dropped: Arc<AtomicU64>,
    pub(super) stats: watch::Sender<SfuSnapshot>,
    pub(super) last_stats: Instant,
    /// Something happened since the stats watch was last refreshed.
    pub(super) stats_dirty: bool,
    pub(super) reply_warned: Option<Instant>,
    /// Joins the SFU refused since the last warning about them, and when that was:
    /// at most one warning every 10 s (a full SFU refuses every join).
    pub(super) join_refusals: (u64, Option<Instant>),
}

/// Hands up to [`BATCH`] queued items to `f`; how many there were.
fn take<T>(queue: &mut mpsc::Receiver<T>, mut f: impl FnMut(T)) -> usize {
    let mut n = 0;
    while n < BATCH {
        let Ok(item) = queue.try_recv() else {
            break;
        };
        f(item);
        n += 1;
    }
    n
}

impl Core {
    /// The core's loop, on a thread of its own, until shutdown (or the service is
    /// gone): wait, read the ready sockets, take queued input, handle what is due,
    /// send what all of that produced.
    pub(super) fn run(mut self, mut inputs: Inputs) {
        let waker = self.poller.waker();
        let mut tokens = Vec::with_capacity(2 * EVENTS);
        let mut busy = false;
        loop {
            if *inputs.shutdown.borrow() || inputs.shutdown.has_changed().is_err() {
                break;
            }
            tokens.clear();
            tokens.append(&mut self.again);
            let timeout = if busy || !tokens.is_empty() {
                Duration::ZERO
            } else {
                waker.sleeping();
                if inputs.any_waiting() {
                    Duration::ZERO
                } else {
                    // The poller rounds a wait up to its clock's tick (1 ms with
                    // epoll), so the deadline is due when the wait ends; adding more
                    // would delay every paced packet.
                    let now = Instant::now();
                    self.next_deadline()
                        .map_or(IDLE_WAIT, |t| t.saturating_duration_since(now))
                        .min(IDLE_WAIT)
                }
            };
            let more = match self.poller.wait(&mut tokens, Some(timeout)) {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %e, "SFU: waiting for UDP sockets failed");
                    std::thread::sleep(Duration::from_millis(10));
                    false
                }
            };
            waker.awake();
            let now = Instant::now();
            let mut rx = std::mem::replace(&mut self.rx, RecvBufs::empty());
            for &t in &tokens {
                if t != WAKER {
                    self.read_socket(now, t, &mut rx);
                }
            }
            self.rx = rx;
            let frames = take(&mut inputs.frames, |item| {
                self.counters.datagrams_in += 1;
                self.sfu
                    .handle_receive(now, item.proto, item.source, item.destination, &item.data);
            });
            let requests = take(&mut inputs.requests, |req| self.request(now, req));
            let commands = take(&mut inputs.commands, |cmd| self.command(now, cmd));
            self.expire_lingering(now);
            self.sfu.handle_timeout(now);
            self.drain(now);
            busy = more || [frames, requests, commands].contains(&BATCH) || !self.again.is_empty();
        }
        self.publish_stats();
        debug!("SFU core stopped");
    }

    /// Receives from the socket `t` names and hands every datagram to the `Sfu` in
    /// place: up to [`READS_PER_TURN`] receives while each fills every slot.
    fn read_socket(&mut self, now: Instant, t: Token, rx: &mut RecvBufs) {
        let Some(s) = self.udp.get(t.0) else {
            return;
        };
        let destination = s.advertised;
        for _ in 0..READS_PER_TURN {
            let full = match s.socket.recv_into(rx) {
                Ok(full) => full,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // ICMP errors surface here on Linux (ECONNREFUSED for a closed
                    // peer port): they concern one peer, never the socket. What is
                    // queued behind the error is read next turn.
                    debug!(socket = %destination, error = %e, "SFU UDP receive");
                    self.again.push(t);
                    return;
                }
            };
            for (data, source) in rx.datagrams() {
                self.counters.datagrams_in += 1;
                self.sfu
                    .handle_receive(now, Protocol::Udp, source, destination, data);
            }
            if !full {
                return;
            }
        }
        self.again.push(t);
    }

    pub(super) fn next_deadline(&mut self) -> Option<Instant> {
        let sfu = self.sfu.poll_timeout();
        let linger = self.lingering.keys().next().copied();
        // A last refresh of the stats after activity stops (e.g. the last session ended).
        let stats = self.stats_dirty.then(|| self.last_stats + STATS_EVERY);
        [sfu, linger, stats].into_iter().flatten().min()
    }

    /// Everything the `Sfu` has to send and to say, then the gathered datagrams out.
    pub(super) fn drain(&mut self, now: Instant) {
        self.flush_backlog();
        while let Some(t) = self.sfu.poll_transmit() {
            self.transmit(t);
        }
        while let Some(e) = self.sfu.poll_event() {
            self.event(e);
        }
        // Events can cause output (e.g. a session removed).
        while let Some(t) = self.sfu.poll_transmit() {
            self.transmit(t);
        }
        self.send_gathered();
        self.stats_dirty = true;
        if now.duration_since(self.last_stats) >= STATS_EVERY {
            self.last_stats = now;
            self.publish_stats();
        }
    }

    fn publish_stats(&mut self) {
        self.stats_dirty = false;
        self.counters.incoming_dropped = self.dropped.load(Ordering::Relaxed);
        let _ = self.stats.send(SfuSnapshot {
            core: self.sfu.stats(),
            runtime: self.counters.clone(),
        });
    }

    /// A UDP datagram joins its socket's batch (sent at the end of the turn, or once
    /// the batch is as large as one `sendmmsg` takes); a TCP frame goes to its
    /// connection's writer.
    fn transmit(&mut self, t: tsunagi_sfu::Transmit) {
        match t.proto {
            Protocol::Udp => {
                let i = self
                    .udp
                    .iter()
                    .position(|s| s.advertised == t.source)
                    .or_else(|| {
                        self.udp
                            .iter()
                            .position(|s| s.advertised.is_ipv4() == t.destination.is_ipv4())
                    });
                let Some(i) = i else {
                    self.counters.send_errors += 1;
                    return;
                };
                let full = self.udp.get_mut(i).is_some_and(|s| {
                    s.out.push(t.destination, &t.contents);
                    s.out.len() >= MULTI_SEND_MAX
                });
                if full {
                    self.send_socket(i);
                }
            }
            Protocol::Tcp => match self.tcp.get(&t.destination) {
                Some(w) => {
                    if w.try_send(t.contents).is_err() {
                        self.counters.send_errors += 1;
                    }
                }
                None => self.counters.send_errors += 1,
            },
        }
    }

    fn send_gathered(&mut self) {
        for i in 0..self.udp.len() {
            self.send_socket(i);
        }
    }

    /// Sends socket `i`'s batch; a datagram not sent (a full socket buffer, an
    /// unreachable destination) is counted.
    fn send_socket(&mut self, i: usize) {
        let Some(s) = self.udp.get_mut(i) else {
            return;
        };
        if s.out.is_empty() {
            return;
        }
        let errors = &mut self.counters.send_errors;
        s.out.send(&s.socket, |e, to| {
            *errors += 1;
            debug!(%to, error = %e, "SFU send");
        });
    }
}
