//! The churn run (`--churn-every`): participants leave and are replaced while the room
//! runs; every direction that existed is judged, and its report.

use super::*;

/// What a churn run keeps besides the participants in the room.
pub(crate) struct Churn {
    pub(crate) every: Duration,
    /// The next leave + join (set when the window starts).
    pub(crate) next: Option<Instant>,
    pub(crate) rng: StdRng,
    pub(crate) leaves: u64,
    /// WebSockets of those who left, read until the server closes them (or a deadline).
    pub(crate) closing: Vec<(WebSocket<TcpStream>, Instant)>,
    /// Participants who left.
    pub(crate) gone: Totals,
    /// The SFU's state of directions seen starving while the run went on.
    pub(crate) snapshots: HashMap<(u16, u16), Value>,
    pub(crate) last_check: Instant,
    /// The longest the loop was busy in one turn with signaling, leaves and joins.
    pub(crate) longest_turn: Duration,
}

/// Runs the room benchmark with churn (`--churn-every`) and returns its report.
pub fn run_churn(args: &SfuArgs) -> Result<ChurnReport, BenchError> {
    args.validate()?;
    let (Some(n), Some(every)) = (args.participants, args.churn_every) else {
        return err("--churn-every needs --participants");
    };
    let mut r = Room::new(args, n)?;
    r.churn = Some(Churn {
        every: Duration::from_secs_f64(every),
        next: None,
        rng: StdRng::seed_from_u64(args.seed),
        leaves: 0,
        closing: Vec::new(),
        gone: Totals::default(),
        snapshots: HashMap::new(),
        last_check: Instant::now(),
        longest_turn: Duration::ZERO,
    });
    let result = r.measure_churn(n);
    r.leave_all();
    let mut report = result?;
    report.loadavg = loadavg();
    Ok(report)
}

