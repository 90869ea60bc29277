//! Membership of a cluster of tsunagi nodes through Redis (docs/cluster.md).
//!
//! Each node publishes a [`NodeRecord`] with a short TTL ([`membership`]); a room is
//! run by one node at a time, which claims it in Redis and renews the claim while the
//! room lives; a client may connect to any node (its *edge*), which finds or places the
//! client's room ([`Cluster::locate`]) and, when another node owns it, relays the
//! client's WebSocket frames to that owner and back over Redis pub/sub ([`relay`]).
//!
//! The signaling runtime drives it: a connection task asks [`Cluster::locate`] or
//! [`Cluster::locate_session`] on `join` / `resume` and, for a remote owner, opens an
//! edge route ([`Cluster::open_edge`]) and sends [`Frame`]s with [`Cluster::send`];
//! the owner's signaling runtime takes each [`RemoteOpen`] from the channel given to
//! [`Cluster::attach`] and runs the session as one of its own connections. Every
//! second its core task reports what it holds ([`Cluster::report`]): the rooms it
//! runs (claims to renew) and the resume tokens of their sessions. With `user-quota` or
//! `total-quota`, the heartbeat also publishes this node's TURN allocation counts and
//! reads the other nodes' ([`quota`]), so that the quotas count the whole cluster.
//!
//! Bounds: the relay queue ([`RELAY_QUEUE`] frames), each route's inbox
//! ([`INBOX`]), the routes (one per relayed WebSocket), and the directory view (the
//! live nodes) are all bounded by live state; a full queue gives the client
//! `server-busy`, never unbounded memory.

mod api;
mod directory;
mod membership;
mod quota;
mod relay;

pub use api::routes;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tracing::{info, warn};
use tsunagi_cluster::{choose, Frame, Keys, NodeRecord};
use tsunagi_signal::RejoinReason;

use crate::config::ClusterConfig;
use crate::supervise::{Component, Health};

/// Heartbeat: the node record is written, the view read and claims renewed this often.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// TTL of a node record: a node that stops is gone from the view after this.
pub const NODE_TTL: Duration = Duration::from_secs(3);
/// TTL of a room claim, renewed every heartbeat.
pub const CLAIM_TTL: Duration = Duration::from_secs(3);
/// TTL of a resume entry, renewed every [`RESUME_REFRESH`].
pub const RESUME_TTL: Duration = Duration::from_secs(60);
pub const RESUME_REFRESH: Duration = Duration::from_secs(20);
/// Frames waiting to be published.
pub const RELAY_QUEUE: usize = 16_384;
/// Frames waiting for one relayed connection.
pub const INBOX: usize = 512;
/// Longest a directory request may take before the client is told `unavailable`.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a node that did not receive a relayed batch is avoided.
const SUSPECT_FOR: Duration = Duration::from_secs(5);
/// After Redis comes back (possibly empty, after a restart) every node publishes its
/// claims and resume entries again within a heartbeat or two; until then a missing
/// entry may only be missing for now, so joins of unclaimed rooms and resumes of
/// unknown tokens are answered `unavailable` (try again) rather than placed anew.
const REBUILD: Duration = Duration::from_secs(3);

/// What arrives for a relayed connection.
#[derive(Debug)]
pub enum Relayed {
    Frame(Frame),
    /// The node at the other end left the directory (it died or stopped).
    NodeFailed,
    /// A batch toward the other end was not delivered (or ours may have been missed):
    /// the session's messages may have a gap.
    Unreachable,
    /// This node drains: the client should resume through another node.
    Drain,
}

/// A client of another node's WebSocket, for a room of this node.
#[derive(Debug)]
pub struct RemoteOpen {
    /// The edge node.
    pub from: Arc<str>,
    /// The edge's connection number.
    pub conn: u64,
    /// The `Host` of the client's request (for ICE server URLs); empty when none.
    pub host: String,
    pub inbox: mpsc::Receiver<Relayed>,
}

/// A room to give up: another node claims it, or this node drains.
#[derive(Debug, Clone)]
pub struct Evict {
    pub room: Arc<str>,
    pub reason: RejoinReason,
    pub url: Option<String>,
}

