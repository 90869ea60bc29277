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

    // alice leaves: her m-lines at bob and carol are set inactive by a renegotiation
    // (free for the next publisher; docs/sfu.md, rule 5).
    let offers_before = w.client("carol").offers.len();
    w.sfu.leave("alice", w.now);
    w.drain_sfu();
    assert!(!w.sfu.contains("alice"));
    let carol = w.client("carol");
    assert_eq!(carol.offers.len(), offers_before + 1, "leave renegotiates");
    let last = carol.offers.last().unwrap();
    let freed: Vec<&str> = last
        .split("\r\nm=")
        .filter(|s| s.lines().any(|l| l == "a=inactive") && s.contains("a=msid:alice "))
        .collect();
    assert_eq!(freed.len(), 2, "both of alice's m-lines inactive:\n{last}");
    for section in freed {
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
    // dave joins: carol's next offer reuses alice's two m-lines (no new m-line), named
    // dave's by their msid, and carries his media on them.
    let mlines = |sdp: &str| sdp.matches("\r\nm=").count();
    let before = mlines(w.client("carol").offers.last().unwrap());
    let freed_mids: Vec<String> = w
        .client("carol")
        .offers
        .last()
        .unwrap()
        .split("\r\nm=")
        .filter(|s| s.lines().any(|l| l == "a=inactive") && s.contains("a=msid:alice "))
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("a=mid:"))
                .map(str::to_string)
        })
        .collect();
    w.join("r", "dave", PUB, Publish::AV);
    w.client_mut("dave").gen.audio_level = -17;
    let t = w.now;
    w.run(Duration::from_secs(3));
    let carol = w.client("carol");
    let last = carol.offers.last().unwrap();
    assert_eq!(mlines(last), before, "no m-line added:\n{last}");
    for mid in &freed_mids {
        assert_eq!(
            carol.stream_of(mid.as_str().into()).as_deref(),
            Some("dave"),
            "{last}"
        );
    }
    let on_reused = carol
        .media_after(t)
        .filter(|d| freed_mids.iter().any(|m| d.mid.to_string() == *m))
        .count();
    assert!(
        on_reused > 50,
        "dave's media on the reused m-lines: {on_reused}"
    );
    // It is dave's: his audio level, nobody else's.
    assert!(carol
        .media_after(t)
        .filter(|d| carol.stream_of(d.mid).as_deref() == Some("dave"))
        .filter_map(|d| d.ext_vals.audio_level)
        .all(|l| l == -17));
    assert!(carol
        .media_from("dave")
        .any(|d| d.ext_vals.audio_level == Some(-17)));
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
