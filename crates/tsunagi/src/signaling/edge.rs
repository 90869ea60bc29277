//! The edge of a cluster: a WebSocket this node holds for a session that another node
//! runs. The first `join` or `resume` is routed ([`route`]); when its room or session
//! is elsewhere, every frame goes there through the relay and what comes back is
//! written to the socket ([`relay`]). Pings, the idle timeout and write timeouts stay
//! here, with the socket.

use super::*;

use tsunagi_cluster::{Frame, How};
use tsunagi_signal::{parse_client_message, validate_room, ClientMessage, Rejoin, RejoinReason};

use crate::cluster::{Owner, Relayed, SessionAt};

/// Where a text frame of a connection without a session goes.
pub(super) enum Route {
    /// Not a `join` or `resume`: the local hub answers it.
    Pass,
    /// A session of this node.
    Local,
    /// A session of another node.
    Remote(Arc<str>),
    /// Not served now: send this `error` text.
    Refuse(String),
}

pub(super) async fn route(cluster: &Cluster, text: &str) -> Route {
    match parse_client_message(text) {
        Ok(ClientMessage::Join(j)) => {
            if validate_room(&j.room).is_err() {
                return Route::Local; // the hub says what is wrong with it
            }
            match cluster.locate(&j.room).await {
                Ok(Owner::Local) => Route::Local,
                Ok(Owner::Remote(node)) => Route::Remote(node),
                Err(e) => refuse(ErrorCode::Unavailable, e.0, "join"),
            }
        }
        Ok(ClientMessage::Resume(r)) => match cluster.locate_session(&r.token).await {
            Ok(SessionAt::Node(Owner::Remote(node))) => Route::Remote(node),
            Ok(SessionAt::Gone) => refuse(
                ErrorCode::ResumeFailed,
                "the cluster node that held this session is gone; join the room again".into(),
                "resume",
            ),
            Ok(SessionAt::Node(Owner::Local) | SessionAt::Unknown) => Route::Local,
            Err(e) => refuse(ErrorCode::Unavailable, e.0, "resume"),
        },
        _ => Route::Pass,
    }
}

fn refuse(code: ErrorCode, message: String, reference: &str) -> Route {
    Route::Refuse(ServerMessage::error(code, message, Some(reference)).to_json())
}

/// Carries a WebSocket's session to and from node `owner` until either side ends it.
pub(super) async fn relay(
    socket: &mut WebSocket,
    conn: ConnId,
    inner: &Inner,
    cluster: &Cluster,
    owner: Arc<str>,
    first: Utf8Bytes,
    host: Option<String>,
) {
    let o = &inner.options;
    let c = conn.0;
    let mut inbox = cluster.open_edge(c, owner.clone());
    let opened = cluster
        .send(
            &owner,
            Frame::Open {
                conn: c,
                host: host.unwrap_or_default(),
            },
        )
        .is_ok()
        && cluster
            .send(
                &owner,
                Frame::Text {
                    conn: c,
                    text: first.to_string(),
                },
            )
            .is_ok();
    if !opened {
        relay_busy(socket).await;
        cluster.close_edge(c);
        return;
    }
    let tell_owner = |how: How| {
        let _ = cluster.send(&owner, Frame::Closed { conn: c, how });
    };
    let mut idle_deadline = Instant::now() + o.idle_timeout;
    let mut ping = tokio::time::interval_at(Instant::now() + o.ping_interval, o.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            r = inbox.recv() => match r {
                Some(Relayed::Frame(Frame::Send { text, .. })) => {
                    let msg = Message::Text(text.into());
                    if !matches!(tokio::time::timeout(o.write_timeout, socket.send(msg)).await, Ok(Ok(()))) {
                        tell_owner(How::Lost);
                        break;
                    }
                }
                Some(Relayed::Frame(Frame::Close { code, reason, .. })) => {
                    close_with(socket, code, reason).await;
                    break;
                }
                Some(Relayed::Frame(Frame::Busy { .. })) => {
                    relay_busy(socket).await;
                    break;
                }
                Some(Relayed::NodeFailed) => {
                    let rejoin = ServerMessage::Rejoin(Rejoin {
                        reason: RejoinReason::NodeFailed,
                        url: None,
                    });
                    let _ = tokio::time::timeout(
                        o.write_timeout,
                        socket.send(Message::Text(rejoin.to_json().into())),
                    )
                    .await;
                    close(socket, CloseReason::Rejoin).await;
                    break;
                }
                // This node drains: the session waits on its node, the client resumes
                // through another one.
                Some(Relayed::Drain) => {
                    tell_owner(How::Lost);
                    close_with(socket, 1012, "node draining: resume").await;
                    break;
                }
                // Frames of the other direction are not for an edge.
                Some(Relayed::Frame(Frame::Open { .. } | Frame::Text { .. } | Frame::Binary { .. } | Frame::Closed { .. })) => {}
                // The owner no longer has this connection, a batch was lost, or the
                // client read too slowly: the session may have a gap, so the client
                // resumes (the owner replays what it queued).
                Some(Relayed::Frame(Frame::Gone { .. }) | Relayed::Unreachable) | None => {
                    tell_owner(How::Lost);
                    close_with(socket, 1012, "relay interrupted: resume").await;
                    break;
                }
            },
            frame = tokio::time::timeout_at(idle_deadline, socket.recv()) => {
                let msg = match frame {
                    Err(_) => {
                        tell_owner(How::Lost);
                        close_with(socket, 1001, "idle").await;
                        break;
                    }
                    Ok(None) | Ok(Some(Err(_))) => {
                        tell_owner(How::Lost);
                        break;
                    }
                    Ok(Some(Ok(m))) => m,
                };
                idle_deadline = Instant::now() + o.idle_timeout;
                let frame = match msg {
                    Message::Text(text) => Frame::Text { conn: c, text: text.to_string() },
                    Message::Binary(b) => Frame::Binary { conn: c, len: u32::try_from(b.len()).unwrap_or(u32::MAX) },
                    Message::Ping(_) | Message::Pong(_) => continue,
                    Message::Close(frame) => {
                        let clean = frame.as_ref().is_none_or(|f| f.code == 1000 || f.code == 1005);
                        tell_owner(if clean { How::Clean } else { How::Lost });
                        let _ = tokio::time::timeout(CLOSE_WAIT, socket.recv()).await;
                        break;
                    }
                };
                if cluster.send(&owner, frame).is_err() {
                    // The relay queue is full (a slow Redis or node): as an overflow.
                    tell_owner(How::Overflow);
                    relay_busy(socket).await;
                    break;
                }
            },
            _ = ping.tick() => {
                let ping = Message::Ping(Default::default());
                if tokio::time::timeout(o.write_timeout, socket.send(ping)).await.map_or(true, |r| r.is_err()) {
                    tell_owner(How::Lost);
                    break;
                }
            },
        }
    }
    cluster.close_edge(c);
}

/// `server-busy` for a relay that could not keep up, then close (1008).
async fn relay_busy(socket: &mut WebSocket) {
    busy(
        socket,
        "the cluster could not carry your messages fast enough; the connection is closed",
    )
    .await;
}
