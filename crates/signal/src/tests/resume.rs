//! Resuming a dropped session within the grace period, and the bounds of what waits for it.

use super::*;

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
