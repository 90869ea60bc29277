//! Speaker detection, data-channel relay, fault containment, WHIP/WHEP.

mod common;

use std::time::Duration;

use common::{Publish, World};
use tsunagi_sfu::{Role, SfuEvent};

const PUB: Role = Role::Participant { can_publish: true };
const SUB: Role = Role::Participant { can_publish: false };

fn speakers(w: &World) -> Vec<(std::time::Instant, String)> {
    w.sfu_events
        .iter()
        .filter_map(|(t, e)| match e {
            SfuEvent::Speaker { room, peer } if room == "r" => Some((*t, peer.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn loudest_peer_becomes_speaker() {
    let mut w = World::new(common::config(), 11);
    w.join("r", "alice", PUB, Publish::AUDIO);
    w.join("r", "bob", PUB, Publish::AUDIO);
    w.client_mut("alice").gen.audio_level = -20;
    w.client_mut("bob").gen.audio_level = -70;
    w.run(Duration::from_secs(3));
    let s = speakers(&w);
    assert_eq!(
        s.iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>(),
        ["alice"]
    );
    w.client_mut("alice").gen.audio_level = -70;
    w.client_mut("bob").gen.audio_level = -15;
    w.run(Duration::from_secs(4));
    let s = speakers(&w);
    assert_eq!(
        s.iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>(),
        ["alice", "bob"]
    );
    // bob had to be loudest for a second before the change.
    assert!(s[1].0 - s[0].0 >= Duration::from_secs(1));
    // Audio levels are forwarded to the subscribers too.
    assert!(w
        .client("alice")
        .media_from("bob")
        .any(|d| d.ext_vals.audio_level == Some(-15)));
}

#[test]
fn data_channel_messages_are_relayed_to_the_room() {
    let mut w = World::new(common::config(), 12);
    w.join("r", "alice", PUB, Publish::NONE);
    w.join("r", "bob", SUB, Publish::NONE);
    w.join("r", "carol", SUB, Publish::NONE);
    w.join("other", "dave", SUB, Publish::NONE);
    // The SCTP association opens after DTLS; the channel "chat" opens on both sides.
    let opened = |w: &World, id: &str| {
        w.client(id)
            .events
            .iter()
            .any(|(_, e)| matches!(e, str0m::Event::ChannelOpen(_, l) if l == "chat"))
    };
    assert!(w.run_until(Duration::from_secs(5), |w| [
        "alice", "bob", "carol", "dave"
    ]
    .iter()
    .all(|p| opened(w, p))));
    w.run(Duration::from_millis(200));
    let cid = w
        .client("alice")
        .events
        .iter()
        .find_map(|(_, e)| match e {
            str0m::Event::ChannelOpen(id, _) => Some(*id),
            _ => None,
        })
        .unwrap();
    let c = w.client_mut("alice");
    assert!(c
        .rtc
        .channel(cid)
        .unwrap()
        .write(false, "hi \"all\"".as_bytes())
        .unwrap());
    assert!(c.rtc.channel(cid).unwrap().write(true, &[1, 2, 3]).unwrap());
    let i = w.clients.iter().position(|c| c.id == "alice").unwrap();
    w.drain_client(i);
    w.run(Duration::from_millis(500));
    let expected = r#"{"data":"hi \"all\"","from":"alice"}"#;
    for peer in ["bob", "carol"] {
        let texts = w.client(peer).channel_texts();
        assert_eq!(texts.len(), 1, "{peer}: {texts:?}");
        let got: serde_json::Value = serde_json::from_str(&texts[0]).unwrap();
        assert_eq!(
            got,
            serde_json::from_str::<serde_json::Value>(expected).unwrap()
        );
        // Binary messages are not relayed.
        assert!(!w
            .client(peer)
            .events
            .iter()
            .any(|(_, e)| matches!(e, str0m::Event::ChannelData(d) if d.binary)));
    }
    assert!(
        w.client("alice").channel_texts().is_empty(),
        "no echo to the sender"
    );
    assert!(
        w.client("dave").channel_texts().is_empty(),
        "other rooms do not hear it"
    );
    assert_eq!(w.sfu.stats().messages_relayed, 2);
}

#[test]
fn a_faulting_peer_is_dropped_and_the_room_keeps_forwarding() {
    let mut w = World::new(common::config(), 13);
    w.join("r", "alice", PUB, Publish::AV);
    w.join("r", "bob", SUB, Publish::NONE);
    w.join("r", "carol", SUB, Publish::NONE);
    w.run(Duration::from_secs(2));
    assert!(w.client("carol").media_from("alice").count() > 50);
    w.sfu.inject_fault("bob");
    w.run(Duration::from_millis(50));
    let closed: Vec<(String, String)> = w
        .events()
        .filter_map(|e| match e {
            SfuEvent::Closed { peer, reason } => Some((peer.clone(), reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].0, "bob");
    assert!(closed[0].1.contains("panicked"), "{}", closed[0].1);
    assert_eq!(w.sfu.stats().faults, 1);
    assert!(!w.sfu.contains("bob"));
    assert!(w.sfu.contains("alice") && w.sfu.contains("carol"));
    let t = w.now;
    w.run(Duration::from_secs(2));
    let carol = w.client("carol");
    assert!(
        carol.media_after(t).count() > 100,
        "carol still receives alice"
    );
    assert_eq!(
        w.client("bob")
            .media_after(t + Duration::from_millis(50))
            .count(),
        0
    );
    // Calls for the dropped peer are clean errors.
    assert_eq!(
        w.sfu.accept_answer("bob", "v=0", w.now),
        Err(tsunagi_sfu::SfuError::UnknownPeer)
    );
}

#[test]
fn whip_publisher_plays_to_whep_viewer() {
    let mut w = World::new(common::config(), 14);
    assert!(!w.sfu.room_has_publisher("live"));
    assert_eq!(w.sfu.room_publisher("live"), None);
    w.join("live", "alice", PUB, Publish::AV);
    w.join("live", "whip-1", Role::WhipPublisher, Publish::AV);
    assert_eq!(
        w.sfu.room_publisher("live").as_deref(),
        Some("whip-1"),
        "the WHIP publisher wins"
    );
    w.run(Duration::from_secs(1));
    w.join("live", "whep-1", Role::WhepViewer, Publish::NONE);
    w.run(Duration::from_secs(3));
    let viewer = w.client("whep-1");
    assert!(
        viewer.offers.is_empty(),
        "WHEP viewers are never sent an offer"
    );
    let audio = viewer
        .media()
        .filter(|d| d.params.spec().codec.is_audio())
        .count();
    let video = viewer.video().count();
    assert!(audio > 50 && video > 30, "audio {audio} video {video}");
    // It plays whip-1 (non-simulcast frames tagged 's'), not alice.
    assert!(viewer.video().all(|d| common::tag(d) == b's'));
    // The participant sees the WHIP stream by its id.
    assert!(w.client("alice").media_from("whip-1").count() > 50);
    // WHIP publishers receive nothing.
    assert_eq!(w.client("whip-1").media().count(), 0);
}
