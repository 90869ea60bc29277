//! `PeerPolicy::allowed_endpoints`: exact addresses (this server's SFU) that the relay
//! reaches even though their IP is refused, while every other port of that IP stays
//! refused on each path the runtime relays through, both ways. Virtual clock, no
//! sockets.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tsunagi_stun::attr;
use tsunagi_stun::{ChannelData, Class, Message, Method};
use tsunagi_turn::policy::Denied;
use tsunagi_turn::{Destination, Event, FiveTuple, ServerConfig, Transmit};

const SFU: &str = "127.0.0.1:7882";
const OTHER_PORT: &str = "127.0.0.1:7883";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn config_with(endpoints: &[&str]) -> ServerConfig {
    let mut c = config();
    c.peer_policy.allowed_endpoints = endpoints.iter().map(|e| addr(e)).collect();
    c
}

fn send_indication(h: &mut Harness, peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let tid = h.tid();
    build(Class::Indication, Method::SEND, tid, |e| {
        e.xor_address(attr::XOR_PEER_ADDRESS, &peer).unwrap();
        e.attr(attr::DATA, data).unwrap();
    })
}

/// A Send indication through `handle_client`; the transmits it queued.
fn send(h: &mut Harness, ft: FiveTuple, peer: SocketAddr, data: &[u8]) -> Vec<Transmit> {
    let ind = send_indication(h, peer, data);
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
fn denials(h: &mut Harness) -> Vec<(std::net::IpAddr, &'static str, &'static str)> {
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

/// Relays `bytes` through the runtime's fast path; STUN falls back to the queue.
fn fast(h: &mut Harness, ft: FiveTuple, bytes: &[u8]) -> Option<Destination> {
    h.server
        .handle_client_relay(h.now, ft, bytes, &mut h.binder)
        .map(|(dest, range)| {
            assert_eq!(range, 4..bytes.len(), "the data follows the header");
            dest
        })
}

#[test]
fn loopback_sfu_endpoint_is_reached_and_its_other_ports_are_not() {
    let mut h = Harness::new(config_with(&[SFU]));
    let ft = client_ft(41000);
    let (creds, relay) = h.allocate(ft, "alice", "wonderland");
    let (sfu, other) = (addr(SFU), addr(OTHER_PORT));

    // A permission is per IP: granted for the endpoint's IP, whatever port is named.
    assert!(is_success(&h.create_permission(ft, &creds, &[other])));
    assert_eq!(h.server.stats().permissions, 1);
    // Other loopback IPs keep the usual refusal and phrase.
    let resp = h.create_permission(ft, &creds, &[addr("127.0.0.2:7882")]);
    assert_eq!(error_code(&resp), 403);
    assert_eq!(
        reason(&resp),
        "Forbidden: peer address is loopback; allow it with allow-loopback-peers or allowed-peer-ip"
    );
    assert_eq!(
        denials(&mut h),
        vec![(
            "127.0.0.2".parse().unwrap(),
            "loopback",
            "allow-loopback-peers"
        )]
    );

    // Send indication (queued path and the runtime's relay entry): the endpoint is
    // relayed to, the other port is dropped.
    let out = send(&mut h, ft, sfu, b"offer");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].destination, to_peer(relay, sfu));
    assert_eq!(out[0].payload, b"offer");
    let ind = send_indication(&mut h, other, b"ssrf");
    assert!(h.send(ft, &ind).is_empty());
    assert!(fast(&mut h, ft, &ind).is_none());
    assert!(h.drain().is_empty(), "nothing queued for the other port");
    let stats = h.server.stats();
    assert_eq!(stats.dropped_peer_denied, 2);
    assert_eq!((stats.packets_to_peers, stats.bytes_to_peers), (1, 5));
    // Reported once for the permission, not per packet.
    assert_eq!(
        denials(&mut h),
        vec![(
            "127.0.0.1".parse().unwrap(),
            Denied::OUTSIDE_ENDPOINTS,
            "allow-loopback-peers"
        )]
    );
    assert_eq!(stats.peers_denied, 2, "127.0.0.2 and one data report");

    // Inbound from the SFU works with the permission as usual.
    let out = h.peer(relay, sfu, b"answer");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].destination, Destination::Client(ft));
    let m = Message::parse(&out[0].payload).unwrap();
    assert_eq!((m.class(), m.method()), (Class::Indication, Method::DATA));
    assert_eq!(m.get(attr::DATA), Some(&b"answer"[..]));
    // The permission covers the endpoint only: another port of its IP gets nothing
    // through, in this direction either.
    let before = h.server.stats().dropped_no_permission;
    assert!(h.peer(relay, other, b"spoof").is_empty());
    assert_eq!(h.server.stats().dropped_no_permission, before + 1);

    // ChannelBind: the other port is refused with a phrase naming what to set,
    // the endpoint is bound.
    let resp = h.channel_bind(ft, &creds, 0x4001, other);
    assert_eq!(error_code(&resp), 403);
    verify(&Message::parse(&resp).unwrap(), &creds);
    assert_eq!(
        reason(&resp),
        "Forbidden: this port is not an allowed endpoint of the peer IP; allow every port with allow-loopback-peers or allowed-peer-ip"
    );
    assert_eq!(
        denials(&mut h),
        vec![(
            "127.0.0.1".parse().unwrap(),
            Denied::OUTSIDE_ENDPOINTS,
            "allow-loopback-peers"
        )]
    );
    assert!(is_success(&h.channel_bind(ft, &creds, 0x4000, sfu)));
    assert_eq!(h.server.stats().channels, 1);

    // ChannelData on the bound channel: relayed on the queued and the fast path.
    let cd = channel_data(0x4000, b"rtp");
    let out = h.send(ft, &cd);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].destination, &out[0].payload[..]),
        (to_peer(relay, sfu), &b"rtp"[..])
    );
    assert_eq!(fast(&mut h, ft, &cd), Some(to_peer(relay, sfu)));
    // On the refused channel number: nothing is bound, nothing is sent.
    let before = h.server.stats().dropped_invalid;
    let cd = channel_data(0x4001, b"rtp");
    assert!(h.send(ft, &cd).is_empty());
    assert!(fast(&mut h, ft, &cd).is_none());
    assert!(h.drain().is_empty());
    assert_eq!(h.server.stats().dropped_invalid, before + 2);

    // The SFU answers on the channel, through the runtime's in-place path too.
    let out = h.peer(relay, sfu, b"rtcp");
    let cd = ChannelData::parse(&out[0].payload).unwrap();
    assert_eq!((cd.channel, cd.data), (0x4000, &b"rtcp"[..]));
    let mut buf = [0u8; 64];
    let (dest, n) = h
        .server
        .handle_peer_into(h.now, relay, sfu, b"rtcp", &mut buf)
        .unwrap();
    assert_eq!(
        (dest, &buf[..n]),
        (Destination::Client(ft), &out[0].payload[..])
    );

    // A Send indication to the other port is still dropped with a channel bound,
    // and still reported only once.
    let ind = send_indication(&mut h, other, b"ssrf");
    assert!(h.send(ft, &ind).is_empty());
    let stats = h.server.stats();
    assert_eq!(stats.dropped_peer_denied, 3);
    assert_eq!((stats.packets_to_peers, stats.bytes_to_peers), (3, 11));
    assert!(denials(&mut h).is_empty());
}

