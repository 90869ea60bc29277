//! `/metrics` in the Prometheus text exposition format (version 0.0.4), and the counters
//! of TURN and HTTP described once ([`Metric`]) for both `/metrics` and `/api/stats`.
//!
//! Hand-written rather than through the `metrics` + `metrics-exporter-prometheus`
//! crates: every value already lives in a counter that its owner keeps (the TURN
//! core's `Stats`, the runtime's atomics), so there is nothing to record, only a
//! snapshot to print at scrape time. A global recorder would add a second copy of
//! each counter to keep in step, could not tell apart two servers in one test
//! process, and would bring an HTTP stack of its own; the format is a few lines of
//! text.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use serde_json::{Map, Value};
use tsunagi_turn::Stats;

use super::HttpCounters;
use crate::turn_runtime::CounterSnapshot;

pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A section of `/api/stats` and `/metrics` from another part of the server (the
/// signaling hub, the SFU). Both methods are called at request time and should only
/// copy counters.
pub trait StatsSource: Send + Sync + 'static {
    /// Its key in `/api/stats`, e.g. `"signaling"`.
    fn key(&self) -> &'static str;
    /// Its value in `/api/stats`.
    fn json(&self) -> serde_json::Value;
    /// Writes its metrics, names prefixed `tsunagi_<key>_`.
    fn prometheus(&self, out: &mut Prometheus);
}

/// Writes metrics in the text format: a `# HELP` and `# TYPE` line per family, then
/// its samples.
#[derive(Debug, Default)]
pub struct Prometheus {
    out: String,
}

