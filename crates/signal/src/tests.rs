//! Hub tests on a virtual clock: every message and error code of `docs/signaling.md`.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::token::{self, Claims};
use crate::*;

/// Unix time of the virtual clock's start: 2025-11-24T16:00:00Z in ms.
const UNIX0_MS: u64 = 1_764_000_000_000;
const SECRET: &[u8] = b"token-secret";

type TestHub = Hub<fn(&IceRequest<'_>) -> Vec<IceServer>>;

fn ice(req: &IceRequest<'_>) -> Vec<IceServer> {
    vec![
        IceServer {
            urls: vec!["stun:127.0.0.1:3478".into()],
            username: None,
            credential: None,
        },
        IceServer {
            urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
            username: Some(format!("{}:{}", req.unix_secs + 3600, req.peer_id)),
            credential: Some(format!("cred-{}", req.conn)),
        },
    ]
}

struct T {
    hub: TestHub,
    t0: Instant,
    now: Instant,
    next_conn: u64,
}

impl T {
    fn new() -> T {
        T::with(HubConfig::default())
    }

    fn with(config: HubConfig) -> T {
        let t0 = Instant::now();
        T {
            hub: Hub::new(
                config,
                ice as fn(&IceRequest<'_>) -> Vec<IceServer>,
                [1; 32],
                t0,
                UNIX0_MS,
            ),
            t0,
            now: t0,
            next_conn: 1,
        }
    }

    fn advance(&mut self, d: Duration) -> Vec<Output> {
        self.now += d;
        if self.hub.poll_timeout().is_some_and(|t| t <= self.now) {
            self.hub.handle_timeout(self.now);
        }
        self.drain()
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.hub.poll_output()).collect()
    }

    fn open(&mut self) -> ConnId {
        let c = ConnId(self.next_conn);
        self.next_conn += 1;
        self.hub.handle_open(self.now, c);
        assert!(self.drain().is_empty());
        c
    }

    fn text(&mut self, c: ConnId, text: &str) -> Vec<Output> {
        self.hub.handle_text(self.now, c, text);
        self.drain()
    }

    fn send(&mut self, c: ConnId, v: Value) -> Vec<Output> {
        self.text(c, &v.to_string())
    }

    /// Opens a connection and joins `room` as `name`; returns it and its peer id.
    fn join(&mut self, room: &str, name: &str) -> (ConnId, String, Vec<Output>) {
        let c = self.open();
        let out = self.send(c, json!({"type": "join", "room": room, "name": name}));
        let w = only(&out, c, "welcome");
        let id = w["id"].as_str().unwrap().to_owned();
        (c, id, out)
    }

    fn close(&mut self, c: ConnId, how: Disconnect) -> Vec<Output> {
        self.hub.handle_close(self.now, c, how);
        self.drain()
    }

    fn unix_ms(&self) -> u64 {
        UNIX0_MS + (self.now - self.t0).as_millis() as u64
    }
}

/// The messages sent to `c`, parsed.
fn to(out: &[Output], c: ConnId) -> Vec<Value> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { conn, text } if *conn == c => Some(serde_json::from_str(text).unwrap()),
            _ => None,
        })
        .collect()
}

/// The one message to `c`, which must have type `ty`.
fn only(out: &[Output], c: ConnId, ty: &str) -> Value {
    let m = to(out, c);
    assert_eq!(m.len(), 1, "to {c}: {m:?}");
    assert_eq!(m[0]["type"], ty, "{m:?}");
    m[0].clone()
}

fn error(out: &[Output], c: ConnId) -> (String, Option<String>) {
    let e = only(out, c, "error");
    assert!(!e["message"].as_str().unwrap().is_empty());
    (
        e["code"].as_str().unwrap().to_owned(),
        e.get("ref").map(|r| r.as_str().unwrap().to_owned()),
    )
}

fn err(code: &str, r: Option<&str>) -> (String, Option<String>) {
    (code.to_owned(), r.map(str::to_owned))
}

fn closes(out: &[Output]) -> Vec<(ConnId, CloseReason)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Close { conn, reason } => Some((*conn, *reason)),
            _ => None,
        })
        .collect()
}

const SDP_SEND: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendrecv\r\n";
const SDP_RECV: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\n";

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
fn resume_within_grace_keeps_id_and_room_and_delivers_queued_messages() {
    let mut t = T::new();
    let (a, a_id, out) = t.join("r", "A");
    let token = to(&out, a)[0]["resumeToken"].as_str().unwrap().to_owned();
    let (b, b_id, _) = t.join("r", "B");
    let out = t.send(
        a,
        json!({"type": "media", "audio": false, "video": false, "screen": false}),
    );
    assert_eq!(to(&out, b).len(), 1);

    let out = t.close(a, Disconnect::Lost);
    assert!(out.is_empty(), "the others see nothing: {out:?}");
    assert_eq!(t.hub.poll_timeout(), Some(t.now + Duration::from_secs(15)));
    assert_eq!(t.hub.stats().peers_in_grace, 1);

    t.advance(Duration::from_secs(5));
    let out = t.send(b, json!({"type": "offer", "to": a_id, "sdp": "v=0 o1"}));
    assert!(out.is_empty(), "queued, not sent: {out:?}");
    t.send(
        b,
        json!({"type": "candidate", "to": a_id, "candidate": null}),
    );
    t.send(b, json!({"type": "chat", "text": "are you there?"}));

    t.advance(Duration::from_secs(9));
    let a2 = t.open();
    let out = t.send(a2, json!({"type": "resume", "token": token}));
    assert!(to(&out, b).is_empty(), "the others see nothing");
    let m = to(&out, a2);
    assert_eq!(m.len(), 4, "{m:?}");
    assert_eq!(m[0]["type"], "resumed");
    assert_eq!(m[0]["id"], a_id);
    assert_eq!(m[0]["room"], "r");
    assert_eq!(m[0]["name"], "A");
    assert_eq!(m[0]["peers"][0]["id"], b_id);
    assert_eq!(m[0]["iceServers"][1]["credential"], format!("cred-{a2}"));
    let token2 = m[0]["resumeToken"].as_str().unwrap().to_owned();
    assert_ne!(token2, token, "a fresh resume token");
    assert_eq!(
        m[1],
        json!({"type": "offer", "from": b_id, "sdp": "v=0 o1"})
    );
    assert_eq!(m[2]["type"], "candidate");
    assert_eq!(m[3]["type"], "chat");
    assert_eq!(t.hub.poll_timeout(), None);

    // The session works on the new connection; its media state was kept.
    let out = t.send(b, json!({"type": "chat", "text": "welcome back"}));
    assert_eq!(only(&out, a2, "chat")["text"], "welcome back");
    let (_, _, out) = t.join("r", "C");
    let w = only(&out, ConnId(4), "welcome");
    assert_eq!(w["peers"][0]["media"]["audio"], false);
    // The old token is spent.
    let a3 = t.open();
    let out = t.send(a3, json!({"type": "resume", "token": token}));
    assert_eq!(error(&out, a3), err("resume-failed", Some("resume")));
    // Past the old deadline nothing happens.
    assert!(t.advance(Duration::from_secs(60)).is_empty());
    let s = t.hub.stats();
    assert_eq!((s.resumes, s.peers, s.peers_in_grace), (1, 3, 0));
}

