//! The PROXY protocol (HAProxy's "The PROXY protocol", versions 1 and 2): the header a
//! load balancer or TCP proxy writes at the start of each connection it opens to a
//! server, naming the client connection it proxies. Sans-IO: bytes in, a [`Header`] out.
//!
//! Version 1 is one line of US-ASCII of at most 107 bytes, for example
//! `PROXY TCP4 203.0.113.7 192.0.2.10 56324 443\r\n`. Version 2 is binary: the 12-byte
//! [`V2_SIGNATURE`], a version-and-command byte, an address-family-and-protocol byte, a
//! 16-bit length, then that many bytes: the addresses and optional TLVs (type, length,
//! value), which are checked for shape and skipped.
//!
//! What a header says ([`Addresses`]): a proxied TCP connection over IPv4 or IPv6 (the
//! client's address and the address it connected to); `LOCAL` (v2), a connection the
//! proxy made on its own account, such as a health check; or nothing usable (v1
//! `UNKNOWN`, v2 `UNSPEC`, UNIX sockets, UDP). In the last two cases the connection's own
//! addresses stand.
//!
//! # Reading a header from a stream
//!
//! A server must not read past the header: what follows belongs to the proxied client
//! (a TLS ClientHello, a STUN message, an HTTP request). [`parse`] says how many more
//! bytes the header needs at least ([`Parsed::Incomplete`]); a read of at most that many
//! never takes a byte past the header, so the stream is left exactly at the client's
//! first byte:
//!
//! ```no_run
//! use std::io::{self, Read};
//! use tsunagi_proxy_protocol::{parse, Header, Parsed};
//!
//! fn read_header(stream: &mut impl Read) -> io::Result<Header> {
//!     let mut buf = Vec::new();
//!     loop {
//!         match parse(&buf) {
//!             Ok(Parsed::Header(header)) => return Ok(header),
//!             Ok(Parsed::Incomplete { at_least }) => {
//!                 let start = buf.len();
//!                 buf.resize(start + at_least, 0);
//!                 let n = stream.read(&mut buf[start..])?;
//!                 if n == 0 {
//!                     return Err(io::ErrorKind::UnexpectedEof.into());
//!                 }
//!                 buf.truncate(start + n);
//!             }
//!             Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
//!         }
//!     }
//! }
//! ```
//!
//! # Bounds and panics
//!
//! No input panics (a property test and a fuzz target hold this). A v1 header is at
//! most [`V1_MAX_LEN`] bytes, a v2 header at most [`MAX_LEN`]: a longer v2 length is
//! refused as soon as the 16 fixed bytes are in, before any of the rest is read, and a
//! v1 line without its CRLF within 107 bytes as soon as the 107th byte is in. Garbage
//! is refused at the first byte that cannot start or continue a header.

#![forbid(unsafe_code)]

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// The 12 bytes that open a version 2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// What opens a version 1 header.
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// The longest version 1 header, CRLF included (`PROXY UNKNOWN` with two full IPv6
/// addresses and ports, as the specification counts it).
pub const V1_MAX_LEN: usize = 107;
/// The fixed part of a version 2 header: signature, version and command, family and
/// protocol, length.
pub const V2_FIXED_LEN: usize = 16;
/// The longest address-and-TLV part of a version 2 header that is accepted. The
/// addresses take at most 216 bytes (UNIX sockets); the rest is room for the TLVs that
/// load balancers add (TLS details, a connection id, a cloud endpoint id).
pub const V2_MAX_PAYLOAD: usize = 4096;
/// The longest header of either version.
pub const MAX_LEN: usize = V2_FIXED_LEN + V2_MAX_PAYLOAD;
/// The shortest header of either version (`PROXY UNKNOWN\r\n`; a v2 header is at
/// least 16 bytes).
pub const MIN_LEN: usize = 15;

/// The shortest v1 lines of each protocol, CRLF included: `PROXY TCP4 0.0.0.0 0.0.0.0
/// 0 0` and `PROXY TCP6 :: :: 0 0`.
const V1_TCP4_MIN_LEN: usize = 32;
const V1_TCP6_MIN_LEN: usize = 22;

