//! Keyframes: a subscriber never gets video it cannot decode, and a keyframe that was
//! asked for and did not come is asked for again.

mod common;

use std::time::Duration;

use common::{tag, Publish, World};
use str0m::media::{KeyframeRequestKind, MediaData};
use str0m::Event;
use tsunagi_sfu::{Role, Tile};

const PUB: Role = Role::Participant { can_publish: true };
const SUB: Role = Role::Participant { can_publish: false };

fn tile(peer: &str, width: u32, height: u32) -> Tile {
    Tile {
        peer: peer.into(),
        width,
        height,
    }
}

/// The generator's frame number of a test frame.
fn frame_no(d: &MediaData) -> u32 {
    u32::from_be_bytes([d.data[11], d.data[12], d.data[13], d.data[14]])
}

/// (time, rid) of every keyframe request the client got after `from` events.
fn requests(w: &World, id: &str, skip: usize) -> Vec<(std::time::Instant, Option<String>)> {
    w.client(id)
        .events
        .iter()
        .filter_map(|(t, e)| match e {
            Event::KeyframeRequest(r) => Some((*t, r.rid.map(|r| r.to_string()))),
            _ => None,
        })
        .skip(skip)
        .collect()
}

/// Every video frame `sub` received after `t`: (tag, keyframe, frame number).
fn frames_after(w: &World, sub: &str, t: std::time::Instant) -> Vec<(u8, bool, u32)> {
    w.client(sub)
        .video_after(t)
        .map(|d| (tag(d), d.is_keyframe(), frame_no(d)))
        .collect()
}

#[test]
fn a_layer_the_publisher_stops_falls_back_at_a_keyframe_of_the_next() {
    let mut config = common::config();
    config.initial_bitrate = 5_000_000;
    let mut w = World::new(config, 11);
    w.join("r", "alice", PUB, Publish::SIMULCAST);
    w.client_mut("alice").gen.keyframe_every = None;
    w.join("r", "viewer", SUB, Publish::NONE);
    let now = w.now;
    w.sfu.set_view("viewer", &[tile("alice", 1280, 720)], now);
    w.run(Duration::from_secs(3));
    let mut tags: Vec<u8> = w.client("viewer").video().map(tag).collect();
    tags.dedup();
    assert_eq!(tags, vec![b'h'], "the large tile gets h");

    // Chromium stops sending h (CPU or bandwidth adaptation).
    let t = w.now;
    w.client_mut("alice").gen.skip_rids = vec!["h".into()];
    w.run(Duration::from_secs(3));
    let frames = frames_after(&w, "viewer", t);
    let first_m = frames
        .iter()
        .position(|f| f.0 == b'm')
        .expect("the viewer falls back to m");
    assert!(frames[first_m].1, "the first m frame is a keyframe");
    assert!(frames[..first_m].iter().all(|f| f.0 == b'h'));
    assert!(frames[first_m..].iter().all(|f| f.0 == b'm'));
    // The fallback comes well before the 2 s staleness of a layer: the picture froze
    // less than about a second.
    let at = w
        .client("viewer")
        .events
        .iter()
        .filter(|(at, _)| *at >= t)
        .find_map(|(at, e)| match e {
            Event::MediaData(d) if tag(d) == b'm' => Some(*at),
            _ => None,
        })
        .unwrap();
    let freeze = at.duration_since(t);
    assert!(freeze < Duration::from_millis(1300), "froze {freeze:?}");
    let asked: Vec<_> = requests(&w, "alice", 0)
        .into_iter()
        .filter(|(at, _)| *at >= t)
        .collect();
    assert!(
        asked.iter().any(|(_, r)| r.as_deref() == Some("m")),
        "a keyframe of m was asked for: {asked:?}"
    );
}

