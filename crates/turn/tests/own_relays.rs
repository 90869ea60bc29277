//! This server's own live relayed addresses as peers (`tsunagi_turn::relays`): two
//! clients of one call relayed by one server, on a loopback or private relay address
//! and without allow-loopback-peers, reach each other's relayed address exactly, in
//! both directions, and nothing else on that IP. With several servers (one per worker)
//! sharing a `RelayDirectory`, the same holds across servers. Virtual clock, no sockets.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use tsunagi_stun::attr;
use tsunagi_stun::{ChannelData, Class, Message, Method};
use tsunagi_turn::policy::Denied;
use tsunagi_turn::relays::RelayDirectory;
use tsunagi_turn::{Destination, Event, FiveTuple, Transmit};

const LOOPBACK_PHRASE: &str =
    "Forbidden: no live relay of this server has this port; allow every port with allow-loopback-peers or allowed-peer-ip";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A harness whose relays are bound on `relay_ip`, ports from `first_port`.
fn harness(relay_ip: &str, first_port: u16) -> Harness {
    let mut h = Harness::new(config());
    h.binder.v4 = Some(ip(relay_ip));
    h.binder.next_port = first_port;
    h
}

fn send_indication(h: &mut Harness, ft: FiveTuple, peer: SocketAddr, data: &[u8]) -> Vec<Transmit> {
    let tid = h.tid();
    let ind = build(Class::Indication, Method::SEND, tid, |e| {
        e.xor_address(attr::XOR_PEER_ADDRESS, &peer).unwrap();
        e.attr(attr::DATA, data).unwrap();
    });
    h.send(ft, &ind)
}

fn channel_data(ch: u16, data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 4 + data.len() + 4];
    let n = ChannelData { channel: ch, data }
        .encode(&mut buf, false)
        .unwrap();
    buf.truncate(n);
    buf
}

fn to_peer(relay: SocketAddr, peer: SocketAddr) -> Destination {
    Destination::Peer {
        relay,
        peer,
        dont_fragment: false,
    }
}

/// `(peer, category, config_key)` of every PeerDenied event queued.
fn denials(h: &mut Harness) -> Vec<(IpAddr, &'static str, &'static str)> {
    h.events()
        .into_iter()
        .filter_map(|e| match e {
            Event::PeerDenied {
                peer,
                category,
                config_key,
                ..
            } => Some((peer, category, config_key)),
            _ => None,
        })
        .collect()
}

/// The payload of the Data indication in `out`, sent to `ft`, from `peer`.
fn data_indication(out: &[Transmit], ft: FiveTuple, peer: SocketAddr) -> Vec<u8> {
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].destination, Destination::Client(ft));
    let m = Message::parse(&out[0].payload).unwrap();
    assert_eq!((m.class(), m.method()), (Class::Indication, Method::DATA));
    assert_eq!(
        m.get_xor_address(attr::XOR_PEER_ADDRESS).unwrap(),
        Some(peer)
    );
    m.get(attr::DATA).unwrap().to_vec()
}

fn delete(h: &mut Harness, ft: FiveTuple, creds: &Creds) {
    let resp = h.auth_request(ft, Method::REFRESH, creds, |e| {
        e.u32(attr::LIFETIME, 0).unwrap();
    });
    assert!(is_success(&resp));
}

