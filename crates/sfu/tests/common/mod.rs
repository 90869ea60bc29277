//! In-process harness: str0m client `Rtc`s acting as browsers, wired to one `Sfu` through
//! an in-memory network with a fixed latency, seeded loss and a virtual clock.
#![allow(dead_code)]
// Test harness: a failed setup step should stop the test at once.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, Frequency, MediaData, MediaKind, MediaTime, Mid, Rid};
use str0m::media::{Simulcast, SimulcastLayer};
use str0m::net::{Protocol as NetProtocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tsunagi_sfu::{Protocol, Role, Sfu, SfuConfig, SfuEvent};

pub const SFU_ADDR: ([u8; 4], u16) = ([9, 9, 9, 9], 3478);
pub const STEP: Duration = Duration::from_millis(1);
pub const LATENCY: Duration = Duration::from_millis(5);

pub fn sfu_addr() -> SocketAddr {
    SFU_ADDR.into()
}

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

/// An SDP travelling through [`Signaling`].
#[derive(Debug, Clone)]
pub enum Sdp {
    Offer(String),
    Answer(String),
}

/// Signaling as a loaded browser sees it: every message to or from a client takes a
/// seeded random time (its WebSocket and the page's processing), within the range of
/// that client (`slow`) or the default one, and messages of one client stay in order.
#[derive(Debug, Default)]
pub struct Signaling {
    /// Delay range of most clients.
    pub delay: (Duration, Duration),
    /// Delay ranges of particular clients (a slow browser).
    pub slow: HashMap<String, (Duration, Duration)>,
    to_client: Vec<(Instant, String, Sdp)>,
    to_sfu: Vec<(Instant, String, Sdp)>,
    last_to_client: HashMap<String, Instant>,
    last_to_sfu: HashMap<String, Instant>,
    /// Every refusal on either side: a correct exchange has none.
    pub errors: Vec<String>,
    /// SFU offers a client ignored because its own offer was out.
    pub ignored_offers: u32,
}

impl Signaling {
    pub fn new(delay: (Duration, Duration)) -> Signaling {
        Signaling {
            delay,
            ..Signaling::default()
        }
    }

    fn after(&mut self, rng: &mut StdRng, now: Instant, peer: &str, to_client: bool) -> Instant {
        let (lo, hi) = self.slow.get(peer).copied().unwrap_or(self.delay);
        let span = hi.saturating_sub(lo).as_millis() as u64;
        let d = lo
            + Duration::from_millis(if span == 0 {
                0
            } else {
                rng.random_range(0..=span)
            });
        let last = if to_client {
            &mut self.last_to_client
        } else {
            &mut self.last_to_sfu
        };
        let at = last.get(peer).map_or(now + d, |t| (*t).max(now + d));
        last.insert(peer.to_string(), at);
        at
    }

    /// Whether nothing is in flight.
    pub fn idle(&self) -> bool {
        self.to_client.is_empty() && self.to_sfu.is_empty()
    }
}

struct Packet {
    proto: Protocol,
    source: SocketAddr,
    destination: SocketAddr,
    data: Vec<u8>,
}

pub struct World {
    pub sfu: Sfu,
    pub now: Instant,
    pub start: Instant,
    pub clients: Vec<Client>,
    net: VecDeque<(Instant, Packet)>,
    rng: StdRng,
    pub sfu_events: Vec<(Instant, SfuEvent)>,
    /// Answers the clients return for SFU offers (false: offers are left unanswered).
    pub answer_offers: bool,
    /// With `Some`, offers and answers travel through a slow signaling model instead of
    /// being answered at once (see [`Signaling`]).
    pub signaling: Option<Signaling>,
    pub delivered: u64,
    pub lost: u64,
}

pub fn config() -> SfuConfig {
    SfuConfig {
        udp_candidates: vec![sfu_addr()],
        stats_interval: Duration::from_millis(500),
        ..SfuConfig::default()
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

impl World {
    pub fn new(config: SfuConfig, seed: u64) -> World {
        let now = Instant::now();
        World {
            sfu: Sfu::new(config, now),
            now,
            start: now,
            clients: Vec::new(),
            net: VecDeque::new(),
            rng: StdRng::seed_from_u64(seed),
            sfu_events: Vec::new(),
            answer_offers: true,
            signaling: None,
            delivered: 0,
            lost: 0,
        }
    }

    pub fn client(&self, id: &str) -> &Client {
        self.clients
            .iter()
            .find(|c| c.id == id)
            .expect("client exists")
    }

    pub fn client_mut(&mut self, id: &str) -> &mut Client {
        self.clients
            .iter_mut()
            .find(|c| c.id == id)
            .expect("client exists")
    }

    /// Adds a client, joins it to the SFU and does the first offer/answer.
    pub fn join(&mut self, room: &str, id: &str, role: Role, publish: Publish) -> usize {
        self.join_with(room, id, role, publish, true)
    }

    pub fn join_with(
        &mut self,
        room: &str,
        id: &str,
        role: Role,
        publish: Publish,
        rtx: bool,
    ) -> usize {
        self.sfu.join(room, id, role, self.now).unwrap();
        self.connect(id, role, publish, rtx)
    }

    /// The client `id` replaces its PeerConnection (new certificate, ICE credentials and
    /// port) and offers from it; the old one keeps running as `<id>#old` until
    /// [`World::kill`].
    pub fn replace_pc(&mut self, id: &str) -> usize {
        let i = self.clients.iter().position(|c| c.id == id).unwrap();
        self.clients[i].id = format!("{id}#old");
        let (role, publish, rtx) = {
            let c = &self.clients[i];
            (c.role, c.publish, !c.strip_rtx)
        };
        self.connect(id, role, publish, rtx)
    }

    /// The client stops: no more packets to or from it (a closed tab).
    pub fn kill(&mut self, id: &str) {
        self.client_mut(id).dead = true;
    }

    fn connect(&mut self, id: &str, role: Role, publish: Publish, rtx: bool) -> usize {
        let n = self.clients.len() as u8 + 1;
        let addr: SocketAddr = (Ipv4Addr::new(1, 1, 1, n), 5000).into();
        let mut rtc = client_rtc(self.now, rtx);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut api = rtc.sdp_api();
        let mut gen = Generator {
            audio: None,
            video: None,
            rids: Vec::new(),
            frame: 0,
            next_video: None,
            next_audio: None,
            want_keyframe: Vec::new(),
            keyframe_every: Some(90),
            audio_level: -30,
            paused: false,
            skip_rids: Vec::new(),
            ignore_requests: 0,
        };
        let stream = Some(id.to_string());
        match role {
            Role::WhepViewer => {
                api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
                api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
            }
            _ => {
                if publish.audio {
                    gen.audio = Some(api.add_media(
                        MediaKind::Audio,
                        Direction::SendOnly,
                        stream.clone(),
                        None,
                        None,
                    ));
                }
                if publish.video {
                    let sim = publish.simulcast.then(|| {
                        let mut s = Simulcast::new();
                        for rid in ["l", "m", "h"] {
                            s.add_send_layer(SimulcastLayer::new(rid));
                        }
                        s
                    });
                    if publish.simulcast {
                        gen.rids = vec!["l".into(), "m".into(), "h".into()];
                    }
                    gen.video = Some(api.add_media(
                        MediaKind::Video,
                        Direction::SendOnly,
                        stream,
                        None,
                        sim,
                    ));
                }
                if role != Role::WhipPublisher {
                    api.add_channel("chat".into());
                }
            }
        }
        let (offer, pending) = api.apply().expect("offer");
        let answer = self
            .sfu
            .accept_offer(id, &offer.to_sdp_string(), self.now)
            .expect("answer");
        rtc.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        self.clients.push(Client {
            id: id.to_string(),
            rtc,
            addr,
            events: Vec::new(),
            timeout: self.now,
            loss: 0.0,
            offers: Vec::new(),
            remote_sdps: vec![answer.clone()],
            answers: vec![answer],
            pending: None,
            gen,
            started_sending: false,
            strip_rtx: !rtx,
            uplink_loss: 0.0,
            dead: false,
            received_bytes: Vec::new(),
            publish,
            role,
        });
        let i = self.clients.len() - 1;
        self.drain_client(i);
        self.drain_sfu();
        i
    }

    /// Runs the world for `d` of virtual time.
    pub fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    /// Runs until `f` holds or `max` passes; returns whether it held.
    pub fn run_until(&mut self, max: Duration, mut f: impl FnMut(&World) -> bool) -> bool {
        let end = self.now + max;
        while self.now < end {
            if f(self) {
                return true;
            }
            self.step();
        }
        f(self)
    }

    pub fn step(&mut self) {
        self.now += STEP;
        let now = self.now;
        while self.net.front().is_some_and(|(t, _)| *t <= now) {
            let Some((_, p)) = self.net.pop_front() else {
                break;
            };
            self.deliver(p);
        }
        for i in 0..self.clients.len() {
            if self.clients[i].dead {
                continue;
            }
            if self.clients[i].timeout <= now {
                self.clients[i]
                    .rtc
                    .handle_input(Input::Timeout(now))
                    .unwrap();
                self.drain_client(i);
            }
        }
        for i in 0..self.clients.len() {
            self.generate(i);
        }
        if self.sfu.poll_timeout().is_some_and(|t| t <= now) {
            self.sfu.handle_timeout(now);
        }
        self.drain_sfu();
        if self.signaling.is_some() {
            self.signal();
        }
    }

    /// Delivers the signaling messages that are due, in order: to clients (an SFU offer
    /// the client applies and answers unless it has its own offer out, as the web
    /// client is impolite toward the SFU; the SFU's answer to the client's offer) and
    /// to the SFU (the client's offer, answered; the client's answer).
    fn signal(&mut self) {
        let now = self.now;
        let due = |q: &mut Vec<(Instant, String, Sdp)>| -> Vec<(Instant, String, Sdp)> {
            let mut d: Vec<_> = Vec::new();
            let mut i = 0;
            while i < q.len() {
                if q[i].0 <= now {
                    d.push(q.remove(i));
                } else {
                    i += 1;
                }
            }
            d.sort_by_key(|(t, _, _)| *t);
            d
        };
        let Some(sig) = self.signaling.as_mut() else {
            return;
        };
        let to_sfu = due(&mut sig.to_sfu);
        let to_client = due(&mut sig.to_client);
        for (_, peer, m) in to_sfu {
            if !self.sfu.contains(&peer) {
                continue;
            }
            match m {
                Sdp::Offer(sdp) => match self.sfu.accept_offer(&peer, &sdp, now) {
                    Ok(answer) => {
                        let sig = self.signaling.as_mut().unwrap();
                        let at = sig.after(&mut self.rng, now, &peer, true);
                        sig.to_client.push((at, peer, Sdp::Answer(answer)));
                    }
                    Err(e) => self
                        .signaling
                        .as_mut()
                        .unwrap()
                        .errors
                        .push(format!("{peer}: offer refused: {e}")),
                },
                Sdp::Answer(sdp) => {
                    if let Err(e) = self.sfu.accept_answer(&peer, &sdp, now) {
                        self.signaling
                            .as_mut()
                            .unwrap()
                            .errors
                            .push(format!("{peer}: answer refused: {e}"));
                    }
                }
            }
            self.drain_sfu();
        }
        for (_, peer, m) in to_client {
            let Some(i) = self.clients.iter().position(|c| c.id == peer && !c.dead) else {
                continue;
            };
            match m {
                Sdp::Offer(sdp) => {
                    if self.clients[i].pending.is_some() {
                        // Impolite toward the SFU: its offer crossed ours and is ignored.
                        self.signaling.as_mut().unwrap().ignored_offers += 1;
                        continue;
                    }
                    let c = &mut self.clients[i];
                    c.offers.push(sdp.clone());
                    c.remote_sdps.push(sdp.clone());
                    let offer = SdpOffer::from_sdp_string(&sdp).unwrap();
                    match c.rtc.sdp_api().accept_offer(offer) {
                        Ok(answer) => {
                            let answer = answer.to_sdp_string();
                            self.drain_client(i);
                            let sig = self.signaling.as_mut().unwrap();
                            let at = sig.after(&mut self.rng, now, &peer, false);
                            sig.to_sfu.push((at, peer, Sdp::Answer(answer)));
                        }
                        Err(e) => self
                            .signaling
                            .as_mut()
                            .unwrap()
                            .errors
                            .push(format!("{peer}: client could not apply the SFU offer: {e}")),
                    }
                }
                Sdp::Answer(sdp) => {
                    let c = &mut self.clients[i];
                    let Some(pending) = c.pending.take() else {
                        continue;
                    };
                    c.answers.push(sdp.clone());
                    c.remote_sdps.push(sdp.clone());
                    let answer = SdpAnswer::from_sdp_string(&sdp).unwrap();
                    if let Err(e) = c.rtc.sdp_api().accept_answer(pending, answer) {
                        self.signaling.as_mut().unwrap().errors.push(format!(
                            "{peer}: client could not apply the SFU answer: {e}"
                        ));
                    }
                    self.drain_client(i);
                }
            }
        }
    }

    /// The client `id` sends an offer of its own (an ICE restart) through the signaling
    /// model, as a browser renegotiating would; it may cross an SFU offer.
    pub fn client_offer(&mut self, id: &str) {
        let now = self.now;
        let Some(i) = self.clients.iter().position(|c| c.id == id && !c.dead) else {
            return;
        };
        if self.clients[i].pending.is_some() {
            return;
        }
        let mut api = self.clients[i].rtc.sdp_api();
        api.ice_restart(true);
        let Some((offer, pending)) = api.apply() else {
            return;
        };
        self.clients[i].pending = Some(pending);
        self.drain_client(i);
        let sig = self.signaling.as_mut().expect("signaling model");
        let at = sig.after(&mut self.rng, now, id, false);
        sig.to_sfu
            .push((at, id.to_string(), Sdp::Offer(offer.to_sdp_string())));
    }

    fn deliver(&mut self, p: Packet) {
        let now = self.now;
        if p.destination == sfu_addr() {
            let from = self.clients.iter().position(|c| c.addr == p.source);
            let media = p.data.first().is_some_and(|b| (128..192).contains(b));
            if let Some(i) = from {
                if self.clients[i].dead {
                    return;
                }
                let loss = self.clients[i].uplink_loss;
                if media && loss > 0.0 && self.rng.random_bool(loss) {
                    self.lost += 1;
                    return;
                }
            }
            self.sfu
                .handle_receive(now, p.proto, p.source, p.destination, &p.data);
            self.drain_sfu();
            return;
        }
        let Some(i) = self.clients.iter().position(|c| c.addr == p.destination) else {
            return;
        };
        self.clients[i].received_bytes.push((now, p.data.len()));
        if self.clients[i].dead {
            return;
        }
        // Loss applies to RTP/RTCP only, so the handshakes stay deterministic.
        let media = p.data.first().is_some_and(|b| (128..192).contains(b));
        if media && self.clients[i].loss > 0.0 && self.rng.random_bool(self.clients[i].loss) {
            self.lost += 1;
            return;
        }
        self.delivered += 1;
        let input = Input::Receive(
            now,
            Receive {
                proto: NetProtocol::Udp,
                source: p.source,
                destination: p.destination,
                contents: p.data.as_slice().try_into().unwrap(),
            },
        );
        let c = &mut self.clients[i];
        if c.rtc.accepts(&input) {
            c.rtc.handle_input(input).unwrap();
        }
        self.drain_client(i);
    }

    pub fn drain_client(&mut self, i: usize) {
        let now = self.now;
        let c = &mut self.clients[i];
        loop {
            match c.rtc.poll_output().unwrap() {
                Output::Timeout(t) => {
                    c.timeout = t.max(now + STEP);
                    break;
                }
                Output::Transmit(t) => {
                    let p = Packet {
                        proto: Protocol::Udp,
                        source: t.source,
                        destination: t.destination,
                        data: t.contents.to_vec(),
                    };
                    self.net.push_back((now + LATENCY, p));
                }
                Output::Event(e) => {
                    if let Event::KeyframeRequest(r) = &e {
                        if c.gen.ignore_requests > 0 {
                            c.gen.ignore_requests -= 1;
                        } else if !c.gen.want_keyframe.contains(&r.rid) {
                            c.gen.want_keyframe.push(r.rid);
                        }
                    }
                    c.events.push((now, e));
                }
            }
        }
    }

    pub fn drain_sfu(&mut self) {
        let now = self.now;
        while let Some(t) = self.sfu.poll_transmit() {
            let p = Packet {
                proto: t.proto,
                source: t.source,
                destination: t.destination,
                data: t.contents,
            };
            self.net.push_back((now + LATENCY, p));
        }
        while let Some(e) = self.sfu.poll_event() {
            if let SfuEvent::Offer { peer, sdp } = &e {
                if let Some(sig) = &mut self.signaling {
                    let at = sig.after(&mut self.rng, now, peer, true);
                    sig.to_client
                        .push((at, peer.clone(), Sdp::Offer(sdp.clone())));
                } else if self.answer_offers {
                    self.answer(peer.clone(), sdp.clone());
                }
            }
            self.sfu_events.push((now, e));
        }
    }

    fn answer(&mut self, peer: String, sdp: String) {
        let now = self.now;
        let Some(i) = self.clients.iter().position(|c| c.id == peer) else {
            return;
        };
        let c = &mut self.clients[i];
        c.offers.push(sdp.clone());
        c.remote_sdps.push(sdp.clone());
        let offer = SdpOffer::from_sdp_string(&sdp).unwrap();
        let answer = c.rtc.sdp_api().accept_offer(offer).unwrap();
        let mut answer = answer.to_sdp_string();
        if c.strip_rtx {
            answer = strip_rtx(&answer);
        }
        self.drain_client(i);
        self.sfu.accept_answer(&peer, &answer, now).unwrap();
    }

    fn generate(&mut self, i: usize) {
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

    pub fn events(&self) -> impl Iterator<Item = &SfuEvent> + '_ {
        self.sfu_events.iter().map(|(_, e)| e)
    }

    pub fn connected(&self, id: &str) -> bool {
        self.events()
            .any(|e| matches!(e, SfuEvent::Connected { peer } if peer == id))
    }
}

/// The tag byte of a VP8 test frame: b'l', b'm', b'h' or b's'.
pub fn tag(d: &MediaData) -> u8 {
    d.data.get(10).copied().unwrap_or(0)
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
