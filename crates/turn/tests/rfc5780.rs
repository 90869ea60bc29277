//! RFC 5780 NAT behaviour discovery in the sans-IO server: OTHER-ADDRESS,
//! RESPONSE-ORIGIN, CHANGE-REQUEST (two IPs and two ports, or one IP and two ports),
//! RESPONSE-PORT and PADDING, driven without sockets. The last test runs the RFC 5780
//! §4.3/§4.4 procedures through simulated NATs of every kind against the server.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use common::*;
use tsunagi_stun::attr;
use tsunagi_stun::{Class, Message, Method};
use tsunagi_turn::{Destination, DiscoveryAddresses, FiveTuple, Transmit, Transport};

const P1: u16 = 3478;
const P2: u16 = 3479;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Two IPs (192.0.2.1 and 192.0.2.2) and two ports.
fn two_ips() -> DiscoveryAddresses {
    DiscoveryAddresses {
        primary: SocketAddr::new(ip("192.0.2.1"), P1),
        alt_ip: Some(ip("192.0.2.2")),
        alt_port: P2,
    }
}

/// One IP and two ports: change-port only.
fn one_ip() -> DiscoveryAddresses {
    DiscoveryAddresses {
        alt_ip: None,
        ..two_ips()
    }
}

fn harness(groups: Vec<DiscoveryAddresses>) -> Harness {
    let mut c = config();
    c.discovery = groups;
    Harness::new(c)
}

fn ft_at(server: SocketAddr, transport: Transport) -> FiveTuple {
    FiveTuple {
        client: sa("203.0.113.5:40000"),
        server,
        transport,
    }
}

