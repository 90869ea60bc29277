//! Why a datagram is not a valid STUN message or attribute.

use core::fmt;

/// Why a datagram is not a valid STUN message or attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Input ended before the named field.
    Truncated(&'static str),
    /// Bytes left over after the named structure.
    TrailingBytes(&'static str),
    /// The first two bits are not zero: not a STUN message.
    NotStun,
    /// The magic cookie is not 0x2112A442 (an RFC 3489 message or not STUN).
    BadMagicCookie,
    /// The header length field is not a multiple of 4 or does not match the input.
    BadLength(&'static str),
    /// An attribute after FINGERPRINT, or a second FINGERPRINT.
    AttributeAfterFingerprint,
    /// An attribute value has the wrong size or content for its type.
    BadAttribute(&'static str),
    /// An address family other than IPv4 (0x01) or IPv6 (0x02).
    BadAddressFamily(u8),
    /// A text attribute that is not UTF-8.
    NotUtf8(&'static str),
    /// A ChannelData channel number outside 0x4000..=0x7FFE.
    BadChannelNumber(u16),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated(w) => write!(f, "truncated {w}"),
            Error::TrailingBytes(w) => write!(f, "trailing bytes after {w}"),
            Error::NotStun => f.write_str("not a STUN message (first two bits not zero)"),
            Error::BadMagicCookie => f.write_str("bad magic cookie"),
            Error::BadLength(w) => write!(f, "bad length: {w}"),
            Error::AttributeAfterFingerprint => f.write_str("attribute after FINGERPRINT"),
            Error::BadAttribute(w) => write!(f, "malformed {w} attribute"),
            Error::BadAddressFamily(x) => write!(f, "unknown address family {x:#04x}"),
            Error::NotUtf8(w) => write!(f, "{w} is not valid UTF-8"),
            Error::BadChannelNumber(n) => {
                write!(f, "channel number {n:#06x} outside 0x4000..=0x7FFE")
            }
        }
    }
}

impl std::error::Error for Error {}

/// Why a message could not be encoded into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The buffer is too small for what was being written.
    BufferTooSmall,
    /// An attribute value longer than 65535 bytes, or a message longer than 65535.
    TooLong,
    /// An attribute was added after FINGERPRINT.
    AfterFingerprint,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall => f.write_str("buffer too small"),
            EncodeError::TooLong => f.write_str("attribute or message too long"),
            EncodeError::AfterFingerprint => f.write_str("attribute added after FINGERPRINT"),
        }
    }
}

impl std::error::Error for EncodeError {}
