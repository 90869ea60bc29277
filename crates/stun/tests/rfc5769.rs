//! Known-answer tests: the four test vectors of RFC 5769, byte for byte.
//!
//! Each vector is parsed, every attribute is checked, MESSAGE-INTEGRITY and FINGERPRINT
//! are verified, and the message is rebuilt with [`MessageEncoder`] to the same bytes.
//! The vectors also seed the fuzz corpus (`fuzz/seeds/`), see [`fuzz_seed_corpus_is_current`].
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;

use tsunagi_stun::attr;
use tsunagi_stun::{
    long_term_key_md5, ChannelData, Class, IntegrityKey, Message, MessageEncoder, Method,
    PasswordAlgorithm, TransactionId,
};

/// RFC 5769 §2.1 Sample Request. SOFTWARE and USERNAME are padded with spaces.
const SAMPLE_REQUEST: &str = "
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf";

/// RFC 5769 §2.2 Sample IPv4 Response. SOFTWARE is padded with a space.
const SAMPLE_IPV4_RESPONSE: &str = "
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96";

/// RFC 5769 §2.3 Sample IPv6 Response. SOFTWARE is padded with a space.
const SAMPLE_IPV6_RESPONSE: &str = "
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c";

/// RFC 5769 §2.4 Sample Request with Long-Term Authentication. USERNAME and REALM are
/// padded with zeros; there is no FINGERPRINT.
const SAMPLE_LONG_TERM_REQUEST: &str = "
    00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
    00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
    00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 73 41
    00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
    00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66";

/// The short-term password of §2.1–2.3.
const SHORT_TERM_PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";

/// §2.4 credentials. The password as the RFC gives it, before SASLprep
/// (U+00AD is mapped to nothing, U+00AA and U+2168 are NFKC-normalised).
const LT_USERNAME: &str = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
const LT_REALM: &str = "example.org";
const LT_NONCE: &str = "f//499k954d6OL34oL9FSTvy64sA";
const LT_PASSWORD_RAW: &str = "The\u{00AD}M\u{00AA}tr\u{2168}";
const LT_PASSWORD_SASLPREP: &str = "TheMatrIX";

const TID_SHORT: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];
const TID_LONG: [u8; 12] = [
    0x78, 0xad, 0x34, 0x33, 0xc6, 0xad, 0x72, 0xc0, 0x29, 0xda, 0x41, 0x2e,
];

/// Hex as the RFC prints it (spaces and line breaks between bytes) to bytes.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .map(|b| match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => panic!("not a lowercase hex digit: {:?}", b as char),
        })
        .collect();
    assert_eq!(digits.len() % 2, 0, "odd number of hex digits");
    digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
}

fn short_term_key() -> IntegrityKey {
    IntegrityKey::short_term(SHORT_TERM_PASSWORD)
}

fn long_term_key() -> IntegrityKey {
    IntegrityKey::long_term(
        PasswordAlgorithm::Md5,
        LT_USERNAME,
        LT_REALM,
        LT_PASSWORD_SASLPREP,
    )
}

fn types(m: &Message<'_>) -> Vec<u16> {
    m.attributes().map(|a| a.typ).collect()
}

#[test]
fn vector_lengths_match_their_headers() {
    for (v, len) in [
        (SAMPLE_REQUEST, 108),
        (SAMPLE_IPV4_RESPONSE, 80),
        (SAMPLE_IPV6_RESPONSE, 92),
        (SAMPLE_LONG_TERM_REQUEST, 116),
    ] {
        let b = hex(v);
        assert_eq!(b.len(), len);
        assert_eq!(u16::from_be_bytes([b[2], b[3]]) as usize, len - 20);
    }
}