#[test]
fn grace_expiry_is_a_timeout_leave() {
    let mut t = T::new();
    let (a, a_id, out) = t.join("r", "A");
    let token = to(&out, a)[0]["resumeToken"].as_str().unwrap().to_owned();
    let (b, _, _) = t.join("r", "B");
    t.close(a, Disconnect::Lost);
    assert!(t.advance(Duration::from_millis(14_999)).is_empty());
    let out = t.advance(Duration::from_millis(1));
    assert_eq!(
        only(&out, b, "peer-left"),
        json!({"type": "peer-left", "id": a_id, "reason": "timeout"})
    );
    let a2 = t.open();
    let out = t.send(a2, json!({"type": "resume", "token": token}));
    assert_eq!(error(&out, a2), err("resume-failed", Some("resume")));
    // The last peer's grace expiring removes the room.
    t.close(b, Disconnect::Lost);
    assert!(t.advance(Duration::from_secs(15)).is_empty());
    assert_eq!(t.hub.stats().rooms, 0);
    assert_eq!(t.hub.stats().leaves, [0, 2, 0]);
}

#[test]
fn zero_grace_leaves_at_once() {
    let mut t = T::with(HubConfig {
        resume_grace: Duration::ZERO,
        ..HubConfig::default()
    });
    let (a, _, _) = t.join("r", "A");
    let (b, _, _) = t.join("r", "B");
    let out = t.close(a, Disconnect::Lost);
    assert_eq!(only(&out, b, "peer-left")["reason"], "timeout");
}

#[test]
fn resume_takes_over_a_live_session() {
    let mut t = T::new();
    let (a, a_id, out) = t.join("r", "A");
    let token = to(&out, a)[0]["resumeToken"].as_str().unwrap().to_owned();
    let (b, _, _) = t.join("r", "B");
    let a2 = t.open();
    let out = t.send(a2, json!({"type": "resume", "token": token}));
    assert_eq!(closes(&out), vec![(a, CloseReason::Replaced)]);
    assert_eq!(only(&out, a2, "resumed")["id"], a_id);
    assert!(to(&out, b).is_empty());
    // The old connection's late close changes nothing.
    assert!(t.close(a, Disconnect::Lost).is_empty());
    assert_eq!(t.hub.poll_timeout(), None);
}

#[test]
fn resume_errors() {
    let mut t = T::new();
    let c = t.open();
    let out = t.send(c, json!({"type": "resume", "token": "r_nope"}));
    assert_eq!(error(&out, c), err("resume-failed", Some("resume")));
    let out = t.send(c, json!({"type": "resume"}));
    assert_eq!(error(&out, c), err("bad-message", Some("resume")));
    let (a, _, out) = t.join("r", "A");
    let token = to(&out, a)[0]["resumeToken"].as_str().unwrap().to_owned();
    let out = t.send(a, json!({"type": "resume", "token": token}));
    assert_eq!(error(&out, a), err("already-joined", Some("resume")));
}

#[test]
fn grace_queue_overflow_ends_the_session() {
    let mut t = T::with(HubConfig {
        queue_messages: 3,
        messages_per_second: 0,
        ..HubConfig::default()
    });
    let (a, a_id, out) = t.join("r", "A");
    let token = to(&out, a)[0]["resumeToken"].as_str().unwrap().to_owned();
    let (b, _, _) = t.join("r", "B");
    t.close(a, Disconnect::Lost);
    for i in 0..3 {
        assert!(t
            .send(b, json!({"type": "chat", "text": format!("m{i}")}))
            .is_empty());
    }
    let out = t.send(b, json!({"type": "chat", "text": "one too many"}));
    assert_eq!(
        only(&out, b, "peer-left"),
        json!({"type": "peer-left", "id": a_id, "reason": "timeout"})
    );
    assert_eq!(t.hub.poll_timeout(), None);
    let a2 = t.open();
    let out = t.send(a2, json!({"type": "resume", "token": token}));
    assert_eq!(error(&out, a2), err("resume-failed", Some("resume")));
}

#[test]
fn grace_queue_is_bounded_in_bytes_too() {
    let mut t = T::with(HubConfig {
        queue_bytes: 1000,
        ..HubConfig::default()
    });
    let (a, _, _) = t.join("r", "A");
    let (b, _, _) = t.join("r", "B");
    t.close(a, Disconnect::Lost);
    assert!(t
        .send(b, json!({"type": "chat", "text": "x".repeat(600)}))
        .is_empty());
    let out = t.send(b, json!({"type": "chat", "text": "y".repeat(600)}));
    assert_eq!(only(&out, b, "peer-left")["reason"], "timeout");
}

#[test]
fn overflowing_outbound_queue_kicks() {
    let mut t = T::new();
    let (a, a_id, _) = t.join("r", "A");
    let (b, _, _) = t.join("r", "B");
    let out = t.close(a, Disconnect::Overflow);
    assert_eq!(
        only(&out, b, "peer-left"),
        json!({"type": "peer-left", "id": a_id, "reason": "kicked"})
    );
    assert_eq!(t.hub.stats().errors_for(ErrorCode::ServerBusy), 1);
}

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

fn secret_config() -> HubConfig {
    HubConfig {
        token_secret: Some(TokenSecret(SECRET.to_vec())),
        ..HubConfig::default()
    }
}