/// What the signaling core holds, reported every second.
#[derive(Debug, Clone, Default)]
pub struct LocalState {
    pub rooms: Vec<Arc<str>>,
    /// Resume tokens of the sessions in those rooms.
    pub tokens: Vec<Arc<str>>,
    pub peers: u64,
    pub connections: u64,
}

/// Where a room or a session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Local,
    Remote(Arc<str>),
}

/// Where a resume token's session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionAt {
    Node(Owner),
    /// Its node left the cluster: the session is over.
    Gone,
    /// The directory has no entry (the local hub answers).
    Unknown,
}

/// The directory could not answer; the text says why (for the client's `error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

/// Settings of [`Cluster::start`] beyond the configuration.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub config: ClusterConfig,
    /// HTTP(S) listeners, for the node record.
    pub http: Vec<std::net::SocketAddr>,
    pub tls: bool,
    /// STUN/TURN `host:port` as clients are told.
    pub turn: Option<String>,
    /// The host of `turn`: relayed sessions of this node's rooms get ICE servers on
    /// it (a relay-only client must reach the SFU of the room's node through that
    /// node's TURN), rather than on the host the client connected to.
    pub turn_host: Option<String>,
    pub sfu_port: Option<u16>,
    /// Media packets the SFU forwarded so far (for `forwardedPps` in the record).
    pub forwarded: Option<ForwardedCounter>,
    /// Key prefix (`tsunagi:`); tests give each cluster its own.
    pub prefix: String,
    pub health: Health,
    /// The TURN runtime's allocation counts, when `user-quota` or `total-quota` is
    /// set: the heartbeat publishes this node's and brings in the other nodes'
    /// ([`quota`]), so that the quotas count the whole cluster.
    pub turn_quota: Option<crate::turn_runtime::quota::QuotaBoard>,
}

/// Reads a running count of forwarded packets (the SFU's).
#[derive(Clone)]
pub struct ForwardedCounter(pub Arc<dyn Fn() -> u64 + Send + Sync>);

impl fmt::Debug for ForwardedCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ForwardedCounter")
    }
}

/// Counters of `/api/cluster` and `/metrics`.
#[derive(Debug, Default)]
struct Counters {
    batches_out: AtomicU64,
    frames_out: AtomicU64,
    batches_in: AtomicU64,
    frames_in: AtomicU64,
    bad_batches: AtomicU64,
    relay_full: AtomicU64,
    undelivered: AtomicU64,
    nodes_failed: AtomicU64,
    rooms_placed: AtomicU64,
    rooms_lost: AtomicU64,
    redis_errors: AtomicU64,
}

/// The directory as last read: live nodes by id.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub nodes: HashMap<Arc<str>, NodeRecord>,
    /// Whether the last heartbeat reached Redis.
    pub redis_ok: bool,
    /// The last Redis error, when it is not reachable.
    pub problem: Option<String>,
}

/// A relayed session on its owner: the edge node and the edge's connection number.
type RemoteKey = (Arc<str>, u64);

struct EdgeRoute {
    owner: Arc<str>,
    tx: mpsc::Sender<Relayed>,
}

/// Where the signaling runtime takes relayed sessions and evictions.
struct Hooks {
    accept: mpsc::Sender<RemoteOpen>,
    evict: mpsc::Sender<Evict>,
}

struct Inner {
    id: Arc<str>,
    name: String,
    started_ms: u64,
    keys: Keys,
    options: ClusterOptions,
    client: redis::Client,
    redis: ConnectionManager,
    view: watch::Sender<Arc<View>>,
    relay: mpsc::Sender<(Arc<str>, Frame)>,
    edge_routes: Mutex<HashMap<u64, EdgeRoute>>,
    owner_routes: Mutex<HashMap<RemoteKey, mpsc::Sender<Relayed>>>,
    suspects: Mutex<HashMap<Arc<str>, Instant>>,
    /// Rooms this node placed on each node since the view was last read (their
    /// records do not show them yet).
    placed: Mutex<HashMap<Arc<str>, u64>>,
    hooks: OnceLock<Hooks>,
    local: Mutex<LocalState>,
    draining: AtomicBool,
    /// Wakes the subscriber to reconnect (the heartbeat lost Redis).
    resubscribe: Notify,
    /// Until when the directory is being rebuilt ([`REBUILD`]).
    rebuilding_until: Mutex<Option<Instant>>,
    /// Publish every resume entry again at the next heartbeat (Redis may be empty).
    republish: AtomicBool,
    /// Sessions started or ended: publish their resume entries now.
    sessions_changed: Notify,
    /// Write the node record now (it started to drain).
    beat_now: Notify,
    /// `POST /api/drain` asked this node to drain.
    drain_requested: Notify,
    subscribed: AtomicBool,
    /// Frames taken off the relay queue whose batch is not published yet.
    publishing: AtomicU64,
    counters: Counters,
    shutdown: watch::Sender<bool>,
}

