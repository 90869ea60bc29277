//! The report of `tsunagi bench sfu`: per-subscriber counts, loss, forwarded packets,
//! latency, the server's CPU and memory, printed as text or JSON.

use super::*;
use crate::sfu_common::Window;

/// Milliseconds: median and maximum.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Spread {
    pub p50: f64,
    pub max: f64,
}

impl Spread {
    pub(crate) fn of(mut v: Vec<f64>) -> Self {
        if v.is_empty() {
            return Spread::default();
        }
        v.sort_by(f64::total_cmp);
        Spread {
            p50: v[v.len() / 2],
            max: v[v.len() - 1],
        }
    }
}

/// Frame latency from the publisher's write to the subscriber's complete frame, ms.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FrameLatency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// What one subscriber received of the frames its publisher sent in the window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubscriberResult {
    /// The publisher it played (index), when it received anything.
    pub publisher: Option<usize>,
    /// The publishers whose frames it was counted against (the feeds it subscribed to,
    /// or those it heard).
    pub played: Vec<usize>,
    pub audio_expected: u64,
    pub audio_received: u64,
    pub video_expected: u64,
    pub video_received: u64,
    pub keyframes_received: u64,
    /// Failure (ICE closed, DTLS error), if any.
    pub error: Option<String>,
}

/// What `tsunagi bench sfu` measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SfuReport {
    pub bench: &'static str,
    /// The server under test: `tsunagi` (WHIP/WHEP) or `janus` (its VideoRoom plugin).
    pub target: &'static str,
    /// Janus room runs: participants each publishing and receiving the others.
    pub participants: Option<usize>,
    pub http: String,
    pub room: String,
    pub publishers: usize,
    pub subscribers: usize,
    /// Video bits/s per publisher (the audio adds about 35 kbit/s with headers).
    pub bitrate: u64,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// From the first POST until every client had ICE + DTLS up.
    pub setup_s: f64,
    /// POST to DTLS connected, per client.
    pub publisher_connect_ms: Spread,
    pub subscriber_connect_ms: Spread,
    /// Frames each publisher wrote in the window (all publishers together).
    pub sent_audio_frames: u64,
    pub sent_video_frames: u64,
    pub sent_keyframes: u64,
    /// PLI/FIR from the SFU to the publishers, whole run.
    pub keyframe_requests: u64,
    /// Over all subscribers: frames of their publisher sent in the window.
    pub expected_frames: u64,
    pub received_frames: u64,
    pub received_audio_frames: u64,
    pub received_video_frames: u64,
    pub received_keyframes: u64,
    pub lost_frames: u64,
    pub loss_ratio: f64,
    /// The lowest received/expected of any subscriber (audio and video separately).
    pub worst_audio_ratio: f64,
    pub worst_video_ratio: f64,
    /// Frames whose keyframe flag (as str0m's depacketizer read it) differs from the
    /// one the publisher wrote.
    pub keyframe_flag_mismatches: u64,
    /// Frames without our tag (not from a bench publisher, or altered).
    pub untagged_frames: u64,
    /// RTP packets of the received in-window frames.
    pub forwarded_packets: u64,
    pub forwarded_packets_per_sec: f64,
    /// Everything that reached the subscribers' sockets in the window.
    pub subscriber_datagrams_per_sec: f64,
    pub subscriber_mbit_per_sec: f64,
    pub frame_latency_ms: FrameLatency,
    pub server_cpu_s: Option<f64>,
    /// Server CPU seconds per second of the window (1.0 = one core busy).
    pub server_cpu_util: Option<f64>,
    pub server_cpu_us_per_forwarded_packet: Option<f64>,
    /// server_cpu_util / subscribers, in percent of one core (publishers' ingest
    /// included).
    pub server_cpu_percent_per_subscriber: Option<f64>,
    /// RSS before any client, with the publishers connected, with everyone connected,
    /// at the end of the window; peak sampled every 250 ms during the run.
    pub server_rss_start_kib: Option<u64>,
    pub server_rss_publishers_kib: Option<u64>,
    pub server_rss_connected_kib: Option<u64>,
    pub server_rss_end_kib: Option<u64>,
    pub server_peak_rss_kib: Option<u64>,
    /// (RSS with everyone − RSS with the publishers) / subscribers.
    pub server_rss_per_subscriber_kib: Option<f64>,
    /// Anonymous resident memory (`RssAnon`: heap and stacks, not the binary's pages)
    /// before any client, with the publishers, with everyone connected.
    pub server_anon_start_kib: Option<u64>,
    pub server_anon_publishers_kib: Option<u64>,
    pub server_anon_connected_kib: Option<u64>,
    /// (anonymous memory with everyone − with the publishers) / subscribers.
    pub server_anon_per_subscriber_kib: Option<f64>,
    /// The server's own `/api/stats` `sfu.packetsOut` growth over the window.
    pub server_packets_out_per_sec: Option<f64>,
    /// This tool's CPU over the window (is the generator the bottleneck?).
    pub generator_cpu_util: Option<f64>,
    pub per_subscriber: Vec<SubscriberResult>,
    /// Clients that failed during the run, and DELETEs that did not answer 200.
    pub errors: Vec<String>,
    pub loadavg: String,
}

