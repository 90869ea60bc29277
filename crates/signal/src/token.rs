//! Access tokens: JSON Web Tokens (RFC 7519) signed with HS256 (HMAC-SHA256, RFC 7518
//! §3.2), the compact serialization only. Written here on `hmac` + `sha2` + `base64`
//! rather than pulled from a JWT crate: one algorithm, no key types, no crypto backend.
//!
//! Only `alg: "HS256"` is accepted (never `none`, never an algorithm named by the
//! token that the server did not choose). The signature is checked, in constant time,
//! before the claims are parsed.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The room claim that admits to every room.
pub const ANY_ROOM: &str = "*";

/// The claims of a tsunagi access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claims {
    /// The room it admits to, or `"*"` for any room.
    pub room: String,
    /// The identity; the display name when `join` has none.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not before, Unix seconds (optional, RFC 7519 §4.1.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Whether the holder may send media (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish: Option<bool>,
}

impl Claims {
    /// `canPublish`, defaulting to true.
    pub fn can_publish(&self) -> bool {
        self.can_publish.unwrap_or(true)
    }

    /// Whether the token admits to `room`.
    pub fn admits(&self, room: &str) -> bool {
        self.room == ANY_ROOM || self.room == room
    }
}

/// Why a token was refused. The `Display` text is safe to show to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// Not three base64url parts, bad JSON, a missing claim, or too long.
    Malformed(&'static str),
    /// The header names another algorithm than HS256.
    Algorithm,
    /// The signature does not match the server's secret.
    Signature,
    /// `exp` is in the past.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Malformed(what) => write!(f, "the access token is malformed ({what})"),
            TokenError::Algorithm => f.write_str("the access token is not signed with HS256"),
            TokenError::Signature => {
                f.write_str("the access token's signature does not match this server's secret")
            }
            TokenError::Expired => f.write_str("the access token has expired"),
            TokenError::NotYetValid => f.write_str("the access token is not valid yet (nbf)"),
        }
    }
}

impl std::error::Error for TokenError {}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

fn mac(secret: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length (RFC 2104 §2)")
}

/// Signs `claims` with `secret`: `base64url(header).base64url(claims).base64url(sig)`.
pub fn sign(secret: &[u8], claims: &Claims) -> String {
    let header = Header {
        alg: "HS256".into(),
        typ: Some("JWT".into()),
    };
    // Plain structs of strings and integers always serialize.
    let h = serde_json::to_vec(&header).unwrap_or_default();
    let c = serde_json::to_vec(claims).unwrap_or_default();
    let mut out = URL_SAFE_NO_PAD.encode(h);
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(c));
    let mut m = mac(secret);
    m.update(out.as_bytes());
    let sig = m.finalize().into_bytes();
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(sig));
    out
}

/// Verifies `token` against `secret` at `now_unix` (seconds) and returns its claims.
/// Room matching is the caller's ([`Claims::admits`]).
pub fn verify(secret: &[u8], token: &str, now_unix: u64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed("longer than 4096 bytes"));
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(c64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("not three dot-separated parts"));
    };
    let header = URL_SAFE_NO_PAD
        .decode(h64)
        .map_err(|_| TokenError::Malformed("header is not base64url"))?;
    let header: Header = serde_json::from_slice(&header)
        .map_err(|_| TokenError::Malformed("header is not a JSON object with \"alg\""))?;
    if header.alg != "HS256" {
        return Err(TokenError::Algorithm);
    }
    let sig = URL_SAFE_NO_PAD
        .decode(s64)
        .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
    let mut m = mac(secret);
    // The signing input is the first two parts as they appear in the token.
    let signed_len = h64.len() + 1 + c64.len();
    m.update(token.get(..signed_len).unwrap_or_default().as_bytes());
    m.verify_slice(&sig).map_err(|_| TokenError::Signature)?;
    let claims = URL_SAFE_NO_PAD
        .decode(c64)
        .map_err(|_| TokenError::Malformed("claims are not base64url"))?;
    let claims: Claims = serde_json::from_slice(&claims).map_err(|_| {
        TokenError::Malformed("claims need room and sub (strings) and exp (Unix seconds)")
    })?;
    if claims.exp <= now_unix {
        return Err(TokenError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| nbf > now_unix) {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"secret";

    fn claims() -> Claims {
        Claims {
            room: "lobby".into(),
            sub: "alice".into(),
            exp: 2000,
            nbf: None,
            can_publish: None,
        }
    }

    #[test]
    fn known_answer() {
        // Computed independently (Python hmac + hashlib.sha256 + urlsafe_b64encode)
        // for the header {"alg":"HS256","typ":"JWT"} and the claims
        // {"room":"lobby","sub":"alice","exp":2000} with the key "secret".
        const KNOWN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
            eyJyb29tIjoibG9iYnkiLCJzdWIiOiJhbGljZSIsImV4cCI6MjAwMH0.\
            Aw30AZlWSyDffpQ2JikCXpngGF38mZhiASB6mxWDeaQ";
        assert_eq!(sign(SECRET, &claims()), KNOWN);
        assert_eq!(verify(SECRET, KNOWN, 1000), Ok(claims()));
    }

    #[test]
    fn sign_verify_round_trip_and_defaults() {
        let mut c = claims();
        c.can_publish = Some(false);
        let t = sign(SECRET, &c);
        let v = verify(SECRET, &t, 1999).unwrap();
        assert!(!v.can_publish());
        assert!(v.admits("lobby"));
        assert!(!v.admits("other"));
        assert!(claims().can_publish());
        let mut any = claims();
        any.room = "*".into();
        assert!(any.admits("whatever"));
    }

    #[test]
    fn refusals() {
        let t = sign(SECRET, &claims());
        assert_eq!(verify(SECRET, &t, 2000), Err(TokenError::Expired));
        assert_eq!(verify(b"other", &t, 1000), Err(TokenError::Signature));
        let mut nbf = claims();
        nbf.nbf = Some(1500);
        assert_eq!(
            verify(SECRET, &sign(SECRET, &nbf), 1000),
            Err(TokenError::NotYetValid)
        );
        // Tampered claims keep the old signature.
        let mut parts: Vec<&str> = t.split('.').collect();
        let evil = URL_SAFE_NO_PAD.encode(br#"{"room":"*","sub":"mallory","exp":9999999999}"#);
        parts[1] = &evil;
        assert_eq!(
            verify(SECRET, &parts.join("."), 1000),
            Err(TokenError::Signature)
        );
        // alg none, and another algorithm.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"room":"*","sub":"m","exp":9999999999}"#)
        );
        assert_eq!(verify(SECRET, &none, 1000), Err(TokenError::Algorithm));
        let rs = format!(
            "{}.{}.AAAA",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"room":"*","sub":"m","exp":9999999999}"#)
        );
        assert_eq!(verify(SECRET, &rs, 1000), Err(TokenError::Algorithm));
        for bad in [
            "",
            "a",
            "a.b",
            "a.b.c.d",
            "!!.b.c",
            "e30.e30.e30",
            &"a".repeat(5000),
        ] {
            assert!(
                matches!(verify(SECRET, bad, 1000), Err(TokenError::Malformed(_))),
                "{bad:?}"
            );
        }
        // A correctly signed token with a missing claim.
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#);
        let c = URL_SAFE_NO_PAD.encode(br#"{"room":"lobby","exp":9999}"#);
        let mut m = mac(SECRET);
        m.update(format!("{h}.{c}").as_bytes());
        let s = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
        assert!(matches!(
            verify(SECRET, &format!("{h}.{c}.{s}"), 1000),
            Err(TokenError::Malformed(_))
        ));
    }
}
