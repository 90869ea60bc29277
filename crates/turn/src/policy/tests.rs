//! Tests of the peer policy: ranges, special-purpose registries, embedded IPv4, allowed endpoints, and the reasons given.

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn range(s: &str) -> IpRange {
    s.parse().expect("test range")
}

#[track_caller]
fn refused(addr: &str, category: &str, config_key: &str) {
    let denied = PeerPolicy::default()
        .check(ip(addr))
        .expect_err("special-purpose address must be refused");
    assert_eq!(denied.category, category, "{addr}");
    assert_eq!(denied.config_key, config_key, "{addr}");
    assert!(denied.reason_phrase().len() <= 127);
}

#[track_caller]
fn refused_by_default(addr: &str, category: &str) {
    refused(addr, category, "allowed-peer-ip");
}

// IPv4 special-purpose blocks.

#[test]
fn v4_unspecified() {
    refused_by_default("0.0.0.0", "unspecified");
}

#[test]
fn v4_this_network() {
    refused_by_default("0.1.2.3", "this network");
    refused_by_default("0.255.255.255", "this network");
}

#[test]
fn v4_private() {
    refused_by_default("10.0.0.1", "private");
    refused_by_default("10.255.255.255", "private");
    refused_by_default("172.16.0.1", "private");
    refused_by_default("172.31.255.255", "private");
    refused_by_default("192.168.1.1", "private");
    assert!(PeerPolicy::default().check(ip("172.32.0.1")).is_ok());
    assert!(PeerPolicy::default().check(ip("172.15.255.255")).is_ok());
}

#[test]
fn v4_cgnat() {
    refused_by_default("100.64.0.1", "CGNAT");
    refused_by_default("100.127.255.255", "CGNAT");
    assert!(PeerPolicy::default().check(ip("100.128.0.1")).is_ok());
}

#[test]
fn v4_loopback() {
    refused("127.0.0.1", "loopback", "allow-loopback-peers");
    refused("127.255.255.254", "loopback", "allow-loopback-peers");
}

#[test]
fn v4_link_local_and_cloud_metadata() {
    refused_by_default("169.254.0.1", "link-local");
    refused_by_default("169.254.169.254", "link-local");
}

#[test]
fn v4_ietf_protocol_assignments() {
    refused_by_default("192.0.0.1", "IETF protocol assignment");
    refused_by_default("192.0.0.170", "IETF protocol assignment");
}

#[test]
fn v4_documentation() {
    refused_by_default("192.0.2.1", "documentation");
    refused_by_default("198.51.100.7", "documentation");
    refused_by_default("203.0.113.255", "documentation");
}

#[test]
fn v4_benchmarking() {
    refused_by_default("198.18.0.1", "benchmarking");
    refused_by_default("198.19.255.255", "benchmarking");
    assert!(PeerPolicy::default().check(ip("198.20.0.1")).is_ok());
}

#[test]
fn v4_6to4_relay_anycast() {
    refused_by_default("192.88.99.1", "6to4 relay anycast");
}

#[test]
fn v4_multicast() {
    refused_by_default("224.0.0.1", "multicast");
    refused_by_default("239.255.255.250", "multicast");
}

#[test]
fn v4_reserved() {
    refused_by_default("240.0.0.1", "reserved");
    refused_by_default("255.255.255.254", "reserved");
}

#[test]
fn v4_broadcast() {
    refused_by_default("255.255.255.255", "broadcast");
}

// IPv6 special-purpose blocks.

#[test]
fn v6_unspecified() {
    refused_by_default("::", "unspecified");
}

#[test]
fn v6_loopback() {
    refused("::1", "loopback", "allow-loopback-peers");
}

#[test]
fn v6_ipv4_mapped() {
    refused(
        "::ffff:127.0.0.1",
        "loopback (IPv4-mapped)",
        "allow-loopback-peers",
    );
    refused_by_default("::ffff:0.0.0.0", "unspecified (IPv4-mapped)");
    refused_by_default("::ffff:10.0.0.1", "private (IPv4-mapped)");
    refused_by_default("::ffff:169.254.169.254", "link-local (IPv4-mapped)");
}