impl Room<'_> {
    /// The churn run: N participants join, then every `--churn-every` in the window one
    /// of them leaves and a new one takes its place; every direction that existed is
    /// judged at the end.
    pub(crate) fn measure_churn(&mut self, n: usize) -> Result<ChurnReport, BenchError> {
        let args = self.args;
        let rss_start = self.core.rss();
        let setup_start = Instant::now();
        for i in 0..n {
            self.join(i)?;
            self.turn(Duration::ZERO)?;
        }
        self.wait_for("connect (ICE + DTLS)", CONNECT_TIMEOUT, |c, _| {
            c.connected.is_some()
        })?;
        let setup_s = setup_start.elapsed().as_secs_f64();
        self.pump_for(Duration::from_secs_f64(args.warmup))?;
        let rss_connected = self.core.rss();
        let w = self.measure_window(args.duration)?;
        let now = Instant::now();
        // The directions end with the window (the publishers stop there).
        let (window_start, window_end) = self.core.sh.window.unwrap_or((now, now));

        let Some(ch) = &mut self.churn else {
            return err("not a churn run");
        };
        let mut totals = std::mem::take(&mut ch.gone);
        for (c, sig) in self.core.clients.iter().zip(&self.sigs) {
            totals.add(c, sig);
            if let Some(m) = self.members.get_mut(c.index) {
                m.heard.clone_from(&c.recv.heard);
                m.error.clone_from(&c.error);
            }
        }

        let mut r = ChurnReport {
            bench: "sfu-room-churn",
            http: args.http.clone(),
            room: args.room.clone(),
            participants: n,
            bitrate: args.bitrate,
            churn_every_s: ch.every.as_secs_f64(),
            seed: args.seed,
            starved_after_s: args.starved_after,
            duration_s: w.elapsed,
            warmup_s: args.warmup,
            setup_s,
            joins: self.members.len(),
            leaves: ch.leaves,
            join_ms: Spread::of(std::mem::take(&mut totals.join_ms)),
            connect_ms: Spread::of(std::mem::take(&mut totals.connect_ms)),
            sfu_offers: totals.sfu_offers,
            ignored_sfu_offers: totals.ignored_offers,
            sent_audio_frames: totals.sent_audio,
            sent_video_frames: totals.sent_video,
            sent_keyframes: totals.sent_keyframes,
            keyframe_requests: totals.keyframe_requests,
            keyframe_flag_mismatches: totals.keyframe_mismatches,
            untagged_frames: totals.untagged,
            msid_mismatches: totals.msid_mismatches,
            reused_mlines: totals.msid_changes,
            forwarded_packets: totals.packets,
            generator_longest_turn_ms: ch.longest_turn.as_secs_f64() * 1000.0,
            ..ChurnReport::default()
        };

        let bound = Duration::from_secs_f64(args.starved_after);
        let secs = |a: Instant, b: Instant| {
            if b >= a {
                b.duration_since(a).as_secs_f64()
            } else {
                -a.duration_since(b).as_secs_f64()
            }
        };
        let (mut first_ms, mut churn_first_ms) = (Vec::new(), Vec::new());
        let (mut gaps_ms, mut latency_ms) = (Vec::new(), Vec::new());
        let mut worst = 1.0f64;
        for (si, s) in self.members.iter().enumerate() {
            let Some(s_in) = s.joined else { continue };
            let s_out = s.left.unwrap_or(window_end).min(window_end);
            for (pi, p) in self.members.iter().enumerate().filter(|(pi, _)| *pi != si) {
                let Some(p_in) = p.joined else { continue };
                let from = s_in.max(p_in);
                let to = s_out.min(p.left.unwrap_or(window_end));
                if to <= from {
                    continue;
                }
                let together = to.duration_since(from);
                let h = s.heard.get(&(pi as u16)).copied().unwrap_or_default();
                r.directions += 1;
                let mut d = DirectionResult {
                    publisher: pi,
                    subscriber: si,
                    from_s: secs(window_start, from),
                    together_s: together.as_secs_f64(),
                    audio_frames: h.audio,
                    video_frames: h.video,
                    ..DirectionResult::default()
                };
                if let Some(first) = h.first_video {
                    let ms = first.saturating_duration_since(from).as_secs_f64() * 1000.0;
                    let gap = h.longest_video_gap.as_secs_f64() * 1000.0;
                    r.directions_served += 1;
                    first_ms.push(ms);
                    if from >= window_start {
                        churn_first_ms.push(ms);
                    }
                    gaps_ms.push(gap);
                    if h.longest_video_gap > STALL {
                        r.directions_with_video_gap_over_1s += 1;
                    }
                    let latency = h.max_video_latency.as_secs_f64() * 1000.0;
                    latency_ms.push(latency);
                    if h.max_video_latency > STALL {
                        r.directions_with_video_latency_over_1s += 1;
                    }
                    d.max_video_latency_ms = Some(latency);
                    d.max_video_latency_at_s =
                        h.max_video_latency_at.map(|t| secs(window_start, t));
                    let span = h.video_span();
                    d.video_frames_spanned = span;
                    r.video_frames_spanned += span;
                    r.video_frames_missing += span.saturating_sub(h.video);
                    worst = worst.min(ratio(h.video.min(span), span));
                    if !h.first_video_keyframe {
                        r.first_frame_not_keyframe += 1;
                    }
                    d.first_video_ms = Some(ms);
                    d.first_video_keyframe = Some(h.first_video_keyframe);
                    d.longest_video_gap_ms = Some(gap);
                } else if together > bound {
                    r.directions_starved += 1;
                    r.starved.push(StarvedDirection {
                        publisher: pi,
                        subscriber: si,
                        publisher_peer: p.peer.clone(),
                        subscriber_peer: s.peer.clone(),
                        from_s: d.from_s,
                        together_s: d.together_s,
                        audio_frames: h.audio,
                        publisher_error: p.error.clone(),
                        subscriber_error: s.error.clone(),
                        sfu_state: ch.snapshots.get(&(pi as u16, si as u16)).cloned(),
                    });
                } else {
                    r.directions_unserved_short += 1;
                }
                r.per_direction.push(d);
            }
        }
        r.peer_ids = self.members.iter().map(|m| m.peer.clone()).collect();
        r.first_video_ms = Quantiles::of(first_ms);
        r.first_video_ms_joined_in_window = Quantiles::of(churn_first_ms);
        r.longest_video_gap_ms = Quantiles::of(gaps_ms);
        r.max_video_latency_ms = Quantiles::of(latency_ms);
        r.worst_direction_video_ratio = if r.directions_served > 0 { worst } else { 0.0 };

        let rates = w.rates(r.forwarded_packets);
        r.forwarded_packets_per_sec = r.forwarded_packets as f64 / rates.secs;
        r.received_datagrams_per_sec = totals.datagrams as f64 / rates.secs;
        r.received_mbit_per_sec = totals.bytes as f64 * 8.0 / rates.secs / 1e6;
        r.frame_latency_ms = self.core.frame_latency();
        r.server_cpu_s = rates.server_cpu_s;
        r.server_cpu_util = rates.server_cpu_util;
        r.server_cpu_us_per_forwarded_packet = rates.server_cpu_us_per_forwarded_packet;
        r.server_cpu_percent_per_participant = rates.server_cpu_util.map(|u| u * 100.0 / n as f64);
        r.server_rss_start_kib = rss_start;
        r.server_rss_connected_kib = rss_connected;
        r.server_rss_end_kib = w.rss_end;
        r.server_peak_rss_kib = self.core.peak_rss;
        r.server_rss_per_participant_kib = per_kib(rss_start, rss_connected, n);
        r.server_packets_out_per_sec = rates.server_packets_out_per_sec;
        r.generator_cpu_util = rates.generator_cpu_util;
        r.errors = totals.errors;
        r.errors.extend(self.notes.iter().cloned());
        Ok(r)
    }
}

