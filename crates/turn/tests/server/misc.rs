//! Bandwidth limits, quota release, SHA-256 passwords, unsupported methods, timers under many allocations, coturn's REST shapes, the relay fast paths.

use super::*;

#[test]
fn bandwidth_limit_drops_excess() {
    let mut c = config();
    c.max_bps = 8 * 1000; // 1000 bytes per second
    let mut h = Harness::new(c);
    let ft = client_ft(40050);
    let (creds, relay) = h.allocate(ft, "alice", "wonderland");
    let peer = peer4(20, 1);
    assert!(is_success(&h.channel_bind(ft, &creds, 0x4000, peer)));
    let mut buf = [0u8; 600];
    let n = ChannelData {
        channel: 0x4000,
        data: &[0u8; 400],
    }
    .encode(&mut buf, false)
    .unwrap();
    let sent: usize = (0..5).map(|_| h.send(ft, &buf[..n]).len()).sum();
    assert_eq!(sent, 2, "1000-byte burst fits two 400-byte packets");
    h.advance(Duration::from_millis(500));
    let sent: usize = (0..5).map(|_| h.send(ft, &buf[..n]).len()).sum();
    assert_eq!(sent, 1, "half a second refills 500 bytes");
    // The other direction has its own bucket.
    let sent: usize = (0..5).map(|_| h.peer(relay, peer, &[0u8; 400]).len()).sum();
    assert_eq!(sent, 2);
    assert!(h.server.stats().dropped_rate_limited >= 10);
}

#[test]
fn one_allocation_per_user_quota_is_released_on_expiry() {
    let mut c = config();
    c.user_quota = 1;
    let mut h = Harness::new(c);
    h.allocate(client_ft(1), "alice", "wonderland");
    h.run_timers_until(h.t0 + Duration::from_secs(601));
    h.allocate(client_ft(2), "alice", "wonderland");
}

#[test]
fn sha256_password_algorithm_and_userhash() {
    let mut h = Harness::new(config());
    let ft = client_ft(40060);
    let creds = h.challenge(ft, "alice", "wonderland");
    let k = tsunagi_stun::IntegrityKey::from_bytes(&tsunagi_stun::long_term_key_sha256(
        "alice",
        REALM,
        "wonderland",
    ));
    let tid = h.tid();
    let req = build(Class::Request, Method::ALLOCATE, tid, |e| {
        e.requested_transport(17).unwrap();
        e.attr(
            attr::USERHASH,
            &tsunagi_turn::auth::userhash("alice", REALM),
        )
        .unwrap();
        e.string(attr::REALM, REALM).unwrap();
        e.string(attr::NONCE, &creds.nonce).unwrap();
        e.password_algorithms(&[2, 1]).unwrap();
        e.password_algorithm(2).unwrap();
        e.message_integrity_sha256(&k).unwrap();
    });
    let resp = h.request(ft, &req);
    let m = Message::parse(&resp).unwrap();
    assert_eq!(m.class(), Class::Success, "{:?}", m.error_code());
    assert!(m.has_message_integrity_sha256());
    m.verify_integrity(&k).unwrap();

    // A PASSWORD-ALGORITHMS list that differs from the offer is a downgrade attempt: 400.
    let ft = client_ft(40061);
    let creds = h.challenge(ft, "alice", "wonderland");
    let req = build(Class::Request, Method::ALLOCATE, h.tid(), |e| {
        e.requested_transport(17).unwrap();
        e.string(attr::USERNAME, "alice").unwrap();
        e.string(attr::REALM, REALM).unwrap();
        e.string(attr::NONCE, &creds.nonce).unwrap();
        e.password_algorithms(&[1]).unwrap();
        e.password_algorithm(1).unwrap();
        e.message_integrity(&key(&creds)).unwrap();
    });
    assert_eq!(error_code(&h.request(ft, &req)), 400);
}

#[test]
fn unsupported_methods_get_400() {
    let mut h = Harness::new(config());
    let ft = client_ft(40070);
    for m in [Method::CONNECT, Method(0x0055)] {
        let req = build(Class::Request, m, h.tid(), |_| {});
        assert_eq!(error_code(&h.request(ft, &req)), 400);
    }
}