#[test]
fn sample_request_2_1() {
    let bytes = hex(SAMPLE_REQUEST);
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.class(), Class::Request);
    assert_eq!(m.method(), Method::BINDING);
    assert_eq!(m.transaction_id(), TransactionId::new(TID_SHORT));
    assert_eq!(m.as_bytes(), &bytes[..]);

    assert_eq!(
        types(&m),
        [
            attr::SOFTWARE,
            attr::PRIORITY,
            attr::ICE_CONTROLLED,
            attr::USERNAME
        ]
    );
    assert_eq!(m.get_str(attr::SOFTWARE).unwrap(), Some("STUN test client"));
    assert_eq!(m.get_u32(attr::PRIORITY).unwrap(), Some(0x6e00_01ff));
    let tie = m.get(attr::ICE_CONTROLLED).unwrap();
    assert_eq!(
        u64::from_be_bytes(tie.try_into().unwrap()),
        0x932f_f9b1_5126_3b36
    );
    assert_eq!(m.get_str(attr::USERNAME).unwrap(), Some("evtj:h6vY"));
    assert_eq!(
        m.unknown_required(&[attr::PRIORITY, attr::USERNAME])
            .collect::<Vec<_>>(),
        Vec::<u16>::new()
    );

    assert!(m.has_message_integrity());
    assert!(!m.has_message_integrity_sha256());
    assert!(m.has_fingerprint());
    assert!(m.has_valid_fingerprint());
    assert_eq!(m.verify_integrity(&short_term_key()), Ok(()));
    assert!(m
        .verify_integrity(&IntegrityKey::short_term("VOkJxbRl1RmTxUk/WvJxBT"))
        .is_err());
    assert!(m.verify_integrity(&IntegrityKey::from_bytes(&[])).is_err());

    let mut buf = [0u8; 256];
    let mut enc = MessageEncoder::new(
        &mut buf,
        Class::Request,
        Method::BINDING,
        TransactionId::new(TID_SHORT),
    )
    .unwrap();
    enc.set_padding_byte(0x20);
    enc.software("STUN test client")
        .unwrap()
        .u32(attr::PRIORITY, 0x6e00_01ff)
        .unwrap()
        .u64(attr::ICE_CONTROLLED, 0x932f_f9b1_5126_3b36)
        .unwrap()
        .string(attr::USERNAME, "evtj:h6vY")
        .unwrap()
        .message_integrity(&short_term_key())
        .unwrap()
        .fingerprint()
        .unwrap();
    let n = enc.finish();
    assert_eq!(&buf[..n], &bytes[..]);
}

fn check_sample_response(vector: &str, mapped: &str) {
    let bytes = hex(vector);
    let mapped: SocketAddr = mapped.parse().unwrap();
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.class(), Class::Success);
    assert_eq!(m.method(), Method::BINDING);
    assert_eq!(m.transaction_id(), TransactionId::new(TID_SHORT));

    assert_eq!(types(&m), [attr::SOFTWARE, attr::XOR_MAPPED_ADDRESS]);
    assert_eq!(m.get_str(attr::SOFTWARE).unwrap(), Some("test vector"));
    assert_eq!(
        m.get_xor_address(attr::XOR_MAPPED_ADDRESS).unwrap(),
        Some(mapped)
    );
    assert_eq!(
        m.xor_addresses(attr::XOR_MAPPED_ADDRESS)
            .collect::<Result<Vec<_>, _>>()
            .unwrap(),
        [mapped]
    );
    // The raw value decodes to the XOR-ed address, which XOR-ing again undoes.
    let raw = attr::decode_address(m.get(attr::XOR_MAPPED_ADDRESS).unwrap()).unwrap();
    assert_ne!(raw, mapped);
    assert_eq!(attr::xor_addr(raw, &m.transaction_id()), mapped);
    assert_eq!(m.get_address(attr::MAPPED_ADDRESS).unwrap(), None);

    assert!(m.has_valid_fingerprint());
    assert_eq!(m.verify_integrity(&short_term_key()), Ok(()));
    assert!(m
        .verify_integrity(&IntegrityKey::short_term("wrong"))
        .is_err());

    let mut buf = [0u8; 256];
    let mut enc = MessageEncoder::new(
        &mut buf,
        Class::Success,
        Method::BINDING,
        TransactionId::new(TID_SHORT),
    )
    .unwrap();
    enc.set_padding_byte(0x20);
    enc.software("test vector")
        .unwrap()
        .xor_address(attr::XOR_MAPPED_ADDRESS, &mapped)
        .unwrap()
        .message_integrity(&short_term_key())
        .unwrap()
        .fingerprint()
        .unwrap();
    let n = enc.finish();
    assert_eq!(&buf[..n], &bytes[..]);
}