/// Milliseconds: median, 99th percentile (nearest rank) and maximum.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Quantiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Quantiles {
    pub(crate) fn of(mut v: Vec<f64>) -> Self {
        if v.is_empty() {
            return Quantiles::default();
        }
        v.sort_by(f64::total_cmp);
        let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Quantiles {
            p50: rank(0.5),
            p99: rank(0.99),
            max: v[v.len() - 1],
        }
    }
}

/// One direction (publisher → subscriber) of a churn run: two participants in the room
/// together.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DirectionResult {
    pub publisher: usize,
    pub subscriber: usize,
    /// When both were in the room (the later `welcome`), seconds from the start of the
    /// window (negative: before it).
    pub from_s: f64,
    /// Until the first of them left, or the end of the window.
    pub together_s: f64,
    /// From `from_s` to the subscriber's first video frame of that publisher.
    pub first_video_ms: Option<f64>,
    pub first_video_keyframe: Option<bool>,
    /// Frames of that publisher the subscriber received, whole run.
    pub audio_frames: u64,
    pub video_frames: u64,
    /// Longest time between two video frames of that publisher.
    pub longest_video_gap_ms: Option<f64>,
    /// Longest time from the publisher's write to a complete video frame, and when that
    /// frame arrived (seconds from the start of the window).
    pub max_video_latency_ms: Option<f64>,
    pub max_video_latency_at_s: Option<f64>,
    /// Video frames the publisher sent from the first one received to the last one
    /// (by their sequence numbers): `video_frames` of them arrived.
    pub video_frames_spanned: u64,
}

/// A direction in the room together for longer than `--starved-after` that got no video
/// frame.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StarvedDirection {
    pub publisher: usize,
    pub subscriber: usize,
    pub publisher_peer: Option<String>,
    pub subscriber_peer: Option<String>,
    pub from_s: f64,
    pub together_s: f64,
    /// Audio frames of the publisher the subscriber did receive.
    pub audio_frames: u64,
    pub publisher_error: Option<String>,
    pub subscriber_error: Option<String>,
    /// The SFU's view (GET /api/rooms/{room}/sfu) when the tool first saw the direction
    /// starving: the subscriber's connection and negotiation, its subscriptions to the
    /// publisher. Null when it was not asked (the direction ended first, or 20 were
    /// asked already).
    pub sfu_state: Option<Value>,
}

