//! MESSAGE-INTEGRITY (HMAC-SHA1) and MESSAGE-INTEGRITY-SHA256 keys and codes, and the
//! long-term credential key (RFC 8489 §9.2, §14.5, §14.6).

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;

/// Key for MESSAGE-INTEGRITY / MESSAGE-INTEGRITY-SHA256: the password itself for
/// short-term credentials, or MD5 / SHA-256 of `username:realm:password` for
/// long-term credentials (RFC 8489 §9.2.2).
#[derive(Clone, PartialEq, Eq)]
pub struct IntegrityKey {
    repr: KeyRepr,
}

#[derive(Clone, PartialEq, Eq)]
enum KeyRepr {
    /// Every long-term key (16 or 32 bytes) and most short-term passwords fit here.
    Inline([u8; 64], u8),
    Heap(Box<[u8]>),
}

impl core::fmt::Debug for IntegrityKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("IntegrityKey(<redacted>)")
    }
}

impl IntegrityKey {
    /// A key from raw bytes.
    pub fn from_bytes(b: &[u8]) -> Self {
        let repr = if b.len() <= 64 {
            let mut bytes = [0u8; 64];
            bytes[..b.len()].copy_from_slice(b);
            KeyRepr::Inline(bytes, b.len() as u8)
        } else {
            KeyRepr::Heap(b.into())
        };
        Self { repr }
    }

    /// Short-term credential key: the password (after OpaqueString, which leaves
    /// ASCII passwords unchanged).
    pub fn short_term(password: &str) -> Self {
        Self::from_bytes(password.as_bytes())
    }

    /// Long-term credential key with the given password algorithm.
    pub fn long_term(alg: PasswordAlgorithm, username: &str, realm: &str, password: &str) -> Self {
        match alg {
            PasswordAlgorithm::Md5 => {
                Self::from_bytes(&long_term_key_md5(username, realm, password))
            }
            PasswordAlgorithm::Sha256 => {
                Self::from_bytes(&long_term_key_sha256(username, realm, password))
            }
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match &self.repr {
            KeyRepr::Inline(b, n) => &b[..*n as usize],
            KeyRepr::Heap(b) => b,
        }
    }
}

/// The algorithms of the PASSWORD-ALGORITHMS registry (RFC 8489 §18.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PasswordAlgorithm {
    Md5,
    Sha256,
}

impl PasswordAlgorithm {
    pub fn code(self) -> u16 {
        match self {
            PasswordAlgorithm::Md5 => 0x0001,
            PasswordAlgorithm::Sha256 => 0x0002,
        }
    }
    pub fn from_code(c: u16) -> Option<Self> {
        match c {
            0x0001 => Some(PasswordAlgorithm::Md5),
            0x0002 => Some(PasswordAlgorithm::Sha256),
            _ => None,
        }
    }
}

/// MD5(username ":" realm ":" password), the long-term key of RFC 8489 §9.2.2.
pub fn long_term_key_md5(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// SHA-256(username ":" realm ":" password), the long-term key for PASSWORD-ALGORITHM SHA-256.
pub fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

pub(crate) fn hmac_sha1(key: &[u8], header: &[u8], body: &[u8]) -> [u8; 20] {
    // HMAC accepts keys of any length.
    let mut m = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(header);
    m.update(body);
    m.finalize().into_bytes().into()
}

pub(crate) fn hmac_sha256(key: &[u8], header: &[u8], body: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(header);
    m.update(body);
    m.finalize().into_bytes().into()
}
