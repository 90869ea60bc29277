//! The media a test client publishes: which tracks ([`Publish`]), VP8 test frames and
//! their tags, and the generator that sends audio and video once connected.

use super::*;

/// Frame sizes per rid (bytes): l, m, h, and a non-simulcast stream.
pub fn frame_size(rid: Option<&str>) -> usize {
    match rid {
        Some("l") => 250,
        Some("m") => 800,
        Some("h") => 2_000,
        _ => 1_200,
    }
}

/// RTP time base per rid, so that the layers have unrelated timestamps as in browsers.
fn time_base(rid: Option<&str>) -> u64 {
    match rid {
        Some("l") => 0,
        Some("m") => 1_000_000,
        Some("h") => 7_000_000,
        _ => 0,
    }
}

/// A VP8 frame: byte 0 carries the P bit (0 = keyframe); byte 10 is a tag (the rid's
/// first letter), bytes 11..15 the frame number.
pub fn vp8_frame(keyframe: bool, tag: u8, n: u32, size: usize) -> Vec<u8> {
    let mut v = vec![0u8; size.max(16)];
    v[0] = if keyframe { 0x10 } else { 0x11 };
    if keyframe {
        v[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
    }
    v[10] = tag;
    v[11..15].copy_from_slice(&n.to_be_bytes());
    v
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Publish {
    pub audio: bool,
    pub video: bool,
    pub simulcast: bool,
}

impl Publish {
    pub const NONE: Publish = Publish {
        audio: false,
        video: false,
        simulcast: false,
    };
    pub const AV: Publish = Publish {
        audio: true,
        video: true,
        simulcast: false,
    };
    pub const AUDIO: Publish = Publish {
        audio: true,
        video: false,
        simulcast: false,
    };
    pub const VIDEO: Publish = Publish {
        audio: false,
        video: true,
        simulcast: false,
    };
    pub const SIMULCAST: Publish = Publish {
        audio: true,
        video: true,
        simulcast: true,
    };
}

/// Media a client sends once connected.
#[derive(Debug)]
pub struct Generator {
    pub audio: Option<Mid>,
    pub video: Option<Mid>,
    pub rids: Vec<Rid>,
    pub frame: u32,
    pub next_video: Option<Instant>,
    pub next_audio: Option<Instant>,
    /// rids (None = no simulcast) whose next frame must be a keyframe.
    pub want_keyframe: Vec<Option<Rid>>,
    /// A keyframe every this many frames (None: only on request and at the start).
    pub keyframe_every: Option<u32>,
    pub audio_level: i8,
    pub paused: bool,
    /// rids the publisher does not send (as Chromium drops a layer under adaptation).
    pub skip_rids: Vec<Rid>,
    /// Keyframe requests to ignore (as if the PLI was lost on the way).
    pub ignore_requests: u32,
}

impl World {
    pub(super) fn generate(&mut self, i: usize) {
        let now = self.now;
        let c = &mut self.clients[i];
        if c.dead
            || c.gen.paused
            || !c.rtc.is_connected()
            || (c.gen.audio.is_none() && c.gen.video.is_none())
        {
            return;
        }
        if !c.started_sending {
            c.started_sending = true;
            c.gen.next_audio = c.gen.audio.map(|_| now);
            c.gen.next_video = c.gen.video.map(|_| now);
        }
        if let (Some(mid), Some(t)) = (c.gen.audio, c.gen.next_audio) {
            if t <= now {
                let seq = t.duration_since(self.start).as_millis() as u64 / 20;
                let w = c.rtc.writer(mid).unwrap();
                let pt = w
                    .payload_params()
                    .find(|p| p.spec().codec == Codec::Opus)
                    .unwrap()
                    .pt();
                w.audio_level(c.gen.audio_level, true)
                    .write(
                        pt,
                        now,
                        MediaTime::new(seq * 960, Frequency::FORTY_EIGHT_KHZ),
                        vec![0xfc; 60],
                    )
                    .unwrap();
                c.gen.next_audio = Some(t + Duration::from_millis(20));
                self.drain_client(i);
            }
        }
        let c = &mut self.clients[i];
        if let (Some(mid), Some(t)) = (c.gen.video, c.gen.next_video) {
            if t <= now {
                let frame = c.gen.frame;
                c.gen.frame += 1;
                let periodic = c
                    .gen
                    .keyframe_every
                    .is_some_and(|k| frame.is_multiple_of(k));
                let rids: Vec<Option<Rid>> = if c.gen.rids.is_empty() {
                    vec![None]
                } else {
                    c.gen.rids.iter().map(|r| Some(*r)).collect()
                };
                for rid in rids {
                    if rid.is_some_and(|r| self.clients[i].gen.skip_rids.contains(&r)) {
                        continue;
                    }
                    let rid_str = rid.as_ref().map(|r| r.to_string());
                    let rs = rid_str.as_deref();
                    let c = &mut self.clients[i];
                    let requested = c.gen.want_keyframe.contains(&rid);
                    let kf = frame == 0 || periodic || requested;
                    c.gen.want_keyframe.retain(|r| *r != rid);
                    let tag = rs.map(|r| r.as_bytes()[0]).unwrap_or(b's');
                    let data = vp8_frame(kf, tag, frame, frame_size(rs));
                    let time =
                        MediaTime::new(time_base(rs) + frame as u64 * 3000, Frequency::NINETY_KHZ);
                    let mut w = c.rtc.writer(mid).unwrap();
                    let pt = w
                        .payload_params()
                        .find(|p| p.spec().codec == Codec::Vp8)
                        .unwrap()
                        .pt();
                    if let Some(r) = rid {
                        w = w.rid(r);
                    }
                    w.write(pt, now, time, data).unwrap();
                    self.drain_client(i);
                }
                self.clients[i].gen.next_video = Some(t + Duration::from_millis(33));
            }
        }
    }
}

/// The tag byte of a VP8 test frame: b'l', b'm', b'h' or b's'.
pub fn tag(d: &MediaData) -> u8 {
    d.data.get(10).copied().unwrap_or(0)
}
