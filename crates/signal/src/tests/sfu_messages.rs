//! Messages to and from the SFU: requests, replies, views, WHIP publishers, drops, shutdown.

use super::fuzz::frame;
use super::limits::{secret_config, tok};
use super::*;

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

/// An answer or candidate to "sfu" that the client sent before it read `mode: mesh`
/// (an SFU offer it answered as rule 2 asks, crossing the switch) still reaches the
/// lingering SFU session instead of coming back as `unknown-peer`, for
/// `SFU_LATE_GRACE`; an offer does not (a client starts no negotiation with an SFU it
/// has left). Once the grace has passed, or for a peer that was never in the SFU, it
/// is `unknown-peer` as before.
#[test]
fn an_answer_crossing_the_switch_to_mesh_still_reaches_the_sfu() {
    let mut t = T::with(sfu_config());
    let p = fill(&mut t, "r", 5);
    t.send(p[4].0, json!({"type": "leave"}));
    t.send(p[3].0, json!({"type": "leave"}));
    assert_eq!(t.hub.stats().rooms_sfu, 0, "back to mesh");
    let (a, a_id) = p[0].clone();
    let out = t.send(a, json!({"type": "answer", "to": "sfu", "sdp": "v=0 late"}));
    assert!(to(&out, a).is_empty(), "{out:?}");
    assert_eq!(
        sfu_reqs(&out),
        vec![SfuRequest::Answer {
            peer: a_id.as_str().into(),
            sdp: "v=0 late".into()
        }]
    );
    let out = t.send(
        a,
        json!({"type": "candidate", "to": "sfu", "candidate": null}),
    );
    assert!(to(&out, a).is_empty(), "{out:?}");
    assert_eq!(sfu_reqs(&out).len(), 1);
    let out = t.send(a, json!({"type": "offer", "to": "sfu", "sdp": "v=0"}));
    assert_eq!(error(&out, a), err("unknown-peer", Some("offer")));
    assert!(sfu_reqs(&out).is_empty());
    // A peer that joined the mesh room later was never in the SFU.
    let (c, _, _) = t.join("r", "C2");
    let out = t.send(c, json!({"type": "answer", "to": "sfu", "sdp": "v=0"}));
    assert_eq!(error(&out, c), err("unknown-peer", Some("answer")));
    // After the grace, the first peer's answer is refused too.
    t.advance(crate::hub::SFU_LATE_GRACE + Duration::from_millis(1));
    let out = t.send(
        a,
        json!({"type": "answer", "to": "sfu", "sdp": "v=0 later"}),
    );
    assert_eq!(error(&out, a), err("unknown-peer", Some("answer")));
    assert!(sfu_reqs(&out).is_empty());
}
