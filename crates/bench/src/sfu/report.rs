//! The report of `tsunagi bench sfu`: per-subscriber counts, loss, forwarded packets,
//! latency, the server's CPU and memory, printed as text or JSON.

use super::*;

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
        println!(
            "bench sfu against {} room {} ({} publisher(s) at {} kbit/s video, {} subscriber(s))",
            self.http,
            self.room,
            self.publishers,
            self.bitrate / 1000,
            self.subscribers
        );
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
            server_packets_out_per_sec: self.server_packets_out_per_sec,
            generator_cpu_util: self.generator_cpu_util,
            errors: &self.errors,
            loadavg: &self.loadavg,
        }
        .print();
    }
}