/// v2 command (low nibble of byte 13).
const CMD_LOCAL: u8 = 0x0;
const CMD_PROXY: u8 = 0x1;
/// v2 address family (high nibble of byte 14) and transport protocol (low nibble).
const AF_UNSPEC: u8 = 0x0;
const AF_INET: u8 = 0x1;
const AF_INET6: u8 = 0x2;
const AF_UNIX: u8 = 0x3;
const PROTO_STREAM: u8 = 0x1;
const PROTO_DGRAM: u8 = 0x2;

/// Which version of the protocol a header was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// The text form.
    V1,
    /// The binary form.
    V2,
}

/// What a header says about the connection it precedes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Addresses {
    /// A proxied TCP connection: `source` is the client, `destination` the address the
    /// client connected to (the proxy's). Both are of one family; an IPv4 client of a
    /// dual-stack proxy may appear as an IPv4-mapped IPv6 address.
    Tcp {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// v2 `LOCAL`: the proxy's own connection (a health check, typically); the
    /// connection's own addresses stand.
    Local,
    /// v1 `UNKNOWN`, or v2 with an unspecified family or protocol, a UNIX socket or
    /// UDP: nothing this connection can use; its own addresses stand.
    Unknown,
}

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    pub version: Version,
    pub addresses: Addresses,
    /// Bytes the header took: the proxied stream starts after them.
    pub len: usize,
}

impl Header {
    /// The proxied client's address, when the header names one; `None` for `LOCAL`
    /// and unknown connections, whose own peer address stands.
    pub fn source(&self) -> Option<SocketAddr> {
        match self.addresses {
            Addresses::Tcp { source, .. } => Some(source),
            Addresses::Local | Addresses::Unknown => None,
        }
    }
}

/// The result of [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A complete header (its [`Header::len`] bytes; anything after it is not read).
    Header(Header),
    /// The bytes so far can start a header, which needs at least `at_least` (≥ 1)
    /// more bytes. Reading at most that many never reads past the header.
    Incomplete { at_least: usize },
}

/// Why the bytes are not a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The bytes open with neither `PROXY ` nor the v2 signature.
    NotProxy,
    /// v2: a version other than 2.
    Version(u8),
    /// v2: a command other than `LOCAL` (0) or `PROXY` (1).
    Command(u8),
    /// v2: an address family above 3 or a transport protocol above 2 (the byte).
    Family(u8),
    /// Longer than allowed: a v2 length above [`V2_MAX_PAYLOAD`], or a v1 line without
    /// its CRLF within [`V1_MAX_LEN`] bytes.
    TooLong,
    /// v2: the length is shorter than the addresses of the family take.
    ShortAddresses,
    /// v2: a TLV runs past the end of the header.
    Tlv,
    /// v1: the line breaks the grammar; says where.
    Syntax(&'static str),
    /// [`encode_v1`] or [`encode_v2`]: what the header cannot say.
    Unencodable(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotProxy => f.write_str(
                "not a PROXY protocol header: it starts with neither \"PROXY \" (v1) nor the v2 signature",
            ),
            Error::Version(v) => write!(f, "PROXY v2 header with version {v}; only 2 is defined"),
            Error::Command(c) => write!(
                f,
                "PROXY v2 header with command {c}; only LOCAL (0) and PROXY (1) are defined"
            ),
            Error::Family(b) => write!(
                f,
                "PROXY v2 header with address family {} and protocol {}; families 0 to 3 and protocols 0 to 2 are defined",
                b >> 4,
                b & 0x0F
            ),
            Error::TooLong => write!(
                f,
                "PROXY header too long: v1 lines end within {V1_MAX_LEN} bytes, v2 headers are accepted up to {MAX_LEN}"
            ),
            Error::ShortAddresses => {
                f.write_str("PROXY v2 header shorter than the addresses of its family")
            }
            Error::Tlv => f.write_str("PROXY v2 header with a TLV that runs past its end"),
            Error::Syntax(what) => write!(f, "PROXY v1 line: {what}"),
            Error::Unencodable(what) => write!(f, "cannot write this PROXY header: {what}"),
        }
    }
}

impl std::error::Error for Error {}