fn tok(room: &str, sub: &str, exp: u64, can_publish: Option<bool>, secret: &[u8]) -> String {
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

/// Frames a fuzzer would send: fragments of valid messages mixed with junk.
fn frame() -> impl Strategy<Value = String> {
    let ty = prop::sample::select(vec![
        "join",
        "resume",
        "offer",
        "answer",
        "candidate",
        "chat",
        "media",
        "ping",
        "leave",
        "view",
        "x",
    ]);
    let val = prop_oneof![
        Just(json!(null)),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z_]{0,8}".prop_map(Value::from),
        Just(json!("p_000000000000")),
        Just(json!({"candidate": "c"})),
        Just(json!("sfu")),
        Just(json!([{"peer": "p_000000000000", "width": 640, "height": 360}])),
    ];
    let msg = (
        ty,
        prop::collection::vec(
            (
                prop::sample::select(vec![
                    "room",
                    "name",
                    "to",
                    "sdp",
                    "candidate",
                    "text",
                    "token",
                    "id",
                    "audio",
                    "mode",
                    "tiles",
                ]),
                val,
            ),
            0..5,
        ),
    )
        .prop_map(|(ty, fields)| {
            let mut m = serde_json::Map::new();
            m.insert("type".into(), ty.into());
            for (k, v) in fields {
                m.insert(k.into(), v);
            }
            Value::Object(m).to_string()
        });
    prop_oneof![msg, ".{0,40}"]
}

proptest! {
    #[test]
    fn arbitrary_frames_never_panic_and_state_stays_consistent(
        ops in prop::collection::vec((0u64..4, frame(), 0u8..20), 1..200)
    ) {
        let mut t = T::with(HubConfig { mesh_max_peers: 2, max_rooms: 3, queue_messages: 4, ..HubConfig::default() });
        for c in 0..4 {
            t.hub.handle_open(t.now, ConnId(c));
        }
        for (c, text, action) in ops {
            let conn = ConnId(c);
            match action {
                0 => t.hub.handle_close(t.now, conn, Disconnect::Lost),
                1 => t.hub.handle_open(t.now, conn),
                2 => { t.advance(Duration::from_secs(4)); }
                3 => t.hub.handle_binary(t.now, conn, text.len()),
                _ => t.hub.handle_text(t.now, conn, &text),
            }
            for o in t.drain() {
                if let Output::Send { text, .. } = o {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    prop_assert!(serde_json::from_value::<ServerMessage>(v).is_ok(), "{}", text);
                }
            }
            let s = t.hub.stats();
            prop_assert!(s.rooms <= 3 && s.peers <= 6 && s.connections <= 4);
            prop_assert!(s.peers_in_grace <= s.peers);
        }
    }
}

#[test]
fn session_events_for_logs() {
    let mut t = T::new();
    let (a, a_id, out) = t.join("r", "A");
    let token = to(&out, a)[0]["resumeToken"].as_str().unwrap().to_owned();
    let ev: Vec<Event> = std::iter::from_fn(|| t.hub.poll_event()).collect();
    assert_eq!(
        ev,
        vec![Event::Joined {
            conn: a,
            peer: a_id.as_str().into(),
            room: "r".into()
        }]
    );
    t.close(a, Disconnect::Lost);
    let a2 = t.open();
    t.send(a2, json!({"type": "resume", "token": token}));
    t.send(a2, json!({"type": "leave"}));
    let ev: Vec<Event> = std::iter::from_fn(|| t.hub.poll_event()).collect();
    assert_eq!(
        ev,
        vec![
            Event::Dropped {
                peer: a_id.as_str().into(),
                room: "r".into()
            },
            Event::Resumed {
                conn: a2,
                peer: a_id.as_str().into(),
                room: "r".into()
            },
            Event::Left {
                peer: a_id.as_str().into(),
                room: "r".into(),
                reason: LeaveReason::Left
            },
        ]
    );
}

// ---- mesh and SFU rooms (docs/sfu.md) ----

fn sfu_config() -> HubConfig {
    HubConfig {
        sfu: true,
        ..HubConfig::default()
    }
}

