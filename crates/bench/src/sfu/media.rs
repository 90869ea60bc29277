//! The media the generator sends: Opus silence and VP8 frames that carry a tag (sender,
//! sequence, send time, keyframe) for per-frame latency.

use super::*;

// ---------------------------------------------------------------------------------------
// Frames.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tag {
    pub(crate) video: bool,
    pub(crate) keyframe: bool,
    pub(crate) publisher: u16,
    pub(crate) seq: u32,
    pub(crate) sent_us: u32,
}

impl Tag {
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&TAG_MAGIC);
        out.push(u8::from(self.video));
        out.push(u8::from(self.keyframe));
        out.extend_from_slice(&self.publisher.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.sent_us.to_be_bytes());
    }

    pub(crate) fn read(b: &[u8]) -> Option<Tag> {
        let b = b.get(..TAG_LEN)?;
        if b[..2] != TAG_MAGIC || b[2] > 1 || b[3] > 1 {
            return None;
        }
        Some(Tag {
            video: b[2] == 1,
            keyframe: b[3] == 1,
            publisher: u16::from_be_bytes([b[4], b[5]]),
            seq: u32::from_be_bytes([b[6], b[7], b[8], b[9]]),
            sent_us: u32::from_be_bytes([b[10], b[11], b[12], b[13]]),
        })
    }

    /// The tag of a received frame: after the Opus silence bytes, or after the VP8
    /// frame header (10 bytes on keyframes, 3 otherwise; RFC 6386 section 9.1).
    pub(crate) fn find(video: bool, data: &[u8]) -> Option<Tag> {
        let at = if video {
            if data.first()? & 1 == 0 {
                VP8_KEY_HEADER
            } else {
                VP8_INTER_HEADER
            }
        } else {
            OPUS_SILENCE.len()
        };
        Tag::read(data.get(at..)?)
    }
}

pub(crate) fn opus_frame(tag: &Tag) -> Vec<u8> {
    let mut f = Vec::with_capacity(OPUS_SILENCE.len() + TAG_LEN);
    f.extend_from_slice(&OPUS_SILENCE);
    tag.write(&mut f);
    f
}

/// A VP8 frame of `size` bytes: the frame tag (RFC 6386 section 9.1: bit 0 is 0 on a
/// keyframe, version 0, show_frame 1, the first partition's size), on keyframes the
/// start code and 640x360, then our tag and filler.
pub(crate) fn vp8_frame(tag: &Tag, size: usize, filler: &[u8]) -> Vec<u8> {
    let header = if tag.keyframe {
        VP8_KEY_HEADER
    } else {
        VP8_INTER_HEADER
    };
    let size = size.max(header + TAG_LEN + 1);
    let first_partition = (size - header).min(0x7FFFF) as u32;
    let frame_tag = u32::from(!tag.keyframe) | (1 << 4) | (first_partition << 5);
    let mut f = Vec::with_capacity(size);
    f.extend_from_slice(&frame_tag.to_le_bytes()[..3]);
    if tag.keyframe {
        f.extend_from_slice(&[0x9d, 0x01, 0x2a]);
        f.extend_from_slice(&640u16.to_le_bytes());
        f.extend_from_slice(&360u16.to_le_bytes());
    }
    tag.write(&mut f);
    while f.len() < size {
        let n = (size - f.len()).min(filler.len());
        f.extend_from_slice(&filler[..n]);
    }
    f
}
