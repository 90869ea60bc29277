//! Regression suite of malformed input: each case names the exact [`Error`] it must
//! produce, and every case is also run through every parser and decoder of the crate
//! (see [`exercise`]) to hold the panic policy: no input panics.
#![allow(clippy::unwrap_used)]

use tsunagi_stun::attr;
use tsunagi_stun::{
    classify, stream_frame_len, ChannelData, Class, Error, FrameLen, IntegrityKey, Message,
    MessageEncoder, Method, PacketKind, TransactionId, MAGIC_COOKIE,
};

const TID: [u8; 12] = *b"malformed-id";

/// A Binding request header with the given length field, followed by `body`.
fn stun(len: u16, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0x00, 0x01];
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    v.extend_from_slice(&TID);
    v.extend_from_slice(body);
    v
}

/// A Binding request whose length field matches `body`.
fn stun_body(body: &[u8]) -> Vec<u8> {
    stun(u16::try_from(body.len()).unwrap(), body)
}

/// One attribute: type, length `len` (which may lie), then `value` as given.
fn raw_attr(typ: u16, len: u16, value: &[u8]) -> Vec<u8> {
    let mut v = typ.to_be_bytes().to_vec();
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(value);
    v
}

/// One well-formed attribute, zero-padded.
fn attr_padded(typ: u16, value: &[u8]) -> Vec<u8> {
    let mut v = raw_attr(typ, u16::try_from(value.len()).unwrap(), value);
    v.resize(v.len() + (4 - value.len() % 4) % 4, 0);
    v
}

fn parse_err(bytes: &[u8]) -> Error {
    exercise(bytes);
    Message::parse(bytes).unwrap_err()
}

fn channel_err(bytes: &[u8]) -> Error {
    exercise(bytes);
    ChannelData::parse(bytes).unwrap_err()
}

/// Run `bytes` through every entry point that takes untrusted input. Results are
/// ignored: only a panic fails.
fn exercise(bytes: &[u8]) {
    let key = IntegrityKey::short_term("key");
    let _ = classify(bytes);
    let _ = stream_frame_len(bytes);
    let _ = ChannelData::parse(bytes);
    if let Ok(m) = Message::parse(bytes) {
        let _ = m.verify_integrity(&key);
        let _ = m.has_valid_fingerprint();
        let _ = m.error_code();
        let _ = m.unknown_required(&[]).count();
        for a in m.attributes() {
            let _ = m.get_str(a.typ);
            let _ = m.get_u32(a.typ);
            let _ = m.get_address(a.typ);
            let _ = m.get_xor_address(a.typ);
            let _ = m.xor_addresses(a.typ).count();
        }
    }
    decode_all(bytes);
}

fn decode_all(v: &[u8]) {
    let tid = TransactionId::new(TID);
    let _ = attr::decode_address(v);
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
    let _ = attr::decode_u32(v, "u32");
}

// ---- STUN header ----

#[test]
fn empty_input() {
    assert_eq!(parse_err(&[]), Error::Truncated("message type"));
}

#[test]
fn one_byte_input() {
    assert_eq!(parse_err(&[0x00]), Error::Truncated("message type"));
    assert_eq!(parse_err(&[0xff]), Error::Truncated("message type"));
}

#[test]
fn truncated_header() {
    let h = stun(0, &[]);
    assert_eq!(parse_err(&h[..2]), Error::Truncated("message length"));
    assert_eq!(parse_err(&h[..3]), Error::Truncated("message length"));
    assert_eq!(parse_err(&h[..4]), Error::Truncated("magic cookie"));
    assert_eq!(parse_err(&h[..7]), Error::Truncated("magic cookie"));
    assert_eq!(parse_err(&h[..8]), Error::Truncated("transaction id"));
    assert_eq!(parse_err(&h[..19]), Error::Truncated("transaction id"));
    assert!(Message::parse(&h).is_ok());
}

#[test]
fn first_two_bits_set() {
    for first in [0x40u8, 0x80, 0xc0, 0xff] {
        let mut b = stun(0, &[]);
        b[0] = first;
        assert_eq!(parse_err(&b), Error::NotStun, "first byte {first:#04x}");
    }
    let cd = [0x40, 0x00, 0x00, 0x10, 0x21, 0x12, 0xa4, 0x42];
    assert_eq!(parse_err(&cd), Error::NotStun);
}

