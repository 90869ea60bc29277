//! The report of a room run: every direction's result and the totals.

use super::*;

/// What one subscriber received of one publisher's in-window frames.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PairResult {
    pub publisher: usize,
    pub subscriber: usize,
    pub audio_expected: u64,
    pub audio_received: u64,
    pub video_expected: u64,
    pub video_received: u64,
}

/// What `tsunagi bench sfu --participants N` measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoomReport {
    pub bench: &'static str,
    pub http: String,
    pub room: String,
    pub participants: usize,
    /// N x (N-1): forwarded (publisher, subscriber) pairs.
    pub pairs: usize,
    /// Video bits/s per participant.
    pub bitrate: u64,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// From the first WebSocket connect until every pair carried media.
    pub setup_s: f64,
    /// WebSocket connect to `welcome`, per participant.
    pub join_ms: Spread,
    /// `join` sent to DTLS connected, per participant.
    pub connect_ms: Spread,
    /// SFU offers answered (renegotiations), whole run.
    pub sfu_offers: u64,
    pub sent_audio_frames: u64,
    pub sent_video_frames: u64,
    pub sent_keyframes: u64,
    pub keyframe_requests: u64,
    /// Over all pairs: frames of the publisher sent in the window.
    pub expected_frames: u64,
    pub received_frames: u64,
    pub lost_frames: u64,
    pub loss_ratio: f64,
    /// The lowest received/expected of any pair.
    pub worst_pair_audio_ratio: f64,
    pub worst_pair_video_ratio: f64,
    pub keyframe_flag_mismatches: u64,
    pub untagged_frames: u64,
    /// Frames whose tag names another publisher than the current `a=msid` of the
    /// m-line they came on.
    pub msid_mismatches: u64,
    /// RTP packets of the received in-window frames, all participants.
    pub forwarded_packets: u64,
    pub forwarded_packets_per_sec: f64,
    pub received_datagrams_per_sec: f64,
    pub received_mbit_per_sec: f64,
    pub frame_latency_ms: FrameLatency,
    pub server_cpu_s: Option<f64>,
    pub server_cpu_util: Option<f64>,
    pub server_cpu_us_per_forwarded_packet: Option<f64>,
    /// server_cpu_util / N, percent of one core.
    pub server_cpu_percent_per_participant: Option<f64>,
    pub server_rss_start_kib: Option<u64>,
    pub server_rss_connected_kib: Option<u64>,
    pub server_rss_end_kib: Option<u64>,
    pub server_peak_rss_kib: Option<u64>,
    /// (RSS with everyone after the warm-up − RSS before any client) / N.
    pub server_rss_per_participant_kib: Option<f64>,
    /// Anonymous resident memory (`RssAnon`: heap and stacks, not the binary's pages)
    /// before any client and with everyone after the warm-up.
    pub server_anon_start_kib: Option<u64>,
    pub server_anon_connected_kib: Option<u64>,
    /// The same growth as `server_rss_per_participant_kib`, of anonymous memory only.
    pub server_anon_per_participant_kib: Option<f64>,
    pub server_packets_out_per_sec: Option<f64>,
    pub generator_cpu_util: Option<f64>,
    pub per_pair: Vec<PairResult>,
    /// Failed participants and signaling errors.
    pub errors: Vec<String>,
    pub loadavg: String,
}

impl RoomReport {
    pub fn print(&self, json: bool) {
        if printed_json(self, json) {
            return;
        }
        println!(
            "bench sfu room {} against {} ({} participants at {} kbit/s video, {} forwarded pairs)",
            self.room,
            self.http,
            self.participants,
            self.bitrate / 1000,
            self.pairs
        );
        println!(
            "  setup {:.2} s; join ms p50/max {:.0}/{:.0}; connect ms p50/max {:.0}/{:.0}; {} SFU offers answered",
            self.setup_s,
            self.join_ms.p50,
            self.join_ms.max,
            self.connect_ms.p50,
            self.connect_ms.max,
            self.sfu_offers
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
            "  pairs received {} of {} frames (lost {}, {:.3} %); worst pair: audio {:.1} %, video {:.1} %",
            self.received_frames,
            self.expected_frames,
            self.lost_frames,
            self.loss_ratio * 100.0,
            self.worst_pair_audio_ratio * 100.0,
            self.worst_pair_video_ratio * 100.0
        );
        println!(
            "  forwarded {:.0} RTP packets/s ({:.0} datagrams/s, {:.2} Mbit/s received)",
            self.forwarded_packets_per_sec,
            self.received_datagrams_per_sec,
            self.received_mbit_per_sec
        );
        if self.msid_mismatches > 0 {
            println!(
                "  frames on an m-line whose a=msid names another publisher: {}",
                self.msid_mismatches
            );
        }
        Tail {
            frame_latency_ms: &self.frame_latency_ms,
            keyframe_flag_mismatches: self.keyframe_flag_mismatches,
            untagged_frames: self.untagged_frames,
            server_cpu_s: self.server_cpu_s,
            server_cpu_util: self.server_cpu_util,
            server_cpu_us_per_forwarded_packet: self.server_cpu_us_per_forwarded_packet,
            per: "participant",
            server_cpu_percent_per: self.server_cpu_percent_per_participant,
            rss: &[
                ("start", self.server_rss_start_kib),
                ("connected", self.server_rss_connected_kib),
                ("end", self.server_rss_end_kib),
                ("peak", self.server_peak_rss_kib),
            ],
            server_rss_per_kib: self.server_rss_per_participant_kib,
            server_anon_per_kib: self.server_anon_per_participant_kib,
            server_packets_out_per_sec: self.server_packets_out_per_sec,
            generator_cpu_util: self.generator_cpu_util,
            errors: &self.errors,
            loadavg: &self.loadavg,
        }
        .print();
    }
}

/// The counters of participants, summed as they leave and at the end.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub(crate) join_ms: Vec<f64>,
    pub(crate) connect_ms: Vec<f64>,
    pub(crate) sfu_offers: u64,
    pub(crate) ignored_offers: u64,
    pub(crate) sent_audio: u64,
    pub(crate) sent_video: u64,
    pub(crate) sent_keyframes: u64,
    pub(crate) keyframe_requests: u64,
    pub(crate) keyframe_mismatches: u64,
    pub(crate) untagged: u64,
    pub(crate) msid_mismatches: u64,
    pub(crate) msid_changes: u64,
    pub(crate) packets: u64,
    pub(crate) datagrams: u64,
    pub(crate) bytes: u64,
    pub(crate) errors: Vec<String>,
}

impl Totals {
    pub(crate) fn add(&mut self, c: &Client, sig: &Signal) {
        if sig.welcomed {
            self.join_ms.push(sig.join_ms);
        }
        if let Some(d) = c.connected {
            self.connect_ms.push(d.as_secs_f64() * 1000.0);
        }
        self.sfu_offers += sig.sfu_offers;
        self.ignored_offers += sig.ignored_offers;
        self.sent_audio += c.send.window_audio;
        self.sent_video += c.send.window_video;
        self.sent_keyframes += c.send.window_keyframes;
        self.keyframe_requests += c.send.keyframe_requests;
        let rc = &c.recv;
        self.keyframe_mismatches += rc.keyframe_mismatches;
        self.untagged += rc.untagged;
        self.msid_mismatches += rc.msid_mismatches;
        self.msid_changes += rc.msid_changes;
        self.packets += rc.packets;
        self.datagrams += rc.datagrams;
        self.bytes += rc.bytes;
        if let Some(e) = &c.error {
            self.errors.push(e.clone());
        }
    }
}
