//! A parsed STUN message: a zero-copy view with its header, attributes, integrity and
//! fingerprint checks (RFC 8489 §5, §14).

use core::fmt;

use crate::attr;
use crate::cursor::Cursor;
use crate::integrity::{hmac_sha1, hmac_sha256, IntegrityKey};
use crate::{Error, FINGERPRINT_XOR, HEADER_LEN, MAGIC_COOKIE};

/// The class of a STUN message (RFC 8489 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }
}

/// A STUN method: the 12-bit number of RFC 8489 §5.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method(pub u16);

impl Method {
    pub const BINDING: Method = Method(0x001);
    pub const ALLOCATE: Method = Method(0x003);
    pub const REFRESH: Method = Method(0x004);
    pub const SEND: Method = Method(0x006);
    pub const DATA: Method = Method(0x007);
    pub const CREATE_PERMISSION: Method = Method(0x008);
    pub const CHANNEL_BIND: Method = Method(0x009);
    pub const CONNECT: Method = Method(0x00A);
    pub const CONNECTION_BIND: Method = Method(0x00B);
    pub const CONNECTION_ATTEMPT: Method = Method(0x00C);

    pub fn name(self) -> &'static str {
        match self {
            Method::BINDING => "Binding",
            Method::ALLOCATE => "Allocate",
            Method::REFRESH => "Refresh",
            Method::SEND => "Send",
            Method::DATA => "Data",
            Method::CREATE_PERMISSION => "CreatePermission",
            Method::CHANNEL_BIND => "ChannelBind",
            Method::CONNECT => "Connect",
            Method::CONNECTION_BIND => "ConnectionBind",
            Method::CONNECTION_ATTEMPT => "ConnectionAttempt",
            _ => "Unknown",
        }
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({:#05x})", self.name(), self.0)
    }
}

/// Combine method and class into the 14-bit message type (RFC 8489 §5, figure 3).
pub(crate) fn message_type(class: Class, method: Method) -> u16 {
    let m = method.0 & 0x0FFF;
    let c = class.bits();
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

fn split_type(t: u16) -> (Class, Method) {
    let m = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80);
    let c = ((t >> 4) & 1) | ((t >> 7) & 2);
    let class = match c {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::Success,
        _ => Class::Error,
    };
    (class, Method(m))
}

/// The 96-bit transaction ID.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionId(pub [u8; 12]);

impl TransactionId {
    pub const fn new(b: [u8; 12]) -> Self {
        Self(b)
    }
    pub fn as_bytes(&self) -> &[u8; 12] {
        &self.0
    }
}

impl fmt::Debug for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// One attribute of a parsed message: its type and its value (without padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute<'a> {
    pub typ: u16,
    pub value: &'a [u8],
    /// Offset of the attribute header from the start of the message.
    pub offset: usize,
}

/// A parsed STUN message borrowing the datagram it came from.
///
/// Parsing checks the header, the length, the attribute framing and the position of
/// FINGERPRINT; it does not check integrity (that needs a key, see
/// [`Message::verify_integrity`]) and does not interpret attribute values (see
/// [`crate::attr`]).
#[derive(Clone, Copy)]
pub struct Message<'a> {
    raw: &'a [u8],
    class: Class,
    method: Method,
    tid: TransactionId,
    /// Offset of MESSAGE-INTEGRITY, if present.
    mi: Option<usize>,
    /// Offset of MESSAGE-INTEGRITY-SHA256, if present.
    mi256: Option<usize>,
    /// Offset of FINGERPRINT, if present.
    fp: Option<usize>,
    /// Attributes at or after this offset are ignored by lookups (they follow an
    /// integrity attribute, RFC 8489 §14.5).
    visible_end: usize,
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("class", &self.class)
            .field("method", &self.method)
            .field("tid", &self.tid)
            .field("len", &self.raw.len())
            .finish()
    }
}

