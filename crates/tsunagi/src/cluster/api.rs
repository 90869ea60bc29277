//! `GET /api/cluster` (the nodes, as open as `/api/stats`), `POST /api/drain`, the
//! `cluster` section of `/api/stats` and `/metrics`, and what `/healthz` says.

use super::*;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

use crate::http::{Prometheus, StatsSource};

/// `GET /api/cluster`, `POST /api/drain`.
pub fn routes(cluster: Cluster) -> Router {
    Router::new()
        .route("/api/cluster", get(nodes))
        .route("/api/drain", post(drain))
        .with_state(cluster)
}

/// `POST /api/drain`, from this host only (it ends the process): the node takes no
/// new rooms, moves its rooms and clients to other nodes, and exits.
async fn drain(
    State(c): State<Cluster>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    let local = client.is_some_and(|Extension(ConnectInfo(a))| a.ip().is_loopback());
    if !local {
        let body = json!({"error": "POST /api/drain is served to this host only (127.0.0.1 or ::1): run it on the node, e.g. curl -X POST http://127.0.0.1:8080/api/drain, or send SIGTERM"});
        return (StatusCode::FORBIDDEN, Json(body)).into_response();
    }
    c.request_drain();
    let body = json!({
        "node": &*c.inner.id,
        "draining": true,
        "timeoutSecs": c.drain_timeout().as_secs(),
    });
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

async fn nodes(State(c): State<Cluster>) -> Response {
    let status = if c.view().redis_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(c.listing()),
    )
        .into_response()
}

impl Cluster {
    /// The body of `/api/cluster`: this node, the directory's state and every live
    /// node's record, by id.
    pub fn listing(&self) -> Value {
        let view = self.view();
        let mut nodes: Vec<&NodeRecord> = view.nodes.values().collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        json!({
            "node": &*self.inner.id,
            "redis": self.redis_status(),
            "nodes": nodes,
        })
    }

    /// For `/healthz` and `/api/cluster`: whether Redis is reachable, and what is wrong.
    pub fn redis_status(&self) -> Value {
        let view = self.view();
        json!({
            "url": redacted_url(&self.inner.options.config.redis.0),
            "connected": view.redis_ok,
            "subscribed": self.inner.subscribed.load(Ordering::Relaxed),
            "problem": view.problem,
        })
    }

    /// The `cluster` object of `/healthz`.
    pub fn health(&self) -> Value {
        let view = self.view();
        json!({
            "node": &*self.inner.id,
            "draining": self.is_draining(),
            "liveNodes": view.nodes.len(),
            "redis": self.redis_status(),
        })
    }
}

impl StatsSource for Cluster {
    fn key(&self) -> &'static str {
        "cluster"
    }

    fn json(&self) -> Value {
        let c = &self.inner.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let view = self.view();
        json!({
            "node": &*self.inner.id,
            "redisConnected": view.redis_ok,
            "liveNodes": view.nodes.len(),
            "draining": self.is_draining(),
            "relayedConnections": self.inner.edge_routes.lock().unwrap_or_else(|e| e.into_inner()).len(),
            "remoteSessions": self.inner.owner_routes.lock().unwrap_or_else(|e| e.into_inner()).len(),
            "batchesOut": g(&c.batches_out),
            "framesOut": g(&c.frames_out),
            "batchesIn": g(&c.batches_in),
            "framesIn": g(&c.frames_in),
            "badBatches": g(&c.bad_batches),
            "relayQueueFull": g(&c.relay_full),
            "undeliveredBatches": g(&c.undelivered),
            "nodesFailed": g(&c.nodes_failed),
            "roomsPlaced": g(&c.rooms_placed),
            "roomsLost": g(&c.rooms_lost),
            "redisErrors": g(&c.redis_errors),
        })
    }

    fn prometheus(&self, out: &mut Prometheus) {
        let c = &self.inner.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let view = self.view();
        out.gauge(
            "tsunagi_cluster_redis_connected",
            "Whether the last heartbeat reached Redis (1) or not (0).",
            u64::from(view.redis_ok),
        );
        out.gauge(
            "tsunagi_cluster_live_nodes",
            "Nodes in the cluster's directory, this one included.",
            view.nodes.len() as u64,
        );
        out.counter(
            "tsunagi_cluster_frames_out_total",
            "Relay frames published to other nodes.",
            g(&c.frames_out),
        );
        out.counter(
            "tsunagi_cluster_frames_in_total",
            "Relay frames received from other nodes.",
            g(&c.frames_in),
        );
        out.counter(
            "tsunagi_cluster_undelivered_batches_total",
            "Relay batches that reached no subscriber (the receiving node was gone or reconnecting).",
            g(&c.undelivered),
        );
        out.counter(
            "tsunagi_cluster_relay_queue_full_total",
            "Frames refused because the relay queue was full (the client got server-busy).",
            g(&c.relay_full),
        );
        out.counter(
            "tsunagi_cluster_nodes_failed_total",
            "Nodes that left the directory while sessions were relayed with them.",
            g(&c.nodes_failed),
        );
        out.counter(
            "tsunagi_cluster_rooms_placed_total",
            "Rooms this node placed (claimed for itself or another node).",
            g(&c.rooms_placed),
        );
        out.counter(
            "tsunagi_cluster_redis_errors_total",
            "Redis requests that failed or timed out.",
            g(&c.redis_errors),
        );
    }
}
