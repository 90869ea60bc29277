//! The signaling WebSocket end to end: an in-process server on 127.0.0.1 port 0 and
//! tokio-tungstenite clients. Every message and every error code of
//! `docs/signaling.md`, resume after a dropped socket, and misbehaving clients that
//! get their error (or get closed) while other peers keep talking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tsunagi::http::StatsSource;
use tsunagi::signaling::{routes, SfuLink, SignalingHandle, SignalingOptions};
use tsunagi_signal::token::{self, Claims};
use tsunagi_signal::{ErrorCode, SfuReply, SfuRequest, TokenSecret};

const TURN_SECRET: &str = "turn-rest-secret";
const TOKEN_SECRET: &[u8] = b"signaling-token-secret";
const WAIT: Duration = Duration::from_secs(5);
const SDP_SEND: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendrecv\r\n";
const SDP_RECV: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\n";

struct Server {
    addr: SocketAddr,
    handle: SignalingHandle,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(configure: impl FnOnce(&mut SignalingOptions)) -> Server {
        let mut o = SignalingOptions {
            turn_secret: Some(TURN_SECRET.into()),
            ..SignalingOptions::default()
        };
        configure(&mut o);
        let handle = SignalingHandle::start(o);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = routes(handle.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let serve = axum::serve(listener, app).into_future();
        let task = tokio::spawn(async move {
            let _ = serve.await;
        });
        Server { addr, handle, task }
    }

    async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// A client that joined `room` as `name`: it, its id, its welcome.
    async fn join(&self, room: &str, name: &str) -> (Client, String, Value) {
        let mut c = self.client().await;
        c.send(json!({"type": "join", "room": room, "name": name}))
            .await;
        let w = c.expect("welcome").await;
        let id = w["id"].as_str().unwrap().to_owned();
        (c, id, w)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .unwrap();
        Client { ws }
    }

    async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// The next text frame. Panics on a close or after [`WAIT`].
    async fn recv(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a message in time")
                .expect("the socket open")
                .expect("a frame");
            match frame {
                Message::Text(t) => return serde_json::from_str(&t).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    async fn expect(&mut self, ty: &str) -> Value {
        let m = self.recv().await;
        assert_eq!(m["type"], ty, "{m}");
        m
    }

    /// An `error` with `code` and `ref` (`None`: no `ref`).
    async fn expect_error(&mut self, code: &str, reference: Option<&str>) -> Value {
        let e = self.expect("error").await;
        assert_eq!(e["code"], code, "{e}");
        assert_eq!(e.get("ref").and_then(Value::as_str), reference, "{e}");
        assert!(!e["message"].as_str().unwrap().is_empty());
        e
    }

    /// Nothing arrives for `d`.
    async fn expect_silence(&mut self, d: Duration) {
        if let Ok(Some(Ok(m))) = tokio::time::timeout(d, self.ws.next()).await {
            if !matches!(m, Message::Ping(_) | Message::Pong(_)) {
                panic!("expected silence, got {m:?}");
            }
        }
    }

    /// Reads until the server closes; returns the close code (skipping text frames).
    async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a close in time")
            {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    async fn close(&mut self, code: u16) {
        self.ws
            .close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: "".into(),
            }))
            .await
            .unwrap();
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn tok(room: &str, sub: &str, ttl: i64, can_publish: Option<bool>, secret: &[u8]) -> String {
    token::sign(
        secret,
        &Claims {
            room: room.into(),
            sub: sub.into(),
            exp: (unix_now() as i64 + ttl) as u64,
            nbf: None,
            can_publish,
        },
    )
}

#[tokio::test]
async fn join_relay_chat_media_ping_leave() {
    let s = Server::start(|_| {}).await;
    let (mut a, a_id, w) = s.join("lobby", "Alice").await;
    assert_eq!(w["room"], "lobby");
    assert_eq!(w["name"], "Alice");
    assert_eq!(w["peers"], json!([]));
    assert_eq!(w["mode"], "mesh");
    assert_eq!(w["maxPeers"], 4);
    assert_eq!(w["canPublish"], true);
    assert_eq!(w["resumeGraceMs"], 15000);
    assert_eq!(
        w["limits"],
        json!({"maxMessageBytes": 65536, "messagesPerSecond": 50})
    );
    // ICE servers on the host the client used, TURN credentials for this peer.
    assert_eq!(w["iceServers"][0], json!({"urls": ["stun:127.0.0.1:3478"]}));
    let turn = &w["iceServers"][1];
    assert_eq!(
        turn["urls"],
        json!([
            "turn:127.0.0.1:3478?transport=udp",
            "turn:127.0.0.1:3478?transport=tcp"
        ])
    );
    let username = turn["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, a_id);
    let expiry: u64 = expiry.parse().unwrap();
    assert!(expiry.abs_diff(unix_now() + 86_400) < 10, "{expiry}");
    let (_, password) = tsunagi_turn::auth::rest_credential(TURN_SECRET, &a_id, expiry);
    assert_eq!(turn["credential"], password);

    let (mut b, b_id, w) = s.join("lobby", "Bob").await;
    assert_eq!(
        w["peers"],
        json!([{"id": a_id, "name": "Alice", "media": {"audio": true, "video": true, "screen": false}}])
    );
    assert_eq!(
        a.recv().await,
        json!({"type": "peer-joined", "id": b_id, "name": "Bob"})
    );
    let (mut c, c_id, _) = s.join("lobby", "Carol").await;
    a.expect("peer-joined").await;
    b.expect("peer-joined").await;

    // Offer, answer and candidates go to the addressee only, with `from`.
    b.send(json!({"type": "offer", "to": a_id, "sdp": SDP_SEND}))
        .await;
    assert_eq!(
        a.recv().await,
        json!({"type": "offer", "from": b_id, "sdp": SDP_SEND})
    );
    a.send(json!({"type": "answer", "to": b_id, "sdp": "v=0 answer"}))
        .await;
    assert_eq!(
        b.recv().await,
        json!({"type": "answer", "from": a_id, "sdp": "v=0 answer"})
    );
    let cand = json!({"candidate": "candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 0.0.0.0 rport 0 generation 0",
                      "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "EsAw"});
    a.send(json!({"type": "candidate", "to": b_id, "candidate": cand}))
        .await;
    assert_eq!(
        b.recv().await,
        json!({"type": "candidate", "from": a_id, "candidate": cand})
    );
    a.send(json!({"type": "candidate", "to": b_id, "candidate": null}))
        .await;
    assert_eq!(
        b.recv().await,
        json!({"type": "candidate", "from": a_id, "candidate": null})
    );
    c.expect_silence(Duration::from_millis(200)).await;

    // Chat and media go to everyone else.
    let before = unix_now() * 1000;
    c.send(json!({"type": "chat", "text": "hello 世界"})).await;
    for peer in [&mut a, &mut b] {
        let m = peer.expect("chat").await;
        assert_eq!(m["from"], c_id);
        assert_eq!(m["name"], "Carol");
        assert_eq!(m["text"], "hello 世界");
        let ts = m["ts"].as_u64().unwrap();
        assert!(ts >= before && ts < before + 5000, "{ts}");
    }
    b.send(json!({"type": "media", "audio": false, "video": true, "screen": true}))
        .await;
    for peer in [&mut a, &mut c] {
        assert_eq!(
            peer.recv().await,
            json!({"type": "media", "from": b_id, "audio": false, "video": true, "screen": true})
        );
    }
    c.expect_silence(Duration::from_millis(100)).await;

    // Ping works with any id.
    a.send(json!({"type": "ping", "id": {"n": 42}})).await;
    assert_eq!(a.recv().await, json!({"type": "pong", "id": {"n": 42}}));

    // Leave: the others get peer-left, the leaver's socket is closed with 1000.
    c.send(json!({"type": "leave"})).await;
    assert_eq!(c.expect_close().await, Some(1000));
    for peer in [&mut a, &mut b] {
        assert_eq!(
            peer.recv().await,
            json!({"type": "peer-left", "id": c_id, "reason": "left"})
        );
    }
    let st = s.handle.stats();
    assert_eq!((st.rooms, st.peers, st.joins), (1, 2, 3));
    assert!(st.messages_relayed >= 8, "{st:?}");
    let j = s.handle.json();
    assert_eq!(j["peers"], 2);
    assert_eq!(j["errors"]["bad-message"], 0);
    assert_eq!(s.handle.key(), "signaling");
}

#[tokio::test]
async fn a_clean_close_is_a_leave() {
    let s = Server::start(|_| {}).await;
    let (mut a, _, _) = s.join("r", "A").await;
    let (mut b, b_id, _) = s.join("r", "B").await;
    a.expect("peer-joined").await;
    b.close(1000).await;
    assert_eq!(
        a.recv().await,
        json!({"type": "peer-left", "id": b_id, "reason": "left"})
    );
}

#[tokio::test]
async fn error_codes() {
    let s = Server::start(|o| {
        // No SFU: every room is mesh, full at mesh_max_peers.
        o.hub.mesh_max_peers = 2;
        o.hub.max_rooms = 2;
        o.hub.max_message_bytes = 1024;
        o.max_frame_bytes = 4096;
    })
    .await;
    let mut c = s.client().await;
    c.send_text("this is not json").await;
    c.expect_error("bad-message", None).await;
    c.ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    c.expect_error("bad-message", None).await;
    c.send(json!({"type": "offer", "to": "p_x"})).await;
    c.expect_error("bad-message", Some("offer")).await;
    c.send(json!({"type": "dance"})).await;
    c.expect_error("unknown-type", None).await;
    c.send(json!({"type": "chat", "text": "hi"})).await;
    c.expect_error("not-joined", Some("chat")).await;
    c.send(json!({"type": "offer", "to": "p_x", "sdp": "v=0"}))
        .await;
    c.expect_error("not-joined", Some("offer")).await;
    c.send(json!({"type": "join", "room": "no spaces", "name": "A"}))
        .await;
    c.expect_error("invalid-room", Some("join")).await;
    c.send(json!({"type": "join", "room": "r", "name": " \t "}))
        .await;
    c.expect_error("invalid-name", Some("join")).await;
    c.send(json!({"type": "resume", "token": "r_unknown"}))
        .await;
    c.expect_error("resume-failed", Some("resume")).await;
    c.send(json!({"type": "chat", "text": "x".repeat(2000)}))
        .await;
    c.expect_error("too-large", None).await;

    // Joined: already-joined, unknown-peer.
    c.send(json!({"type": "join", "room": "r", "name": "A"}))
        .await;
    let w = c.expect("welcome").await;
    let a_id = w["id"].as_str().unwrap().to_owned();
    c.send(json!({"type": "join", "room": "r", "name": "A"}))
        .await;
    c.expect_error("already-joined", Some("join")).await;
    for ty in ["offer", "answer"] {
        c.send(json!({"type": ty, "to": "p_000000000000", "sdp": "v=0"}))
            .await;
        c.expect_error("unknown-peer", Some(ty)).await;
    }
    c.send(json!({"type": "candidate", "to": a_id, "candidate": null}))
        .await;
    c.expect_error("unknown-peer", Some("candidate")).await;

    // room-full and too-many-rooms.
    let (_b, _, _) = s.join("r", "B").await;
    c.expect("peer-joined").await;
    let mut d = s.client().await;
    d.send(json!({"type": "join", "room": "r", "name": "D"}))
        .await;
    let e = d.expect_error("room-full", Some("join")).await;
    assert!(e["message"].as_str().unwrap().contains("2 of 2"), "{e}");
    let (_x, _, _) = s.join("second", "X").await;
    d.send(json!({"type": "join", "room": "third", "name": "D"}))
        .await;
    d.expect_error("too-many-rooms", Some("join")).await;

    // After all that, the connection still works.
    c.send(json!({"type": "ping", "id": 1})).await;
    c.expect("pong").await;

    // A frame over the WebSocket layer's limit closes the socket with 1009.
    d.send_text(&"x".repeat(5000)).await;
    assert_eq!(d.expect_close().await, Some(1009));

    let st = s.handle.stats();
    for (code, n) in [
        (ErrorCode::BadMessage, 3),
        (ErrorCode::UnknownType, 1),
        (ErrorCode::NotJoined, 2),
        (ErrorCode::UnknownPeer, 3),
        (ErrorCode::TooLarge, 1),
        (ErrorCode::RoomFull, 1),
        (ErrorCode::TooManyRooms, 1),
    ] {
        assert_eq!(st.errors_for(code), n, "{code}");
    }
}

#[tokio::test]
async fn access_tokens_and_publishing() {
    let s = Server::start(|o| {
        o.hub.token_secret = Some(TokenSecret(TOKEN_SECRET.to_vec()));
    })
    .await;
    let mut c = s.client().await;
    for bad in [
        None,
        Some("not.a.jwt".to_owned()),
        Some(tok("r", "alice", -10, None, TOKEN_SECRET)),
        Some(tok("r", "alice", 600, None, b"another secret")),
        Some(tok("other", "alice", 600, None, TOKEN_SECRET)),
    ] {
        let mut j = json!({"type": "join", "room": "r", "name": "Alice"});
        if let Some(t) = bad {
            j["token"] = t.into();
        }
        c.send(j).await;
        c.expect_error("invalid-token", Some("join")).await;
    }
    // A viewer token: joins with sub as its name, may not send media.
    c.send(json!({"type": "join", "room": "r", "token": tok("r", "viewer", 600, Some(false), TOKEN_SECRET)}))
        .await;
    let w = c.expect("welcome").await;
    assert_eq!(
        (&w["name"], &w["canPublish"]),
        (&json!("viewer"), &json!(false))
    );
    let mut h = s.client().await;
    h.send(
        json!({"type": "join", "room": "r", "token": tok("*", "host", 600, None, TOKEN_SECRET)}),
    )
    .await;
    let hw = h.expect("welcome").await;
    assert_eq!(hw["canPublish"], true);
    let h_id = hw["id"].as_str().unwrap().to_owned();
    c.expect("peer-joined").await;
    c.send(json!({"type": "offer", "to": h_id, "sdp": SDP_SEND}))
        .await;
    c.expect_error("forbidden", Some("offer")).await;
    c.send(json!({"type": "offer", "to": h_id, "sdp": SDP_RECV}))
        .await;
    assert_eq!(h.expect("offer").await["sdp"], SDP_RECV);
    h.send(json!({"type": "answer", "to": w["id"], "sdp": SDP_SEND}))
        .await;
    assert_eq!(c.expect("answer").await["sdp"], SDP_SEND);
}

#[tokio::test]
async fn resume_after_a_dropped_socket() {
    let s = Server::start(|_| {}).await;
    let (a, a_id, w) = s.join("r", "A").await;
    let token = w["resumeToken"].as_str().unwrap().to_owned();
    let (mut b, b_id, _) = s.join("r", "B").await;
    // The TCP connection goes away without a close frame.
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.handle.stats().peers_in_grace, 1);
    // Messages for A meanwhile are queued.
    b.send(json!({"type": "offer", "to": a_id, "sdp": "v=0 while away"}))
        .await;
    b.send(json!({"type": "chat", "text": "still there?"}))
        .await;

    let mut a2 = s.client().await;
    a2.send(json!({"type": "resume", "token": token})).await;
    let r = a2.expect("resumed").await;
    assert_eq!(r["id"], a_id);
    assert_eq!(r["room"], "r");
    assert_eq!(r["peers"][0]["id"], b_id);
    assert_ne!(r["resumeToken"], token.as_str());
    assert_eq!(
        r["iceServers"][1]["username"]
            .as_str()
            .unwrap()
            .split_once(':')
            .unwrap()
            .1,
        a_id
    );
    assert_eq!(
        a2.recv().await,
        json!({"type": "offer", "from": b_id, "sdp": "v=0 while away"})
    );
    assert_eq!(a2.expect("chat").await["text"], "still there?");
    // B saw neither a leave nor a join.
    b.expect_silence(Duration::from_millis(300)).await;
    a2.send(json!({"type": "answer", "to": b_id, "sdp": "v=0 back"}))
        .await;
    assert_eq!(b.expect("answer").await["from"], a_id);
    // The old token is spent.
    let mut a3 = s.client().await;
    a3.send(json!({"type": "resume", "token": token})).await;
    a3.expect_error("resume-failed", Some("resume")).await;
    // A resume on a connection with a live session is refused.
    a2.send(json!({"type": "resume", "token": r["resumeToken"]}))
        .await;
    a2.expect_error("already-joined", Some("resume")).await;
    // A resume from another socket takes the session over; the old one is closed (4000).
    let mut a4 = s.client().await;
    a4.send(json!({"type": "resume", "token": r["resumeToken"]}))
        .await;
    a4.expect("resumed").await;
    assert_eq!(a2.expect_close().await, Some(4000));
    b.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(s.handle.stats().resumes, 2);
}

#[tokio::test]
async fn grace_expiry_and_going_away() {
    let s = Server::start(|o| o.hub.resume_grace = Duration::from_millis(300)).await;
    let (mut a, a_id, _) = s.join("r", "A").await;
    let (mut b, b_id, _) = s.join("r", "B").await;
    a.expect("peer-joined").await;
    // 1001 (a tab closing) keeps the session for the grace period, like a drop.
    b.close(1001).await;
    a.expect_silence(Duration::from_millis(150)).await;
    assert_eq!(
        a.recv().await,
        json!({"type": "peer-left", "id": b_id, "reason": "timeout"})
    );
    let _ = a_id;
}

#[tokio::test]
async fn flooding_client_is_limited_then_closed_while_others_talk() {
    let s = Server::start(|o| o.hub.flood_close_after = Duration::from_millis(1500)).await;
    let (mut a, a_id, _) = s.join("r", "A").await;
    let (mut b, b_id, _) = s.join("r", "B").await;
    let (mut f, f_id, _) = s.join("r", "F").await;
    a.expect("peer-joined").await;
    a.expect("peer-joined").await;
    b.expect("peer-joined").await;

    let flood = tokio::spawn(async move {
        // Far above 50/s for well over 1.5 s.
        let started = tokio::time::Instant::now();
        let mut sent = 0;
        while started.elapsed() < Duration::from_secs(4) {
            if f.ws
                .send(Message::text(r#"{"type":"ping"}"#))
                .await
                .is_err()
            {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(sent > 100);
        // Pongs for the burst, a rate-limited error, then the close.
        let mut pongs = 0;
        let mut limited = 0;
        let code = loop {
            match tokio::time::timeout(WAIT, f.ws.next()).await.unwrap() {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    match v["type"].as_str().unwrap() {
                        "pong" => pongs += 1,
                        "error" => {
                            assert_eq!(v["code"], "rate-limited");
                            limited += 1;
                        }
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(c))) => break c.map(|c| u16::from(c.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break None,
            }
        };
        (pongs, limited, code)
    });
    // Meanwhile A and B keep exchanging messages; at some point both are told that the
    // flooder was removed.
    let kicked = json!({"type": "peer-left", "id": f_id, "reason": "kicked"});
    let mut told = [false, false];
    async fn next_skipping(c: &mut Client, kicked: &Value, told: &mut bool) -> Value {
        loop {
            let m = c.recv().await;
            if m == *kicked && !*told {
                *told = true;
                continue;
            }
            return m;
        }
    }
    for i in 0..25 {
        a.send(json!({"type": "offer", "to": b_id, "sdp": format!("v=0 {i}")}))
            .await;
        let m = next_skipping(&mut b, &kicked, &mut told[1]).await;
        assert_eq!(m["type"], "offer");
        assert_eq!(m["sdp"], format!("v=0 {i}"));
        b.send(json!({"type": "answer", "to": a_id, "sdp": "v=0"}))
            .await;
        let m = next_skipping(&mut a, &kicked, &mut told[0]).await;
        assert_eq!(m["type"], "answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (pongs, limited, code) = flood.await.unwrap();
    assert_eq!(code, Some(1008));
    assert!(limited >= 1, "{limited}");
    // The burst of 100 (the join took one) plus 50/s while it lasted: never all 4 s.
    assert!((99..100 + 50 * 4).contains(&pongs), "{pongs}");
    for (peer, told) in [(&mut a, told[0]), (&mut b, told[1])] {
        if !told {
            assert_eq!(peer.recv().await, kicked);
        }
    }
    assert!(s.handle.stats().errors_for(ErrorCode::RateLimited) >= 1);
}

#[tokio::test]
async fn oversized_and_bad_token_clients_do_not_disturb_others() {
    let s = Server::start(|o| {
        o.hub.token_secret = Some(TokenSecret(TOKEN_SECRET.to_vec()));
    })
    .await;
    let join = |name: &str| json!({"type": "join", "room": "r", "token": tok("r", name, 600, None, TOKEN_SECRET)});
    let mut a = s.client().await;
    a.send(join("a")).await;
    let a_id = a.expect("welcome").await["id"].as_str().unwrap().to_owned();
    let mut b = s.client().await;
    b.send(join("b")).await;
    let b_id = b.expect("welcome").await["id"].as_str().unwrap().to_owned();
    a.expect("peer-joined").await;

    let mut bad = s.client().await;
    bad.send(json!({"type": "join", "room": "r", "token": tok("r", "m", 600, None, b"forged")}))
        .await;
    bad.expect_error("invalid-token", Some("join")).await;
    let mut big = s.client().await;
    big.send(json!({"type": "chat", "text": "x".repeat(100_000)}))
        .await;
    big.expect_error("too-large", None).await;
    for i in 0..5 {
        a.send(
            json!({"type": "candidate", "to": b_id, "candidate": {"candidate": format!("c{i}")}}),
        )
        .await;
        assert_eq!(b.expect("candidate").await["from"], a_id);
        big.send(json!({"type": "ping", "id": "x".repeat(70_000)}))
            .await;
        big.expect_error("too-large", None).await;
        bad.send(json!({"type": "offer", "to": a_id, "sdp": "v=0"}))
            .await;
        bad.expect_error("not-joined", Some("offer")).await;
    }
    a.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn slow_reader_gets_server_busy_and_never_blocks_others() {
    let s = Server::start(|o| {
        o.outbound_queue = 4;
        o.hub.messages_per_second = 0;
        o.write_timeout = Duration::from_secs(30);
    })
    .await;
    let (mut a, _, _) = s.join("r", "A").await;
    let (mut c, _, _) = s.join("r", "C").await;
    let (mut slow, slow_id, _) = s.join("r", "Slow").await;
    a.expect("peer-joined").await;
    a.expect("peer-joined").await;
    c.expect("peer-joined").await;
    // A sends big offers to Slow, which does not read: the socket buffers fill, then
    // its queue of 4, and the server gives up on it.
    let sdp = "v=0 ".to_owned() + &"a".repeat(60_000);
    let mut kicked = false;
    for i in 0..2000 {
        a.send(json!({"type": "offer", "to": slow_id, "sdp": sdp}))
            .await;
        if i % 20 == 0 {
            // C is served all along.
            a.send(json!({"type": "chat", "text": format!("n{i}")}))
                .await;
            assert_eq!(c.expect("chat").await["text"], format!("n{i}"));
        }
        if let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(Duration::from_millis(1), a.ws.next()).await
        {
            let v: Value = serde_json::from_str(&t).unwrap();
            assert_eq!(
                v,
                json!({"type": "peer-left", "id": slow_id, "reason": "kicked"})
            );
            kicked = true;
            break;
        }
    }
    assert!(kicked, "the slow reader was never dropped");
    assert_eq!(
        c.recv().await,
        json!({"type": "peer-left", "id": slow_id, "reason": "kicked"})
    );
    // Slow finally reads: what fitted, then server-busy, then the close.
    let mut busy = false;
    let code = loop {
        match tokio::time::timeout(WAIT, slow.ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "error" {
                    assert_eq!(v["code"], "server-busy");
                    busy = true;
                }
            }
            Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    assert!(busy);
    assert_eq!(code, Some(1008));
    assert_eq!(s.handle.stats().errors_for(ErrorCode::ServerBusy), 1);
}

#[tokio::test]
async fn idle_connections_are_closed_and_pinging_ones_kept() {
    let s = Server::start(|o| o.idle_timeout = Duration::from_millis(600)).await;
    let mut idle = s.client().await;
    let mut busy = s.client().await;
    for _ in 0..6 {
        busy.send(json!({"type": "ping", "id": 0})).await;
        busy.expect("pong").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(idle.expect_close().await, Some(1001));
    busy.send(json!({"type": "ping", "id": 1})).await;
    busy.expect("pong").await;
}

#[tokio::test]
async fn server_pings_keep_a_quiet_client_alive() {
    let s = Server::start(|o| {
        o.idle_timeout = Duration::from_millis(600);
        o.ping_interval = Duration::from_millis(100);
    })
    .await;
    let mut c = s.client().await;
    // tungstenite answers pings while reading; no application message for 1.5 s.
    c.expect_silence(Duration::from_millis(1500)).await;
    c.send(json!({"type": "ping", "id": 2})).await;
    c.expect("pong").await;
}

#[tokio::test]
async fn shutdown_closes_every_socket() {
    let s = Server::start(|_| {}).await;
    let (mut a, _, _) = s.join("r", "A").await;
    let mut idle = s.client().await;
    let handle = s.handle.clone();
    let stop = tokio::spawn(async move { handle.shutdown().await });
    assert_eq!(a.expect_close().await, Some(1001));
    assert_eq!(idle.expect_close().await, Some(1001));
    tokio::time::timeout(WAIT, stop).await.unwrap().unwrap();
    assert_eq!(s.handle.stats().connections, 0);
}

#[tokio::test]
async fn ipv6_host_is_bracketed() {
    // Only where the host has ::1.
    let Ok(listener) = TcpListener::bind("[::1]:0").await else {
        return;
    };
    let handle = SignalingHandle::start(SignalingOptions {
        turn_secret: Some(TURN_SECRET.into()),
        turns_port: Some(5349),
        ..SignalingOptions::default()
    });
    let addr = listener.local_addr().unwrap();
    let app = routes(handle.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let task = tokio::spawn(axum::serve(listener, app).into_future());
    let mut c = Client::connect(addr).await;
    c.send(json!({"type": "join", "room": "r", "name": "six"}))
        .await;
    let w = c.expect("welcome").await;
    assert_eq!(w["iceServers"][0]["urls"], json!(["stun:[::1]:3478"]));
    assert_eq!(
        w["iceServers"][1]["urls"][2],
        "turns:[::1]:5349?transport=tcp"
    );
    task.abort();
}

/// A stand-in for the SFU runtime on the other end of an [`SfuLink`]: it answers every
/// offer (`"<offer> answered"`) and reports each request it got. Also returns a sender
/// to push replies of one's own (speaker changes).
fn fake_sfu() -> (
    SfuLink,
    mpsc::UnboundedReceiver<SfuRequest>,
    mpsc::Sender<SfuReply>,
) {
    let (req_tx, mut req_rx) = mpsc::channel::<SfuRequest>(64);
    let (rep_tx, rep_rx) = mpsc::channel::<SfuReply>(64);
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    let replies = rep_tx.clone();
    tokio::spawn(async move {
        while let Some(req) = req_rx.recv().await {
            if let SfuRequest::Offer { peer, sdp } = &req {
                let answer = SfuReply::Answer {
                    peer: peer.to_string(),
                    sdp: format!("{sdp} answered"),
                };
                if replies.send(answer).await.is_err() {
                    break;
                }
            }
            let _ = seen_tx.send(req);
        }
    });
    let link = SfuLink {
        requests: req_tx,
        replies: rep_rx,
    };
    (link, seen_rx, rep_tx)
}

async fn next_request(seen: &mut mpsc::UnboundedReceiver<SfuRequest>) -> SfuRequest {
    tokio::time::timeout(WAIT, seen.recv())
        .await
        .expect("an SFU request in time")
        .expect("the fake SFU running")
}

#[tokio::test]
async fn fifth_join_switches_the_room_to_sfu_and_the_sfu_answers() {
    let (link, mut seen, to_hub) = fake_sfu();
    let s = Server::start(move |o| o.sfu = Some(link)).await;
    assert!(
        s.handle.options().sfu.is_none(),
        "the link moved to the core"
    );
    let mut clients: Vec<(Client, String)> = Vec::new();
    for i in 0..4 {
        let (c, id, w) = s.join("big", &format!("P{i}")).await;
        assert_eq!(w["mode"], "mesh");
        assert_eq!(w["maxPeers"], 50);
        for (other, _) in clients.iter_mut() {
            assert_eq!(other.expect("peer-joined").await["id"], id);
        }
        clients.push((c, id));
    }
    // The fifth flips everyone to sfu.
    let (mut e, e_id, w) = s.join("big", "E").await;
    assert_eq!(w["mode"], "sfu");
    for (c, _) in clients.iter_mut() {
        assert_eq!(c.expect("peer-joined").await["id"], e_id);
        assert_eq!(
            c.expect("mode").await,
            json!({"type": "mode", "mode": "sfu"})
        );
    }
    let mut joined = Vec::new();
    for _ in 0..5 {
        match next_request(&mut seen).await {
            SfuRequest::Join {
                room,
                peer,
                can_publish,
            } => {
                assert_eq!(&*room, "big");
                assert!(can_publish);
                joined.push(peer.to_string());
            }
            other => panic!("expected a Join, got {other:?}"),
        }
    }
    let mut all: Vec<String> = clients.iter().map(|(_, id)| id.clone()).collect();
    all.push(e_id.clone());
    assert_eq!(joined, all, "one Join per peer, in join order");

    // An offer to "sfu" comes back as the SFU's answer.
    e.send(json!({"type": "offer", "to": "sfu", "sdp": SDP_SEND}))
        .await;
    assert_eq!(
        e.expect("answer").await,
        json!({"type": "answer", "from": "sfu", "sdp": format!("{SDP_SEND} answered")})
    );
    assert_eq!(
        next_request(&mut seen).await,
        SfuRequest::Offer {
            peer: e_id.as_str().into(),
            sdp: SDP_SEND.into()
        }
    );
    e.send(json!({"type": "candidate", "to": "sfu", "candidate": null}))
        .await;
    assert_eq!(
        next_request(&mut seen).await,
        SfuRequest::Candidate {
            peer: e_id.as_str().into(),
            candidate: Value::Null
        }
    );
    e.send(json!({"type": "view", "tiles": [{"peer": clients[0].1, "width": 320, "height": 180}]}))
        .await;
    assert!(
        matches!(next_request(&mut seen).await, SfuRequest::View { tiles, .. } if tiles.len() == 1)
    );
    // The SFU's own messages reach the room.
    to_hub
        .send(SfuReply::Speaker {
            room: "big".into(),
            peer: clients[1].1.clone(),
        })
        .await
        .unwrap();
    for (c, _) in clients.iter_mut() {
        assert_eq!(c.expect("speaker").await["id"], all[1]);
    }
    assert_eq!(e.expect("speaker").await["id"], all[1]);

    let st = s.handle.json();
    assert_eq!(st["roomsByMode"], json!({"mesh": 0, "sfu": 1}));
    assert_eq!(st["modeSwitches"], json!({"toSfu": 1, "toMesh": 0}));

    // Two leave: 5 -> 4 stays sfu, 4 -> 3 goes back to mesh.
    e.send(json!({"type": "leave"})).await;
    assert_eq!(
        next_request(&mut seen).await,
        SfuRequest::Leave {
            peer: e_id.as_str().into(),
            linger: false
        }
    );
    let (mut d, d_id) = clients.pop().unwrap();
    for (c, _) in clients.iter_mut() {
        assert_eq!(c.expect("peer-left").await["id"], e_id);
    }
    d.send(json!({"type": "leave"})).await;
    for (c, _) in clients.iter_mut() {
        assert_eq!(c.expect("peer-left").await["id"], d_id);
        assert_eq!(c.expect("mode").await["mode"], "mesh");
    }
    assert_eq!(
        next_request(&mut seen).await,
        SfuRequest::Leave {
            peer: d_id.as_str().into(),
            linger: false
        }
    );
    for (_, id) in &clients {
        assert_eq!(
            next_request(&mut seen).await,
            SfuRequest::Leave {
                peer: id.as_str().into(),
                linger: true
            }
        );
    }
    // Mesh again: "sfu" is no peer.
    let (c, _) = &mut clients[0];
    c.send(json!({"type": "offer", "to": "sfu", "sdp": "v=0"}))
        .await;
    let err = c.expect_error("unknown-peer", Some("offer")).await;
    assert!(
        err["message"].as_str().unwrap().contains("mesh mode"),
        "{err}"
    );
    let st = s.handle.json();
    assert_eq!(st["modeSwitches"], json!({"toSfu": 1, "toMesh": 1}));
}

#[tokio::test]
async fn a_full_sfu_queue_is_server_busy_and_the_session_goes_on() {
    // A link whose SFU never reads: the first request fills its queue of one.
    let (req_tx, _req_rx) = mpsc::channel::<SfuRequest>(1);
    let (_rep_tx, rep_rx) = mpsc::channel::<SfuReply>(1);
    let link = SfuLink {
        requests: req_tx,
        replies: rep_rx,
    };
    let s = Server::start(move |o| o.sfu = Some(link)).await;
    let mut a = s.client().await;
    a.send(json!({"type": "join", "room": "s", "name": "A", "mode": "sfu"}))
        .await;
    assert_eq!(a.expect("welcome").await["mode"], "sfu");
    a.send(json!({"type": "offer", "to": "sfu", "sdp": "v=0"}))
        .await;
    let e = a.expect_error("server-busy", Some("offer")).await;
    assert!(e["message"].as_str().unwrap().contains("SFU"), "{e}");
    a.send(json!({"type": "ping", "id": 7})).await;
    a.expect("pong").await;
    assert_eq!(s.handle.stats().sfu_dropped, 1);
    assert_eq!(s.handle.json()["sfuDropped"], 1);
}

#[tokio::test]
async fn without_a_link_rooms_stay_mesh() {
    let s = Server::start(|_| {}).await;
    let mut a = s.client().await;
    a.send(json!({"type": "join", "room": "s", "name": "A", "mode": "sfu"}))
        .await;
    let w = a.expect("welcome").await;
    assert_eq!(
        (w["mode"].clone(), w["maxPeers"].clone()),
        (json!("mesh"), json!(4))
    );
    a.send(json!({"type": "view", "tiles": []})).await;
    a.send(json!({"type": "candidate", "to": "sfu", "candidate": null}))
        .await;
    a.expect_error("unknown-peer", Some("candidate")).await;
}