impl Prometheus {
    /// A counter (monotonic since start); `name` should end in `_total`.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, help, "counter");
        let _ = writeln!(self.out, "{name} {value}");
    }

    /// A gauge (a value now).
    pub fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, help, "gauge");
        let _ = writeln!(self.out, "{name} {value}");
    }

    /// A counter family with one label, e.g. `reason`; label values must be plain
    /// identifiers (they are written as they are).
    pub fn labeled_counter(&mut self, name: &str, help: &str, label: &str, values: &[(&str, u64)]) {
        self.family(name, help, "counter");
        for (l, v) in values {
            let _ = writeln!(self.out, "{name}{{{label}=\"{l}\"}} {v}");
        }
    }

    fn family(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// `tsunagi_build_info{version="..."} 1`.
    pub(crate) fn build_info(&mut self, version: &str) {
        self.family(
            "tsunagi_build_info",
            "Version of the running binary.",
            "gauge",
        );
        let _ = writeln!(self.out, "tsunagi_build_info{{version=\"{version}\"}} 1");
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Counter or gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
}

/// One value, described once for both outputs.
#[derive(Debug)]
pub(crate) struct Metric<T> {
    /// Its key in `/api/stats`; a dot nests it (`runtime.sendErrors`).
    pub json: &'static str,
    /// Its sample in `/metrics`: a name, or `family{label="value"}` (the samples of one
    /// family stand next to each other in the table).
    pub prom: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub value: fn(&T) -> u64,
}

use Kind::{Counter, Gauge};

/// What the TURN counters are read from: the server's counters and the runtime's.
pub(crate) type TurnView = (Stats, CounterSnapshot);

/// The TURN section. "To peers" is client → relay → peer; "from peers" the reverse.
pub(crate) const TURN: &[Metric<TurnView>] = &[
    Metric {
        json: "allocations",
        prom: "tsunagi_turn_allocations",
        kind: Gauge,
        help: "TURN allocations live now.",
        value: |v| v.0.allocations,
    },
    Metric {
        json: "allocationsCreated",
        prom: "tsunagi_turn_allocations_created_total",
        kind: Counter,
        help: "TURN allocations created.",
        value: |v| v.0.allocations_created,
    },
    Metric {
        json: "allocationsDeleted",
        prom: "tsunagi_turn_allocations_deleted_total",
        kind: Counter,
        help: "TURN allocations deleted (expired, refreshed to 0, connection closed).",
        value: |v| v.0.allocations_deleted,
    },
    Metric {
        json: "permissions",
        prom: "tsunagi_turn_permissions",
        kind: Gauge,
        help: "TURN permissions live now.",
        value: |v| v.0.permissions,
    },
    Metric {
        json: "channels",
        prom: "tsunagi_turn_channels",
        kind: Gauge,
        help: "TURN channel bindings live now.",
        value: |v| v.0.channels,
    },
    Metric {
        json: "bindingRequests",
        prom: "tsunagi_turn_binding_requests_total",
        kind: Counter,
        help: "STUN Binding requests answered.",
        value: |v| v.0.binding_requests,
    },
    Metric {
        json: "authFailures",
        prom: "tsunagi_turn_auth_failures_total",
        kind: Counter,
        help: "TURN requests refused for their credentials.",
        value: |v| v.0.auth_failures,
    },
    Metric {
        json: "peersDenied",
        prom: "tsunagi_turn_peers_denied_total",
        kind: Counter,
        help: "Peer addresses refused by the peer policy (403).",
        value: |v| v.0.peers_denied,
    },
    Metric {
        json: "packetsToPeers",
        prom: "tsunagi_turn_packets_to_peers_total",
        kind: Counter,
        help: "Packets relayed from clients to peers.",
        value: |v| v.0.packets_to_peers,
    },
    Metric {
        json: "bytesToPeers",
        prom: "tsunagi_turn_bytes_to_peers_total",
        kind: Counter,
        help: "Payload bytes relayed from clients to peers.",
        value: |v| v.0.bytes_to_peers,
    },
    Metric {
        json: "packetsFromPeers",
        prom: "tsunagi_turn_packets_from_peers_total",
        kind: Counter,
        help: "Packets relayed from peers to clients.",
        value: |v| v.0.packets_from_peers,
    },
    Metric {
        json: "bytesFromPeers",
        prom: "tsunagi_turn_bytes_from_peers_total",
        kind: Counter,
        help: "Payload bytes relayed from peers to clients.",
        value: |v| v.0.bytes_from_peers,
    },
    Metric {
        json: "droppedNoPermission",
        prom: "tsunagi_turn_dropped_total{reason=\"no_permission\"}",
        kind: Counter,
        help: "Packets the TURN server dropped, by reason.",
        value: |v| v.0.dropped_no_permission,
    },
    Metric {
        json: "droppedRateLimited",
        prom: "tsunagi_turn_dropped_total{reason=\"rate_limited\"}",
        kind: Counter,
        help: "Packets the TURN server dropped, by reason.",
        value: |v| v.0.dropped_rate_limited,
    },
    Metric {
        json: "droppedInvalid",
        prom: "tsunagi_turn_dropped_total{reason=\"invalid\"}",
        kind: Counter,
        help: "Packets the TURN server dropped, by reason.",
        value: |v| v.0.dropped_invalid,
    },
    Metric {
        json: "runtime.sendWouldBlock",
        prom: "tsunagi_turn_dropped_total{reason=\"send_would_block\"}",
        kind: Counter,
        help: "Packets the TURN server dropped, by reason.",
        value: |v| v.1.send_would_block,
    },
    Metric {
        json: "runtime.tcpQueueFull",
        prom: "tsunagi_turn_dropped_total{reason=\"tcp_queue_full\"}",
        kind: Counter,
        help: "Packets the TURN server dropped, by reason.",
        value: |v| v.1.tcp_queue_full,
    },
    Metric {
        json: "runtime.sendErrors",
        prom: "tsunagi_turn_send_errors_total",
        kind: Counter,
        help: "Sends that failed (unreachable, message too large, ...).",
        value: |v| v.1.send_errors,
    },
    Metric {
        json: "runtime.recvErrors",
        prom: "tsunagi_turn_recv_errors_total",
        kind: Counter,
        help: "Receive errors on listener or relay sockets.",
        value: |v| v.1.recv_errors,
    },
    Metric {
        json: "runtime.tcpConnections",
        prom: "tsunagi_turn_stream_connections",
        kind: Gauge,
        help: "TURN TCP and TLS client connections open now.",
        value: |v| v.1.tcp_connections,
    },
    Metric {
        json: "runtime.streamsRefused",
        prom: "tsunagi_turn_streams_refused_total",
        kind: Counter,
        help: "TURN streams from a TLS or HTTP port refused at max-tcp-connections.",
        value: |v| v.1.streams_refused,
    },
    Metric {
        json: "runtime.tcpInvalid",
        prom: "tsunagi_turn_stream_invalid_total",
        kind: Counter,
        help: "TURN TCP/TLS connections closed for a stream that was not STUN or ChannelData.",
        value: |v| v.1.tcp_invalid,
    },
    Metric {
        json: "runtime.proxyHeaderFailures",
        prom: "tsunagi_turn_proxy_header_failures_total",
        kind: Counter,
        help: "TURN TCP connections from a proxy-protocol-ip address closed without a valid PROXY header.",
        value: |v| v.1.proxy_header_failures,
    },
    Metric {
        json: "runtime.relayExhausted",
        prom: "tsunagi_turn_relay_exhausted_total",
        kind: Counter,
        help: "Allocations refused for lack of a free relay port.",
        value: |v| v.1.relay_exhausted,
    },
    Metric {
        json: "runtime.relayBindErrors",
        prom: "tsunagi_turn_relay_bind_errors_total",
        kind: Counter,
        help: "Relay sockets that could not be opened.",
        value: |v| v.1.relay_bind_errors,
    },
];

/// The HTTP section.
pub(crate) const HTTP: &[Metric<HttpCounters>] = &[
    Metric {
        json: "connections",
        prom: "tsunagi_http_connections",
        kind: Gauge,
        help: "HTTP connections open now, WebSockets included.",
        value: |h| h.connections.load(Ordering::Relaxed),
    },
    Metric {
        json: "accepted",
        prom: "tsunagi_http_connections_accepted_total",
        kind: Counter,
        help: "HTTP connections accepted.",
        value: |h| h.accepted.load(Ordering::Relaxed),
    },
    Metric {
        json: "tlsHandshakeFailures",
        prom: "tsunagi_http_tls_handshake_failures_total",
        kind: Counter,
        help: "TLS handshakes that failed or timed out (HTTPS and TURN over TLS).",
        value: |h| h.tls_handshake_failures.load(Ordering::Relaxed),
    },
    Metric {
        json: "plainHttpRedirects",
        prom: "tsunagi_http_plain_redirects_total",
        kind: Counter,
        help: "Plain HTTP requests from other hosts on the HTTPS port, sent to https.",
        value: |h| h.plain_http_redirects.load(Ordering::Relaxed),
    },
    Metric {
        json: "turnStreams",
        prom: "tsunagi_http_turn_streams_total",
        kind: Counter,
        help: "Connections on a TLS or HTTP port that were TURN (by ALPN or first bytes), handed to TURN.",
        value: |h| h.turn_streams.load(Ordering::Relaxed),
    },
    Metric {
        json: "pendingRefused",
        prom: "tsunagi_http_pending_refused_total",
        kind: Counter,
        help: "Connections closed at once: their address had too many connections not yet served (silent or handshaking).",
        value: |h| h.pending_refused.load(Ordering::Relaxed),
    },
    Metric {
        json: "proxyHeaderFailures",
        prom: "tsunagi_http_proxy_header_failures_total",
        kind: Counter,
        help: "Connections on a TLS or HTTP port from a proxy-protocol-ip address closed without a valid PROXY header.",
        value: |h| h.proxy_header_failures.load(Ordering::Relaxed),
    },
];

/// The `/api/stats` object of a table.
pub(crate) fn to_json<T>(table: &[Metric<T>], v: &T) -> Value {
    let mut root = Map::new();
    for m in table {
        let value = Value::from((m.value)(v));
        match m.json.split_once('.') {
            None => {
                root.insert(m.json.to_owned(), value);
            }
            Some((group, key)) => {
                let g = root
                    .entry(group.to_owned())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(g) = g {
                    g.insert(key.to_owned(), value);
                }
            }
        }
    }
    Value::Object(root)
}

impl Prometheus {
    /// The samples of a table, with a `# HELP` and `# TYPE` per family.
    pub(crate) fn table<T>(&mut self, table: &[Metric<T>], v: &T) {
        let mut family = "";
        for m in table {
            let f = m.prom.split('{').next().unwrap_or(m.prom);
            if f != family {
                let kind = match m.kind {
                    Counter => "counter",
                    Gauge => "gauge",
                };
                self.family(f, m.help, kind);
                family = f;
            }
            let _ = writeln!(self.out, "{} {}", m.prom, (m.value)(v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// The rules every table keeps: each JSON key once; a family's samples next to
    /// each other (one `# HELP`/`# TYPE` each), of one kind; sample names unique;
    /// counters end in `_total`, gauges do not.
    fn check<T>(name: &str, table: &[Metric<T>]) {
        let mut json = HashSet::new();
        let mut samples = HashSet::new();
        let mut families = HashSet::new();
        let mut last: Option<(&str, Kind)> = None;
        for m in table {
            assert!(json.insert(m.json), "{name}: JSON key {} twice", m.json);
            assert!(samples.insert(m.prom), "{name}: sample {} twice", m.prom);
            let family = m.prom.split('{').next().unwrap_or(m.prom);
            match last {
                Some((f, k)) if f == family => {
                    assert_eq!(k, m.kind, "{name}: {family} mixes kinds")
                }
                _ => assert!(families.insert(family), "{name}: {family} is split"),
            }
            last = Some((family, m.kind));
            assert!(family.starts_with("tsunagi_"), "{name}: {family}");
            assert_eq!(
                family.ends_with("_total"),
                m.kind == Kind::Counter,
                "{name}: {family}"
            );
        }
    }

    #[test]
    fn every_table_keeps_the_rules() {
        check("turn", TURN);
        check("http", HTTP);
        check("sfu", crate::sfu_runtime::metrics::SFU);
        check("signaling", crate::signaling::metrics::SIGNALING);
    }

    /// A family with labels prints one `# HELP`/`# TYPE` and its samples; nesting in
    /// JSON follows the dots.
    #[test]
    fn labels_and_nesting() {
        let s = tsunagi_signal::Stats {
            switches_to_sfu: 3,
            switches_to_mesh: 1,
            rooms_mesh: 2,
            ..Default::default()
        };
        let mut p = Prometheus::default();
        p.table(crate::signaling::metrics::SIGNALING, &s);
        let text = p.finish();
        assert_eq!(
            text.matches("# TYPE tsunagi_signaling_mode_switches_total counter")
                .count(),
            1
        );
        assert!(text.contains("tsunagi_signaling_mode_switches_total{to=\"sfu\"} 3\n"));
        assert!(text.contains("tsunagi_signaling_mode_switches_total{to=\"mesh\"} 1\n"));
        let v = to_json(crate::signaling::metrics::SIGNALING, &s);
        assert_eq!(v["modeSwitches"]["toSfu"], 3);
        assert_eq!(v["roomsByMode"]["mesh"], 2);
    }
}