#[test]
fn a_subscriber_pli_goes_to_the_forwarded_layer() {
    let mut w = World::new(common::config(), 12);
    w.join("r", "alice", PUB, Publish::SIMULCAST);
    w.client_mut("alice").gen.keyframe_every = None;
    w.join("r", "small", SUB, Publish::NONE);
    let now = w.now;
    w.sfu.set_view("small", &[tile("alice", 320, 180)], now);
    w.run(Duration::from_secs(3));
    assert!(w.client("small").video().all(|d| tag(d) == b'l'));
    let before = requests(&w, "alice", 0).len();
    let mid = w.client("small").video().last().unwrap().mid;
    w.client_mut("small")
        .rtc
        .writer(mid)
        .unwrap()
        .request_keyframe(None, KeyframeRequestKind::Pli)
        .unwrap();
    w.drain_client(1);
    w.run(Duration::from_millis(300));
    let after = requests(&w, "alice", before);
    assert!(!after.is_empty(), "the PLI reached alice");
    assert!(
        after.iter().all(|(_, r)| r.as_deref() == Some("l")),
        "{after:?}"
    );
}

#[test]
fn a_keyframe_request_that_gets_no_keyframe_is_repeated() {
    let mut w = World::new(common::config(), 13);
    w.join("r", "alice", PUB, Publish::VIDEO);
    w.client_mut("alice").gen.keyframe_every = None;
    w.join("r", "bob", SUB, Publish::NONE);
    w.run(Duration::from_secs(3));
    assert!(w.client("bob").video().count() > 50);
    // bob's decoder breaks: one PLI. The first request to alice is lost on the way.
    let before = requests(&w, "alice", 0).len();
    w.client_mut("alice").gen.ignore_requests = 1;
    let t = w.now;
    let mid = w.client("bob").video().last().unwrap().mid;
    w.client_mut("bob")
        .rtc
        .writer(mid)
        .unwrap()
        .request_keyframe(None, KeyframeRequestKind::Pli)
        .unwrap();
    w.drain_client(1);
    w.run(Duration::from_secs(2));
    let asked = requests(&w, "alice", before);
    assert!(asked.len() >= 2, "asked again: {asked:?}");
    let key = frames_after(&w, "bob", t)
        .into_iter()
        .position(|f| f.1)
        .expect("bob got a keyframe");
    // Re-asked about 500 ms after the lost one: bob has a keyframe within a second.
    assert!(key < 30, "keyframe after {key} frames");
    // Then the SFU stops asking.
    let n = requests(&w, "alice", 0).len();
    w.run(Duration::from_secs(2));
    assert_eq!(requests(&w, "alice", 0).len(), n, "no more requests");
}

#[test]
fn a_gap_in_the_publishers_stream_holds_frames_until_a_keyframe() {
    let config = common::config();
    let rtp_mode = config.rtp_mode;
    let mut w = World::new(config, 14);
    // No RTX from alice: lost packets stay lost, the SFU sees gaps.
    w.join_with("r", "alice", PUB, Publish::VIDEO, false);
    w.client_mut("alice").gen.keyframe_every = None;
    w.join("r", "bob", SUB, Publish::NONE);
    w.run(Duration::from_secs(2));
    let t = w.now;
    w.client_mut("alice").uplink_loss = 0.03;
    w.run(Duration::from_secs(10));
    let frames = frames_after(&w, "bob", t);
    assert!(frames.len() > 150, "{} frames", frames.len());
    if rtp_mode {
        return a_gap_is_followed_by_a_keyframe(&w, t);
    }
    let mut gaps = 0;
    for pair in frames.windows(2) {
        if pair[1].2 != pair[0].2 + 1 {
            gaps += 1;
            assert!(
                pair[1].1,
                "after frame {} bob got delta frame {} (a gap without a keyframe)",
                pair[0].2, pair[1].2
            );
        }
    }
    assert!(gaps >= 3, "{gaps} gaps: loss was injected");
    assert!(requests(&w, "alice", 0).len() >= gaps);
}

/// RTP mode forwards packets as they come, gaps too (the subscriber's receiver sees
/// them and drops what depends on them): the SFU asks alice for a keyframe when a gap is
/// not repaired, so each gap bob sees ends in a keyframe soon after. "Soon" counts alice's
/// frames (30 a second), not bob's arrival times, which his own receiver delays while it
/// waits for the missing packets.
fn a_gap_is_followed_by_a_keyframe(w: &World, t: std::time::Instant) {
    let frames = frames_after(w, "bob", t);
    let last = frames.last().map(|f| f.2).unwrap_or(0);
    let mut gaps = 0;
    for (i, pair) in frames.windows(2).enumerate() {
        if pair[1].2 == pair[0].2 + 1 {
            continue;
        }
        gaps += 1;
        let lost_at = pair[0].2;
        if last < lost_at + 30 {
            continue;
        }
        let Some(k) = frames[i + 1..].iter().find(|f| f.1) else {
            panic!("after a gap at frame {lost_at} bob got no keyframe");
        };
        assert!(
            k.2 <= lost_at + 30,
            "after a gap at frame {lost_at} the next keyframe was frame {}",
            k.2
        );
    }
    assert!(gaps >= 3, "{gaps} gaps: loss was injected");
    let keyframes = frames.iter().filter(|f| f.1).count();
    assert!(keyframes >= 3, "{keyframes} keyframes after the gaps");
    assert!(
        requests(w, "alice", 0).len() >= keyframes,
        "alice sends keyframes only when asked"
    );
    assert!(w.sfu.stats().upstream_gaps > 0, "the SFU asked for them");
}