/// This node's membership: cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Hex SHA-256 of a resume token: what the directory holds instead of the token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The Redis URL with any password replaced, for logs and `/api/cluster`.
pub fn redacted_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://<redacted>@{host}"),
            None => url.to_owned(),
        },
        None => "<not a URL>".to_owned(),
    }
}

impl Cluster {
    /// Connects to Redis lazily (a node starts without it, and says so on `/healthz`),
    /// and starts the heartbeat and the relay tasks on the current runtime.
    pub fn start(options: ClusterOptions) -> Result<Cluster, String> {
        let url = &options.config.redis.0;
        let client = redis::Client::open(url.as_str()).map_err(|e| {
            format!(
                "redis {}: {e}; write e.g. redis://127.0.0.1:6379/0",
                redacted_url(url)
            )
        })?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let redis = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| format!("redis {}: {e}", redacted_url(url)))?;
        let mut run = [0u8; 4];
        rand::rng().fill_bytes(&mut run);
        let id: Arc<str> = format!("{}-{}", options.config.node_name, hex::encode(run)).into();
        let (relay, relay_rx) = mpsc::channel(RELAY_QUEUE);
        let (view, _) = watch::channel(Arc::new(View::default()));
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            name: options.config.node_name.clone(),
            started_ms: unix_ms(),
            keys: Keys::new(&options.prefix),
            id,
            client,
            redis,
            view,
            relay,
            edge_routes: Mutex::new(HashMap::new()),
            owner_routes: Mutex::new(HashMap::new()),
            suspects: Mutex::new(HashMap::new()),
            placed: Mutex::new(HashMap::new()),
            hooks: OnceLock::new(),
            local: Mutex::new(LocalState::default()),
            draining: AtomicBool::new(false),
            resubscribe: Notify::new(),
            rebuilding_until: Mutex::new(None),
            republish: AtomicBool::new(false),
            sessions_changed: Notify::new(),
            beat_now: Notify::new(),
            drain_requested: Notify::new(),
            subscribed: AtomicBool::new(false),
            publishing: AtomicU64::new(0),
            counters: Counters::default(),
            shutdown,
            options,
        });
        if let Some(board) = &inner.options.turn_quota {
            board.join_cluster();
        }
        let health = &inner.options.health;
        health.spawn(
            Component::Cluster,
            "cluster heartbeat",
            membership::run(inner.clone()),
        );
        health.spawn(
            Component::Cluster,
            "cluster relay publisher",
            relay::publisher(inner.clone(), relay_rx),
        );
        health.spawn(
            Component::Cluster,
            "cluster relay subscriber",
            relay::subscriber(inner.clone()),
        );
        info!(
            node = %inner.id,
            redis = %redacted_url(&inner.options.config.redis.0),
            "cluster member; waiting for the directory"
        );
        Ok(Cluster { inner })
    }

    /// This node's id (`{name}-{run}`).
    pub fn id(&self) -> &Arc<str> {
        &self.inner.id
    }

    /// Where relayed sessions and evictions go (the signaling runtime, once).
    pub fn attach(&self, accept: mpsc::Sender<RemoteOpen>, evict: mpsc::Sender<Evict>) {
        let _ = self.inner.hooks.set(Hooks { accept, evict });
    }

    /// The directory as last read.
    pub fn view(&self) -> Arc<View> {
        self.inner.view.borrow().clone()
    }

    /// What the signaling core holds now (rooms to claim, tokens to publish, load).
    /// With `sessions_changed`, the resume entries are published at once rather than
    /// at the next heartbeat: a client may need to resume through another node soon
    /// after it joined.
    pub fn report(&self, state: LocalState, sessions_changed: bool) {
        *self.inner.local.lock().unwrap_or_else(|e| e.into_inner()) = state;
        if sessions_changed {
            self.inner.sessions_changed.notify_one();
        }
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    /// Takes no new rooms from now on: the directory says so before this returns
    /// (unless Redis is away), so no node places a room here or sends a join here
    /// after it.
    pub async fn set_draining(&self) {
        let i = &self.inner;
        i.draining.store(true, Ordering::Relaxed);
        let mut conn = i.redis.clone();
        let mut set = redis::cmd("SET");
        set.arg(i.keys.draining(&i.id))
            .arg(1)
            .arg("PX")
            .arg(NODE_TTL.as_millis() as u64);
        if let Err(e) = with_timeout(set.query_async::<()>(&mut conn)).await {
            warn!(error = %e, "could not mark this node draining in the directory; other nodes learn it from its record");
        }
        i.beat_now.notify_one();
    }

    /// Asks the process to drain (`POST /api/drain`); [`Cluster::drain_requested`]
    /// wakes.
    pub fn request_drain(&self) {
        self.inner.drain_requested.notify_one();
    }

    /// Resolves when a drain was requested over HTTP.
    pub async fn drain_requested(&self) {
        self.inner.drain_requested.notified().await;
    }

    /// Sends every WebSocket this node relays to another node's room away: the
    /// client resumes through another node (the session waits for it there).
    pub fn drain_edges(&self) {
        // Only the edge side: sessions of this node's rooms leave with their rooms.
        self.inner.cut_edges(|_| true, Relayed::Drain);
    }

    /// Sessions still crossing to or from this node: WebSockets it relays to other
    /// nodes, sessions of its rooms relayed from other nodes, and frames not yet
    /// published.
    pub fn in_flight(&self) -> usize {
        let i = &self.inner;
        let edges = i
            .edge_routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        let remotes = i
            .owner_routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        let publishing = i.publishing.load(Ordering::Acquire) as usize;
        edges + remotes + (RELAY_QUEUE - i.relay.capacity()) + publishing
    }

    /// The host for the ICE server URLs of sessions relayed to this node, when it has
    /// one of its own ([`ClusterOptions::turn_host`]).
    pub fn turn_host(&self) -> Option<&str> {
        self.inner.options.turn_host.as_deref()
    }

    /// The drain timeout (`drain-timeout`).
    pub fn drain_timeout(&self) -> Duration {
        self.inner.options.config.drain_timeout
    }

    /// Registers edge connection `conn`, relayed to `owner`: what the owner sends it
    /// arrives on the receiver.
    pub fn open_edge(&self, conn: u64, owner: Arc<str>) -> mpsc::Receiver<Relayed> {
        let (tx, rx) = mpsc::channel(INBOX);
        self.inner
            .edge_routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(conn, EdgeRoute { owner, tx });
        rx
    }

    pub fn close_edge(&self, conn: u64) {
        self.inner
            .edge_routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&conn);
    }

    /// Forgets the owner side of a relayed session (its task ended).
    pub fn close_remote(&self, from: &Arc<str>, conn: u64) {
        self.inner
            .owner_routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(from.clone(), conn));
    }

    /// Queues a frame for node `to`; `Err` when the relay queue is full (the caller
    /// answers `server-busy`).
    pub fn send(&self, to: &Arc<str>, frame: Frame) -> Result<(), Frame> {
        self.inner.relay.try_send((to.clone(), frame)).map_err(|e| {
            self.inner
                .counters
                .relay_full
                .fetch_add(1, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full((_, f))
                | mpsc::error::TrySendError::Closed((_, f)) => f,
            }
        })
    }

    /// A live node's signaling URL to send clients to (not this one), for `rejoin`.
    pub fn other_url(&self) -> Option<String> {
        let view = self.view();
        let others = view
            .nodes
            .values()
            .filter(|n| n.id != *self.inner.id && n.url.is_some());
        choose(others).and_then(|n| n.url.clone())
    }

    /// Stops the heartbeat (the record expires) and the relay, and releases this
    /// node's claims.
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        membership::leave(&self.inner).await;
    }
}

