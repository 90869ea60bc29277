//! Allocate and Refresh: the challenge, credentials (long-term, REST, nonces), arguments, families, reservations, quotas, lifetimes.

use super::*;

#[test]
fn unauthenticated_allocate_is_challenged_and_creates_no_state() {
    let mut h = Harness::new(config());
    for port in 1000..1100 {
        let creds = h.challenge(client_ft(port), "alice", "wonderland");
        assert!(creds.nonce.starts_with("obMatJos2"));
        assert_eq!(creds.realm, REALM);
    }
    assert_eq!(h.server.allocation_count(), 0);
    assert!(
        h.binder.requests.is_empty(),
        "no relay socket before authentication"
    );
    assert!(
        h.server.poll_timeout().is_none(),
        "no timers before authentication"
    );
    // The challenge offers PASSWORD-ALGORITHMS.
    let req = build(Class::Request, Method::ALLOCATE, h.tid(), |e| {
        e.requested_transport(17).unwrap();
    });
    let resp = h.request(client_ft(1), &req);
    let m = Message::parse(&resp).unwrap();
    let algs = attr::decode_password_algorithms(m.get(attr::PASSWORD_ALGORITHMS).unwrap()).unwrap();
    assert_eq!(algs.iter().map(|a| a.0).collect::<Vec<_>>(), vec![2, 1]);
    assert!(reason(&resp).contains("long-term credentials"));
}

#[test]
fn allocate_success_and_response_contents() {
    let mut h = Harness::new(config());
    let ft = client_ft(40001);
    let creds = h.challenge(ft, "alice", "wonderland");
    let resp = h.auth_request(ft, Method::ALLOCATE, &creds, |e| {
        e.requested_transport(17).unwrap();
        e.u32(attr::LIFETIME, 1200).unwrap();
    });
    let m = Message::parse(&resp).unwrap();
    assert_eq!(m.class(), Class::Success);
    verify(&m, &creds);
    assert!(m.has_valid_fingerprint());
    let relay = m
        .get_xor_address(attr::XOR_RELAYED_ADDRESS)
        .unwrap()
        .unwrap();
    assert_eq!(relay, "192.0.2.10:50000".parse::<SocketAddr>().unwrap());
    assert_eq!(
        m.get_xor_address(attr::XOR_MAPPED_ADDRESS).unwrap(),
        Some(ft.client)
    );
    assert_eq!(m.get_u32(attr::LIFETIME).unwrap(), Some(1200));
    assert!(m
        .get_str(attr::SOFTWARE)
        .unwrap()
        .unwrap()
        .starts_with("tsunagi"));
    assert_eq!(h.server.allocation_count(), 1);
    let ev = h.events();
    assert!(
        matches!(&ev[0], Event::AllocationCreated { username, relays, .. } if username == "alice" && relays == &vec![relay])
    );
}

#[test]
fn allocate_lifetime_is_clamped_between_default_and_max() {
    let mut h = Harness::new(config());
    for (asked, granted) in [(30u32, 600u32), (100_000, 3600), (0, 600)] {
        let ft = client_ft(2000 + asked as u16 % 1000);
        let creds = h.challenge(ft, "alice", "wonderland");
        let resp = h.auth_request(ft, Method::ALLOCATE, &creds, |e| {
            e.requested_transport(17).unwrap();
            e.u32(attr::LIFETIME, asked).unwrap();
        });
        let m = Message::parse(&resp).unwrap();
        assert_eq!(
            m.get_u32(attr::LIFETIME).unwrap(),
            Some(granted),
            "asked {asked}"
        );
    }
}

#[test]
fn wrong_password_unknown_user_and_wrong_realm_get_401() {
    let mut h = Harness::new(config());
    let ft = client_ft(40002);
    for (user, pw) in [("alice", "wrong"), ("mallory", "x")] {
        let creds = h.challenge(ft, user, pw);
        let resp = h.auth_request(ft, Method::ALLOCATE, &creds, |e| {
            e.requested_transport(17).unwrap();
        });
        assert_eq!(error_code(&resp), 401);
        let m = Message::parse(&resp).unwrap();
        assert!(m.get(attr::NONCE).is_some() && m.get(attr::REALM).is_some());
        assert!(!m.has_message_integrity());
    }
    let mut creds = h.challenge(ft, "alice", "wonderland");
    creds.realm = "other.org".into();
    let resp = h.auth_request(ft, Method::ALLOCATE, &creds, |e| {
        e.requested_transport(17).unwrap();
    });
    assert_eq!(error_code(&resp), 401);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.binder.requests.is_empty());
    assert_eq!(h.server.stats().auth_failures, 3);
}