/// A Binding request with the RFC 5780 attributes `f` adds, and FINGERPRINT.
fn binding(h: &mut Harness, f: impl FnOnce(&mut tsunagi_stun::MessageEncoder<'_>)) -> Vec<u8> {
    let tid = h.tid();
    build(Class::Request, Method::BINDING, tid, |e| {
        f(e);
        e.fingerprint().unwrap();
    })
}

/// Sends `req` on `ft` and returns the one transmit it produces.
fn one(h: &mut Harness, ft: FiveTuple, req: &[u8]) -> Transmit {
    let out = h.send(ft, req);
    assert_eq!(out.len(), 1, "one response expected: {out:?}");
    out.into_iter().next().unwrap()
}

/// A RESPONSE-PORT value: the port and two reserved bytes.
fn response_port(port: u16) -> [u8; 4] {
    let p = port.to_be_bytes();
    [p[0], p[1], 0, 0]
}

fn addr(m: &Message<'_>, typ: u16) -> Option<SocketAddr> {
    m.get_address(typ).unwrap()
}

#[test]
fn other_address_and_response_origin_in_every_binding_response() {
    let g = two_ips();
    let mut h = harness(vec![g]);
    // A request on each of the four listeners names the opposite corner as OTHER-ADDRESS.
    let cases = [
        ("192.0.2.1:3478", "192.0.2.2:3479"),
        ("192.0.2.1:3479", "192.0.2.2:3478"),
        ("192.0.2.2:3478", "192.0.2.1:3479"),
        ("192.0.2.2:3479", "192.0.2.1:3478"),
    ];
    for (local, other) in cases {
        let ft = ft_at(sa(local), Transport::Udp);
        let req = binding(&mut h, |_| {});
        let t = one(&mut h, ft, &req);
        assert_eq!(t.destination, Destination::Client(ft), "no change asked");
        let m = Message::parse(&t.payload).unwrap();
        assert_eq!(m.class(), Class::Success);
        assert!(m.has_valid_fingerprint());
        assert_eq!(
            m.get_xor_address(attr::XOR_MAPPED_ADDRESS).unwrap(),
            Some(ft.client)
        );
        assert_eq!(addr(&m, attr::RESPONSE_ORIGIN), Some(sa(local)));
        assert_eq!(addr(&m, attr::OTHER_ADDRESS), Some(sa(other)), "{local}");
    }
}

#[test]
fn change_request_with_two_ips_answers_from_the_right_listener() {
    let mut h = harness(vec![two_ips()]);
    // (received on, change ip, change port) -> answered from
    let cases = [
        ("192.0.2.1:3478", false, true, "192.0.2.1:3479"),
        ("192.0.2.1:3478", true, false, "192.0.2.2:3478"),
        ("192.0.2.1:3478", true, true, "192.0.2.2:3479"),
        ("192.0.2.2:3479", true, true, "192.0.2.1:3478"),
        ("192.0.2.2:3479", false, true, "192.0.2.2:3478"),
        ("192.0.2.1:3479", true, false, "192.0.2.2:3479"),
        ("192.0.2.2:3478", true, false, "192.0.2.1:3478"),
    ];
    for (local, ci, cp, from) in cases {
        let ft = ft_at(sa(local), Transport::Udp);
        let req = binding(&mut h, |e| {
            e.change_request(ci, cp).unwrap();
        });
        let t = one(&mut h, ft, &req);
        assert_eq!(
            t.destination,
            Destination::ClientFrom {
                local: sa(from),
                client: ft.client
            },
            "{local} ip={ci} port={cp}"
        );
        let m = Message::parse(&t.payload).unwrap();
        assert_eq!(m.class(), Class::Success);
        assert!(m.has_valid_fingerprint());
        assert_eq!(
            addr(&m, attr::RESPONSE_ORIGIN),
            Some(sa(from)),
            "RESPONSE-ORIGIN is the source"
        );
        assert_eq!(
            addr(&m, attr::OTHER_ADDRESS),
            two_ips().other(sa(local)),
            "OTHER-ADDRESS is relative to where the request arrived"
        );
    }
}

#[test]
fn change_request_with_both_flags_clear_is_a_plain_binding() {
    // With or without discovery: some clients always send it (coturn answers too).
    for groups in [vec![], vec![two_ips()]] {
        let mut h = harness(groups);
        let ft = ft_at(sa("192.0.2.1:3478"), Transport::Udp);
        let req = binding(&mut h, |e| {
            e.change_request(false, false).unwrap();
        });
        let t = one(&mut h, ft, &req);
        assert_eq!(t.destination, Destination::Client(ft));
        assert!(is_success(&t.payload));
    }
}

#[test]
fn one_ip_and_two_ports_changes_the_port_and_refuses_the_ip() {
    let mut h = harness(vec![one_ip()]);
    let ft = ft_at(sa("192.0.2.1:3478"), Transport::Udp);
    let req = binding(&mut h, |_| {});
    let m_bytes = h.request(ft, &req);
    let m = Message::parse(&m_bytes).unwrap();
    assert_eq!(
        addr(&m, attr::OTHER_ADDRESS),
        Some(sa("192.0.2.1:3479")),
        "OTHER-ADDRESS has the same IP: a client sees that the IP cannot change"
    );

    let req = binding(&mut h, |e| {
        e.change_request(false, true).unwrap();
    });
    let t = one(&mut h, ft, &req);
    assert_eq!(
        t.destination,
        Destination::ClientFrom {
            local: sa("192.0.2.1:3479"),
            client: ft.client
        }
    );
    // From the alternate port, change-port goes back to the primary.
    let ft2 = ft_at(sa("192.0.2.1:3479"), Transport::Udp);
    let req = binding(&mut h, |e| {
        e.change_request(false, true).unwrap();
    });
    let t = one(&mut h, ft2, &req);
    assert_eq!(
        t.destination,
        Destination::ClientFrom {
            local: sa("192.0.2.1:3478"),
            client: ft.client
        }
    );

    for (ci, cp) in [(true, false), (true, true)] {
        let req = binding(&mut h, |e| {
            e.change_request(ci, cp).unwrap();
        });
        let resp = h.request(ft, &req);
        assert_eq!(error_code(&resp), 420);
        assert!(
            reason(&resp).contains("alt-listening-ip"),
            "{}",
            reason(&resp)
        );
        let m = Message::parse(&resp).unwrap();
        let unknown: Vec<u16> =
            attr::decode_unknown_attributes(m.get(attr::UNKNOWN_ATTRIBUTES).unwrap())
                .unwrap()
                .collect();
        assert_eq!(unknown, vec![attr::CHANGE_REQUEST]);
        assert!(m.has_valid_fingerprint());
    }
}

#[test]
fn without_discovery_change_request_and_response_port_are_unknown() {
    let mut h = harness(vec![]);
    let ft = ft_at(sa("192.0.2.1:3478"), Transport::Udp);
    let req = binding(&mut h, |_| {});
    let m_bytes = h.request(ft, &req);
    let m = Message::parse(&m_bytes).unwrap();
    assert_eq!(addr(&m, attr::OTHER_ADDRESS), None);
    assert_eq!(addr(&m, attr::RESPONSE_ORIGIN), Some(ft.server));

    let req = binding(&mut h, |e| {
        e.change_request(false, true).unwrap();
    });
    assert_eq!(error_code(&h.request(ft, &req)), 420);
    let req = binding(&mut h, |e| {
        e.attr(attr::RESPONSE_PORT, &response_port(40000)).unwrap();
    });
    let resp = h.request(ft, &req);
    assert_eq!(error_code(&resp), 420);
    let m = Message::parse(&resp).unwrap();
    let unknown: Vec<u16> =
        attr::decode_unknown_attributes(m.get(attr::UNKNOWN_ATTRIBUTES).unwrap())
            .unwrap()
            .collect();
    assert_eq!(unknown, vec![attr::RESPONSE_PORT]);
}

#[test]
fn a_listener_outside_the_group_has_no_other_address() {
    // Discovery on 192.0.2.1/.2; a request that reached 192.0.2.9 (another listening-ip).
    let mut h = harness(vec![two_ips()]);
    let ft = ft_at(sa("192.0.2.9:3478"), Transport::Udp);
    let req = binding(&mut h, |_| {});
    let m_bytes = h.request(ft, &req);
    let m = Message::parse(&m_bytes).unwrap();
    assert_eq!(addr(&m, attr::OTHER_ADDRESS), None);
    let req = binding(&mut h, |e| {
        e.change_request(true, true).unwrap();
    });
    assert_eq!(error_code(&h.request(ft, &req)), 420);
}

#[test]
fn response_port_sends_to_another_port_of_the_client() {
    let mut h = harness(vec![two_ips()]);
    let ft = ft_at(sa("192.0.2.1:3478"), Transport::Udp);
    let req = binding(&mut h, |e| {
        e.attr(attr::RESPONSE_PORT, &response_port(40001)).unwrap();
    });
    let t = one(&mut h, ft, &req);
    assert_eq!(
        t.destination,
        Destination::ClientFrom {
            local: ft.server,
            client: sa("203.0.113.5:40001")
        }
    );
    let m = Message::parse(&t.payload).unwrap();
    assert_eq!(
        m.get_xor_address(attr::XOR_MAPPED_ADDRESS).unwrap(),
        Some(ft.client),
        "the mapped address is still where the request came from"
    );

    // Together with CHANGE-REQUEST: both the source and the destination move.
    let req = binding(&mut h, |e| {
        e.change_request(true, true).unwrap();
        e.attr(attr::RESPONSE_PORT, &response_port(40002)).unwrap();
    });
    let t = one(&mut h, ft, &req);
    assert_eq!(
        t.destination,
        Destination::ClientFrom {
            local: sa("192.0.2.2:3479"),
            client: sa("203.0.113.5:40002")
        }
    );

    // Port 0 and a malformed value are refused.
    let req = binding(&mut h, |e| {
        e.attr(attr::RESPONSE_PORT, &[0, 0, 0, 0]).unwrap();
    });
    assert_eq!(error_code(&h.request(ft, &req)), 400);
    let req = binding(&mut h, |e| {
        e.attr(attr::RESPONSE_PORT, &[0x9c, 0x40]).unwrap();
    });
    assert_eq!(error_code(&h.request(ft, &req)), 400);
}

#[test]
fn padding_is_echoed_with_the_request_length() {
    let mut h = harness(vec![two_ips()]);
    let ft = ft_at(sa("192.0.2.1:3478"), Transport::Udp);
    for len in [4usize, 100, 1400] {
        let req = binding(&mut h, |e| {
            e.attr(attr::PADDING, &vec![0xAA; len]).unwrap();
        });
        let t = one(&mut h, ft, &req);
        let m = Message::parse(&t.payload).unwrap();
        assert_eq!(m.class(), Class::Success);
        assert_eq!(m.get(attr::PADDING).map(<[u8]>::len), Some(len));
        assert!(m.has_valid_fingerprint());
        assert!(
            t.payload.len() <= req.len() + 100,
            "no amplification: request {} bytes, response {}",
            req.len(),
            t.payload.len()
        );
    }
    // Without discovery, PADDING is still understood over UDP.
    let mut h = harness(vec![]);
    let req = binding(&mut h, |e| {
        e.attr(attr::PADDING, &[0; 64]).unwrap();
    });
    let t = one(&mut h, ft, &req);
    assert_eq!(
        Message::parse(&t.payload)
            .unwrap()
            .get(attr::PADDING)
            .map(<[u8]>::len),
        Some(64)
    );
}

#[test]
fn padding_with_response_port_is_refused() {
    let mut h = harness(vec![two_ips()]);
    let ft = ft_at(sa("192.0.2.1:3478"), Transport::Udp);
    let req = binding(&mut h, |e| {
        e.attr(attr::PADDING, &[0; 8]).unwrap();
        e.attr(attr::RESPONSE_PORT, &response_port(40000)).unwrap();
    });
    let resp = h.request(ft, &req);
    assert_eq!(error_code(&resp), 400);
    assert!(reason(&resp).contains("PADDING and RESPONSE-PORT"));
}

#[test]
fn over_tcp_the_discovery_attributes_are_refused_with_400() {
    let mut h = harness(vec![two_ips()]);
    for transport in [Transport::Tcp, Transport::Tls] {
        let ft = ft_at(sa("192.0.2.1:3478"), transport);
        // A plain Binding over TCP still names OTHER-ADDRESS (as coturn does).
        let req = binding(&mut h, |_| {});
        let resp = h.request(ft, &req);
        assert!(is_success(&resp));
        let req = binding(&mut h, |e| {
            e.change_request(true, false).unwrap();
        });
        assert_eq!(error_code(&h.request(ft, &req)), 400);
        let req = binding(&mut h, |e| {
            e.attr(attr::RESPONSE_PORT, &response_port(40000)).unwrap();
        });
        assert_eq!(error_code(&h.request(ft, &req)), 400);
        let req = binding(&mut h, |e| {
            e.attr(attr::PADDING, &[0; 8]).unwrap();
        });
        let resp = h.request(ft, &req);
        assert_eq!(error_code(&resp), 400);
        assert!(reason(&resp).contains("UDP only"), "{}", reason(&resp));
    }
}

#[test]
fn malformed_change_request_is_400() {
    let mut h = harness(vec![two_ips()]);
    let ft = ft_at(sa("192.0.2.1:3478"), Transport::Udp);
    let req = binding(&mut h, |e| {
        e.attr(attr::CHANGE_REQUEST, &[0, 0, 6]).unwrap();
    });
    assert_eq!(error_code(&h.request(ft, &req)), 400);
}

#[test]
fn other_methods_still_treat_discovery_attributes_as_unknown() {
    let mut h = harness(vec![two_ips()]);
    let ft = ft_at(sa("192.0.2.1:3478"), Transport::Udp);
    let tid = h.tid();
    let req = build(Class::Request, Method::ALLOCATE, tid, |e| {
        e.requested_transport(attr::PROTO_UDP).unwrap();
        e.change_request(true, true).unwrap();
    });
    assert_eq!(error_code(&h.request(ft, &req)), 420);
}

#[test]
fn ipv6_group_next_to_an_ipv4_group() {
    let v6 = DiscoveryAddresses {
        primary: sa("[2001:db8::1]:3478"),
        alt_ip: Some(ip("2001:db8::2")),
        alt_port: P2,
    };
    let mut h = harness(vec![two_ips(), v6]);
    let ft = FiveTuple {
        client: sa("[2001:db8:5::9]:40000"),
        server: sa("[2001:db8::2]:3479"),
        transport: Transport::Udp,
    };
    let req = binding(&mut h, |e| {
        e.change_request(true, false).unwrap();
    });
    let t = one(&mut h, ft, &req);
    assert_eq!(
        t.destination,
        Destination::ClientFrom {
            local: sa("[2001:db8::1]:3479"),
            client: ft.client
        }
    );
}

#[test]
fn discovery_addresses_are_consistent() {
    for g in [two_ips(), one_ip()] {
        let all = g.addresses();
        assert_eq!(all.len(), if g.alt_ip.is_some() { 4 } else { 2 });
        assert_eq!(all[0], g.primary);
        for &a in &all {
            assert!(g.contains(a));
            for (ci, cp) in [(false, false), (false, true), (true, false), (true, true)] {
                if let Some(b) = g.changed(a, ci, cp) {
                    assert!(all.contains(&b), "{a} -> {b}");
                    assert_eq!(g.changed(b, ci, cp), Some(a), "changing twice returns");
                    assert_eq!(a.ip() != b.ip(), ci);
                    assert_eq!(a.port() != b.port(), cp);
                } else {
                    assert!(ci && g.alt_ip.is_none());
                }
            }
            let o = g.other(a).unwrap();
            assert_ne!(o, a);
        }
        assert!(!g.contains(sa("192.0.2.3:3478")));
        assert!(!g.contains(sa("192.0.2.1:3480")));
        assert_eq!(g.changed(sa("192.0.2.3:3478"), false, true), None);
    }
}

// ------------------------------------------------------------------------------
// RFC 5780 §4.3 and §4.4 through simulated NATs, against the server.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dep {
    Endpoint,
    Address,
    AddressAndPort,
}

