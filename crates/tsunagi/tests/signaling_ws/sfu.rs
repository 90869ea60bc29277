//! The link to the SFU: a room switching to SFU and back, a full SFU queue, and rooms
//! without a link.

use super::*;

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
