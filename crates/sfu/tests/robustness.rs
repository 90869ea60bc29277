//! Bad input never panics: errors for bad calls, demux misses for stray datagrams.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{sfu_addr, Publish, World};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tsunagi_sfu::{Protocol, Role, Sfu, SfuConfig, SfuError};

const PUB: Role = Role::Participant { can_publish: true };

#[test]
fn bad_calls_return_errors() {
    let now = Instant::now();
    let mut sfu = Sfu::new(common::config(), now);
    assert_eq!(
        sfu.accept_offer("nobody", "v=0", now),
        Err(SfuError::UnknownPeer)
    );
    assert_eq!(
        sfu.accept_answer("nobody", "v=0", now),
        Err(SfuError::UnknownPeer)
    );
    assert_eq!(
        sfu.add_remote_candidate("nobody", ""),
        Err(SfuError::UnknownPeer)
    );
    sfu.set_view("nobody", &[], now);
    sfu.leave("nobody", now);
    assert!(matches!(
        sfu.join("r", "", PUB, now),
        Err(SfuError::BadId(_))
    ));
    assert!(matches!(
        sfu.join("", "a", PUB, now),
        Err(SfuError::BadId(_))
    ));
    sfu.join("r", "a", PUB, now).unwrap();
    assert_eq!(sfu.join("r", "a", PUB, now), Err(SfuError::Exists));
    for bad in [
        "",
        "v=0",
        "garbage\r\nm=audio",
        "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
    ] {
        let e = sfu.accept_offer("a", bad, now).unwrap_err();
        assert!(matches!(e, SfuError::BadSdp(_)), "{bad:?}: {e}");
        assert!(e.to_string().starts_with("bad SDP"));
    }
    assert!(matches!(
        sfu.accept_offer("a", &"x".repeat(200_000), now),
        Err(SfuError::BadSdp(_))
    ));
    assert!(matches!(
        sfu.accept_answer("a", "v=0\r\n", now),
        Err(SfuError::BadSdp(_))
    ));
    assert!(matches!(
        sfu.add_remote_candidate("a", "candidate:garbage"),
        Err(SfuError::BadCandidate(_))
    ));
    assert!(matches!(
        sfu.add_remote_candidate("a", "a=candidate:1 1 udp x 1.2.3.4 5 typ host"),
        Err(SfuError::BadCandidate(_))
    ));
    sfu.add_remote_candidate(
        "a",
        "a=candidate:1 1 udp 2113937151 192.0.2.7 5000 typ host",
    )
    .unwrap();
    sfu.add_remote_candidate("a", "").unwrap();
    assert!(sfu.contains("a"), "bad input does not drop the peer");
    assert_eq!(sfu.stats().faults, 0);
}

#[test]
fn limits_are_enforced() {
    let now = Instant::now();
    let config = SfuConfig {
        max_rooms: 2,
        max_peers_per_room: 2,
        max_peers: 3,
        ..common::config()
    };
    let mut sfu = Sfu::new(config, now);
    sfu.join("r1", "a", PUB, now).unwrap();
    sfu.join("r1", "b", PUB, now).unwrap();
    assert!(
        matches!(sfu.join("r1", "c", PUB, now), Err(SfuError::Full(m)) if m.contains("max_peers_per_room"))
    );
    sfu.join("r2", "c", PUB, now).unwrap();
    assert!(
        matches!(sfu.join("r3", "d", PUB, now), Err(SfuError::Full(m)) if m.contains("max_peers"))
    );
    sfu.leave("c", now);
    assert!(matches!(sfu.join("r3", "d", PUB, now), Ok(())));
    assert!(matches!(
        sfu.join("r4", "e", PUB, now),
        Err(SfuError::Full(_))
    ));
    // No usable candidate: a clear configuration error.
    let mut bare = Sfu::new(
        SfuConfig {
            udp_candidates: vec!["0.0.0.0:3478".parse().unwrap()],
            ..SfuConfig::default()
        },
        now,
    );
    assert!(matches!(
        bare.join("r", "a", PUB, now),
        Err(SfuError::Config(_))
    ));
}

#[test]
fn answer_carries_udp_and_passive_tcp_candidates() {
    let now = Instant::now();
    let tcp: SocketAddr = "9.9.9.9:443".parse().unwrap();
    let mut w = World::new(
        SfuConfig {
            tcp_candidates: vec![tcp],
            ..common::config()
        },
        21,
    );
    w.join("r", "a", PUB, Publish::AV);
    let answer = &w.client("a").answers[0];
    assert!(answer.contains("a=ice-lite"), "{answer}");
    assert!(
        answer
            .lines()
            .any(|l| l.contains(" udp ") && l.contains("9.9.9.9 3478 typ host")),
        "{answer}"
    );
    assert!(
        answer
            .lines()
            .any(|l| l.contains(" tcp ") && l.contains("9.9.9.9 443 typ host tcptype passive")),
        "{answer}"
    );
    let _ = now;
}