#[test]
fn relays_of_one_server_reach_each_other_on_a_loopback_relay_ip() {
    let mut h = harness("127.0.0.1", 50000);
    assert!(!h.server.config().peer_policy.allow_loopback);
    let (fa, fb) = (client_ft(42000), client_ft(42001));
    let (ca, ra) = h.allocate(fa, "alice", "wonderland");
    let (cb, rb) = h.allocate(fb, "bob", "builder");
    let not_live = addr("127.0.0.1:50100");

    // CreatePermission: the other relay is allowed; another port of the relay IP, and
    // another loopback IP, are refused as before, the first with its own phrase.
    assert!(is_success(&h.create_permission(fa, &ca, &[rb])));
    assert_eq!(h.server.stats().permissions, 1);
    let resp = h.create_permission(fa, &ca, &[not_live]);
    assert_eq!(error_code(&resp), 403);
    assert_eq!(reason(&resp), LOOPBACK_PHRASE);
    let resp = h.create_permission(fa, &ca, &[addr("127.0.0.2:50001")]);
    assert_eq!(error_code(&resp), 403);
    assert_eq!(
        reason(&resp),
        "Forbidden: peer address is loopback; allow it with allow-loopback-peers or allowed-peer-ip"
    );
    // All or nothing: a live relay named with a refused port installs nothing more.
    assert_eq!(
        error_code(&h.create_permission(fa, &ca, &[rb, not_live])),
        403
    );
    assert_eq!(
        denials(&mut h),
        vec![
            (ip("127.0.0.1"), Denied::NOT_A_RELAY, "allow-loopback-peers"),
            (ip("127.0.0.2"), "loopback", "allow-loopback-peers"),
            (ip("127.0.0.1"), Denied::NOT_A_RELAY, "allow-loopback-peers"),
        ]
    );

    // A → B: relayed from A's relay to B's. B has no permission for A yet: dropped.
    let out = send_indication(&mut h, fa, rb, b"offer");
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].destination, &out[0].payload[..]),
        (to_peer(ra, rb), &b"offer"[..])
    );
    assert!(h.peer(rb, ra, b"offer").is_empty());
    assert_eq!(h.server.stats().dropped_no_permission, 1);
    assert!(is_success(&h.create_permission(fb, &cb, &[ra])));
    assert_eq!(data_indication(&h.peer(rb, ra, b"offer"), fb, ra), b"offer");
    // B → A.
    let out = send_indication(&mut h, fb, ra, b"answer");
    assert_eq!(out[0].destination, to_peer(rb, ra));
    assert_eq!(
        data_indication(&h.peer(ra, rb, b"answer"), fa, rb),
        b"answer"
    );

    // Only the live relays pass on that IP: not to another port (dropped, reported
    // once), not from another port (dropped as without a permission).
    for _ in 0..2 {
        assert!(send_indication(&mut h, fa, not_live, b"ssrf").is_empty());
    }
    assert_eq!(
        denials(&mut h),
        vec![(ip("127.0.0.1"), Denied::NOT_A_RELAY, "allow-loopback-peers")]
    );
    assert!(h.peer(ra, not_live, b"spoof").is_empty());
    let mut buf = [0u8; 128];
    assert!(h
        .server
        .handle_peer_into(h.now, ra, not_live, b"spoof", &mut buf)
        .is_none());
    let stats = h.server.stats();
    assert_eq!(stats.dropped_peer_denied, 2);
    assert_eq!(stats.dropped_no_permission, 3);

    // Channels: bound to the relay; another port gets 403 with the same phrase.
    assert!(is_success(&h.channel_bind(fa, &ca, 0x4000, rb)));
    let resp = h.channel_bind(fa, &ca, 0x4001, not_live);
    assert_eq!(error_code(&resp), 403);
    assert_eq!(reason(&resp), LOOPBACK_PHRASE);
    assert!(is_success(&h.channel_bind(fb, &cb, 0x4005, ra)));
    let cd = channel_data(0x4000, b"rtp");
    let out = h.send(fa, &cd);
    assert_eq!(
        (out[0].destination, &out[0].payload[..]),
        (to_peer(ra, rb), &b"rtp"[..])
    );
    let (dest, range) = h
        .server
        .handle_client_relay(h.now, fa, &cd, &mut h.binder)
        .unwrap();
    assert_eq!((dest, range), (to_peer(ra, rb), 4..7));
    let out = h.peer(rb, ra, b"rtp");
    let got = ChannelData::parse(&out[0].payload).unwrap();
    assert_eq!((got.channel, got.data), (0x4005, &b"rtp"[..]));

    // B's allocation ends: its address is no relay any more. A's channel and
    // permission stay, but reach nothing; a refresh of the permission is refused.
    delete(&mut h, fb, &cb);
    let before = h.server.stats().dropped_peer_denied;
    assert!(h.send(fa, &cd).is_empty());
    assert!(h
        .server
        .handle_client_relay(h.now, fa, &cd, &mut h.binder)
        .is_none());
    assert!(send_indication(&mut h, fa, rb, b"late").is_empty());
    assert_eq!(h.server.stats().dropped_peer_denied, before + 3);
    let resp = h.create_permission(fa, &ca, &[rb]);
    assert_eq!(error_code(&resp), 403);
    assert_eq!(reason(&resp), LOOPBACK_PHRASE);

    // A new allocation on that port is a live relay again.
    h.binder.next_port = rb.port();
    let fc = client_ft(42002);
    let (_, rc) = h.allocate(fc, "bob", "builder");
    assert_eq!(rc, rb);
    assert!(is_success(&h.create_permission(fa, &ca, &[rc])));
    assert_eq!(h.send(fa, &cd)[0].destination, to_peer(ra, rc));
}