#[test]
fn a_new_peer_connection_takes_over_without_renegotiating_subscribers() {
    let mut w = World::new(common::config(), 15);
    w.join("r", "alice", PUB, Publish::AV);
    w.join("r", "bob", PUB, Publish::AV);
    w.run(Duration::from_secs(3));
    let bob_offers = w.client("bob").offers.len();
    let bob_mids: Vec<_> = {
        let mut m: Vec<_> = w.client("bob").media().map(|d| d.mid).collect();
        m.sort();
        m.dedup();
        m
    };
    assert_eq!(bob_mids.len(), 2, "bob gets alice's audio and video");

    // alice makes a new PeerConnection (relay-only switch) and offers from it.
    let t = w.now;
    w.replace_pc("alice");
    assert!(w.run_until(Duration::from_secs(3), |w| {
        w.client("alice").rtc.is_connected()
            && w.client("bob").video_after(t).any(|d| frame_no(d) < 50)
            && w.client("alice").video().count() > 5
    }));
    w.run(Duration::from_secs(1));
    // bob: the same m-lines, no new offer, video from the new connection starts at a
    // keyframe, and no gap in presented frames longer than a few frame intervals.
    assert_eq!(
        w.client("bob").offers.len(),
        bob_offers,
        "bob not renegotiated"
    );
    let video: Vec<(std::time::Instant, u32, bool)> = w
        .client("bob")
        .events
        .iter()
        .filter(|(at, _)| *at >= t)
        .filter_map(|(at, e)| match e {
            Event::MediaData(d) if !d.params.spec().codec.is_audio() => {
                assert!(bob_mids.contains(&d.mid));
                Some((*at, frame_no(d), d.is_keyframe()))
            }
            _ => None,
        })
        .collect();
    let switch = video
        .windows(2)
        .position(|p| p[1].1 < p[0].1)
        .expect("frames of the new connection")
        + 1;
    assert!(
        video[switch].2,
        "the new connection's video starts at a keyframe"
    );
    let max_gap = video
        .windows(2)
        .map(|p| p[1].0.duration_since(p[0].0))
        .max()
        .unwrap();
    assert!(max_gap < Duration::from_millis(200), "gap {max_gap:?}");
    // alice's new connection receives bob's media.
    assert!(w.client("alice").media_from("bob").count() > 5);
    // No Closed event for alice: the old connection retired silently.
    w.kill("alice#old");
    w.run(Duration::from_secs(20));
    assert!(!w
        .events()
        .any(|e| matches!(e, tsunagi_sfu::SfuEvent::Closed { peer, .. } if peer == "alice")));
    assert_eq!(w.sfu.stats().peers, 2, "the retired connection is gone");
    let tail = w.now - Duration::from_secs(1);
    assert!(w.client("bob").video_after(tail).count() > 20);
    assert!(w.client("alice").video_after(tail).count() > 20);
}

#[test]
fn no_media_to_a_peer_whose_ice_consent_stopped() {
    let mut w = World::new(common::config(), 16);
    w.join("r", "alice", PUB, Publish::AV);
    w.join("r", "bob", SUB, Publish::NONE);
    w.run(Duration::from_secs(3));
    let t = w.now;
    w.kill("bob");
    // Held back from CONSENT_TIMEOUT on; str0m's own ICE timeout (15 s) ends it later.
    let held = tsunagi_sfu::limits::CONSENT_TIMEOUT + Duration::from_secs(1);
    w.run(held + Duration::from_secs(3));
    let rate = |from: Duration, to: Duration| -> usize {
        w.client("bob")
            .received_bytes
            .iter()
            .filter(|(at, _)| *at >= t + from && *at < t + to)
            .map(|(_, n)| *n)
            .sum::<usize>()
    };
    let first = rate(Duration::ZERO, Duration::from_secs(1));
    let late = rate(held, held + Duration::from_secs(3)) / 3;
    eprintln!("bytes/s to a gone peer: {first} at first, {late} after {held:?}");
    assert!(first > 10_000, "media flowed: {first}");
    assert!(late < 1_000, "{late} bytes/s still sent after {held:?}");
}