/// Parses the header at the start of `buf`; see the crate docs for reading one from a
/// stream. Bytes after the header are not looked at.
pub fn parse(buf: &[u8]) -> Result<Parsed, Error> {
    match buf.first() {
        None => Ok(Parsed::Incomplete { at_least: MIN_LEN }),
        Some(_) if starts_like(buf, &V2_SIGNATURE) => parse_v2(buf),
        Some(_) if starts_like(buf, V1_PREFIX) => parse_v1(buf),
        Some(_) => Err(Error::NotProxy),
    }
}

/// Whether `buf` and `prefix` agree on their common length.
fn starts_like(buf: &[u8], prefix: &[u8]) -> bool {
    buf.iter().zip(prefix).all(|(a, b)| a == b)
}

/// A checked reader over the body of a v2 header.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.0 = self.0.get(n..)?;
        Some(())
    }
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, Error> {
    let Some((fixed, _)) = buf.split_first_chunk::<V2_FIXED_LEN>() else {
        return Ok(Parsed::Incomplete {
            at_least: V2_FIXED_LEN - buf.len(),
        });
    };
    let [.., ver_cmd, fam_proto, len_hi, len_lo] = *fixed;
    if ver_cmd >> 4 != 2 {
        return Err(Error::Version(ver_cmd >> 4));
    }
    let command = ver_cmd & 0x0F;
    if command != CMD_LOCAL && command != CMD_PROXY {
        return Err(Error::Command(command));
    }
    let (family, protocol) = (fam_proto >> 4, fam_proto & 0x0F);
    if family > AF_UNIX || protocol > PROTO_DGRAM {
        return Err(Error::Family(fam_proto));
    }
    let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    if len > V2_MAX_PAYLOAD {
        return Err(Error::TooLong);
    }
    let total = V2_FIXED_LEN + len;
    let Some(body) = buf.get(V2_FIXED_LEN..total) else {
        return Ok(Parsed::Incomplete {
            at_least: total - buf.len(),
        });
    };
    // LOCAL: the addresses, if any, are not the connection's; they are skipped, and so
    // is the rest (whatever a health check carries). UNSPEC: the receiver ignores
    // whatever the length covers (the specification lets a sender put address
    // information there all the same).
    if command == CMD_LOCAL {
        return Ok(header(Version::V2, Addresses::Local, total));
    }
    if family == AF_UNSPEC {
        return Ok(header(Version::V2, Addresses::Unknown, total));
    }
    let mut r = Reader(body);
    let addresses = match family {
        AF_INET => {
            let (src, dst, sp, dp) = (r.take::<4>(), r.take::<4>(), r.take::<2>(), r.take::<2>());
            let (Some(src), Some(dst), Some(sp), Some(dp)) = (src, dst, sp, dp) else {
                return Err(Error::ShortAddresses);
            };
            let v4 = |ip: [u8; 4], port: [u8; 2]| {
                SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(ip),
                    u16::from_be_bytes(port),
                ))
            };
            Addresses::Tcp {
                source: v4(src, sp),
                destination: v4(dst, dp),
            }
        }
        AF_INET6 => {
            let (src, dst, sp, dp) = (r.take::<16>(), r.take::<16>(), r.take::<2>(), r.take::<2>());
            let (Some(src), Some(dst), Some(sp), Some(dp)) = (src, dst, sp, dp) else {
                return Err(Error::ShortAddresses);
            };
            let v6 = |ip: [u8; 16], port: [u8; 2]| {
                SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(ip),
                    u16::from_be_bytes(port),
                    0,
                    0,
                ))
            };
            Addresses::Tcp {
                source: v6(src, sp),
                destination: v6(dst, dp),
            }
        }
        // AF_UNIX: two 108-byte paths.
        _ => {
            r.skip(216).ok_or(Error::ShortAddresses)?;
            Addresses::Unknown
        }
    };
    // TLVs fill the rest exactly: type (1), length (2), value.
    while !r.0.is_empty() {
        let (Some([_type]), Some(len)) = (r.take::<1>(), r.take::<2>()) else {
            return Err(Error::Tlv);
        };
        r.skip(usize::from(u16::from_be_bytes(len)))
            .ok_or(Error::Tlv)?;
    }
    let addresses = if protocol == PROTO_STREAM {
        addresses
    } else {
        Addresses::Unknown
    };
    Ok(header(Version::V2, addresses, total))
}

