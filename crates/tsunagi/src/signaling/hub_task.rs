//! The task that owns the sans-IO `Hub`: events from the connections and the SFU in,
//! messages to the connections and requests to the SFU out, timers, and the log.

use super::*;

use crate::cluster::{Evict, LocalState};
use tsunagi_signal::RejoinReason;

/// The core task's end of the [`SfuLink`].
pub(super) struct SfuTx {
    pub(super) requests: Option<mpsc::Sender<SfuRequest>>,
    /// Requests refused since the last warning, and when that was.
    pub(super) refused: u64,
    pub(super) last_warn: Option<Instant>,
}

impl SfuTx {
    /// Hands `req` to the SFU runtime; false when it was refused (queue full or the
    /// runtime gone).
    pub(super) fn send(&mut self, req: SfuRequest) -> Result<(), SfuRequest> {
        let Some(tx) = &self.requests else {
            return Err(req);
        };
        let (req, gone) = match tx.try_send(req) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Full(req)) => (req, false),
            Err(mpsc::error::TrySendError::Closed(req)) => (req, true),
        };
        self.refused += 1;
        let now = Instant::now();
        if self
            .last_warn
            .is_none_or(|t| now.saturating_duration_since(t) >= SFU_WARN_EVERY)
        {
            if gone {
                warn!(
                    refused = self.refused,
                    "the SFU runtime is gone: SFU requests are dropped"
                );
            } else {
                warn!(
                    refused = self.refused,
                    kind = req.kind(),
                    "the SFU's request queue is full: requests dropped (peers get server-busy)"
                );
            }
            self.refused = 0;
            self.last_warn = Some(now);
        }
        Err(req)
    }
}

/// How often the core tells the cluster what it holds.
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// Counts that change when a session starts or ends (or gets a new resume token).
fn sessions_mark(hub: &Hub<RuntimeIce>) -> (u64, u64, u64, u64) {
    let s = hub.stats();
    (s.joins, s.resumes, s.leaves.iter().sum(), s.evicted)
}

/// The next room to move away; pending forever without a cluster.
async fn next_eviction(rx: &mut Option<mpsc::Receiver<Evict>>) -> Evict {
    if let Some(r) = rx {
        if let Some(e) = r.recv().await {
            return e;
        }
        *rx = None;
    }
    std::future::pending().await
}

/// Sends every room away (a drain).
fn evict_all(hub: &mut Hub<RuntimeIce>, now: std::time::Instant, url: Option<&str>) {
    let rooms: Vec<Arc<str>> = hub.rooms().cloned().collect();
    for room in rooms {
        hub.evict_room(now, &room, RejoinReason::Drain, url);
    }
}

/// What the hub holds, for the cluster's claims and resume entries.
fn local_state(hub: &Hub<RuntimeIce>) -> LocalState {
    let stats = hub.stats();
    LocalState {
        rooms: hub.rooms().cloned().collect(),
        tokens: hub.sessions().map(|(_, t)| t.clone()).collect(),
        peers: stats.peers,
        connections: stats.connections,
    }
}

/// The next reply of the SFU runtime; pending forever without one (or after the
/// runtime closed its end, which is logged once).
pub(super) async fn next_reply(replies: &mut Option<mpsc::Receiver<SfuReply>>) -> SfuReply {
    if let Some(rx) = replies {
        if let Some(r) = rx.recv().await {
            return r;
        }
        warn!("the SFU runtime closed its reply channel");
        *replies = None;
    }
    std::future::pending().await
}