#[test]
fn bad_magic_cookie() {
    let mut b = stun(0, &[]);
    b[4] ^= 0x01;
    assert_eq!(parse_err(&b), Error::BadMagicCookie);
    // An RFC 3489 message: the cookie bytes are part of a 128-bit transaction ID.
    let mut b = stun(0, &[]);
    b[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(parse_err(&b), Error::BadMagicCookie);
}

#[test]
fn length_not_a_multiple_of_four() {
    for len in [1u16, 2, 3, 5, 0xffff] {
        let b = stun(len, &vec![0; usize::from(len)]);
        assert_eq!(
            parse_err(&b),
            Error::BadLength("not a multiple of 4"),
            "length {len}"
        );
    }
}

#[test]
fn length_does_not_match_datagram() {
    let mismatch = Error::BadLength("header length does not match the datagram");
    // Declared longer than what arrived.
    assert_eq!(parse_err(&stun(8, &[0; 4])), mismatch);
    // Declared shorter: trailing bytes after the message.
    assert_eq!(parse_err(&stun(0, &[0; 4])), mismatch);
    assert_eq!(parse_err(&stun(4, &attr_padded(0x8000, &[0; 4]))), mismatch);
}

#[test]
fn huge_declared_lengths() {
    let mismatch = Error::BadLength("header length does not match the datagram");
    assert_eq!(parse_err(&stun(0xfffc, &[])), mismatch);
    assert_eq!(parse_err(&stun(0xfffc, &[0; 64])), mismatch);
    let b = stun_body(&raw_attr(attr::SOFTWARE, 0xffff, &[0; 4]));
    assert_eq!(parse_err(&b), Error::Truncated("attribute value"));
    let b = stun_body(&raw_attr(attr::DATA, 0xfffc, &[0; 12]));
    assert_eq!(parse_err(&b), Error::Truncated("attribute value"));
}

// ---- attribute framing ----

#[test]
fn attribute_header_cut_short() {
    // A lone 4-byte chunk is a full attribute header; the framing is then the
    // attribute's length field pointing past the end.
    let b = stun_body(&raw_attr(attr::USERNAME, 4, &[]));
    assert_eq!(parse_err(&b), Error::Truncated("attribute value"));
}

#[test]
fn attribute_length_past_end() {
    let b = stun_body(&raw_attr(attr::USERNAME, 8, b"abcd"));
    assert_eq!(parse_err(&b), Error::Truncated("attribute value"));
    let mut body = attr_padded(attr::SOFTWARE, b"ok");
    body.extend(raw_attr(attr::USERNAME, 5, b"abcd"));
    assert_eq!(
        parse_err(&stun_body(&body)),
        Error::Truncated("attribute value")
    );
}

#[test]
fn missing_padding() {
    // The last attribute unpadded: the message length is no longer a multiple of 4.
    let b = stun_body(&raw_attr(attr::USERNAME, 5, b"alice"));
    assert_eq!(parse_err(&b), Error::BadLength("not a multiple of 4"));
    // An unpadded attribute followed by another: the parser takes the next header as
    // padding and the framing falls apart.
    let mut body = raw_attr(attr::USERNAME, 5, b"alice");
    body.extend(raw_attr(attr::SOFTWARE, 3, b"xyz"));
    assert_eq!(body.len() % 4, 0);
    assert_eq!(
        parse_err(&stun_body(&body)),
        Error::Truncated("attribute value")
    );
}

#[test]
fn padding_content_is_ignored() {
    // RFC 8489 §14: padding bits are ignored by the receiver (RFC 5769 pads with spaces).
    let mut body = raw_attr(attr::USERNAME, 5, b"alice");
    body.extend_from_slice(&[0xff, 0x20, 0x7f]);
    let b = stun_body(&body);
    exercise(&b);
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.get_str(attr::USERNAME).unwrap(), Some("alice"));
}