#[test]
fn private_relay_ip_and_reserved_ports() {
    let mut h = harness("10.0.0.5", 50001);
    let fa = client_ft(42010);
    let creds = h.challenge(fa, "alice", "wonderland");
    // EVEN-PORT with R: the odd port is bound, reserved, and not a live relay yet.
    let resp = h.auth_request(fa, Method::ALLOCATE, &creds, |e| {
        e.requested_transport(attr::PROTO_UDP).unwrap();
        e.even_port(true).unwrap();
    });
    let m = Message::parse(&resp).unwrap();
    let ra = m
        .get_xor_address(attr::XOR_RELAYED_ADDRESS)
        .unwrap()
        .unwrap();
    let token: [u8; 8] = m.get(attr::RESERVATION_TOKEN).unwrap().try_into().unwrap();
    let odd = SocketAddr::new(ra.ip(), ra.port() + 1);
    assert!(h.binder.bound.contains(&odd));
    let resp = h.create_permission(fa, &creds, &[odd]);
    assert_eq!(error_code(&resp), 403);
    assert_eq!(
        reason(&resp),
        "Forbidden: no live relay of this server has this port; allow every port with allowed-peer-ip"
    );
    assert_eq!(
        denials(&mut h),
        vec![(ip("10.0.0.5"), Denied::NOT_A_RELAY, "allowed-peer-ip")]
    );
    // Another private address keeps its usual refusal.
    let resp = h.create_permission(fa, &creds, &[addr("10.0.0.6:50002")]);
    assert!(reason(&resp).contains("private"), "{}", reason(&resp));

    // The reservation is claimed: now it is a live relay.
    let fb = client_ft(42011);
    let cb = h.challenge(fb, "bob", "builder");
    let resp = h.auth_request(fb, Method::ALLOCATE, &cb, |e| {
        e.requested_transport(attr::PROTO_UDP).unwrap();
        e.attr(attr::RESERVATION_TOKEN, &token).unwrap();
    });
    let rb = Message::parse(&resp)
        .unwrap()
        .get_xor_address(attr::XOR_RELAYED_ADDRESS)
        .unwrap()
        .unwrap();
    assert_eq!(rb, odd);
    assert!(is_success(&h.channel_bind(fa, &creds, 0x4000, rb)));
    assert!(is_success(&h.channel_bind(fb, &cb, 0x4000, ra)));
    let out = h.send(fa, &channel_data(0x4000, b"x"));
    assert_eq!(out[0].destination, to_peer(ra, rb));
    let out = h.peer(rb, ra, b"x");
    assert_eq!(out[0].destination, Destination::Client(fb));
    // Another port of the private relay IP: 403 on ChannelBind, dropped as data.
    let resp = h.channel_bind(fa, &creds, 0x4001, addr("10.0.0.5:22"));
    assert_eq!(error_code(&resp), 403);
    assert!(send_indication(&mut h, fa, addr("10.0.0.5:22"), b"x").is_empty());
    assert!(h.peer(ra, addr("10.0.0.5:22"), b"x").is_empty());
}

#[test]
fn ipv6_relays_reach_each_other() {
    // The harness's IPv6 relay address is a documentation address (2001:db8::/32),
    // refused as a peer by default.
    let mut h = Harness::new(config());
    let mut relays = Vec::new();
    let mut clients = Vec::new();
    for (port, user, pw) in [(42020, "alice", "wonderland"), (42021, "bob", "builder")] {
        let ft = client_ft(port);
        let creds = h.challenge(ft, user, pw);
        let resp = h.auth_request(ft, Method::ALLOCATE, &creds, |e| {
            e.requested_transport(attr::PROTO_UDP).unwrap();
            e.address_family(attr::REQUESTED_ADDRESS_FAMILY, attr::FAMILY_IPV6)
                .unwrap();
        });
        let relay = Message::parse(&resp)
            .unwrap()
            .get_xor_address(attr::XOR_RELAYED_ADDRESS)
            .unwrap()
            .unwrap();
        assert!(relay.is_ipv6());
        relays.push(relay);
        clients.push((ft, creds));
    }
    let other = SocketAddr::new(relays[1].ip(), relays[1].port() + 7);
    let ((fa, ca), (fb, cb)) = (clients[0].clone(), clients[1].clone());
    assert_eq!(error_code(&h.create_permission(fa, &ca, &[other])), 403);
    assert!(is_success(&h.create_permission(fa, &ca, &[relays[1]])));
    assert!(is_success(&h.create_permission(fb, &cb, &[relays[0]])));
    let out = send_indication(&mut h, fa, relays[1], b"v6");
    assert_eq!(out[0].destination, to_peer(relays[0], relays[1]));
    assert_eq!(
        data_indication(&h.peer(relays[1], relays[0], b"v6"), fb, relays[0]),
        b"v6"
    );
    assert!(send_indication(&mut h, fa, other, b"v6").is_empty());
}

