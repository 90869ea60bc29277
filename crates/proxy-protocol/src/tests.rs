use super::*;
use proptest::prelude::*;
use std::net::IpAddr;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn tcp(source: &str, destination: &str) -> Addresses {
    Addresses::Tcp {
        source: sa(source),
        destination: sa(destination),
    }
}

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn complete(buf: &[u8]) -> Header {
    match parse(buf) {
        Ok(Parsed::Header(h)) => h,
        other => panic!("{other:?} for {buf:02x?}"),
    }
}

/// Feeds `stream` the way a server reads it: never more than `at_least` at a time.
/// Returns the header and how many bytes were taken.
fn read_incrementally(stream: &[u8]) -> Result<(Header, usize), Error> {
    let mut taken = 0;
    loop {
        let buf = stream.get(..taken).unwrap();
        match parse(buf)? {
            Parsed::Header(h) => {
                assert_eq!(h.len, taken, "the header ends where the reads ended");
                return Ok((h, taken));
            }
            Parsed::Incomplete { at_least } => {
                assert!(at_least >= 1);
                assert!(taken + at_least <= MAX_LEN);
                if taken + at_least > stream.len() {
                    return Err(Error::Syntax("the stream ended"));
                }
                taken += at_least;
            }
        }
    }
}

// ---- Known answers: the specification's examples and what proxies send. ----

#[test]
fn v1_tcp4() {
    let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 54020 443\r\nGET / HTTP/1.1\r\n";
    let h = complete(line);
    assert_eq!(h.version, Version::V1);
    assert_eq!(h.addresses, tcp("192.0.2.1:54020", "198.51.100.2:443"));
    assert_eq!(h.len, 45);
    assert_eq!(h.source(), Some(sa("192.0.2.1:54020")));
}

#[test]
fn v1_tcp6() {
    let line = b"PROXY TCP6 2001:db8::1 2001:db8::2 4711 3478\r\n";
    let h = complete(line);
    assert_eq!(h.addresses, tcp("[2001:db8::1]:4711", "[2001:db8::2]:3478"));
    assert_eq!(h.len, line.len());
}

#[test]
fn v1_unknown_ignores_the_rest_of_its_line() {
    for line in [
        &b"PROXY UNKNOWN\r\n"[..],
        b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
    ] {
        let h = complete(line);
        assert_eq!(h.addresses, Addresses::Unknown);
        assert_eq!(h.source(), None);
        assert_eq!(h.len, line.len());
    }
}

/// The longest lines of each protocol the specification names: 56 (TCP4), 104 (TCP6)
/// and 107 bytes (UNKNOWN with two full IPv6 addresses).
#[test]
fn v1_longest_lines() {
    let full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    let cases = [
        (
            "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n".to_owned(),
            56,
        ),
        (format!("PROXY TCP6 {full} {full} 65535 65535\r\n"), 104),
        (format!("PROXY UNKNOWN {full} {full} 65535 65535\r\n"), 107),
    ];
    for (line, len) in cases {
        assert_eq!(line.len(), len);
        assert_eq!(complete(line.as_bytes()).len, len);
        assert_eq!(read_incrementally(line.as_bytes()).unwrap().1, len);
    }
    // One byte more and the line cannot end in time.
    let long = format!("PROXY UNKNOWN {full} {full} 65535 655350\r\n");
    assert_eq!(parse(long.as_bytes()), Err(Error::TooLong));
    assert_eq!(parse(&long.as_bytes()[..106]), Err(Error::TooLong));
    assert_eq!(
        parse(&long.as_bytes()[..105]),
        Ok(Parsed::Incomplete { at_least: 2 })
    );
}

#[test]
fn v2_tcp4() {
    let bytes = unhex(
        "0d0a0d0a000d0a515549540a 21 11 000c
         c0000201 c6336402 d304 01bb
         16030100",
    );
    let h = complete(&bytes);
    assert_eq!(h.version, Version::V2);
    assert_eq!(h.addresses, tcp("192.0.2.1:54020", "198.51.100.2:443"));
    assert_eq!(h.len, 28);
}

