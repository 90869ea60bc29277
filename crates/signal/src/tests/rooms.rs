//! Joining, relaying offers, answers, candidates, chat and media state, and leaving.

use super::*;

#[test]
fn join_welcome_and_peer_joined() {
    let mut t = T::new();
    let (a, a_id, out) = t.join("lobby", "Alice");
    let w = only(&out, a, "welcome");
    assert!(a_id.starts_with("p_") && a_id.len() == 14, "{a_id}");
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
    assert!(w["resumeToken"].as_str().unwrap().starts_with("r_"));
    assert_eq!(w["iceServers"][0], json!({"urls": ["stun:127.0.0.1:3478"]}));
    assert_eq!(
        w["iceServers"][1]["username"],
        format!("{}:{a_id}", UNIX0_MS / 1000 + 3600)
    );
    assert_eq!(w["iceServers"][1]["credential"], format!("cred-{a}"));

    t.advance(Duration::from_secs(1));
    let (b, b_id, out) = t.join("lobby", "  Bob  ");
    let w = only(&out, b, "welcome");
    assert_eq!(w["name"], "Bob", "names are trimmed");
    assert_eq!(
        w["peers"],
        json!([{"id": a_id, "name": "Alice", "media": {"audio": true, "video": true, "screen": false}}])
    );
    assert_eq!(
        only(&out, a, "peer-joined"),
        json!({"type": "peer-joined", "id": b_id, "name": "Bob"})
    );
    assert_ne!(a_id, b_id);
    // The welcome comes before the peer-joined.
    assert!(matches!(&out[0], Output::Send { conn, .. } if *conn == b));

    // Another room is separate.
    let (c, _, out) = t.join("other", "Carol");
    assert_eq!(out.len(), 1);
    assert_eq!(only(&out, c, "welcome")["peers"], json!([]));
    let s = t.hub.stats();
    assert_eq!((s.connections, s.rooms, s.peers, s.joins), (3, 2, 3, 3));
}