#[test]
fn sample_ipv4_response_2_2() {
    check_sample_response(SAMPLE_IPV4_RESPONSE, "192.0.2.1:32853");
}

#[test]
fn sample_ipv6_response_2_3() {
    check_sample_response(
        SAMPLE_IPV6_RESPONSE,
        "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
    );
}

#[test]
fn sample_long_term_request_2_4() {
    let bytes = hex(SAMPLE_LONG_TERM_REQUEST);
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.class(), Class::Request);
    assert_eq!(m.method(), Method::BINDING);
    assert_eq!(m.transaction_id(), TransactionId::new(TID_LONG));

    assert_eq!(types(&m), [attr::USERNAME, attr::NONCE, attr::REALM]);
    assert_eq!(m.get_str(attr::USERNAME).unwrap(), Some(LT_USERNAME));
    assert_eq!(m.get_str(attr::NONCE).unwrap(), Some(LT_NONCE));
    assert_eq!(m.get_str(attr::REALM).unwrap(), Some(LT_REALM));

    assert!(m.has_message_integrity());
    assert!(!m.has_fingerprint());
    assert!(!m.has_valid_fingerprint());

    // RFC 8489 §9.2.2: key = MD5(username ":" realm ":" SASLprep(password)).
    let key = long_term_key();
    assert_eq!(
        key.as_bytes(),
        &long_term_key_md5(LT_USERNAME, LT_REALM, LT_PASSWORD_SASLPREP)[..]
    );
    assert_eq!(m.verify_integrity(&key), Ok(()));
    // The un-prepared password gives a different key: SASLprep is the caller's job.
    let raw = long_term_key_md5(LT_USERNAME, LT_REALM, LT_PASSWORD_RAW);
    assert_ne!(&raw[..], key.as_bytes());
    assert!(m.verify_integrity(&IntegrityKey::from_bytes(&raw)).is_err());
    // Neither the short-term interpretation nor the SHA-256 algorithm verifies.
    assert!(m
        .verify_integrity(&IntegrityKey::short_term(LT_PASSWORD_SASLPREP))
        .is_err());
    assert!(m
        .verify_integrity(&IntegrityKey::long_term(
            PasswordAlgorithm::Sha256,
            LT_USERNAME,
            LT_REALM,
            LT_PASSWORD_SASLPREP
        ))
        .is_err());

    let mut buf = [0u8; 256];
    let mut enc = MessageEncoder::new(
        &mut buf,
        Class::Request,
        Method::BINDING,
        TransactionId::new(TID_LONG),
    )
    .unwrap();
    enc.string(attr::USERNAME, LT_USERNAME)
        .unwrap()
        .string(attr::NONCE, LT_NONCE)
        .unwrap()
        .string(attr::REALM, LT_REALM)
        .unwrap()
        .message_integrity(&key)
        .unwrap();
    let n = enc.finish();
    assert_eq!(&buf[..n], &bytes[..]);
}

/// Whether `bytes` parses and passes every check the vector passes.
fn still_authentic(bytes: &[u8], key: &IntegrityKey, has_fingerprint: bool) -> bool {
    match Message::parse(bytes) {
        Err(_) => false,
        Ok(m) => m.verify_integrity(key).is_ok() && (!has_fingerprint || m.has_valid_fingerprint()),
    }
}