#[test]
fn an_answer_without_offer_and_glare_are_handled() {
    let mut w = World::new(common::config(), 22);
    w.join("r", "alice", PUB, Publish::AV);
    w.answer_offers = false;
    w.join("r", "bob", PUB, Publish::AV);
    // The SFU offered alice's tracks to bob (and bob's to alice); nobody answered.
    let offered_bob = w
        .events()
        .filter(|e| matches!(e, tsunagi_sfu::SfuEvent::Offer { peer, .. } if peer == "bob"))
        .count();
    assert_eq!(offered_bob, 1);
    // Glare: bob offers while the SFU's offer is pending. The SFU answers and offers again.
    let i = w.clients.iter().position(|c| c.id == "bob").unwrap();
    let mut api = w.clients[i].rtc.sdp_api();
    api.add_media(
        str0m::media::MediaKind::Video,
        str0m::media::Direction::SendOnly,
        Some("bob".into()),
        None,
        None,
    );
    let (offer, pending) = api.apply().unwrap();
    let answer = w
        .sfu
        .accept_offer("bob", &offer.to_sdp_string(), w.now)
        .unwrap();
    w.clients[i]
        .rtc
        .sdp_api()
        .accept_answer(
            pending,
            str0m::change::SdpAnswer::from_sdp_string(&answer).unwrap(),
        )
        .unwrap();
    w.answer_offers = true;
    w.drain_sfu();
    let offered_bob = w
        .events()
        .filter(|e| matches!(e, tsunagi_sfu::SfuEvent::Offer { peer, .. } if peer == "bob"))
        .count();
    assert_eq!(
        offered_bob, 2,
        "re-offered after answering the peer's offer"
    );
    assert_eq!(
        w.sfu.accept_answer("bob", &answer, w.now),
        Err(SfuError::NoPendingOffer)
    );
    w.run(Duration::from_secs(2));
    assert!(w.client("bob").media_from("alice").count() > 50);

    // An ICE restart from bob: new credentials on both sides, media keeps flowing.
    let mut api = w.clients[i].rtc.sdp_api();
    api.ice_restart(false);
    let (offer, pending) = api.apply().unwrap();
    let before = w.clients[i].answers[0]
        .lines()
        .find(|l| l.starts_with("a=ice-ufrag:"))
        .unwrap()
        .to_string();
    let answer = w
        .sfu
        .accept_offer("bob", &offer.to_sdp_string(), w.now)
        .unwrap();
    assert!(
        !answer.contains(&before),
        "new local ufrag after the restart"
    );
    w.clients[i]
        .rtc
        .sdp_api()
        .accept_answer(
            pending,
            str0m::change::SdpAnswer::from_sdp_string(&answer).unwrap(),
        )
        .unwrap();
    let addr = w.clients[i].addr;
    w.clients[i]
        .rtc
        .add_local_candidate(str0m::Candidate::host(addr, "udp").unwrap());
    w.drain_client(i);
    w.drain_sfu();
    let t = w.now;
    w.run(Duration::from_secs(3));
    assert!(
        w.client("bob")
            .media_after(t + Duration::from_secs(1))
            .count()
            > 50,
        "media after the ICE restart"
    );
    assert!(w.sfu.contains("bob"));
}

/// Random datagrams into a running SFU, from strangers and from a connected peer's own
/// address: never a panic, strangers are demux misses, and media keeps flowing.
#[test]
fn random_datagrams_never_panic() {
    let mut w = World::new(common::config(), 23);
    w.join("r", "alice", PUB, Publish::AV);
    w.join("r", "bob", PUB, Publish::NONE);
    w.run(Duration::from_secs(1));
    let alice_addr = w.client("alice").addr;
    let w = std::cell::RefCell::new(w);
    let datagram = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..1500),
        // STUN-looking: type, length, magic cookie, then noise.
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(|mut v| {
            let mut h = vec![
                0x00,
                0x01,
                0x00,
                (v.len() & 0xfc) as u8,
                0x21,
                0x12,
                0xa4,
                0x42,
            ];
            h.extend_from_slice(&[7; 12]);
            h.append(&mut v);
            h
        }),
        // RTP/RTCP-looking and DTLS-looking.
        proptest::collection::vec(any::<u8>(), 12..300).prop_map(|mut v| {
            v[0] = 0x80 | (v[0] & 0x3f);
            v
        }),
        proptest::collection::vec(any::<u8>(), 13..300).prop_map(|mut v| {
            v[0] = 22;
            v[1] = 254;
            v[2] = 253;
            v
        }),
    ];
    let case = (datagram, any::<bool>(), any::<u16>(), any::<bool>());
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&case, |(data, from_peer, port, tcp)| {
            let mut w = w.borrow_mut();
            let source: SocketAddr = if from_peer {
                alice_addr
            } else {
                ([203, 0, 113, 9], port).into()
            };
            let proto = if tcp { Protocol::Tcp } else { Protocol::Udp };
            let now = w.now;
            let accepted = w.sfu.handle_receive(now, proto, source, sfu_addr(), &data);
            if !from_peer {
                prop_assert!(!accepted, "a stranger's datagram was accepted");
            }
            w.drain_sfu();
            Ok(())
        })
        .unwrap();
    let mut w = w.into_inner();
    assert!(w.sfu.stats().demux_misses >= 200);
    let t = w.now;
    w.run(Duration::from_secs(1));
    assert!(w.sfu.contains("alice") && w.sfu.contains("bob"));
    assert!(
        w.client("bob").media_after(t).count() > 30,
        "forwarding survived the noise"
    );
}
