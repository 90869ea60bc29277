//! The task of one signaling WebSocket: frames in and out, pings, idle and write
//! timeouts, and the close codes it ends with.

use super::*;

pub(super) async fn upgrade(
    State(handle): State<SignalingHandle>,
    ws: WebSocketUpgrade,
    headers: HeaderMap,
    remote: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(host_from_header);
    let remote = remote.map(|Extension(ConnectInfo(a))| a);
    let max = handle.inner.options.max_frame_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| connection(socket, handle, host, remote))
}

/// One WebSocket, from upgrade to close.
pub(super) async fn connection(
    mut socket: WebSocket,
    handle: SignalingHandle,
    host: Option<String>,
    remote: Option<SocketAddr>,
) {
    let inner = &handle.inner;
    let conn = ConnId(inner.next_conn.fetch_add(1, Ordering::Relaxed));
    let client = remote.map(|a| inner.redact.addr(a).to_string());
    let (out_tx, out_rx) = mpsc::channel(inner.options.outbound_queue.max(1));
    let (ctl_tx, ctl_rx) = oneshot::channel();
    let open = Event::Open {
        conn,
        host,
        out: out_tx,
        control: ctl_tx,
    };
    if inner.events.send(open).await.is_err() {
        close(&mut socket, CloseReason::Shutdown).await;
        return;
    }
    debug!(%conn, client = client.as_deref().unwrap_or("?"), "signaling connection opened");
    let how = run(&mut socket, conn, inner, out_rx, ctl_rx).await;
    debug!(%conn, ?how, "signaling connection closed");
    let _ = inner.events.send(Event::Closed { conn, how }).await;
}

/// Reads, writes and pings until the connection ends; says how it ended.
pub(super) async fn run(
    socket: &mut WebSocket,
    conn: ConnId,
    inner: &Inner,
    mut out_rx: mpsc::Receiver<Outbound>,
    mut ctl_rx: oneshot::Receiver<Control>,
) -> Disconnect {
    let o = &inner.options;
    let mut idle_deadline = Instant::now() + o.idle_timeout;
    let mut ping = tokio::time::interval_at(Instant::now() + o.ping_interval, o.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ctl_open = true;
    loop {
        tokio::select! {
            biased;
            ctl = &mut ctl_rx, if ctl_open => match ctl {
                Ok(Control::Busy) => {
                    let busy = ServerMessage::error(
                        ErrorCode::ServerBusy,
                        "too many messages are waiting to be sent to you; the connection is closed",
                        None,
                    );
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        socket.send(Message::Text(busy.to_json().into())),
                    )
                    .await;
                    close_with(socket, 1008, "outbound queue full").await;
                    return Disconnect::Overflow;
                }
                Ok(Control::Close(reason)) => {
                    close(socket, reason).await;
                    return Disconnect::Clean;
                }
                Err(_) => ctl_open = false,
            },
            out = out_rx.recv() => match out {
                Some(Outbound::Text(text)) => {
                    let msg = Message::Text(Utf8Bytes::from(&*text));
                    match tokio::time::timeout(o.write_timeout, socket.send(msg)).await {
                        Ok(Ok(())) => {}
                        _ => return Disconnect::Lost,
                    }
                }
                Some(Outbound::Close(reason)) => {
                    close(socket, reason).await;
                    return Disconnect::Clean;
                }
                // The core task is gone (shutdown).
                None => {
                    close(socket, CloseReason::Shutdown).await;
                    return Disconnect::Lost;
                }
            },
            frame = tokio::time::timeout_at(idle_deadline, socket.recv()) => {
                let msg = match frame {
                    Err(_) => {
                        close_with(socket, 1001, "idle").await;
                        return Disconnect::Lost;
                    }
                    Ok(None) => return Disconnect::Lost,
                    Ok(Some(Err(e))) => {
                        debug!(%conn, error = %e, "signaling read failed");
                        if is_capacity(&e) {
                            close_with(socket, 1009, "frame too large").await;
                        }
                        return Disconnect::Lost;
                    }
                    Ok(Some(Ok(m))) => m,
                };
                idle_deadline = Instant::now() + o.idle_timeout;
                let event = match msg {
                    Message::Text(text) => Event::Text { conn, text },
                    Message::Binary(b) => Event::Binary { conn, len: b.len() },
                    Message::Ping(_) | Message::Pong(_) => continue,
                    Message::Close(frame) => {
                        // 1000, or no code at all (what `WebSocket.close()` sends).
                        let clean = frame.as_ref().is_none_or(|f| f.code == 1000 || f.code == 1005);
                        // Reading once more flushes the close reply tungstenite queued.
                        let _ = tokio::time::timeout(CLOSE_WAIT, socket.recv()).await;
                        return if clean { Disconnect::Clean } else { Disconnect::Lost };
                    }
                };
                if inner.events.send(event).await.is_err() {
                    close(socket, CloseReason::Shutdown).await;
                    return Disconnect::Lost;
                }
            },
            _ = ping.tick() => {
                let ping = Message::Ping(Default::default());
                if tokio::time::timeout(o.write_timeout, socket.send(ping)).await.map_or(true, |r| r.is_err()) {
                    return Disconnect::Lost;
                }
            },
        }
    }
}

/// Whether a read failed on the frame size limit. axum does not re-export
/// tungstenite's error type, so this goes by its text ("Space limit exceeded: Message
/// too long: N > MAX").
pub(super) fn is_capacity(e: &axum::Error) -> bool {
    let text = e.to_string();
    text.contains("Space limit exceeded") || text.contains("too long")
}

pub(super) async fn close(socket: &mut WebSocket, reason: CloseReason) {
    close_with(socket, reason.code(), reason.text()).await;
}

/// Sends a close frame and waits briefly for the client's.
pub(super) async fn close_with(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let sent = tokio::time::timeout(CLOSE_WAIT, socket.send(Message::Close(Some(frame)))).await;
    if matches!(sent, Ok(Ok(()))) {
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(Ok(m)) = socket.recv().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}
