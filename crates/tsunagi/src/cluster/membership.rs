//! The heartbeat: every [`HEARTBEAT`] this node writes its record, reads the live
//! nodes, renews the claims of its rooms (giving up those another node holds now),
//! releases the rooms it no longer runs, keeps the resume entries of its sessions and
//! exchanges TURN allocation counts ([`super::quota`]).
//! A node that leaves the directory is told to the sessions relayed with it.

use super::*;

use tsunagi_cluster::Load;

/// Room keys per script call.
const CHUNK: usize = 500;

/// What the heartbeat published, to send only changes.
#[derive(Default)]
struct Published {
    rooms: HashSet<Arc<str>>,
    /// The resume tokens published, with their hashes.
    tokens: HashMap<Arc<str>, String>,
    tokens_refreshed: Option<Instant>,
}

pub(super) async fn run(inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.subscribe();
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published = Published::default();
    let mut cpu = Cpu::new();
    let mut pps = Rate::default();
    let mut last_warn: Option<Instant> = None;
    let mut first = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = inner.beat_now.notified() => {}
            () = inner.sessions_changed.notified() => {
                // Only the resume entries, between heartbeats; an error waits for the
                // heartbeat to report it.
                if inner.view.borrow().redis_ok {
                    let local = inner.local.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    let mut conn = inner.redis.clone();
                    let _ = sync_tokens(&inner, &mut conn, &local, &mut published, true).await;
                }
                continue;
            }
            () = tsunagi_net::stopped(&mut shutdown) => return,
        }
        let local = inner
            .local
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let forwarded = inner.options.forwarded.as_ref().map(|f| (f.0)());
        let record = record(&inner, &local, cpu.percent(), pps.per_second(forwarded));
        if inner.republish.swap(false, Ordering::Relaxed) {
            published = Published::default();
        }
        let was_ok = inner.view.borrow().redis_ok;
        match beat(&inner, &record, &local, &mut published, was_ok).await {
            Ok(nodes) => {
                if !was_ok {
                    info!(node = %inner.id, live = nodes.len(), "cluster directory reached");
                    if !first {
                        inner.directory_back();
                    }
                }
                first = false;
                // A node failed when it leaves the directory between two heartbeats
                // that both reached Redis. After an outage the view is from before it:
                // Redis may have restarted empty, and the others write their records
                // again within a heartbeat, so a node missing now may be alive; nothing
                // is relayed with any node yet (the relay was cut when Redis went away).
                if was_ok {
                    let before = inner.view.borrow().clone();
                    for (id, last) in &before.nodes {
                        if !nodes.contains_key(id) && *id != inner.id {
                            inner.node_left(id, last.draining);
                        }
                    }
                }
                inner.view.send_replace(Arc::new(View {
                    nodes,
                    redis_ok: true,
                    problem: None,
                }));
                inner
                    .placed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
            }
            Err(e) => {
                inner.counters.redis_errors.fetch_add(1, Ordering::Relaxed);
                let problem = e.to_string();
                if was_ok || last_warn.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                    warn!(error = %problem, "the cluster directory (Redis) is not reachable: calls go on, new joins get 'unavailable'; retrying");
                    last_warn = Some(Instant::now());
                }
                if was_ok {
                    // The subscription is likely broken too: make it start over.
                    inner.resubscribe.notify_one();
                }
                let nodes = inner.view.borrow().nodes.clone();
                inner.view.send_replace(Arc::new(View {
                    nodes,
                    redis_ok: false,
                    problem: Some(problem),
                }));
                // After Redis comes back (maybe empty, after a restart), publish all.
                published = Published::default();
            }
        }
    }
}

fn record(inner: &Inner, local: &LocalState, cpu_percent: f64, forwarded_pps: u64) -> NodeRecord {
    let o = &inner.options;
    let relayed = inner
        .edge_routes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .len() as u64;
    NodeRecord {
        id: inner.id.to_string(),
        name: inner.name.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_ms: inner.started_ms,
        updated_ms: unix_ms(),
        url: o.config.url.clone(),
        http: o.http.iter().map(ToString::to_string).collect(),
        tls: o.tls,
        turn: o.turn.clone(),
        sfu_port: o.sfu_port,
        draining: inner.draining.load(Ordering::Relaxed),
        load: Load {
            rooms: local.rooms.len() as u64,
            peers: local.peers,
            connections: local.connections + relayed,
            relayed,
            forwarded_pps,
            cpu_percent,
            cores: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
        },
    }
}

