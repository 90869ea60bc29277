//! [`SfuHandle`]: how HTTP handlers (WHIP, WHEP, the room state, `/api/stats`,
//! `/metrics`) reach the running SFU core, through its command queue and its stats watch.

use std::fmt;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};
use tsunagi_net::CoreSender;

use super::{Command, Created, HttpFailure, SessionKind, SfuSnapshot};
use crate::http::{Prometheus, StatsSource};

/// Reaches the running SFU from HTTP handlers; cheap to clone.
#[derive(Clone)]
pub struct SfuHandle {
    pub(super) commands: CoreSender<Command>,
    pub(super) stats: watch::Receiver<SfuSnapshot>,
    pub(super) token_secret: Option<Arc<[u8]>>,
    pub(super) signaling: Option<crate::signaling::SignalingHandle>,
}

impl fmt::Debug for SfuHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SfuHandle").finish_non_exhaustive()
    }
}

impl SfuHandle {
    /// The latest counters.
    pub fn snapshot(&self) -> SfuSnapshot {
        self.stats.borrow().clone()
    }

    /// Lets WHEP see the signaling rooms (a viewer of a room whose peers still run as a
    /// mesh is accepted and switches the room to SFU).
    pub fn with_signaling(mut self, signaling: crate::signaling::SignalingHandle) -> Self {
        self.signaling = Some(signaling);
        self
    }

    pub(crate) fn token_secret(&self) -> Option<&[u8]> {
        self.token_secret.as_deref()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, HttpFailure>>) -> Command,
    ) -> Result<T, HttpFailure> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .try_send(make(tx))
            .map_err(|_| HttpFailure::new(503, "the SFU is busy; retry in a moment"))?;
        rx.await
            .unwrap_or_else(|_| Err(HttpFailure::new(503, "the SFU is shutting down")))
    }

    pub(crate) async fn create(
        &self,
        kind: SessionKind,
        room: String,
        offer: String,
    ) -> Result<Created, HttpFailure> {
        let room_has_peers = match (&self.signaling, kind) {
            (Some(s), SessionKind::Whep) => s.room_size(&room).await.unwrap_or(0) > 0,
            _ => false,
        };
        self.ask(|reply| Command::Create {
            kind,
            room,
            offer,
            room_has_peers,
            reply,
        })
        .await
    }

    pub(crate) async fn candidates(
        &self,
        kind: SessionKind,
        room: String,
        id: String,
        candidates: Vec<String>,
    ) -> Result<(), HttpFailure> {
        self.ask(|reply| Command::Candidates {
            kind,
            room,
            id,
            candidates,
            reply,
        })
        .await
    }

    /// The per-subscription state of `room` (docs/sfu.md, "Subscription state").
    pub(crate) async fn room_state(&self, room: String) -> Result<serde_json::Value, HttpFailure> {
        self.ask(|reply| Command::RoomState { room, reply }).await
    }

    pub(crate) async fn delete(
        &self,
        kind: SessionKind,
        room: String,
        id: String,
    ) -> Result<(), HttpFailure> {
        self.ask(|reply| Command::Delete {
            kind,
            room,
            id,
            reply,
        })
        .await
    }
}

impl StatsSource for SfuHandle {
    fn key(&self) -> &'static str {
        "sfu"
    }

    fn json(&self) -> Value {
        let s = self.snapshot();
        let c = &s.core;
        let r = &s.runtime;
        json!({
            "rooms": c.rooms,
            "peers": c.peers,
            "publishers": c.publishers,
            "subscriptions": c.subscriptions,
            "packetsIn": c.packets_in,
            "packetsOut": c.packets_out,
            "bytesIn": c.bytes_in,
            "bytesOut": c.bytes_out,
            "mediaForwarded": c.media_forwarded,
            "keyframeRequests": c.keyframe_requests,
            "layerSwitches": c.layer_switches,
            "faults": c.faults,
            "demuxMisses": c.demux_misses,
            "datagramsIn": r.datagrams_in,
            "incomingDropped": r.incoming_dropped,
            "sendErrors": r.send_errors,
            "tcpConnections": r.tcp_connections,
            "whipSessions": r.whip_sessions,
            "whepSessions": r.whep_sessions,
        })
    }

    fn prometheus(&self, p: &mut Prometheus) {
        let s = self.snapshot();
        let c = &s.core;
        let r = &s.runtime;
        p.gauge("tsunagi_sfu_rooms", "Rooms with SFU peers.", c.rooms);
        p.gauge("tsunagi_sfu_peers", "Peers connected to the SFU.", c.peers);
        p.gauge(
            "tsunagi_sfu_publishers",
            "Peers publishing media to the SFU.",
            c.publishers,
        );
        p.gauge(
            "tsunagi_sfu_subscriptions",
            "Tracks forwarded to subscribers.",
            c.subscriptions,
        );
        p.counter(
            "tsunagi_sfu_packets_in_total",
            "Datagrams and frames received.",
            c.packets_in,
        );
        p.counter(
            "tsunagi_sfu_packets_out_total",
            "Packets sent.",
            c.packets_out,
        );
        p.counter("tsunagi_sfu_bytes_in_total", "Bytes received.", c.bytes_in);
        p.counter("tsunagi_sfu_bytes_out_total", "Bytes sent.", c.bytes_out);
        p.counter(
            "tsunagi_sfu_media_forwarded_total",
            "Frames and audio samples written to subscribers.",
            c.media_forwarded,
        );
        p.counter(
            "tsunagi_sfu_keyframe_requests_total",
            "Keyframe requests sent to publishers.",
            c.keyframe_requests,
        );
        p.counter(
            "tsunagi_sfu_layer_switches_total",
            "Simulcast layer switches.",
            c.layer_switches,
        );
        p.counter(
            "tsunagi_sfu_faults_total",
            "Peers dropped after an internal fault.",
            c.faults,
        );
        p.counter(
            "tsunagi_sfu_demux_misses_total",
            "Datagrams no peer accepted.",
            c.demux_misses,
        );
        p.counter(
            "tsunagi_sfu_incoming_dropped_total",
            "Datagrams dropped because the core was behind.",
            r.incoming_dropped,
        );
        p.counter(
            "tsunagi_sfu_send_errors_total",
            "Sends that failed (full socket buffer, unreachable).",
            r.send_errors,
        );
        p.gauge(
            "tsunagi_sfu_tcp_connections",
            "ICE-TCP connections open.",
            r.tcp_connections,
        );
        p.gauge(
            "tsunagi_sfu_whip_sessions",
            "WHIP publishers.",
            r.whip_sessions,
        );
        p.gauge(
            "tsunagi_sfu_whep_sessions",
            "WHEP viewers.",
            r.whep_sessions,
        );
    }
}