/// The core task: owns the hub, applies events, delivers its output.
pub(super) async fn core(
    mut hub: Hub<RuntimeIce>,
    mut rx: mpsc::Receiver<Event>,
    mut shutdown: watch::Receiver<bool>,
    stats: Arc<Mutex<Stats>>,
    link: Option<SfuLink>,
    cluster: Option<(Cluster, mpsc::Receiver<Evict>)>,
) {
    let (cluster, mut evictions) = match cluster {
        Some((c, rx)) => (Some(c), Some(rx)),
        None => (None, None),
    };
    let mut report = tokio::time::interval(REPORT_EVERY);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Sessions as last reported: a change is reported at once, so that a client can
    // resume through another node right after its welcome.
    let mut reported = sessions_mark(&hub);
    // Set by a drain: the URL rejoins are sent to.
    let mut draining: Option<Option<String>> = None;
    let mut conns: HashMap<ConnId, ConnTx, ahash::RandomState> =
        HashMap::with_hasher(ahash::RandomState::new());
    let (requests, mut replies) = match link {
        Some(l) => (Some(l.requests), Some(l.replies)),
        None => (None, None),
    };
    let mut sfu = SfuTx {
        requests,
        refused: 0,
        last_warn: None,
    };
    // Connections whose task has not reported `Closed` yet.
    let mut live: usize = 0;
    let mut stopping: Option<Instant> = None;
    loop {
        let timer = hub.poll_timeout().map(Instant::from_std);
        let stop_deadline = stopping.map(|s| s + SHUTDOWN_GRACE);
        let event = tokio::select! {
            ev = rx.recv() => ev,
            _ = sleep_until(timer) => {
                hub.handle_timeout(Instant::now().into_std());
                deliver(&mut hub, &mut conns, &mut sfu);
                log_events(&mut hub);
                publish(&hub, &stats);
                continue;
            }
            ev = next_eviction(&mut evictions) => {
                let now = Instant::now().into_std();
                let n = hub.evict_room(now, &ev.room, ev.reason, ev.url.as_deref());
                info!(room = %ev.room, peers = n, reason = ev.reason.as_str(), "room moved off this node");
                deliver(&mut hub, &mut conns, &mut sfu);
                log_events(&mut hub);
                publish(&hub, &stats);
                continue;
            }
            _ = report.tick(), if cluster.is_some() => {
                if let Some(url) = &draining {
                    // Joins that were on their way when the drain began.
                    evict_all(&mut hub, Instant::now().into_std(), url.as_deref());
                    deliver(&mut hub, &mut conns, &mut sfu);
                    log_events(&mut hub);
                    publish(&hub, &stats);
                }
                if let Some(c) = &cluster {
                    c.report(local_state(&hub), false);
                    reported = sessions_mark(&hub);
                }
                continue;
            }
            reply = next_reply(&mut replies) => {
                hub.handle_sfu(Instant::now().into_std(), reply);
                deliver(&mut hub, &mut conns, &mut sfu);
                log_events(&mut hub);
                publish(&hub, &stats);
                continue;
            }
            () = tsunagi_net::stopped(&mut shutdown), if stopping.is_none() => {
                let now = Instant::now();
                stopping = Some(now);
                hub.handle_shutdown(now.into_std());
                deliver(&mut hub, &mut conns, &mut sfu);
                log_events(&mut hub);
                publish(&hub, &stats);
                if live == 0 {
                    break;
                }
                continue;
            }
            _ = sleep_until(stop_deadline) => break,
        };
        let now = Instant::now().into_std();
        match event {
            None => break,
            Some(Event::Open {
                conn,
                host,
                out,
                control,
            }) => {
                live += 1;
                let mut tx = ConnTx {
                    out,
                    control: Some(control),
                };
                if stopping.is_some() {
                    tx.control(Control::Close(CloseReason::Shutdown));
                } else {
                    if let Some(h) = host {
                        hub.ice_source_mut().hosts.insert(conn, h);
                    }
                    conns.insert(conn, tx);
                    hub.handle_open(now, conn);
                }
            }
            Some(Event::Text { conn, text }) => hub.handle_text(now, conn, &text),
            Some(Event::Binary { conn, len }) => hub.handle_binary(now, conn, len),
            Some(Event::Closed { conn, how }) => {
                live = live.saturating_sub(1);
                conns.remove(&conn);
                hub.ice_source_mut().hosts.remove(&conn);
                hub.handle_close(now, conn, how);
            }
            Some(Event::Drain { url }) => {
                info!(
                    rooms = hub.stats().rooms,
                    "draining: every room moves to another node"
                );
                evict_all(&mut hub, now, url.as_deref());
                draining = Some(url);
            }
            Some(Event::RoomSize { room, reply }) => {
                let _ = reply.send(hub.room_size(&room));
            }
        }
        deliver(&mut hub, &mut conns, &mut sfu);
        log_events(&mut hub);
        publish(&hub, &stats);
        if let Some(c) = &cluster {
            let mark = sessions_mark(&hub);
            if mark != reported {
                c.report(local_state(&hub), true);
                reported = mark;
            }
        }
        if stopping.is_some() && live == 0 {
            break;
        }
    }
    // Whatever is still open is closed by its task when its queue sender drops here.
    if live > 0 {
        warn!(
            connections = live,
            "signaling connections still open at shutdown"
        );
    }
    publish(&hub, &stats);
}

