//! CreatePermission, Send and Data indications, and the peer policy.

use super::*;

#[test]
fn permissions_send_and_data_indications() {
    let mut h = Harness::new(config());
    let ft = client_ft(40030);
    let (creds, relay) = h.allocate(ft, "alice", "wonderland");
    let peer = peer4(7, 5000);

    // No permission yet: Send is dropped, peer data is dropped.
    let ind = send_indication(&mut h, peer, b"early");
    assert!(h.send(ft, &ind).is_empty());
    assert!(h.peer(relay, peer, b"early").is_empty());
    assert_eq!(h.server.stats().dropped_no_permission, 2);

    assert_eq!(error_code(&h.create_permission(ft, &creds, &[])), 400);
    let resp = h.create_permission(ft, &creds, &[peer]);
    verify(&Message::parse(&resp).unwrap(), &creds);
    assert!(is_success(&resp));

    let ind = send_indication(&mut h, peer, b"hello peer");
    let out = h.send(ft, &ind);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].destination,
        Destination::Peer {
            relay,
            peer,
            dont_fragment: false
        }
    );
    assert_eq!(out[0].payload, b"hello peer");

    // Permissions are per IP: another port of the same peer IP is allowed.
    let out = h.peer(relay, peer4(7, 5999), b"from another port");
    assert_eq!(out.len(), 1);
    let m = Message::parse(&out[0].payload).unwrap();
    assert_eq!((m.class(), m.method()), (Class::Indication, Method::DATA));
    assert_eq!(
        m.get_xor_address(attr::XOR_PEER_ADDRESS).unwrap(),
        Some(peer4(7, 5999))
    );
    assert_eq!(m.get(attr::DATA), Some(&b"from another port"[..]));
    assert_eq!(out[0].destination, Destination::Client(ft));

    // DONT-FRAGMENT on a Send indication reaches the transmit.
    let tid = h.tid();
    let ind = build(Class::Indication, Method::SEND, tid, |e| {
        e.xor_address(attr::XOR_PEER_ADDRESS, &peer).unwrap();
        e.attr(attr::DATA, b"df").unwrap();
        e.flag(attr::DONT_FRAGMENT).unwrap();
    });
    let out = h.send(ft, &ind);
    assert_eq!(
        out[0].destination,
        Destination::Peer {
            relay,
            peer,
            dont_fragment: true
        }
    );

    // Permissions last 300 s unless refreshed.
    h.run_timers_until(h.t0 + Duration::from_secs(299));
    assert_eq!(h.peer(relay, peer, b"x").len(), 1);
    h.run_timers_until(h.t0 + Duration::from_secs(301));
    assert!(h.peer(relay, peer, b"x").is_empty());
    assert_eq!(h.server.stats().permissions, 0);
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn permission_refresh_keeps_it_alive() {
    let mut h = Harness::new(config());
    let ft = client_ft(40031);
    let (creds, relay) = h.allocate(ft, "alice", "wonderland");
    let peer = peer4(8, 5000);
    h.create_permission(ft, &creds, &[peer]);
    h.run_timers_until(h.t0 + Duration::from_secs(240));
    assert!(is_success(&h.create_permission(ft, &creds, &[peer])));
    h.run_timers_until(h.t0 + Duration::from_secs(500));
    assert_eq!(h.peer(relay, peer, b"x").len(), 1);
    assert_eq!(h.server.stats().permissions, 1);
}

#[test]
fn peer_policy_refuses_special_addresses_with_403() {
    let mut h = Harness::new(config());
    let ft = client_ft(40032);
    let (creds, _) = h.allocate(ft, "alice", "wonderland");
    for (peer, key) in [
        ("127.0.0.1:9", "allow-loopback-peers"),
        ("10.0.0.1:9", "allowed-peer-ip"),
        ("169.254.169.254:80", "allowed-peer-ip"),
        ("0.0.0.0:9", "allowed-peer-ip"),
    ] {
        let resp = h.create_permission(ft, &creds, &[peer.parse().unwrap()]);
        assert_eq!(error_code(&resp), 403, "{peer}");
        assert!(reason(&resp).contains(key), "{peer}: {}", reason(&resp));
        let resp = h.channel_bind(ft, &creds, 0x4000, peer.parse().unwrap());
        assert_eq!(error_code(&resp), 403);
    }
    // All or nothing: one bad peer refuses the whole request.
    let resp = h.create_permission(ft, &creds, &[peer4(1, 1), "127.0.0.1:1".parse().unwrap()]);
    assert_eq!(error_code(&resp), 403);
    assert_eq!(h.server.stats().permissions, 0);
    let denied: Vec<_> = h
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::PeerDenied { .. }))
        .collect();
    assert_eq!(denied.len(), 9);
    // An IPv6 peer on an IPv4 allocation: 443.
    let resp = h.create_permission(ft, &creds, &["[2001:db8:1::1]:9".parse().unwrap()]);
    assert_eq!(error_code(&resp), 443);
}

#[test]
fn allow_loopback_peers_permits_loopback() {
    let mut c = config();
    c.peer_policy.allow_loopback = true;
    let mut h = Harness::new(c);
    let ft = client_ft(40033);
    let (creds, _) = h.allocate(ft, "alice", "wonderland");
    assert!(is_success(&h.create_permission(
        ft,
        &creds,
        &["127.0.0.1:9".parse().unwrap()]
    )));
    assert_eq!(
        error_code(&h.create_permission(ft, &creds, &["10.1.1.1:9".parse().unwrap()])),
        403
    );
}

#[test]
fn permission_quota_per_allocation() {
    let mut c = config();
    c.max_permissions = 3;
    let mut h = Harness::new(c);
    let ft = client_ft(40034);
    let (creds, _) = h.allocate(ft, "alice", "wonderland");
    assert!(is_success(&h.create_permission(
        ft,
        &creds,
        &[peer4(1, 1), peer4(2, 1), peer4(3, 1)]
    )));
    // Refreshing existing ones is fine; a fourth is not.
    assert!(is_success(&h.create_permission(ft, &creds, &[peer4(1, 1)])));
    assert_eq!(
        error_code(&h.create_permission(ft, &creds, &[peer4(4, 1)])),
        508
    );
}

#[test]
fn requests_on_a_5_tuple_without_allocation_get_437() {
    let mut h = Harness::new(config());
    let ft = client_ft(40035);
    let creds = h.challenge(ft, "alice", "wonderland");
    assert_eq!(
        error_code(&h.create_permission(ft, &creds, &[peer4(1, 1)])),
        437
    );
    assert_eq!(
        error_code(&h.channel_bind(ft, &creds, 0x4000, peer4(1, 1))),
        437
    );
    let resp = h.auth_request(ft, Method::REFRESH, &creds, |_| {});
    assert_eq!(error_code(&resp), 437);
}