/// A NAT with one internal host: `mapping` decides when a new external port is used,
/// `filtering` which inbound packets reach the host.
struct Nat {
    public_ip: IpAddr,
    mapping: Dep,
    filtering: Dep,
    next_port: u16,
    /// Mapping key (per `mapping`) -> external port.
    ports: HashMap<(Option<IpAddr>, Option<u16>), u16>,
    /// Destinations the host has sent to from its one internal socket.
    sent_to: Vec<SocketAddr>,
}

impl Nat {
    fn new(mapping: Dep, filtering: Dep) -> Self {
        Self {
            public_ip: ip("198.51.100.7"),
            mapping,
            filtering,
            next_port: 50000,
            ports: HashMap::new(),
            sent_to: Vec::new(),
        }
    }

    fn outbound(&mut self, dst: SocketAddr) -> SocketAddr {
        let key = match self.mapping {
            Dep::Endpoint => (None, None),
            Dep::Address => (Some(dst.ip()), None),
            Dep::AddressAndPort => (Some(dst.ip()), Some(dst.port())),
        };
        let next = &mut self.next_port;
        let port = *self.ports.entry(key).or_insert_with(|| {
            *next += 1;
            *next
        });
        self.sent_to.push(dst);
        SocketAddr::new(self.public_ip, port)
    }

