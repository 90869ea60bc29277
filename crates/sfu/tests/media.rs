//! NACK/RTX repair, keyframe requests, simulcast layer choice.

mod common;

use std::time::Duration;

use common::{tag, Publish, World};
use tsunagi_sfu::{Layer, Role, SfuEvent, Tile};

const PUB: Role = Role::Participant { can_publish: true };
const SUB: Role = Role::Participant { can_publish: false };

/// Video frames carol receives from alice over 6 s with 5 % loss on carol's link.
fn lossy_run(subscriber_rtx: bool) -> (usize, usize, u64, u64) {
    let mut w = World::new(common::config(), 7);
    w.join("r", "alice", PUB, Publish::VIDEO);
    w.join_with("r", "carol", SUB, Publish::NONE, subscriber_rtx);
    assert!(w.run_until(Duration::from_secs(5), |w| w.connected("carol")
        && w.connected("alice")));
    w.run(Duration::from_secs(1));
    w.client_mut("carol").loss = 0.05;
    let t = w.now;
    let sent_before = w.client("alice").gen.frame;
    w.run(Duration::from_secs(6));
    let sent = (w.client("alice").gen.frame - sent_before) as usize;
    let got = w.client("carol").video_after(t).count();
    (got, sent, w.sfu.stats().nacks_received, w.lost)
}

#[test]
fn nack_and_rtx_repair_a_lossy_subscriber_link() {
    let (with_rtx, sent, nacks, lost) = lossy_run(true);
    let (without_rtx, _, nacks_plain, lost_plain) = lossy_run(false);
    eprintln!("rtx: {with_rtx}/{sent} frames, {nacks} nacks, {lost} lost; plain: {without_rtx}, {nacks_plain} nacks, {lost_plain} lost");
    assert!(lost > 20 && lost_plain > 20, "loss was injected");
    assert!(nacks > 0, "the subscriber NACKed and the SFU counted it");
    // Retransmissions repair nearly every frame; without RTX the lost packets stay lost.
    assert!(
        with_rtx * 100 >= sent * 97,
        "{with_rtx} of {sent} frames with RTX"
    );
    assert!(
        with_rtx > without_rtx + 5,
        "RTX {with_rtx} vs none {without_rtx}"
    );
}

/// The NACK/RTX cache of a subscription is sized by the subscriber's RTT: the 200 ms floor
/// from the first packet, while the RTT is not known, and then three RTTs but at least
/// 200 ms (here the RTT is 10 ms). The lossy run above repairs its link with that cache.
#[test]
fn the_rtx_cache_of_a_subscription_follows_the_subscribers_rtt() {
    assert_eq!(
        tsunagi_sfu::limits::RTX_MIN_AGE,
        Duration::from_millis(200),
        "the floor this test expects"
    );
    let mut w = World::new(common::config(), 11);
    w.join("r", "alice", PUB, Publish::VIDEO);
    w.join("r", "carol", SUB, Publish::NONE);
    assert!(w.run_until(Duration::from_secs(5), |w| w.connected("carol")
        && w.connected("alice")));
    let carols_rtt = |w: &World| {
        let room = w.sfu.room_state("r", w.now).expect("the room");
        room["peers"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["peer"] == "carol"))
            .and_then(|p| p["rttMs"].as_f64())
    };
    let first = w.run_until(Duration::from_secs(5), |w| {
        !w.subscription("carol", "alice")["rtxCacheMs"].is_null()
    });
    let s = w.subscription("carol", "alice");
    assert!(first, "media reaches carol: {s}");
    assert_eq!(carols_rtt(&w), None, "the first packet comes before an RTT");
    assert_eq!(
        s["rtxCacheMs"], 200,
        "the floor while the RTT is unknown: {s}"
    );
    let known = w.run_until(Duration::from_secs(10), |w| carols_rtt(w).is_some());
    assert!(known, "carol's RTT is measured");
    w.run(Duration::from_millis(500));
    let rtt = carols_rtt(&w).expect("carol's RTT is known");
    assert!(rtt < 60.0, "an RTT of {rtt} ms over a 5 ms link");
    let s = w.subscription("carol", "alice");
    assert_eq!(
        s["rtxCacheMs"], 200,
        "the cache follows a {rtt} ms RTT: {s}"
    );
}

#[test]
fn new_subscribers_trigger_one_throttled_keyframe_request() {
    let mut w = World::new(common::config(), 3);
    w.join("r", "alice", PUB, Publish::VIDEO);
    w.client_mut("alice").gen.keyframe_every = None; // keyframes only when asked
    w.run(Duration::from_secs(3));
    let before = w.client("alice").keyframe_requests();
    let counter_before = w.sfu.stats().keyframe_requests;
    w.join("r", "sub1", SUB, Publish::NONE);
    w.run(Duration::from_millis(50));
    w.join("r", "sub2", SUB, Publish::NONE);
    // Both connect within the 500 ms throttle window of alice's video layer.
    assert!(w.run_until(Duration::from_secs(2), |w| w.connected("sub1")
        && w.connected("sub2")));
    let first = w
        .client("alice")
        .events
        .iter()
        .filter(|(_, e)| matches!(e, str0m::Event::KeyframeRequest(_)))
        .nth(before)
        .map(|(t, _)| *t)
        .expect("joining made the SFU ask alice for a keyframe");
    w.run_until(Duration::from_secs(2), |w| {
        w.now >= first + Duration::from_millis(450)
    });
    assert_eq!(
        w.client("alice").keyframe_requests() - before,
        1,
        "two joins within 100 ms: one request"
    );
    w.run(Duration::from_secs(2));
    // Throttled, not suppressed: at most one more (500 ms later) for the second subscriber.
    let total = w.client("alice").keyframe_requests() - before;
    assert!((1..=2).contains(&total), "{total} requests");
    assert_eq!(
        w.sfu.stats().keyframe_requests - counter_before,
        total as u64
    );
    for sub in ["sub1", "sub2"] {
        let c = w.client(sub);
        let first = c
            .video()
            .next()
            .unwrap_or_else(|| panic!("{sub} got video"));
        assert!(first.is_keyframe(), "{sub} starts at a keyframe");
        assert!(c.video().count() > 20);
    }
}