impl SfuReport {
    pub fn print(&self, json: bool) {
        if printed_json(self, json) {
            return;
        }
        match self.participants {
            Some(n) => println!(
                "bench sfu against {} ({}) room {}: {n} participants at {} kbit/s video, each receiving the {} others",
                self.http,
                self.target,
                self.room,
                self.bitrate / 1000,
                n.saturating_sub(1)
            ),
            None => println!(
                "bench sfu against {} ({}) room {} ({} publisher(s) at {} kbit/s video, {} subscriber(s))",
                self.http,
                self.target,
                self.room,
                self.publishers,
                self.bitrate / 1000,
                self.subscribers
            ),
        }
        println!(
            "  setup {:.2} s; connect ms p50/max: publishers {:.0}/{:.0}, subscribers {:.0}/{:.0}",
            self.setup_s,
            self.publisher_connect_ms.p50,
            self.publisher_connect_ms.max,
            self.subscriber_connect_ms.p50,
            self.subscriber_connect_ms.max
        );
        println!(
            "  window {:.1} s: sent {} audio + {} video frames ({} keyframes, {} requested)",
            self.duration_s,
            self.sent_audio_frames,
            self.sent_video_frames,
            self.sent_keyframes,
            self.keyframe_requests
        );
        println!(
            "  subscribers received {} of {} frames (lost {}, {:.3} %); worst subscriber: audio {:.1} %, video {:.1} %",
            self.received_frames,
            self.expected_frames,
            self.lost_frames,
            self.loss_ratio * 100.0,
            self.worst_audio_ratio * 100.0,
            self.worst_video_ratio * 100.0
        );
        println!(
            "  forwarded {:.0} RTP packets/s ({:.0} datagrams/s, {:.2} Mbit/s) to subscribers",
            self.forwarded_packets_per_sec,
            self.subscriber_datagrams_per_sec,
            self.subscriber_mbit_per_sec
        );
        Tail {
            frame_latency_ms: &self.frame_latency_ms,
            keyframe_flag_mismatches: self.keyframe_flag_mismatches,
            untagged_frames: self.untagged_frames,
            server_cpu_s: self.server_cpu_s,
            server_cpu_util: self.server_cpu_util,
            server_cpu_us_per_forwarded_packet: self.server_cpu_us_per_forwarded_packet,
            per: "subscriber",
            server_cpu_percent_per: self.server_cpu_percent_per_subscriber,
            rss: &[
                ("start", self.server_rss_start_kib),
                ("publishers", self.server_rss_publishers_kib),
                ("connected", self.server_rss_connected_kib),
                ("end", self.server_rss_end_kib),
                ("peak", self.server_peak_rss_kib),
            ],
            server_rss_per_kib: self.server_rss_per_subscriber_kib,
            server_anon_per_kib: self.server_anon_per_subscriber_kib,
            server_packets_out_per_sec: self.server_packets_out_per_sec,
            generator_cpu_util: self.generator_cpu_util,
            errors: &self.errors,
            loadavg: &self.loadavg,
        }
        .print();
    }
}

/// What a run measured before its window: for [`SfuReport::from_run`].
pub(crate) struct Setup {
    /// From the first offer until every client had ICE + DTLS up.
    pub(crate) setup_s: f64,
    pub(crate) rss_start: Option<u64>,
    pub(crate) rss_publishers: Option<u64>,
    pub(crate) rss_connected: Option<u64>,
    pub(crate) anon_start: Option<u64>,
    pub(crate) anon_publishers: Option<u64>,
    pub(crate) anon_connected: Option<u64>,
}