#[test]
fn v2_tcp6() {
    let bytes = unhex(
        "0d0a0d0a000d0a515549540a 21 21 0024
         20010db8000000000000000000000001 20010db8000000000000000000000002 1267 0d96",
    );
    let h = complete(&bytes);
    assert_eq!(h.addresses, tcp("[2001:db8::1]:4711", "[2001:db8::2]:3478"));
    assert_eq!(h.len, 52);
}

/// TLVs are skipped: here what AWS's NLB adds (PP2_TYPE_AWS 0xEA, subtype 1 with the VPC
/// endpoint id), HAProxy's unique id (0x05) and a NOOP (0x04) used as padding.
#[test]
fn v2_with_tlvs() {
    let mut bytes = Vec::new();
    let addrs = tcp("203.0.113.7:50000", "10.0.0.5:443");
    let vpce = b"\x01vpce-08d2bf15fefb5adf6";
    encode_v2(
        &addrs,
        &[(0xEA, vpce), (0x05, b"abc123"), (0x04, &[0; 7])],
        &mut bytes,
    )
    .unwrap();
    assert_eq!(bytes.len(), 16 + 12 + (3 + vpce.len()) + (3 + 6) + (3 + 7));
    let h = complete(&bytes);
    assert_eq!(h.addresses, addrs);
    assert_eq!(h.len, bytes.len());
}

/// What HAProxy 2.6 sends with `send-proxy-v2 proxy-v2-options unique-id` (captured),
/// followed by the client's first bytes: the unique id TLV (0x05) is skipped.
#[test]
fn v2_from_haproxy() {
    let bytes = unhex(
        "0d0a0d0a000d0a515549540a 21 11 003d
         7f000001 7f000001 ca7a b8c5
         05 002e 37463030303030313a434137415f37463030303030313a423843355f36423132303641455f303030303a30463839
         000100002112a4426162636465666768696a6b6c",
    );
    let h = complete(&bytes);
    assert_eq!(h.version, Version::V2);
    assert_eq!(h.addresses, tcp("127.0.0.1:51834", "127.0.0.1:47301"));
    assert_eq!(h.len, 77);
    assert_eq!(read_incrementally(&bytes).unwrap().1, 77);
    assert_eq!(
        &bytes[h.len..h.len + 2],
        &[0x00, 0x01],
        "the STUN Binding after it"
    );
}

/// LOCAL (a health check) as HAProxy sends it: no addresses.
#[test]
fn v2_local() {
    let bytes = unhex("0d0a0d0a000d0a515549540a 20 00 0000");
    let h = complete(&bytes);
    assert_eq!(h.addresses, Addresses::Local);
    assert_eq!(h.source(), None);
    assert_eq!(h.len, 16);
    // LOCAL with addresses (or anything) in it: skipped, not believed.
    let bytes = unhex("0d0a0d0a000d0a515549540a 20 11 0003 c00002");
    assert_eq!(complete(&bytes).addresses, Addresses::Local);
}

#[test]
fn v2_unspec_unix_and_udp_are_unknown() {
    let cases = [
        // PROXY, UNSPEC, with bytes the receiver ignores.
        "21 00 0003 010203",
        // UNIX stream: two 108-byte paths.
        &format!("21 31 00d8 {}", "00".repeat(216)),
        // UDP over IPv4.
        "21 12 000c c0000201 c6336402 d304 01bb",
        // TCP over an unspecified protocol.
        "21 10 000c c0000201 c6336402 d304 01bb",
    ];
    for case in cases {
        let bytes = unhex(&format!("0d0a0d0a000d0a515549540a {case}"));
        let h = complete(&bytes);
        assert_eq!(h.addresses, Addresses::Unknown, "{case}");
        assert_eq!(h.len, bytes.len());
    }
}

// ---- Malformed input: each is refused with the reason, never a panic. ----