#[test]
fn attribute_after_fingerprint() {
    let mut body = attr_padded(attr::FINGERPRINT, &[0; 4]);
    body.extend(attr_padded(attr::SOFTWARE, b"late"));
    assert_eq!(
        parse_err(&stun_body(&body)),
        Error::AttributeAfterFingerprint
    );
    // A second FINGERPRINT.
    let mut body = attr_padded(attr::FINGERPRINT, &[0; 4]);
    body.extend(attr_padded(attr::FINGERPRINT, &[0; 4]));
    assert_eq!(
        parse_err(&stun_body(&body)),
        Error::AttributeAfterFingerprint
    );
    // MESSAGE-INTEGRITY after FINGERPRINT.
    let mut body = attr_padded(attr::FINGERPRINT, &[0; 4]);
    body.extend(attr_padded(attr::MESSAGE_INTEGRITY, &[0; 20]));
    assert_eq!(
        parse_err(&stun_body(&body)),
        Error::AttributeAfterFingerprint
    );
}

#[test]
fn wrong_size_message_integrity() {
    for len in [0usize, 4, 16, 19, 21, 24, 32] {
        let b = stun_body(&attr_padded(attr::MESSAGE_INTEGRITY, &vec![0; len]));
        assert_eq!(
            parse_err(&b),
            Error::BadAttribute("MESSAGE-INTEGRITY"),
            "length {len}"
        );
    }
}

#[test]
fn wrong_size_message_integrity_sha256() {
    // RFC 8489 §14.6: 16 to 32 bytes, a multiple of 4.
    for len in [0usize, 12, 15, 18, 30, 36, 64] {
        let b = stun_body(&attr_padded(attr::MESSAGE_INTEGRITY_SHA256, &vec![0; len]));
        assert_eq!(
            parse_err(&b),
            Error::BadAttribute("MESSAGE-INTEGRITY-SHA256"),
            "length {len}"
        );
    }
    for len in [16usize, 20, 24, 28, 32] {
        let b = stun_body(&attr_padded(attr::MESSAGE_INTEGRITY_SHA256, &vec![0; len]));
        assert!(Message::parse(&b).is_ok(), "length {len}");
    }
}

#[test]
fn wrong_size_fingerprint() {
    for len in [0usize, 2, 3, 5, 8] {
        let b = stun_body(&attr_padded(attr::FINGERPRINT, &vec![0; len]));
        assert_eq!(
            parse_err(&b),
            Error::BadAttribute("FINGERPRINT"),
            "length {len}"
        );
    }
}

#[test]
fn attributes_after_integrity_are_hidden_not_rejected() {
    // RFC 8489 §14.5: attributes after MESSAGE-INTEGRITY (other than
    // MESSAGE-INTEGRITY-SHA256 and FINGERPRINT) are ignored.
    let mut body = attr_padded(attr::MESSAGE_INTEGRITY, &[0; 20]);
    body.extend(attr_padded(attr::USERNAME, b"mallory"));
    let b = stun_body(&body);
    exercise(&b);
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.get(attr::USERNAME), None);
    assert_eq!(m.attributes().count(), 0);
}

#[test]
fn integrity_and_fingerprint_mismatch() {
    let mut buf = [0u8; 128];
    let mut enc = MessageEncoder::new(
        &mut buf,
        Class::Request,
        Method::BINDING,
        TransactionId::new(TID),
    )
    .unwrap();
    enc.software("x")
        .unwrap()
        .message_integrity(&IntegrityKey::short_term("right"))
        .unwrap()
        .fingerprint()
        .unwrap();
    let n = enc.finish();
    let m = Message::parse(&buf[..n]).unwrap();
    assert!(m
        .verify_integrity(&IntegrityKey::short_term("wrong"))
        .is_err());
    assert!(m.has_valid_fingerprint());
    let mut bad = buf[..n].to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    exercise(&bad);
    assert!(!Message::parse(&bad).unwrap().has_valid_fingerprint());

    let b = stun_body(&attr_padded(attr::SOFTWARE, b"no integrity"));
    let m = Message::parse(&b).unwrap();
    assert!(m.verify_integrity(&IntegrityKey::short_term("k")).is_err());
    assert!(!m.has_valid_fingerprint());
}

// ---- attribute values ----

#[test]
fn bad_address_family() {
    for family in [0x00u8, 0x03, 0x04, 0xff] {
        let v = [0, family, 0x12, 0x34, 192, 0, 2, 1];
        assert_eq!(
            attr::decode_address(&v),
            Err(Error::BadAddressFamily(family))
        );
        let b = stun_body(&attr_padded(attr::XOR_MAPPED_ADDRESS, &v));
        exercise(&b);
        let m = Message::parse(&b).unwrap();
        assert_eq!(
            m.get_xor_address(attr::XOR_MAPPED_ADDRESS),
            Err(Error::BadAddressFamily(family))
        );
    }
}

