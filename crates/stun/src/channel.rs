//! ChannelData framing (RFC 8656 §12) and what the first bytes of a packet say it is
//! (RFC 7983 demultiplexing).

use crate::cursor::Cursor;
use crate::{Error, HEADER_LEN};

/// What the first bytes of a packet say it is (RFC 8656 §12, RFC 7983 demultiplexing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    Stun,
    ChannelData,
    Other,
}

/// Classify a packet by its first byte: 0..=3 STUN, 0x40..=0x7F ChannelData (RFC 7983;
/// 0x50..=0x7F for the RFC 5766 channel range, see [`ChannelData::MAX_CHANNEL_RFC5766`]).
pub fn classify(buf: &[u8]) -> PacketKind {
    match buf.first() {
        Some(0..=3) => PacketKind::Stun,
        Some(0x40..=0x7F) => PacketKind::ChannelData,
        _ => PacketKind::Other,
    }
}

/// A TURN ChannelData message (RFC 8656 §12.4) borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    pub channel: u16,
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Channel numbers of RFC 8656 §12.
    pub const MIN_CHANNEL: u16 = 0x4000;
    pub const MAX_CHANNEL: u16 = 0x4FFF;
    /// RFC 5766 allowed channels up to 0x7FFE, and deployed clients (coturn's
    /// `turnutils_uclient` among them) still use them. First bytes 0x50..=0x7F are
    /// unassigned in the RFC 7983 demultiplexing table, so accepting them collides
    /// with nothing; parsing and framing accept this wider range.
    pub const MAX_CHANNEL_RFC5766: u16 = 0x7FFE;

    /// Parse one ChannelData message from a datagram. The data may be followed by the
    /// padding that rounds the message up to a multiple of 4 bytes (RFC 8656 §12.5
    /// allows it over UDP and requires it over TCP); any other trailing byte is rejected.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        let mut c = Cursor::new(buf);
        let channel = c.u16("ChannelData channel number")?;
        if !(Self::MIN_CHANNEL..=Self::MAX_CHANNEL_RFC5766).contains(&channel) {
            return Err(Error::BadChannelNumber(channel));
        }
        let len = c.u16("ChannelData length")? as usize;
        let data = c.take(len, "ChannelData data")?;
        let pad = (4 - len % 4) % 4;
        if c.remaining() != 0 && c.remaining() != pad {
            return Err(Error::TrailingBytes("ChannelData"));
        }
        Ok(Self { channel, data })
    }

    /// Size of the encoded message; `padded` rounds up to 4 bytes (required on TCP).
    pub fn encoded_len(data_len: usize, padded: bool) -> usize {
        let n = 4 + data_len;
        if padded {
            (n + 3) & !3
        } else {
            n
        }
    }

    /// Write the 4-byte header for a payload of `data_len` bytes into `out[..4]`.
    /// Used when the payload already sits at `out[4..]` (receive-in-place relaying).
    pub fn write_header(
        out: &mut [u8],
        channel: u16,
        data_len: u16,
    ) -> Result<(), crate::EncodeError> {
        let h = out.get_mut(..4).ok_or(crate::EncodeError::BufferTooSmall)?;
        h[0..2].copy_from_slice(&channel.to_be_bytes());
        h[2..4].copy_from_slice(&data_len.to_be_bytes());
        Ok(())
    }

    /// Encode into `out`, returning the length written.
    pub fn encode(&self, out: &mut [u8], padded: bool) -> Result<usize, crate::EncodeError> {
        if self.data.len() > u16::MAX as usize {
            return Err(crate::EncodeError::TooLong);
        }
        let n = Self::encoded_len(self.data.len(), padded);
        let o = out.get_mut(..n).ok_or(crate::EncodeError::BufferTooSmall)?;
        o[0..2].copy_from_slice(&self.channel.to_be_bytes());
        o[2..4].copy_from_slice(&(self.data.len() as u16).to_be_bytes());
        o[4..4 + self.data.len()].copy_from_slice(self.data);
        for b in &mut o[4 + self.data.len()..] {
            *b = 0;
        }
        Ok(n)
    }
}

/// How long the next frame in a TCP stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameLen {
    /// Not enough bytes yet to know.
    Incomplete,
    /// A STUN message of this many bytes.
    Stun(usize),
    /// A ChannelData message of this many bytes, padding included (RFC 8656 §12.5:
    /// over TCP the frame is padded to a multiple of 4).
    ChannelData(usize),
    /// The stream is not STUN/ChannelData; the connection should be closed.
    Invalid,
}

/// Frame a TCP byte stream (RFC 8489 §6.2.2, RFC 8656 §12.5).
pub fn stream_frame_len(buf: &[u8]) -> FrameLen {
    if buf.len() < 4 {
        return match classify(buf) {
            PacketKind::Other if !buf.is_empty() => FrameLen::Invalid,
            _ => FrameLen::Incomplete,
        };
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    match classify(buf) {
        PacketKind::Stun if len.is_multiple_of(4) => FrameLen::Stun(HEADER_LEN + len),
        PacketKind::ChannelData => FrameLen::ChannelData((4 + len + 3) & !3),
        _ => FrameLen::Invalid,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn channel_data_roundtrip_and_padding() {
        let mut buf = [0u8; 16];
        let n = ChannelData {
            channel: 0x4001,
            data: b"hello",
        }
        .encode(&mut buf, true)
        .unwrap();
        assert_eq!(n, 12);
        assert_eq!(&buf[..4], &[0x40, 0x01, 0, 5]);
        let cd = ChannelData::parse(&buf[..n]).unwrap();
        assert_eq!(cd.data, b"hello");
        assert_eq!(stream_frame_len(&buf[..n]), FrameLen::ChannelData(12));
        assert!(ChannelData::parse(&[0x40, 0x01, 0, 5, 1, 2]).is_err());
        assert!(ChannelData::parse(&[0x80, 0x01, 0, 0]).is_err());
        assert_eq!(stream_frame_len(&[0x00, 0x01, 0x00]), FrameLen::Incomplete);
        assert_eq!(stream_frame_len(&[0x80]), FrameLen::Invalid);
    }
}
