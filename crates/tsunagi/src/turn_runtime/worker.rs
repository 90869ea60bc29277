//! A worker thread of the TURN runtime: one sans-IO `Server`, its share of the listener
//! sockets, its relay sockets and its poll loop, batched reads and writes, and its logs.

use super::*;

/// Allows `per_sec` log lines per second and counts the rest, so that a flood of bad
/// requests cannot flood the log.
#[derive(Debug)]
pub(super) struct LogLimiter {
    pub(super) per_sec: u32,
    pub(super) window: Instant,
    pub(super) used: u32,
    pub(super) suppressed: u64,
}

impl LogLimiter {
    pub(super) fn new(per_sec: u32) -> Self {
        Self {
            per_sec,
            window: Instant::now(),
            used: 0,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last allowed line)` if a line may be logged now.
    pub(super) fn allow(&mut self, now: Instant) -> Option<u64> {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.used = 0;
        }
        if self.used < self.per_sec {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// The task that owns the server.
pub(super) struct Core {
    pub(super) server: Server,
    pub(super) relays: RelayPool,
    /// UDP listener sockets by local address, for responses.
    pub(super) udp_out: HashMap<SocketAddr, Arc<FastSocket>>,
    /// Write queues of open TCP connections. Bounded by max-tcp-connections; the
    /// default hasher is SipHash with random keys, as keys come from clients.
    pub(super) tcp_out: HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>,
    pub(super) counters: Arc<Counters>,
    pub(super) redact: Redactor,
    /// Every worker's counters; this core writes slot `index`.
    pub(super) stats_tx: Arc<watch::Sender<Vec<Stats>>>,
    pub(super) index: usize,
    /// What `stats_tx` holds, so that an unchanged batch does not touch its lock.
    pub(super) published: Stats,
    pub(super) auth_log: LogLimiter,
    /// The run of messages being gathered until the end of a batch.
    pub(super) run: Run,
    /// Where `handle_peer_into` builds messages for clients: a ChannelData or Data
    /// indication around the largest UDP payload.
    pub(super) scratch: Vec<u8>,
    /// The clock reading of the batch being handled (see [`Core::hand_off`]).
    pub(super) now: Instant,
    /// Lone datagrams for clients from the listener `multi_from`, sent together
    /// (`sendmmsg`) once [`MULTI_FLUSH_AT`] are gathered or at the end of the batch.
    pub(super) multi: MultiSend,
    pub(super) multi_from: Option<SocketAddr>,
    /// Every UDP socket of the core is registered here.
    pub(super) poller: Poller,
    /// UDP listeners by token (`LISTENER_TOKEN | index`).
    pub(super) udp_in: Vec<(SocketAddr, Arc<FastSocket>)>,
    /// Where each receive lands.
    pub(super) rx: RecvBufs,
    /// Sockets whose last receive filled every slot: read again next turn.
    pub(super) again: Vec<Token>,
    /// The quota board, when `user-quota` or `total-quota` is set ([`quota`]).
    pub(super) quota: Option<quota::Exchange>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("relays", &self.relays.len())
            .field("tcp_connections", &self.tcp_out.len())
            .finish_non_exhaustive()
    }
}

/// TCP inputs handled in one turn of the core's loop (UDP sockets: at most
/// [`tsunagi_net::EVENTS`] reported ones and as many to read again). Everything gathered in
/// a turn leaves at its end.
pub(super) const BATCH: usize = 64;

/// Longest sleep of the core without anything to do: a bound, not a tick (input,
/// deadlines and shutdown wake it).
pub(super) const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Receives (of up to 16 datagrams each) from one socket in one turn, while each fills
/// every slot: a busy socket's datagrams are handled 64 at a time, in runs that leave
/// together, as before the core read the sockets itself.
pub(super) const READS_PER_TURN: usize = 4;

/// Lone datagrams for clients gathered for one `sendmmsg` before it is sent, even in
/// the middle of a batch: 16 per call still saves 15 system calls of 16 under full
/// load (63 of 64 before), and the first datagram gathered no longer waits for the
/// handling of up to 63 more inputs.
pub(super) const MULTI_FLUSH_AT: usize = 16;

/// Where a run of UDP transmits goes: from a listener to a client, or from a relay
/// socket to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RunKey {
    Listener {
        local: SocketAddr,
        to: SocketAddr,
    },
    Relay {
        relay: SocketAddr,
        to: SocketAddr,
        df: bool,
    },
}

/// Equal-sized datagrams for one destination, waiting to be sent together. The first
/// stays in its own buffer: a run of one (the common case with many allocations) is
/// sent from there. Both buffers keep their capacity: no allocation per packet.
#[derive(Debug, Default)]
pub(super) struct Run {
    pub(super) key: Option<RunKey>,
    pub(super) first: Vec<u8>,
    /// The second and later datagrams back to back; its capacity is kept.
    pub(super) rest: Vec<u8>,
    pub(super) count: usize,
}

impl Run {
    /// Appends `payload` if it continues this run.
    pub(super) fn extend(&mut self, key: RunKey, payload: &[u8]) -> bool {
        let fits = self.key == Some(key)
            && payload.len() == self.first.len()
            && self.count < tsunagi_net::GSO_MAX_SEGMENTS
            && (self.count + 1) * payload.len() <= tsunagi_net::GSO_MAX_BYTES;
        if fits {
            self.rest.extend_from_slice(payload);
            self.count += 1;
        }
        fits
    }

    /// Starts a new run (the previous one must have been flushed).
    pub(super) fn start(&mut self, key: RunKey, payload: &[u8]) {
        self.key = Some(key);
        self.first.clear();
        self.first.extend_from_slice(payload);
        self.rest.clear();
        self.count = 1;
    }

    /// The whole run back to back (moves the first datagram in front of the rest).
    pub(super) fn contents(&mut self) -> &[u8] {
        if self.count > 1 {
            self.rest.splice(0..0, self.first.iter().copied());
            &self.rest
        } else {
            &self.first
        }
    }
}

/// The run a UDP message to `dest` can join; `None` for TCP/TLS clients and RFC 5780
/// responses from another listener.
pub(super) fn run_key(dest: &Destination) -> Option<RunKey> {
    match *dest {
        Destination::Client(ft) if ft.transport == Transport::Udp => Some(RunKey::Listener {
            local: ft.server,
            to: ft.client,
        }),
        Destination::Peer {
            relay,
            peer,
            dont_fragment,
        } => Some(RunKey::Relay {
            relay,
            to: peer,
            df: dont_fragment,
        }),
        _ => None,
    }
}

impl Core {
    /// The core's loop, on a thread of its own: waits in `epoll_wait` for sockets,
    /// the waker (TCP input, shutdown) or the server's next deadline; then reads the
    /// ready sockets, takes queued TCP input, handles due timers and sends what all of
    /// that produced. Returns the server's final counters once `shutdown` is set or
    /// its sender is gone.
    pub(super) fn run(
        mut self,
        mut client_rx: mpsc::Receiver<ClientInput>,
        shutdown: watch::Receiver<bool>,
    ) -> Stats {
        let waker = self.poller.waker();
        let mut tokens = Vec::with_capacity(2 * tsunagi_net::EVENTS);
        let mut busy = false;
        loop {
            if *shutdown.borrow() || shutdown.has_changed().is_err() {
                break;
            }
            // Sockets first read again (`again`), then the ones epoll reports.
            tokens.clear();
            let again = self.again.len().min(tsunagi_net::EVENTS);
            tokens.extend(self.again.drain(..again));
            let timeout = if busy || !tokens.is_empty() {
                Some(Duration::ZERO)
            } else {
                waker.sleeping();
                if client_rx.is_empty() {
                    // Until the next deadline of the server (rounded up, so that it is
                    // due when the wait ends) or of the quota exchange, or a while:
                    // shutdown wakes it anyway.
                    let exchange = self
                        .quota
                        .as_ref()
                        .filter(|q| q.active)
                        .map_or(IDLE_WAIT, |q| {
                            q.next.saturating_duration_since(Instant::now())
                        });
                    Some(
                        self.server
                            .poll_timeout()
                            .map_or(IDLE_WAIT, |t| {
                                t.saturating_duration_since(Instant::now())
                                    + Duration::from_micros(500)
                            })
                            .min(IDLE_WAIT)
                            .min(exchange),
                    )
                } else {
                    Some(Duration::ZERO)
                }
            };
            let more = match self.poller.wait(&mut tokens, timeout) {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %e, "waiting for UDP sockets failed");
                    Counters::inc(&self.counters.recv_errors);
                    std::thread::sleep(Duration::from_millis(10));
                    false
                }
            };
            waker.awake();
            let now = Instant::now();
            self.now = now;
            let mut rx = std::mem::replace(&mut self.rx, RecvBufs::empty());
            for &t in &tokens {
                if t != WAKER {
                    self.read_socket(t, &mut rx);
                }
            }
            self.rx = rx;
            // TCP and TLS frames, a batch at a time.
            let mut taken = 0;
            while taken < BATCH {
                match client_rx.try_recv() {
                    Ok(input) => {
                        self.on_client(input, now);
                        taken += 1;
                    }
                    Err(_) => break,
                }
            }
            if self.server.poll_timeout().is_some_and(|t| t <= now) {
                self.server.handle_timeout(now, &mut self.relays);
            }
            self.exchange_quota(now);
            self.drain();
            self.publish_stats();
            busy = more || taken == BATCH || !self.again.is_empty();
        }
        let live = self.server.allocation_count();
        self.relays.release_all();
        self.tcp_out.clear();
        info!(
            allocations = live,
            "STUN/TURN stopped; relay sockets closed"
        );
        self.publish_stats();
        self.server.stats()
    }

    /// Every [`quota::EXCHANGE`]: writes this worker's allocations on the board if they
    /// changed, and gives the server what the other workers and nodes hold if that
    /// changed. Inactive (one worker, no cluster): only checks once per exchange period
    /// whether it became needed, without waking the loop for it.
    pub(super) fn exchange_quota(&mut self, now: Instant) {
        let Some(q) = &mut self.quota else {
            return;
        };
        if now < q.next {
            return;
        }
        q.next = now + quota::EXCHANGE;
        q.active = q.board.needed();
        if !q.active {
            return;
        }
        let s = self.server.stats();
        let mark = (s.allocations_created, s.allocations_deleted);
        if mark != q.written {
            q.written = mark;
            q.board.publish(self.index, self.server.usage());
        }
        if let Some(e) = q.board.elsewhere(self.index, &mut q.seen, now) {
            self.server.set_elsewhere(e);
        }
    }

    pub(super) fn publish_stats(&mut self) {
        let now = self.server.stats();
        if now != self.published {
            self.published = now;
            let i = self.index;
            self.stats_tx.send_modify(|v| {
                if let Some(slot) = v.get_mut(i) {
                    *slot = now;
                }
            });
        }
    }

    /// Receives from the socket `t` names, and handles every datagram in place: up to
    /// [`READS_PER_TURN`] receives while each fills every slot; a socket that still
    /// may hold more is read again next turn.
    pub(super) fn read_socket(&mut self, t: Token, rx: &mut RecvBufs) {
        for _ in 0..READS_PER_TURN {
            let (local, relay, r) = if t.0 & LISTENER_TOKEN != 0 {
                let Some((local, sock)) = self.udp_in.get(t.0 & !LISTENER_TOKEN) else {
                    return;
                };
                (*local, None, sock.recv_into(rx))
            } else {
                // A socket released since epoll reported it names nothing now (also one
                // released by a datagram handled below).
                let Some((relay, sock)) = self.relays.by_token(t) else {
                    return;
                };
                (relay, Some(relay), sock.recv_into(rx))
            };
            let full = match r {
                Ok(full) => full,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // E.g. ECONNREFUSED left by an ICMP error: per socket, not fatal.
                    // The error is consumed by this receive; what is queued behind it
                    // is read next turn.
                    debug!(socket = %local, error = %e, "UDP receive error");
                    Counters::inc(&self.counters.recv_errors);
                    self.again.push(t);
                    return;
                }
            };
            let now = self.now;
            for (data, from) in rx.datagrams() {
                match relay {
                    Some(relay) => self.on_peer(relay, from, data, now),
                    None => {
                        let ft = FiveTuple {
                            client: from,
                            server: local,
                            transport: Transport::Udp,
                        };
                        self.client_input(now, ft, data);
                    }
                }
            }
            if !full {
                return;
            }
        }
        self.again.push(t);
    }

    pub(super) fn on_client(&mut self, input: ClientInput, now: Instant) {
        match input {
            ClientInput::Frame { ft, data } => {
                self.client_input(now, ft, &data);
            }
            ClientInput::Opened { ft, tx } => {
                self.tcp_out.insert(ft, tx);
            }
            ClientInput::Closed { ft } => {
                self.tcp_out.remove(&ft);
                self.server
                    .handle_connection_closed(now, ft, &mut self.relays);
            }
        }
    }

    /// A client's datagram or frame; relayed ChannelData takes the fast path (no
    /// transmit queued, no copy until it joins a run).
    pub(super) fn client_input(&mut self, now: Instant, ft: FiveTuple, data: &[u8]) {
        if let Some((dest, range)) =
            self.server
                .handle_client_relay(now, ft, data, &mut self.relays)
        {
            self.push(dest, data.get(range).unwrap_or_default());
        }
    }

    /// A peer's datagram: the message for the client is built in `scratch`.
    pub(super) fn on_peer(
        &mut self,
        relay: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
        now: Instant,
    ) {
        let mut scratch = std::mem::take(&mut self.scratch);
        if let Some((dest, n)) = self
            .server
            .handle_peer_into(now, relay, peer, data, &mut scratch)
        {
            self.push(dest, scratch.get(..n).unwrap_or_default());
        }
        self.scratch = scratch;
    }

    /// Adds a message from a fast path to the current run (sent at the end of the
    /// batch), or sends it now when it cannot be part of a run.
    pub(super) fn push(&mut self, dest: Destination, payload: &[u8]) {
        if let Destination::Peer { relay, peer, .. } = dest {
            if self.hand_off(relay, peer, payload) {
                return;
            }
        }
        match run_key(&dest) {
            Some(key) => {
                let mut run = std::mem::take(&mut self.run);
                if !run.extend(key, payload) {
                    self.flush(&mut run);
                    run.start(key, payload);
                }
                self.run = run;
            }
            None => {
                if let Destination::Client(ft) = dest {
                    self.send_to_client(ft, payload.to_vec());
                }
            }
        }
    }

    /// A datagram from relay socket `relay` to `peer`, when `peer` is another open
    /// relay socket of this server (both clients of a call relayed by this server):
    /// handed to the server as if it had been received there, without the round trip
    /// through the kernel (a send, a loopback delivery and a receive saved per packet).
    /// The server sees exactly what the kernel would deliver: the same bytes from the
    /// same source address; every check of both allocations applies as before.
    /// Returns false, and does nothing, when `peer` is not one of ours.
    pub(super) fn hand_off(&mut self, relay: SocketAddr, peer: SocketAddr, payload: &[u8]) -> bool {
        if !self.relays.is_open(peer) {
            return false;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        if let Some((dest, n)) =
            self.server
                .handle_peer_into(self.now, peer, relay, payload, &mut scratch)
        {
            // A message for a client: never a peer, so no recursion.
            self.push(dest, scratch.get(..n).unwrap_or_default());
        }
        self.scratch = scratch;
        true
    }

    /// Sends every transmit and logs every event the server has queued. Consecutive
    /// UDP transmits of equal size from one socket to one destination (a burst of
    /// ChannelData, the packets of a video frame) are sent as one run: one GSO send.
    pub(super) fn drain(&mut self) {
        let mut run = std::mem::take(&mut self.run);
        while let Some(t) = self.server.poll_transmit() {
            if let Destination::Peer { relay, peer, .. } = t.destination {
                if self.relays.is_open(peer) {
                    self.run = std::mem::take(&mut run);
                    self.hand_off(relay, peer, &t.payload);
                    run = std::mem::take(&mut self.run);
                    continue;
                }
            }
            if let Some(key) = run_key(&t.destination) {
                if !run.extend(key, &t.payload) {
                    self.flush(&mut run);
                    run.start(key, &t.payload);
                }
                continue;
            }
            self.flush(&mut run);
            match t.destination {
                Destination::Client(ft) => self.send_to_client(ft, t.payload),
                // RFC 5780: a Binding response from another listener or to another port.
                Destination::ClientFrom { local, client } => {
                    let r = match self.udp_out.get(&local) {
                        Some(s) => s.send_to(&t.payload, client).map(|_| ()),
                        None => continue,
                    };
                    self.count_send(r, "client", client, None);
                }
                Destination::Peer {
                    relay,
                    peer,
                    dont_fragment,
                } => {
                    let r = self.relays.send(relay, peer, dont_fragment, &t.payload);
                    self.count_send(r, "peer", peer, Some(relay));
                }
            }
        }
        self.flush(&mut run);
        self.run = run;
        self.send_multi();
        while let Some(ev) = self.server.poll_event() {
            self.log_event(ev);
        }
    }

    /// Sends the run, in pieces of as many datagrams as the socket's GSO takes. A send
    /// error or a full socket buffer drops (and counts) the rest of the run.
    pub(super) fn flush(&mut self, run: &mut Run) {
        let Some(key) = run.key.take() else {
            return;
        };
        let segment = run.first.len().max(1);
        let several = run.count > 1;
        let contents = run.contents();
        match key {
            RunKey::Listener { local, to } if !several => {
                // Joins the listener's batch of lone datagrams, which leaves once it
                // holds MULTI_FLUSH_AT of them (or at the end of the batch of inputs).
                if self.multi_from != Some(local) {
                    self.send_multi();
                    self.multi_from = Some(local);
                }
                self.multi.push(to, contents);
                if self.multi.len() >= MULTI_FLUSH_AT.min(tsunagi_net::MULTI_SEND_MAX) {
                    self.send_multi();
                }
            }
            RunKey::Listener { local, to } => {
                if let Some(s) = self.udp_out.get(&local) {
                    let r = if several {
                        contents
                            .chunks(segment * s.max_segments())
                            .try_for_each(|piece| s.send_run(to, piece, segment).map(|_| ()))
                    } else {
                        s.send_run(to, contents, segment).map(|_| ())
                    };
                    self.count_send(r, "client", to, None);
                }
            }
            RunKey::Relay { relay, to, df } => {
                let r = if several {
                    let max = self.relays.max_segments(relay);
                    let mut r = Ok(());
                    for piece in contents.chunks(segment * max) {
                        r = self.relays.send_run(relay, to, df, piece, segment);
                        if r.is_err() {
                            break;
                        }
                    }
                    r
                } else {
                    self.relays.send(relay, to, df, contents)
                };
                self.count_send(r, "peer", to, Some(relay));
            }
        }
        run.rest.clear();
        run.count = 0;
    }

    /// Sends the listener's batch of lone datagrams.
    pub(super) fn send_multi(&mut self) {
        let Some(local) = self.multi_from.take() else {
            return;
        };
        if self.multi.is_empty() {
            return;
        }
        let mut multi = std::mem::take(&mut self.multi);
        match self.udp_out.get(&local).cloned() {
            Some(s) => multi.send(&s, |e, to| self.count_send(Err(e), "client", to, None)),
            None => multi.send_none(),
        }
        self.multi = multi;
    }

    pub(super) fn send_to_client(&mut self, ft: FiveTuple, payload: Vec<u8>) {
        match ft.transport {
            Transport::Udp => {
                let r = match self.udp_out.get(&ft.server) {
                    Some(s) => s.send_to(&payload, ft.client).map(|_| ()),
                    None => return,
                };
                self.count_send(r, "client", ft.client, None);
            }
            Transport::Tcp | Transport::Tls => {
                if let Some(tx) = self.tcp_out.get(&ft) {
                    match tx.try_send(payload) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            Counters::inc(&self.counters.tcp_queue_full)
                        }
                        // Closing; Closed is on its way.
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                }
            }
        }
    }

    pub(super) fn count_send(
        &self,
        r: std::io::Result<()>,
        to: &'static str,
        addr: SocketAddr,
        relay: Option<SocketAddr>,
    ) {
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                Counters::inc(&self.counters.send_would_block)
            }
            Err(e) => {
                Counters::inc(&self.counters.send_errors);
                match relay {
                    Some(relay) => debug!(
                        to,
                        addr = %self.redact.addr(addr),
                        %relay,
                        error = %e,
                        "send failed; packet dropped"
                    ),
                    None => debug!(
                        to,
                        addr = %self.redact.addr(addr),
                        error = %e,
                        "send failed; packet dropped"
                    ),
                }
            }
        }
    }

    pub(super) fn log_event(&mut self, ev: Event) {
        let r = &self.redact;
        match ev {
            Event::AllocationCreated {
                five_tuple,
                username,
                relays,
                lifetime,
            } => info!(
                client = %r.addr(five_tuple.client),
                transport = ?five_tuple.transport,
                user = %r.user(&username),
                relays = ?relays,
                lifetime_s = lifetime.as_secs(),
                "allocation created"
            ),
            Event::AllocationDeleted {
                five_tuple,
                username,
                reason,
                relays,
            } => info!(
                client = %r.addr(five_tuple.client),
                transport = ?five_tuple.transport,
                user = %r.user(&username),
                relays = ?relays,
                reason = match reason {
                    DeleteReason::Expired => "expired",
                    DeleteReason::Refreshed => "refreshed to 0",
                    DeleteReason::ConnectionClosed => "connection closed",
                },
                "allocation deleted"
            ),
            Event::PeerDenied {
                five_tuple,
                username,
                peer,
                category,
                config_key,
            } => info!(
                client = %r.addr(five_tuple.client),
                user = %r.user(&username),
                peer = %r.ip(peer),
                category,
                "peer denied ({category}); to allow it set {config_key}"
            ),
            Event::AuthFailed {
                five_tuple,
                username,
                reason,
            } => {
                // Anyone can cause these: rate-limited.
                if let Some(suppressed) = self.auth_log.allow(Instant::now()) {
                    info!(
                        client = %r.addr(five_tuple.client),
                        user = %r.user(&username),
                        reason,
                        suppressed,
                        "authentication failed"
                    );
                }
            }
            Event::QuotaReached {
                five_tuple,
                username,
                which,
            } => warn!(
                client = %r.addr(five_tuple.client),
                user = %r.user(&username),
                which,
                "allocation refused: {which} reached"
            ),
            // Newer event kinds may carry addresses and names: only shown unredacted.
            other if !r.is_enabled() => debug!(event = ?other, "TURN event"),
            _ => {}
        }
    }
}