#[test]
fn bad_address_length() {
    assert_eq!(
        attr::decode_address(&[]),
        Err(Error::Truncated("address reserved byte"))
    );
    assert_eq!(
        attr::decode_address(&[0]),
        Err(Error::Truncated("address family"))
    );
    assert_eq!(
        attr::decode_address(&[0, 1, 0]),
        Err(Error::Truncated("port"))
    );
    assert_eq!(
        attr::decode_address(&[0, 1, 0, 80, 10, 0, 0]),
        Err(Error::Truncated("IPv4 address"))
    );
    assert_eq!(
        attr::decode_address(&[0, 2, 0, 80, 10, 0, 0, 1]),
        Err(Error::Truncated("IPv6 address"))
    );
    // An IPv4 family with an IPv6-sized value.
    let mut v = vec![0, 1, 0, 80];
    v.extend_from_slice(&[0; 16]);
    assert_eq!(
        attr::decode_address(&v),
        Err(Error::TrailingBytes("address"))
    );
}

#[test]
fn bad_error_code() {
    assert_eq!(
        attr::ErrorCode::decode(&[0, 0, 4]),
        Err(Error::Truncated("ERROR-CODE number"))
    );
    for (class, number) in [(2u8, 0u8), (7, 0), (0, 0), (4, 100), (5, 255)] {
        assert_eq!(
            attr::ErrorCode::decode(&[0, 0, class, number]),
            Err(Error::BadAttribute("ERROR-CODE")),
            "{class} {number}"
        );
    }
    assert_eq!(
        attr::ErrorCode::decode(&[0, 0, 4, 1, 0xff, 0xfe]),
        Err(Error::NotUtf8("ERROR-CODE reason"))
    );
    // Reserved bits above the class are ignored.
    assert_eq!(
        attr::ErrorCode::decode(&[0xff, 0xff, 0xfc, 20])
            .unwrap()
            .code,
        420
    );
}

#[test]
fn bad_fixed_size_values() {
    assert_eq!(
        attr::decode_unknown_attributes(&[0, 1, 0]).err(),
        Some(Error::BadAttribute("UNKNOWN-ATTRIBUTES"))
    );
    assert_eq!(
        attr::decode_channel_number(&[0x40, 0]),
        Err(Error::Truncated("CHANNEL-NUMBER reserved"))
    );
    assert_eq!(
        attr::decode_channel_number(&[0x40, 0, 0, 0, 0]),
        Err(Error::TrailingBytes("CHANNEL-NUMBER"))
    );
    assert_eq!(
        attr::decode_requested_transport(&[17]),
        Err(Error::Truncated("REQUESTED-TRANSPORT reserved"))
    );
    assert_eq!(
        attr::decode_address_family(&[1, 0, 0, 0, 0]),
        Err(Error::TrailingBytes("address family"))
    );
    assert_eq!(
        attr::decode_even_port(&[]),
        Err(Error::Truncated("EVEN-PORT"))
    );
    assert_eq!(
        attr::decode_even_port(&[0x80, 0]),
        Err(Error::TrailingBytes("EVEN-PORT"))
    );
    assert_eq!(
        attr::decode_reservation_token(&[0; 7]),
        Err(Error::Truncated("RESERVATION-TOKEN"))
    );
    assert_eq!(
        attr::decode_change_request(&[0; 8]),
        Err(Error::TrailingBytes("CHANGE-REQUEST"))
    );
    assert_eq!(
        attr::decode_response_port(&[0; 3]),
        Err(Error::Truncated("RESPONSE-PORT reserved"))
    );
    assert_eq!(
        attr::decode_u32(&[0; 3], "LIFETIME"),
        Err(Error::Truncated("LIFETIME"))
    );
}

