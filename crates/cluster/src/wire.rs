//! The relay wire format between nodes.
//!
//! A batch is one Redis message on the receiver's channel:
//!
//! ```text
//! batch   = "TSG1" from-len:u8 from:bytes frame*
//! frame   = kind:u8 conn:u64 len:u32 payload:bytes     (integers big-endian)
//! ```
//!
//! `from` is the sender's node id. `conn` is always the *edge's* connection number:
//! the owner keys its copy of the session by (edge node id, conn). Frames of one
//! sender arrive in the order sent (one Redis connection publishes them), so `Open`
//! always comes before the `Text`s of its connection.

use std::fmt;

const MAGIC: &[u8; 4] = b"TSG1";
/// Longest node id.
pub const MAX_NODE_ID: usize = 64;
/// Largest payload of one frame (a signaling text frame is far smaller).
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Longest close reason (a WebSocket close reason is at most 123 bytes).
const MAX_REASON: usize = 123;

/// How a client's WebSocket ended, as its edge saw it (the hub's `Disconnect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    Clean,
    Lost,
    Overflow,
}

/// One relay frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Edge → owner: a client asked for a room of the owner. `host` is the `Host` of
    /// its request (empty when none), for the ICE server URLs.
    Open { conn: u64, host: String },
    /// Edge → owner: a text frame from the client.
    Text { conn: u64, text: String },
    /// Edge → owner: a binary frame of `len` bytes from the client (not forwarded).
    Binary { conn: u64, len: u32 },
    /// Edge → owner: the client's WebSocket ended.
    Closed { conn: u64, how: How },
    /// Owner → edge: send this text frame to the client.
    Send { conn: u64, text: String },
    /// Owner → edge: close the client's WebSocket with this code and reason.
    Close {
        conn: u64,
        code: u16,
        reason: String,
    },
    /// Owner → edge: the owner's queue toward this client overflowed: send
    /// `server-busy` and close (1008).
    Busy { conn: u64 },
    /// Owner → edge: the owner has no session for this connection (it restarted, or
    /// it could not take the connection): the client should resume or join again.
    Gone { conn: u64 },
}

impl Frame {
    /// The edge connection the frame is about.
    pub fn conn(&self) -> u64 {
        match self {
            Frame::Open { conn, .. }
            | Frame::Text { conn, .. }
            | Frame::Binary { conn, .. }
            | Frame::Closed { conn, .. }
            | Frame::Send { conn, .. }
            | Frame::Close { conn, .. }
            | Frame::Busy { conn }
            | Frame::Gone { conn } => *conn,
        }
    }

    /// Whether an edge sends it (else an owner does).
    pub fn from_edge(&self) -> bool {
        matches!(
            self,
            Frame::Open { .. } | Frame::Text { .. } | Frame::Binary { .. } | Frame::Closed { .. }
        )
    }

    /// Bytes it takes in a batch.
    pub fn encoded_len(&self) -> usize {
        13 + match self {
            Frame::Open { host, .. } => host.len(),
            Frame::Text { text, .. } | Frame::Send { text, .. } => text.len(),
            Frame::Binary { .. } => 4,
            Frame::Closed { .. } => 1,
            Frame::Close { reason, .. } => 2 + reason.len().min(MAX_REASON),
            Frame::Busy { .. } | Frame::Gone { .. } => 0,
        }
    }
}

/// A batch that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// Not a batch of this version.
    BadMagic,
    /// Ends inside a field.
    Truncated(&'static str),
    /// A node id, payload or field out of its limits.
    TooLong(&'static str),
    /// An unknown frame kind or close kind.
    Unknown(&'static str, u8),
    /// Text that is not UTF-8.
    NotUtf8(&'static str),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::BadMagic => f.write_str("not a tsunagi relay batch (version 1)"),
            WireError::Truncated(what) => write!(f, "batch ends inside {what}"),
            WireError::TooLong(what) => write!(f, "{what} is too long"),
            WireError::Unknown(what, v) => write!(f, "unknown {what} {v}"),
            WireError::NotUtf8(what) => write!(f, "{what} is not UTF-8"),
        }
    }
}

impl std::error::Error for WireError {}

mod kind {
    pub const OPEN: u8 = 1;
    pub const TEXT: u8 = 2;
    pub const BINARY: u8 = 3;
    pub const CLOSED: u8 = 4;
    pub const SEND: u8 = 16;
    pub const CLOSE: u8 = 17;
    pub const BUSY: u8 = 18;
    pub const GONE: u8 = 19;
}

/// Appends a batch from node `from` holding `frames` to `out`. A node id over
/// [`MAX_NODE_ID`] bytes is cut (node ids are checked when configured); payloads over
/// [`MAX_PAYLOAD`] and close reasons over 123 bytes are cut at a character boundary.
pub fn encode_batch<'a>(
    from: &str,
    frames: impl IntoIterator<Item = &'a Frame>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(MAGIC);
    let from = cut(from, MAX_NODE_ID);
    out.push(from.len() as u8);
    out.extend_from_slice(from.as_bytes());
    for f in frames {
        encode_frame(f, out);
    }
}