impl<'a> Message<'a> {
    /// Parse a datagram holding exactly one STUN message.
    pub fn parse(raw: &'a [u8]) -> Result<Self, Error> {
        let mut c = Cursor::new(raw);
        let typ = c.u16("message type")?;
        if typ & 0xC000 != 0 {
            return Err(Error::NotStun);
        }
        let len = c.u16("message length")? as usize;
        if c.u32("magic cookie")? != MAGIC_COOKIE {
            return Err(Error::BadMagicCookie);
        }
        let tid = TransactionId(c.array::<12>("transaction id")?);
        if !len.is_multiple_of(4) {
            return Err(Error::BadLength("not a multiple of 4"));
        }
        if len != c.remaining() {
            return Err(Error::BadLength(
                "header length does not match the datagram",
            ));
        }
        let (class, method) = split_type(typ);
        let mut msg = Message {
            raw,
            class,
            method,
            tid,
            mi: None,
            mi256: None,
            fp: None,
            visible_end: raw.len(),
        };
        while !c.is_empty() {
            let offset = c.position();
            let at = c.u16("attribute type")?;
            let alen = c.u16("attribute length")? as usize;
            c.take(alen, "attribute value")?;
            let pad = (4 - alen % 4) % 4;
            c.take(pad, "attribute padding")?;
            if msg.fp.is_some() {
                return Err(Error::AttributeAfterFingerprint);
            }
            match at {
                attr::MESSAGE_INTEGRITY if msg.mi.is_none() && msg.mi256.is_none() => {
                    if alen != 20 {
                        return Err(Error::BadAttribute("MESSAGE-INTEGRITY"));
                    }
                    msg.mi = Some(offset);
                    msg.visible_end = msg.visible_end.min(offset);
                }
                attr::MESSAGE_INTEGRITY_SHA256 if msg.mi256.is_none() => {
                    // RFC 8489 §14.6: 16..=32 bytes, a multiple of 4.
                    if !(16..=32).contains(&alen) || !alen.is_multiple_of(4) {
                        return Err(Error::BadAttribute("MESSAGE-INTEGRITY-SHA256"));
                    }
                    msg.mi256 = Some(offset);
                    msg.visible_end = msg.visible_end.min(offset);
                }
                attr::FINGERPRINT => {
                    if alen != 4 {
                        return Err(Error::BadAttribute("FINGERPRINT"));
                    }
                    msg.fp = Some(offset);
                    msg.visible_end = msg.visible_end.min(offset);
                }
                _ => {}
            }
        }
        Ok(msg)
    }

    pub fn class(&self) -> Class {
        self.class
    }
    pub fn method(&self) -> Method {
        self.method
    }
    pub fn transaction_id(&self) -> TransactionId {
        self.tid
    }
    /// The whole message as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// Every attribute that precedes the integrity and fingerprint attributes, in order.
    pub fn attributes(&self) -> AttributeIter<'a> {
        AttributeIter {
            cursor: Cursor::new(&self.raw[HEADER_LEN..self.visible_end]),
            base: HEADER_LEN,
        }
    }

    /// The value of the first attribute of type `typ` (before any integrity attribute).
    pub fn get(&self, typ: u16) -> Option<&'a [u8]> {
        self.attributes().find(|a| a.typ == typ).map(|a| a.value)
    }

    /// Whether an attribute of type `typ` is present (before any integrity attribute).
    pub fn contains(&self, typ: u16) -> bool {
        self.get(typ).is_some()
    }

    /// A UTF-8 attribute value.
    pub fn get_str(&self, typ: u16) -> Result<Option<&'a str>, Error> {
        match self.get(typ) {
            None => Ok(None),
            Some(v) => core::str::from_utf8(v)
                .map(Some)
                .map_err(|_| Error::NotUtf8(attr::name(typ))),
        }
    }

    /// An XOR-encoded address attribute (XOR-MAPPED-ADDRESS, XOR-PEER-ADDRESS, ...).
    pub fn get_xor_address(&self, typ: u16) -> Result<Option<std::net::SocketAddr>, Error> {
        self.get(typ)
            .map(|v| attr::decode_xor_address(v, &self.tid))
            .transpose()
    }

    /// Every XOR-encoded address attribute of type `typ` (XOR-PEER-ADDRESS may repeat).
    pub fn xor_addresses(
        &self,
        typ: u16,
    ) -> impl Iterator<Item = Result<std::net::SocketAddr, Error>> + 'a {
        let tid = self.tid;
        self.attributes()
            .filter(move |a| a.typ == typ)
            .map(move |a| attr::decode_xor_address(a.value, &tid))
    }

    /// A plain address attribute (MAPPED-ADDRESS, ALTERNATE-SERVER, ...).
    pub fn get_address(&self, typ: u16) -> Result<Option<std::net::SocketAddr>, Error> {
        self.get(typ).map(attr::decode_address).transpose()
    }

    /// A 32-bit attribute value (LIFETIME, PRIORITY, ...).
    pub fn get_u32(&self, typ: u16) -> Result<Option<u32>, Error> {
        self.get(typ)
            .map(|v| {
                let mut c = Cursor::new(v);
                let x = c.u32(attr::name(typ))?;
                c.finish(attr::name(typ))?;
                Ok(x)
            })
            .transpose()
    }

    /// The ERROR-CODE attribute of an error response.
    pub fn error_code(&self) -> Result<Option<attr::ErrorCode<'a>>, Error> {
        self.get(attr::ERROR_CODE)
            .map(attr::ErrorCode::decode)
            .transpose()
    }

    /// Comprehension-required attributes (type < 0x8000) not in `known`, in order.
    /// A server answers 420 listing them (RFC 8489 §6.3.1).
    pub fn unknown_required<'k>(&self, known: &'k [u16]) -> impl Iterator<Item = u16> + 'k
    where
        'a: 'k,
    {
        self.attributes()
            .map(|a| a.typ)
            .filter(move |t| *t < 0x8000 && !known.contains(t))
    }

    pub fn has_message_integrity(&self) -> bool {
        self.mi.is_some() || self.mi256.is_some()
    }
    pub fn has_message_integrity_sha256(&self) -> bool {
        self.mi256.is_some()
    }
    pub fn has_fingerprint(&self) -> bool {
        self.fp.is_some()
    }

    /// Whether FINGERPRINT is present and correct. False if absent.
    pub fn has_valid_fingerprint(&self) -> bool {
        let Some(off) = self.fp else { return false };
        let expected = fingerprint_of(self.raw, off);
        // The attribute is 4 bytes long (checked in parse) and in bounds.
        let got = &self.raw[off + 4..off + 8];
        got == expected.to_be_bytes()
    }

    /// Check MESSAGE-INTEGRITY-SHA256 if present, else MESSAGE-INTEGRITY, with `key`.
    /// The comparison runs in constant time.
    pub fn verify_integrity(&self, key: &IntegrityKey) -> Result<(), IntegrityError> {
        use subtle::ConstantTimeEq;
        if let Some(off) = self.mi256 {
            let alen = u16::from_be_bytes([self.raw[off + 2], self.raw[off + 3]]) as usize;
            let got = &self.raw[off + 4..off + 4 + alen];
            let mac = hmac_sha256(
                key.as_bytes(),
                &self.prefix_with_length(off, 4 + alen),
                &self.raw[HEADER_LEN..off],
            );
            if bool::from(mac[..alen].ct_eq(got)) {
                return Ok(());
            }
            return Err(IntegrityError::Mismatch);
        }
        if let Some(off) = self.mi {
            let got = &self.raw[off + 4..off + 24];
            let mac = hmac_sha1(
                key.as_bytes(),
                &self.prefix_with_length(off, 24),
                &self.raw[HEADER_LEN..off],
            );
            if bool::from(mac.ct_eq(got)) {
                return Ok(());
            }
            return Err(IntegrityError::Mismatch);
        }
        Err(IntegrityError::Missing)
    }

    /// The 20-byte header with the length field rewritten to end just after an
    /// attribute of `attr_total` bytes at offset `off` (RFC 8489 §14.5).
    fn prefix_with_length(&self, off: usize, attr_total: usize) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&self.raw[..HEADER_LEN]);
        let len = (off + attr_total - HEADER_LEN) as u16;
        h[2..4].copy_from_slice(&len.to_be_bytes());
        h
    }
}

