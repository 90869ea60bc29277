//! The owner side of a relayed session: a client of another node's WebSocket, for a
//! room of this node. Each one is a connection of the hub like any other; its task
//! stands in for the socket, passing frames between the hub and the relay.

use super::*;

use tsunagi_cluster::{Frame, How};

use crate::cluster::{Relayed, RemoteOpen};

/// Takes relayed sessions until shutdown.
pub(super) async fn accept(handle: SignalingHandle, mut rx: mpsc::Receiver<RemoteOpen>) {
    let mut shutdown = handle.inner.shutdown.subscribe();
    loop {
        let open = tokio::select! {
            o = rx.recv() => o,
            () = tsunagi_net::stopped(&mut shutdown) => None,
        };
        let Some(open) = open else {
            return;
        };
        tokio::spawn(serve(open, handle.clone()));
    }
}

async fn serve(open: RemoteOpen, handle: SignalingHandle) {
    let inner = &handle.inner;
    let Some(cluster) = inner.options.cluster.clone() else {
        return;
    };
    let RemoteOpen {
        from,
        conn: edge_conn,
        host,
        mut inbox,
    } = open;
    let conn = ConnId(inner.next_conn.fetch_add(1, Ordering::Relaxed));
    let (out_tx, mut out_rx) = mpsc::channel(inner.options.outbound_queue.max(1));
    let (ctl_tx, mut ctl_rx) = oneshot::channel();
    // ICE servers of this node (the room's): its own TURN host when it has one, else
    // the host the client used (public-host, if set, wins in the hub either way).
    let host = cluster
        .turn_host()
        .map(str::to_owned)
        .or_else(|| host_from_header(&host));
    let event = Event::Open {
        conn,
        host,
        out: out_tx,
        control: ctl_tx,
    };
    if inner.events.send(event).await.is_err() {
        let _ = cluster.send(&from, Frame::Gone { conn: edge_conn });
        cluster.close_remote(&from, edge_conn);
        return;
    }
    debug!(%conn, edge = %from, edge_conn, "relayed signaling session opened");
    let send = |frame: Frame| cluster.send(&from, frame).is_ok();
    let mut ctl_open = true;
    let how = loop {
        tokio::select! {
            biased;
            ctl = &mut ctl_rx, if ctl_open => match ctl {
                Ok(Control::Busy) => {
                    send(Frame::Busy { conn: edge_conn });
                    break Disconnect::Overflow;
                }
                Ok(Control::Close(reason)) => {
                    send(close_frame(edge_conn, reason));
                    break Disconnect::Clean;
                }
                Err(_) => ctl_open = false,
            },
            out = out_rx.recv() => match out {
                Some(Outbound::Text(text)) => {
                    if !send(Frame::Send { conn: edge_conn, text: text.to_string() }) {
                        // The relay queue is full: as a full outbound queue.
                        send(Frame::Busy { conn: edge_conn });
                        break Disconnect::Overflow;
                    }
                }
                Some(Outbound::Close(reason)) => {
                    send(close_frame(edge_conn, reason));
                    break Disconnect::Clean;
                }
                None => {
                    send(close_frame(edge_conn, CloseReason::Shutdown));
                    break Disconnect::Lost;
                }
            },
            m = inbox.recv() => match m {
                Some(Relayed::Frame(Frame::Text { text, .. })) => {
                    let event = Event::Text { conn, text: text.into() };
                    if inner.events.send(event).await.is_err() {
                        break Disconnect::Lost;
                    }
                }
                Some(Relayed::Frame(Frame::Binary { len, .. })) => {
                    let event = Event::Binary { conn, len: len as usize };
                    if inner.events.send(event).await.is_err() {
                        break Disconnect::Lost;
                    }
                }
                Some(Relayed::Frame(Frame::Closed { how, .. })) => {
                    break match how {
                        How::Clean => Disconnect::Clean,
                        How::Lost => Disconnect::Lost,
                        How::Overflow => Disconnect::Overflow,
                    };
                }
                Some(Relayed::Frame(_)) => {}
                // The edge left, or the relay lost frames: the session waits for a
                // resume (through any node).
                Some(Relayed::NodeFailed | Relayed::Unreachable | Relayed::Drain) | None => {
                    break Disconnect::Lost
                }
            },
        }
    };
    cluster.close_remote(&from, edge_conn);
    debug!(%conn, ?how, "relayed signaling session closed");
    let _ = inner.events.send(Event::Closed { conn, how }).await;
}

fn close_frame(conn: u64, reason: CloseReason) -> Frame {
    Frame::Close {
        conn,
        code: reason.code(),
        reason: reason.text().to_owned(),
    }
}