pub(super) async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Hands the hub's output to the connections and the SFU; a full queue is an overflow
/// (or a dropped SFU request), which the hub hears about at once (and which may
/// produce more output).
pub(super) fn deliver(
    hub: &mut Hub<RuntimeIce>,
    conns: &mut HashMap<ConnId, ConnTx, ahash::RandomState>,
    sfu: &mut SfuTx,
) {
    loop {
        let mut overflowed = Vec::new();
        while let Some(o) = hub.poll_output() {
            match o {
                Output::Send { conn, text } => {
                    let Some(tx) = conns.get_mut(&conn) else {
                        continue;
                    };
                    match tx.out.try_send(Outbound::Text(text)) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            if let Some(mut tx) = conns.remove(&conn) {
                                tx.control(Control::Busy);
                                overflowed.push(conn);
                            }
                        }
                        // The task ended; its `Closed` event is on the way.
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                }
                Output::Close { conn, reason } => {
                    if let Some(mut tx) = conns.remove(&conn) {
                        if tx.out.try_send(Outbound::Close(reason)).is_err() {
                            tx.control(Control::Close(reason));
                        }
                    }
                }
                Output::Sfu(req) => {
                    if let Err(req) = sfu.send(req) {
                        // Queues the peer's server-busy, drained by this same loop.
                        hub.handle_sfu_dropped(Instant::now().into_std(), &req);
                    }
                }
            }
        }
        if overflowed.is_empty() {
            return;
        }
        let now = Instant::now().into_std();
        for conn in overflowed {
            debug!(%conn, "signaling outbound queue full: server-busy");
            hub.handle_close(now, conn, Disconnect::Overflow);
        }
    }
}

/// Logs what happened to sessions (peer ids and rooms; display names stay out).
pub(super) fn log_events(hub: &mut Hub<RuntimeIce>) {
    while let Some(e) = hub.poll_event() {
        match e {
            HubEvent::Joined { conn, peer, room } => info!(%conn, %peer, %room, "peer joined"),
            HubEvent::Resumed { conn, peer, room } => info!(%conn, %peer, %room, "peer resumed"),
            HubEvent::Dropped { peer, room } => {
                info!(%peer, %room, "peer's WebSocket dropped; waiting for resume")
            }
            HubEvent::Left { peer, room, reason } => {
                info!(%peer, %room, ?reason, "peer left")
            }
            HubEvent::ModeChanged { room, mode } => {
                info!(%room, mode = mode.as_str(), "room switched mode")
            }
            other => debug!(?other, "signaling event"),
        }
    }
}

pub(super) fn publish(hub: &Hub<RuntimeIce>, stats: &Mutex<Stats>) {
    *stats.lock().unwrap_or_else(|e| e.into_inner()) = hub.stats();
}
