//! In-process harness: str0m client `Rtc`s acting as browsers, wired to one `Sfu` through
//! an in-memory network with a fixed latency, seeded loss and a virtual clock. This file
//! holds the [`World`] (network, clock, joins); the clients, their media and the
//! signaling model are in the submodules.
#![allow(dead_code)]
// Test harness: a failed setup step should stop the test at once.
#![allow(clippy::unwrap_used)]

mod client;
mod media;
mod signaling;

pub use client::*;
pub use media::*;
pub use signaling::*;

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

/// The SFU of the tests: in RTP mode, the default; `SFU_RTP_MODE=0` runs them in frame
/// mode (scripts/test runs both).
pub fn config() -> SfuConfig {
    SfuConfig {
        udp_candidates: vec![sfu_addr()],
        stats_interval: Duration::from_millis(500),
        rtp_mode: std::env::var_os("SFU_RTP_MODE").is_none_or(|v| v != "0"),
        ..SfuConfig::default()
    }
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

    pub fn events(&self) -> impl Iterator<Item = &SfuEvent> + '_ {
        self.sfu_events.iter().map(|(_, e)| e)
    }

    pub fn connected(&self, id: &str) -> bool {
        self.events()
            .any(|e| matches!(e, SfuEvent::Connected { peer } if peer == id))
    }

    /// The video subscription `sub` <- `publisher` in the SFU's state of room "r".
    pub fn subscription(&self, sub: &str, publisher: &str) -> serde_json::Value {
        let state = self.sfu.room_state("r", self.now).expect("the room");
        let peer = state["peers"]
            .as_array()
            .expect("peers")
            .iter()
            .find(|p| p["peer"] == sub)
            .unwrap_or_else(|| panic!("{sub} in {state}"))
            .clone();
        peer["subscriptions"]
            .as_array()
            .expect("subscriptions")
            .iter()
            .find(|s| s["publisher"] == publisher && s["kind"] == "video")
            .unwrap_or_else(|| panic!("{publisher} → {sub} in {peer}"))
            .clone()
    }
}
