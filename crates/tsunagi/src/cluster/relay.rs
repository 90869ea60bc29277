//! The relay between nodes: one task publishes queued frames, batched per receiving
//! node, on each receiver's channel; one task reads this node's channel and hands each
//! frame to the session it is for.
//!
//! Redis pub/sub delivers at most once, in order per publishing connection. Both ends
//! notice loss instead of hiding it: `PUBLISH` answers how many subscribers got the
//! batch, and 0 (or an error) means the receiver missed it; a subscription that breaks
//! may have missed batches. Either way the sessions relayed with that node are cut
//! ([`Inner::unreachable`], [`Inner::relay_broken`]): the client resumes, and the
//! owner's grace queue replays what it missed.

use super::*;

use futures_util::{FutureExt, StreamExt};
use tracing::debug;
use tsunagi_cluster::{decode_batch, encode_batch, How};

/// Frames taken off the queue for one round of publishing, at most.
const BATCH_FRAMES: usize = 2048;
/// Bytes of one round, at most (past this the round is published as it is).
const BATCH_BYTES: usize = 512 * 1024;

pub(super) async fn publisher(inner: Arc<Inner>, mut rx: mpsc::Receiver<(Arc<str>, Frame)>) {
    let mut shutdown = inner.shutdown.subscribe();
    let mut conn = inner.redis.clone();
    let mut by_node: Vec<(Arc<str>, Vec<Frame>)> = Vec::new();
    loop {
        let first = tokio::select! {
            f = rx.recv() => f,
            // What is queued still goes out (closes and rejoins of a drain).
            () = tsunagi_net::stopped(&mut shutdown) => rx.try_recv().ok(),
        };
        let Some(first) = first else {
            return;
        };
        // Counted as in flight until published (a drain waits for it).
        inner.publishing.store(1, Ordering::Release);
        by_node.clear();
        let mut bytes = 0;
        let mut frames = 0;
        let mut next = Some(first);
        while let Some((to, frame)) = next {
            bytes += frame.encoded_len();
            frames += 1;
            match by_node.iter_mut().find(|(n, _)| *n == to) {
                Some((_, v)) => v.push(frame),
                None => by_node.push((to, vec![frame])),
            }
            next = if frames < BATCH_FRAMES && bytes < BATCH_BYTES {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        let mut pipe = redis::pipe();
        for (to, frames) in &by_node {
            let mut buf = Vec::with_capacity(bytes / by_node.len().max(1) + 80);
            encode_batch(&inner.id, frames, &mut buf);
            pipe.cmd("PUBLISH").arg(inner.keys.channel(to)).arg(buf);
        }
        let c = &inner.counters;
        c.batches_out
            .fetch_add(by_node.len() as u64, Ordering::Relaxed);
        c.frames_out.fetch_add(frames as u64, Ordering::Relaxed);
        inner.publishing.store(frames as u64, Ordering::Release);
        let published = with_timeout(pipe.query_async::<Vec<i64>>(&mut conn)).await;
        inner.publishing.store(0, Ordering::Release);
        match published {
            Ok(receivers) => {
                for ((to, _), n) in by_node.iter().zip(receivers) {
                    if n == 0 {
                        debug!(node = %to, "relay batch reached no subscriber");
                        inner.unreachable(to);
                    }
                }
            }
            Err(e) => {
                // Redis is away: the batches are lost, the receivers are not to blame.
                c.redis_errors.fetch_add(1, Ordering::Relaxed);
                debug!(error = %e, "relay publish failed");
                for (to, _) in &by_node {
                    inner.lost_batch(to);
                }
            }
        }
    }
}

pub(super) async fn subscriber(inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.subscribe();
    let channel = inner.keys.channel(&inner.id);
    let mut backoff = Duration::from_millis(100);
    let mut broken = false;
    loop {
        let connected = async {
            let mut ps = with_timeout(inner.client.get_async_pubsub()).await?;
            with_timeout(ps.subscribe(&channel)).await?;
            Ok::<_, redis::RedisError>(ps)
        };
        let ps = tokio::select! {
            r = connected => r,
            () = tsunagi_net::stopped(&mut shutdown) => return,
        };
        match ps {
            Ok(mut ps) => {
                backoff = Duration::from_millis(100);
                // A restart the heartbeat asked for while this task was reconnecting
                // (it lost Redis too) is what this new subscription just did: drop the
                // stored permit, or the subscription would end at once and cut every
                // session relayed since.
                let _ = inner.resubscribe.notified().now_or_never();
                inner.subscribed.store(true, Ordering::Relaxed);
                if broken {
                    // Redis may have restarted empty between two heartbeats.
                    inner.directory_back();
                }
                debug!(%channel, "relay subscribed");
                let mut stream = ps.on_message();
                loop {
                    tokio::select! {
                        m = stream.next() => match m {
                            Some(m) => dispatch(&inner, m.get_payload_bytes()),
                            None => break,
                        },
                        () = inner.resubscribe.notified() => break,
                        () = tsunagi_net::stopped(&mut shutdown) => return,
                    }
                }
                inner.subscribed.store(false, Ordering::Relaxed);
                broken = true;
                warn!("the cluster relay's Redis subscription ended; relayed sessions resume when it is back");
                inner.relay_broken();
            }
            Err(e) => {
                debug!(error = %e, "relay subscription failed");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = tsunagi_net::stopped(&mut shutdown) => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Hands each frame of a batch to its session.
fn dispatch(inner: &Arc<Inner>, bytes: &[u8]) {
    let c = &inner.counters;
    let (from, frames) = match decode_batch(bytes) {
        Ok(b) => b,
        Err(e) => {
            c.bad_batches.fetch_add(1, Ordering::Relaxed);
            warn!(error = %e, "an unreadable relay batch on this node's channel was dropped");
            return;
        }
    };
    c.batches_in.fetch_add(1, Ordering::Relaxed);
    c.frames_in
        .fetch_add(frames.len() as u64, Ordering::Relaxed);
    let from: Arc<str> = from.into();
    for frame in frames {
        if frame.from_edge() {
            to_owner_side(inner, &from, frame);
        } else {
            to_edge_side(inner, &from, frame);
        }
    }
}

/// A frame from an edge, for a session this node runs.
fn to_owner_side(inner: &Arc<Inner>, from: &Arc<str>, frame: Frame) {
    let conn = frame.conn();
    let key = (from.clone(), conn);
    if let Frame::Open { host, .. } = frame {
        let (tx, rx) = mpsc::channel(INBOX);
        let open = RemoteOpen {
            from: from.clone(),
            conn,
            host,
            inbox: rx,
        };
        let taken = inner
            .hooks
            .get()
            .is_some_and(|h| h.accept.try_send(open).is_ok());
        if taken {
            inner
                .owner_routes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, tx);
        } else {
            let _ = inner.relay.try_send((from.clone(), Frame::Busy { conn }));
        }
        return;
    }
    let closed = matches!(frame, Frame::Closed { .. });
    let mut routes = inner.owner_routes.lock().unwrap_or_else(|e| e.into_inner());
    match routes.get(&key) {
        Some(tx) => match tx.try_send(Relayed::Frame(frame)) {
            Ok(()) => {
                if closed {
                    // The session's task still gets the frame; nothing more comes.
                    routes.remove(&key);
                }
            }
            Err(_) => {
                // Its task cannot keep up (or ended): it sees the route gone.
                routes.remove(&key);
                drop(routes);
                if !closed {
                    let _ = inner.relay.try_send((from.clone(), Frame::Busy { conn }));
                }
            }
        },
        None => {
            drop(routes);
            if !closed {
                let _ = inner.relay.try_send((from.clone(), Frame::Gone { conn }));
            }
        }
    }
}

/// A frame from an owner, for a WebSocket this node holds.
fn to_edge_side(inner: &Arc<Inner>, from: &Arc<str>, frame: Frame) {
    let conn = frame.conn();
    let mut routes = inner.edge_routes.lock().unwrap_or_else(|e| e.into_inner());
    let delivered = match routes.get(&conn) {
        Some(r) if r.owner == *from => {
            if r.tx.try_send(Relayed::Frame(frame)).is_err() {
                // The client reads too slowly: its task sees the route gone.
                routes.remove(&conn);
            }
            true
        }
        _ => false,
    };
    drop(routes);
    if !delivered {
        // The WebSocket is gone: the owner should not keep its session waiting.
        let _ = inner.relay.try_send((
            from.clone(),
            Frame::Closed {
                conn,
                how: How::Lost,
            },
        ));
    }
}