#[test]
fn malformed_v2() {
    let sig = "0d0a0d0a000d0a515549540a";
    let cases: &[(&str, Error)] = &[
        ("11 11 000c", Error::Version(1)),
        ("31 11 000c", Error::Version(3)),
        ("22 11 000c", Error::Command(2)),
        ("2f 11 000c", Error::Command(15)),
        ("21 41 000c", Error::Family(0x41)),
        ("21 13 000c", Error::Family(0x13)),
        ("21 11 1001", Error::TooLong),
        ("21 11 ffff", Error::TooLong),
        // Shorter than the family's addresses.
        ("21 11 000b c0000201c6336402d30401", Error::ShortAddresses),
        ("21 21 000c c0000201c6336402d30401bb", Error::ShortAddresses),
        (
            "21 31 0010 00000000000000000000000000000000",
            Error::ShortAddresses,
        ),
        // A TLV longer than what is left, and one cut in its length.
        ("21 11 0010 c0000201c6336402d30401bb 05 0002 61", Error::Tlv),
        ("21 11 000e c0000201c6336402d30401bb 05 00", Error::Tlv),
        ("21 11 000d c0000201c6336402d30401bb 05", Error::Tlv),
    ];
    for (rest, want) in cases {
        let bytes = unhex(&format!("{sig} {rest}"));
        assert_eq!(parse(&bytes), Err(*want), "{rest}");
        // The refusal comes as soon as the fixed part is in, for the fixed part's faults.
        if !matches!(want, Error::ShortAddresses | Error::Tlv) {
            assert_eq!(parse(&bytes[..16]), Err(*want), "{rest}");
        }
    }
    // A signature that goes wrong at its last byte.
    let mut bytes = unhex(&format!("{sig} 21 11 000c"));
    bytes[11] = b'X';
    assert_eq!(parse(&bytes), Err(Error::NotProxy));
}

