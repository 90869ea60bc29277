//! Fan-out and renegotiation: two publishers and a subscriber.

mod common;

use std::time::Duration;

use common::{Publish, World};
use str0m::media::MediaKind;
use tsunagi_sfu::{Role, SfuEvent};

const PUB: Role = Role::Participant { can_publish: true };
const SUB: Role = Role::Participant { can_publish: false };

#[test]
fn two_publishers_and_a_subscriber() {
    let mut w = World::new(common::config(), 1);
    w.join("r", "alice", PUB, Publish::AV);
    w.join("r", "bob", PUB, Publish::AV);
    w.join("r", "carol", SUB, Publish::AV); // offers media, but may not publish
    assert!(
        w.run_until(Duration::from_secs(5), |w| ["alice", "bob", "carol"]
            .iter()
            .all(|p| w.connected(p)))
    );
    w.run(Duration::from_secs(3));

    let carol = w.client("carol");
    for publisher in ["alice", "bob"] {
        let audio = carol
            .media_from(publisher)
            .filter(|d| d.params.spec().codec.is_audio())
            .count();
        let video = carol
            .media_from(publisher)
            .filter(|d| !d.params.spec().codec.is_audio())
            .count();
        assert!(
            audio > 50,
            "carol got {audio} audio frames from {publisher}"
        );
        assert!(
            video > 20,
            "carol got {video} video frames from {publisher}"
        );
    }
    // Publishers receive each other, never themselves.
    assert!(w.client("alice").media_from("bob").count() > 50);
    assert!(w.client("bob").media_from("alice").count() > 50);
    assert_eq!(w.client("alice").media_from("alice").count(), 0);
    // carol's own media is refused: nobody receives a track of hers, and her offer was
    // answered without accepting her send directions.
    assert_eq!(w.client("alice").media_from("carol").count(), 0);
    assert!(
        !w.client("carol").answers[0].contains("a=recvonly"),
        "carol's sendonly lines are answered inactive"
    );
    // The SFU's offers carry the publisher's id as the MediaStream id.
    let offers = w.client("carol").offers.join("\n");
    assert!(offers.contains("a=msid:alice "), "{offers}");
    assert!(offers.contains("a=msid:bob "), "{offers}");
    let st = w.sfu.stats();
    assert_eq!(st.publishers, 2);
    // alice: 2 tracks of bob; bob: 2 of alice; carol: 4.
    assert_eq!(st.subscriptions, 8);
    assert!(st.media_forwarded > 500);
    assert_eq!(st.faults, 0);

    // alice leaves: her tracks are stopped at bob and carol by a renegotiation.
    let offers_before = w.client("carol").offers.len();
    w.sfu.leave("alice", w.now);
    w.drain_sfu();
    assert!(!w.sfu.contains("alice"));
    let carol = w.client("carol");
    assert_eq!(carol.offers.len(), offers_before + 1, "leave renegotiates");
    let last = carol.offers.last().unwrap();
    let stopped: Vec<&str> = last
        .split("\r\nm=")
        .filter(|s| s.starts_with("audio 0 ") || s.starts_with("video 0 "))
        .collect();
    assert_eq!(stopped.len(), 2, "both of alice's m-lines stopped:\n{last}");
    for section in stopped {
        let mid = section
            .lines()
            .find_map(|l| l.strip_prefix("a=mid:"))
            .expect("mid");
        assert_eq!(carol.stream_of(mid.into()).as_deref(), Some("alice"));
    }
    let t = w.now + Duration::from_millis(100);
    w.run(Duration::from_secs(2));
    let carol = w.client("carol");
    assert_eq!(
        carol
            .media_after(t)
            .filter(|d| carol.stream_of(d.mid).as_deref() == Some("alice"))
            .count(),
        0
    );
    assert!(
        carol
            .media_after(t)
            .filter(|d| carol.stream_of(d.mid).as_deref() == Some("bob"))
            .count()
            > 50
    );
    assert_eq!(w.sfu.stats().subscriptions, 2);
    assert_eq!(w.sfu.stats().publishers, 1);
    assert!(
        !w.events().any(|e| matches!(e, SfuEvent::Closed { .. })),
        "leave is not a Closed event"
    );
    let _ = MediaKind::Audio;
}

#[test]
fn late_joiner_gets_existing_tracks_and_stats_report_layers() {
    let mut w = World::new(common::config(), 2);
    w.join("r", "alice", PUB, Publish::AV);
    w.run(Duration::from_secs(1));
    w.join("r", "dave", SUB, Publish::NONE);
    w.run(Duration::from_secs(3));
    let dave = w.client("dave");
    assert_eq!(
        dave.offers.len(),
        1,
        "one offer with both of alice's tracks"
    );
    assert!(dave.media_from("alice").count() > 100);
    let stats = w.events().filter_map(|e| match e {
        SfuEvent::Stats {
            peer,
            layers,
            bitrate,
            ..
        } if peer == "dave" => Some((layers.clone(), *bitrate)),
        _ => None,
    });
    let (layers, bitrate) = stats.last().expect("stats for dave");
    assert_eq!(
        layers,
        vec![("alice".to_string(), tsunagi_sfu::Layer::Single)]
    );
    assert!(bitrate.is_some());
}
