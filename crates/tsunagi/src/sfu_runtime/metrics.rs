//! The SFU section of `/api/stats` and `/metrics`: the core's counters and the
//! runtime's, described once ([`SFU`]) for both.

use serde_json::Value;

use super::{SfuHandle, SfuSnapshot};
use crate::http::metrics::{to_json, Kind, Metric};
use crate::http::{Prometheus, StatsSource};

/// The SFU's counters.
pub(crate) const SFU: &[Metric<SfuSnapshot>] = &[
    Metric {
        json: "rooms",
        prom: "tsunagi_sfu_rooms",
        kind: Kind::Gauge,
        help: "Rooms with SFU peers.",
        value: |s| s.core.rooms,
    },
    Metric {
        json: "peers",
        prom: "tsunagi_sfu_peers",
        kind: Kind::Gauge,
        help: "Peers connected to the SFU.",
        value: |s| s.core.peers,
    },
    Metric {
        json: "publishers",
        prom: "tsunagi_sfu_publishers",
        kind: Kind::Gauge,
        help: "Peers publishing media to the SFU.",
        value: |s| s.core.publishers,
    },
    Metric {
        json: "subscriptions",
        prom: "tsunagi_sfu_subscriptions",
        kind: Kind::Gauge,
        help: "Tracks forwarded to subscribers.",
        value: |s| s.core.subscriptions,
    },
    Metric {
        json: "packetsIn",
        prom: "tsunagi_sfu_packets_in_total",
        kind: Kind::Counter,
        help: "Datagrams and frames received.",
        value: |s| s.core.packets_in,
    },
    Metric {
        json: "packetsOut",
        prom: "tsunagi_sfu_packets_out_total",
        kind: Kind::Counter,
        help: "Packets sent.",
        value: |s| s.core.packets_out,
    },
    Metric {
        json: "bytesIn",
        prom: "tsunagi_sfu_bytes_in_total",
        kind: Kind::Counter,
        help: "Bytes received.",
        value: |s| s.core.bytes_in,
    },
    Metric {
        json: "bytesOut",
        prom: "tsunagi_sfu_bytes_out_total",
        kind: Kind::Counter,
        help: "Bytes sent.",
        value: |s| s.core.bytes_out,
    },
    Metric {
        json: "mediaForwarded",
        prom: "tsunagi_sfu_media_forwarded_total",
        kind: Kind::Counter,
        help: "Frames and audio samples written to subscribers.",
        value: |s| s.core.media_forwarded,
    },
    Metric {
        json: "keyframeRequests",
        prom: "tsunagi_sfu_keyframe_requests_total",
        kind: Kind::Counter,
        help: "Keyframe requests sent to publishers.",
        value: |s| s.core.keyframe_requests,
    },
    Metric {
        json: "layerSwitches",
        prom: "tsunagi_sfu_layer_switches_total",
        kind: Kind::Counter,
        help: "Simulcast layer switches.",
        value: |s| s.core.layer_switches,
    },
    Metric {
        json: "upstreamGaps",
        prom: "tsunagi_sfu_upstream_gaps_total",
        kind: Kind::Counter,
        help:
            "Gaps in publishers' video not repaired in time (RTP mode; each asks for a keyframe).",
        value: |s| s.core.upstream_gaps,
    },
    Metric {
        json: "faults",
        prom: "tsunagi_sfu_faults_total",
        kind: Kind::Counter,
        help: "Peers dropped after an internal fault.",
        value: |s| s.core.faults,
    },
    Metric {
        json: "demuxMisses",
        prom: "tsunagi_sfu_demux_misses_total",
        kind: Kind::Counter,
        help: "Datagrams no peer accepted.",
        value: |s| s.core.demux_misses,
    },
    Metric {
        json: "datagramsIn",
        prom: "tsunagi_sfu_datagrams_in_total",
        kind: Kind::Counter,
        help: "UDP datagrams and ICE-TCP frames the core read.",
        value: |s| s.runtime.datagrams_in,
    },
    Metric {
        json: "incomingDropped",
        prom: "tsunagi_sfu_incoming_dropped_total",
        kind: Kind::Counter,
        help: "ICE-TCP frames dropped because the core was behind.",
        value: |s| s.runtime.incoming_dropped,
    },
    Metric {
        json: "sendErrors",
        prom: "tsunagi_sfu_send_errors_total",
        kind: Kind::Counter,
        help: "Sends that failed (full socket buffer, unreachable).",
        value: |s| s.runtime.send_errors,
    },
    Metric {
        json: "tcpConnections",
        prom: "tsunagi_sfu_tcp_connections",
        kind: Kind::Gauge,
        help: "ICE-TCP connections open.",
        value: |s| s.runtime.tcp_connections,
    },
    Metric {
        json: "whipSessions",
        prom: "tsunagi_sfu_whip_sessions",
        kind: Kind::Gauge,
        help: "WHIP publishers.",
        value: |s| s.runtime.whip_sessions,
    },
    Metric {
        json: "whepSessions",
        prom: "tsunagi_sfu_whep_sessions",
        kind: Kind::Gauge,
        help: "WHEP viewers.",
        value: |s| s.runtime.whep_sessions,
    },
];

impl StatsSource for SfuHandle {
    fn key(&self) -> &'static str {
        "sfu"
    }

    fn json(&self) -> Value {
        to_json(SFU, &self.snapshot())
    }

    fn prometheus(&self, p: &mut Prometheus) {
        p.table(SFU, &self.snapshot());
    }
}