#[test]
fn malformed_v1() {
    let cases: &[(&[u8], Error)] = &[
        (b"PROXY TCP4 192.0.2.1 198.51.100.2 54020 443\n", Error::Syntax("an LF without CR before it")),
        (b"PROXY TCP4 192.0.2.1 198.51.100.2 54020 443\rX", Error::Syntax("a CR that is not followed by LF")),
        (b"PROXY TCP5 192.0.2.1 198.51.100.2 54020 443\r\n", Error::Syntax("the protocol is not TCP4, TCP6 or UNKNOWN")),
        (b"PROXY tcp4 192.0.2.1 198.51.100.2 54020 443\r\n", Error::Syntax("the protocol is not TCP4, TCP6 or UNKNOWN")),
        (b"PROXY UNKNOWNX\r\n", Error::Syntax("the protocol is not TCP4, TCP6 or UNKNOWN")),
        (b"PROXY TCP4 192.0.2.1 198.51.100.2 54020\r\n", Error::Syntax("TCP4 and TCP6 take exactly four fields, one space apart: source, destination, source port, destination port")),
        (b"PROXY TCP4 192.0.2.1 198.51.100.2 54020 443 1\r\n", Error::Syntax("TCP4 and TCP6 take exactly four fields, one space apart: source, destination, source port, destination port")),
        (b"PROXY TCP4 192.0.2.1  198.51.100.2 54020 443\r\n", Error::Syntax("TCP4 and TCP6 take exactly four fields, one space apart: source, destination, source port, destination port")),
        (b"PROXY TCP4 192.0.2.1 198.51.100.2 54020 443 \r\n", Error::Syntax("TCP4 and TCP6 take exactly four fields, one space apart: source, destination, source port, destination port")),
        (b"PROXY TCP4 2001:db8::1 198.51.100.2 54020 443\r\n", Error::Syntax("a character that cannot appear in an address or a port")),
        (b"PROXY TCP4 192.0.2.256 198.51.100.2 54020 443\r\n", Error::Syntax("an address of TCP4 that is not an IPv4 address")),
        (b"PROXY TCP4 192.0.2.01 198.51.100.2 54020 443\r\n", Error::Syntax("an address of TCP4 that is not an IPv4 address")),
        (b"PROXY TCP6 192.0.2.1 2001:db8::2 54020 443\r\n", Error::Syntax("an address of TCP6 that is not an IPv6 address")),
        (b"PROXY TCP6 fe80::1%eth0 2001:db8::2 54020 443\r\n", Error::Syntax("a character that cannot appear in an address or a port")),
        (b"PROXY TCP6 fe80::1::2 2001:db8::2 54020 443\r\n", Error::Syntax("an address of TCP6 that is not an IPv6 address")),
        (b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n", Error::Syntax("a port that is not a number from 0 to 65535")),
        (b"PROXY TCP4 192.0.2.1 198.51.100.2 054020 443\r\n", Error::Syntax("a port that is not a number from 0 to 65535")),
        (b"PROXY TCP4 192.0.2.1 198.51.100.2 54020 \r\n", Error::Syntax("a port that is not a number from 0 to 65535")),
        (b"PROXY UNKNOWN \x00\r\n", Error::Syntax("a byte that is not printable US-ASCII")),
        (b"PROXY UNKNOWN \xc3\xa9\r\n", Error::Syntax("a byte that is not printable US-ASCII")),
        (b"PROXY\r\n", Error::NotProxy),
        (b"PROXY \r\n", Error::Syntax("the protocol is not TCP4, TCP6 or UNKNOWN")),
        (b"proxy TCP4", Error::NotProxy),
        (b"GET / HTTP/1.1\r\n", Error::NotProxy),
        (b"\x16\x03\x01\x02\x00", Error::NotProxy),
        (b"\x00\x01\x00\x00\x21\x12\xa4\x42", Error::NotProxy),
    ];
    for (bytes, want) in cases {
        assert_eq!(
            parse(bytes),
            Err(*want),
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

/// Garbage from a listed proxy is refused within the first bytes read, not after
/// waiting for 107 of them.
#[test]
fn garbage_is_refused_early() {
    assert_eq!(parse(b"G"), Err(Error::NotProxy));
    assert_eq!(parse(b"\x16"), Err(Error::NotProxy));
    assert_eq!(
        parse(b"PROXY X"),
        Err(Error::Syntax("the protocol is not TCP4, TCP6 or UNKNOWN"))
    );
    // Also when its CR is in and its LF is not.
    assert_eq!(
        parse(b"PROXY X\r"),
        Err(Error::Syntax("the protocol is not TCP4, TCP6 or UNKNOWN"))
    );
    assert_eq!(
        parse(b"PROXY TCP4 1.2.3.x"),
        Err(Error::Syntax(
            "a character that cannot appear in an address or a port"
        ))
    );
    // The first read of a server is MIN_LEN bytes: the HTTP request line is refused there.
    assert_eq!(
        parse(&b"GET /index.html HTTP/1.1\r\n"[..MIN_LEN]),
        Err(Error::NotProxy)
    );
}

#[test]
fn incomplete_asks_for_no_more_than_the_shortest_header_needs() {
    assert_eq!(parse(b""), Ok(Parsed::Incomplete { at_least: 15 }));
    assert_eq!(parse(b"\r"), Ok(Parsed::Incomplete { at_least: 15 }));
    assert_eq!(parse(b"P"), Ok(Parsed::Incomplete { at_least: 14 }));
    assert_eq!(
        parse(b"PROXY UNKNOWN"),
        Ok(Parsed::Incomplete { at_least: 2 })
    );
    assert_eq!(
        parse(b"PROXY UNKNOWN\r"),
        Ok(Parsed::Incomplete { at_least: 1 })
    );
    assert_eq!(
        parse(b"PROXY TCP4 "),
        Ok(Parsed::Incomplete { at_least: 21 })
    );
    assert_eq!(
        parse(b"PROXY TCP6 "),
        Ok(Parsed::Incomplete { at_least: 11 })
    );
    let sig = &V2_SIGNATURE[..];
    assert_eq!(parse(sig), Ok(Parsed::Incomplete { at_least: 4 }));
    let mut fixed = sig.to_vec();
    fixed.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
    assert_eq!(parse(&fixed), Ok(Parsed::Incomplete { at_least: 12 }));
}

#[test]
fn encoders_refuse_what_the_header_cannot_say() {
    let mixed = tcp("192.0.2.1:1", "[2001:db8::2]:2");
    let mut out = Vec::new();
    assert!(matches!(
        encode_v1(&mixed, &mut out),
        Err(Error::Unencodable(_))
    ));
    assert!(matches!(
        encode_v2(&mixed, &[], &mut out),
        Err(Error::Unencodable(_))
    ));
    assert!(matches!(
        encode_v1(&Addresses::Local, &mut out),
        Err(Error::Unencodable(_))
    ));
    let big = vec![0u8; V2_MAX_PAYLOAD];
    assert_eq!(
        encode_v2(
            &tcp("192.0.2.1:1", "192.0.2.2:2"),
            &[(0x04, &big)],
            &mut out
        ),
        Err(Error::TooLong)
    );
    assert!(out.is_empty());
}

#[test]
fn errors_say_what_is_wrong() {
    assert_eq!(
        Error::Family(0x41).to_string(),
        "PROXY v2 header with address family 4 and protocol 1; families 0 to 3 and protocols 0 to 2 are defined"
    );
    assert!(Error::TooLong.to_string().contains("107"));
    assert!(Error::NotProxy.to_string().contains("PROXY "));
}

// ---- Properties. ----

fn any_ip(v6: bool) -> impl Strategy<Value = IpAddr> {
    if v6 {
        any::<[u8; 16]>()
            .prop_map(|b| IpAddr::from(Ipv6Addr::from(b)))
            .boxed()
    } else {
        any::<[u8; 4]>()
            .prop_map(|b| IpAddr::from(Ipv4Addr::from(b)))
            .boxed()
    }
}

fn any_tcp() -> impl Strategy<Value = Addresses> {
    any::<bool>().prop_flat_map(|v6| {
        (any_ip(v6), any::<u16>(), any_ip(v6), any::<u16>()).prop_map(|(s, sp, d, dp)| {
            Addresses::Tcp {
                source: SocketAddr::new(s, sp),
                destination: SocketAddr::new(d, dp),
            }
        })
    })
}

fn any_addresses() -> impl Strategy<Value = Addresses> {
    prop_oneof![
        4 => any_tcp(),
        1 => Just(Addresses::Local),
        1 => Just(Addresses::Unknown),
    ]
}

fn any_tlvs() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
    prop::collection::vec(
        (any::<u8>(), prop::collection::vec(any::<u8>(), 0..64)),
        0..6,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever the bytes: no panic; a header lies within them and within the cap; a
    /// request for more stays within the cap.
    #[test]
    fn never_panics_and_stays_bounded(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        match parse(&bytes) {
            Ok(Parsed::Header(h)) => {
                prop_assert!(h.len <= bytes.len());
                prop_assert!(h.len <= MAX_LEN);
            }
            Ok(Parsed::Incomplete { at_least }) => {
                prop_assert!(at_least >= 1);
                prop_assert!(bytes.len() + at_least <= MAX_LEN);
            }
            Err(_) => {}
        }
    }

    /// The same, for inputs that start like a header (random bytes rarely do).
    #[test]
    fn header_like_input_never_panics(
        v2 in any::<bool>(),
        tail in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = if v2 { V2_SIGNATURE.to_vec() } else { b"PROXY ".to_vec() };
        bytes.extend_from_slice(&tail);
        let _ = parse(&bytes);
        let _ = read_incrementally(&bytes);
    }

    /// What a sender writes reads back the same, whatever follows it; read the way a
    /// server reads, no byte after the header is taken.
    #[test]
    fn round_trip(
        addrs in any_addresses(),
        v1 in any::<bool>(),
        tlvs in any_tlvs(),
        after in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = Vec::new();
        let version = if v1 && addrs != Addresses::Local { Version::V1 } else { Version::V2 };
        match version {
            Version::V1 => encode_v1(&addrs, &mut bytes).unwrap(),
            Version::V2 => {
                let tlvs: Vec<(u8, &[u8])> = tlvs.iter().map(|(t, v)| (*t, &v[..])).collect();
                encode_v2(&addrs, &tlvs, &mut bytes).unwrap();
            }
        }
        let len = bytes.len();
        bytes.extend_from_slice(&after);
        let want = Header { version, addresses: addrs, len };
        prop_assert_eq!(parse(&bytes), Ok(Parsed::Header(want)));
        prop_assert_eq!(read_incrementally(&bytes), Ok((want, len)));
        // Every strict prefix asks for more, and never for more than the rest.
        for cut in 0..len {
            match parse(&bytes[..cut]) {
                Ok(Parsed::Incomplete { at_least }) => prop_assert!(cut + at_least <= len),
                other => prop_assert!(false, "prefix of {cut} bytes: {other:?}"),
            }
        }
    }
}