#[test]
fn the_report_is_once_per_permission() {
    let mut h = Harness::new(config_with(&[SFU]));
    let ft = client_ft(41001);
    let (creds, _) = h.allocate(ft, "alice", "wonderland");
    let other = addr(OTHER_PORT);
    assert!(is_success(&h.create_permission(ft, &creds, &[other])));
    for _ in 0..3 {
        let ind = send_indication(&mut h, other, b"x");
        assert!(h.send(ft, &ind).is_empty());
    }
    assert_eq!(denials(&mut h).len(), 1);

    // A refresh keeps the permission, and so its report.
    h.run_timers_until(h.t0 + Duration::from_secs(200));
    assert!(is_success(&h.create_permission(ft, &creds, &[other])));
    let ind = send_indication(&mut h, other, b"x");
    assert!(h.send(ft, &ind).is_empty());
    assert!(denials(&mut h).is_empty());

    // Once it has expired, a new permission reports again.
    h.run_timers_until(h.t0 + Duration::from_secs(550));
    assert_eq!(h.server.allocation_count(), 1);
    assert_eq!(h.server.stats().permissions, 0);
    let ind = send_indication(&mut h, other, b"x");
    assert!(h.send(ft, &ind).is_empty());
    assert!(
        denials(&mut h).is_empty(),
        "no permission: not an endpoint denial"
    );
    assert!(is_success(&h.create_permission(ft, &creds, &[other])));
    let ind = send_indication(&mut h, other, b"x");
    assert!(h.send(ft, &ind).is_empty());
    assert_eq!(denials(&mut h).len(), 1);
    let stats = h.server.stats();
    assert_eq!(stats.dropped_peer_denied, 5);
    assert_eq!(stats.dropped_no_permission, 1);
}

#[test]
fn private_lan_endpoint_is_reached_and_the_rest_of_the_lan_is_not() {
    let mut h = Harness::new(config_with(&["10.1.2.3:7882"]));
    let ft = client_ft(41002);
    let (creds, relay) = h.allocate(ft, "alice", "wonderland");
    let sfu = addr("10.1.2.3:7882");

    let resp = h.create_permission(ft, &creds, &[addr("10.1.2.4:7882")]);
    assert_eq!(error_code(&resp), 403);
    assert!(reason(&resp).contains("private"), "{}", reason(&resp));
    assert!(is_success(&h.create_permission(ft, &creds, &[sfu])));

    let out = send(&mut h, ft, sfu, b"x");
    assert_eq!(out[0].destination, to_peer(relay, sfu));
    for port in [22, 6379, 7883] {
        let ind = send_indication(&mut h, addr(&format!("10.1.2.3:{port}")), b"x");
        assert!(h.send(ft, &ind).is_empty(), "{port}");
    }
    assert_eq!(h.server.stats().dropped_peer_denied, 3);

    let resp = h.channel_bind(ft, &creds, 0x4000, addr("10.1.2.3:22"));
    assert_eq!(error_code(&resp), 403);
    assert_eq!(
        reason(&resp),
        "Forbidden: this port is not an allowed endpoint of the peer IP; allow every port with allowed-peer-ip"
    );
    let resp = h.channel_bind(ft, &creds, 0x4000, addr("10.1.2.4:7882"));
    assert_eq!(error_code(&resp), 403);
    assert!(is_success(&h.channel_bind(ft, &creds, 0x4000, sfu)));
    assert_eq!(
        fast(&mut h, ft, &channel_data(0x4000, b"rtp")),
        Some(to_peer(relay, sfu))
    );
}