#[test]
fn every_single_byte_change_is_detected() {
    let cases = [
        (SAMPLE_REQUEST, short_term_key(), true),
        (SAMPLE_IPV4_RESPONSE, short_term_key(), true),
        (SAMPLE_IPV6_RESPONSE, short_term_key(), true),
        (SAMPLE_LONG_TERM_REQUEST, long_term_key(), false),
    ];
    for (vector, key, fp) in &cases {
        let good = hex(vector);
        assert!(still_authentic(&good, key, *fp));
        for i in 0..good.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] ^= mask;
                assert!(
                    !still_authentic(&bad, key, *fp),
                    "byte {i} ^ {mask:#04x} went unnoticed"
                );
            }
        }
    }
}

#[test]
fn every_truncation_is_rejected() {
    for vector in [
        SAMPLE_REQUEST,
        SAMPLE_IPV4_RESPONSE,
        SAMPLE_IPV6_RESPONSE,
        SAMPLE_LONG_TERM_REQUEST,
    ] {
        let good = hex(vector);
        for n in 0..good.len() {
            assert!(Message::parse(&good[..n]).is_err(), "prefix of {n} bytes");
        }
    }
}

fn seed_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target)
}

/// Seed inputs for the fuzz targets: real messages the codec must handle.
fn fuzz_seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut seeds = vec![
        (
            "stun_message",
            "rfc5769-2.1-request.bin",
            hex(SAMPLE_REQUEST),
        ),
        (
            "stun_message",
            "rfc5769-2.2-ipv4-response.bin",
            hex(SAMPLE_IPV4_RESPONSE),
        ),
        (
            "stun_message",
            "rfc5769-2.3-ipv6-response.bin",
            hex(SAMPLE_IPV6_RESPONSE),
        ),
        (
            "stun_message",
            "rfc5769-2.4-long-term-request.bin",
            hex(SAMPLE_LONG_TERM_REQUEST),
        ),
    ];

    let tid = TransactionId::new(*b"tsunagi-seed");
    let peer: SocketAddr = "[2001:db8::7]:49152".parse().unwrap();
    let mut buf = [0u8; 512];

    let mut enc = MessageEncoder::new(&mut buf, Class::Request, Method::ALLOCATE, tid).unwrap();
    enc.requested_transport(attr::PROTO_UDP)
        .unwrap()
        .address_family(attr::REQUESTED_ADDRESS_FAMILY, attr::FAMILY_IPV6)
        .unwrap()
        .even_port(true)
        .unwrap()
        .u32(attr::LIFETIME, 600)
        .unwrap()
        .flag(attr::DONT_FRAGMENT)
        .unwrap()
        .string(attr::USERNAME, "alice")
        .unwrap()
        .string(attr::REALM, LT_REALM)
        .unwrap()
        .string(attr::NONCE, LT_NONCE)
        .unwrap()
        .password_algorithm(PasswordAlgorithm::Sha256.code())
        .unwrap()
        .message_integrity(&long_term_key())
        .unwrap()
        .message_integrity_sha256(&long_term_key())
        .unwrap()
        .fingerprint()
        .unwrap();
    let n = enc.finish();
    let allocate = buf[..n].to_vec();
    seeds.push(("stun_message", "allocate-request.bin", allocate.clone()));

    let mut enc = MessageEncoder::new(&mut buf, Class::Error, Method::ALLOCATE, tid).unwrap();
    enc.error_code(401, "Unauthorized")
        .unwrap()
        .unknown_attributes(&[0x0031, 0x7fff])
        .unwrap()
        .password_algorithms(&[
            PasswordAlgorithm::Md5.code(),
            PasswordAlgorithm::Sha256.code(),
        ])
        .unwrap()
        .string(attr::REALM, LT_REALM)
        .unwrap()
        .string(attr::NONCE, LT_NONCE)
        .unwrap()
        .software("tsunagi")
        .unwrap()
        .fingerprint()
        .unwrap();
    let n = enc.finish();
    seeds.push(("stun_message", "error-response.bin", buf[..n].to_vec()));

    let mut enc = MessageEncoder::new(&mut buf, Class::Success, Method::ALLOCATE, tid).unwrap();
    enc.xor_address(attr::XOR_RELAYED_ADDRESS, &peer)
        .unwrap()
        .xor_address(
            attr::XOR_MAPPED_ADDRESS,
            &"198.51.100.7:3478".parse().unwrap(),
        )
        .unwrap()
        .u32(attr::LIFETIME, 600)
        .unwrap()
        .attr(attr::RESERVATION_TOKEN, &[1, 2, 3, 4, 5, 6, 7, 8])
        .unwrap()
        .message_integrity_sha256(&long_term_key())
        .unwrap();
    let n = enc.finish();
    seeds.push(("stun_message", "allocate-success.bin", buf[..n].to_vec()));

    let mut enc = MessageEncoder::new(&mut buf, Class::Request, Method::CHANNEL_BIND, tid).unwrap();
    enc.channel_number(0x4001)
        .unwrap()
        .xor_address(attr::XOR_PEER_ADDRESS, &peer)
        .unwrap()
        .change_request(true, false)
        .unwrap()
        .attr(attr::RESPONSE_PORT, &[0x0d, 0x96, 0, 0])
        .unwrap()
        .address(attr::OTHER_ADDRESS, &"192.0.2.9:3479".parse().unwrap())
        .unwrap()
        .u32(attr::CONNECTION_ID, 0xdead_beef)
        .unwrap();
    let n = enc.finish();
    seeds.push((
        "stun_message",
        "channel-bind-request.bin",
        buf[..n].to_vec(),
    ));

    let mut enc = MessageEncoder::new(&mut buf, Class::Indication, Method::SEND, tid).unwrap();
    enc.xor_address(attr::XOR_PEER_ADDRESS, &peer)
        .unwrap()
        .attr(attr::DATA, b"hello, peer")
        .unwrap();
    let n = enc.finish();
    let send = buf[..n].to_vec();
    seeds.push(("stun_message", "send-indication.bin", send.clone()));

    let mut frame = |data: &[u8], padded: bool| {
        let n = ChannelData {
            channel: 0x4001,
            data,
        }
        .encode(&mut buf, padded)
        .unwrap();
        buf[..n].to_vec()
    };
    let unpadded = frame(b"hello, peer", false);
    let padded = frame(b"hello, peer", true);
    let empty = frame(b"", false);
    seeds.push(("channel_data", "unpadded.bin", unpadded));
    seeds.push(("channel_data", "padded.bin", padded.clone()));
    seeds.push(("channel_data", "empty.bin", empty.clone()));

    let mut stream = Vec::new();
    stream.extend_from_slice(&hex(SAMPLE_REQUEST));
    stream.extend_from_slice(&padded);
    stream.extend_from_slice(&allocate);
    stream.extend_from_slice(&empty);
    stream.extend_from_slice(&send);
    seeds.push(("tcp_framing", "mixed-stream.bin", stream));
    seeds
}

/// The committed seed corpus under `fuzz/seeds/` equals what [`fuzz_seeds`] builds.
/// `TSUNAGI_WRITE_FUZZ_SEEDS=1 cargo test -p tsunagi-stun --test rfc5769` rewrites it.
#[test]
fn fuzz_seed_corpus_is_current() {
    let write = std::env::var_os("TSUNAGI_WRITE_FUZZ_SEEDS").is_some();
    for (target, name, bytes) in fuzz_seeds() {
        let dir = seed_dir(target);
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), &bytes).unwrap();
        } else if dir.is_dir() {
            let on_disk = std::fs::read(dir.join(name)).unwrap_or_default();
            assert!(
                on_disk == bytes,
                "fuzz/seeds/{target}/{name} is stale; rerun with TSUNAGI_WRITE_FUZZ_SEEDS=1"
            );
        }
    }
}
