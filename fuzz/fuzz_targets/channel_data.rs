//! Parse a datagram as TURN ChannelData and encode it back, padded and unpadded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsunagi_stun::{classify, stream_frame_len, ChannelData, FrameLen, PacketKind};

fuzz_target!(|data: &[u8]| {
    let kind = classify(data);
    let Ok(cd) = ChannelData::parse(data) else {
        return;
    };
    assert_eq!(kind, PacketKind::ChannelData);
    assert!((ChannelData::MIN_CHANNEL..=ChannelData::MAX_CHANNEL_RFC5766).contains(&cd.channel));

    for padded in [false, true] {
        let len = ChannelData::encoded_len(cd.data.len(), padded);
        let mut buf = vec![0u8; len];
        let n = cd
            .encode(&mut buf, padded)
            .expect("encoded_len bytes suffice");
        assert_eq!(n, len);
        assert_eq!(ChannelData::parse(&buf), Ok(cd));
        // The accepted input is the encoding, possibly followed by its padding.
        let head = 4 + cd.data.len();
        assert_eq!(&buf[..head], &data[..head]);
        assert!(data.len() == head || data.len() == ChannelData::encoded_len(cd.data.len(), true));
        if padded {
            assert_eq!(stream_frame_len(&buf), FrameLen::ChannelData(n));
        }
    }

    let mut inplace = vec![0u8; 4 + cd.data.len()];
    inplace[4..].copy_from_slice(cd.data);
    let len = u16::try_from(cd.data.len()).expect("a parsed length came from a u16");
    ChannelData::write_header(&mut inplace, cd.channel, len).expect("4 bytes suffice");
    assert_eq!(ChannelData::parse(&inplace), Ok(cd));
});
