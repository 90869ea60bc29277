//! Limits and refusals: full rooms, bad names, unknown peers, floods, access tokens, connection limits, shutdown.

use super::*;

#[test]
fn room_full() {
    let mut t = T::new();
    for i in 0..4 {
        t.join("r", &format!("P{i}"));
    }
    let c = t.open();
    let out = t.send(c, json!({"type": "join", "room": "r", "name": "Eve"}));
    assert_eq!(error(&out, c), err("room-full", Some("join")));
    let msg = to(&out, c)[0]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("4 of 4"), "{msg}");
    // A peer in its grace period still takes a place.
    t.close(ConnId(1), Disconnect::Lost);
    let out = t.send(c, json!({"type": "join", "room": "r", "name": "Eve"}));
    assert_eq!(error(&out, c), err("room-full", Some("join")));
    t.advance(Duration::from_secs(15));
    let out = t.send(c, json!({"type": "join", "room": "r", "name": "Eve"}));
    only(&out, c, "welcome");
}

#[test]
fn too_many_rooms() {
    let mut t = T::with(HubConfig {
        max_rooms: 2,
        ..HubConfig::default()
    });
    t.join("a", "A");
    t.join("b", "B");
    let c = t.open();
    let out = t.send(c, json!({"type": "join", "room": "c", "name": "C"}));
    assert_eq!(error(&out, c), err("too-many-rooms", Some("join")));
    // Existing rooms can still be joined.
    let out = t.send(c, json!({"type": "join", "room": "a", "name": "C"}));
    only(&out, c, "welcome");
}

#[test]
fn invalid_room_and_name() {
    let mut t = T::new();
    let c = t.open();
    for room in [
        "",
        "has space",
        "slash/",
        "ünïcode",
        &"r".repeat(65),
        "dot.ted",
    ] {
        let out = t.send(c, json!({"type": "join", "room": room, "name": "A"}));
        assert_eq!(
            error(&out, c),
            err("invalid-room", Some("join")),
            "{room:?}"
        );
    }
    for name in ["", "   ", "a\u{7}b", "line\nbreak", &"n".repeat(65)] {
        let out = t.send(c, json!({"type": "join", "room": "ok", "name": name}));
        assert_eq!(
            error(&out, c),
            err("invalid-name", Some("join")),
            "{name:?}"
        );
    }
    let out = t.send(c, json!({"type": "join", "room": "ok"}));
    assert_eq!(error(&out, c), err("invalid-name", Some("join")));
    // Limits are inclusive; names count characters, not bytes.
    let out = t.send(
        c,
        json!({"type": "join", "room": "A-z_0".repeat(12) + "abcd", "name": "é".repeat(64)}),
    );
    assert_eq!(only(&out, c, "welcome")["name"], "é".repeat(64));
}

#[test]
fn unknown_peer() {
    let mut t = T::new();
    let (a, a_id, _) = t.join("r", "A");
    let (_, other_room_id, _) = t.join("elsewhere", "X");
    for target in ["p_000000000000", a_id.as_str(), other_room_id.as_str(), ""] {
        for msg in [
            json!({"type": "offer", "to": target, "sdp": "v=0"}),
            json!({"type": "answer", "to": target, "sdp": "v=0"}),
            json!({"type": "candidate", "to": target, "candidate": null}),
        ] {
            let ty = msg["type"].as_str().unwrap().to_owned();
            let out = t.send(a, msg);
            assert_eq!(error(&out, a), err("unknown-peer", Some(&ty)), "{target}");
        }
    }
}

#[test]
fn not_joined_and_already_joined() {
    let mut t = T::new();
    let c = t.open();
    for msg in [
        json!({"type": "offer", "to": "p_1", "sdp": "v=0"}),
        json!({"type": "answer", "to": "p_1", "sdp": "v=0"}),
        json!({"type": "candidate", "to": "p_1", "candidate": null}),
        json!({"type": "chat", "text": "hi"}),
        json!({"type": "media", "audio": true}),
    ] {
        let ty = msg["type"].as_str().unwrap().to_owned();
        let out = t.send(c, msg);
        assert_eq!(error(&out, c), err("not-joined", Some(&ty)));
    }
    let (a, _, _) = t.join("r", "A");
    let out = t.send(a, json!({"type": "join", "room": "r2", "name": "A"}));
    assert_eq!(error(&out, a), err("already-joined", Some("join")));
}

