//! Sans-IO STUN and TURN wire format (RFC 8489, RFC 8656, RFC 5780, RFC 6062).
//!
//! * [`Message`] is a zero-copy view over one datagram (or one framed TCP message):
//!   parsing validates the header and walks every attribute once through a checked
//!   cursor; attribute values are borrowed slices.
//! * [`MessageEncoder`] writes a message into a caller-provided buffer without
//!   allocating, and appends MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and
//!   FINGERPRINT with the length field adjusted as RFC 8489 §14.5–14.7 require.
//! * [`ChannelData`] parses and encodes TURN ChannelData frames (RFC 8656 §12.4),
//!   and [`stream_frame_len`] splits a TCP byte stream into STUN / ChannelData frames.
//!
//! # Panic policy
//! No input makes this crate panic: every read goes through [`Cursor`], which returns
//! an error rather than indexing out of range. The only `expect`s are on invariants
//! established a few lines above them, each with a reason.
//!
//! ```
//! use tsunagi_stun::{Class, Message, MessageEncoder, Method, TransactionId, attr};
//! let mut buf = [0u8; 128];
//! let tid = TransactionId::new([7; 12]);
//! let mut enc = MessageEncoder::new(&mut buf, Class::Request, Method::BINDING, tid).unwrap();
//! enc.software("tsunagi").unwrap();
//! enc.fingerprint().unwrap();
//! let len = enc.finish();
//! let msg = Message::parse(&buf[..len]).unwrap();
//! assert_eq!(msg.method(), Method::BINDING);
//! assert!(msg.has_valid_fingerprint());
//! assert_eq!(msg.get_str(attr::SOFTWARE).unwrap(), Some("tsunagi"));
//! ```
#![forbid(unsafe_code)]

pub mod attr;
mod channel;
mod cursor;
mod encode;
mod error;
mod integrity;
mod message;

pub use channel::{classify, stream_frame_len, ChannelData, FrameLen, PacketKind};
pub use cursor::Cursor;
pub use encode::MessageEncoder;
pub use error::{EncodeError, Error};
pub use integrity::{long_term_key_md5, long_term_key_sha256, IntegrityKey, PasswordAlgorithm};
pub use message::{Attribute, AttributeIter, Class, Message, Method, TransactionId};

/// The fixed magic cookie of RFC 8489 §5.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the STUN header.
pub const HEADER_LEN: usize = 20;
/// XOR constant of the FINGERPRINT attribute (RFC 8489 §14.7).
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;