#[test]
fn bad_password_algorithms() {
    assert_eq!(
        attr::decode_password_algorithm(&[0, 1, 0, 8, 0, 0, 0, 0]),
        Err(Error::Truncated("PASSWORD-ALGORITHM parameters"))
    );
    assert_eq!(
        attr::decode_password_algorithm(&[0, 1, 0, 1, 0xaa]),
        Err(Error::Truncated("PASSWORD-ALGORITHM padding"))
    );
    assert_eq!(
        attr::decode_password_algorithm(&[0, 1, 0, 0, 0, 2, 0, 0]),
        Err(Error::TrailingBytes("PASSWORD-ALGORITHM"))
    );
    assert_eq!(
        attr::decode_password_algorithms(&[0, 1, 0]),
        Err(Error::Truncated("PASSWORD-ALGORITHMS parameters length"))
    );
    let many: Vec<u8> = (0..17).flat_map(|_| [0, 1, 0, 0]).collect();
    assert_eq!(
        attr::decode_password_algorithms(&many),
        Err(Error::BadAttribute(
            "PASSWORD-ALGORITHMS (too many entries)"
        ))
    );
}

#[test]
fn typed_getters_reject_bad_values() {
    let mut body = attr_padded(attr::USERNAME, &[0xc3, 0x28]);
    body.extend(attr_padded(attr::LIFETIME, &[0, 0, 1]));
    body.extend(attr_padded(attr::PRIORITY, &[0; 8]));
    body.extend(attr_padded(attr::ERROR_CODE, &[0, 0, 1, 0]));
    body.extend(attr_padded(attr::MAPPED_ADDRESS, &[0, 9, 0, 0]));
    let b = stun_body(&body);
    exercise(&b);
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.get_str(attr::USERNAME), Err(Error::NotUtf8("USERNAME")));
    assert_eq!(m.get_u32(attr::LIFETIME), Err(Error::Truncated("LIFETIME")));
    assert_eq!(
        m.get_u32(attr::PRIORITY),
        Err(Error::TrailingBytes("PRIORITY"))
    );
    assert_eq!(m.error_code(), Err(Error::BadAttribute("ERROR-CODE")));
    assert_eq!(
        m.get_address(attr::MAPPED_ADDRESS),
        Err(Error::BadAddressFamily(9))
    );
}

// ---- ChannelData ----

#[test]
fn channel_data_accepts_the_rfc5766_range() {
    for ch in [0x4000u16, 0x4fff, 0x5000, 0x7ffe] {
        let mut b = ch.to_be_bytes().to_vec();
        b.extend_from_slice(&[0, 0]);
        assert_eq!(ChannelData::parse(&b).map(|c| c.channel), Ok(ch));
    }
}

#[test]
fn channel_data_bad_channel_number() {
    for ch in [0x0000u16, 0x0001, 0x3fff, 0x7fff, 0x8000, 0xffff] {
        let mut b = ch.to_be_bytes().to_vec();
        b.extend_from_slice(&[0, 0]);
        assert_eq!(channel_err(&b), Error::BadChannelNumber(ch), "{ch:#06x}");
    }
}

#[test]
fn channel_data_short() {
    assert_eq!(
        channel_err(&[]),
        Error::Truncated("ChannelData channel number")
    );
    assert_eq!(
        channel_err(&[0x40]),
        Error::Truncated("ChannelData channel number")
    );
    assert_eq!(
        channel_err(&[0x40, 0x00, 0x00]),
        Error::Truncated("ChannelData length")
    );
    assert_eq!(
        channel_err(&[0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4]),
        Error::Truncated("ChannelData data")
    );
    assert_eq!(
        channel_err(&[0x40, 0x00, 0xff, 0xff, 1, 2, 3, 4]),
        Error::Truncated("ChannelData data")
    );
}

#[test]
fn channel_data_trailing_bytes() {
    let trailing = Error::TrailingBytes("ChannelData");
    // Data of 4 bytes needs no padding: any byte after it is trailing.
    for extra in 1..=4 {
        let mut b = vec![0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4];
        b.resize(b.len() + extra, 0);
        assert_eq!(channel_err(&b), trailing, "{extra} extra bytes");
    }
    // Data of 5 bytes takes exactly 3 bytes of padding (RFC 8656 §12.5), not 1, 2 or 4.
    for extra in [1, 2, 4, 7] {
        let mut b = vec![0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5];
        b.resize(b.len() + extra, 0);
        assert_eq!(channel_err(&b), trailing, "{extra} extra bytes");
    }
    let mut b = vec![0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5];
    assert_eq!(ChannelData::parse(&b).unwrap().data, &[1, 2, 3, 4, 5]);
    b.extend_from_slice(&[0, 0, 0]);
    assert_eq!(ChannelData::parse(&b).unwrap().data, &[1, 2, 3, 4, 5]);
    // A second frame glued to the first is trailing data, not a batch.
    let mut two = vec![0x40, 0x01, 0x00, 0x00];
    two.extend_from_slice(&[0x40, 0x01, 0x00, 0x00]);
    assert_eq!(channel_err(&two), trailing);
}

