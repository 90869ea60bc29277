//! Stateless nonces (RFC 8489 §9.2): the server keeps nothing per client before a
//! request authenticates, so a nonce carries its own expiry and an HMAC binding it to
//! the client's IP address and to the security features the server offered.
//!
//! Layout: `obMatJos2` (the nonce cookie), 4 base64 characters of the 24 security
//! feature bits, 8 hex digits of expiry (unix seconds), 16 hex digits of
//! HMAC-SHA256(key, features ‖ expiry ‖ client IP) truncated to 64 bits. 37 characters.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// RFC 8489 §9.2: a nonce that starts with this cookie carries security feature bits.
pub const COOKIE: &str = "obMatJos2";
/// Feature bits "password algorithms" (bit 0, the most significant) and "username
/// anonymity" (bit 1), as 24 bits base64-encoded: 0xC00000.
const FEATURES_B64: &str = "wAAA";
const LEN: usize = 9 + 4 + 8 + 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    Valid,
    /// Well formed and ours, but past its expiry.
    Stale,
    /// Not one of ours (or bound to another client).
    Invalid,
}

fn mac(key: &[u8; 32], expiry: u32, ip: IpAddr) -> [u8; 8] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(FEATURES_B64.as_bytes());
    m.update(&expiry.to_be_bytes());
    match ip {
        IpAddr::V4(v4) => m.update(&v4.to_ipv6_mapped().octets()),
        IpAddr::V6(v6) => m.update(&v6.octets()),
    }
    let full = m.finalize().into_bytes();
    let mut out = [0u8; 8];
    out.copy_from_slice(&full[..8]);
    out
}

/// Write a nonce valid until `expiry` (unix seconds) for `ip`.
pub fn make(key: &[u8; 32], expiry: u64, ip: IpAddr) -> String {
    let expiry = expiry.min(u32::MAX as u64) as u32;
    let tag = mac(key, expiry, ip);
    let mut s = String::with_capacity(LEN);
    s.push_str(COOKIE);
    s.push_str(FEATURES_B64);
    s.push_str(&format!("{expiry:08x}"));
    s.push_str(&hex::encode(tag));
    s
}

/// Check a nonce presented by `ip` at unix time `now`.
pub fn check(key: &[u8; 32], nonce: &[u8], now: u64, ip: IpAddr) -> NonceCheck {
    if nonce.len() != LEN || !nonce.starts_with(COOKIE.as_bytes()) {
        return NonceCheck::Invalid;
    }
    if &nonce[9..13] != FEATURES_B64.as_bytes() {
        return NonceCheck::Invalid;
    }
    let Some(expiry) = parse_hex::<4>(&nonce[13..21]) else {
        return NonceCheck::Invalid;
    };
    let Some(tag) = parse_hex::<8>(&nonce[21..37]) else {
        return NonceCheck::Invalid;
    };
    let expiry = u32::from_be_bytes(expiry);
    if !bool::from(mac(key, expiry, ip).ct_eq(&tag)) {
        return NonceCheck::Invalid;
    }
    if (expiry as u64) < now {
        NonceCheck::Stale
    } else {
        NonceCheck::Valid
    }
}

/// Whether a nonce carries the "password algorithms" feature bit (RFC 8489 §9.2.4).
pub fn offers_password_algorithms(nonce: &[u8]) -> bool {
    nonce.len() >= 13
        && nonce.starts_with(COOKIE.as_bytes())
        && nonce[9..13] == *FEATURES_B64.as_bytes()
}

fn parse_hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_lifecycle() {
        let key = [9u8; 32];
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let n = make(&key, 1000, ip);
        assert_eq!(n.len(), LEN);
        assert!(n.len() < 128);
        assert_eq!(check(&key, n.as_bytes(), 999, ip), NonceCheck::Valid);
        assert_eq!(check(&key, n.as_bytes(), 1000, ip), NonceCheck::Valid);
        assert_eq!(check(&key, n.as_bytes(), 1001, ip), NonceCheck::Stale);
        let other: IpAddr = "198.51.100.8".parse().unwrap();
        assert_eq!(check(&key, n.as_bytes(), 999, other), NonceCheck::Invalid);
        assert_eq!(check(&[1; 32], n.as_bytes(), 999, ip), NonceCheck::Invalid);
        let mut forged = n.clone().into_bytes();
        forged[20] = if forged[20] == b'f' { b'e' } else { b'f' };
        assert_eq!(check(&key, &forged, 0, ip), NonceCheck::Invalid);
        assert_eq!(check(&key, b"", 0, ip), NonceCheck::Invalid);
        assert_eq!(
            check(
                &key,
                "obMatJos2wAAAzzzzzzzz0000000000000000".as_bytes(),
                0,
                ip
            ),
            NonceCheck::Invalid
        );
        assert!(offers_password_algorithms(n.as_bytes()));
    }
}
