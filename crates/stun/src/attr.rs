//! Attribute type numbers and value decoders (RFC 8489 §14, RFC 8656 §18,
//! RFC 5780 §7, RFC 6062 §6.2, RFC 8445 §16.1).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::cursor::Cursor;
use crate::{Error, TransactionId, MAGIC_COOKIE};

// Comprehension-required (0x0000-0x7FFF).
pub const MAPPED_ADDRESS: u16 = 0x0001;
/// RFC 5780 CHANGE-REQUEST.
pub const CHANGE_REQUEST: u16 = 0x0003;
pub const USERNAME: u16 = 0x0006;
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
pub const ERROR_CODE: u16 = 0x0009;
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
pub const CHANNEL_NUMBER: u16 = 0x000C;
pub const LIFETIME: u16 = 0x000D;
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
pub const DATA: u16 = 0x0013;
pub const REALM: u16 = 0x0014;
pub const NONCE: u16 = 0x0015;
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
pub const EVEN_PORT: u16 = 0x0018;
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
pub const DONT_FRAGMENT: u16 = 0x001A;
pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
pub const PASSWORD_ALGORITHM: u16 = 0x001D;
pub const USERHASH: u16 = 0x001E;
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
pub const RESERVATION_TOKEN: u16 = 0x0022;
pub const PRIORITY: u16 = 0x0024;
pub const USE_CANDIDATE: u16 = 0x0025;
/// RFC 5780 PADDING.
pub const PADDING: u16 = 0x0026;
/// RFC 5780 RESPONSE-PORT.
pub const RESPONSE_PORT: u16 = 0x0027;
/// RFC 6062 CONNECTION-ID.
pub const CONNECTION_ID: u16 = 0x002A;

// Comprehension-optional (0x8000-0xFFFF).
pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
pub const ALTERNATE_DOMAIN: u16 = 0x8003;
pub const ICMP: u16 = 0x8004;
pub const SOFTWARE: u16 = 0x8022;
pub const ALTERNATE_SERVER: u16 = 0x8023;
pub const CACHE_TIMEOUT: u16 = 0x8027;
pub const FINGERPRINT: u16 = 0x8028;
pub const ICE_CONTROLLED: u16 = 0x8029;
pub const ICE_CONTROLLING: u16 = 0x802A;
/// RFC 5780 RESPONSE-ORIGIN.
pub const RESPONSE_ORIGIN: u16 = 0x802B;
/// RFC 5780 OTHER-ADDRESS.
pub const OTHER_ADDRESS: u16 = 0x802C;

/// REQUESTED-TRANSPORT protocol numbers.
pub const PROTO_UDP: u8 = 17;
pub const PROTO_TCP: u8 = 6;

/// Address family codes used by address attributes and REQUESTED-ADDRESS-FAMILY.
pub const FAMILY_IPV4: u8 = 0x01;
pub const FAMILY_IPV6: u8 = 0x02;

/// The attribute's name, for error messages and logs.
pub fn name(typ: u16) -> &'static str {
    match typ {
        MAPPED_ADDRESS => "MAPPED-ADDRESS",
        CHANGE_REQUEST => "CHANGE-REQUEST",
        USERNAME => "USERNAME",
        MESSAGE_INTEGRITY => "MESSAGE-INTEGRITY",
        ERROR_CODE => "ERROR-CODE",
        UNKNOWN_ATTRIBUTES => "UNKNOWN-ATTRIBUTES",
        CHANNEL_NUMBER => "CHANNEL-NUMBER",
        LIFETIME => "LIFETIME",
        XOR_PEER_ADDRESS => "XOR-PEER-ADDRESS",
        DATA => "DATA",
        REALM => "REALM",
        NONCE => "NONCE",
        XOR_RELAYED_ADDRESS => "XOR-RELAYED-ADDRESS",
        REQUESTED_ADDRESS_FAMILY => "REQUESTED-ADDRESS-FAMILY",
        EVEN_PORT => "EVEN-PORT",
        REQUESTED_TRANSPORT => "REQUESTED-TRANSPORT",
        DONT_FRAGMENT => "DONT-FRAGMENT",
        MESSAGE_INTEGRITY_SHA256 => "MESSAGE-INTEGRITY-SHA256",
        PASSWORD_ALGORITHM => "PASSWORD-ALGORITHM",
        USERHASH => "USERHASH",
        XOR_MAPPED_ADDRESS => "XOR-MAPPED-ADDRESS",
        RESERVATION_TOKEN => "RESERVATION-TOKEN",
        PRIORITY => "PRIORITY",
        USE_CANDIDATE => "USE-CANDIDATE",
        PADDING => "PADDING",
        RESPONSE_PORT => "RESPONSE-PORT",
        CONNECTION_ID => "CONNECTION-ID",
        ADDITIONAL_ADDRESS_FAMILY => "ADDITIONAL-ADDRESS-FAMILY",
        ADDRESS_ERROR_CODE => "ADDRESS-ERROR-CODE",
        PASSWORD_ALGORITHMS => "PASSWORD-ALGORITHMS",
        ALTERNATE_DOMAIN => "ALTERNATE-DOMAIN",
        ICMP => "ICMP",
        SOFTWARE => "SOFTWARE",
        ALTERNATE_SERVER => "ALTERNATE-SERVER",
        CACHE_TIMEOUT => "CACHE-TIMEOUT",
        FINGERPRINT => "FINGERPRINT",
        ICE_CONTROLLED => "ICE-CONTROLLED",
        ICE_CONTROLLING => "ICE-CONTROLLING",
        RESPONSE_ORIGIN => "RESPONSE-ORIGIN",
        OTHER_ADDRESS => "OTHER-ADDRESS",
        _ => "unknown attribute",
    }
}

