//! Every message and every error code of `docs/signaling.md`: joining, relaying, chat,
//! media state, ping, leave, access tokens and publishing, the ICE servers of a welcome.

use super::*;

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