    fn inbound_allowed(&self, from: SocketAddr) -> bool {
        match self.filtering {
            Dep::Endpoint => true,
            Dep::Address => self.sent_to.iter().any(|d| d.ip() == from.ip()),
            Dep::AddressAndPort => self.sent_to.contains(&from),
        }
    }
}

/// One Binding transaction through the NAT: the mapped address, or `None` if the
/// response was filtered.
fn probe(
    h: &mut Harness,
    nat: &mut Nat,
    server: SocketAddr,
    change: (bool, bool),
) -> Option<(SocketAddr, Option<SocketAddr>)> {
    let client = nat.outbound(server);
    let ft = FiveTuple {
        client,
        server,
        transport: Transport::Udp,
    };
    let req = binding(h, |e| {
        if change != (false, false) {
            e.change_request(change.0, change.1).unwrap();
        }
    });
    let t = one(h, ft, &req);
    let from = match t.destination {
        Destination::Client(ft) => ft.server,
        Destination::ClientFrom { local, client: c } => {
            assert_eq!(c, client);
            local
        }
        other => panic!("unexpected {other:?}"),
    };
    if !nat.inbound_allowed(from) {
        return None;
    }
    let m = Message::parse(&t.payload).unwrap();
    Some((
        m.get_xor_address(attr::XOR_MAPPED_ADDRESS)
            .unwrap()
            .unwrap(),
        addr(&m, attr::OTHER_ADDRESS),
    ))
}