#[test]
fn v6_ipv4_compatible() {
    refused(
        "::127.0.0.1",
        "loopback (IPv4-compatible)",
        "allow-loopback-peers",
    );
    refused_by_default("::10.0.0.1", "private (IPv4-compatible)");
    refused_by_default("::8.8.8.8", "reserved (IPv4-compatible)");
}

#[test]
fn v6_nat64_well_known_prefix() {
    refused(
        "64:ff9b::127.0.0.1",
        "loopback (NAT64)",
        "allow-loopback-peers",
    );
    refused_by_default("64:ff9b::192.168.0.1", "private (NAT64)");
    assert!(PeerPolicy::default().check(ip("64:ff9b::8.8.8.8")).is_ok());
}

#[test]
fn v6_nat64_local_use() {
    refused_by_default("64:ff9b:1::8.8.8.8", "NAT64 local-use");
}

#[test]
fn v6_6to4() {
    // 2002:7f00:0001:: carries 127.0.0.1, 2002:0a00:0001:: carries 10.0.0.1.
    refused("2002:7f00:1::1", "loopback (6to4)", "allow-loopback-peers");
    refused_by_default("2002:a00:1::", "private (6to4)");
    assert!(PeerPolicy::default().check(ip("2002:808:808::1")).is_ok());
}

#[test]
fn v6_teredo() {
    refused_by_default("2001::1", "Teredo");
    refused_by_default("2001:0:ffff::1", "Teredo");
}

#[test]
fn v6_ietf_protocol_assignments() {
    refused_by_default("2001:1::2", "IETF protocol assignment");
    refused_by_default("2001:1ff::1", "IETF protocol assignment");
    assert!(PeerPolicy::default().check(ip("2001:200::1")).is_ok());
}

#[test]
fn v6_discard_only() {
    refused_by_default("100::1", "discard-only");
}

#[test]
fn v6_documentation() {
    refused_by_default("2001:db8::1", "documentation");
    refused_by_default("3fff::1", "documentation");
    refused_by_default("3fff:fff::1", "documentation");
    assert!(PeerPolicy::default().check(ip("3fff:1000::1")).is_ok());
}

#[test]
fn v6_benchmarking() {
    refused_by_default("2001:2::1", "benchmarking");
}

#[test]
fn v6_orchid() {
    refused_by_default("2001:10::1", "ORCHID");
    refused_by_default("2001:20::1", "ORCHID");
    refused_by_default("2001:2f:ffff::1", "ORCHID");
}

#[test]
fn v6_unique_local() {
    refused_by_default("fc00::1", "unique-local");
    refused_by_default("fd12:3456::1", "unique-local");
}

#[test]
fn v6_link_local() {
    refused_by_default("fe80::1", "link-local");
    refused_by_default("febf::1", "link-local");
}

#[test]
fn v6_site_local() {
    refused_by_default("fec0::1", "site-local");
}

#[test]
fn v6_multicast() {
    refused_by_default("ff02::1", "multicast");
    refused_by_default("ff0e::1", "multicast");
}

#[test]
fn v6_outside_global_unicast_is_reserved() {
    refused_by_default("::1:0:0:0", "reserved");
    refused_by_default("5f00::1", "reserved");
    refused_by_default("4000::1", "reserved");
    refused_by_default("100:0:0:1::1", "reserved");
}

#[test]
fn public_addresses_allowed() {
    let p = PeerPolicy::default();
    for a in [
        "8.8.8.8",
        "1.1.1.1",
        "2606:4700::1111",
        "::ffff:8.8.8.8",
        "2a00:1450:4001::1",
    ] {
        assert_eq!(p.check(ip(a)), Ok(()), "{a}");
    }
}

