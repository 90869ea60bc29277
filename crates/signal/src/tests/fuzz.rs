//! Property tests: random frames never break the hub's invariants; the session events for logs.

use super::*;

/// Frames a fuzzer would send: fragments of valid messages mixed with junk.
pub(super) fn frame() -> impl Strategy<Value = String> {
    // Every client message type, and one that is none.
    let mut types = ClientMessage::TYPES.to_vec();
    types.push("x");
    let ty = prop::sample::select(types);
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
