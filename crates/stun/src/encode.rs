//! Building messages in a caller's buffer: header, attributes, integrity and
//! FINGERPRINT last (RFC 8489 §14).

use std::net::SocketAddr;

use crate::attr::{self, address_len, write_address, xor_addr};
use crate::integrity::{hmac_sha1, hmac_sha256, IntegrityKey};
use crate::message::{fingerprint_of, message_type};
use crate::{Class, EncodeError, Method, TransactionId, HEADER_LEN, MAGIC_COOKIE};

/// Writes one STUN message into a caller-provided buffer, without allocating.
///
/// Attributes are appended in call order; [`MessageEncoder::message_integrity`],
/// [`MessageEncoder::message_integrity_sha256`] and [`MessageEncoder::fingerprint`]
/// must come last, in that order. [`MessageEncoder::finish`] returns the length.
#[derive(Debug)]
pub struct MessageEncoder<'b> {
    buf: &'b mut [u8],
    len: usize,
    tid: TransactionId,
    fingerprinted: bool,
    pad_byte: u8,
}

impl<'b> MessageEncoder<'b> {
    pub fn new(
        buf: &'b mut [u8],
        class: Class,
        method: Method,
        tid: TransactionId,
    ) -> Result<Self, EncodeError> {
        let h = buf
            .get_mut(..HEADER_LEN)
            .ok_or(EncodeError::BufferTooSmall)?;
        h[0..2].copy_from_slice(&message_type(class, method).to_be_bytes());
        h[2..4].copy_from_slice(&[0, 0]);
        h[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        h[8..20].copy_from_slice(&tid.0);
        Ok(Self {
            buf,
            len: HEADER_LEN,
            tid,
            fingerprinted: false,
            pad_byte: 0,
        })
    }

    /// The byte used to pad attribute values to 4 bytes. RFC 8489 says zero, which is
    /// the default; the RFC 5769 test vectors pad with spaces (0x20).
    pub fn set_padding_byte(&mut self, b: u8) {
        self.pad_byte = b;
    }

    pub fn transaction_id(&self) -> TransactionId {
        self.tid
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == HEADER_LEN
    }

    /// Append an attribute of `vlen` bytes whose value `fill` writes.
    pub fn attr_with(
        &mut self,
        typ: u16,
        vlen: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<&mut Self, EncodeError> {
        if self.fingerprinted {
            return Err(EncodeError::AfterFingerprint);
        }
        if vlen > u16::MAX as usize {
            return Err(EncodeError::TooLong);
        }
        let padded = (vlen + 3) & !3;
        let total = self.len + 4 + padded;
        if total - HEADER_LEN > u16::MAX as usize {
            return Err(EncodeError::TooLong);
        }
        let out = self
            .buf
            .get_mut(self.len..total)
            .ok_or(EncodeError::BufferTooSmall)?;
        out[0..2].copy_from_slice(&typ.to_be_bytes());
        out[2..4].copy_from_slice(&(vlen as u16).to_be_bytes());
        fill(&mut out[4..4 + vlen]);
        for b in &mut out[4 + vlen..] {
            *b = self.pad_byte;
        }
        self.len = total;
        self.set_length(self.len);
        Ok(self)
    }

    /// Append an attribute with the given raw value.
    pub fn attr(&mut self, typ: u16, value: &[u8]) -> Result<&mut Self, EncodeError> {
        self.attr_with(typ, value.len(), |o| o.copy_from_slice(value))
    }

    pub fn flag(&mut self, typ: u16) -> Result<&mut Self, EncodeError> {
        self.attr(typ, &[])
    }

    pub fn u32(&mut self, typ: u16, v: u32) -> Result<&mut Self, EncodeError> {
        self.attr(typ, &v.to_be_bytes())
    }

    pub fn u64(&mut self, typ: u16, v: u64) -> Result<&mut Self, EncodeError> {
        self.attr(typ, &v.to_be_bytes())
    }

    pub fn string(&mut self, typ: u16, s: &str) -> Result<&mut Self, EncodeError> {
        self.attr(typ, s.as_bytes())
    }

    pub fn software(&mut self, s: &str) -> Result<&mut Self, EncodeError> {
        self.string(attr::SOFTWARE, s)
    }

    pub fn address(&mut self, typ: u16, a: &SocketAddr) -> Result<&mut Self, EncodeError> {
        self.attr_with(typ, address_len(a), |o| write_address(o, a))
    }

    pub fn xor_address(&mut self, typ: u16, a: &SocketAddr) -> Result<&mut Self, EncodeError> {
        let x = xor_addr(*a, &self.tid);
        self.address(typ, &x)
    }

    /// ERROR-CODE with a reason phrase (truncated to the RFC's 128 characters).
    pub fn error_code(&mut self, code: u16, reason: &str) -> Result<&mut Self, EncodeError> {
        let reason = truncate_chars(reason, attr::MAX_TEXT_CHARS);
        let class = (code / 100) as u8;
        let number = (code % 100) as u8;
        self.attr_with(attr::ERROR_CODE, 4 + reason.len(), |o| {
            o[0] = 0;
            o[1] = 0;
            o[2] = class & 0x07;
            o[3] = number;
            o[4..].copy_from_slice(reason.as_bytes());
        })
    }

    pub fn unknown_attributes(&mut self, types: &[u16]) -> Result<&mut Self, EncodeError> {
        self.attr_with(attr::UNKNOWN_ATTRIBUTES, types.len() * 2, |o| {
            for (c, t) in o.chunks_exact_mut(2).zip(types) {
                c.copy_from_slice(&t.to_be_bytes());
            }
        })
    }

    pub fn channel_number(&mut self, n: u16) -> Result<&mut Self, EncodeError> {
        let b = n.to_be_bytes();
        self.attr(attr::CHANNEL_NUMBER, &[b[0], b[1], 0, 0])
    }

    pub fn requested_transport(&mut self, proto: u8) -> Result<&mut Self, EncodeError> {
        self.attr(attr::REQUESTED_TRANSPORT, &[proto, 0, 0, 0])
    }

    pub fn address_family(&mut self, typ: u16, family: u8) -> Result<&mut Self, EncodeError> {
        self.attr(typ, &[family, 0, 0, 0])
    }

    pub fn even_port(&mut self, reserve_next: bool) -> Result<&mut Self, EncodeError> {
        self.attr(attr::EVEN_PORT, &[if reserve_next { 0x80 } else { 0 }])
    }

    pub fn change_request(
        &mut self,
        change_ip: bool,
        change_port: bool,
    ) -> Result<&mut Self, EncodeError> {
        let v = (change_ip as u32) << 2 | (change_port as u32) << 1;
        self.u32(attr::CHANGE_REQUEST, v)
    }

    /// PASSWORD-ALGORITHMS listing the given algorithm codes (no parameters).
    pub fn password_algorithms(&mut self, algs: &[u16]) -> Result<&mut Self, EncodeError> {
        self.attr_with(attr::PASSWORD_ALGORITHMS, algs.len() * 4, |o| {
            for (c, a) in o.chunks_exact_mut(4).zip(algs) {
                c[0..2].copy_from_slice(&a.to_be_bytes());
                c[2..4].copy_from_slice(&[0, 0]);
            }
        })
    }

    /// PASSWORD-ALGORITHM with no parameters.
    pub fn password_algorithm(&mut self, alg: u16) -> Result<&mut Self, EncodeError> {
        let b = alg.to_be_bytes();
        self.attr(attr::PASSWORD_ALGORITHM, &[b[0], b[1], 0, 0])
    }

    /// MESSAGE-INTEGRITY (HMAC-SHA1) over everything written so far.
    pub fn message_integrity(&mut self, key: &IntegrityKey) -> Result<&mut Self, EncodeError> {
        let start = self.len;
        self.attr_with(attr::MESSAGE_INTEGRITY, 20, |_| {})?;
        // The header length now covers this attribute, as §14.5 requires.
        let mac = hmac_sha1(
            key.as_bytes(),
            &self.buf[..HEADER_LEN],
            &self.buf[HEADER_LEN..start],
        );
        self.buf[start + 4..start + 24].copy_from_slice(&mac);
        Ok(self)
    }

    /// MESSAGE-INTEGRITY-SHA256 (full 32 bytes) over everything written so far.
    pub fn message_integrity_sha256(
        &mut self,
        key: &IntegrityKey,
    ) -> Result<&mut Self, EncodeError> {
        let start = self.len;
        self.attr_with(attr::MESSAGE_INTEGRITY_SHA256, 32, |_| {})?;
        let mac = hmac_sha256(
            key.as_bytes(),
            &self.buf[..HEADER_LEN],
            &self.buf[HEADER_LEN..start],
        );
        self.buf[start + 4..start + 36].copy_from_slice(&mac);
        Ok(self)
    }

    /// FINGERPRINT; no attribute may follow it.
    pub fn fingerprint(&mut self) -> Result<&mut Self, EncodeError> {
        let start = self.len;
        self.attr_with(attr::FINGERPRINT, 4, |_| {})?;
        let crc = fingerprint_of(self.buf, start);
        self.buf[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
        self.fingerprinted = true;
        Ok(self)
    }

    /// The encoded length; the message is `buf[..len]`.
    pub fn finish(self) -> usize {
        self.len
    }

    fn set_length(&mut self, total: usize) {
        let l = (total - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&l.to_be_bytes());
    }
}

fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
