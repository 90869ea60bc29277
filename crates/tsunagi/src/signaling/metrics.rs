//! The signaling section of `/api/stats` and `/metrics`: the hub's counters described
//! once ([`SIGNALING`]) for both, and the errors sent, by code.

use serde_json::{json, Map, Value};
use tsunagi_signal::Stats;

use super::SignalingHandle;
use crate::http::metrics::{Kind, Metric};
use crate::http::{Prometheus, StatsSource};

/// The hub's counters. A dot in `json` nests the value (`roomsByMode.mesh`).
pub(crate) const SIGNALING: &[Metric<Stats>] = &[
    Metric {
        json: "connections",
        prom: "tsunagi_signaling_connections",
        kind: Kind::Gauge,
        help: "Signaling WebSockets open now.",
        value: |s| s.connections,
    },
    Metric {
        json: "rooms",
        prom: "tsunagi_signaling_rooms",
        kind: Kind::Gauge,
        help: "Rooms with at least one peer (or a WHIP publisher).",
        value: |s| s.rooms,
    },
    Metric {
        json: "roomsByMode.mesh",
        prom: "tsunagi_signaling_rooms_mesh",
        kind: Kind::Gauge,
        help: "Rooms in mesh mode.",
        value: |s| s.rooms_mesh,
    },
    Metric {
        json: "roomsByMode.sfu",
        prom: "tsunagi_signaling_rooms_sfu",
        kind: Kind::Gauge,
        help: "Rooms in SFU mode.",
        value: |s| s.rooms_sfu,
    },
    Metric {
        json: "modeSwitches.toSfu",
        prom: "tsunagi_signaling_mode_switches_total{to=\"sfu\"}",
        kind: Kind::Counter,
        help: "Rooms that switched mode, by the mode they switched to.",
        value: |s| s.switches_to_sfu,
    },
    Metric {
        json: "modeSwitches.toMesh",
        prom: "tsunagi_signaling_mode_switches_total{to=\"mesh\"}",
        kind: Kind::Counter,
        help: "Rooms that switched mode, by the mode they switched to.",
        value: |s| s.switches_to_mesh,
    },
    Metric {
        json: "peers",
        prom: "tsunagi_signaling_peers",
        kind: Kind::Gauge,
        help: "Peers in rooms, including those within their resume grace period.",
        value: |s| s.peers,
    },
    Metric {
        json: "peersInGrace",
        prom: "tsunagi_signaling_peers_in_grace",
        kind: Kind::Gauge,
        help: "Peers whose WebSocket dropped and who may still resume.",
        value: |s| s.peers_in_grace,
    },
    Metric {
        json: "joins",
        prom: "tsunagi_signaling_joins_total",
        kind: Kind::Counter,
        help: "Successful joins.",
        value: |s| s.joins,
    },
    Metric {
        json: "resumes",
        prom: "tsunagi_signaling_resumes_total",
        kind: Kind::Counter,
        help: "Successful resumes.",
        value: |s| s.resumes,
    },
    Metric {
        json: "evicted",
        prom: "tsunagi_signaling_evicted_total",
        kind: Kind::Counter,
        help: "Peers told to join again on another cluster node (their room moved: a drain, or another node claims it).",
        value: |s| s.evicted,
    },
    Metric {
        json: "leaves.left",
        prom: "tsunagi_signaling_leaves_total{reason=\"left\"}",
        kind: Kind::Counter,
        help: "Peers that left a room, by reason.",
        value: |s| s.leaves[0],
    },
    Metric {
        json: "leaves.timeout",
        prom: "tsunagi_signaling_leaves_total{reason=\"timeout\"}",
        kind: Kind::Counter,
        help: "Peers that left a room, by reason.",
        value: |s| s.leaves[1],
    },
    Metric {
        json: "leaves.kicked",
        prom: "tsunagi_signaling_leaves_total{reason=\"kicked\"}",
        kind: Kind::Counter,
        help: "Peers that left a room, by reason.",
        value: |s| s.leaves[2],
    },
    Metric {
        json: "messagesReceived",
        prom: "tsunagi_signaling_messages_received_total",
        kind: Kind::Counter,
        help: "Signaling frames received.",
        value: |s| s.messages_received,
    },
    Metric {
        json: "messagesRelayed",
        prom: "tsunagi_signaling_messages_relayed_total",
        kind: Kind::Counter,
        help: "Peer messages (offer, answer, candidate, chat, media) relayed, per recipient.",
        value: |s| s.messages_relayed,
    },
    Metric {
        json: "sfuDropped",
        prom: "tsunagi_signaling_sfu_dropped_total",
        kind: Kind::Counter,
        help: "Requests for the SFU dropped because its queue was full.",
        value: |s| s.sfu_dropped,
    },
];

impl StatsSource for SignalingHandle {
    fn key(&self) -> &'static str {
        "signaling"
    }

    /// `{"connections": 2, "rooms": 1, "roomsByMode": {"mesh": 1, "sfu": 0},
    /// "modeSwitches": {"toSfu": 0, "toMesh": 0}, "peers": 2, "peersInGrace": 0,
    /// "joins": 2, "resumes": 0, "leaves": {"left": 0, "timeout": 0, "kicked": 0},
    /// "messagesReceived": 14, "messagesRelayed": 9, "sfuDropped": 0,
    /// "errors": {"bad-message": 0, ...}}`
    fn json(&self) -> Value {
        let s = self.stats();
        let mut v = crate::http::metrics::to_json(SIGNALING, &s);
        let errors: Map<String, Value> = s
            .errors_by_code()
            .map(|(c, n)| (c.as_str().to_owned(), json!(n)))
            .collect();
        if let Value::Object(o) = &mut v {
            o.insert("errors".to_owned(), Value::Object(errors));
        }
        v
    }

    fn prometheus(&self, p: &mut Prometheus) {
        let s = self.stats();
        p.table(SIGNALING, &s);
        let errors: Vec<(&str, u64)> = s.errors_by_code().map(|(c, n)| (c.as_str(), n)).collect();
        p.labeled_counter(
            "tsunagi_signaling_errors_total",
            "Signaling error messages sent, by code.",
            "code",
            &errors,
        );
    }
}
