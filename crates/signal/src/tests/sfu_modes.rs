//! Room modes: auto rooms switching between mesh and SFU, pinned modes, no SFU at all.

use super::*;

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