impl Inner {
    fn owner(&self, id: &str) -> Owner {
        if id == &*self.id {
            Owner::Local
        } else {
            Owner::Remote(Arc::from(id))
        }
    }

    /// Entries may be missing for now: Redis came back less than [`REBUILD`] ago.
    fn rebuilding(&self) -> bool {
        self.rebuilding_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| Instant::now() < t)
    }

    /// Redis came back after an outage or a restart.
    fn directory_back(&self) {
        *self
            .rebuilding_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + REBUILD);
        self.republish.store(true, Ordering::Relaxed);
    }

    fn is_suspect(&self, id: &str) -> bool {
        let mut s = self.suspects.lock().unwrap_or_else(|e| e.into_inner());
        match s.get(id) {
            Some(at) if at.elapsed() < SUSPECT_FOR => true,
            Some(_) => {
                s.remove(id);
                false
            }
            None => false,
        }
    }

    fn directory_error(&self, e: &redis::RedisError) -> Unavailable {
        self.counters.redis_errors.fetch_add(1, Ordering::Relaxed);
        Unavailable(format!(
            "the cluster's directory (Redis) did not answer ({e}); try again in a few seconds"
        ))
    }

    /// A batch to `node` was not delivered: every session relayed with it may have a
    /// gap. Edge sessions are told (`Unreachable`), owner sessions end (their task
    /// sees its inbox close and the session waits for a resume).
    fn unreachable(&self, node: &Arc<str>) {
        self.suspects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.clone(), Instant::now());
        self.lost_batch(node);
    }

    /// A batch to `node` was lost (Redis did not take it).
    fn lost_batch(&self, node: &Arc<str>) {
        self.counters.undelivered.fetch_add(1, Ordering::Relaxed);
        self.cut_routes(|owner| owner == node, Relayed::Unreachable);
    }

    /// `node` left the directory: after a drain (expected), or it failed.
    fn node_left(&self, node: &Arc<str>, drained: bool) {
        if drained {
            info!(node = %node, "cluster node left the directory after draining");
        } else {
            self.counters.nodes_failed.fetch_add(1, Ordering::Relaxed);
            warn!(node = %node, "cluster node left the directory (stopped or failed); its relayed sessions move");
        }
        self.cut_routes(|owner| owner == node, Relayed::NodeFailed);
    }

    /// Our subscription broke: whatever was published to us meanwhile is lost.
    fn relay_broken(&self) {
        self.cut_routes(|_| true, Relayed::Unreachable);
    }

    /// Cuts the sessions relayed with the nodes `hit` picks, on both sides.
    fn cut_routes(&self, hit: impl Fn(&Arc<str>) -> bool, why: Relayed) {
        self.cut_edges(&hit, why);
        self.owner_routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(from, _), _| !hit(from));
    }

    /// Tells this node's WebSockets relayed to the nodes `hit` picks, and forgets them.
    fn cut_edges(&self, hit: impl Fn(&Arc<str>) -> bool, why: Relayed) {
        let edges: Vec<EdgeRoute> = {
            let mut routes = self.edge_routes.lock().unwrap_or_else(|e| e.into_inner());
            let ids: Vec<u64> = routes
                .iter()
                .filter(|(_, r)| hit(&r.owner))
                .map(|(c, _)| *c)
                .collect();
            ids.iter().filter_map(|c| routes.remove(c)).collect()
        };
        for r in edges {
            let msg = match why {
                Relayed::NodeFailed => Relayed::NodeFailed,
                Relayed::Drain => Relayed::Drain,
                _ => Relayed::Unreachable,
            };
            // A full inbox: dropping the sender tells it all the same (as a gap).
            let _ = r.tx.try_send(msg);
        }
    }
}

async fn with_timeout<T>(
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(REDIS_TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out"))),
    }
}

/// Distinct values, for diffs of what was published.
fn set_of<T: std::hash::Hash + Eq + Clone>(v: &[T]) -> HashSet<T> {
    v.iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redacted_url("redis://:hunter2@10.0.0.1:6379/0"),
            "redis://<redacted>@10.0.0.1:6379/0"
        );
        assert_eq!(
            redacted_url("rediss://user:pw@r.example.org:6380"),
            "rediss://<redacted>@r.example.org:6380"
        );
        assert_eq!(
            redacted_url("redis://127.0.0.1:6379/1"),
            "redis://127.0.0.1:6379/1"
        );
        assert_eq!(redacted_url("nope"), "<not a URL>");
    }

    #[test]
    fn token_hashes_are_sha256_hex() {
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