#[test]
fn many_allocations_expire_in_order_and_timers_stay_bounded() {
    let mut h = Harness::new(config());
    let mut ids: Vec<FiveTuple> = Vec::new();
    for i in 0..200u16 {
        let ft = client_ft(10_000 + i);
        let (creds, _) = h.allocate(ft, "alice", "wonderland");
        h.create_permission(ft, &creds, &[peer4(1, 1)]);
        ids.push(ft);
        h.advance(Duration::from_secs(1));
    }
    assert_eq!(h.server.allocation_count(), 200);
    h.run_timers_until(h.t0 + Duration::from_secs(700));
    // Allocation i was created at t = i s and lasts 600 s.
    assert_eq!(h.server.allocation_count(), 200 - 101);
    h.run_timers_until(h.t0 + Duration::from_secs(900));
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.binder.bound.len(), 0);
    assert_eq!(h.server.stats().permissions, 0);
    assert_eq!(h.server.poll_timeout(), None);
}

#[test]
fn rest_username_and_password_shapes_match_coturn() {
    let (u, p) = rest_credential("north", "alice", 1_700_000_000);
    assert_eq!(u, "1700000000:alice");
    assert_eq!(p.len(), 28, "base64 of a 20-byte HMAC-SHA1");
}

#[test]
fn relay_fast_paths_match_the_queued_ones() {
    let mut h = Harness::new(config());
    let ft = client_ft(40140);
    let (creds, relay) = h.allocate(ft, "alice", "wonderland");
    let peer = peer4(9, 6100);
    // Same IP as `peer` (so permitted) but no channel: a Data indication.
    let other = peer4(9, 6101);
    assert!(is_success(&h.channel_bind(ft, &creds, 0x4001, peer)));

    // Peer to client: the same destination and message as handle_peer.
    for p in [peer, other] {
        let queued = h.peer(relay, p, b"to client");
        let mut out = [0u8; 256];
        let (dest, n) = h
            .server
            .handle_peer_into(h.now, relay, p, b"to client", &mut out)
            .unwrap();
        assert_eq!(dest, queued[0].destination);
        if p == peer {
            assert_eq!(&out[..n], &queued[0].payload[..]);
        } else {
            // Data indications differ only in their transaction ID.
            let m = Message::parse(&out[..n]).unwrap();
            assert_eq!(m.get(attr::DATA).unwrap(), b"to client");
            assert_eq!(n, queued[0].payload.len());
        }
        assert!(h.drain().is_empty());
        // No room: queued as handle_peer queues it.
        assert!(h
            .server
            .handle_peer_into(h.now, relay, p, b"to client", &mut [0u8; 4])
            .is_none());
        assert_eq!(h.drain().len(), 1);
        // Unknown relay, unpermitted peer: nothing either way.
        assert!(h
            .server
            .handle_peer_into(h.now, peer, p, b"x", &mut out)
            .is_none());
        assert!(h
            .server
            .handle_peer_into(h.now, relay, peer4(10, 1), b"x", &mut out)
            .is_none());
        assert!(h.drain().is_empty());
    }

    // Client to peer: the data is returned as a range of the datagram.
    let mut buf = [0u8; 64];
    let n = ChannelData {
        channel: 0x4001,
        data: b"to peer",
    }
    .encode(&mut buf, false)
    .unwrap();
    let (dest, range) = h
        .server
        .handle_client_relay(h.now, ft, &buf[..n], &mut h.binder)
        .unwrap();
    assert_eq!(
        dest,
        Destination::Peer {
            relay,
            peer,
            dont_fragment: false
        }
    );
    assert_eq!(&buf[range], b"to peer");
    assert!(h.drain().is_empty());
    // An unbound channel is dropped and counted.
    let before = h.server.stats().dropped_invalid;
    let n = ChannelData {
        channel: 0x4002,
        data: b"x",
    }
    .encode(&mut buf, false)
    .unwrap();
    assert!(h
        .server
        .handle_client_relay(h.now, ft, &buf[..n], &mut h.binder)
        .is_none());
    assert_eq!(h.server.stats().dropped_invalid, before + 1);
    // STUN takes the usual way: the response is queued.
    let tid = h.tid();
    let req = build(Class::Request, Method::BINDING, tid, |_| {});
    assert!(h
        .server
        .handle_client_relay(h.now, ft, &req, &mut h.binder)
        .is_none());
    let out = h.drain();
    assert_eq!(out.len(), 1);
    assert!(is_success(&out[0].payload));

    let stats = h.server.stats();
    assert_eq!((stats.packets_from_peers, stats.bytes_from_peers), (6, 54));
    assert_eq!((stats.packets_to_peers, stats.bytes_to_peers), (1, 7));
}
