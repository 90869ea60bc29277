//! A test client (a str0m `Rtc` acting as a browser): its state, what it received, and
//! its SDP quirks (codecs, RTX stripped).

use super::*;

pub struct Client {
    pub id: String,
    pub rtc: Rtc,
    pub addr: SocketAddr,
    pub events: Vec<(Instant, Event)>,
    pub timeout: Instant,
    /// Probability that a media packet towards this client is lost.
    pub loss: f64,
    pub offers: Vec<String>,
    pub answers: Vec<String>,
    /// Every SDP the SFU sent this client (offers and answers), in the order applied.
    pub remote_sdps: Vec<String>,
    pub pending: Option<SdpPendingOffer>,
    pub gen: Generator,
    pub started_sending: bool,
    /// Remove RTX from this client's answers: the SFU then cannot retransmit to it.
    pub strip_rtx: bool,
    /// Probability that a media packet from this client to the SFU is lost.
    pub uplink_loss: f64,
    /// The client vanished (tab closed): nothing reaches it, it sends nothing.
    pub dead: bool,
    /// Bytes the SFU sent to this client, with the time they were sent.
    pub received_bytes: Vec<(Instant, usize)>,
    pub publish: Publish,
    pub role: Role,
}

impl Client {
    pub fn video(&self) -> impl Iterator<Item = &MediaData> + '_ {
        self.media().filter(|d| !d.params.spec().codec.is_audio())
    }

    pub fn video_after(&self, t: Instant) -> impl Iterator<Item = &MediaData> + '_ {
        self.media_after(t)
            .filter(|d| !d.params.spec().codec.is_audio())
    }

    pub fn media(&self) -> impl Iterator<Item = &MediaData> + '_ {
        self.events.iter().filter_map(|(_, e)| match e {
            Event::MediaData(d) => Some(d),
            _ => None,
        })
    }

    pub fn media_after(&self, t: Instant) -> impl Iterator<Item = &MediaData> + '_ {
        self.events.iter().filter_map(move |(at, e)| match e {
            Event::MediaData(d) if *at >= t => Some(d),
            _ => None,
        })
    }

    /// The msid stream id of `mid` in the latest SDP (offer or answer) the SFU sent: the
    /// publisher the m-line carries now (an m-line is reused after its publisher left).
    pub fn stream_of(&self, mid: Mid) -> Option<String> {
        let needle = format!("a=mid:{mid}");
        for sdp in self.remote_sdps.iter().rev() {
            for section in sdp.split("\r\nm=").skip(1) {
                if section.lines().any(|l| l == needle) {
                    if let Some(l) = section.lines().find(|l| l.starts_with("a=msid:")) {
                        let s = l.trim_start_matches("a=msid:");
                        return s.split(' ').next().map(str::to_string);
                    }
                }
            }
        }
        None
    }

    pub fn media_from<'a>(
        &'a self,
        publisher: &'a str,
    ) -> impl Iterator<Item = &'a MediaData> + 'a {
        self.media()
            .filter(move |d| self.stream_of(d.mid).as_deref() == Some(publisher))
    }

    pub fn keyframe_requests(&self) -> usize {
        self.events
            .iter()
            .filter(|(_, e)| matches!(e, Event::KeyframeRequest(_)))
            .count()
    }

    pub fn channel_texts(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::ChannelData(d) if !d.binary => {
                    Some(String::from_utf8_lossy(&d.data).into_owned())
                }
                _ => None,
            })
            .collect()
    }
}

pub fn client_rtc(now: Instant, rtx: bool) -> Rtc {
    let mut b = Rtc::builder().clear_codecs();
    b.codec_config().add_config(
        111.into(),
        None,
        Codec::Opus,
        Frequency::FORTY_EIGHT_KHZ,
        Some(2),
        FormatParams {
            min_p_time: Some(10),
            use_inband_fec: Some(true),
            ..Default::default()
        },
    );
    b.codec_config().add_config(
        96.into(),
        rtx.then(|| 97.into()),
        Codec::Vp8,
        Frequency::NINETY_KHZ,
        None,
        FormatParams::default(),
    );
    b.build(now)
}

/// Removes every RTX payload type (rtpmap, fmtp, rtcp-fb, and from the m-lines) from an SDP.
pub fn strip_rtx(sdp: &str) -> String {
    let rtx: Vec<String> = sdp
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("a=rtpmap:")?;
            let (pt, codec) = rest.split_once(' ')?;
            codec
                .to_ascii_lowercase()
                .starts_with("rtx/")
                .then(|| pt.to_string())
        })
        .collect();
    let mut out = Vec::new();
    for line in sdp.split("\r\n") {
        let drop = rtx.iter().any(|pt| {
            line.starts_with(&format!("a=rtpmap:{pt} "))
                || line.starts_with(&format!("a=fmtp:{pt} "))
                || line.starts_with(&format!("a=rtcp-fb:{pt} "))
        }) || line.starts_with("a=ssrc-group:FID");
        if drop {
            continue;
        }
        if line.starts_with("m=") {
            let kept: Vec<&str> = line
                .split(' ')
                .enumerate()
                .filter(|(i, f)| *i < 3 || !rtx.iter().any(|pt| pt == f))
                .map(|(_, f)| f)
                .collect();
            out.push(kept.join(" "));
        } else {
            out.push(line.to_string());
        }
    }
    out.join("\r\n")
}