/// Decode a MAPPED-ADDRESS style value: 0, family, port, address.
pub fn decode_address(v: &[u8]) -> Result<SocketAddr, Error> {
    let mut c = Cursor::new(v);
    c.u8("address reserved byte")?;
    let family = c.u8("address family")?;
    let port = c.u16("port")?;
    let ip = match family {
        FAMILY_IPV4 => IpAddr::V4(Ipv4Addr::from(c.array::<4>("IPv4 address")?)),
        FAMILY_IPV6 => IpAddr::V6(Ipv6Addr::from(c.array::<16>("IPv6 address")?)),
        f => return Err(Error::BadAddressFamily(f)),
    };
    c.finish("address")?;
    Ok(SocketAddr::new(ip, port))
}

/// Decode an XOR-MAPPED-ADDRESS style value (RFC 8489 §14.2).
pub fn decode_xor_address(v: &[u8], tid: &TransactionId) -> Result<SocketAddr, Error> {
    let a = decode_address(v)?;
    Ok(xor_addr(a, tid))
}

/// XOR an address with the magic cookie and transaction ID; its own inverse.
pub fn xor_addr(a: SocketAddr, tid: &TransactionId) -> SocketAddr {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = a.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match a.ip() {
        IpAddr::V4(ip) => {
            let mut o = ip.octets();
            for (b, k) in o.iter_mut().zip(cookie) {
                *b ^= k;
            }
            IpAddr::V4(Ipv4Addr::from(o))
        }
        IpAddr::V6(ip) => {
            let mut o = ip.octets();
            let key = cookie.iter().chain(tid.0.iter());
            for (b, k) in o.iter_mut().zip(key) {
                *b ^= *k;
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
    };
    SocketAddr::new(ip, port)
}

/// Encoded size of an address attribute value.
pub fn address_len(a: &SocketAddr) -> usize {
    match a {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

/// Write a MAPPED-ADDRESS style value into `out` (which is `address_len` bytes).
pub(crate) fn write_address(out: &mut [u8], a: &SocketAddr) {
    out[0] = 0;
    out[2..4].copy_from_slice(&a.port().to_be_bytes());
    match a.ip() {
        IpAddr::V4(ip) => {
            out[1] = FAMILY_IPV4;
            out[4..8].copy_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out[1] = FAMILY_IPV6;
            out[4..20].copy_from_slice(&ip.octets());
        }
    }
}

/// ERROR-CODE (RFC 8489 §14.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode<'a> {
    pub code: u16,
    pub reason: &'a str,
}

impl<'a> ErrorCode<'a> {
    pub fn decode(v: &'a [u8]) -> Result<Self, Error> {
        let mut c = Cursor::new(v);
        c.u16("ERROR-CODE reserved")?;
        let class = c.u8("ERROR-CODE class")? & 0x07;
        let number = c.u8("ERROR-CODE number")?;
        if !(3..=6).contains(&class) || number > 99 {
            return Err(Error::BadAttribute("ERROR-CODE"));
        }
        let rest = c.take(c.remaining(), "reason")?;
        let reason = core::str::from_utf8(rest).map_err(|_| Error::NotUtf8("ERROR-CODE reason"))?;
        Ok(Self {
            code: class as u16 * 100 + number as u16,
            reason,
        })
    }
}

/// Iterate the attribute types listed in UNKNOWN-ATTRIBUTES.
pub fn decode_unknown_attributes(v: &[u8]) -> Result<impl Iterator<Item = u16> + '_, Error> {
    if !v.len().is_multiple_of(2) {
        return Err(Error::BadAttribute("UNKNOWN-ATTRIBUTES"));
    }
    Ok(v.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])))
}

/// CHANNEL-NUMBER: a 16-bit number followed by 16 reserved bits.
pub fn decode_channel_number(v: &[u8]) -> Result<u16, Error> {
    let mut c = Cursor::new(v);
    let n = c.u16("CHANNEL-NUMBER")?;
    c.u16("CHANNEL-NUMBER reserved")?;
    c.finish("CHANNEL-NUMBER")?;
    Ok(n)
}

