//! What the HTTP routes read ([`HttpState`]): the TURN counters, the other sections of
//! the stats, the HTTP counters and the cores' health; and the two renderings of the
//! stats, `/api/stats` (JSON) and `/metrics` (Prometheus text).

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::metrics::{self, Prometheus, StatsSource};
use super::HttpCounters;
use crate::supervise::Health;
use crate::tls::CertStore;
use crate::turn_runtime::StatsHandle;

/// What the built-in routes read.
#[derive(Clone)]
pub struct HttpState {
    /// The TURN server's counters (`None` when TURN is not running).
    pub turn: Option<StatsHandle>,
    /// More sections of `/api/stats` and `/metrics` (signaling, SFU).
    pub sources: Vec<Arc<dyn StatsSource>>,
    pub http: Arc<HttpCounters>,
    /// Whether the HTTP port speaks TLS and TURN over TLS is offered.
    pub tls: bool,
    pub started: Instant,
    /// The cores' health, for `/healthz`.
    pub health: Health,
    /// The certificate being served, for `/healthz` (`None` without TLS).
    pub certificate: Option<Arc<CertStore>>,
    /// Cluster membership, for `/healthz` (`None`: one node).
    pub cluster: Option<crate::cluster::Cluster>,
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState")
            .field("turn", &self.turn.is_some())
            .field(
                "sources",
                &self.sources.iter().map(|s| s.key()).collect::<Vec<_>>(),
            )
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl HttpState {
    pub fn new(turn: Option<StatsHandle>, http: Arc<HttpCounters>, tls: bool) -> Self {
        Self {
            turn,
            sources: Vec::new(),
            http,
            tls,
            started: Instant::now(),
            health: Health::default(),
            certificate: None,
            cluster: None,
        }
    }

    /// `/healthz` shows this node's cluster membership and whether Redis is reachable.
    pub fn with_cluster(mut self, cluster: crate::cluster::Cluster) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// `/healthz` shows the certificate being served, and any problem renewing or
    /// reloading it.
    pub fn with_certificate(mut self, store: Arc<CertStore>) -> Self {
        self.certificate = Some(store);
        self
    }

    /// `/healthz` reports the cores registered in `health`.
    pub fn with_health(mut self, health: Health) -> Self {
        self.health = health;
        self
    }

    /// Adds a section to `/api/stats` and `/metrics`.
    pub fn with_source(mut self, source: Arc<dyn StatsSource>) -> Self {
        self.sources.push(source);
        self
    }
}

impl HttpState {
    /// The JSON of `/api/stats` ([`stats_value`]).
    pub fn stats_value(&self) -> Value {
        stats_value(self)
    }

    /// The text of `/metrics`.
    pub(crate) fn prometheus_text(&self) -> String {
        prometheus_text(self)
    }
}

/// The JSON of `/api/stats` (camelCase, like the signaling protocol):
///
/// ```json
/// {"version": "0.1.0", "uptimeSeconds": 42, "tls": false,
///  "turn": {"allocations": 1, "allocationsCreated": 3, "allocationsDeleted": 2,
///           "permissions": 1, "channels": 1, "bindingRequests": 5,
///           "authFailures": 0, "peersDenied": 0,
///           "packetsToPeers": 10, "bytesToPeers": 1200,
///           "packetsFromPeers": 10, "bytesFromPeers": 1200,
///           "droppedNoPermission": 0, "droppedRateLimited": 0, "droppedInvalid": 0,
///           "runtime": {"sendWouldBlock": 0,
///                       "sendErrors": 0, "tcpQueueFull": 0, "recvErrors": 0,
///                       "tcpConnections": 0, "streamsRefused": 0, "tcpInvalid": 0,
///                       "proxyHeaderFailures": 0,
///                       "relayExhausted": 0, "relayBindErrors": 0}},
///  "http": {"connections": 1, "accepted": 7, "tlsHandshakeFailures": 0,
///           "plainHttpRedirects": 0, "turnStreams": 0, "pendingRefused": 0,
///           "proxyHeaderFailures": 0}}
/// ```
///
/// `turn` is absent when TURN is not running; each [`StatsSource`] adds its own key
/// (e.g. `signaling`). The TURN and HTTP values are described once, in
/// [`metrics::TURN`] and [`metrics::HTTP`], for this and `/metrics`.
pub fn stats_value(s: &HttpState) -> Value {
    let mut root = Map::new();
    root.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
    root.insert("uptimeSeconds".into(), json!(s.started.elapsed().as_secs()));
    root.insert("tls".into(), json!(s.tls));
    if let Some(turn) = &s.turn {
        let view = (turn.stats(), turn.counters());
        root.insert("turn".into(), metrics::to_json(metrics::TURN, &view));
    }
    root.insert("http".into(), metrics::to_json(metrics::HTTP, &s.http));
    for src in &s.sources {
        root.insert(src.key().to_owned(), src.json());
    }
    Value::Object(root)
}

/// The whole `/metrics` exposition.
pub(crate) fn prometheus_text(s: &HttpState) -> String {
    let mut p = Prometheus::default();
    p.build_info(env!("CARGO_PKG_VERSION"));
    p.gauge(
        "tsunagi_uptime_seconds",
        "Seconds since the server started.",
        s.started.elapsed().as_secs(),
    );
    if let Some(turn) = &s.turn {
        p.table(metrics::TURN, &(turn.stats(), turn.counters()));
    }
    p.table(metrics::HTTP, &s.http);
    for src in &s.sources {
        src.prometheus(&mut p);
    }
    p.finish()
}