#[test]
fn allowed_overrides_denied_and_default() {
    let p = PeerPolicy {
        allowed: vec![range("10.0.0.5"), range("fd00::/8")],
        denied: vec![range("10.0.0.0/8")],
        allow_loopback: false,
        allowed_endpoints: Vec::new(),
    };
    assert_eq!(p.check(ip("10.0.0.5")), Ok(()));
    assert_eq!(p.check(ip("fd00::1")), Ok(()));
    assert_eq!(p.check(ip("10.0.0.6")), Err(Denied::BY_CONFIG));
    assert_eq!(
        p.check(ip("10.0.0.6")).map_err(|d| d.config_key),
        Err("denied-peer-ip")
    );
    assert_eq!(
        p.check(ip("172.16.0.1")).map_err(|d| d.category),
        Err("private")
    );
}

#[test]
fn denied_overrides_default_allow() {
    let p = PeerPolicy {
        denied: vec![range("8.8.8.0/24"), range("2606:4700::/32")],
        ..PeerPolicy::default()
    };
    assert_eq!(p.check(ip("8.8.8.8")), Err(Denied::BY_CONFIG));
    assert_eq!(p.check(ip("2606:4700::1111")), Err(Denied::BY_CONFIG));
    assert_eq!(p.check(ip("8.8.4.4")), Ok(()));
}

#[test]
fn ipv4_ranges_cover_embedded_forms() {
    let allow = PeerPolicy {
        allowed: vec![range("127.0.0.1")],
        ..PeerPolicy::default()
    };
    for a in [
        "127.0.0.1",
        "::ffff:127.0.0.1",
        "::127.0.0.1",
        "64:ff9b::127.0.0.1",
    ] {
        assert_eq!(allow.check(ip(a)), Ok(()), "{a}");
    }
    assert!(allow.check(ip("127.0.0.2")).is_err());

    let deny = PeerPolicy {
        denied: vec![range("8.8.8.8")],
        ..PeerPolicy::default()
    };
    for a in [
        "8.8.8.8",
        "::ffff:8.8.8.8",
        "::8.8.8.8",
        "64:ff9b::8.8.8.8",
        "2002:808:808::",
    ] {
        assert_eq!(deny.check(ip(a)), Err(Denied::BY_CONFIG), "{a}");
    }
}

#[test]
fn mapped_ipv6_ranges_cover_plain_ipv4() {
    let p = PeerPolicy {
        allowed: vec![range("::ffff:10.0.0.0/104")],
        ..PeerPolicy::default()
    };
    assert_eq!(p.check(ip("10.1.2.3")), Ok(()));
    assert_eq!(p.check(ip("64:ff9b::10.1.2.3")), Ok(()));
}

#[test]
fn allow_loopback_permits_every_loopback_form_only() {
    let p = PeerPolicy {
        allow_loopback: true,
        ..PeerPolicy::default()
    };
    for a in [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "::ffff:127.0.0.1",
        "::127.0.0.1",
    ] {
        assert_eq!(p.check(ip(a)), Ok(()), "{a}");
    }
    // Not loopback, even though Linux delivers 0.0.0.0 to the local host.
    assert!(p.check(ip("0.0.0.0")).is_err());
    assert!(p.check(ip("::")).is_err());
    assert!(p.check(ip("10.0.0.1")).is_err());
}