#[test]
fn message_integrity_without_username_is_400() {
    let mut h = Harness::new(config());
    let ft = client_ft(40003);
    let creds = h.challenge(ft, "alice", "wonderland");
    let req = build(Class::Request, Method::ALLOCATE, h.tid(), |e| {
        e.requested_transport(17).unwrap();
        e.string(attr::REALM, REALM).unwrap();
        e.string(attr::NONCE, &creds.nonce).unwrap();
        e.message_integrity(&key(&creds)).unwrap();
    });
    assert_eq!(error_code(&h.request(ft, &req)), 400);
}

#[test]
fn stale_nonce_gets_438_and_the_new_nonce_works() {
    let mut h = Harness::new(ServerConfig {
        nonce_lifetime: Duration::from_secs(600),
        ..config()
    });
    let ft = client_ft(40004);
    let mut creds = h.challenge(ft, "alice", "wonderland");
    h.advance(Duration::from_secs(601));
    let resp = h.auth_request(ft, Method::ALLOCATE, &creds, |e| {
        e.requested_transport(17).unwrap();
    });
    assert_eq!(error_code(&resp), 438);
    let m = Message::parse(&resp).unwrap();
    creds.nonce = m.get_str(attr::NONCE).unwrap().unwrap().into();
    let resp = h.auth_request(ft, Method::ALLOCATE, &creds, |e| {
        e.requested_transport(17).unwrap();
    });
    assert!(is_success(&resp));
}

#[test]
fn nonce_is_bound_to_the_client_address() {
    let mut h = Harness::new(config());
    let creds = h.challenge(client_ft(40005), "alice", "wonderland");
    let mut other = client_ft(40005);
    other.client = "203.0.113.99:40005".parse().unwrap();
    let resp = h.auth_request(other, Method::ALLOCATE, &creds, |e| {
        e.requested_transport(17).unwrap();
    });
    assert_eq!(error_code(&resp), 438);
}

#[test]
fn rest_credentials_with_rotation_and_expiry() {
    let mut c = config();
    c.credentials.add_secret("old-secret").unwrap();
    c.credentials.add_secret("new-secret").unwrap();
    let mut h = Harness::new(c);
    for (i, secret) in ["old-secret", "new-secret"].iter().enumerate() {
        let (u, p) = rest_credential(secret, "carol", UNIX0 + 3600);
        let (_, relay) = h.allocate(client_ft(41000 + i as u16), &u, &p);
        assert_eq!(relay.ip().to_string(), "192.0.2.10");
    }
    // Signed with a secret the server does not have.
    let (u, p) = rest_credential("unknown-secret", "carol", UNIX0 + 3600);
    let ft = client_ft(41010);
    let creds = h.challenge(ft, &u, &p);
    let resp = h.auth_request(ft, Method::ALLOCATE, &creds, |e| {
        e.requested_transport(17).unwrap();
    });
    assert_eq!(error_code(&resp), 401);
    // Expired.
    let (u, p) = rest_credential("new-secret", "carol", UNIX0 - 1);
    let ft = client_ft(41011);
    let creds = h.challenge(ft, &u, &p);
    let resp = h.auth_request(ft, Method::ALLOCATE, &creds, |e| {
        e.requested_transport(17).unwrap();
    });
    assert_eq!(error_code(&resp), 401);
    assert!(reason(&resp).contains("expired"), "{}", reason(&resp));
    // Valid now, expired after the clock moves on.
    let (u, p) = rest_credential("new-secret", "dave", UNIX0 + 100);
    let ft = client_ft(41012);
    h.advance(Duration::from_secs(101));
    let creds = h.challenge(ft, &u, &p);
    let resp = h.auth_request(ft, Method::ALLOCATE, &creds, |e| {
        e.requested_transport(17).unwrap();
    });
    assert_eq!(error_code(&resp), 401);
}

#[test]
fn retransmitted_allocate_gets_the_same_response_and_a_new_one_gets_437() {
    let mut h = Harness::new(config());
    let ft = client_ft(40006);
    let creds = h.challenge(ft, "alice", "wonderland");
    let tid = h.tid();
    let req = signed(Method::ALLOCATE, tid, &creds, |e| {
        e.requested_transport(17).unwrap();
    });
    let first = h.request(ft, &req);
    let again = h.request(ft, &req);
    assert_eq!(first, again);
    assert_eq!(h.binder.requests.len(), 1);
    let resp = h.auth_request(ft, Method::ALLOCATE, &creds, |e| {
        e.requested_transport(17).unwrap();
    });
    assert_eq!(error_code(&resp), 437);
    // The 437 is integrity-protected: the request authenticated.
    verify(&Message::parse(&resp).unwrap(), &creds);
}