#[test]
fn offer_answer_candidate_go_only_to_the_addressee() {
    let mut t = T::new();
    let (a, a_id, _) = t.join("r", "A");
    let (b, b_id, _) = t.join("r", "B");
    let (c, _, _) = t.join("r", "C");
    let out = t.send(a, json!({"type": "offer", "to": b_id, "sdp": SDP_SEND}));
    assert_eq!(out.len(), 1);
    assert_eq!(
        only(&out, b, "offer"),
        json!({"type": "offer", "from": a_id, "sdp": SDP_SEND})
    );
    let out = t.send(
        b,
        json!({"type": "answer", "to": a_id, "sdp": "v=0 answer", "extra": 1}),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(
        only(&out, a, "answer"),
        json!({"type": "answer", "from": b_id, "sdp": "v=0 answer"})
    );
    let cand = json!({"candidate": "candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 0.0.0.0 rport 0 generation 0",
                      "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "EsAw"});
    let out = t.send(
        a,
        json!({"type": "candidate", "to": b_id, "candidate": cand}),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(
        only(&out, b, "candidate"),
        json!({"type": "candidate", "from": a_id, "candidate": cand})
    );
    assert!(to(&out, c).is_empty());
    assert_eq!(t.hub.stats().messages_relayed, 3);
}

#[test]
fn end_of_candidates_is_null() {
    let mut t = T::new();
    let (a, a_id, _) = t.join("r", "A");
    let (b, b_id, _) = t.join("r", "B");
    let out = t.send(
        b,
        json!({"type": "candidate", "to": a_id, "candidate": null}),
    );
    assert_eq!(
        only(&out, a, "candidate"),
        json!({"type": "candidate", "from": b_id, "candidate": null})
    );
}

#[test]
fn chat_fans_out_with_name_and_server_time() {
    let mut t = T::new();
    let (a, a_id, _) = t.join("r", "Alice");
    let (b, _, _) = t.join("r", "B");
    let (c, _, _) = t.join("r", "C");
    t.advance(Duration::from_millis(1234));
    let out = t.send(a, json!({"type": "chat", "text": "hello"}));
    let expected =
        json!({"type": "chat", "from": a_id, "name": "Alice", "text": "hello", "ts": t.unix_ms()});
    assert_eq!(only(&out, b, "chat"), expected);
    assert_eq!(only(&out, c, "chat"), expected);
    assert!(to(&out, a).is_empty(), "no echo to the sender");
    assert_eq!(t.unix_ms(), UNIX0_MS + 1234);
}

#[test]
fn media_is_relayed_and_shown_in_welcome() {
    let mut t = T::new();
    let (a, a_id, _) = t.join("r", "A");
    let (b, _, _) = t.join("r", "B");
    let out = t.send(
        a,
        json!({"type": "media", "audio": false, "video": true, "screen": true}),
    );
    assert_eq!(
        only(&out, b, "media"),
        json!({"type": "media", "from": a_id, "audio": false, "video": true, "screen": true})
    );
    let (_, _, out) = t.join("r", "C");
    let w = &to(&out, ConnId(3))[0];
    assert_eq!(
        w["peers"][0]["media"],
        json!({"audio": false, "video": true, "screen": true})
    );
}

#[test]
fn ping_pong_needs_no_session() {
    let mut t = T::new();
    let c = t.open();
    let out = t.send(c, json!({"type": "ping", "id": 42}));
    assert_eq!(only(&out, c, "pong"), json!({"type": "pong", "id": 42}));
    let out = t.send(c, json!({"type": "ping", "id": {"seq": [1, "x"]}}));
    assert_eq!(only(&out, c, "pong")["id"], json!({"seq": [1, "x"]}));
    let out = t.send(c, json!({"type": "ping"}));
    assert_eq!(only(&out, c, "pong"), json!({"type": "pong", "id": null}));
}

#[test]
fn leave_tells_the_others_and_closes() {
    let mut t = T::new();
    let (a, a_id, _) = t.join("r", "A");
    let (b, _, _) = t.join("r", "B");
    let out = t.send(a, json!({"type": "leave"}));
    assert_eq!(
        only(&out, b, "peer-left"),
        json!({"type": "peer-left", "id": a_id, "reason": "left"})
    );
    assert_eq!(closes(&out), vec![(a, CloseReason::Left)]);
    assert_eq!(CloseReason::Left.code(), 1000);
    assert!(!t.hub.is_open(a));
    // Frames still in flight from the closed connection are ignored.
    assert!(t.send(a, json!({"type": "chat", "text": "x"})).is_empty());
    assert!(t.close(a, Disconnect::Lost).is_empty());
    // The last peer leaving removes the room.
    let out = t.close(b, Disconnect::Clean);
    assert!(out.is_empty());
    let s = t.hub.stats();
    assert_eq!((s.rooms, s.peers, s.connections), (0, 0, 0));
    assert_eq!(s.leaves, [2, 0, 0]);
}

#[test]
fn leave_without_a_session_just_closes() {
    let mut t = T::new();
    let c = t.open();
    let out = t.send(c, json!({"type": "leave"}));
    assert_eq!(closes(&out), vec![(c, CloseReason::Left)]);
}

#[test]
fn clean_close_is_a_leave() {
    let mut t = T::new();
    let (a, a_id, _) = t.join("r", "A");
    let (b, _, _) = t.join("r", "B");
    let out = t.close(a, Disconnect::Clean);
    assert_eq!(
        only(&out, b, "peer-left"),
        json!({"type": "peer-left", "id": a_id, "reason": "left"})
    );
    assert_eq!(t.hub.poll_timeout(), None);
}

#[test]
fn evict_room_tells_every_peer_to_rejoin_and_forgets_the_room() {
    let mut t = T::new();
    let (a, _, _) = t.join("r", "A");
    let (b, b_id, out) = t.join("r", "B");
    let b_token = only(&out, b, "welcome")["resumeToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let (c, _, _) = t.join("other", "C");
    t.drain();
    // B drops: it is in its grace period, with a resume token.
    t.close(b, Disconnect::Lost);
    let tokens: Vec<String> = t.hub.sessions().map(|(_, tok)| tok.to_string()).collect();
    assert_eq!(tokens.len(), 3);
    let mut rooms: Vec<&str> = t.hub.rooms().map(|r| &**r).collect();
    rooms.sort_unstable();
    assert_eq!(rooms, ["other", "r"]);

    let now = t.now;
    let n = t.hub.evict_room(
        now,
        "r",
        RejoinReason::Drain,
        Some("wss://n2.example.org/ws"),
    );
    assert_eq!(n, 2);
    let out = t.drain();
    let msgs = to(&out, a);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["type"], "rejoin");
    assert_eq!(msgs[0]["reason"], "drain");
    assert_eq!(msgs[0]["url"], "wss://n2.example.org/ws");
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Close { conn, reason: CloseReason::Rejoin } if *conn == a
    )));
    assert_eq!(CloseReason::Rejoin.code(), 4001);
    // Nobody else hears of it, and the room and both sessions are gone.
    assert!(to(&out, c).is_empty());
    assert_eq!(t.hub.room_size("r"), 0);
    assert_eq!(t.hub.sessions().count(), 1);
    assert!(t.hub.poll_timeout().is_none(), "B's grace timer is gone");
    assert_eq!(t.hub.stats().evicted, 2);
    assert_eq!(t.hub.stats().peers, 1);
    // B's resume token no longer works; the room can be joined again.
    let b2 = t.open();
    assert!(tokens.contains(&b_token));
    let out = t.send(b2, json!({"type": "resume", "token": b_token}));
    assert_eq!(error(&out, b2), err("resume-failed", Some("resume")));
    let (_, id2, _) = t.join("r", "B");
    assert_ne!(id2, b_id);
    // Evicting an unknown room does nothing.
    assert_eq!(t.hub.evict_room(now, "nope", RejoinReason::Moved, None), 0);
}