#[test]
fn parse_single_cidr_and_range() {
    let r = range("1.2.3.4");
    assert_eq!((r.start(), r.end()), (ip("1.2.3.4"), ip("1.2.3.4")));
    assert_eq!(r, IpRange::single(ip("1.2.3.4")));

    let r = range("1.2.3.0/24");
    assert_eq!((r.start(), r.end()), (ip("1.2.3.0"), ip("1.2.3.255")));
    assert!(r.contains(ip("1.2.3.77")));
    assert!(!r.contains(ip("1.2.4.0")));
    assert!(!r.contains(ip("::ffff:1.2.3.77")));

    // Host bits are ignored.
    assert_eq!(range("10.1.2.3/8"), range("10.0.0.0/8"));

    let r = range("1.2.3.4-1.2.3.10");
    assert!(r.contains(ip("1.2.3.4")) && r.contains(ip("1.2.3.10")));
    assert!(!r.contains(ip("1.2.3.11")) && !r.contains(ip("1.2.3.3")));
    assert_eq!(range(" 1.2.3.4 - 1.2.3.10 "), r);

    let r = range("2001:db8::/32");
    assert_eq!(r.end(), ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"));
    assert_eq!(range("::1"), IpRange::single(ip("::1")));
    assert_eq!(range("[::1]"), IpRange::single(ip("::1")));
    let r = range("fe80::1-fe80::ff");
    assert!(r.contains(ip("fe80::80")) && !r.contains(ip("fe80::100")));

    assert_eq!(range("0.0.0.0/0").end(), ip("255.255.255.255"));
    assert_eq!(
        range("::/0").end(),
        ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
    );
    assert_eq!(range("1.2.3.4/32"), range("1.2.3.4"));
    assert_eq!(range("::1/128"), range("::1"));
}

#[test]
fn display_round_trips() {
    for (input, shown) in [
        ("1.2.3.4", "1.2.3.4"),
        ("1.2.3.0/24", "1.2.3.0/24"),
        ("1.2.3.0-1.2.3.255", "1.2.3.0/24"),
        ("1.2.3.4-1.2.3.10", "1.2.3.4-1.2.3.10"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("fe80::1-fe80::ff", "fe80::1-fe80::ff"),
        ("::/0", "::/0"),
        ("::1", "::1"),
    ] {
        let r = range(input);
        assert_eq!(r.to_string(), shown, "{input}");
        assert_eq!(range(shown), r, "{input}");
    }
}

#[test]
fn parse_errors_say_what_to_fix() {
    let err = |s: &str| s.parse::<IpRange>().expect_err(s);
    assert!(err("1.2.3.10-1.2.3.4").contains("reversed"));
    assert!(err("fe80::ff-fe80::1").contains("reversed"));
    assert!(err("1.2.3.4-::1").contains("mixes IPv4 and IPv6"));
    assert!(err("1.2.3.0/33").contains("longer than 32 bits"));
    assert!(err("2001:db8::/129").contains("longer than 128 bits"));
    assert!(err("1.2.3.0/x").contains("not a prefix length"));
    assert!(err("1.2.3.0/+1").contains("not a prefix length"));
    assert!(err("1.2.3.0/").contains("not a prefix length"));
    assert!(err("1.2.3.0/999").contains("too long"));
    assert!(err("example.com").contains("not an IP address"));
    assert!(err("1.2.3").contains("not an IP address"));
    assert!(err("1.2.3.4-").contains("missing an address"));
    assert!(err("1.2.3.4-1.2.3.5-1.2.3.6").contains("not an IP address"));
    assert!(err("fe80::1%eth0").contains("not an IP address"));
    assert!(err("").contains("empty"));
    assert!(err("   ").contains("empty"));
}

#[test]
fn special_tables_are_aligned_prefixes() {
    for &(net, len, _) in IPV4_SPECIAL {
        let host = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
        assert_eq!(net & host, 0, "{}/{len}", Ipv4Addr::from(net));
    }
    for &(net, len, _) in IPV6_SPECIAL {
        let host = u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
        assert_eq!(net & host, 0, "{}/{len}", Ipv6Addr::from(net));
    }
}

#[test]
fn reason_phrases_fit_127_characters() {
    let mut phrases = vec![Denied::BY_CONFIG.reason_phrase()];
    let vias = [
        None,
        Some(Embedding::Mapped),
        Some(Embedding::Compatible),
        Some(Embedding::Nat64),
        Some(Embedding::SixToFour),
    ];
    for &(_, _, class) in IPV4_SPECIAL {
        for via in vias {
            let loopback = class == V4Class::Loopback;
            phrases.push(
                Denied {
                    category: class.category(via),
                    config_key: if loopback { KEY_LOOPBACK } else { KEY_ALLOWED },
                }
                .reason_phrase(),
            );
        }
    }
    for &(_, _, category) in IPV6_SPECIAL {
        phrases.push(
            Denied {
                category,
                config_key: KEY_ALLOWED,
            }
            .reason_phrase(),
        );
    }
    for key in [KEY_LOOPBACK, KEY_ALLOWED, KEY_DENIED] {
        let d = Denied {
            category: "x",
            config_key: key,
        };
        phrases.push(d.outside_endpoints().reason_phrase());
        phrases.push(d.not_a_relay().reason_phrase());
    }
    assert_eq!(
        PeerPolicy::default()
            .check(ip("127.0.0.1"))
            .map_err(|d| d.not_a_relay().reason_phrase()),
        Err(
            "Forbidden: no live relay of this server has this port; allow every port with allow-loopback-peers or allowed-peer-ip"
                .to_owned()
        )
    );
    for p in &phrases {
        assert!(p.len() <= 127, "{} chars: {p}", p.len());
        assert!(p.is_ascii());
    }
    assert_eq!(
        PeerPolicy::default()
            .check(ip("127.0.0.1"))
            .map_err(|d| d.reason_phrase()),
        Err(
            "Forbidden: peer address is loopback; allow it with allow-loopback-peers or allowed-peer-ip"
                .to_owned()
        )
    );
    assert_eq!(
        Denied::BY_CONFIG.reason_phrase(),
        "Forbidden: peer address is denied by config (denied-peer-ip); allow it with allowed-peer-ip"
    );
}
fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test socket address")
}

fn with_endpoints(endpoints: &[&str]) -> PeerPolicy {
    PeerPolicy {
        allowed_endpoints: endpoints.iter().map(|e| addr(e)).collect(),
        ..PeerPolicy::default()
    }
}

#[test]
fn allowed_endpoints_grant_the_ip_a_permission_that_reaches_only_them() {
    let p = with_endpoints(&["127.0.0.1:7882", "192.168.1.5:7882", "[::1]:7882"]);
    // The IP rules themselves are unchanged.
    assert!(p.check(ip("127.0.0.1")).is_err());
    assert!(p.check(ip("192.168.1.5")).is_err());
    for a in ["127.0.0.1", "192.168.1.5", "::1"] {
        assert_eq!(
            p.check_permission(ip(a)),
            Ok(PeerScope::EndpointsOnly),
            "{a}"
        );
    }
    for a in ["127.0.0.1:7882", "192.168.1.5:7882", "[::1]:7882"] {
        assert_eq!(
            p.check_address(addr(a)),
            Ok(PeerScope::EndpointsOnly),
            "{a}"
        );
        assert!(p.is_allowed_endpoint(addr(a)), "{a}");
    }
    // Another port of an endpoint's IP: refused, naming the keys that allow the IP.
    let d = p
        .check_address(addr("127.0.0.1:7883"))
        .expect_err("other port");
    assert!(d.is_outside_endpoints());
    assert_eq!(d.category, Denied::OUTSIDE_ENDPOINTS);
    assert_eq!(d.config_key, "allow-loopback-peers");
    assert_eq!(
        d.reason_phrase(),
        "Forbidden: this port is not an allowed endpoint of the peer IP; allow every port with allow-loopback-peers or allowed-peer-ip"
    );
    let d = p
        .check_address(addr("192.168.1.5:22"))
        .expect_err("other port");
    assert!(d.is_outside_endpoints());
    assert_eq!(d.config_key, "allowed-peer-ip");
    assert!(!d.reason_phrase().contains("loopback"));
    assert!(p.check_address(addr("[::1]:7883")).is_err());
    // Another IP of the same block keeps its usual refusal.
    assert_eq!(
        p.check_permission(ip("192.168.1.6"))
            .map_err(|d| d.category),
        Err("private")
    );
    assert_eq!(
        p.check_address(addr("192.168.1.6:7882"))
            .map_err(|d| d.category),
        Err("private")
    );
    assert!(p.check_permission(ip("127.0.0.2")).is_err());
    // Exact match: the IPv4-mapped form of an endpoint is not the endpoint.
    assert_eq!(
        p.check_address(addr("[::ffff:127.0.0.1]:7882"))
            .map_err(|d| d.category),
        Err("loopback (IPv4-mapped)")
    );
    assert!(p.check_permission(ip("::ffff:127.0.0.1")).is_err());
    assert!(p.check_permission(ip("::127.0.0.1")).is_err());
    // Allowed IPs reach every port.
    assert_eq!(p.check_address(addr("8.8.8.8:9")), Ok(PeerScope::AnyPort));
    assert_eq!(p.check_permission(ip("8.8.8.8")), Ok(PeerScope::AnyPort));
}

#[test]
fn an_ip_allowed_in_general_reaches_every_port_despite_endpoints() {
    let mut p = with_endpoints(&["127.0.0.1:7882", "10.1.2.3:7882"]);
    p.allow_loopback = true;
    p.allowed.push(range("10.0.0.0/8"));
    for a in ["127.0.0.1:7883", "127.0.0.1:7882", "10.1.2.3:22"] {
        assert_eq!(p.check_address(addr(a)), Ok(PeerScope::AnyPort), "{a}");
    }
    assert_eq!(p.check_permission(ip("127.0.0.1")), Ok(PeerScope::AnyPort));
}

#[test]
fn an_endpoint_overrides_denied_peer_ip_for_its_port_only() {
    let mut p = with_endpoints(&["192.168.1.5:7882"]);
    p.denied.push(range("192.168.0.0/16"));
    assert_eq!(
        p.check_permission(ip("192.168.1.5")),
        Ok(PeerScope::EndpointsOnly)
    );
    assert_eq!(
        p.check_address(addr("192.168.1.5:7882")),
        Ok(PeerScope::EndpointsOnly)
    );
    let d = p.check_address(addr("192.168.1.5:7883")).expect_err("port");
    assert!(d.is_outside_endpoints());
    assert_eq!(d.config_key, "allowed-peer-ip");
    assert_eq!(
        p.check_permission(ip("192.168.1.6")),
        Err(Denied::BY_CONFIG)
    );
}

#[test]
fn wildcard_and_port_zero_endpoints_match_nothing() {
    let p = with_endpoints(&["0.0.0.0:7882", "[::]:7882", "127.0.0.1:0"]);
    for a in ["0.0.0.0", "::", "127.0.0.1"] {
        assert!(p.check_permission(ip(a)).is_err(), "{a}");
    }
    for a in ["0.0.0.0:7882", "[::]:7882", "127.0.0.1:0"] {
        assert!(!p.is_allowed_endpoint(addr(a)), "{a}");
        let d = p.check_address(addr(a)).expect_err(a);
        assert!(!d.is_outside_endpoints(), "{a}");
    }
}

#[test]
fn endpoint_match_ignores_ipv6_scope_and_flow() {
    let scoped = SocketAddr::V6(std::net::SocketAddrV6::new(
        "fe80::1".parse().expect("test address"),
        7882,
        7,
        2,
    ));
    let p = PeerPolicy {
        allowed_endpoints: vec![scoped],
        ..PeerPolicy::default()
    };
    assert_eq!(
        p.check_address(addr("[fe80::1]:7882")),
        Ok(PeerScope::EndpointsOnly)
    );
    assert!(p.check_address(addr("[fe80::1]:7883")).is_err());
}

#[test]
fn without_endpoints_the_new_checks_equal_check() {
    let p = PeerPolicy {
        allowed: vec![range("10.0.0.5")],
        denied: vec![range("8.8.8.0/24")],
        ..PeerPolicy::default()
    };
    for a in [
        "127.0.0.1",
        "10.0.0.5",
        "10.0.0.6",
        "8.8.8.8",
        "8.8.4.4",
        "::1",
        "0.0.0.0",
        "::ffff:10.0.0.5",
        "2606:4700::1111",
        "fe80::1",
    ] {
        let general = p.check(ip(a));
        assert_eq!(
            p.check_permission(ip(a)),
            general.map(|()| PeerScope::AnyPort),
            "{a}"
        );
        assert_eq!(
            p.check_address(SocketAddr::new(ip(a), 7882)),
            general.map(|()| PeerScope::AnyPort),
            "{a}"
        );
    }
}