#[test]
fn channel_data_encode_limits() {
    let mut small = [0u8; 7];
    let cd = ChannelData {
        channel: 0x4000,
        data: b"1234",
    };
    assert!(cd.encode(&mut small, false).is_err());
    assert!(ChannelData::write_header(&mut small[..3], 0x4000, 4).is_err());
    let big = vec![0u8; 65536];
    let mut out = vec![0u8; 65540];
    assert!(ChannelData {
        channel: 0x4000,
        data: &big
    }
    .encode(&mut out, false)
    .is_err());
}

// ---- TCP framing ----

#[test]
fn tcp_framing_incomplete() {
    assert_eq!(stream_frame_len(&[]), FrameLen::Incomplete);
    assert_eq!(stream_frame_len(&[0x00]), FrameLen::Incomplete);
    assert_eq!(stream_frame_len(&[0x01, 0x01, 0x00]), FrameLen::Incomplete);
    assert_eq!(stream_frame_len(&[0x40]), FrameLen::Incomplete);
    assert_eq!(stream_frame_len(&[0x4f, 0xff, 0x00]), FrameLen::Incomplete);
}

#[test]
fn tcp_framing_invalid() {
    // Neither STUN (first byte 0..=3) nor ChannelData (0x40..=0x7F, RFC 7983 and RFC 5766).
    for first in [0x04u8, 0x16, 0x3f, 0x80, 0xff] {
        assert_eq!(
            stream_frame_len(&[first]),
            FrameLen::Invalid,
            "{first:#04x}"
        );
        assert_eq!(
            stream_frame_len(&[first, 0, 0, 0]),
            FrameLen::Invalid,
            "{first:#04x}"
        );
    }
    // A STUN length that is not a multiple of 4.
    assert_eq!(
        stream_frame_len(&[0x00, 0x01, 0x00, 0x02]),
        FrameLen::Invalid
    );
    assert_eq!(
        stream_frame_len(&[0x00, 0x01, 0xff, 0xff]),
        FrameLen::Invalid
    );
    // TLS (0x16) and an HTTP POST on a STUN port.
    assert_eq!(
        stream_frame_len(&[0x16, 0x03, 0x01, 0x02]),
        FrameLen::Invalid
    );
    // 'G' (0x47) and 'P' (0x50) fall in the ChannelData range (RFC 5766 channels reach
    // 0x7FFE): framing alone cannot tell HTTP apart; the runtime's idle timeout ends
    // such connections.
    assert_eq!(
        stream_frame_len(b"POST / HTTP/1.1\r\n"),
        FrameLen::ChannelData(4 + 0x5354)
    );
    assert_eq!(
        stream_frame_len(b"GET / HTTP/1.1\r\n"),
        FrameLen::ChannelData(4 + 0x5420)
    );
}

#[test]
fn tcp_framing_lengths() {
    assert_eq!(
        stream_frame_len(&[0x00, 0x01, 0x00, 0x00]),
        FrameLen::Stun(20)
    );
    assert_eq!(
        stream_frame_len(&[0x00, 0x01, 0xff, 0xfc]),
        FrameLen::Stun(20 + 0xfffc)
    );
    // RFC 8656 §12.5: over TCP ChannelData is padded to a multiple of 4.
    assert_eq!(
        stream_frame_len(&[0x40, 0x00, 0x00, 0x00]),
        FrameLen::ChannelData(4)
    );
    assert_eq!(
        stream_frame_len(&[0x40, 0x00, 0x00, 0x05]),
        FrameLen::ChannelData(12)
    );
    assert_eq!(
        stream_frame_len(&[0x4f, 0xff, 0xff, 0xff]),
        FrameLen::ChannelData(4 + 0xffff + 1)
    );
    // The header alone is enough; the caller waits for the rest of the frame.
    assert_eq!(
        stream_frame_len(&[0x00, 0x01, 0x00, 0x08, 0x21]),
        FrameLen::Stun(28)
    );
}