/// One heartbeat; the live nodes.
async fn beat(
    inner: &Arc<Inner>,
    record: &NodeRecord,
    local: &LocalState,
    published: &mut Published,
    was_ok: bool,
) -> redis::RedisResult<HashMap<Arc<str>, NodeRecord>> {
    let k = &inner.keys;
    let mut conn = inner.redis.clone();
    let json = serde_json::to_string(record).unwrap_or_default();
    let mut pipe = redis::pipe();
    if record.draining {
        pipe.cmd("SET")
            .arg(k.draining(&inner.id))
            .arg(1)
            .arg("PX")
            .arg(NODE_TTL.as_millis() as u64)
            .ignore();
    }
    let (_, _, ids): ((), i64, Vec<String>) = with_timeout(
        pipe.cmd("SET")
            .arg(k.node(&inner.id))
            .arg(json)
            .arg("PX")
            .arg(NODE_TTL.as_millis() as u64)
            .cmd("SADD")
            .arg(k.nodes())
            .arg(&*inner.id)
            .cmd("SMEMBERS")
            .arg(k.nodes())
            .query_async(&mut conn),
    )
    .await?;
    let keys: Vec<String> = ids.iter().map(|id| k.node(id)).collect();
    let values: Vec<Option<String>> = if keys.is_empty() {
        Vec::new()
    } else {
        with_timeout(redis::cmd("MGET").arg(&keys).query_async(&mut conn)).await?
    };
    let mut nodes = HashMap::new();
    let mut gone = Vec::new();
    for (id, v) in ids.iter().zip(values) {
        match v.and_then(|j| serde_json::from_str::<NodeRecord>(&j).ok()) {
            Some(r) if r.id == *id => {
                nodes.insert(Arc::from(id.as_str()), r);
            }
            _ => gone.push(id.clone()),
        }
    }
    if !gone.is_empty() {
        with_timeout(
            redis::cmd("SREM")
                .arg(k.nodes())
                .arg(&gone)
                .query_async::<i64>(&mut conn),
        )
        .await?;
    }
    renew_rooms(inner, &mut conn, local, published).await?;
    sync_tokens(inner, &mut conn, local, published, was_ok).await?;
    super::quota::sync(inner, &mut conn, &nodes).await?;
    Ok(nodes)
}

/// Renews the claims of the rooms this node runs, gives up those claimed by another
/// node, and releases the ones it no longer runs.
async fn renew_rooms(
    inner: &Arc<Inner>,
    conn: &mut ConnectionManager,
    local: &LocalState,
    published: &mut Published,
) -> redis::RedisResult<()> {
    let k = &inner.keys;
    let renew = redis::Script::new(tsunagi_cluster::keys::RENEW);
    for chunk in local.rooms.chunks(CHUNK) {
        let mut inv = renew.prepare_invoke();
        for room in chunk {
            inv.key(k.room(room));
        }
        inv.arg(&*inner.id).arg(CLAIM_TTL.as_millis() as u64);
        let lost: Vec<usize> = with_timeout(inv.invoke_async(conn)).await?;
        for i in lost {
            let Some(room) = i.checked_sub(1).and_then(|i| chunk.get(i)) else {
                continue;
            };
            inner.counters.rooms_lost.fetch_add(1, Ordering::Relaxed);
            warn!(%room, "another node claims this room now; its peers are sent there");
            if let Some(h) = inner.hooks.get() {
                let _ = h.evict.try_send(Evict {
                    room: room.clone(),
                    reason: RejoinReason::Moved,
                    url: None,
                });
            }
        }
    }
    let now = set_of(&local.rooms);
    let ended: Vec<&Arc<str>> = published.rooms.difference(&now).collect();
    if !ended.is_empty() {
        let release = redis::Script::new(tsunagi_cluster::keys::RELEASE);
        for chunk in ended.chunks(CHUNK) {
            let mut inv = release.prepare_invoke();
            for room in chunk {
                inv.key(k.room(room));
            }
            inv.arg(&*inner.id);
            with_timeout(inv.invoke_async::<i64>(conn)).await?;
        }
    }
    published.rooms = now;
    Ok(())
}

