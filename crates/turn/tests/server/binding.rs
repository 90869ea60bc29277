//! STUN Binding, garbage, and unknown comprehension-required attributes.

use super::*;

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