/// The SFU requests in `out`, in order.
fn sfu_reqs(out: &[Output]) -> Vec<SfuRequest> {
    out.iter()
        .filter_map(|o| match o {
            Output::Sfu(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn sfu_join(room: &str, peer: &str) -> SfuRequest {
    SfuRequest::Join {
        room: room.into(),
        peer: peer.into(),
        can_publish: true,
    }
}

fn sfu_leave(peer: &str, linger: bool) -> SfuRequest {
    SfuRequest::Leave {
        peer: peer.into(),
        linger,
    }
}

impl T {
    fn join_with(&mut self, room: &str, name: &str, mode: &str) -> (ConnId, String, Vec<Output>) {
        let c = self.open();
        let out = self.send(
            c,
            json!({"type": "join", "room": room, "name": name, "mode": mode}),
        );
        let w = to(&out, c)
            .into_iter()
            .find(|m| m["type"] == "welcome")
            .unwrap_or_else(|| panic!("no welcome: {out:?}"));
        (c, w["id"].as_str().unwrap().to_owned(), out)
    }

    fn sfu(&mut self, reply: SfuReply) -> Vec<Output> {
        self.hub.handle_sfu(self.now, reply);
        self.drain()
    }
}

/// Joins `n` peers to `room`; their connections and ids.
fn fill(t: &mut T, room: &str, n: usize) -> Vec<(ConnId, String)> {
    (0..n)
        .map(|i| {
            let (c, id, _) = t.join(room, &format!("P{i}"));
            (c, id)
        })
        .collect()
}

#[test]
fn auto_room_switches_to_sfu_past_the_mesh_limit() {
    let mut t = T::with(sfu_config());
    let mut peers = Vec::new();
    for i in 0..4 {
        let (c, id, out) = t.join("r", &format!("P{i}"));
        assert!(sfu_reqs(&out).is_empty(), "mesh: no SFU requests");
        let w = &to(&out, c)[0];
        assert_eq!(
            (w["mode"].clone(), w["maxPeers"].clone()),
            (json!("mesh"), json!(50))
        );
        peers.push((c, id));
    }
    assert_eq!((t.hub.stats().rooms_mesh, t.hub.stats().rooms_sfu), (1, 0));
    // The 5th join switches the room.
    let e = t.open();
    let out = t.send(e, json!({"type": "join", "room": "r", "name": "E"}));
    let m = to(&out, e);
    assert_eq!(m.len(), 1, "only the welcome: {m:?}");
    assert_eq!(m[0]["mode"], "sfu");
    let e_id = m[0]["id"].as_str().unwrap().to_owned();
    let mut expected: Vec<SfuRequest> = peers.iter().map(|(_, id)| sfu_join("r", id)).collect();
    expected.push(sfu_join("r", &e_id));
    assert_eq!(sfu_reqs(&out), expected, "a Join for every peer");
    // The SFU peers exist before any client hears of the switch.
    assert!(matches!(out[0], Output::Sfu(_)));
    for (c, _) in &peers {
        let m = to(&out, *c);
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(m[0]["type"], "peer-joined");
        assert_eq!(m[1], json!({"type": "mode", "mode": "sfu"}));
    }
    let s = t.hub.stats();
    assert_eq!((s.rooms, s.rooms_mesh, s.rooms_sfu), (1, 0, 1));
    assert_eq!((s.switches_to_sfu, s.switches_to_mesh), (1, 0));
    let ev: Vec<Event> = std::iter::from_fn(|| t.hub.poll_event()).collect();
    assert_eq!(
        ev.last(),
        Some(&Event::Joined {
            conn: e,
            peer: e_id.as_str().into(),
            room: "r".into()
        })
    );
    assert!(ev.contains(&Event::ModeChanged {
        room: "r".into(),
        mode: Mode::Sfu
    }));
    // A 6th joins the SFU room: one Join, before its welcome; no mode message.
    let (f, f_id, out) = t.join("r", "F");
    assert_eq!(sfu_reqs(&out), vec![sfu_join("r", &f_id)]);
    assert!(matches!(out[0], Output::Sfu(_)));
    assert_eq!(only(&out, f, "welcome")["mode"], "sfu");
    assert_eq!(only(&out, e, "peer-joined")["id"], f_id);
}

#[test]
fn auto_room_goes_back_to_mesh_one_below_the_limit() {
    let mut t = T::with(sfu_config());
    let p = fill(&mut t, "r", 5);
    // 5 -> 4: still sfu (hysteresis); the leaver's SFU peer goes at once.
    let out = t.send(p[4].0, json!({"type": "leave"}));
    assert_eq!(sfu_reqs(&out), vec![sfu_leave(&p[4].1, false)]);
    for (c, _) in &p[..4] {
        assert_eq!(only(&out, *c, "peer-left")["id"], p[4].1);
    }
    assert_eq!(t.hub.stats().rooms_sfu, 1);
    // A join at 4 stays sfu too: 5 again.
    let (_, x_id, out) = t.join("r", "X");
    assert_eq!(sfu_reqs(&out), vec![sfu_join("r", &x_id)]);
    let out = t.close(ConnId(6), Disconnect::Clean);
    assert_eq!(sfu_reqs(&out), vec![sfu_leave(&x_id, false)]);
    // 4 -> 3: back to mesh; the others' SFU peers linger.
    let out = t.close(p[3].0, Disconnect::Overflow);
    let mut expected = vec![sfu_leave(&p[3].1, false)];
    expected.extend(p[..3].iter().map(|(_, id)| sfu_leave(id, true)));
    assert_eq!(sfu_reqs(&out), expected);
    for (c, _) in &p[..3] {
        let m = to(&out, *c);
        assert_eq!(m[0]["type"], "peer-left");
        assert_eq!(m[0]["reason"], "kicked");
        assert_eq!(m[1], json!({"type": "mode", "mode": "mesh"}));
        assert_eq!(m.len(), 2);
    }
    let s = t.hub.stats();
    assert_eq!((s.rooms_mesh, s.rooms_sfu), (1, 0));
    assert_eq!((s.switches_to_sfu, s.switches_to_mesh), (1, 1));
    // Mesh again: the leaving peers have no SFU peer any more.
    let out = t.send(p[2].0, json!({"type": "leave"}));
    assert!(sfu_reqs(&out).is_empty());
    // Growing past the limit again switches again: new Joins, also for the two whose
    // SFU peers may still linger.
    let q = fill(&mut t, "r", 2);
    assert_eq!(t.hub.stats().rooms_sfu, 0);
    let (_, z_id, out) = t.join("r", "Z");
    let mut expected: Vec<SfuRequest> = p[..2].iter().map(|(_, id)| sfu_join("r", id)).collect();
    expected.extend(q.iter().map(|(_, id)| sfu_join("r", id)));
    expected.push(sfu_join("r", &z_id));
    assert_eq!(sfu_reqs(&out), expected);
    assert_eq!(t.hub.stats().rooms_sfu, 1);
    assert_eq!(t.hub.stats().switches_to_sfu, 2);
}

#[test]
fn pinned_mesh_room_is_full_at_the_mesh_limit() {
    let mut t = T::with(sfu_config());
    let (a, _, out) = t.join_with("m", "A", "mesh");
    assert_eq!(only(&out, a, "welcome")["maxPeers"], 4);
    // The mode of a later join is ignored.
    for i in 0..3 {
        let (c, _, out) = t.join_with("m", &format!("P{i}"), "sfu");
        let w = &to(&out, c)[0];
        assert_eq!(
            (w["mode"].clone(), w["maxPeers"].clone()),
            (json!("mesh"), json!(4))
        );
        assert!(sfu_reqs(&out).is_empty());
    }
    let e = t.open();
    let out = t.send(e, json!({"type": "join", "room": "m", "name": "E"}));
    assert_eq!(error(&out, e), err("room-full", Some("join")));
    let msg = to(&out, e)[0]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("4 of 4 peers in a mesh room"), "{msg}");
    assert_eq!(t.hub.stats().switches_to_sfu, 0);
}

#[test]
fn pinned_sfu_room_from_the_first_join() {
    let mut t = T::with(sfu_config());
    let (a, a_id, out) = t.join_with("s", "A", "sfu");
    assert_eq!(sfu_reqs(&out), vec![sfu_join("s", &a_id)]);
    assert!(
        matches!(out[0], Output::Sfu(_)),
        "the Join before the welcome"
    );
    let w = only(&out, a, "welcome");
    assert_eq!(
        (w["mode"].clone(), w["maxPeers"].clone()),
        (json!("sfu"), json!(50))
    );
    let (b, b_id, out) = t.join_with("s", "B", "mesh");
    assert_eq!(sfu_reqs(&out), vec![sfu_join("s", &b_id)]);
    assert_eq!(only(&out, b, "welcome")["mode"], "sfu");
    // Down to one peer: still sfu.
    let out = t.send(b, json!({"type": "leave"}));
    assert_eq!(sfu_reqs(&out), vec![sfu_leave(&b_id, false)]);
    assert!(to(&out, a).iter().all(|m| m["type"] != "mode"));
    let s = t.hub.stats();
    assert_eq!(
        (s.rooms_sfu, s.switches_to_sfu, s.switches_to_mesh),
        (1, 0, 0)
    );
    // The last one leaving removes the room.
    let out = t.close(a, Disconnect::Clean);
    assert_eq!(sfu_reqs(&out), vec![sfu_leave(&a_id, false)]);
    assert_eq!((t.hub.stats().rooms, t.hub.stats().rooms_sfu), (0, 0));
    // "auto" and an explicit default.
    let (c, _, out) = t.join_with("x", "C", "auto");
    assert_eq!(only(&out, c, "welcome")["mode"], "mesh");
    let mut t = T::with(HubConfig {
        default_mode: RoomMode::Sfu,
        ..sfu_config()
    });
    let (c, _, out) = t.join("d", "C");
    assert_eq!(to(&out, c)[0]["mode"], "sfu");
    // A mode the protocol does not know is a bad message.
    let c = t.open();
    let out = t.send(
        c,
        json!({"type": "join", "room": "d", "name": "Z", "mode": "p2p"}),
    );
    assert_eq!(error(&out, c), err("bad-message", Some("join")));
}

#[test]
fn without_an_sfu_every_room_is_mesh() {
    let mut t = T::new();
    assert!(!t.hub.config().sfu);
    let (a, _, out) = t.join_with("r", "A", "sfu");
    let w = only(&out, a, "welcome");
    assert_eq!(
        (w["mode"].clone(), w["maxPeers"].clone()),
        (json!("mesh"), json!(4))
    );
    fill(&mut t, "r", 3);
    let e = t.open();
    let out = t.send(e, json!({"type": "join", "room": "r", "name": "E"}));
    assert_eq!(error(&out, e), err("room-full", Some("join")));
    let out = t.send(a, json!({"type": "offer", "to": "sfu", "sdp": "v=0"}));
    assert_eq!(error(&out, a), err("unknown-peer", Some("offer")));
    let msg = to(&out, a)[0]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("mesh mode"), "{msg}");
    // WHIP publishers change nothing without an SFU.
    let out = t.sfu(SfuReply::External {
        room: "r".into(),
        publishers: 1,
    });
    assert!(out.is_empty());
    assert_eq!(t.hub.stats().rooms_sfu, 0);
    // A view is ignored in a mesh room.
    let out = t.send(
        a,
        json!({"type": "view", "tiles": [{"peer": "p_x", "width": 1, "height": 1}]}),
    );
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn messages_to_sfu() {
    let mut t = T::with(sfu_config());
    let (a, a_id, _) = t.join("r", "A");
    let (b, _, _) = t.join("r", "B");
    // Mesh mode: there is no "sfu".
    for msg in [
        json!({"type": "offer", "to": "sfu", "sdp": "v=0"}),
        json!({"type": "answer", "to": "sfu", "sdp": "v=0"}),
        json!({"type": "candidate", "to": "sfu", "candidate": null}),
    ] {
        let ty = msg["type"].as_str().unwrap().to_owned();
        let out = t.send(a, msg);
        assert_eq!(error(&out, a), err("unknown-peer", Some(&ty)));
        let msg = to(&out, a)[0]["message"].as_str().unwrap().to_owned();
        assert!(msg.contains("'r' is in mesh mode"), "{msg}");
        assert!(sfu_reqs(&out).is_empty());
    }
    // SFU mode: they go to the SFU, not to any client.
    fill(&mut t, "r", 3);
    let relayed = t.hub.stats().messages_relayed;
    let out = t.send(a, json!({"type": "offer", "to": "sfu", "sdp": SDP_SEND}));
    assert_eq!(
        out,
        vec![Output::Sfu(SfuRequest::Offer {
            peer: a_id.as_str().into(),
            sdp: SDP_SEND.into()
        })]
    );
    let out = t.send(a, json!({"type": "answer", "to": "sfu", "sdp": "v=0 a"}));
    assert_eq!(
        out,
        vec![Output::Sfu(SfuRequest::Answer {
            peer: a_id.as_str().into(),
            sdp: "v=0 a".into()
        })]
    );
    let cand = json!({"candidate": "candidate:1 1 udp 1 192.0.2.1 5000 typ host", "sdpMid": "0"});
    let out = t.send(
        a,
        json!({"type": "candidate", "to": "sfu", "candidate": cand}),
    );
    assert_eq!(
        out,
        vec![Output::Sfu(SfuRequest::Candidate {
            peer: a_id.as_str().into(),
            candidate: cand
        })]
    );
    let out = t.send(
        a,
        json!({"type": "candidate", "to": "sfu", "candidate": null}),
    );
    assert_eq!(
        out,
        vec![Output::Sfu(SfuRequest::Candidate {
            peer: a_id.as_str().into(),
            candidate: Value::Null
        })]
    );
    assert_eq!(t.hub.stats().messages_relayed, relayed + 4);
    // Peer-to-peer messages still go through in SFU mode (old mesh connections).
    let out = t.send(
        b,
        json!({"type": "candidate", "to": a_id, "candidate": null}),
    );
    only(&out, a, "candidate");
    // "sfu" is never an ordinary peer.
    let out = t.send(a, json!({"type": "chat", "text": "hi"}));
    assert!(sfu_reqs(&out).is_empty());
}

#[test]
fn viewers_may_not_publish_to_the_sfu() {
    let mut t = T::new();
    t.hub = Hub::new(
        HubConfig {
            sfu: true,
            default_mode: RoomMode::Sfu,
            ..secret_config()
        },
        ice as fn(&IceRequest<'_>) -> Vec<IceServer>,
        [1; 32],
        t.now,
        UNIX0_MS,
    );
    let now_s = UNIX0_MS / 1000;
    let v = t.open();
    let out = t.send(
        v,
        json!({"type": "join", "room": "r", "token": tok("r", "viewer", now_s + 60, Some(false), SECRET)}),
    );
    let v_id = only(&out, v, "welcome")["id"].as_str().unwrap().to_owned();
    assert_eq!(
        sfu_reqs(&out),
        vec![SfuRequest::Join {
            room: "r".into(),
            peer: v_id.as_str().into(),
            can_publish: false
        }]
    );
    let out = t.send(v, json!({"type": "offer", "to": "sfu", "sdp": SDP_SEND}));
    assert_eq!(error(&out, v), err("forbidden", Some("offer")));
    assert!(sfu_reqs(&out).is_empty());
    let out = t.send(v, json!({"type": "offer", "to": "sfu", "sdp": SDP_RECV}));
    assert_eq!(sfu_reqs(&out).len(), 1);
}

#[test]
fn view_is_checked_and_goes_to_the_sfu_in_sfu_rooms() {
    let mut t = T::with(HubConfig {
        max_peers: 6,
        ..sfu_config()
    });
    let (a, a_id, _) = t.join("r", "A");
    let tiles = json!([{"peer": "p_b81f07a2c4d9", "width": 640, "height": 360},
                       {"peer": "whip-1", "width": 0, "height": 0}]);
    // Mesh room: ignored, silently.
    let out = t.send(a, json!({"type": "view", "tiles": tiles}));
    assert!(out.is_empty(), "{out:?}");
    // Bad shapes are errors in any mode.
    for bad in [
        json!({"type": "view"}),
        json!({"type": "view", "tiles": {}}),
        json!({"type": "view", "tiles": [{"peer": "p", "width": 16385, "height": 1}]}),
        json!({"type": "view", "tiles": [{"peer": "p", "width": 1, "height": 16385}]}),
        json!({"type": "view", "tiles": [{"peer": "p", "width": -1, "height": 1}]}),
        json!({"type": "view", "tiles": [{"peer": "", "width": 1, "height": 1}]}),
        json!({"type": "view", "tiles": [{"peer": "x".repeat(129), "width": 1, "height": 1}]}),
        json!({"type": "view", "tiles": [{"width": 1, "height": 1}]}),
    ] {
        let out = t.send(a, bad.clone());
        assert_eq!(error(&out, a), err("bad-message", Some("view")), "{bad}");
    }
    let seven: Vec<Value> = (0..7)
        .map(|i| json!({"peer": format!("p_{i}"), "width": 1, "height": 1}))
        .collect();
    let out = t.send(a, json!({"type": "view", "tiles": seven}));
    assert_eq!(error(&out, a), err("bad-message", Some("view")));
    // SFU room: to the SFU.
    fill(&mut t, "r", 4);
    t.drain();
    let out = t.send(a, json!({"type": "view", "tiles": tiles}));
    assert_eq!(
        out,
        vec![Output::Sfu(SfuRequest::View {
            peer: a_id.as_str().into(),
            tiles: vec![
                Tile {
                    peer: "p_b81f07a2c4d9".into(),
                    width: 640,
                    height: 360
                },
                Tile {
                    peer: "whip-1".into(),
                    width: 0,
                    height: 0
                }
            ]
        })]
    );
    let six: Vec<Value> = (0..6)
        .map(|i| json!({"peer": format!("p_{i}"), "width": 16384, "height": 16384}))
        .collect();
    let out = t.send(a, json!({"type": "view", "tiles": six}));
    assert_eq!(sfu_reqs(&out).len(), 1);
    let out = t.send(a, json!({"type": "view", "tiles": []}));
    assert_eq!(sfu_reqs(&out).len(), 1);
    let c = t.open();
    let out = t.send(c, json!({"type": "view", "tiles": []}));
    assert_eq!(error(&out, c), err("not-joined", Some("view")));
}

#[test]
fn sfu_replies_reach_their_peers() {
    let mut t = T::with(sfu_config());
    let p = fill(&mut t, "r", 5);
    let (x, _, _) = t.join("other", "X");
    let (a, a_id) = p[0].clone();
    let out = t.sfu(SfuReply::Offer {
        peer: a_id.clone(),
        sdp: "v=0 sfu".into(),
    });
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        only(&out, a, "offer"),
        json!({"type": "offer", "from": "sfu", "sdp": "v=0 sfu"})
    );
    let out = t.sfu(SfuReply::Answer {
        peer: a_id.clone(),
        sdp: "v=0 ans".into(),
    });
    assert_eq!(
        only(&out, a, "answer"),
        json!({"type": "answer", "from": "sfu", "sdp": "v=0 ans"})
    );
    let out = t.sfu(SfuReply::Speaker {
        room: "r".into(),
        peer: p[1].1.clone(),
    });
    assert_eq!(out.len(), 5, "every peer of the room, the speaker too");
    for (c, _) in &p {
        assert_eq!(
            only(&out, *c, "speaker"),
            json!({"type": "speaker", "id": p[1].1})
        );
    }
    assert!(to(&out, x).is_empty());
    let out = t.sfu(SfuReply::Stats {
        peer: a_id.clone(),
        bitrate: Some(1_500_000),
        layers: vec![
            (p[1].1.clone(), "h".into()),
            ("whip-1".into(), "paused".into()),
        ],
        rtt: Some(12.5),
    });
    assert_eq!(
        only(&out, a, "sfu-stats"),
        json!({"type": "sfu-stats", "bitrate": 1_500_000, "layers": {p[1].1.clone(): "h", "whip-1": "paused"}, "rtt": 12.5})
    );
    let out = t.sfu(SfuReply::Stats {
        peer: a_id.clone(),
        bitrate: None,
        layers: vec![],
        rtt: Some(f64::NAN),
    });
    assert_eq!(
        only(&out, a, "sfu-stats"),
        json!({"type": "sfu-stats", "bitrate": null, "layers": {}, "rtt": null})
    );
    let out = t.sfu(SfuReply::Error {
        peer: a_id.clone(),
        message: "no codec in common".into(),
    });
    assert_eq!(
        only(&out, a, "error"),
        json!({"type": "error", "code": "sfu-error", "message": "no codec in common"})
    );
    assert_eq!(t.hub.stats().errors_for(ErrorCode::SfuError), 1);
    // Unknown peers and rooms: ignored.
    for reply in [
        SfuReply::Offer {
            peer: "p_000000000000".into(),
            sdp: "v=0".into(),
        },
        SfuReply::Answer {
            peer: "sfu".into(),
            sdp: "v=0".into(),
        },
        SfuReply::Speaker {
            room: "nowhere".into(),
            peer: a_id.clone(),
        },
        SfuReply::Stats {
            peer: "nobody".into(),
            bitrate: None,
            layers: vec![],
            rtt: None,
        },
        SfuReply::Error {
            peer: "nobody".into(),
            message: "x".into(),
        },
    ] {
        assert!(t.sfu(reply).is_empty());
    }
}

#[test]
fn sfu_replies_to_a_peer_in_grace_are_queued() {
    let mut t = T::with(sfu_config());
    let (a, a_id, out) = t.join_with("r", "A", "sfu");
    let token = to(&out, a)
        .into_iter()
        .find(|m| m["type"] == "welcome")
        .unwrap()["resumeToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let (b, _, _) = t.join("r", "B");
    // Dropped: stays in the SFU (no Leave).
    let out = t.close(a, Disconnect::Lost);
    assert!(out.is_empty(), "{out:?}");
    let out = t.sfu(SfuReply::Offer {
        peer: a_id.clone(),
        sdp: "v=0 renegotiate".into(),
    });
    assert!(out.is_empty(), "queued: {out:?}");
    t.sfu(SfuReply::Error {
        peer: a_id.clone(),
        message: "ice failed".into(),
    });
    t.advance(Duration::from_secs(3));
    // Resumed: no new Join; the queue follows `resumed`.
    let a2 = t.open();
    let out = t.send(a2, json!({"type": "resume", "token": token}));
    assert!(sfu_reqs(&out).is_empty(), "{out:?}");
    let m = to(&out, a2);
    assert_eq!(m.len(), 3, "{m:?}");
    assert_eq!(
        (m[0]["type"].clone(), m[0]["mode"].clone()),
        (json!("resumed"), json!("sfu"))
    );
    assert_eq!(
        m[1],
        json!({"type": "offer", "from": "sfu", "sdp": "v=0 renegotiate"})
    );
    assert_eq!(m[2]["code"], "sfu-error");
    // It is still in the SFU.
    let out = t.send(a2, json!({"type": "answer", "to": "sfu", "sdp": "v=0"}));
    assert_eq!(sfu_reqs(&out).len(), 1);
    // A grace period that runs out is a leave.
    t.close(a2, Disconnect::Lost);
    let out = t.advance(Duration::from_secs(15));
    assert_eq!(sfu_reqs(&out), vec![sfu_leave(&a_id, false)]);
    assert_eq!(only(&out, b, "peer-left")["reason"], "timeout");
}

#[test]
fn whip_publishers_force_sfu() {
    let mut t = T::with(sfu_config());
    let p = fill(&mut t, "r", 2);
    let out = t.sfu(SfuReply::External {
        room: "r".into(),
        publishers: 1,
    });
    assert_eq!(
        sfu_reqs(&out),
        p.iter()
            .map(|(_, id)| sfu_join("r", id))
            .collect::<Vec<_>>()
    );
    for (c, _) in &p {
        assert_eq!(
            only(&out, *c, "mode"),
            json!({"type": "mode", "mode": "sfu"})
        );
    }
    // More publishers: nothing changes.
    assert!(t
        .sfu(SfuReply::External {
            room: "r".into(),
            publishers: 2
        })
        .is_empty());
    // A join stays sfu; two peers leaving do not switch back while WHIP is there.
    let (c, c_id, out) = t.join("r", "C");
    assert_eq!(sfu_reqs(&out), vec![sfu_join("r", &c_id)]);
    assert_eq!(to(&out, c)[0]["mode"], "sfu");
    t.send(c, json!({"type": "leave"}));
    // The last publisher goes: 2 peers, back to mesh.
    let out = t.sfu(SfuReply::External {
        room: "r".into(),
        publishers: 0,
    });
    assert_eq!(
        sfu_reqs(&out),
        p.iter()
            .map(|(_, id)| sfu_leave(id, true))
            .collect::<Vec<_>>()
    );
    for (c, _) in &p {
        assert_eq!(only(&out, *c, "mode")["mode"], "mesh");
    }
    // Pinned mesh rooms run as sfu while a publisher is there too.
    let (m, m_id, _) = t.join_with("m", "M", "mesh");
    let out = t.sfu(SfuReply::External {
        room: "m".into(),
        publishers: 1,
    });
    assert_eq!(sfu_reqs(&out), vec![sfu_join("m", &m_id)]);
    assert_eq!(only(&out, m, "mode")["mode"], "sfu");
    let out = t.sfu(SfuReply::External {
        room: "m".into(),
        publishers: 0,
    });
    assert_eq!(only(&out, m, "mode")["mode"], "mesh");
    let s = t.hub.stats();
    assert_eq!((s.switches_to_sfu, s.switches_to_mesh), (2, 2));
}

#[test]
fn whip_only_rooms_are_remembered_while_publishing() {
    let mut t = T::with(HubConfig {
        max_rooms: 2,
        ..sfu_config()
    });
    // A room nobody joined yet.
    assert!(t
        .sfu(SfuReply::External {
            room: "w".into(),
            publishers: 1
        })
        .is_empty());
    let s = t.hub.stats();
    assert_eq!((s.rooms, s.rooms_sfu, s.switches_to_sfu), (1, 1, 0));
    // The first browser joins it in SFU mode; its join.mode is ignored.
    let (a, a_id, out) = t.join_with("w", "A", "mesh");
    assert_eq!(sfu_reqs(&out), vec![sfu_join("w", &a_id)]);
    assert_eq!(only(&out, a, "welcome")["mode"], "sfu");
    // The last browser leaves: the room stays for the publisher.
    let out = t.send(a, json!({"type": "leave"}));
    assert_eq!(sfu_reqs(&out), vec![sfu_leave(&a_id, false)]);
    assert_eq!(t.hub.stats().rooms, 1);
    // The publisher leaves: forgotten.
    assert!(t
        .sfu(SfuReply::External {
            room: "w".into(),
            publishers: 0
        })
        .is_empty());
    assert_eq!((t.hub.stats().rooms, t.hub.stats().rooms_sfu), (0, 0));
    // Zero for an unknown room, bad room names, and rooms past max_rooms: ignored.
    for room in ["never", "bad name", "", "w2", "w3"] {
        let publishers = u32::from(room != "never");
        t.sfu(SfuReply::External {
            room: room.into(),
            publishers,
        });
    }
    assert_eq!(t.hub.stats().rooms, 2, "w2 and w3 fit, nothing else");
    t.sfu(SfuReply::External {
        room: "w4".into(),
        publishers: 1,
    });
    assert_eq!(t.hub.stats().rooms, 2, "max_rooms holds");
    // WHIP-only rooms count against max_rooms for joins too.
    let c = t.open();
    let out = t.send(c, json!({"type": "join", "room": "new", "name": "C"}));
    assert_eq!(error(&out, c), err("too-many-rooms", Some("join")));
}

#[test]
fn dropped_sfu_requests_tell_the_peer() {
    let mut t = T::with(sfu_config());
    let (a, a_id, _) = t.join_with("r", "A", "sfu");
    let peer: std::sync::Arc<str> = a_id.as_str().into();
    t.hub.handle_sfu_dropped(
        t.now,
        &SfuRequest::Offer {
            peer: peer.clone(),
            sdp: "v=0".into(),
        },
    );
    let out = t.drain();
    assert_eq!(error(&out, a), err("server-busy", Some("offer")));
    t.hub.handle_sfu_dropped(
        t.now,
        &SfuRequest::Join {
            room: "r".into(),
            peer: peer.clone(),
            can_publish: true,
        },
    );
    assert_eq!(error(&t.drain(), a), err("server-busy", None));
    t.hub.handle_sfu_dropped(t.now, &sfu_leave(&a_id, false));
    t.hub.handle_sfu_dropped(t.now, &sfu_leave("p_gone", false));
    assert!(t.drain().is_empty());
    assert!(t.hub.is_open(a), "the session goes on");
    let s = t.hub.stats();
    assert_eq!((s.sfu_dropped, s.errors_for(ErrorCode::ServerBusy)), (4, 2));
}

#[test]
fn shutdown_removes_every_sfu_peer() {
    let mut t = T::with(sfu_config());
    let (_, a_id, _) = t.join_with("s", "A", "sfu");
    let (b, b_id, _) = t.join("s", "B");
    t.join("mesh", "C");
    t.close(b, Disconnect::Lost);
    t.hub.handle_shutdown(t.now);
    let out = t.drain();
    assert_eq!(
        sfu_reqs(&out),
        vec![sfu_leave(&a_id, false), sfu_leave(&b_id, false)]
    );
    let s = t.hub.stats();
    assert_eq!((s.rooms, s.rooms_sfu, s.rooms_mesh), (0, 0, 0));
}

/// Replies a fuzzer would have the SFU send.
fn sfu_reply() -> impl Strategy<Value = SfuReply> {
    let peer = prop::sample::select(vec!["p_000000000000", "sfu", "", "whip-1"]);
    let room = prop::sample::select(vec!["r", "s", "t", "bad name", ""]);
    prop_oneof![
        (room.clone(), 0u32..3).prop_map(|(room, publishers)| SfuReply::External {
            room: room.into(),
            publishers
        }),
        (room, peer.clone()).prop_map(|(room, peer)| SfuReply::Speaker {
            room: room.into(),
            peer: peer.into()
        }),
        peer.prop_map(|peer| SfuReply::Offer {
            peer: peer.into(),
            sdp: "v=0".into()
        }),
    ]
}

proptest! {
    #[test]
    fn sfu_requests_stay_balanced(
        ops in prop::collection::vec((0u64..5, frame(), 0u8..24, sfu_reply()), 1..200)
    ) {
        use std::collections::HashSet;
        let mut t = T::with(HubConfig {
            sfu: true,
            mesh_max_peers: 2,
            max_peers: 3,
            max_rooms: 3,
            queue_messages: 4,
            ..HubConfig::default()
        });
        for c in 0..5 {
            t.hub.handle_open(t.now, ConnId(c));
        }
        let mut in_sfu: HashSet<std::sync::Arc<str>> = HashSet::new();
        for (c, text, action, reply) in ops {
            let conn = ConnId(c);
            let mut out = Vec::new();
            match action {
                0 => t.hub.handle_close(t.now, conn, Disconnect::Lost),
                1 => t.hub.handle_open(t.now, conn),
                2 => out = t.advance(Duration::from_secs(4)),
                3 => t.hub.handle_close(t.now, conn, Disconnect::Clean),
                4 | 5 => t.hub.handle_sfu(t.now, reply),
                6 => t.hub.handle_text(t.now, conn, r#"{"type":"join","room":"r","name":"n"}"#),
                7 => t.hub.handle_text(t.now, conn, r#"{"type":"offer","to":"sfu","sdp":"v=0"}"#),
                _ => t.hub.handle_text(t.now, conn, &text),
            }
            out.extend(t.drain());
            for o in out {
                match o {
                    Output::Send { text, .. } => {
                        let v: Value = serde_json::from_str(&text).unwrap();
                        prop_assert!(serde_json::from_value::<ServerMessage>(v).is_ok(), "{}", text);
                    }
                    Output::Sfu(SfuRequest::Join { peer, .. }) => {
                        prop_assert!(in_sfu.insert(peer.clone()), "a second Join for {}", peer);
                    }
                    Output::Sfu(SfuRequest::Leave { peer, .. }) => {
                        prop_assert!(in_sfu.remove(&peer), "a Leave without a Join for {}", peer);
                    }
                    Output::Sfu(r) => {
                        prop_assert!(in_sfu.contains(r.peer()), "{:?} from a peer not in the SFU", r);
                    }
                    Output::Close { .. } => {}
                }
            }
            let s = t.hub.stats();
            prop_assert!(s.rooms <= 3 && s.rooms_mesh + s.rooms_sfu == s.rooms);
            prop_assert!(s.peers <= s.rooms * 3);
            prop_assert!(in_sfu.len() as u64 <= s.peers);
        }
    }
}

#[test]
fn nothing_from_the_sfu_reaches_a_peer_after_its_room_went_back_to_mesh() {
    let mut t = T::with(sfu_config());
    let p = fill(&mut t, "r", 5);
    t.send(p[4].0, json!({"type": "leave"}));
    t.send(p[3].0, json!({"type": "leave"}));
    assert_eq!(t.hub.stats().rooms_sfu, 0, "back to mesh");
    let (a, a_id) = p[0].clone();
    // The lingering SFU session still renegotiates (the departed peers' m-lines), its
    // client closes it (the SFU reports the close), and stats keep coming: none of it is
    // for the client any more (docs/sfu.md, "Rules for a client author", 6).
    let replies = [
        SfuReply::Offer {
            peer: a_id.clone(),
            sdp: "v=0 late".into(),
        },
        SfuReply::Answer {
            peer: a_id.clone(),
            sdp: "v=0 late".into(),
        },
        SfuReply::Error {
            peer: a_id.clone(),
            message: "the SFU connection closed: the peer closed the connection".into(),
        },
        SfuReply::Stats {
            peer: a_id.clone(),
            bitrate: Some(1),
            layers: vec![],
            rtt: None,
        },
    ];
    for r in replies {
        let out = t.sfu(r.clone());
        assert!(to(&out, a).is_empty(), "{r:?} reached the client: {out:?}");
    }
    assert_eq!(t.hub.stats().sfu_replies_after_leave, 4);
    // Back in SFU mode the replies flow again.
    let (_, _, _) = t.join("r", "D2");
    t.join("r", "E2");
    assert_eq!(t.hub.stats().rooms_sfu, 1);
    let out = t.sfu(SfuReply::Offer {
        peer: a_id.clone(),
        sdp: "v=0 new".into(),
    });
    assert_eq!(only(&out, a, "offer")["sdp"], "v=0 new");
}