/// Why integrity verification failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityError {
    /// Neither MESSAGE-INTEGRITY nor MESSAGE-INTEGRITY-SHA256 is present.
    Missing,
    /// The HMAC does not match.
    Mismatch,
}

/// CRC-32 of the message up to the FINGERPRINT attribute at `off`, with the length
/// field covering the FINGERPRINT attribute, XOR 0x5354554E.
pub(crate) fn fingerprint_of(raw: &[u8], off: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let len = (off + 8 - HEADER_LEN) as u16;
    h.update(&raw[..2]);
    h.update(&len.to_be_bytes());
    h.update(&raw[4..off]);
    h.finalize() ^ FINGERPRINT_XOR
}

/// Iterator over the attributes of a [`Message`].
#[derive(Debug, Clone)]
pub struct AttributeIter<'a> {
    cursor: Cursor<'a>,
    base: usize,
}

impl<'a> Iterator for AttributeIter<'a> {
    type Item = Attribute<'a>;
    fn next(&mut self) -> Option<Attribute<'a>> {
        // The framing was validated by `Message::parse`, so these reads succeed;
        // on any surprise the iterator simply ends.
        let offset = self.base + self.cursor.position();
        let typ = self.cursor.u16("attribute type").ok()?;
        let len = self.cursor.u16("attribute length").ok()? as usize;
        let value = self.cursor.take(len, "attribute value").ok()?;
        self.cursor
            .take((4 - len % 4) % 4, "attribute padding")
            .ok()?;
        Some(Attribute { typ, value, offset })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_roundtrip() {
        for m in 0..0x1000u16 {
            for c in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                let t = message_type(c, Method(m));
                assert_eq!(t & 0xC000, 0);
                assert_eq!(split_type(t), (c, Method(m)));
            }
        }
        assert_eq!(message_type(Class::Request, Method::BINDING), 0x0001);
        assert_eq!(message_type(Class::Success, Method::BINDING), 0x0101);
        assert_eq!(message_type(Class::Error, Method::ALLOCATE), 0x0113);
        assert_eq!(message_type(Class::Indication, Method::SEND), 0x0016);
        assert_eq!(message_type(Class::Indication, Method::DATA), 0x0017);
    }
}
