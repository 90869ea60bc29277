//! Deterministic tests of the TURN state machine: every request, error and timer,
//! driven with a virtual clock and a fake relay binder. No sockets, no sleeps.
#![allow(clippy::unwrap_used, clippy::type_complexity)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tsunagi_stun::attr;
use tsunagi_stun::{ChannelData, Class, Message, Method};
use tsunagi_turn::auth::rest_credential;
use tsunagi_turn::{
    DeleteReason, Destination, Event, FiveTuple, PortRequest, ServerConfig, Transport,
};

#[test]
fn binding_returns_xor_mapped_address_without_auth() {
    let mut h = Harness::new(config());
    let ft = client_ft(40000);
    let tid = h.tid();
    let req = build(Class::Request, Method::BINDING, tid, |e| {
        e.fingerprint().unwrap();
    });
    let resp = h.request(ft, &req);
    let m = Message::parse(&resp).unwrap();
    assert_eq!(m.class(), Class::Success);
    assert_eq!(m.transaction_id(), tid);
    assert_eq!(
        m.get_xor_address(attr::XOR_MAPPED_ADDRESS).unwrap(),
        Some(ft.client)
    );
    assert!(
        m.has_valid_fingerprint(),
        "FINGERPRINT echoed when the request had one"
    );
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.server.stats().binding_requests, 1);
    // A Binding indication (keepalive) gets no answer.
    let ind = build(Class::Indication, Method::BINDING, h.tid(), |_| {});
    assert!(h.send(ft, &ind).is_empty());
}

#[test]
fn binding_with_change_request_is_refused_with_420() {
    let mut h = Harness::new(config());
    let ft = client_ft(40000);
    let tid = h.tid();
    let req = build(Class::Request, Method::BINDING, tid, |e| {
        e.change_request(true, true).unwrap();
    });
    let resp = h.request(ft, &req);
    assert_eq!(error_code(&resp), 420);
    let m = Message::parse(&resp).unwrap();
    let unknown: Vec<u16> =
        attr::decode_unknown_attributes(m.get(attr::UNKNOWN_ATTRIBUTES).unwrap())
            .unwrap()
            .collect();
    assert_eq!(unknown, vec![attr::CHANGE_REQUEST]);
}

#[test]
fn garbage_and_responses_are_dropped_silently() {
    let mut h = Harness::new(config());
    let ft = client_ft(40000);
    assert!(h.send(ft, b"").is_empty());
    assert!(h.send(ft, b"\xff\xff\xff\xff").is_empty());
    assert!(h.send(ft, &[0x00, 0x01, 0x00, 0x04]).is_empty());
    let resp = build(Class::Success, Method::BINDING, h.tid(), |_| {});
    assert!(h.send(ft, &resp).is_empty());
    // ChannelData with no allocation.
    let mut cd = [0u8; 8];
    let n = ChannelData {
        channel: 0x4000,
        data: b"hi",
    }
    .encode(&mut cd, false)
    .unwrap();
    assert!(h.send(ft, &cd[..n]).is_empty());
    // A bad FINGERPRINT means "not STUN": no answer.
    let mut req = build(Class::Request, Method::BINDING, h.tid(), |e| {
        e.fingerprint().unwrap();
    });
    let last = req.len() - 1;
    req[last] ^= 1;
    assert!(h.send(ft, &req).is_empty());
    assert!(h.server.stats().dropped_invalid >= 4);
}

#[test]
fn unknown_comprehension_required_attribute_gets_420() {
    let mut h = Harness::new(config());
    let ft = client_ft(40000);
    let req = build(Class::Request, Method::ALLOCATE, h.tid(), |e| {
        e.requested_transport(17).unwrap();
        e.attr(0x0031, b"xyz!").unwrap();
        e.attr(0x8031, b"optional is fine").unwrap();
    });
    let resp = h.request(ft, &req);
    assert_eq!(error_code(&resp), 420);
    let m = Message::parse(&resp).unwrap();
    let unknown: Vec<u16> =
        attr::decode_unknown_attributes(m.get(attr::UNKNOWN_ATTRIBUTES).unwrap())
            .unwrap()
            .collect();
    assert_eq!(unknown, vec![0x0031]);
}

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

fn send_indication(h: &mut Harness, peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let tid = h.tid();
    build(Class::Indication, Method::SEND, tid, |e| {
        e.xor_address(attr::XOR_PEER_ADDRESS, &peer).unwrap();
        e.attr(attr::DATA, data).unwrap();
    })
}

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

