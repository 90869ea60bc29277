//! Whether an RTP packet starts a keyframe, read from its payload alone.
//!
//! Forwarding RTP packets as they come (str0m's RTP mode) means no depacketizer sees a
//! whole frame, yet the SFU must know where keyframes start: a subscriber switches to
//! another simulcast layer only at one, and a subscriber that lost a frame gets nothing
//! of that layer until the next one. The first packet of a keyframe says so in its
//! payload descriptor or NAL header:
//!
//! * VP8 (RFC 7741 §4.2, §4.3): the start of partition 0 (S = 1, PID = 0) whose VP8
//!   payload header has P = 0 (str0m's [`Vp8Descriptor`] parses it);
//! * VP9 (RFC 9628 §4.2): the start of a frame (B = 1) that is not inter-predicted
//!   (P = 0), of the base spatial layer when a layer index is present;
//! * H.264 (RFC 6184 §5): an IDR slice (NAL type 5) or a sequence parameter set (7), as
//!   a single NAL unit, inside an aggregation packet (STAP-A), or at the start of a
//!   fragmented unit (FU-A).
//!
//! Every function takes any bytes: a short or malformed payload is "not a keyframe",
//! never a panic.

use str0m::format::Codec;
use str0m::rtp::Vp8Descriptor;

/// True when `payload` (an RTP payload of `codec`, without the RTP header) is the first
/// packet of a keyframe. Always false for codecs without keyframes (audio).
pub fn starts_keyframe(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => Vp8Descriptor::parse(payload).is_ok_and(|d| d.starts_keyframe(payload)),
        Codec::Vp9 => vp9_starts_keyframe(payload),
        Codec::H264 => h264_starts_keyframe(payload),
        _ => false,
    }
}

/// VP9 payload descriptor, first octet: I P L F B E V Z.
fn vp9_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let picture_id = first & 0x80 != 0;
    let predicted = first & 0x40 != 0;
    let layers = first & 0x20 != 0;
    let begins_frame = first & 0x08 != 0;
    if predicted || !begins_frame {
        return false;
    }
    if !layers {
        return true;
    }
    // The layer index follows the picture id (7 or 15 bits, M = its first bit).
    let mut at = 1;
    if picture_id {
        let Some(&pid) = payload.get(at) else {
            return false;
        };
        at += if pid & 0x80 != 0 { 2 } else { 1 };
    }
    // TID (3) U (1) SID (3) D (1).
    payload.get(at).is_some_and(|&l| (l >> 1) & 0x07 == 0)
}

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_STAP_A: u8 = 24;
const NAL_FU_A: u8 = 28;

fn h264_keyframe_nal(nal_type: u8) -> bool {
    nal_type == NAL_IDR || nal_type == NAL_SPS
}

fn h264_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    match header & 0x1f {
        NAL_STAP_A => {
            // Aggregated NAL units, each after a 16-bit size.
            let mut at = 1;
            while let (Some(&hi), Some(&lo)) = (payload.get(at), payload.get(at + 1)) {
                let size = usize::from(u16::from_be_bytes([hi, lo]));
                let Some(&nal) = payload.get(at + 2) else {
                    return false;
                };
                if size > 0 && h264_keyframe_nal(nal & 0x1f) {
                    return true;
                }
                at += 2 + size;
            }
            false
        }
        // FU header: S E R type.
        NAL_FU_A => payload
            .get(1)
            .is_some_and(|&fu| fu & 0x80 != 0 && h264_keyframe_nal(fu & 0x1f)),
        single => h264_keyframe_nal(single),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vp8() {
        // X=0, S=1, PID=0; VP8 payload header with P=0 (keyframe) or P=1.
        assert!(starts_keyframe(Codec::Vp8, &[0x10, 0x00, 0x9d, 0x01, 0x2a]));
        assert!(!starts_keyframe(
            Codec::Vp8,
            &[0x10, 0x01, 0x9d, 0x01, 0x2a]
        ));
        // Not the start of partition 0.
        assert!(!starts_keyframe(
            Codec::Vp8,
            &[0x00, 0x00, 0x9d, 0x01, 0x2a]
        ));
        // X=1, I=1 with a 15-bit picture id, then the payload header.
        assert!(starts_keyframe(
            Codec::Vp8,
            &[0x90, 0x80, 0x81, 0x23, 0x00, 0x9d]
        ));
        assert!(!starts_keyframe(
            Codec::Vp8,
            &[0x90, 0x80, 0x81, 0x23, 0x01, 0x9d]
        ));
        assert!(!starts_keyframe(Codec::Vp8, &[]));
    }

    #[test]
    fn vp9() {
        // B=1, P=0, no layer index.
        assert!(starts_keyframe(Codec::Vp9, &[0x08, 0x00]));
        // P=1: predicted.
        assert!(!starts_keyframe(Codec::Vp9, &[0x48, 0x00]));
        // B=0: not the start of the frame.
        assert!(!starts_keyframe(Codec::Vp9, &[0x00, 0x00]));
        // I=1 (7-bit id), L=1, SID 0, then SID 1.
        assert!(starts_keyframe(Codec::Vp9, &[0xa8, 0x05, 0x00, 0x00]));
        assert!(!starts_keyframe(Codec::Vp9, &[0xa8, 0x05, 0x02, 0x00]));
        // I=1 with a 15-bit id (M=1), L=1, SID 0.
        assert!(starts_keyframe(Codec::Vp9, &[0xa8, 0x80, 0x05, 0x00, 0x00]));
        // Truncated before the layer index.
        assert!(!starts_keyframe(Codec::Vp9, &[0xa8, 0x80, 0x05]));
    }

    #[test]
    fn h264() {
        // Single NAL units: IDR, SPS, a non-IDR slice.
        assert!(starts_keyframe(Codec::H264, &[0x65, 0x88]));
        assert!(starts_keyframe(Codec::H264, &[0x67, 0x42]));
        assert!(!starts_keyframe(Codec::H264, &[0x41, 0x9a]));
        // STAP-A with an SPS (size 2) and a PPS (size 2); with only a slice.
        assert!(starts_keyframe(
            Codec::H264,
            &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce]
        ));
        assert!(!starts_keyframe(
            Codec::H264,
            &[0x78, 0x00, 0x02, 0x41, 0x9a]
        ));
        // STAP-A whose second unit is an IDR.
        assert!(starts_keyframe(
            Codec::H264,
            &[0x78, 0x00, 0x01, 0x68, 0x00, 0x02, 0x65, 0x88]
        ));
        // FU-A: the start of an IDR; its middle; the start of a non-IDR slice.
        assert!(starts_keyframe(Codec::H264, &[0x7c, 0x85, 0x88]));
        assert!(!starts_keyframe(Codec::H264, &[0x7c, 0x05, 0x88]));
        assert!(!starts_keyframe(Codec::H264, &[0x7c, 0x81, 0x9a]));
        assert!(!starts_keyframe(Codec::H264, &[0x7c]));
        assert!(!starts_keyframe(Codec::H264, &[]));
    }

    #[test]
    fn audio_has_no_keyframes() {
        assert!(!starts_keyframe(Codec::Opus, &[0x10, 0x00, 0x9d]));
    }

    proptest! {
        #[test]
        fn any_payload_is_answered(payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            for codec in [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Opus] {
                let _ = starts_keyframe(codec, &payload);
            }
        }
    }
}
