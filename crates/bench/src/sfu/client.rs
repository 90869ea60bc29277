//! One generated WebRTC client (str0m): a publisher or a subscriber over WHIP/WHEP, its
//! sender and receiver state, and what it heard.

use super::*;

// ---------------------------------------------------------------------------------------
// Clients.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Publisher,
    Subscriber,
    /// A room participant (bench/sfu_room.rs): publishes and receives over signaling.
    Participant,
}

impl Role {
    pub(crate) fn endpoint(self) -> &'static str {
        match self {
            Role::Publisher => "whip",
            Role::Subscriber => "whep",
            Role::Participant => "room",
        }
    }
}

/// A publisher's sending state.
#[derive(Debug, Default)]
pub(crate) struct Sender {
    pub(crate) audio_pt: Option<Pt>,
    pub(crate) video_pt: Option<Pt>,
    pub(crate) next_audio: Option<Instant>,
    pub(crate) next_video: Option<Instant>,
    pub(crate) audio_seq: u32,
    pub(crate) video_seq: u32,
    pub(crate) since_keyframe: u32,
    pub(crate) force_keyframe: bool,
    pub(crate) keyframe_requests: u64,
    pub(crate) window_audio: u64,
    pub(crate) window_video: u64,
    pub(crate) window_keyframes: u64,
}

/// A subscriber's counts of in-window frames, per publisher index: [audio, video].
#[derive(Debug, Default)]
pub(crate) struct Receiver {
    /// The publishers this subscriber asked for, when it named them (Janus's VideoRoom
    /// subscriptions); else it counts against those it heard.
    pub(crate) expect: Option<Vec<u16>>,
    pub(crate) frames: HashMap<u16, [u64; 2]>,
    /// Every tagged frame of the run, per publisher (which one it plays).
    pub(crate) seen: HashMap<u16, u64>,
    pub(crate) keyframes: u64,
    pub(crate) packets: u64,
    pub(crate) datagrams: u64,
    pub(crate) bytes: u64,
    pub(crate) keyframe_mismatches: u64,
    pub(crate) untagged: u64,
    /// Room participants: what arrived of each publisher over the whole run.
    pub(crate) heard: HashMap<u16, Heard>,
    /// Room participants: the publisher (`a=msid` stream id) of each m-line in the
    /// latest SDP from the SFU. str0m keeps the msid an m-line had when it was created,
    /// but the SFU gives the m-lines of those who left to newcomers (same mid, new msid).
    pub(crate) msid: HashMap<Mid, String>,
    /// Frames whose tag names another publisher than the `a=msid` of their m-line.
    pub(crate) msid_mismatches: u64,
    /// m-lines whose `a=msid` changed (given to another publisher).
    pub(crate) msid_changes: u64,
}

/// What one room participant received of one publisher (frames of the whole run).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Heard {
    pub(crate) audio: u64,
    pub(crate) video: u64,
    pub(crate) first_video: Option<Instant>,
    /// The first video frame was a keyframe (the SFU starts every stream at one).
    pub(crate) first_video_keyframe: bool,
    pub(crate) last_video: Option<Instant>,
    /// Longest time between two consecutive video frames.
    pub(crate) longest_video_gap: Duration,
    /// Longest time from the publisher's write to a complete video frame here.
    pub(crate) max_video_latency: Duration,
    /// When that frame arrived.
    pub(crate) max_video_latency_at: Option<Instant>,
    /// Sequence numbers of the first and the highest video frame received: the
    /// publisher sent `last - first + 1` video frames in between.
    pub(crate) first_video_seq: u32,
    pub(crate) last_video_seq: u32,
}

impl Heard {
    /// Video frames the publisher sent from the first one received here to the last.
    pub(crate) fn video_span(&self) -> u64 {
        if self.video == 0 {
            return 0;
        }
        u64::from(self.last_video_seq.wrapping_sub(self.first_video_seq)) + 1
    }
}