/// What `tsunagi bench sfu --participants N --churn-every T` measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChurnReport {
    pub bench: &'static str,
    pub http: String,
    pub room: String,
    /// Room size, kept through the churn.
    pub participants: usize,
    pub bitrate: u64,
    pub churn_every_s: f64,
    pub seed: u64,
    pub starved_after_s: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// From the first WebSocket connect until the first N had ICE + DTLS up.
    pub setup_s: f64,
    /// Participants who joined over the run (N + the churn's newcomers).
    pub joins: usize,
    /// Participants who left during the window.
    pub leaves: u64,
    pub join_ms: Spread,
    pub connect_ms: Spread,
    /// SFU offers answered, and ignored because the participant's own offer was out.
    pub sfu_offers: u64,
    pub ignored_sfu_offers: u64,
    /// Ordered (publisher, subscriber) pairs that were in the room together.
    pub directions: usize,
    /// Directions whose subscriber received a video frame of the publisher.
    pub directions_served: usize,
    /// Together for longer than `starved_after_s`, no video frame.
    pub directions_starved: usize,
    /// No video frame, but together for at most `starved_after_s` (e.g. a join at the
    /// very end of the window): not judged.
    pub directions_unserved_short: usize,
    /// Time to the first video frame of the served directions, from the later join.
    pub first_video_ms: Quantiles,
    /// The same for the directions that began in the window (a newcomer on one side).
    pub first_video_ms_joined_in_window: Quantiles,
    /// Served directions whose first video frame was not a keyframe.
    pub first_frame_not_keyframe: usize,
    /// Per served direction, its longest time between two video frames.
    pub longest_video_gap_ms: Quantiles,
    pub directions_with_video_gap_over_1s: usize,
    /// Per served direction, its slowest video frame (publisher's write to complete
    /// frame at the subscriber), whole run.
    pub max_video_latency_ms: Quantiles,
    pub directions_with_video_latency_over_1s: usize,
    /// Over the served directions: video frames the publisher sent from the first one
    /// the subscriber received to the last, and how many of them did not arrive.
    pub video_frames_spanned: u64,
    pub video_frames_missing: u64,
    /// The lowest received / spanned of any served direction.
    pub worst_direction_video_ratio: f64,
    /// Frames whose tag names another publisher than the current `a=msid` of the
    /// m-line they came on.
    pub msid_mismatches: u64,
    /// Times a participant's m-line got another publisher's `a=msid` (the SFU gave the
    /// m-line of someone who left to a newcomer), all participants.
    pub reused_mlines: u64,
    pub sent_audio_frames: u64,
    pub sent_video_frames: u64,
    pub sent_keyframes: u64,
    pub keyframe_requests: u64,
    pub keyframe_flag_mismatches: u64,
    pub untagged_frames: u64,
    /// RTP packets of the in-window frames received, all participants.
    pub forwarded_packets: u64,
    pub forwarded_packets_per_sec: f64,
    pub received_datagrams_per_sec: f64,
    pub received_mbit_per_sec: f64,
    pub frame_latency_ms: FrameLatency,
    pub server_cpu_s: Option<f64>,
    pub server_cpu_util: Option<f64>,
    pub server_cpu_us_per_forwarded_packet: Option<f64>,
    pub server_cpu_percent_per_participant: Option<f64>,
    pub server_rss_start_kib: Option<u64>,
    pub server_rss_connected_kib: Option<u64>,
    pub server_rss_end_kib: Option<u64>,
    pub server_peak_rss_kib: Option<u64>,
    /// (RSS after the first N connected and the warm-up − RSS before any client) / N.
    pub server_rss_per_participant_kib: Option<f64>,
    pub server_packets_out_per_sec: Option<f64>,
    pub generator_cpu_util: Option<f64>,
    /// The longest the generator's loop was busy in one turn (signaling, a leave and
    /// a join, asking the SFU): media of everyone waits meanwhile.
    pub generator_longest_turn_ms: f64,
    pub starved: Vec<StarvedDirection>,
    pub per_direction: Vec<DirectionResult>,
    /// Each participant's peer id (from `welcome`) by index, to find it in the
    /// server's log and in `GET /api/rooms/{room}/sfu`.
    pub peer_ids: Vec<Option<String>>,
    pub errors: Vec<String>,
    pub loadavg: String,
}

