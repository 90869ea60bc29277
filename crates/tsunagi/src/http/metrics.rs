//! `/metrics` in the Prometheus text exposition format (version 0.0.4).
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

use super::routes::HttpState;

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

    pub fn finish(self) -> String {
        self.out
    }
}

/// The whole exposition.
pub(crate) fn render(s: &HttpState) -> String {
    let mut p = Prometheus::default();
    let _ = writeln!(
        p.out,
        "# HELP tsunagi_build_info Version of the running binary.\n# TYPE tsunagi_build_info gauge\ntsunagi_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    p.gauge(
        "tsunagi_uptime_seconds",
        "Seconds since the server started.",
        s.started.elapsed().as_secs(),
    );
    if let Some(turn) = &s.turn {
        let t = turn.stats();
        let c = turn.counters();
        p.gauge(
            "tsunagi_turn_allocations",
            "TURN allocations live now.",
            t.allocations,
        );
        p.counter(
            "tsunagi_turn_allocations_created_total",
            "TURN allocations created.",
            t.allocations_created,
        );
        p.counter(
            "tsunagi_turn_allocations_deleted_total",
            "TURN allocations deleted (expired, refreshed to 0, connection closed).",
            t.allocations_deleted,
        );
        p.gauge(
            "tsunagi_turn_permissions",
            "TURN permissions live now.",
            t.permissions,
        );
        p.gauge(
            "tsunagi_turn_channels",
            "TURN channel bindings live now.",
            t.channels,
        );
        p.counter(
            "tsunagi_turn_binding_requests_total",
            "STUN Binding requests answered.",
            t.binding_requests,
        );
        p.counter(
            "tsunagi_turn_auth_failures_total",
            "TURN requests refused for their credentials.",
            t.auth_failures,
        );
        p.counter(
            "tsunagi_turn_peers_denied_total",
            "Peer addresses refused by the peer policy (403).",
            t.peers_denied,
        );
        p.counter(
            "tsunagi_turn_packets_to_peers_total",
            "Packets relayed from clients to peers.",
            t.packets_to_peers,
        );
        p.counter(
            "tsunagi_turn_bytes_to_peers_total",
            "Payload bytes relayed from clients to peers.",
            t.bytes_to_peers,
        );
        p.counter(
            "tsunagi_turn_packets_from_peers_total",
            "Packets relayed from peers to clients.",
            t.packets_from_peers,
        );
        p.counter(
            "tsunagi_turn_bytes_from_peers_total",
            "Payload bytes relayed from peers to clients.",
            t.bytes_from_peers,
        );
        p.labeled_counter(
            "tsunagi_turn_dropped_total",
            "Packets the TURN server dropped, by reason.",
            "reason",
            &[
                ("no_permission", t.dropped_no_permission),
                ("rate_limited", t.dropped_rate_limited),
                ("invalid", t.dropped_invalid),
                ("send_would_block", c.send_would_block),
                ("tcp_queue_full", c.tcp_queue_full),
            ],
        );
        p.counter(
            "tsunagi_turn_send_errors_total",
            "Sends that failed (unreachable, message too large, ...).",
            c.send_errors,
        );
        p.counter(
            "tsunagi_turn_recv_errors_total",
            "Receive errors on listener or relay sockets.",
            c.recv_errors,
        );
        p.gauge(
            "tsunagi_turn_stream_connections",
            "TURN TCP and TLS client connections open now.",
            c.tcp_connections,
        );
        p.counter(
            "tsunagi_turn_tls_handshake_failures_total",
            "TURN-over-TLS handshakes that failed or timed out.",
            c.tls_handshake_failures,
        );
        p.counter(
            "tsunagi_turn_stream_invalid_total",
            "TURN TCP/TLS connections closed for a stream that was not STUN or ChannelData.",
            c.tcp_invalid,
        );
        p.counter(
            "tsunagi_turn_relay_exhausted_total",
            "Allocations refused for lack of a free relay port.",
            c.relay_exhausted,
        );
        p.counter(
            "tsunagi_turn_relay_bind_errors_total",
            "Relay sockets that could not be opened.",
            c.relay_bind_errors,
        );
    }
    let h = &s.http;
    p.gauge(
        "tsunagi_http_connections",
        "HTTP connections open now, WebSockets included.",
        h.connections.load(Ordering::Relaxed),
    );
    p.counter(
        "tsunagi_http_connections_accepted_total",
        "HTTP connections accepted.",
        h.accepted.load(Ordering::Relaxed),
    );
    p.counter(
        "tsunagi_http_tls_handshake_failures_total",
        "HTTPS handshakes that failed or timed out.",
        h.tls_handshake_failures.load(Ordering::Relaxed),
    );
    p.counter(
        "tsunagi_http_plain_redirects_total",
        "Plain HTTP requests on the HTTPS port, redirected to https.",
        h.plain_http_redirects.load(Ordering::Relaxed),
    );
    for src in &s.sources {
        src.prometheus(&mut p);
    }
    p.finish()
}