#[test]
fn servers_sharing_a_directory_reach_each_others_relays() {
    // Two workers: each its own server and relay sockets, one directory.
    let dir = RelayDirectory::new(&[ip("127.0.0.1")]);
    let mut w1 = harness("127.0.0.1", 50000);
    let mut w2 = harness("127.0.0.1", 55000);
    w1.server.share_relays(dir.clone());
    let (fa, fb) = (client_ft(42030), client_ft(42031));
    let (ca, ra) = w1.allocate(fa, "alice", "wonderland");
    let (cb, rb) = w2.allocate(fb, "bob", "builder");
    // w2 shares after its allocation exists: it is marked then.
    assert!(!dir.contains(rb));
    w2.server.share_relays(dir.clone());
    assert!(dir.contains(ra) && dir.contains(rb));
    assert_eq!(dir.len(), 2);

    assert!(is_success(&w1.create_permission(fa, &ca, &[rb])));
    assert!(is_success(&w2.create_permission(fb, &cb, &[ra])));
    assert!(is_success(&w1.channel_bind(fa, &ca, 0x4000, rb)));
    // A's packet leaves w1 from A's relay to B's, and arrives at w2 from A's relay.
    let out = w1.send(fa, &channel_data(0x4000, b"media"));
    assert_eq!(out[0].destination, to_peer(ra, rb));
    assert_eq!(
        data_indication(&w2.peer(rb, ra, b"media"), fb, ra),
        b"media"
    );
    let out = send_indication(&mut w2, fb, ra, b"back");
    assert_eq!(out[0].destination, to_peer(rb, ra));
    let out = w1.peer(ra, rb, b"back");
    let cd = ChannelData::parse(&out[0].payload).unwrap();
    assert_eq!((cd.channel, cd.data), (0x4000, &b"back"[..]));

    // Another port of the IP stays refused on both servers.
    let not_live = SocketAddr::new(rb.ip(), rb.port() + 1);
    assert_eq!(error_code(&w1.create_permission(fa, &ca, &[not_live])), 403);
    assert!(send_indication(&mut w1, fa, not_live, b"x").is_empty());
    assert!(w2.peer(rb, not_live, b"x").is_empty());

    // A server that does not share the directory knows only its own relays.
    let mut alone = harness("127.0.0.1", 58000);
    let fc = client_ft(42032);
    let (cc, _) = alone.allocate(fc, "alice", "wonderland");
    assert_eq!(error_code(&alone.create_permission(fc, &cc, &[rb])), 403);

    // B's allocation expires on w2: w1 no longer relays to its address.
    w2.run_timers_until(w2.t0 + Duration::from_secs(700));
    assert_eq!(w2.server.allocation_count(), 0);
    assert!(!dir.contains(rb));
    let before = w1.server.stats().dropped_peer_denied;
    assert!(w1.send(fa, &channel_data(0x4000, b"late")).is_empty());
    assert_eq!(w1.server.stats().dropped_peer_denied, before + 1);

    // A server that goes away takes its relays out of the directory.
    let (_, rd) = w2.allocate(client_ft(42033), "bob", "builder");
    assert!(dir.contains(rd));
    drop(w2);
    assert!(!dir.contains(rd));
    assert!(dir.contains(ra));
    assert_eq!(dir.len(), 1);
}

#[test]
fn allowed_relay_ips_reach_every_port_as_before() {
    let mut c = config();
    c.peer_policy.allow_loopback = true;
    let mut h = Harness::new(c);
    h.binder.v4 = Some(ip("127.0.0.1"));
    let fa = client_ft(42040);
    let (ca, ra) = h.allocate(fa, "alice", "wonderland");
    let any = addr("127.0.0.1:9");
    assert!(is_success(&h.create_permission(fa, &ca, &[any])));
    let out = send_indication(&mut h, fa, any, b"x");
    assert_eq!(out[0].destination, to_peer(ra, any));
    assert_eq!(data_indication(&h.peer(ra, any, b"y"), fa, any), b"y");
    assert_eq!(h.server.stats().dropped_peer_denied, 0);
}

#[test]
fn one_permission_per_ip_named_twice() {
    let mut h = harness("127.0.0.1", 50000);
    let fa = client_ft(42050);
    let (ca, _) = h.allocate(fa, "alice", "wonderland");
    let (_, rb) = h.allocate(client_ft(42051), "bob", "builder");
    let (_, rc) = h.allocate(client_ft(42052), "bob", "builder");
    assert!(is_success(&h.create_permission(fa, &ca, &[rb, rc])));
    assert!(is_success(&h.create_permission(
        fa,
        &ca,
        &[peer4(7, 1), peer4(7, 2)]
    )));
    assert_eq!(h.server.stats().permissions, 2);
    // Both expire: the counter comes back to zero, not below.
    h.run_timers_until(h.t0 + Duration::from_secs(400));
    assert_eq!(h.server.stats().permissions, 0);
}