/// docs/sfu.md, "Repairs": a negotiated video subscription whose publisher sends and that
/// forwarded nothing for 3 s is starved. The room state says so, with its cause; the SFU
/// keeps asking the publisher for a keyframe every 500 ms; when the keyframe comes the
/// subscription carries media again and the episode stays counted.
#[test]
fn a_starved_subscription_is_shown_and_repaired_by_keyframe_requests() {
    let mut w = World::new(common::config(), 17);
    w.join("r", "alice", PUB, Publish::VIDEO);
    w.client_mut("alice").gen.keyframe_every = None;
    w.run(Duration::from_secs(2));
    // alice's encoder stalls on keyframes: it ignores the next 12 requests (about 6 s of
    // requests at one per 500 ms) while her other frames keep coming.
    w.client_mut("alice").gen.ignore_requests = 12;
    let before = requests(&w, "alice", 0).len();
    w.join("r", "bob", SUB, Publish::NONE);
    let joined = w.now;
    let starved = w.run_until(Duration::from_secs(8), |w| {
        w.sfu.room_state("r", w.now).is_some_and(|s| {
            s["peers"].as_array().unwrap().iter().any(|p| {
                p["peer"] == "bob"
                    && p["subscriptions"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|s| s["starved"] == true)
            })
        })
    });
    let s = w.subscription("bob", "alice");
    assert!(starved, "bob ← alice never counted as starved: {s}");
    assert_eq!(s["negotiated"], true, "{s}");
    assert_eq!(s["publisherSending"], true, "{s}");
    assert_eq!(s["paused"], "waiting-for-keyframe", "{s}");
    assert_eq!(s["packets"], 0, "{s}");
    assert_eq!(s["starvedEpisodes"], 1, "{s}");
    let idle = w.now - joined;
    assert!(
        idle >= Duration::from_secs(3),
        "starved after only {idle:?}: {s}"
    );
    // Media again once alice answers a request: within the 12 ignored ones and a second.
    let t = w.now;
    let fed = w.run_until(Duration::from_secs(6), |w| {
        w.client("bob").video_after(t).any(|d| d.is_keyframe())
    });
    assert!(
        fed,
        "no keyframe reached bob: {}",
        w.subscription("bob", "alice")
    );
    w.run(Duration::from_millis(500));
    let s = w.subscription("bob", "alice");
    assert_eq!(s["starved"], false, "{s}");
    assert_eq!(s["starvedEpisodes"], 1, "{s}");
    assert_eq!(s["paused"], serde_json::Value::Null, "{s}");
    assert!(s["packets"].as_u64().unwrap() > 0, "{s}");
    assert!(s["keyframes"].as_u64().unwrap() >= 1, "{s}");
    // The requests never gave up: one per 500 ms, with no pause longer than a second
    // between them, from bob's join until the keyframe.
    let asked: Vec<_> = requests(&w, "alice", before)
        .into_iter()
        .map(|(at, _)| at)
        .collect();
    eprintln!(
        "requests after bob's join (ms): {:?}",
        asked
            .iter()
            .map(|t| (*t - joined).as_millis())
            .collect::<Vec<_>>()
    );
    assert!(asked.len() > 12, "{} requests", asked.len());
    // The subscription counts those made while it waited (the first request, at the
    // join, comes before it is negotiated).
    assert!(
        s["keyframeRequests"].as_u64().unwrap() >= 10,
        "counted for the subscription: {s}"
    );
    let longest = asked
        .windows(2)
        .map(|p| p[1] - p[0])
        .max()
        .unwrap_or_default();
    assert!(
        longest <= Duration::from_secs(1),
        "a pause of {longest:?} between requests"
    );
}
