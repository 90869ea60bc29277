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
    if handle
        .inner
        .options
        .cluster
        .as_ref()
        .is_some_and(Cluster::is_draining)
    {
        let body = "this tsunagi node is draining (shutting down or being upgraded): connect to another node of the cluster";
        return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    }
    let max = handle.inner.options.max_frame_bytes;
    // Signaling frames are small: a read buffer of 8 KiB (tungstenite's default is 128
    // KiB, allocated per connection) keeps 10,000 idle WebSockets under 100 MiB.
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| connection(socket, handle, host, remote))
}

/// Read buffer of each signaling WebSocket.
const READ_BUFFER: usize = 8 * 1024;

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
        host: host.clone(),
        out: out_tx,
        control: ctl_tx,
    };
    if inner.events.send(open).await.is_err() {
        close(&mut socket, CloseReason::Shutdown).await;
        return;
    }
    debug!(%conn, client = client.as_deref().unwrap_or("?"), "signaling connection opened");
    match run(&mut socket, conn, inner, out_rx, ctl_rx).await {
        Ended::Closed(how) => {
            debug!(%conn, ?how, "signaling connection closed");
            let _ = inner.events.send(Event::Closed { conn, how }).await;
        }
        Ended::Relay {
            cluster,
            owner,
            first,
        } => {
            // The room runs on another node: this hub forgets the connection, which
            // from now on carries that node's session.
            let _ = inner
                .events
                .send(Event::Closed {
                    conn,
                    how: Disconnect::Clean,
                })
                .await;
            debug!(%conn, %owner, "signaling connection relayed to the room's node");
            edge::relay(&mut socket, conn, inner, &cluster, owner, first, host).await;
            debug!(%conn, "relayed signaling connection closed");
        }
    }
}

/// How [`run`] ended.
pub(super) enum Ended {
    /// The connection is over.
    Closed(Disconnect),
    /// Its `join` or `resume` (`first`) is for a session of node `owner`.
    Relay {
        cluster: Cluster,
        owner: Arc<str>,
        first: Utf8Bytes,
    },
}

/// Reads, writes and pings until the connection ends; says how it ended.
pub(super) async fn run(
    socket: &mut WebSocket,
    conn: ConnId,
    inner: &Inner,
    mut out_rx: mpsc::Receiver<Outbound>,
    mut ctl_rx: oneshot::Receiver<Control>,
) -> Ended {
    let o = &inner.options;
    // In a cluster, the first join or resume decides where the session runs.
    let mut routed = false;
    let mut idle_deadline = Instant::now() + o.idle_timeout;
    let mut ping = tokio::time::interval_at(Instant::now() + o.ping_interval, o.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ctl_open = true;
    loop {
        tokio::select! {
            biased;
            ctl = &mut ctl_rx, if ctl_open => match ctl {
                Ok(Control::Busy) => {
                    busy(
                        socket,
                        "too many messages are waiting to be sent to you; the connection is closed",
                    )
                    .await;
                    return Ended::Closed(Disconnect::Overflow);
                }
                Ok(Control::Close(reason)) => {
                    close(socket, reason).await;
                    return Ended::Closed(Disconnect::Clean);
                }
                Err(_) => ctl_open = false,
            },
            out = out_rx.recv() => match out {
                Some(Outbound::Text(text)) => {
                    let msg = Message::Text(Utf8Bytes::from(&*text));
                    match tokio::time::timeout(o.write_timeout, socket.send(msg)).await {
                        Ok(Ok(())) => {}
                        _ => return Ended::Closed(Disconnect::Lost),
                    }
                }
                Some(Outbound::Close(reason)) => {
                    close(socket, reason).await;
                    return Ended::Closed(Disconnect::Clean);
                }
                // The core task is gone (shutdown).
                None => {
                    close(socket, CloseReason::Shutdown).await;
                    return Ended::Closed(Disconnect::Lost);
                }
            },
            frame = tokio::time::timeout_at(idle_deadline, socket.recv()) => {
                let msg = match frame {
                    Err(_) => {
                        close_with(socket, 1001, "idle").await;
                        return Ended::Closed(Disconnect::Lost);
                    }
                    Ok(None) => return Ended::Closed(Disconnect::Lost),
                    Ok(Some(Err(e))) => {
                        debug!(%conn, error = %e, "signaling read failed");
                        if is_capacity(&e) {
                            close_with(socket, 1009, "frame too large").await;
                        }
                        return Ended::Closed(Disconnect::Lost);
                    }
                    Ok(Some(Ok(m))) => m,
                };
                idle_deadline = Instant::now() + o.idle_timeout;
                let event = match msg {
                    Message::Text(text) if !routed && o.cluster.is_some() => {
                        let Some(cluster) = &o.cluster else {
                            return Ended::Closed(Disconnect::Lost);
                        };
                        match edge::route(cluster, &text).await {
                            edge::Route::Pass => Event::Text { conn, text },
                            edge::Route::Local => {
                                routed = true;
                                Event::Text { conn, text }
                            }
                            edge::Route::Remote(owner) => {
                                return Ended::Relay {
                                    cluster: cluster.clone(),
                                    owner,
                                    first: text,
                                };
                            }
                            edge::Route::Refuse(answer) => {
                                let msg = Message::Text(answer.into());
                                match tokio::time::timeout(o.write_timeout, socket.send(msg)).await {
                                    Ok(Ok(())) => continue,
                                    _ => return Ended::Closed(Disconnect::Lost),
                                }
                            }
                        }
                    }
                    Message::Text(text) => Event::Text { conn, text },
                    Message::Binary(b) => Event::Binary { conn, len: b.len() },
                    Message::Ping(_) | Message::Pong(_) => continue,
                    Message::Close(frame) => {
                        // 1000, or no code at all (what `WebSocket.close()` sends).
                        let clean = frame.as_ref().is_none_or(|f| f.code == 1000 || f.code == 1005);
                        // Reading once more flushes the close reply tungstenite queued.
                        let _ = tokio::time::timeout(CLOSE_WAIT, socket.recv()).await;
                        return Ended::Closed(if clean { Disconnect::Clean } else { Disconnect::Lost });
                    }
                };
                if inner.events.send(event).await.is_err() {
                    close(socket, CloseReason::Shutdown).await;
                    return Ended::Closed(Disconnect::Lost);
                }
            },
            _ = ping.tick() => {
                let ping = Message::Ping(Default::default());
                if tokio::time::timeout(o.write_timeout, socket.send(ping)).await.map_or(true, |r| r.is_err()) {
                    return Ended::Closed(Disconnect::Lost);
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

/// `server-busy` with `message` (within a second), then close (1008).
pub(super) async fn busy(socket: &mut WebSocket, message: &str) {
    let busy = ServerMessage::error(ErrorCode::ServerBusy, message, None);
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        socket.send(Message::Text(busy.to_json().into())),
    )
    .await;
    close_with(socket, 1008, "outbound queue full").await;
}

/// Sends a close frame and waits briefly for the client's.
pub(super) async fn close_with(socket: &mut WebSocket, code: u16, reason: impl Into<Utf8Bytes>) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
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