impl SfuReport {
    /// The report of a run of publishers and subscribers (WHIP/WHEP, or Janus's
    /// VideoRoom) whose window `w` has ended.
    pub(crate) fn from_run(args: &SfuArgs, core: &Core, w: &Window, setup: Setup) -> SfuReport {
        let count = |role: Role| core.clients.iter().filter(|c| c.role == role).count();
        let subscribers = count(Role::Subscriber);
        let mut r = SfuReport {
            bench: "sfu",
            target: args.target.name(),
            participants: args.participants,
            http: args.http.clone(),
            room: args.room.clone(),
            publishers: count(Role::Publisher),
            subscribers,
            bitrate: args.bitrate,
            duration_s: w.elapsed,
            warmup_s: args.warmup,
            setup_s: setup.setup_s,
            ..SfuReport::default()
        };
        let connect = |role: Role| {
            Spread::of(
                core.clients
                    .iter()
                    .filter(|c| c.role == role)
                    .filter_map(|c| c.connected)
                    .map(|d| d.as_secs_f64() * 1000.0)
                    .collect(),
            )
        };
        r.publisher_connect_ms = connect(Role::Publisher);
        r.subscriber_connect_ms = connect(Role::Subscriber);

        let mut sent: HashMap<u16, [u64; 2]> = HashMap::new();
        for c in core.clients.iter().filter(|c| c.role == Role::Publisher) {
            r.sent_audio_frames += c.send.window_audio;
            r.sent_video_frames += c.send.window_video;
            r.sent_keyframes += c.send.window_keyframes;
            r.keyframe_requests += c.send.keyframe_requests;
            sent.insert(c.index as u16, [c.send.window_audio, c.send.window_video]);
        }
        let mut worst = [1.0f64, 1.0f64];
        let (mut datagrams, mut bytes) = (0u64, 0u64);
        for c in core.clients.iter().filter(|c| c.role == Role::Subscriber) {
            let rc = &c.recv;
            // The publisher(s) it played: those it subscribed to when it named them,
            // else those it heard (WHEP plays the room's first when in doubt).
            let mut played: Vec<u16> = match &rc.expect {
                Some(e) => e.clone(),
                None => rc.seen.keys().copied().collect(),
            };
            played.sort_unstable();
            if played.is_empty() {
                played.push(0);
            }
            let mut expected = [0u64; 2];
            let mut got = [0u64; 2];
            for p in &played {
                let s = sent.get(p).copied().unwrap_or_default();
                let g = rc.frames.get(p).copied().unwrap_or_default();
                for k in 0..2 {
                    expected[k] += s[k];
                    got[k] += g[k].min(s[k]);
                }
            }
            for k in 0..2 {
                worst[k] = worst[k].min(ratio(got[k], expected[k]));
            }
            r.expected_frames += expected[0] + expected[1];
            r.received_audio_frames += got[0];
            r.received_video_frames += got[1];
            r.received_keyframes += rc.keyframes;
            r.keyframe_flag_mismatches += rc.keyframe_mismatches;
            r.untagged_frames += rc.untagged;
            r.forwarded_packets += rc.packets;
            datagrams += rc.datagrams;
            bytes += rc.bytes;
            r.per_subscriber.push(SubscriberResult {
                publisher: (!rc.seen.is_empty()).then(|| usize::from(played[0])),
                played: played.iter().map(|p| usize::from(*p)).collect(),
                audio_expected: expected[0],
                audio_received: got[0],
                video_expected: expected[1],
                video_received: got[1],
                keyframes_received: rc.keyframes,
                error: c.error.clone(),
            });
        }
        if subscribers > 0 {
            r.worst_audio_ratio = worst[0];
            r.worst_video_ratio = worst[1];
        }
        r.received_frames = r.received_audio_frames + r.received_video_frames;
        r.lost_frames = r.expected_frames.saturating_sub(r.received_frames);
        r.loss_ratio = ratio(r.lost_frames, r.expected_frames);
        let rates = w.rates(r.forwarded_packets);
        let secs = rates.secs;
        r.forwarded_packets_per_sec = r.forwarded_packets as f64 / secs;
        r.subscriber_datagrams_per_sec = datagrams as f64 / secs;
        r.subscriber_mbit_per_sec = bytes as f64 * 8.0 / secs / 1e6;
        r.frame_latency_ms = core.frame_latency();
        r.server_cpu_s = rates.server_cpu_s;
        r.server_cpu_util = rates.server_cpu_util;
        r.server_cpu_us_per_forwarded_packet = rates.server_cpu_us_per_forwarded_packet;
        if let (Some(util), true) = (rates.server_cpu_util, subscribers > 0) {
            r.server_cpu_percent_per_subscriber = Some(util * 100.0 / subscribers as f64);
        }
        r.server_rss_start_kib = setup.rss_start;
        r.server_rss_publishers_kib = setup.rss_publishers;
        r.server_rss_connected_kib = setup.rss_connected;
        r.server_rss_end_kib = w.rss_end;
        r.server_peak_rss_kib = core.peak_rss;
        r.server_rss_per_subscriber_kib =
            per_kib(setup.rss_publishers, setup.rss_connected, subscribers);
        r.server_anon_start_kib = setup.anon_start;
        r.server_anon_publishers_kib = setup.anon_publishers;
        r.server_anon_connected_kib = setup.anon_connected;
        r.server_anon_per_subscriber_kib =
            per_kib(setup.anon_publishers, setup.anon_connected, subscribers);
        r.server_packets_out_per_sec = rates.server_packets_out_per_sec;
        r.generator_cpu_util = rates.generator_cpu_util;
        r.errors.extend(core.client_errors());
        r
    }
}