impl Receiver {
    /// Follows an SDP from the SFU: each m-line's mid and its current `a=msid` stream
    /// id (none when the m-line has no `a=msid`).
    pub(crate) fn follow_sdp(&mut self, sdp: &str) {
        // (mid, msid stream id) of each m-line, in order.
        let mut lines: Vec<(Option<&str>, Option<&str>)> = Vec::new();
        for line in sdp.lines().map(str::trim_end) {
            if line.starts_with("m=") {
                lines.push((None, None));
            } else if let Some((mid, stream)) = lines.last_mut() {
                if let Some(m) = line.strip_prefix("a=mid:") {
                    *mid = Some(m.trim());
                } else if let Some(m) = line.strip_prefix("a=msid:") {
                    *stream = m.split_whitespace().next();
                }
            }
        }
        for (mid, stream) in lines {
            let Some(mid) = mid.map(Mid::from) else {
                continue;
            };
            match stream {
                Some(s) => {
                    if let Some(old) = self.msid.insert(mid, s.to_owned()) {
                        if old != s {
                            self.msid_changes += 1;
                        }
                    }
                }
                None => {
                    self.msid.remove(&mid);
                }
            }
        }
    }
}

pub(crate) struct Client {
    pub(crate) role: Role,
    pub(crate) index: usize,
    pub(crate) rtc: Rtc,
    pub(crate) socket: UdpSocket,
    pub(crate) local: SocketAddr,
    pub(crate) timeout: Instant,
    pub(crate) resource: Option<String>,
    pub(crate) posted: Instant,
    pub(crate) connected: Option<Duration>,
    pub(crate) error: Option<String>,
    pub(crate) audio_mid: Mid,
    pub(crate) video_mid: Mid,
    pub(crate) send: Sender,
    pub(crate) recv: Receiver,
}

/// What every client's event handling needs.
pub(crate) struct Shared {
    pub(crate) t0: Instant,
    /// The window in µs since `t0` (frames sent in `[start, end)` count).
    pub(crate) window_us: Option<(u32, u32)>,
    /// The window in time (datagrams arriving in it count).
    pub(crate) window: Option<(Instant, Instant)>,
    /// Publishers stop writing at the end of the window.
    pub(crate) sending: bool,
    pub(crate) latency: Histogram,
    /// Room participants: peer id (from `welcome`) → participant index.
    pub(crate) peer_index: HashMap<String, u16>,
    pub(crate) inter_size: usize,
    pub(crate) key_size: usize,
    pub(crate) filler: Vec<u8>,
}

impl Shared {
    pub(crate) fn us(&self, t: Instant) -> u32 {
        t.saturating_duration_since(self.t0).as_micros() as u32
    }

    pub(crate) fn in_window(&self, sent_us: u32) -> bool {
        self.window_us
            .is_some_and(|(a, b)| sent_us >= a && sent_us < b)
    }
}

impl Client {
    pub(crate) fn new(
        role: Role,
        index: usize,
        local_ip: IpAddr,
        now: Instant,
    ) -> Result<(Client, String, SdpPendingOffer), String> {
        let (socket, local, mut rtc) = socket_and_rtc(local_ip, now)?;
        let dir = match role {
            Role::Publisher | Role::Participant => Direction::SendOnly,
            Role::Subscriber => Direction::RecvOnly,
        };
        let mut api = rtc.sdp_api();
        let stream = format!("bench-{}-{index}", role.endpoint());
        let audio_mid = api.add_media(MediaKind::Audio, dir, Some(stream.clone()), None, None);
        let video_mid = api.add_media(MediaKind::Video, dir, Some(stream), None, None);
        let (offer, pending) = api.apply().ok_or("str0m made no offer")?;
        Ok((
            Client {
                role,
                index,
                rtc,
                socket,
                local,
                timeout: now,
                resource: None,
                posted: now,
                connected: None,
                error: None,
                audio_mid,
                video_mid,
                send: Sender::default(),
                recv: Receiver::default(),
            },
            offer.to_sdp_string(),
            pending,
        ))
    }