fn header(version: Version, addresses: Addresses, len: usize) -> Parsed {
    Parsed::Header(Header {
        version,
        addresses,
        len,
    })
}

/// A protocol word of a v1 line, what the rest of a line of it may hold (checked while
/// the line is incomplete, to refuse garbage early), and its shortest whole line.
struct V1Protocol {
    word: &'static [u8],
    allowed: fn(u8) -> bool,
    min_len: usize,
}

const V1_PROTOCOLS: [V1Protocol; 3] = [
    V1Protocol {
        word: b"TCP4 ",
        allowed: |b| b.is_ascii_digit() || b == b'.' || b == b' ',
        min_len: V1_TCP4_MIN_LEN,
    },
    V1Protocol {
        word: b"TCP6 ",
        allowed: |b| b.is_ascii_hexdigit() || b == b':' || b == b'.' || b == b' ',
        min_len: V1_TCP6_MIN_LEN,
    },
    V1Protocol {
        word: b"UNKNOWN",
        allowed: |_| true,
        min_len: MIN_LEN,
    },
];

fn parse_v1(buf: &[u8]) -> Result<Parsed, Error> {
    let window = buf.get(..V1_MAX_LEN).unwrap_or(buf);
    // The line runs to the first CR; every byte before it is printable.
    let mut cr = None;
    for (i, &b) in window.iter().enumerate() {
        match b {
            b'\r' => {
                cr = Some(i);
                break;
            }
            b'\n' => return Err(Error::Syntax("an LF without CR before it")),
            0x20..=0x7E => {}
            _ => return Err(Error::Syntax("a byte that is not printable US-ASCII")),
        }
    }
    let line = window.get(..cr.unwrap_or(window.len())).unwrap_or_default();
    // What the line holds so far must be able to start a header: the same check
    // whether it is complete or not, so that reading a header in pieces and reading it
    // at once come to the same verdict.
    let min_len = v1_line_start(line)?;
    let Some(cr) = cr else {
        // No CR yet: it must still fit, CR LF included.
        if window.len() + 2 > V1_MAX_LEN {
            return Err(Error::TooLong);
        }
        return Ok(Parsed::Incomplete {
            at_least: min_len.saturating_sub(window.len()).max(2),
        });
    };
    if cr + 2 > V1_MAX_LEN {
        return Err(Error::TooLong);
    }
    match window.get(cr + 1) {
        None => Ok(Parsed::Incomplete { at_least: 1 }),
        Some(b'\n') => Ok(header(Version::V1, v1_line(line)?, cr + 2)),
        Some(_) => Err(Error::Syntax("a CR that is not followed by LF")),
    }
}

/// Checks the start of a v1 line (complete or not, without CRLF): a known protocol
/// word, then only what addresses and ports of that protocol are written with.
/// Returns the length of the shortest whole line it can be the start of.
fn v1_line_start(line: &[u8]) -> Result<usize, Error> {
    let rest = line.get(V1_PREFIX.len()..).unwrap_or_default();
    if rest.is_empty() {
        return Ok(MIN_LEN);
    }
    let Some(p) = V1_PROTOCOLS.iter().find(|p| starts_like(rest, p.word)) else {
        return Err(Error::Syntax("the protocol is not TCP4, TCP6 or UNKNOWN"));
    };
    let Some(after) = rest.get(p.word.len()..) else {
        return Ok(MIN_LEN);
    };
    if !after.iter().all(|&b| (p.allowed)(b)) {
        return Err(Error::Syntax(
            "a character that cannot appear in an address or a port",
        ));
    }
    Ok(p.min_len)
}