#[test]
fn allocate_argument_errors() {
    let mut h = Harness::new(config());
    let ft = client_ft(40007);
    let creds = h.challenge(ft, "alice", "wonderland");
    let cases: Vec<(u16, Box<dyn Fn(&mut tsunagi_stun::MessageEncoder<'_>)>)> = vec![
        (400, Box::new(|_e| {})),
        (
            442,
            Box::new(|e| {
                e.requested_transport(attr::PROTO_TCP).unwrap();
            }),
        ),
        (
            400,
            Box::new(|e| {
                e.requested_transport(17).unwrap();
                e.address_family(attr::REQUESTED_ADDRESS_FAMILY, 1).unwrap();
                e.address_family(attr::ADDITIONAL_ADDRESS_FAMILY, 2)
                    .unwrap();
            }),
        ),
        (
            440,
            Box::new(|e| {
                e.requested_transport(17).unwrap();
                e.address_family(attr::REQUESTED_ADDRESS_FAMILY, 3).unwrap();
            }),
        ),
        (
            400,
            Box::new(|e| {
                e.requested_transport(17).unwrap();
                e.address_family(attr::ADDITIONAL_ADDRESS_FAMILY, 1)
                    .unwrap();
            }),
        ),
        (
            400,
            Box::new(|e| {
                e.requested_transport(17).unwrap();
                e.even_port(false).unwrap();
                e.attr(attr::RESERVATION_TOKEN, &[1; 8]).unwrap();
            }),
        ),
        (
            508,
            Box::new(|e| {
                e.requested_transport(17).unwrap();
                e.attr(attr::RESERVATION_TOKEN, &[1; 8]).unwrap();
            }),
        ),
    ];
    for (code, f) in cases {
        let resp = h.auth_request(ft, Method::ALLOCATE, &creds, |e| f(e));
        assert_eq!(error_code(&resp), code, "reason: {}", reason(&resp));
        assert!(reason(&resp).len() > 12, "reason phrases say what to do");
    }
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn ipv6_and_dual_stack_allocations() {
    let mut h = Harness::new(config());
    let ft = client_ft(40008);
    let creds = h.challenge(ft, "alice", "wonderland");
    let resp = h.auth_request(ft, Method::ALLOCATE, &creds, |e| {
        e.requested_transport(17).unwrap();
        e.address_family(attr::REQUESTED_ADDRESS_FAMILY, attr::FAMILY_IPV6)
            .unwrap();
    });
    let m = Message::parse(&resp).unwrap();
    assert!(m
        .get_xor_address(attr::XOR_RELAYED_ADDRESS)
        .unwrap()
        .unwrap()
        .is_ipv6());

    let ft = client_ft(40009);
    let creds = h.challenge(ft, "alice", "wonderland");
    let resp = h.auth_request(ft, Method::ALLOCATE, &creds, |e| {
        e.requested_transport(17).unwrap();
        e.address_family(attr::ADDITIONAL_ADDRESS_FAMILY, attr::FAMILY_IPV6)
            .unwrap();
    });
    let m = Message::parse(&resp).unwrap();
    let relays: Vec<SocketAddr> = m
        .xor_addresses(attr::XOR_RELAYED_ADDRESS)
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(relays.len(), 2);
    assert!(relays[0].is_ipv4() && relays[1].is_ipv6());

    // A v4 peer and a v6 peer through one dual allocation.
    let v6_peer: SocketAddr = "[2001:db8:1::5]:7000".parse().unwrap();
    assert!(is_success(&h.create_permission(
        ft,
        &creds,
        &[peer4(1, 7000), v6_peer]
    )));
    let ind = send_indication(&mut h, v6_peer, b"six");
    let out = h.send(ft, &ind);
    assert_eq!(
        out[0].destination,
        Destination::Peer {
            relay: h.server.relays_of(&ft).unwrap()[1],
            peer: v6_peer,
            dont_fragment: false
        }
    );

    // Without IPv6 relays: 440 for v6-only; a dual request degrades to v4 with ADDRESS-ERROR-CODE.
    h.binder.v6 = None;
    let ft = client_ft(40010);
    let creds = h.challenge(ft, "alice", "wonderland");
    let resp = h.auth_request(ft, Method::ALLOCATE, &creds, |e| {
        e.requested_transport(17).unwrap();
        e.address_family(attr::REQUESTED_ADDRESS_FAMILY, attr::FAMILY_IPV6)
            .unwrap();
    });
    assert_eq!(error_code(&resp), 440);
    let resp = h.auth_request(ft, Method::ALLOCATE, &creds, |e| {
        e.requested_transport(17).unwrap();
        e.address_family(attr::ADDITIONAL_ADDRESS_FAMILY, attr::FAMILY_IPV6)
            .unwrap();
    });
    let m = Message::parse(&resp).unwrap();
    assert_eq!(m.class(), Class::Success);
    assert_eq!(m.xor_addresses(attr::XOR_RELAYED_ADDRESS).count(), 1);
    let aec = m.get(attr::ADDRESS_ERROR_CODE).unwrap();
    assert_eq!(aec[0], attr::FAMILY_IPV6);
    assert_eq!(aec[2] as u16 * 100 + aec[3] as u16, 440);
}

#[test]
fn even_port_and_reservation_token() {
    let mut h = Harness::new(config());
    h.binder.next_port = 50001;
    let ft = client_ft(40011);
    let creds = h.challenge(ft, "alice", "wonderland");
    let resp = h.auth_request(ft, Method::ALLOCATE, &creds, |e| {
        e.requested_transport(17).unwrap();
        e.even_port(true).unwrap();
    });
    let m = Message::parse(&resp).unwrap();
    let relay = m
        .get_xor_address(attr::XOR_RELAYED_ADDRESS)
        .unwrap()
        .unwrap();
    assert_eq!(relay.port() % 2, 0);
    assert_eq!(h.binder.requests[0].port, PortRequest::EvenReserveNext);
    let token: [u8; 8] = m.get(attr::RESERVATION_TOKEN).unwrap().try_into().unwrap();

    let ft2 = client_ft(40012);
    let creds2 = h.challenge(ft2, "alice", "wonderland");
    let resp = h.auth_request(ft2, Method::ALLOCATE, &creds2, |e| {
        e.requested_transport(17).unwrap();
        e.attr(attr::RESERVATION_TOKEN, &token).unwrap();
    });
    let m = Message::parse(&resp).unwrap();
    assert_eq!(
        m.get_xor_address(attr::XOR_RELAYED_ADDRESS)
            .unwrap()
            .unwrap()
            .port(),
        relay.port() + 1
    );
    assert_eq!(
        h.binder.requests.len(),
        1,
        "the reserved port was already bound"
    );
    // The token is single-use.
    let ft3 = client_ft(40013);
    let creds3 = h.challenge(ft3, "alice", "wonderland");
    let resp = h.auth_request(ft3, Method::ALLOCATE, &creds3, |e| {
        e.requested_transport(17).unwrap();
        e.attr(attr::RESERVATION_TOKEN, &token).unwrap();
    });
    assert_eq!(error_code(&resp), 508);

    // An unused reservation is released after 30 s.
    let resp = h.auth_request(ft3, Method::ALLOCATE, &creds3, |e| {
        e.requested_transport(17).unwrap();
        e.even_port(true).unwrap();
    });
    let relay3 = Message::parse(&resp)
        .unwrap()
        .get_xor_address(attr::XOR_RELAYED_ADDRESS)
        .unwrap()
        .unwrap();
    let odd = SocketAddr::new(relay3.ip(), relay3.port() + 1);
    assert!(h.binder.bound.contains(&odd));
    h.advance(Duration::from_secs(31));
    assert!(h.binder.released.contains(&odd));
    assert!(!h.binder.bound.contains(&odd));

    // EVEN-PORT without R.
    let ft4 = client_ft(40014);
    let creds4 = h.challenge(ft4, "alice", "wonderland");
    let resp = h.auth_request(ft4, Method::ALLOCATE, &creds4, |e| {
        e.requested_transport(17).unwrap();
        e.even_port(false).unwrap();
    });
    let m = Message::parse(&resp).unwrap();
    assert_eq!(
        m.get_xor_address(attr::XOR_RELAYED_ADDRESS)
            .unwrap()
            .unwrap()
            .port()
            % 2,
        0
    );
    assert!(m.get(attr::RESERVATION_TOKEN).is_none());
}

#[test]
fn quotas_and_capacity() {
    let mut c = config();
    c.user_quota = 2;
    c.total_quota = 3;
    let mut h = Harness::new(c);
    h.allocate(client_ft(1), "alice", "wonderland");
    h.allocate(client_ft(2), "alice", "wonderland");
    let ft = client_ft(3);
    let creds = h.challenge(ft, "alice", "wonderland");
    let resp = h.auth_request(ft, Method::ALLOCATE, &creds, |e| {
        e.requested_transport(17).unwrap();
    });
    assert_eq!(error_code(&resp), 486);
    assert!(reason(&resp).contains("user-quota"));
    h.allocate(client_ft(4), "bob", "builder");
    let ft = client_ft(5);
    let creds = h.challenge(ft, "bob", "builder");
    let resp = h.auth_request(ft, Method::ALLOCATE, &creds, |e| {
        e.requested_transport(17).unwrap();
    });
    assert_eq!(error_code(&resp), 508);
    assert!(reason(&resp).contains("total-quota"));
    // Deleting one frees quota for its user.
    let creds = h.challenge(client_ft(1), "alice", "wonderland");
    let resp = h.auth_request(client_ft(1), Method::REFRESH, &creds, |e| {
        e.u32(attr::LIFETIME, 0).unwrap();
    });
    assert!(is_success(&resp));
    h.allocate(client_ft(6), "alice", "wonderland");
}

#[test]
fn relay_port_exhaustion_is_508() {
    let mut h = Harness::new(config());
    h.binder.next_port = 60000;
    h.allocate(client_ft(1), "alice", "wonderland");
    let ft = client_ft(2);
    let creds = h.challenge(ft, "alice", "wonderland");
    let resp = h.auth_request(ft, Method::ALLOCATE, &creds, |e| {
        e.requested_transport(17).unwrap();
    });
    assert_eq!(error_code(&resp), 508);
    assert!(reason(&resp).contains("min-port"));
}

#[test]
fn refresh_extends_deletes_and_checks_the_user() {
    let mut h = Harness::new(config());
    let ft = client_ft(40020);
    let (creds, relay) = h.allocate(ft, "alice", "wonderland");
    assert_eq!(
        h.server.poll_timeout(),
        Some(h.t0 + Duration::from_secs(600))
    );
    h.advance(Duration::from_secs(500));
    let resp = h.auth_request(ft, Method::REFRESH, &creds, |e| {
        e.u32(attr::LIFETIME, 900).unwrap();
    });
    let m = Message::parse(&resp).unwrap();
    verify(&m, &creds);
    assert_eq!(m.get_u32(attr::LIFETIME).unwrap(), Some(900));
    // Past the original expiry, still alive.
    h.run_timers_until(h.t0 + Duration::from_secs(1300));
    assert_eq!(h.server.allocation_count(), 1);
    // Another user on this 5-tuple: 441.
    let bob = h.challenge(ft, "bob", "builder");
    let resp = h.auth_request(ft, Method::REFRESH, &bob, |_| {});
    assert_eq!(error_code(&resp), 441);
    // A family the allocation lacks: 443.
    let resp = h.auth_request(ft, Method::REFRESH, &creds, |e| {
        e.address_family(attr::REQUESTED_ADDRESS_FAMILY, attr::FAMILY_IPV6)
            .unwrap();
    });
    assert_eq!(error_code(&resp), 443);
    // Lifetime 0 deletes.
    let resp = h.auth_request(ft, Method::REFRESH, &creds, |e| {
        e.u32(attr::LIFETIME, 0).unwrap();
    });
    let m = Message::parse(&resp).unwrap();
    assert_eq!(m.get_u32(attr::LIFETIME).unwrap(), Some(0));
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.binder.released, vec![relay]);
    assert!(h.events().iter().any(|e| matches!(
        e,
        Event::AllocationDeleted {
            reason: DeleteReason::Refreshed,
            ..
        }
    )));
    // Nothing left: 437.
    let resp = h.auth_request(ft, Method::REFRESH, &creds, |_| {});
    assert_eq!(error_code(&resp), 437);
}

#[test]
fn allocation_expires_on_the_virtual_clock() {
    let mut h = Harness::new(config());
    let ft = client_ft(40021);
    let (_, relay) = h.allocate(ft, "alice", "wonderland");
    h.run_timers_until(h.t0 + Duration::from_secs(599));
    assert_eq!(h.server.allocation_count(), 1);
    h.run_timers_until(h.t0 + Duration::from_secs(600));
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.binder.released, vec![relay]);
    assert!(h.events().iter().any(|e| matches!(
        e,
        Event::AllocationDeleted {
            reason: DeleteReason::Expired,
            ..
        }
    )));
    assert_eq!(h.server.poll_timeout(), None);
    // Peer data to the dead relay goes nowhere.
    assert!(h.peer(relay, peer4(1, 9), b"late").is_empty());
}