impl ChurnReport {
    pub fn print(&self, json: bool) {
        if printed_json(self, json) {
            return;
        }
        println!(
            "bench sfu room {} against {} ({} participants at {} kbit/s video; churn every {} s, seed {})",
            self.room,
            self.http,
            self.participants,
            self.bitrate / 1000,
            self.churn_every_s,
            self.seed
        );
        println!(
            "  setup {:.2} s; join ms p50/max {:.0}/{:.0}; connect ms p50/max {:.0}/{:.0}; {} SFU offers answered ({} ignored while the participant's own was out)",
            self.setup_s,
            self.join_ms.p50,
            self.join_ms.max,
            self.connect_ms.p50,
            self.connect_ms.max,
            self.sfu_offers,
            self.ignored_sfu_offers
        );
        println!(
            "  window {:.1} s: {} left and were replaced ({} participants in all); sent {} audio + {} video frames ({} keyframes, {} requested)",
            self.duration_s,
            self.leaves,
            self.joins,
            self.sent_audio_frames,
            self.sent_video_frames,
            self.sent_keyframes,
            self.keyframe_requests
        );
        println!(
            "  directions: {} in the room together, {} served, {} STARVED (no video for > {} s together), {} without video but together for <= {} s",
            self.directions,
            self.directions_served,
            self.directions_starved,
            self.starved_after_s,
            self.directions_unserved_short,
            self.starved_after_s
        );
        let q = |q: &Quantiles| format!("p50 {:.0}  p99 {:.0}  max {:.0}", q.p50, q.p99, q.max);
        println!(
            "  time to first video frame ms: {}; of directions begun in the window: {}",
            q(&self.first_video_ms),
            q(&self.first_video_ms_joined_in_window)
        );
        println!(
            "  longest video gap per direction ms: {}; {} directions with a gap over 1 s",
            q(&self.longest_video_gap_ms),
            self.directions_with_video_gap_over_1s
        );
        println!(
            "  slowest video frame per direction ms: {}; {} directions with a frame later than 1 s",
            q(&self.max_video_latency_ms),
            self.directions_with_video_latency_over_1s
        );
        println!(
            "  video frames from each direction's first to its last: {} missing of {} ({:.3} %); worst direction {:.1} %",
            self.video_frames_missing,
            self.video_frames_spanned,
            ratio(self.video_frames_missing, self.video_frames_spanned) * 100.0,
            self.worst_direction_video_ratio * 100.0
        );
        println!(
            "  first frame not a keyframe: {}; m-lines given to another publisher: {}; frames on an m-line whose a=msid names another publisher: {}",
            self.first_frame_not_keyframe, self.reused_mlines, self.msid_mismatches
        );
        println!(
            "  forwarded {:.0} RTP packets/s ({:.0} datagrams/s, {:.2} Mbit/s received); generator's longest busy turn {:.0} ms",
            self.forwarded_packets_per_sec,
            self.received_datagrams_per_sec,
            self.received_mbit_per_sec,
            self.generator_longest_turn_ms
        );
        for s in &self.starved {
            println!(
                "  starved: {} -> {} ({} -> {}), together {:.1} s from {:.1} s, {} audio frames{}{}; SFU: {}",
                s.publisher,
                s.subscriber,
                s.publisher_peer.as_deref().unwrap_or("?"),
                s.subscriber_peer.as_deref().unwrap_or("?"),
                s.together_s,
                s.from_s,
                s.audio_frames,
                s.publisher_error
                    .as_deref()
                    .map(|e| format!("; publisher failed: {e}"))
                    .unwrap_or_default(),
                s.subscriber_error
                    .as_deref()
                    .map(|e| format!("; subscriber failed: {e}"))
                    .unwrap_or_default(),
                s.sfu_state
                    .as_ref()
                    .map_or_else(|| "not asked".to_owned(), Value::to_string)
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
            server_anon_per_kib: None,
            server_packets_out_per_sec: self.server_packets_out_per_sec,
            generator_cpu_util: self.generator_cpu_util,
            errors: &self.errors,
            loadavg: &self.loadavg,
        }
        .print();
    }
}
