//! Split a TCP byte stream into frames with `stream_frame_len` and parse each frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsunagi_stun::{
    stream_frame_len, ChannelData, Error, FrameLen, IntegrityKey, Message, HEADER_LEN,
};

fuzz_target!(|data: &[u8]| {
    let key = IntegrityKey::short_term("VOkJxbRl1RmTxUk/WvJxBt");
    let mut rest = data;
    loop {
        match stream_frame_len(rest) {
            FrameLen::Incomplete => {
                assert!(rest.len() < 4);
                break;
            }
            FrameLen::Invalid => {
                assert!(!rest.is_empty());
                break;
            }
            FrameLen::Stun(n) => {
                assert!(n >= HEADER_LEN && n % 4 == 0);
                let Some(frame) = rest.get(..n) else { break };
                match Message::parse(frame) {
                    Ok(m) => {
                        let _ = m.verify_integrity(&key);
                        let _ = m.has_valid_fingerprint();
                        let _ = m.attributes().count();
                    }
                    // The framer read the type and length the parser checks: a framed
                    // STUN message can only fail on its cookie or its attributes.
                    Err(e) => assert!(
                        !matches!(e, Error::NotStun | Error::BadLength(_)),
                        "framed STUN message rejected with {e:?}"
                    ),
                }
                rest = &rest[n..];
            }
            FrameLen::ChannelData(n) => {
                assert!(n >= 4 && n % 4 == 0);
                let Some(frame) = rest.get(..n) else { break };
                // RFC 8656 §12.5: over TCP the frame is padded to 4 bytes, and the
                // framer's length is exactly that, so the frame parses unless its channel
                // is 0x7FFF: the framer goes by the first byte (0x40..=0x7F), the parser
                // also by the channel range (0x4000..=0x7FFE).
                match ChannelData::parse(frame) {
                    Ok(cd) => assert_eq!(ChannelData::encoded_len(cd.data.len(), true), n),
                    Err(e) => assert_eq!(e, Error::BadChannelNumber(0x7FFF)),
                }
                rest = &rest[n..];
            }
        }
    }
});