/// Publishes the resume entries of new sessions, deletes those of ended ones, and
/// renews them all every [`RESUME_REFRESH`] (or at once after Redis came back).
async fn sync_tokens(
    inner: &Arc<Inner>,
    conn: &mut ConnectionManager,
    local: &LocalState,
    published: &mut Published,
    was_ok: bool,
) -> redis::RedisResult<()> {
    let k = &inner.keys;
    let refresh = !was_ok
        || published
            .tokens_refreshed
            .is_none_or(|t| t.elapsed() >= RESUME_REFRESH);
    let ttl = RESUME_TTL.as_millis() as u64;
    let mut pipe = redis::pipe();
    let mut n = 0;
    let mut now: HashMap<Arc<str>, String> = HashMap::with_capacity(local.tokens.len());
    for t in &local.tokens {
        let (hash, new) = match published.tokens.get(t) {
            Some(h) => (h.clone(), false),
            None => (token_hash(t), true),
        };
        if refresh || new {
            pipe.cmd("SET")
                .arg(k.resume(&hash))
                .arg(&*inner.id)
                .arg("PX")
                .arg(ttl)
                .ignore();
            n += 1;
        }
        now.insert(t.clone(), hash);
    }
    for (t, h) in &published.tokens {
        if !now.contains_key(t) {
            pipe.cmd("DEL").arg(k.resume(h)).ignore();
            n += 1;
        }
    }
    if n > 0 {
        with_timeout(pipe.query_async::<()>(conn)).await?;
    }
    if refresh {
        published.tokens_refreshed = Some(Instant::now());
    }
    published.tokens = now;
    Ok(())
}

/// On shutdown: the record, the claims and the resume entries go at once (other nodes
/// need not wait for TTLs).
pub(super) async fn leave(inner: &Arc<Inner>) {
    let k = &inner.keys;
    let local = inner
        .local
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut conn = inner.redis.clone();
    let release = redis::Script::new(tsunagi_cluster::keys::RELEASE);
    let mut inv = release.prepare_invoke();
    for room in &local.rooms {
        inv.key(k.room(room));
    }
    inv.arg(&*inner.id);
    let mut pipe = redis::pipe();
    pipe.cmd("DEL").arg(k.node(&inner.id)).ignore();
    pipe.cmd("DEL").arg(k.draining(&inner.id)).ignore();
    pipe.cmd("DEL").arg(k.turn(&inner.id)).ignore();
    pipe.cmd("SREM").arg(k.nodes()).arg(&*inner.id).ignore();
    let done = async {
        if !local.rooms.is_empty() {
            inv.invoke_async::<i64>(&mut conn).await?;
        }
        pipe.query_async::<()>(&mut conn).await
    };
    match with_timeout(done).await {
        Ok(()) => info!(node = %inner.id, "left the cluster"),
        Err(e) => {
            warn!(error = %e, "could not leave the cluster's directory cleanly; its entries expire by themselves")
        }
    }
}

/// Per-second rate of a running count, between two calls.
#[derive(Default)]
struct Rate {
    last: Option<(Instant, u64)>,
}

impl Rate {
    fn per_second(&mut self, count: Option<u64>) -> u64 {
        let Some(count) = count else {
            return 0;
        };
        let now = Instant::now();
        let rate = match self.last {
            Some((t, before)) => {
                let secs = now.duration_since(t).as_secs_f64();
                if secs > 0.0 {
                    (count.saturating_sub(before) as f64 / secs) as u64
                } else {
                    0
                }
            }
            None => 0,
        };
        self.last = Some((now, count));
        rate
    }
}

/// This process's CPU use, from `/proc/self/stat` (user + system ticks).
struct Cpu {
    last: Option<(Instant, u64)>,
}

impl Cpu {
    fn new() -> Cpu {
        Cpu { last: None }
    }

    /// Percent of one core since the last call (0 the first time).
    fn percent(&mut self) -> f64 {
        let Some(ticks) = self_ticks() else {
            return 0.0;
        };
        let now = Instant::now();
        let pct = match self.last {
            Some((t, before)) => {
                let secs = now.duration_since(t).as_secs_f64();
                // Linux reports in USER_HZ, 100 on every architecture it runs on.
                if secs > 0.0 {
                    ticks.saturating_sub(before) as f64 / 100.0 / secs * 100.0
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        self.last = Some((now, ticks));
        pct
    }
}

fn self_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; field 3 is the first after ')'.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}