/// REQUESTED-TRANSPORT: the protocol number followed by 24 reserved bits.
pub fn decode_requested_transport(v: &[u8]) -> Result<u8, Error> {
    let mut c = Cursor::new(v);
    let p = c.u8("REQUESTED-TRANSPORT")?;
    c.take(3, "REQUESTED-TRANSPORT reserved")?;
    c.finish("REQUESTED-TRANSPORT")?;
    Ok(p)
}

/// REQUESTED-ADDRESS-FAMILY / ADDITIONAL-ADDRESS-FAMILY: family followed by 24 reserved bits.
/// Returns the raw family byte; callers answer 440 for values other than 0x01 and 0x02.
pub fn decode_address_family(v: &[u8]) -> Result<u8, Error> {
    let mut c = Cursor::new(v);
    let f = c.u8("address family")?;
    c.take(3, "address family reserved")?;
    c.finish("address family")?;
    Ok(f)
}

/// EVEN-PORT: returns the R (reserve next port) bit.
pub fn decode_even_port(v: &[u8]) -> Result<bool, Error> {
    let mut c = Cursor::new(v);
    let b = c.u8("EVEN-PORT")?;
    c.finish("EVEN-PORT")?;
    Ok(b & 0x80 != 0)
}

/// RESERVATION-TOKEN: 8 opaque bytes.
pub fn decode_reservation_token(v: &[u8]) -> Result<[u8; 8], Error> {
    let mut c = Cursor::new(v);
    let t = c.array::<8>("RESERVATION-TOKEN")?;
    c.finish("RESERVATION-TOKEN")?;
    Ok(t)
}

/// CHANGE-REQUEST (RFC 5780 §7.2): (change IP, change port).
pub fn decode_change_request(v: &[u8]) -> Result<(bool, bool), Error> {
    let mut c = Cursor::new(v);
    let x = c.u32("CHANGE-REQUEST")?;
    c.finish("CHANGE-REQUEST")?;
    Ok((x & 0x4 != 0, x & 0x2 != 0))
}

/// RESPONSE-PORT (RFC 5780 §7.5): port followed by 16 reserved bits.
pub fn decode_response_port(v: &[u8]) -> Result<u16, Error> {
    let mut c = Cursor::new(v);
    let p = c.u16("RESPONSE-PORT")?;
    c.u16("RESPONSE-PORT reserved")?;
    c.finish("RESPONSE-PORT")?;
    Ok(p)
}

/// PASSWORD-ALGORITHM (RFC 8489 §14.12): algorithm number and its parameters.
pub fn decode_password_algorithm(v: &[u8]) -> Result<(u16, &[u8]), Error> {
    let mut c = Cursor::new(v);
    let alg = c.u16("PASSWORD-ALGORITHM")?;
    let plen = c.u16("PASSWORD-ALGORITHM parameters length")? as usize;
    let params = c.take(plen, "PASSWORD-ALGORITHM parameters")?;
    c.take((4 - plen % 4) % 4, "PASSWORD-ALGORITHM padding")?;
    c.finish("PASSWORD-ALGORITHM")?;
    Ok((alg, params))
}

/// PASSWORD-ALGORITHMS (RFC 8489 §14.11): a list of (algorithm, parameters).
pub fn decode_password_algorithms(v: &[u8]) -> Result<Vec<(u16, &[u8])>, Error> {
    let mut c = Cursor::new(v);
    let mut out = Vec::new();
    while !c.is_empty() {
        let alg = c.u16("PASSWORD-ALGORITHMS algorithm")?;
        let plen = c.u16("PASSWORD-ALGORITHMS parameters length")? as usize;
        let params = c.take(plen, "PASSWORD-ALGORITHMS parameters")?;
        c.take((4 - plen % 4) % 4, "PASSWORD-ALGORITHMS padding")?;
        out.push((alg, params));
        if out.len() > 16 {
            return Err(Error::BadAttribute(
                "PASSWORD-ALGORITHMS (too many entries)",
            ));
        }
    }
    Ok(out)
}

/// CONNECTION-ID (RFC 6062 §6.2.1).
pub fn decode_u32(v: &[u8], what: &'static str) -> Result<u32, Error> {
    let mut c = Cursor::new(v);
    let x = c.u32(what)?;
    c.finish(what)?;
    Ok(x)
}

/// Length limits of RFC 8489 §14: USERNAME < 513 bytes; REALM, NONCE, SOFTWARE,
/// reason phrases < 128 characters (at most 763 bytes).
pub const MAX_USERNAME_BYTES: usize = 513;
pub const MAX_TEXT_CHARS: usize = 128;
pub const MAX_TEXT_BYTES: usize = 763;