#[test]
fn ipv6_unique_local_endpoint() {
    let mut h = Harness::new(config_with(&["[fd00::5]:7882"]));
    let ft = client_ft(41003);
    let creds = h.challenge(ft, "alice", "wonderland");
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
    let sfu = addr("[fd00::5]:7882");
    assert!(is_success(&h.channel_bind(ft, &creds, 0x4000, sfu)));
    assert_eq!(
        error_code(&h.channel_bind(ft, &creds, 0x4001, addr("[fd00::5]:7883"))),
        403
    );
    assert_eq!(
        error_code(&h.create_permission(ft, &creds, &[addr("[fd00::6]:7882")])),
        403
    );
    let out = send(&mut h, ft, sfu, b"x");
    assert_eq!(out[0].destination, to_peer(relay, sfu));
    let ind = send_indication(&mut h, addr("[fd00::5]:7883"), b"x");
    assert!(h.send(ft, &ind).is_empty());
    assert_eq!(h.server.stats().dropped_peer_denied, 1);
}

#[test]
fn an_ip_allowed_in_general_reaches_every_port_even_with_endpoints_on_it() {
    // The harness allows 198.51.100.0/24; an endpoint on it narrows nothing.
    let mut h = Harness::new(config_with(&["198.51.100.7:7882", SFU]));
    let ft = client_ft(41004);
    let (creds, relay) = h.allocate(ft, "alice", "wonderland");
    assert!(is_success(&h.channel_bind(
        ft,
        &creds,
        0x4000,
        peer4(7, 7883)
    )));
    let out = send(&mut h, ft, peer4(7, 22), b"x");
    assert_eq!(out[0].destination, to_peer(relay, peer4(7, 22)));
    assert_eq!(
        fast(&mut h, ft, &channel_data(0x4000, b"x")),
        Some(to_peer(relay, peer4(7, 7883)))
    );
    assert_eq!(h.server.stats().dropped_peer_denied, 0);
}

#[test]
fn without_allowed_endpoints_nothing_changes() {
    let mut h = Harness::new(config());
    assert!(h.server.config().peer_policy.allowed_endpoints.is_empty());
    let ft = client_ft(41005);
    let (creds, relay) = h.allocate(ft, "alice", "wonderland");
    for peer in [SFU, OTHER_PORT] {
        let resp = h.create_permission(ft, &creds, &[addr(peer)]);
        assert_eq!(error_code(&resp), 403);
        assert_eq!(
            reason(&resp),
            "Forbidden: peer address is loopback; allow it with allow-loopback-peers or allowed-peer-ip"
        );
        let resp = h.channel_bind(ft, &creds, 0x4000, addr(peer));
        assert_eq!(error_code(&resp), 403);
        let ind = send_indication(&mut h, addr(peer), b"x");
        assert!(h.send(ft, &ind).is_empty());
    }
    assert_eq!(
        denials(&mut h),
        vec![
            (
                "127.0.0.1".parse().unwrap(),
                "loopback",
                "allow-loopback-peers"
            );
            4
        ]
    );
    // Allowed peers: every port, as before.
    assert!(is_success(&h.create_permission(ft, &creds, &[peer4(9, 1)])));
    for port in [1, 7882, 7883] {
        let out = send(&mut h, ft, peer4(9, port), b"x");
        assert_eq!(out[0].destination, to_peer(relay, peer4(9, port)));
    }
    let stats = h.server.stats();
    assert_eq!(stats.dropped_peer_denied, 0);
    assert_eq!(stats.dropped_no_permission, 2);
    assert_eq!(stats.peers_denied, 4);
}

#[test]
fn wildcard_endpoint_opens_nothing() {
    // A wildcard bind address is not an endpoint clients can be sent to.
    let mut h = Harness::new(config_with(&["0.0.0.0:7882"]));
    let ft = client_ft(41006);
    let (creds, _) = h.allocate(ft, "alice", "wonderland");
    for peer in ["0.0.0.0:7882", SFU] {
        assert_eq!(
            error_code(&h.create_permission(ft, &creds, &[addr(peer)])),
            403
        );
        assert_eq!(
            error_code(&h.channel_bind(ft, &creds, 0x4000, addr(peer))),
            403
        );
    }
}