fn encode_frame(f: &Frame, out: &mut Vec<u8>) {
    let (k, conn) = match f {
        Frame::Open { conn, .. } => (kind::OPEN, conn),
        Frame::Text { conn, .. } => (kind::TEXT, conn),
        Frame::Binary { conn, .. } => (kind::BINARY, conn),
        Frame::Closed { conn, .. } => (kind::CLOSED, conn),
        Frame::Send { conn, .. } => (kind::SEND, conn),
        Frame::Close { conn, .. } => (kind::CLOSE, conn),
        Frame::Busy { conn } => (kind::BUSY, conn),
        Frame::Gone { conn } => (kind::GONE, conn),
    };
    out.push(k);
    out.extend_from_slice(&conn.to_be_bytes());
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    match f {
        Frame::Open { host: s, .. } | Frame::Text { text: s, .. } | Frame::Send { text: s, .. } => {
            out.extend_from_slice(cut(s, MAX_PAYLOAD).as_bytes());
        }
        Frame::Binary { len, .. } => out.extend_from_slice(&len.to_be_bytes()),
        Frame::Closed { how, .. } => out.push(match how {
            How::Clean => 0,
            How::Lost => 1,
            How::Overflow => 2,
        }),
        Frame::Close { code, reason, .. } => {
            out.extend_from_slice(&code.to_be_bytes());
            out.extend_from_slice(cut(reason, MAX_REASON).as_bytes());
        }
        Frame::Busy { .. } | Frame::Gone { .. } => {}
    }
    let len = (out.len() - len_at - 4) as u32;
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A checked reader over a batch.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.rest.len() < n {
            return Err(WireError::Truncated(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
}

fn utf8(b: &[u8], what: &'static str) -> Result<String, WireError> {
    std::str::from_utf8(b)
        .map(str::to_owned)
        .map_err(|_| WireError::NotUtf8(what))
}

/// Reads a batch: the sender's node id and its frames, in order.
pub fn decode_batch(bytes: &[u8]) -> Result<(String, Vec<Frame>), WireError> {
    let mut c = Cursor { rest: bytes };
    if c.take(4, "the magic")? != MAGIC {
        return Err(WireError::BadMagic);
    }
    let n = usize::from(c.u8("the node id length")?);
    if n > MAX_NODE_ID {
        return Err(WireError::TooLong("the node id"));
    }
    let from = utf8(c.take(n, "the node id")?, "the node id")?;
    let mut frames = Vec::new();
    while !c.rest.is_empty() {
        let k = c.u8("a frame kind")?;
        let conn = u64::from_be_bytes(c.array("a connection number")?);
        let len = u32::from_be_bytes(c.array("a payload length")?) as usize;
        if len > MAX_PAYLOAD + 4 {
            return Err(WireError::TooLong("a payload"));
        }
        let mut p = Cursor {
            rest: c.take(len, "a payload")?,
        };
        let frame = match k {
            kind::OPEN => Frame::Open {
                conn,
                host: utf8(p.take(len, "a host")?, "a host")?,
            },
            kind::TEXT => Frame::Text {
                conn,
                text: utf8(p.take(len, "a text")?, "a text")?,
            },
            kind::SEND => Frame::Send {
                conn,
                text: utf8(p.take(len, "a text")?, "a text")?,
            },
            kind::BINARY => Frame::Binary {
                conn,
                len: u32::from_be_bytes(p.array("a binary length")?),
            },
            kind::CLOSED => Frame::Closed {
                conn,
                how: match p.u8("a close kind")? {
                    0 => How::Clean,
                    1 => How::Lost,
                    2 => How::Overflow,
                    other => return Err(WireError::Unknown("close kind", other)),
                },
            },
            kind::CLOSE => {
                let code = u16::from_be_bytes(p.array("a close code")?);
                let rest = p.rest.len();
                if rest > MAX_REASON {
                    return Err(WireError::TooLong("a close reason"));
                }
                Frame::Close {
                    conn,
                    code,
                    reason: utf8(p.take(rest, "a close reason")?, "a close reason")?,
                }
            }
            kind::BUSY => Frame::Busy { conn },
            kind::GONE => Frame::Gone { conn },
            other => return Err(WireError::Unknown("frame kind", other)),
        };
        if !p.rest.is_empty() {
            return Err(WireError::TooLong("a fixed-size payload"));
        }
        frames.push(frame);
    }
    Ok((from, frames))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn every_kind() -> Vec<Frame> {
        vec![
            Frame::Open {
                conn: 1,
                host: "node1.example.org".into(),
            },
            Frame::Text {
                conn: 1,
                text: r#"{"type":"join","room":"r","name":"花子"}"#.into(),
            },
            Frame::Binary { conn: 1, len: 77 },
            Frame::Closed {
                conn: 1,
                how: How::Lost,
            },
            Frame::Send {
                conn: u64::MAX,
                text: String::new(),
            },
            Frame::Close {
                conn: 2,
                code: 4001,
                reason: "join again: the room moved".into(),
            },
            Frame::Busy { conn: 3 },
            Frame::Gone { conn: 4 },
        ]
    }

    #[test]
    fn every_kind_round_trips_with_its_length() {
        let frames = every_kind();
        let mut out = Vec::new();
        encode_batch("n1-0a1b2c3d", &frames, &mut out);
        let header = 4 + 1 + "n1-0a1b2c3d".len();
        assert_eq!(
            out.len(),
            header + frames.iter().map(Frame::encoded_len).sum::<usize>()
        );
        let (from, back) = decode_batch(&out).unwrap();
        assert_eq!(from, "n1-0a1b2c3d");
        assert_eq!(back, frames);
        assert!(frames[0].from_edge() && !frames[4].from_edge());
        assert_eq!(frames[7].conn(), 4);
    }

    #[test]
    fn a_known_answer() {
        let mut out = Vec::new();
        encode_batch(
            "a",
            &[
                Frame::Busy { conn: 258 },
                Frame::Closed {
                    conn: 1,
                    how: How::Clean,
                },
            ],
            &mut out,
        );
        assert_eq!(
            out,
            [
                b"TSG1".as_slice(),
                &[1, b'a'],
                &[18, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0],
                &[4, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0],
            ]
            .concat()
        );
    }

    #[test]
    fn bad_batches_are_errors() {
        assert_eq!(decode_batch(b""), Err(WireError::Truncated("the magic")));
        assert_eq!(decode_batch(b"TSG2\0"), Err(WireError::BadMagic));
        assert_eq!(
            decode_batch(b"TSG1\x05ab"),
            Err(WireError::Truncated("the node id"))
        );
        assert_eq!(
            decode_batch(b"TSG1\xffab"),
            Err(WireError::TooLong("the node id"))
        );
        assert_eq!(decode_batch(b"TSG1\x00"), Ok((String::new(), vec![])));
        let mut b = b"TSG1\x00".to_vec();
        b.extend_from_slice(&[99, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(decode_batch(&b), Err(WireError::Unknown("frame kind", 99)));
        let mut b = b"TSG1\x00".to_vec();
        b.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0xff, 0xfe]);
        assert_eq!(decode_batch(&b), Err(WireError::NotUtf8("a text")));
        let mut b = b"TSG1\x00".to_vec();
        b.extend_from_slice(&[4, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0]);
        assert_eq!(
            decode_batch(&b),
            Err(WireError::TooLong("a fixed-size payload"))
        );
        let mut b = b"TSG1\x00".to_vec();
        b.extend_from_slice(&[4, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 9]);
        assert_eq!(decode_batch(&b), Err(WireError::Unknown("close kind", 9)));
        let mut b = b"TSG1\x00".to_vec();
        b.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(decode_batch(&b), Err(WireError::TooLong("a payload")));
    }

    #[test]
    fn long_fields_are_cut_on_a_character_boundary() {
        let reason = "あ".repeat(50); // 150 bytes
        let mut out = Vec::new();
        encode_batch(
            &"n".repeat(100),
            &[Frame::Close {
                conn: 1,
                code: 1000,
                reason,
            }],
            &mut out,
        );
        let (from, frames) = decode_batch(&out).unwrap();
        assert_eq!(from.len(), MAX_NODE_ID);
        let Frame::Close { reason, .. } = &frames[0] else {
            panic!("{frames:?}")
        };
        assert_eq!(reason.len(), 123);
    }

    fn frame() -> impl Strategy<Value = Frame> {
        let s = ".{0,40}";
        prop_oneof![
            (any::<u64>(), s).prop_map(|(conn, host)| Frame::Open { conn, host }),
            (any::<u64>(), s).prop_map(|(conn, text)| Frame::Text { conn, text }),
            (any::<u64>(), any::<u32>()).prop_map(|(conn, len)| Frame::Binary { conn, len }),
            (any::<u64>(), 0u8..3).prop_map(|(conn, h)| Frame::Closed {
                conn,
                how: [How::Clean, How::Lost, How::Overflow][usize::from(h)],
            }),
            (any::<u64>(), s).prop_map(|(conn, text)| Frame::Send { conn, text }),
            (any::<u64>(), any::<u16>(), ".{0,30}").prop_map(|(conn, code, reason)| Frame::Close {
                conn,
                code,
                reason
            }),
            any::<u64>().prop_map(|conn| Frame::Busy { conn }),
            any::<u64>().prop_map(|conn| Frame::Gone { conn }),
        ]
    }

    proptest! {
        #[test]
        fn batches_round_trip(from in "[a-z0-9-]{0,64}", frames in proptest::collection::vec(frame(), 0..20)) {
            let mut out = Vec::new();
            encode_batch(&from, &frames, &mut out);
            prop_assert_eq!(decode_batch(&out), Ok((from, frames)));
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_batch(&bytes);
            let mut b = b"TSG1\x00".to_vec();
            b.extend_from_slice(&bytes);
            let _ = decode_batch(&b);
        }
    }
}