#[test]
fn tcp_frame_with_bad_content_is_rejected_by_the_parser() {
    // Framing only looks at 4 bytes; the frame itself is then parsed and rejected.
    let mut frame = stun(4, &[0; 4]);
    frame[4] = 0;
    assert_eq!(stream_frame_len(&frame), FrameLen::Stun(24));
    assert_eq!(parse_err(&frame), Error::BadMagicCookie);
    // A ChannelData frame in 0x4000..=0x4FFF framed but with trailing padding garbage.
    let frame = [0x40, 0x00, 0x00, 0x01, 0xaa, 0, 0, 0];
    assert_eq!(stream_frame_len(&frame), FrameLen::ChannelData(8));
    assert_eq!(ChannelData::parse(&frame).unwrap().data, &[0xaa]);
}

#[test]
fn classify_first_byte() {
    assert_eq!(classify(&[]), PacketKind::Other);
    assert_eq!(classify(&[0x00]), PacketKind::Stun);
    assert_eq!(classify(&[0x03]), PacketKind::Stun);
    assert_eq!(classify(&[0x04]), PacketKind::Other);
    assert_eq!(classify(&[0x40]), PacketKind::ChannelData);
    assert_eq!(classify(&[0x4f]), PacketKind::ChannelData);
    assert_eq!(classify(&[0x50]), PacketKind::ChannelData);
    assert_eq!(classify(&[0x7f]), PacketKind::ChannelData);
    assert_eq!(classify(&[0x80]), PacketKind::Other);
}

// ---- no panics ----

#[test]
fn short_inputs_never_panic() {
    // Every input of up to 2 bytes, and every 4-byte prefix over a few interesting bytes.
    exercise(&[]);
    for a in 0..=255u8 {
        exercise(&[a]);
        for b in 0..=255u8 {
            exercise(&[a, b]);
        }
    }
    let interesting = [0x00u8, 0x01, 0x03, 0x04, 0x14, 0x40, 0x4f, 0x80, 0xfc, 0xff];
    for &a in &interesting {
        for &b in &interesting {
            for &c in &interesting {
                for &d in &interesting {
                    let mut v = vec![a, b, c, d];
                    exercise(&v);
                    v.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
                    v.extend_from_slice(&TID);
                    v.extend_from_slice(&[a, b, c, d]);
                    exercise(&v);
                }
            }
        }
    }
}

#[test]
fn every_attribute_type_with_every_short_length_never_panics() {
    let types = [
        attr::MAPPED_ADDRESS,
        attr::CHANGE_REQUEST,
        attr::USERNAME,
        attr::MESSAGE_INTEGRITY,
        attr::ERROR_CODE,
        attr::UNKNOWN_ATTRIBUTES,
        attr::CHANNEL_NUMBER,
        attr::LIFETIME,
        attr::XOR_PEER_ADDRESS,
        attr::DATA,
        attr::REALM,
        attr::NONCE,
        attr::XOR_RELAYED_ADDRESS,
        attr::REQUESTED_ADDRESS_FAMILY,
        attr::EVEN_PORT,
        attr::REQUESTED_TRANSPORT,
        attr::DONT_FRAGMENT,
        attr::MESSAGE_INTEGRITY_SHA256,
        attr::PASSWORD_ALGORITHM,
        attr::USERHASH,
        attr::XOR_MAPPED_ADDRESS,
        attr::RESERVATION_TOKEN,
        attr::PRIORITY,
        attr::USE_CANDIDATE,
        attr::PADDING,
        attr::RESPONSE_PORT,
        attr::CONNECTION_ID,
        attr::ADDITIONAL_ADDRESS_FAMILY,
        attr::ADDRESS_ERROR_CODE,
        attr::PASSWORD_ALGORITHMS,
        attr::ALTERNATE_DOMAIN,
        attr::ICMP,
        attr::SOFTWARE,
        attr::ALTERNATE_SERVER,
        attr::CACHE_TIMEOUT,
        attr::FINGERPRINT,
        attr::ICE_CONTROLLED,
        attr::ICE_CONTROLLING,
        attr::RESPONSE_ORIGIN,
        attr::OTHER_ADDRESS,
    ];
    for &t in &types {
        assert_ne!(attr::name(t), "unknown attribute");
        for len in 0..=40usize {
            let value: Vec<u8> = (0..len).map(|i| (i * 37 + 1) as u8).collect();
            let b = stun_body(&attr_padded(t, &value));
            exercise(&b);
            decode_all(&value);
        }
    }
}