    /// A client that answers the server's offer (Janus's subscribers): the client and
    /// its SDP answer. Its `audio_mid`/`video_mid` are the offer's first of each kind.
    pub(crate) fn answering(
        role: Role,
        index: usize,
        local_ip: IpAddr,
        now: Instant,
        offer: &str,
    ) -> Result<(Client, String), String> {
        let (socket, local, mut rtc) = socket_and_rtc(local_ip, now)?;
        let mids = offer_mids(offer);
        let first = |kind: &str| {
            mids.iter()
                .find(|(k, _)| k == kind)
                .map(|(_, m)| Mid::from(m.as_str()))
        };
        let (Some(audio_mid), Some(video_mid)) = (first("audio"), first("video")) else {
            return Err("the server's offer has no audio or no video m-line with a mid".into());
        };
        let offer = SdpOffer::from_sdp_string(offer)
            .map_err(|e| format!("the server's offer does not parse: {e}"))?;
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| format!("str0m refused the server's offer: {e}"))?;
        Ok((
            Client {
                role,
                index,
                rtc,
                socket,
                local,
                timeout: now,
                resource: None,
                posted: now,
                connected: None,
                error: None,
                audio_mid,
                video_mid,
                send: Sender::default(),
                recv: Receiver::default(),
            },
            answer.to_sdp_string(),
        ))
    }

    pub(crate) fn name(&self) -> String {
        match self.role {
            Role::Publisher => format!("publisher {}", self.index),
            Role::Subscriber => format!("subscriber {}", self.index),
            Role::Participant => format!("participant {}", self.index),
        }
    }

    pub(crate) fn alive(&self) -> bool {
        self.error.is_none()
    }

    pub(crate) fn fail(&mut self, why: String) {
        if self.error.is_none() {
            self.error = Some(why);
            self.rtc.disconnect();
        }
    }

    /// Drains `poll_output` to a timeout.
    pub(crate) fn drain(&mut self, sh: &mut Shared) {
        while self.alive() {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    // A full socket buffer loses the datagram, as the network would.
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => self.event(e, sh),
                Err(e) => self.fail(format!("{}: {e}", self.name())),
            }
        }
    }

    pub(crate) fn event(&mut self, e: Event, sh: &mut Shared) {
        match e {
            Event::Connected if self.connected.is_none() => {
                self.connected = Some(self.posted.elapsed());
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                let why = format!("{}: ICE disconnected", self.name());
                self.fail(why);
            }
            Event::Closed => {
                let why = format!("{}: the server closed the connection", self.name());
                self.fail(why);
            }
            Event::KeyframeRequest(r) if r.mid == self.video_mid => {
                self.send.force_keyframe = true;
                self.send.keyframe_requests += 1;
            }
            Event::MediaData(d) => {
                let now = Instant::now();
                // Participants and multi-stream subscribers receive on many m-lines.
                let video = match self.rtc.media(d.mid).map(|m| m.kind()) {
                    Some(MediaKind::Video) => true,
                    Some(MediaKind::Audio) => false,
                    None => return,
                };
                let Some(tag) = Tag::find(video, &d.data) else {
                    self.recv.untagged += 1;
                    return;
                };
                *self.recv.seen.entry(tag.publisher).or_default() += 1;
                if tag.video != video {
                    self.recv.untagged += 1;
                    return;
                }
                if self.role == Role::Participant {
                    self.heard(&tag, d.mid, now, sh);
                }
                if !sh.in_window(tag.sent_us) {
                    return;
                }
                self.recv.frames.entry(tag.publisher).or_default()[usize::from(video)] += 1;
                if video {
                    if d.is_keyframe() != tag.keyframe {
                        self.recv.keyframe_mismatches += 1;
                    }
                    if tag.keyframe {
                        self.recv.keyframes += 1;
                    }
                }
                let packets = (**d.seq_range.end())
                    .saturating_sub(**d.seq_range.start())
                    .saturating_add(1);
                self.recv.packets += packets;
                let sent = sh.t0 + Duration::from_micros(u64::from(tag.sent_us));
                sh.latency
                    .record(now.saturating_duration_since(sent).as_nanos() as u64);
            }
            _ => {}
        }
    }

    /// A room participant's per-publisher counts, and the check of the m-line's msid.
    pub(crate) fn heard(&mut self, tag: &Tag, mid: Mid, now: Instant, sh: &Shared) {
        let named = self.recv.msid.get(&mid).and_then(|s| sh.peer_index.get(s));
        if named != Some(&tag.publisher) {
            self.recv.msid_mismatches += 1;
        }
        let h = self.recv.heard.entry(tag.publisher).or_default();
        if !tag.video {
            h.audio += 1;
            return;
        }
        h.video += 1;
        let sent = sh.t0 + Duration::from_micros(u64::from(tag.sent_us));
        let latency = now.saturating_duration_since(sent);
        if h.max_video_latency_at.is_none() || latency > h.max_video_latency {
            h.max_video_latency = latency;
            h.max_video_latency_at = Some(now);
        }
        match h.last_video {
            None => {
                h.first_video = Some(now);
                h.first_video_keyframe = tag.keyframe;
                h.first_video_seq = tag.seq;
                h.last_video_seq = tag.seq;
            }
            Some(last) => {
                if tag.seq.wrapping_sub(h.last_video_seq) < u32::MAX / 2 {
                    h.last_video_seq = tag.seq;
                }
                h.longest_video_gap = h.longest_video_gap.max(now.saturating_duration_since(last));
            }
        }
        h.last_video = Some(now);
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, sh: &mut Shared) {
        if !self.alive() {
            return;
        }
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            self.fail(format!("{}: {e}", self.name()));
        }
        self.drain(sh);
    }

    /// Reads every datagram waiting on the socket.
    pub(crate) fn read(&mut self, buf: &mut [u8], sh: &mut Shared) {
        loop {
            let (n, source) = match self.socket.recv_from(buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP port unreachable and the like: the server went away.
                Err(_) => return,
            };
            if !self.alive() {
                continue;
            }
            let now = Instant::now();
            if sh.window.is_some_and(|(a, b)| now >= a && now < b) {
                self.recv.datagrams += 1;
                self.recv.bytes += n as u64;
            }
            let Ok(contents) = buf[..n].try_into() else {
                continue;
            };
            let input = Input::Receive(
                now,
                Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: self.local,
                    contents,
                },
            );
            if let Err(e) = self.rtc.handle_input(input) {
                self.fail(format!("{}: {e}", self.name()));
            }
            self.drain(sh);
        }
    }

    /// Starts sending once connected: finds the negotiated payload types.
    pub(crate) fn start_sending(&mut self, now: Instant) -> Result<(), String> {
        let pt_of = |rtc: &mut Rtc, mid: Mid, codec: Codec| -> Option<Pt> {
            let w = rtc.writer(mid)?;
            let pt = w
                .payload_params()
                .find(|p| p.spec().codec == codec)
                .map(|p| p.pt());
            pt
        };
        self.send.audio_pt = pt_of(&mut self.rtc, self.audio_mid, Codec::Opus);
        self.send.video_pt = pt_of(&mut self.rtc, self.video_mid, Codec::Vp8);
        if self.send.audio_pt.is_none() || self.send.video_pt.is_none() {
            return Err(format!(
                "{}: the SFU's answer does not accept Opus audio and VP8 video",
                self.name()
            ));
        }
        self.send.next_audio = Some(now);
        self.send.next_video = Some(now);
        self.send.force_keyframe = true;
        Ok(())
    }

    /// Writes the frames that are due.
    pub(crate) fn send_due(&mut self, now: Instant, sh: &mut Shared) {
        if !self.alive() || !sh.sending {
            return;
        }
        let video_interval = Duration::from_secs(1) / VIDEO_FPS;
        while let Some(at) = self.send.next_audio.filter(|t| *t <= now) {
            let tag = Tag {
                video: false,
                keyframe: false,
                publisher: self.index as u16,
                seq: self.send.audio_seq,
                sent_us: sh.us(now),
            };
            let rtp = u64::from(self.send.audio_seq) * 960;
            self.send.audio_seq = self.send.audio_seq.wrapping_add(1);
            if sh.in_window(tag.sent_us) {
                self.send.window_audio += 1;
            }
            self.write(
                self.audio_mid,
                self.send.audio_pt,
                now,
                MediaTime::new(rtp, Frequency::FORTY_EIGHT_KHZ),
                opus_frame(&tag),
                sh,
            );
            // After a stall (a slow POST) skip ahead rather than burst.
            let next = at + AUDIO_INTERVAL;
            self.send.next_audio = Some(if now.duration_since(next) > Duration::from_millis(200) {
                now + AUDIO_INTERVAL
            } else {
                next
            });
        }
        while let Some(at) = self.send.next_video.filter(|t| *t <= now) {
            let keyframe =
                self.send.force_keyframe || self.send.since_keyframe + 1 >= KEYFRAME_EVERY;
            if keyframe {
                self.send.force_keyframe = false;
                self.send.since_keyframe = 0;
            } else {
                self.send.since_keyframe += 1;
            }
            let tag = Tag {
                video: true,
                keyframe,
                publisher: self.index as u16,
                seq: self.send.video_seq,
                sent_us: sh.us(now),
            };
            let rtp = u64::from(self.send.video_seq) * u64::from(90_000 / VIDEO_FPS);
            self.send.video_seq = self.send.video_seq.wrapping_add(1);
            if sh.in_window(tag.sent_us) {
                self.send.window_video += 1;
                if keyframe {
                    self.send.window_keyframes += 1;
                }
            }
            let size = if keyframe { sh.key_size } else { sh.inter_size };
            let frame = vp8_frame(&tag, size, &sh.filler);
            self.write(
                self.video_mid,
                self.send.video_pt,
                now,
                MediaTime::new(rtp, Frequency::NINETY_KHZ),
                frame,
                sh,
            );
            let next = at + video_interval;
            self.send.next_video = Some(if now.duration_since(next) > Duration::from_millis(200) {
                now + video_interval
            } else {
                next
            });
        }
    }

    pub(crate) fn write(
        &mut self,
        mid: Mid,
        pt: Option<Pt>,
        now: Instant,
        time: MediaTime,
        data: Vec<u8>,
        sh: &mut Shared,
    ) {
        let (Some(pt), Some(w)) = (pt, self.rtc.writer(mid)) else {
            return;
        };
        if let Err(e) = w.write(pt, now, time, data) {
            self.fail(format!("{}: writing media: {e}", self.name()));
        }
        self.drain(sh);
    }

    pub(crate) fn next_wakeup(&self) -> Option<Instant> {
        if !self.alive() {
            return None;
        }
        let mut t = self.timeout;
        for n in [self.send.next_audio, self.send.next_video]
            .into_iter()
            .flatten()
        {
            t = t.min(n);
        }
        Some(t)
    }
}

/// A UDP socket on `local_ip` and a str0m `Rtc` (Opus + VP8) with its host candidate.
fn socket_and_rtc(local_ip: IpAddr, now: Instant) -> Result<(UdpSocket, SocketAddr, Rtc), String> {
    let socket = UdpSocket::bind(SocketAddr::new(local_ip, 0))
        .map_err(|e| format!("cannot bind a UDP socket on {local_ip}: {e}"))?;
    let local = socket
        .local_addr()
        .map_err(|e| format!("UDP socket address: {e}"))?;
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .build(now);
    let candidate =
        Candidate::host(local, "udp").map_err(|e| format!("host candidate {local}: {e}"))?;
    rtc.add_local_candidate(candidate);
    Ok((socket, local, rtc))
}

/// (media kind, mid) of each m-line of an SDP that has an `a=mid`.
pub(crate) fn offer_mids(sdp: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut kind: Option<&str> = None;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            kind = m.split_whitespace().next();
        } else if let (Some(k), Some(mid)) = (kind, line.strip_prefix("a=mid:")) {
            out.push((k.to_owned(), mid.trim().to_owned()));
            kind = None;
        }
    }
    out
}
