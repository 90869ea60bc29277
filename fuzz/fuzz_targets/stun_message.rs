//! Parse a datagram as STUN, run every accessor and every attribute decoder on it,
//! check integrity and fingerprint, then encode it again twice: attribute by attribute
//! as raw values (which must read back identical), and through the typed encoder
//! methods for every attribute whose typed decoder accepts it (which must decode to
//! the same value).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsunagi_stun::attr::{self, ErrorCode};
use tsunagi_stun::{IntegrityKey, Message, MessageEncoder, TransactionId};

/// The RFC 5769 short-term password, so the seed vectors verify.
const PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Message::parse(data) else {
        return;
    };
    let key = IntegrityKey::short_term(PASSWORD);
    let _ = m.verify_integrity(&key);
    let _ = m.has_valid_fingerprint();
    let _ = m.has_message_integrity();
    let _ = m.has_message_integrity_sha256();
    let _ = m.error_code();
    let _ = m.unknown_required(&[attr::USERNAME]).count();
    assert_eq!(m.as_bytes(), data);

    let tid = m.transaction_id();
    for a in m.attributes() {
        assert!(a.offset + 4 + a.value.len() <= data.len());
        assert_eq!(m.contains(a.typ), m.get(a.typ).is_some());
        let _ = m.get_str(a.typ);
        let _ = m.get_u32(a.typ);
        let _ = m.get_address(a.typ);
        let _ = m.get_xor_address(a.typ);
        let _ = m.xor_addresses(a.typ).count();
        decode_all(a.value, &tid);
    }

    raw_reencode(&m);
    typed_reencode(&m, &key);
});

fn decode_all(v: &[u8], tid: &TransactionId) {
    let _ = attr::decode_address(v);
    let _ = attr::decode_xor_address(v, tid);
    let _ = ErrorCode::decode(v);
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

/// Every visible attribute re-encoded as raw bytes reads back identical.
fn raw_reencode(m: &Message<'_>) {
    let mut buf = vec![0u8; m.as_bytes().len()];
    let mut enc = MessageEncoder::new(&mut buf, m.class(), m.method(), m.transaction_id())
        .expect("the input held a 20-byte header, so the buffer does");
    for a in m.attributes() {
        // The visible attributes are a prefix of the input: they fit.
        enc.attr(a.typ, a.value).expect("re-encoding fits");
    }
    let n = enc.finish();
    let again = Message::parse(&buf[..n]).expect("encoder output parses");
    assert_eq!(again.class(), m.class());
    assert_eq!(again.method(), m.method());
    assert_eq!(again.transaction_id(), m.transaction_id());
    assert!(m
        .attributes()
        .map(|a| (a.typ, a.value))
        .eq(again.attributes().map(|a| (a.typ, a.value))));
}

/// A value decoded from an attribute, for comparison after re-encoding.
#[derive(Debug, PartialEq)]
enum Typed<'a> {
    Addr(std::net::SocketAddr),
    Error(u16, String),
    Unknown(Vec<u16>),
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    Bool(bool),
    Pair(bool, bool),
    Token([u8; 8]),
    Text(&'a str),
    Algs(Vec<u16>),
}

fn decode_typed<'a>(typ: u16, v: &'a [u8], tid: &TransactionId) -> Option<Typed<'a>> {
    Some(match typ {
        attr::XOR_MAPPED_ADDRESS | attr::XOR_PEER_ADDRESS | attr::XOR_RELAYED_ADDRESS => {
            Typed::Addr(attr::decode_xor_address(v, tid).ok()?)
        }
        attr::MAPPED_ADDRESS
        | attr::ALTERNATE_SERVER
        | attr::RESPONSE_ORIGIN
        | attr::OTHER_ADDRESS => Typed::Addr(attr::decode_address(v).ok()?),
        attr::ERROR_CODE => {
            let e = ErrorCode::decode(v).ok()?;
            let reason: String = e.reason.chars().take(attr::MAX_TEXT_CHARS).collect();
            Typed::Error(e.code, reason)
        }
        attr::UNKNOWN_ATTRIBUTES => {
            Typed::Unknown(attr::decode_unknown_attributes(v).ok()?.collect())
        }
        attr::CHANNEL_NUMBER => Typed::U16(attr::decode_channel_number(v).ok()?),
        attr::REQUESTED_TRANSPORT => Typed::U8(attr::decode_requested_transport(v).ok()?),
        attr::REQUESTED_ADDRESS_FAMILY | attr::ADDITIONAL_ADDRESS_FAMILY => {
            Typed::U8(attr::decode_address_family(v).ok()?)
        }
        attr::EVEN_PORT => Typed::Bool(attr::decode_even_port(v).ok()?),
        attr::CHANGE_REQUEST => {
            let (ip, port) = attr::decode_change_request(v).ok()?;
            Typed::Pair(ip, port)
        }
        attr::RESERVATION_TOKEN => Typed::Token(attr::decode_reservation_token(v).ok()?),
        attr::RESPONSE_PORT => Typed::U16(attr::decode_response_port(v).ok()?),
        attr::LIFETIME | attr::PRIORITY | attr::CONNECTION_ID | attr::CACHE_TIMEOUT => {
            Typed::U32(attr::decode_u32(v, attr::name(typ)).ok()?)
        }
        attr::ICE_CONTROLLED | attr::ICE_CONTROLLING => {
            Typed::U64(u64::from_be_bytes(v.try_into().ok()?))
        }
        attr::USERNAME | attr::REALM | attr::NONCE | attr::SOFTWARE => {
            Typed::Text(core::str::from_utf8(v).ok()?)
        }
        attr::PASSWORD_ALGORITHM => {
            let (alg, params) = attr::decode_password_algorithm(v).ok()?;
            if !params.is_empty() {
                return None;
            }
            Typed::Algs(vec![alg])
        }
        attr::PASSWORD_ALGORITHMS => {
            let list = attr::decode_password_algorithms(v).ok()?;
            if list.iter().any(|(_, p)| !p.is_empty()) {
                return None;
            }
            Typed::Algs(list.into_iter().map(|(a, _)| a).collect())
        }
        _ => return None,
    })
}

