//! Property tests: whatever [`MessageEncoder`] and [`ChannelData::encode`] write,
//! the parsers read back unchanged; and no input makes a parser panic.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;
use tsunagi_stun::attr;
use tsunagi_stun::{
    stream_frame_len, ChannelData, Class, FrameLen, IntegrityKey, Message, MessageEncoder, Method,
    TransactionId, HEADER_LEN, MAGIC_COOKIE,
};

/// Attribute types the parser treats specially; generic attributes avoid them.
fn is_special(t: u16) -> bool {
    matches!(
        t,
        attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 | attr::FINGERPRINT
    )
}

fn class() -> impl Strategy<Value = Class> {
    prop_oneof![
        Just(Class::Request),
        Just(Class::Indication),
        Just(Class::Success),
        Just(Class::Error),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    (0u16..0x1000).prop_map(Method)
}

fn tid() -> impl Strategy<Value = TransactionId> {
    any::<[u8; 12]>().prop_map(TransactionId::new)
}

fn attribute() -> impl Strategy<Value = (u16, Vec<u8>)> {
    (
        any::<u16>().prop_filter("integrity/fingerprint", |t| !is_special(*t)),
        prop::collection::vec(any::<u8>(), 0..=300),
    )
}

fn attributes() -> impl Strategy<Value = Vec<(u16, Vec<u8>)>> {
    prop::collection::vec(attribute(), 0..8)
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

fn key_bytes() -> impl Strategy<Value = Vec<u8>> {
    // Past 64 bytes the key is stored on the heap and HMAC hashes it first.
    prop::collection::vec(any::<u8>(), 0..100)
}

/// Encode a message with the given attributes, then whatever `tail` appends.
fn encode(
    buf: &mut [u8],
    class: Class,
    method: Method,
    tid: TransactionId,
    attrs: &[(u16, Vec<u8>)],
    pad: u8,
    tail: impl FnOnce(&mut MessageEncoder<'_>),
) -> usize {
    let mut enc = MessageEncoder::new(buf, class, method, tid).unwrap();
    enc.set_padding_byte(pad);
    for (t, v) in attrs {
        enc.attr(*t, v).unwrap();
    }
    tail(&mut enc);
    enc.finish()
}

fn check_header(m: &Message<'_>, class: Class, method: Method, tid: TransactionId) {
    assert_eq!(m.class(), class);
    assert_eq!(m.method(), method);
    assert_eq!(m.transaction_id(), tid);
    let raw = m.as_bytes();
    assert_eq!(raw[0] & 0xc0, 0);
    assert_eq!(&raw[4..8], &MAGIC_COOKIE.to_be_bytes());
    assert_eq!(
        usize::from(u16::from_be_bytes([raw[2], raw[3]])),
        raw.len() - HEADER_LEN
    );
}

/// Run every read-only accessor; used on parsed input of unknown shape.
fn exercise(bytes: &[u8]) {
    let key = IntegrityKey::short_term("k");
    let _ = stream_frame_len(bytes);
    let _ = ChannelData::parse(bytes);
    if let Ok(m) = Message::parse(bytes) {
        let _ = m.verify_integrity(&key);
        let _ = m.has_valid_fingerprint();
        let _ = m.error_code();
        for a in m.attributes() {
            assert!(a.offset + 4 + a.value.len() <= bytes.len());
            let _ = m.get_str(a.typ);
            let _ = m.get_u32(a.typ);
            let _ = m.get_address(a.typ);
            let _ = m.get_xor_address(a.typ);
            let tid = m.transaction_id();
            let v = a.value;
            let _ = attr::decode_xor_address(v, &tid);
            let _ = attr::ErrorCode::decode(v);
            let _ = attr::decode_unknown_attributes(v).map(|i| i.count());
            let _ = attr::decode_channel_number(v);
            let _ = attr::decode_requested_transport(v);
            let _ = attr::decode_address_family(v);
            let _ = attr::decode_even_port(v);
            let _ = attr::decode_reservation_token(v);
            let _ = attr::decode_change_request(v);
            let _ = attr::decode_response_port(v);
            let _ = attr::decode_password_algorithm(v);
            let _ = attr::decode_password_algorithms(v);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_attributes_roundtrip(
        class in class(),
        method in method(),
        tid in tid(),
        attrs in attributes(),
        pad in any::<u8>(),
    ) {
        let mut buf = vec![0u8; 4096];
        let n = encode(&mut buf, class, method, tid, &attrs, pad, |_| {});
        prop_assert_eq!(n % 4, 0);
        let m = Message::parse(&buf[..n]).unwrap();
        check_header(&m, class, method, tid);
        let got: Vec<(u16, Vec<u8>)> =
            m.attributes().map(|a| (a.typ, a.value.to_vec())).collect();
        prop_assert_eq!(&got, &attrs);
        for (t, _) in &attrs {
            let first = attrs.iter().find(|(t2, _)| t2 == t).map(|(_, v)| &v[..]);
            prop_assert_eq!(m.get(*t), first);
            prop_assert!(m.contains(*t));
        }
        prop_assert!(!m.has_message_integrity());
        prop_assert!(!m.has_fingerprint());
        let unknown: Vec<u16> = m.unknown_required(&[]).collect();
        let want: Vec<u16> = attrs.iter().map(|(t, _)| *t).filter(|t| *t < 0x8000).collect();
        prop_assert_eq!(unknown, want);
    }

    #[test]
    fn encoder_reports_small_buffers(attrs in attributes(), cut in 0usize..4096) {
        let mut big = vec![0u8; 4096];
        let full = encode(&mut big, Class::Request, Method::BINDING, TransactionId::new([1; 12]), &attrs, 0, |_| {});
        let cut = cut % (full + 1);
        let mut small = vec![0u8; cut];
        let ok = (|| {
            let mut enc = MessageEncoder::new(&mut small, Class::Request, Method::BINDING, TransactionId::new([1; 12])).ok()?;
            for (t, v) in &attrs {
                enc.attr(*t, v).ok()?;
            }
            Some(enc.finish())
        })();
        prop_assert_eq!(ok.is_some(), cut >= full);
        if let Some(n) = ok {
            prop_assert_eq!(&small[..n], &big[..full]);
        }
    }

    #[test]
    fn xor_address_roundtrip(tid in tid(), a in socket_addr(), b in socket_addr(), class in class()) {
        let mut buf = [0u8; 128];
        let mut enc = MessageEncoder::new(&mut buf, class, Method::ALLOCATE, tid).unwrap();
        enc.xor_address(attr::XOR_MAPPED_ADDRESS, &a).unwrap();
        enc.xor_address(attr::XOR_PEER_ADDRESS, &a).unwrap();
        enc.xor_address(attr::XOR_PEER_ADDRESS, &b).unwrap();
        enc.address(attr::MAPPED_ADDRESS, &b).unwrap();
        let n = enc.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        prop_assert_eq!(m.get_xor_address(attr::XOR_MAPPED_ADDRESS).unwrap(), Some(a));
        let peers: Vec<SocketAddr> = m
            .xor_addresses(attr::XOR_PEER_ADDRESS)
            .collect::<Result<_, _>>()
            .unwrap();
        prop_assert_eq!(peers, vec![a, b]);
        prop_assert_eq!(m.get_address(attr::MAPPED_ADDRESS).unwrap(), Some(b));
        prop_assert_eq!(attr::xor_addr(attr::xor_addr(a, &tid), &tid), a);
        let raw = m.get(attr::XOR_MAPPED_ADDRESS).unwrap();
        prop_assert_eq!(raw.len(), attr::address_len(&a));
        prop_assert_eq!(attr::decode_address(raw).unwrap(), attr::xor_addr(a, &tid));
    }

    #[test]
    fn error_code_roundtrip(code in 300u16..=699, reason in "\\PC{0,200}", tid in tid()) {
        let mut buf = vec![0u8; 2048];
        let mut enc = MessageEncoder::new(&mut buf, Class::Error, Method::ALLOCATE, tid).unwrap();
        enc.error_code(code, &reason).unwrap();
        let n = enc.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        let ec = m.error_code().unwrap().unwrap();
        prop_assert_eq!(ec.code, code);
        // RFC 8489 §14.8: the reason phrase is fewer than 128 characters' worth;
        // the encoder keeps the first 128.
        let want: String = reason.chars().take(attr::MAX_TEXT_CHARS).collect();
        prop_assert_eq!(ec.reason, want.as_str());
    }

    #[test]
    fn message_integrity_roundtrip(
        class in class(),
        method in method(),
        tid in tid(),
        attrs in attributes(),
        key in key_bytes(),
        other in key_bytes(),
        fingerprint in any::<bool>(),
    ) {
        prop_assume!(key != other);
        let key = IntegrityKey::from_bytes(&key);
        let other = IntegrityKey::from_bytes(&other);
        let mut buf = vec![0u8; 4096];
        let n = encode(&mut buf, class, method, tid, &attrs, 0, |enc| {
            enc.message_integrity(&key).unwrap();
            if fingerprint {
                enc.fingerprint().unwrap();
            }
        });
        let m = Message::parse(&buf[..n]).unwrap();
        check_header(&m, class, method, tid);
        prop_assert!(m.has_message_integrity());
        prop_assert!(!m.has_message_integrity_sha256());
        prop_assert_eq!(m.verify_integrity(&key), Ok(()));
        prop_assert!(m.verify_integrity(&other).is_err());
        prop_assert_eq!(m.has_fingerprint(), fingerprint);
        prop_assert_eq!(m.has_valid_fingerprint(), fingerprint);
        prop_assert_eq!(m.attributes().count(), attrs.len());
    }

    #[test]
    fn message_integrity_sha256_roundtrip(
        class in class(),
        method in method(),
        tid in tid(),
        attrs in attributes(),
        key in key_bytes(),
        other in key_bytes(),
        with_sha1 in any::<bool>(),
        fingerprint in any::<bool>(),
    ) {
        prop_assume!(key != other);
        let key = IntegrityKey::from_bytes(&key);
        let other = IntegrityKey::from_bytes(&other);
        let mut buf = vec![0u8; 4096];
        let n = encode(&mut buf, class, method, tid, &attrs, 0, |enc| {
            if with_sha1 {
                enc.message_integrity(&key).unwrap();
            }
            enc.message_integrity_sha256(&key).unwrap();
            if fingerprint {
                enc.fingerprint().unwrap();
            }
        });
        let m = Message::parse(&buf[..n]).unwrap();
        prop_assert!(m.has_message_integrity_sha256());
        prop_assert_eq!(m.verify_integrity(&key), Ok(()));
        prop_assert!(m.verify_integrity(&other).is_err());
        prop_assert_eq!(m.has_valid_fingerprint(), fingerprint);
        prop_assert_eq!(m.attributes().count(), attrs.len());
    }

    #[test]
    fn truncated_sha256_integrity_verifies(
        tid in tid(),
        attrs in attributes(),
        key in key_bytes(),
        words in 4usize..=8,
    ) {
        // RFC 8489 §14.6: MESSAGE-INTEGRITY-SHA256 may be truncated to 16..=32 bytes;
        // the HMAC input's length field then ends after the truncated attribute. The
        // MAC is computed here independently of the crate.
        use hmac::{Hmac, Mac};
        let keep = words * 4;
        let mut buf = vec![0u8; 4096];
        let n = encode(&mut buf, Class::Request, Method::BINDING, tid, &attrs, 0, |_| {});
        let mut msg = buf[..n].to_vec();
        let len = u16::try_from(n - HEADER_LEN + 4 + keep).unwrap();
        msg[2..4].copy_from_slice(&len.to_be_bytes());
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).unwrap();
        mac.update(&msg);
        let mac = mac.finalize().into_bytes();
        msg.extend_from_slice(&attr::MESSAGE_INTEGRITY_SHA256.to_be_bytes());
        msg.extend_from_slice(&u16::try_from(keep).unwrap().to_be_bytes());
        msg.extend_from_slice(&mac[..keep]);
        let m = Message::parse(&msg).unwrap();
        let key = IntegrityKey::from_bytes(&key);
        prop_assert_eq!(m.verify_integrity(&key), Ok(()));
        let last = msg.len() - 1;
        msg[last] ^= 1;
        prop_assert!(Message::parse(&msg).unwrap().verify_integrity(&key).is_err());
    }

    #[test]
    fn fingerprint_roundtrip_and_detects_corruption(
        tid in tid(),
        attrs in attributes(),
        flip in any::<usize>(),
        mask in 1u8..=255,
    ) {
        let mut buf = vec![0u8; 4096];
        let n = encode(&mut buf, Class::Indication, Method::SEND, tid, &attrs, 0, |enc| {
            enc.fingerprint().unwrap();
        });
        prop_assert!(Message::parse(&buf[..n]).unwrap().has_valid_fingerprint());
        // CRC-32 detects every single-byte error.
        let i = flip % n;
        buf[i] ^= mask;
        if let Ok(m) = Message::parse(&buf[..n]) {
            prop_assert!(!m.has_valid_fingerprint());
        }
    }

    #[test]
    fn channel_data_roundtrip(
        channel in ChannelData::MIN_CHANNEL..=ChannelData::MAX_CHANNEL,
        data in prop::collection::vec(any::<u8>(), 0..=300),
        padded in any::<bool>(),
    ) {
        let mut buf = vec![0u8; 512];
        let cd = ChannelData { channel, data: &data };
        let n = cd.encode(&mut buf, padded).unwrap();
        prop_assert_eq!(n, ChannelData::encoded_len(data.len(), padded));
        prop_assert_eq!(n.is_multiple_of(4), padded || data.len().is_multiple_of(4));
        prop_assert_eq!(ChannelData::parse(&buf[..n]).unwrap(), cd);
        let framed = ChannelData::encoded_len(data.len(), true);
        prop_assert_eq!(stream_frame_len(&buf[..n]), FrameLen::ChannelData(framed));

        let mut inplace = vec![0u8; 4 + data.len()];
        inplace[4..].copy_from_slice(&data);
        ChannelData::write_header(&mut inplace, channel, u16::try_from(data.len()).unwrap()).unwrap();
        prop_assert_eq!(ChannelData::parse(&inplace).unwrap(), cd);
    }

    #[test]
    fn tcp_stream_splits_back_into_frames(
        frames in prop::collection::vec(
            prop_oneof![
                (attributes(), tid()).prop_map(|(a, t)| (true, a, t, 0u16)),
                (attributes(), tid(), 0x4000u16..=0x4fff).prop_map(|(a, t, c)| (false, a, t, c)),
            ],
            0..6,
        ),
    ) {
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for (is_stun, attrs, tid, channel) in &frames {
            let mut buf = vec![0u8; 4096];
            let n = if *is_stun {
                encode(&mut buf, Class::Request, Method::BINDING, *tid, attrs, 0, |e| {
                    e.fingerprint().unwrap();
                })
            } else {
                let data: Vec<u8> = attrs.iter().flat_map(|(_, v)| v.iter().copied()).take(600).collect();
                ChannelData { channel: *channel, data: &data }.encode(&mut buf, true).unwrap()
            };
            stream.extend_from_slice(&buf[..n]);
            want.push(buf[..n].to_vec());
        }
        let mut got = Vec::new();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let n = match stream_frame_len(rest) {
                FrameLen::Stun(n) => {
                    prop_assert!(Message::parse(&rest[..n]).unwrap().has_valid_fingerprint());
                    n
                }
                FrameLen::ChannelData(n) => {
                    ChannelData::parse(&rest[..n]).unwrap();
                    n
                }
                other => return Err(TestCaseError::fail(format!("{other:?}"))),
            };
            got.push(rest[..n].to_vec());
            rest = &rest[n..];
        }
        prop_assert_eq!(got, want);
    }

    #[test]
    fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        exercise(&bytes);
    }

    #[test]
    fn parse_never_panics_behind_a_valid_header(
        typ in 0u16..0x4000,
        tid in tid(),
        words in prop::collection::vec(any::<[u8; 4]>(), 0..64),
    ) {
        // A consistent header gets random input past the header checks into the
        // attribute walk.
        let mut bytes = typ.to_be_bytes().to_vec();
        bytes.extend_from_slice(&u16::try_from(words.len() * 4).unwrap().to_be_bytes());
        bytes.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        bytes.extend_from_slice(tid.as_bytes());
        bytes.extend(words.iter().flatten());
        exercise(&bytes);
    }

    #[test]
    fn parse_never_panics_on_mutated_messages(
        tid in tid(),
        attrs in attributes(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let mut buf = vec![0u8; 4096];
        let n = encode(&mut buf, Class::Request, Method::ALLOCATE, tid, &attrs, 0, |enc| {
            enc.message_integrity(&IntegrityKey::short_term("k")).unwrap();
            enc.message_integrity_sha256(&IntegrityKey::short_term("k")).unwrap();
            enc.fingerprint().unwrap();
        });
        let mut bytes = buf[..n].to_vec();
        for (at, b) in edits {
            let i = at % bytes.len();
            bytes[i] = b;
        }
        exercise(&bytes);
        exercise(&bytes[..cut % (bytes.len() + 1)]);
    }

    #[test]
    fn stream_frame_len_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..8)) {
        match stream_frame_len(&bytes) {
            FrameLen::Incomplete => prop_assert!(bytes.len() < 4),
            FrameLen::Stun(n) => prop_assert!(n >= HEADER_LEN && n.is_multiple_of(4)),
            FrameLen::ChannelData(n) => prop_assert!(n >= 4 && n.is_multiple_of(4)),
            FrameLen::Invalid => prop_assert!(!bytes.is_empty()),
        }
    }
}