fn layer_of(w: &World, peer: &str, publisher: &str) -> Option<Layer> {
    w.events()
        .filter_map(|e| match e {
            SfuEvent::Stats {
                peer: p, layers, ..
            } if p == peer => layers
                .iter()
                .find(|(id, _)| id == publisher)
                .map(|(_, l)| *l),
            _ => None,
        })
        .last()
}

fn tile(peer: &str, width: u32, height: u32) -> Tile {
    Tile {
        peer: peer.into(),
        width,
        height,
    }
}

#[test]
fn simulcast_layer_follows_the_tile_and_switches_at_keyframes() {
    // Enough estimate for the nominal 1.5 Mbit/s of h before it is measured.
    let mut config = common::config();
    config.initial_bitrate = 3_000_000;
    let mut w = World::new(config, 4);
    w.join("r", "alice", PUB, Publish::SIMULCAST);
    w.client_mut("alice").gen.keyframe_every = None;
    w.join("r", "small", SUB, Publish::NONE);
    w.join("r", "large", SUB, Publish::NONE);
    w.join("r", "noview", SUB, Publish::NONE);
    let now = w.now;
    w.sfu.set_view("small", &[tile("alice", 320, 180)], now);
    w.sfu.set_view("large", &[tile("alice", 1280, 720)], now);
    w.run(Duration::from_secs(4));
    let only = |w: &World, peer: &str| -> Vec<u8> {
        let mut tags: Vec<u8> = w.client(peer).video().map(tag).collect();
        tags.dedup();
        tags
    };
    assert_eq!(only(&w, "small"), vec![b'l'], "small tile gets l");
    assert_eq!(only(&w, "large"), vec![b'h'], "large tile gets h");
    assert_eq!(only(&w, "noview"), vec![b'm'], "no view yet: m");
    assert_eq!(layer_of(&w, "small", "alice"), Some(Layer::Low));
    assert_eq!(layer_of(&w, "large", "alice"), Some(Layer::High));
    assert_eq!(layer_of(&w, "noview", "alice"), Some(Layer::Medium));

    // small's tile grows: it switches to h, at a keyframe of h, and never sees a delta
    // frame of h before it (nor l after it).
    let t = w.now;
    w.sfu.set_view("small", &[tile("alice", 1280, 720)], t);
    w.drain_sfu();
    w.run(Duration::from_secs(2));
    let frames: Vec<(u8, bool, u64)> = w
        .client("small")
        .video_after(t)
        .map(|d| (tag(d), d.is_keyframe(), d.time.numer()))
        .collect();
    let first_h = frames
        .iter()
        .position(|f| f.0 == b'h')
        .expect("switched to h");
    assert!(frames[first_h].1, "first h frame is a keyframe");
    assert!(frames[..first_h].iter().all(|f| f.0 == b'l'));
    assert!(
        frames[first_h..].iter().all(|f| f.0 == b'h'),
        "no l after the switch"
    );
    // Output RTP time stays continuous across the switch although h's time base differs.
    for pair in frames.windows(2) {
        let dt = pair[1].2 as i64 - pair[0].2 as i64;
        assert!(
            (1..=9000).contains(&dt),
            "RTP time jumps by {dt} across {pair:?}"
        );
    }
    assert!(w.sfu.stats().layer_switches >= 1);
    assert_eq!(layer_of(&w, "small", "alice"), Some(Layer::High));

    // Hidden: paused at once, nothing forwarded.
    let t = w.now;
    w.sfu.set_view("large", &[], t);
    w.drain_sfu();
    w.run(Duration::from_secs(1));
    assert_eq!(
        w.client("large")
            .video_after(t + Duration::from_millis(20))
            .count(),
        0
    );
    assert_eq!(layer_of(&w, "large", "alice"), Some(Layer::Paused));
}

#[test]
fn tiny_bandwidth_estimate_forces_low_layer() {
    let mut config = common::config();
    config.initial_bitrate = 150_000;
    let mut w = World::new(config, 5);
    w.join("r", "alice", PUB, Publish::SIMULCAST);
    w.join("r", "viewer", SUB, Publish::NONE);
    let now = w.now;
    w.sfu.set_view("viewer", &[tile("alice", 1280, 720)], now);
    assert!(w.run_until(Duration::from_secs(5), |w| w.connected("viewer")));
    w.run(Duration::from_secs(2));
    let tags: Vec<u8> = w.client("viewer").video().map(tag).collect();
    assert!(tags.len() > 30);
    // 90 % of 150 kbit/s holds l (60 kbit/s) and audio, not m or h: the large tile gets l.
    assert!(tags.iter().all(|t| *t == b'l'), "{tags:?}");
    assert_eq!(layer_of(&w, "viewer", "alice"), Some(Layer::Low));
}