#[test]
fn malformed_frames() {
    let mut t = T::new();
    let c = t.open();
    for bad in [
        "",
        "nope",
        "{",
        "[]",
        "null",
        "{\"type\": 1}",
        "{\"room\": \"r\"}",
    ] {
        let out = t.text(c, bad);
        assert_eq!(error(&out, c), err("bad-message", None), "{bad:?}");
    }
    let out = t.text(c, r#"{"type": "hello"}"#);
    assert_eq!(error(&out, c), err("unknown-type", None));
    let out = t.text(c, r#"{"type": "chat", "text": 5}"#);
    assert_eq!(error(&out, c), err("bad-message", Some("chat")));
    t.hub.handle_binary(t.now, c, 10);
    let out = t.drain();
    assert_eq!(error(&out, c), err("bad-message", None));
    // The connection still works.
    let out = t.send(c, json!({"type": "ping", "id": 1}));
    only(&out, c, "pong");
    let s = t.hub.stats();
    assert_eq!(s.errors_for(ErrorCode::BadMessage), 9);
    assert_eq!(s.errors_for(ErrorCode::UnknownType), 1);
}

#[test]
fn too_large_is_discarded() {
    let mut t = T::with(HubConfig {
        max_message_bytes: 100,
        ..HubConfig::default()
    });
    let (a, _, _) = t.join("r", "A");
    let (b, _, _) = t.join("r", "B");
    let big = json!({"type": "chat", "text": "x".repeat(100)}).to_string();
    let out = t.text(a, &big);
    assert_eq!(error(&out, a), err("too-large", None));
    assert!(to(&out, b).is_empty());
    let fits = json!({"type": "chat", "text": "x".repeat(70)}).to_string();
    assert!(fits.len() <= 100);
    let out = t.text(a, &fits);
    only(&out, b, "chat");
}

#[test]
fn rate_limit_burst_refill_and_one_error_a_second() {
    let mut t = T::new();
    let (a, _, _) = t.join("r", "A");
    let (b, _, _) = t.join("r", "B");
    // The join used one token of the burst of 100.
    for _ in 0..99 {
        let out = t.send(a, json!({"type": "chat", "text": "x"}));
        only(&out, b, "chat");
    }
    let out = t.send(a, json!({"type": "chat", "text": "x"}));
    assert_eq!(error(&out, a), err("rate-limited", None));
    assert!(to(&out, b).is_empty(), "discarded");
    // Further refusals within the second are silent.
    for _ in 0..10 {
        assert!(t.send(a, json!({"type": "ping"})).is_empty());
    }
    // 20 ms give one token at 50/s.
    t.advance(Duration::from_millis(20));
    only(&t.send(a, json!({"type": "ping"})), a, "pong");
    assert!(t.send(a, json!({"type": "ping"})).is_empty());
    t.advance(Duration::from_millis(980));
    // One token was refilled... and consumed; then the next refusal is told again.
    only(&t.send(a, json!({"type": "ping"})), a, "pong");
    let mut told = 0;
    for _ in 0..60 {
        told += t.send(a, json!({"type": "ping"})).len();
    }
    assert_eq!(told, 48 + 1, "the remaining tokens, then one error");
    assert_eq!(t.hub.stats().errors_for(ErrorCode::RateLimited), 2);
    // Binary frames and oversized frames count as well.
    t.hub.handle_binary(t.now, a, 1);
    assert!(t.drain().is_empty());
}

#[test]
fn sustained_flood_closes_the_connection_and_kicks_the_peer() {
    let mut t = T::new();
    let (a, a_id, _) = t.join("r", "A");
    let (b, _, _) = t.join("r", "B");
    let (c, c_id, _) = t.join("r", "C");
    let mut closed_at = None;
    // 200 messages a second, 4x the limit.
    for step in 0..20 * 200 {
        let out = t.send(a, json!({"type": "chat", "text": "spam"}));
        if !closes(&out).is_empty() {
            assert_eq!(closes(&out), vec![(a, CloseReason::Flood)]);
            assert_eq!(
                only(&out, b, "peer-left"),
                json!({"type": "peer-left", "id": a_id, "reason": "kicked"})
            );
            closed_at = Some(step);
            break;
        }
        // B and C meanwhile keep talking.
        if step % 50 == 0 {
            let out = t.send(b, json!({"type": "offer", "to": c_id, "sdp": "v=0"}));
            only(&out, c, "offer");
        }
        t.advance(Duration::from_millis(5));
    }
    let at = closed_at.expect("closed");
    let elapsed = Duration::from_millis(5 * at);
    // The burst lasts ~0.67 s at 200/s against a refill of 50/s, then 10 s of refusals.
    assert!(
        elapsed >= Duration::from_secs(10) && elapsed <= Duration::from_secs(11),
        "{elapsed:?}"
    );
    assert_eq!(CloseReason::Flood.code(), 1008);
    assert!(t.send(a, json!({"type": "ping"})).is_empty());
    let out = t.send(b, json!({"type": "chat", "text": "still here"}));
    only(&out, c, "chat");
}

#[test]
fn a_pause_ends_a_flood() {
    let mut t = T::new();
    let c = t.open();
    for _ in 0..12 {
        // 150 messages at once, then 1.5 s of quiet: refused every time, never closed.
        for _ in 0..150 {
            let out = t.send(c, json!({"type": "ping"}));
            assert!(closes(&out).is_empty());
        }
        t.advance(Duration::from_millis(1500));
    }
}

pub(super) fn secret_config() -> HubConfig {
    HubConfig {
        token_secret: Some(TokenSecret(SECRET.to_vec())),
        ..HubConfig::default()
    }
}

pub(super) fn tok(
    room: &str,
    sub: &str,
    exp: u64,
    can_publish: Option<bool>,
    secret: &[u8],
) -> String {
    token::sign(
        secret,
        &Claims {
            room: room.into(),
            sub: sub.into(),
            exp,
            nbf: None,
            can_publish,
        },
    )
}

#[test]
fn access_tokens() {
    let mut t = T::with(secret_config());
    let now_s = UNIX0_MS / 1000;
    let c = t.open();
    let join = |token: Option<String>| {
        let mut j = json!({"type": "join", "room": "lobby"});
        if let Some(tk) = token {
            j["token"] = tk.into();
        }
        j
    };
    let bad = [
        None,
        Some("garbage".to_owned()),
        Some(tok("lobby", "alice", now_s, None, SECRET)), // expires now
        Some(tok("lobby", "alice", now_s + 60, None, b"wrong secret")),
        Some(tok("other", "alice", now_s + 60, None, SECRET)),
    ];
    for b in bad {
        let out = t.send(c, join(b.clone()));
        assert_eq!(error(&out, c), err("invalid-token", Some("join")), "{b:?}");
    }
    // Valid: sub becomes the name.
    let out = t.send(
        c,
        join(Some(tok("lobby", "alice", now_s + 60, None, SECRET))),
    );
    let w = only(&out, c, "welcome");
    assert_eq!(
        (w["name"].clone(), w["canPublish"].clone()),
        (json!("alice"), json!(true))
    );
    // "*" admits to any room; an explicit name wins over sub.
    let d = t.open();
    let mut j = join(Some(tok("*", "bob", now_s + 60, Some(true), SECRET)));
    j["name"] = "Bobby".into();
    let out = t.send(d, j);
    assert_eq!(only(&out, d, "welcome")["name"], "Bobby");
    // The token is checked against the clock: valid now, expired later.
    let e = t.open();
    let later = tok("lobby", "carol", now_s + 10, None, SECRET);
    t.advance(Duration::from_secs(10));
    let out = t.send(e, join(Some(later)));
    assert_eq!(error(&out, e), err("invalid-token", Some("join")));
    // A sub that is not a valid name.
    let out = t.send(e, join(Some(tok("lobby", " ", now_s + 60, None, SECRET))));
    assert_eq!(error(&out, e), err("invalid-name", Some("join")));
}

#[test]
fn tokens_are_ignored_without_a_secret() {
    let mut t = T::new();
    let c = t.open();
    let out = t.send(
        c,
        json!({"type": "join", "room": "r", "name": "A", "token": "whatever"}),
    );
    assert_eq!(only(&out, c, "welcome")["canPublish"], true);
}

#[test]
fn can_publish_false_forbids_sending_media() {
    let mut t = T::with(secret_config());
    let now_s = UNIX0_MS / 1000;
    let viewer = t.open();
    let out = t.send(
        viewer,
        json!({"type": "join", "room": "r", "token": tok("r", "viewer", now_s + 60, Some(false), SECRET)}),
    );
    let w = only(&out, viewer, "welcome");
    assert_eq!(w["canPublish"], false);
    let v_id = w["id"].as_str().unwrap().to_owned();
    let host = t.open();
    let out = t.send(
        host,
        json!({"type": "join", "room": "r", "token": tok("r", "host", now_s + 60, None, SECRET)}),
    );
    let h_id = only(&out, host, "welcome")["id"]
        .as_str()
        .unwrap()
        .to_owned();

    for ty in ["offer", "answer"] {
        let out = t.send(viewer, json!({"type": ty, "to": h_id, "sdp": SDP_SEND}));
        assert_eq!(error(&out, viewer), err("forbidden", Some(ty)));
        assert!(to(&out, host).is_empty());
        let out = t.send(viewer, json!({"type": ty, "to": h_id, "sdp": SDP_RECV}));
        assert_eq!(only(&out, host, ty)["from"], v_id);
    }
    // Candidates, chat and media are allowed; the publisher may send anything.
    let out = t.send(viewer, json!({"type": "chat", "text": "hi"}));
    only(&out, host, "chat");
    let out = t.send(host, json!({"type": "offer", "to": v_id, "sdp": SDP_SEND}));
    only(&out, viewer, "offer");
    assert_eq!(t.hub.stats().errors_for(ErrorCode::Forbidden), 2);
}

#[test]
fn connection_limit() {
    let mut t = T::with(HubConfig {
        max_connections: 2,
        ..HubConfig::default()
    });
    t.open();
    t.open();
    let c = ConnId(99);
    t.hub.handle_open(t.now, c);
    let out = t.drain();
    assert_eq!(error(&out, c), err("server-busy", None));
    assert_eq!(closes(&out), vec![(c, CloseReason::Full)]);
    assert!(!t.hub.is_open(c));
}

#[test]
fn shutdown_closes_everything() {
    let mut t = T::new();
    let (a, _, _) = t.join("r", "A");
    let (b, _, _) = t.join("r", "B");
    let c = t.open();
    t.close(b, Disconnect::Lost);
    t.hub.handle_shutdown(t.now);
    let out = t.drain();
    assert_eq!(
        closes(&out),
        vec![(a, CloseReason::Shutdown), (c, CloseReason::Shutdown)]
    );
    assert_eq!(out.len(), 2, "no peer-left: everyone is being closed");
    assert_eq!(t.hub.poll_timeout(), None);
    let s = t.hub.stats();
    assert_eq!((s.connections, s.rooms, s.peers), (0, 0, 0));
}

#[test]
fn ids_come_from_the_seed() {
    let ids = |seed: u8| {
        let t0 = Instant::now();
        let mut hub = Hub::new(HubConfig::default(), NoIceServers, [seed; 32], t0, UNIX0_MS);
        let mut ids = Vec::new();
        for i in 0..3 {
            hub.handle_open(t0, ConnId(i));
            hub.handle_text(t0, ConnId(i), r#"{"type":"join","room":"r","name":"n"}"#);
            let Some(Output::Send { text, .. }) = hub.poll_output() else {
                panic!()
            };
            let w: Value = serde_json::from_str(&text).unwrap();
            ids.push((w["id"].clone(), w["resumeToken"].clone()));
            while hub.poll_output().is_some() {}
        }
        ids
    };
    assert_eq!(ids(1), ids(1));
    assert_ne!(ids(1), ids(2));
}

#[test]
fn virtual_clock_before_the_epoch_is_harmless() {
    let mut t = T::new();
    let (a, _, _) = t.join("r", "A");
    let (b, _, _) = t.join("r", "B");
    // An `now` earlier than the hub's epoch (a runtime bug) must not panic.
    t.hub.handle_text(
        t.t0 - Duration::from_secs(5),
        a,
        r#"{"type":"chat","text":"early"}"#,
    );
    let out = t.drain();
    assert_eq!(only(&out, b, "chat")["ts"], UNIX0_MS - 5000);
}