fn classify(mapping: Dep, filtering: Dep) -> (Dep, Dep) {
    let g = two_ips();
    let mut h = harness(vec![g]);
    let mut nat = Nat::new(mapping, filtering);
    // §4.3 test I, II, III.
    let (m1, other) = probe(&mut h, &mut nat, g.primary, (false, false)).unwrap();
    let other = other.expect("OTHER-ADDRESS");
    let (m2, _) = probe(
        &mut h,
        &mut nat,
        SocketAddr::new(other.ip(), g.primary.port()),
        (false, false),
    )
    .unwrap();
    let found_mapping = if m2 == m1 {
        Dep::Endpoint
    } else {
        let (m3, _) = probe(&mut h, &mut nat, other, (false, false)).unwrap();
        if m3 == m2 {
            Dep::Address
        } else {
            Dep::AddressAndPort
        }
    };
    // §4.4 with a fresh NAT state (a new socket): test I, II (change IP and port), III (change port).
    let mut nat = Nat::new(mapping, filtering);
    nat.next_port = 60000;
    probe(&mut h, &mut nat, g.primary, (false, false)).unwrap();
    let found_filtering = if probe(&mut h, &mut nat, g.primary, (true, true)).is_some() {
        Dep::Endpoint
    } else if probe(&mut h, &mut nat, g.primary, (false, true)).is_some() {
        Dep::Address
    } else {
        Dep::AddressAndPort
    };
    (found_mapping, found_filtering)
}

#[test]
fn rfc5780_procedures_classify_every_simulated_nat() {
    for mapping in [Dep::Endpoint, Dep::Address, Dep::AddressAndPort] {
        for filtering in [Dep::Endpoint, Dep::Address, Dep::AddressAndPort] {
            assert_eq!(
                classify(mapping, filtering),
                (mapping, filtering),
                "mapping {mapping:?}, filtering {filtering:?}"
            );
        }
    }
}