/// The line of a v1 header, without its CRLF.
fn v1_line(line: &[u8]) -> Result<Addresses, Error> {
    let line = std::str::from_utf8(line).map_err(|_| Error::Syntax("not US-ASCII"))?;
    let mut fields = line.split(' ');
    if fields.next() != Some("PROXY") {
        return Err(Error::Syntax("it does not start with PROXY"));
    }
    let v6 = match fields.next() {
        // The specification: anything after UNKNOWN is ignored.
        Some("UNKNOWN") => return Ok(Addresses::Unknown),
        Some("TCP4") => false,
        Some("TCP6") => true,
        _ => return Err(Error::Syntax("the protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(Error::Syntax(
            "TCP4 and TCP6 take exactly four fields, one space apart: source, destination, source port, destination port",
        ));
    };
    let ip = |s: &str| -> Result<std::net::IpAddr, Error> {
        if v6 {
            s.parse::<Ipv6Addr>()
                .map(Into::into)
                .map_err(|_| Error::Syntax("an address of TCP6 that is not an IPv6 address"))
        } else {
            s.parse::<Ipv4Addr>()
                .map(Into::into)
                .map_err(|_| Error::Syntax("an address of TCP4 that is not an IPv4 address"))
        }
    };
    Ok(Addresses::Tcp {
        source: SocketAddr::new(ip(src)?, v1_port(sport)?),
        destination: SocketAddr::new(ip(dst)?, v1_port(dport)?),
    })
}

/// A port of a v1 line: 1 to 5 decimal digits, at most 65535 (no sign).
fn v1_port(s: &str) -> Result<u16, Error> {
    const BAD: Error = Error::Syntax("a port that is not a number from 0 to 65535");
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BAD);
    }
    s.parse().map_err(|_| BAD)
}

/// Appends the version 1 header of `addresses` to `out` (the sender's side: a proxy,
/// a test client). `LOCAL` has no v1 form, and TCP addresses must be of one family.
pub fn encode_v1(addresses: &Addresses, out: &mut Vec<u8>) -> Result<(), Error> {
    match *addresses {
        Addresses::Tcp {
            source,
            destination,
        } => {
            let proto = match (source, destination) {
                (SocketAddr::V4(_), SocketAddr::V4(_)) => "TCP4",
                (SocketAddr::V6(_), SocketAddr::V6(_)) => "TCP6",
                _ => {
                    return Err(Error::Unencodable(
                        "the source and destination are of different families",
                    ))
                }
            };
            let line = format!(
                "PROXY {proto} {} {} {} {}\r\n",
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            );
            out.extend_from_slice(line.as_bytes());
        }
        Addresses::Unknown => out.extend_from_slice(b"PROXY UNKNOWN\r\n"),
        Addresses::Local => return Err(Error::Unencodable("version 1 has no LOCAL command")),
    }
    Ok(())
}

/// Appends the version 2 header of `addresses` to `out`, with `tlvs` (type, value)
/// after the addresses. `Local` and `Unknown` carry no addresses (family UNSPEC); TCP
/// addresses must be of one family.
pub fn encode_v2(
    addresses: &Addresses,
    tlvs: &[(u8, &[u8])],
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    let mut body = Vec::new();
    let (command, fam_proto) = match *addresses {
        Addresses::Tcp {
            source,
            destination,
        } => match (source, destination) {
            (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                body.extend_from_slice(&s.ip().octets());
                body.extend_from_slice(&d.ip().octets());
                body.extend_from_slice(&s.port().to_be_bytes());
                body.extend_from_slice(&d.port().to_be_bytes());
                (CMD_PROXY, (AF_INET << 4) | PROTO_STREAM)
            }
            (SocketAddr::V6(s), SocketAddr::V6(d)) => {
                body.extend_from_slice(&s.ip().octets());
                body.extend_from_slice(&d.ip().octets());
                body.extend_from_slice(&s.port().to_be_bytes());
                body.extend_from_slice(&d.port().to_be_bytes());
                (CMD_PROXY, (AF_INET6 << 4) | PROTO_STREAM)
            }
            _ => {
                return Err(Error::Unencodable(
                    "the source and destination are of different families",
                ))
            }
        },
        Addresses::Local => (CMD_LOCAL, AF_UNSPEC),
        Addresses::Unknown => (CMD_PROXY, AF_UNSPEC),
    };
    for (t, value) in tlvs {
        let len = u16::try_from(value.len()).map_err(|_| Error::TooLong)?;
        body.push(*t);
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(value);
    }
    if body.len() > V2_MAX_PAYLOAD {
        return Err(Error::TooLong);
    }
    let len = u16::try_from(body.len()).map_err(|_| Error::TooLong)?;
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x20 | command);
    out.push(fam_proto);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
