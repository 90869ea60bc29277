//! Where a client's session goes: the node that runs a room (found, or placed and
//! claimed), and the node that holds a resume token's session.

use super::*;

impl Cluster {
    /// The node a client's `join` of `room` goes to: the live owner of its claim, or
    /// else the least loaded live node, which is claimed for it atomically.
    pub async fn locate(&self, room: &str) -> Result<Owner, Unavailable> {
        let i = &self.inner;
        let view = self.view();
        if !view.redis_ok {
            return Err(Unavailable(format!(
                "the cluster's directory (Redis) is not reachable from this node{}; try again in a few seconds",
                view.problem.as_deref().map(|p| format!(" ({p})")).unwrap_or_default()
            )));
        }
        let key = i.keys.room(room);
        let mut conn = i.redis.clone();
        let current: Option<String> =
            with_timeout(redis::cmd("GET").arg(&key).query_async(&mut conn))
                .await
                .map_err(|e| i.directory_error(&e))?;
        let suspect = |id: &str| i.is_suspect(id);
        // As far as this node's view goes (the claim script checks again in Redis).
        let serving = |id: &str| {
            view.nodes.get(id).is_some_and(|n| !n.draining)
                && !suspect(id)
                && !(id == &*i.id && self.is_draining())
        };
        if let Some(cur) = &current {
            if serving(cur) {
                // Confirmed below by the script (it may have started to drain).
            } else if i.rebuilding() {
                return Err(Unavailable(
                    "the cluster is rebuilding its directory after Redis came back; join again in a moment".into(),
                ));
            }
        } else if i.rebuilding() {
            return Err(Unavailable(
                "the cluster is rebuilding its directory after Redis came back; join again in a moment".into(),
            ));
        }
        let takeover = current.as_deref().filter(|c| !serving(c)).unwrap_or("");
        // The records are up to a heartbeat old: this node's own load is taken as it
        // is now, and rooms placed since the records were read are added.
        let local = i.local.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let placed = i.placed.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut candidates: Vec<NodeRecord> = view
            .nodes
            .values()
            .filter(|n| serving(&n.id))
            .map(|n| {
                let mut n = n.clone();
                if n.id == *i.id {
                    n.load.rooms = local.rooms.len() as u64;
                    n.load.peers = local.peers;
                }
                let extra = placed.get(n.id.as_str()).copied().unwrap_or(0);
                n.load.rooms += extra;
                n.load.peers += extra;
                n
            })
            .collect();
        let script = redis::Script::new(tsunagi_cluster::keys::CLAIM);
        loop {
            // With no candidate left, the current owner may still serve (the script
            // says); an empty candidate never does.
            let chosen = choose(&candidates)
                .map(|n| n.id.clone())
                .unwrap_or_default();
            let owner: Option<String> = with_timeout(
                script
                    .key(&key)
                    .arg(&chosen)
                    .arg(CLAIM_TTL.as_millis() as u64)
                    .arg(i.keys.node_prefix())
                    .arg(takeover)
                    .arg(i.keys.draining_prefix())
                    .invoke_async(&mut conn),
            )
            .await
            .map_err(|e| i.directory_error(&e))?;
            match owner {
                Some(owner) => {
                    if owner == chosen && current.as_deref() != Some(owner.as_str()) {
                        i.counters.rooms_placed.fetch_add(1, Ordering::Relaxed);
                        *i.placed
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(Arc::from(owner.as_str()))
                            .or_default() += 1;
                        info!(%room, node = %owner, "room placed");
                    }
                    return Ok(i.owner(&owner));
                }
                None if chosen.is_empty() => {
                    return Err(Unavailable(
                        "no node of the cluster takes new rooms now (all are draining or unreachable); try again in a few seconds".into(),
                    ));
                }
                // It stopped serving since the view was read: the next one.
                None => candidates.retain(|n| n.id != chosen),
            }
        }
    }

    /// The node that holds the session of a resume token.
    pub async fn locate_session(&self, token: &str) -> Result<SessionAt, Unavailable> {
        let i = &self.inner;
        if !self.view().redis_ok {
            return Err(Unavailable(
                "the cluster's directory (Redis) is not reachable from this node; resume again in a few seconds".into(),
            ));
        }
        let mut conn = i.redis.clone();
        let node: Option<String> = with_timeout(
            redis::cmd("GET")
                .arg(i.keys.resume(&token_hash(token)))
                .query_async(&mut conn),
        )
        .await
        .map_err(|e| i.directory_error(&e))?;
        if node.is_none() && i.rebuilding() {
            return Err(Unavailable(
                "the cluster is rebuilding its directory after Redis came back; resume again in a moment".into(),
            ));
        }
        let Some(node) = node else {
            return Ok(SessionAt::Unknown);
        };
        if self.view().nodes.contains_key(node.as_str()) && !i.is_suspect(&node) {
            return Ok(SessionAt::Node(i.owner(&node)));
        }
        if i.is_suspect(&node) {
            // A batch to it reached no subscriber lately: a killed node's subscription
            // ends at once, its record only with its TTL. Ask Redis who listens.
            let (_, listeners): (String, u64) = with_timeout(
                redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(i.keys.channel(&node))
                    .query_async(&mut conn),
            )
            .await
            .map_err(|e| i.directory_error(&e))?;
            return Ok(if listeners > 0 {
                SessionAt::Node(i.owner(&node))
            } else {
                SessionAt::Gone
            });
        }
        // Not in the view (yet): ask the directory whether its record exists.
        let exists: bool = with_timeout(
            redis::cmd("EXISTS")
                .arg(i.keys.node(&node))
                .query_async(&mut conn),
        )
        .await
        .map_err(|e| i.directory_error(&e))?;
        if exists {
            Ok(SessionAt::Node(i.owner(&node)))
        } else {
            Ok(SessionAt::Gone)
        }
    }
}