fn encode_typed(
    enc: &mut MessageEncoder<'_>,
    typ: u16,
    t: &Typed<'_>,
) -> Result<(), tsunagi_stun::EncodeError> {
    match (typ, t) {
        (
            attr::XOR_MAPPED_ADDRESS | attr::XOR_PEER_ADDRESS | attr::XOR_RELAYED_ADDRESS,
            Typed::Addr(a),
        ) => enc.xor_address(typ, a)?,
        (_, Typed::Addr(a)) => enc.address(typ, a)?,
        (_, Typed::Error(code, reason)) => enc.error_code(*code, reason)?,
        (_, Typed::Unknown(list)) => enc.unknown_attributes(list)?,
        (attr::CHANNEL_NUMBER, Typed::U16(n)) => enc.channel_number(*n)?,
        (_, Typed::U16(p)) => {
            let b = p.to_be_bytes();
            enc.attr(typ, &[b[0], b[1], 0, 0])?
        }
        (attr::REQUESTED_TRANSPORT, Typed::U8(p)) => enc.requested_transport(*p)?,
        (_, Typed::U8(f)) => enc.address_family(typ, *f)?,
        (_, Typed::Bool(r)) => enc.even_port(*r)?,
        (_, Typed::Pair(ip, port)) => enc.change_request(*ip, *port)?,
        (_, Typed::Token(t)) => enc.attr(typ, t)?,
        (_, Typed::U32(x)) => enc.u32(typ, *x)?,
        (_, Typed::U64(x)) => enc.u64(typ, *x)?,
        (_, Typed::Text(s)) => enc.string(typ, s)?,
        (attr::PASSWORD_ALGORITHM, Typed::Algs(a)) => enc.password_algorithm(a[0])?,
        (_, Typed::Algs(a)) => enc.password_algorithms(a)?,
    };
    Ok(())
}

/// Every attribute that a typed decoder accepts, written again through the typed
/// encoder and protected with every integrity attribute, decodes to the same value.
fn typed_reencode(m: &Message<'_>, key: &IntegrityKey) {
    let tid = m.transaction_id();
    let decoded: Vec<(u16, Typed<'_>)> = m
        .attributes()
        .filter_map(|a| Some((a.typ, decode_typed(a.typ, a.value, &tid)?)))
        .collect();
    // Typed encodings are never longer than the raw values they came from
    // (ERROR-CODE reasons only shrink); the integrity attributes and FINGERPRINT
    // add 24 + 36 + 8 bytes.
    let mut buf = vec![0u8; m.as_bytes().len() + 68];
    let mut enc = MessageEncoder::new(&mut buf, m.class(), m.method(), tid)
        .expect("the buffer holds a header");
    for (typ, t) in &decoded {
        encode_typed(&mut enc, *typ, t).expect("typed re-encoding fits");
    }
    // Near the 64 KiB limit there may be no room left for these: not an error.
    let mi = enc.message_integrity(key).is_ok();
    let mi256 = enc.message_integrity_sha256(key).is_ok();
    let fp = enc.fingerprint().is_ok();
    let n = enc.finish();

    let again = Message::parse(&buf[..n]).expect("encoder output parses");
    let redecoded: Vec<(u16, Typed<'_>)> = again
        .attributes()
        .map(|a| {
            let t = decode_typed(a.typ, a.value, &tid).expect("a typed encoding decodes");
            (a.typ, t)
        })
        .collect();
    assert_eq!(decoded, redecoded);
    if mi || mi256 {
        assert_eq!(again.verify_integrity(key), Ok(()));
    }
    assert_eq!(again.has_valid_fingerprint(), fp);
}