#[test]
fn channel_bind_and_channel_data_both_ways() {
    let mut h = Harness::new(config());
    let ft = client_ft(40040);
    let (creds, relay) = h.allocate(ft, "alice", "wonderland");
    let peer = peer4(9, 6000);
    for (ch, code) in [(0x3FFF, 400), (0x7FFF, 400), (0x8000, 400)] {
        assert_eq!(error_code(&h.channel_bind(ft, &creds, ch, peer)), code);
    }
    let resp = h.auth_request(ft, Method::CHANNEL_BIND, &creds, |e| {
        e.channel_number(0x4001).unwrap();
    });
    assert_eq!(error_code(&resp), 400);
    let resp = h.channel_bind(ft, &creds, 0x4001, peer);
    assert!(is_success(&resp));
    verify(&Message::parse(&resp).unwrap(), &creds);
    assert_eq!(h.server.stats().channels, 1);
    assert_eq!(
        h.server.stats().permissions,
        1,
        "ChannelBind installs a permission"
    );

    let mut buf = [0u8; 64];
    let n = ChannelData {
        channel: 0x4001,
        data: b"to peer",
    }
    .encode(&mut buf, false)
    .unwrap();
    let out = h.send(ft, &buf[..n]);
    assert_eq!(
        out[0].destination,
        Destination::Peer {
            relay,
            peer,
            dont_fragment: false
        }
    );
    assert_eq!(out[0].payload, b"to peer");

    let out = h.peer(relay, peer, b"to client");
    let cd = ChannelData::parse(&out[0].payload).unwrap();
    assert_eq!((cd.channel, cd.data), (0x4001, &b"to client"[..]));
    assert_eq!(out[0].payload.len(), 4 + 9, "no padding over UDP");

    // Unbound channel number: dropped.
    let n = ChannelData {
        channel: 0x4002,
        data: b"x",
    }
    .encode(&mut buf, false)
    .unwrap();
    assert!(h.send(ft, &buf[..n]).is_empty());

    // Rebinding rules.
    assert_eq!(
        error_code(&h.channel_bind(ft, &creds, 0x4001, peer4(9, 6001))),
        400
    );
    assert_eq!(error_code(&h.channel_bind(ft, &creds, 0x4002, peer)), 400);
    assert!(
        is_success(&h.channel_bind(ft, &creds, 0x4001, peer)),
        "refresh of the same binding"
    );

    let stats = h.server.stats();
    assert_eq!((stats.packets_to_peers, stats.bytes_to_peers), (1, 7));
    assert_eq!((stats.packets_from_peers, stats.bytes_from_peers), (1, 9));
}

#[test]
fn channel_data_over_tcp_is_padded() {
    let mut h = Harness::new(config());
    let mut ft = client_ft(40041);
    ft.transport = Transport::Tcp;
    let (creds, relay) = h.allocate(ft, "alice", "wonderland");
    let peer = peer4(10, 6000);
    assert!(is_success(&h.channel_bind(ft, &creds, 0x4abc, peer)));
    let out = h.peer(relay, peer, b"12345");
    assert_eq!(out[0].payload.len(), 12);
    assert_eq!(&out[0].payload[..4], &[0x4a, 0xbc, 0x00, 0x05]);
    // Padded input from a TCP client is accepted.
    let mut buf = [0u8; 16];
    let n = ChannelData {
        channel: 0x4abc,
        data: b"abc",
    }
    .encode(&mut buf, true)
    .unwrap();
    assert_eq!(n, 8);
    let out = h.send(ft, &buf[..n]);
    assert_eq!(out[0].payload, b"abc");
    // Closing the connection deletes the allocation.
    h.server.handle_connection_closed(h.now, ft, &mut h.binder);
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.binder.released, vec![relay]);
}

#[test]
fn channel_expiry_and_cooldown() {
    let mut h = Harness::new(config());
    let ft = client_ft(40042);
    let (creds, relay) = h.allocate(ft, "alice", "wonderland");
    let peer = peer4(11, 6000);
    assert!(is_success(&h.channel_bind(ft, &creds, 0x4000, peer)));
    // Keep the allocation and permission alive, let the channel lapse.
    h.run_timers_until(h.t0 + Duration::from_secs(290));
    h.create_permission(ft, &creds, &[peer]);
    h.auth_request(ft, Method::REFRESH, &creds, |e| {
        e.u32(attr::LIFETIME, 3600).unwrap();
    });
    h.run_timers_until(h.t0 + Duration::from_secs(580));
    h.create_permission(ft, &creds, &[peer]);
    h.run_timers_until(h.t0 + Duration::from_secs(601));
    // Expired channel: peer data arrives as a Data indication instead.
    let out = h.peer(relay, peer, b"x");
    assert_eq!(
        Message::parse(&out[0].payload).unwrap().method(),
        Method::DATA
    );
    // In cooldown the channel cannot go to another peer...
    assert_eq!(
        error_code(&h.channel_bind(ft, &creds, 0x4000, peer4(12, 1))),
        400
    );
    // ...but the same binding can be renewed.
    assert!(is_success(&h.channel_bind(ft, &creds, 0x4000, peer)));
    let out = h.peer(relay, peer, b"x");
    assert!(ChannelData::parse(&out[0].payload).is_ok());
}

#[test]
fn channel_number_reusable_after_cooldown() {
    let mut h = Harness::new(config());
    let ft = client_ft(40043);
    let (creds, _) = h.allocate(ft, "alice", "wonderland");
    h.auth_request(ft, Method::REFRESH, &creds, |e| {
        e.u32(attr::LIFETIME, 3600).unwrap();
    });
    assert!(is_success(&h.channel_bind(
        ft,
        &creds,
        0x4000,
        peer4(13, 1)
    )));
    h.run_timers_until(h.t0 + Duration::from_secs(600 + 300 + 1));
    assert_eq!(h.server.stats().channels, 0);
    assert!(is_success(&h.channel_bind(
        ft,
        &creds,
        0x4000,
        peer4(14, 1)
    )));
}

#[test]
fn channel_quota() {
    let mut c = config();
    c.max_channels = 2;
    let mut h = Harness::new(c);
    let ft = client_ft(40044);
    let (creds, _) = h.allocate(ft, "alice", "wonderland");
    assert!(is_success(&h.channel_bind(ft, &creds, 0x4000, peer4(1, 1))));
    assert!(is_success(&h.channel_bind(ft, &creds, 0x4001, peer4(2, 1))));
    assert_eq!(
        error_code(&h.channel_bind(ft, &creds, 0x4002, peer4(3, 1))),
        508
    );
}

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
