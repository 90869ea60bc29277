//! What the two modes of `tsunagi bench sfu` share: the WHIP/WHEP run (bench/sfu.rs)
//! and the room run (bench/sfu_room.rs) drive their clients on the same `mio` loop,
//! measure the same window (server and generator CPU, the server's packet count,
//! RSS) and print the same tail of their reports.

use std::io;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mio::{Events, Poll};
use serde::Serialize;

use super::sfu::{
    parse_base, server_packets_out, Client, FrameLatency, HttpBase, Role, SfuArgs, Shared, Target,
    CONNECT_TIMEOUT, KEYFRAME_EVERY, KEYFRAME_FACTOR, STRAGGLERS, TAG_LEN, VIDEO_FPS,
    VP8_KEY_HEADER,
};
use super::{err, procfs, BenchError, Histogram};

/// The clients on one `mio` poll, and the server's RSS sampled while they run.
pub(super) struct Core {
    pub(super) base: HttpBase,
    pub(super) server_pid: Option<u32>,
    /// The server has tsunagi's `/api/stats` (its `sfu.packetsOut` is read around the
    /// window).
    pub(super) server_stats: bool,
    pub(super) poll: Poll,
    pub(super) events: Events,
    pub(super) clients: Vec<Client>,
    pub(super) sh: Shared,
    pub(super) buf: Vec<u8>,
    pub(super) peak_rss: Option<u64>,
    pub(super) last_rss_sample: Instant,
}

impl Core {
    /// The loop for a run of `args` (already validated), with no client yet.
    pub(super) fn new(args: &SfuArgs) -> Result<Core, BenchError> {
        let base = parse_base(&args.http)?;
        let poll = Poll::new().map_err(|e| BenchError(format!("mio poll: {e}")))?;
        let avg = (args.bitrate / 8 / u64::from(VIDEO_FPS)) as usize;
        // KEYFRAME_EVERY frames average `avg`: one keyframe and KEYFRAME_EVERY-1
        // interframes.
        let inter = (avg * KEYFRAME_EVERY as usize
            / (KEYFRAME_EVERY as usize - 1 + KEYFRAME_FACTOR))
            .max(VP8_KEY_HEADER + TAG_LEN + 1);
        let filler: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let now = Instant::now();
        Ok(Core {
            base,
            server_pid: args.server_pid,
            server_stats: args.target == Target::Tsunagi,
            poll,
            events: Events::with_capacity(1024),
            clients: Vec::new(),
            sh: Shared {
                t0: now,
                window_us: None,
                window: None,
                sending: true,
                latency: Histogram::new(),
                peer_index: std::collections::HashMap::new(),
                inter_size: inter,
                key_size: inter * KEYFRAME_FACTOR,
                filler,
            },
            buf: vec![0; 2048],
            peak_rss: None,
            last_rss_sample: now,
        })
    }

    /// The server's RSS now (and the peak so far updated).
    pub(super) fn rss(&mut self) -> Option<u64> {
        let r = self.server_pid.and_then(procfs::rss_kib);
        if let Some(v) = r {
            self.peak_rss = Some(self.peak_rss.map_or(v, |p| p.max(v)));
        }
        r
    }

    /// The server's anonymous resident memory now ([`procfs::anon_kib`]).
    pub(super) fn anon(&self) -> Option<u64> {
        self.server_pid.and_then(procfs::anon_kib)
    }

    /// First half of a turn: waits at most `max_wait` (less when a client is due) and
    /// reads every socket that is readable.
    pub(super) fn poll_and_read(&mut self, max_wait: Duration) -> Result<(), BenchError> {
        let now = Instant::now();
        let wake = self
            .clients
            .iter()
            .filter_map(Client::next_wakeup)
            .min()
            .unwrap_or(now + max_wait);
        let wait = wake.saturating_duration_since(now).min(max_wait);
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return err(format!("mio poll: {e}")),
        }
        for ev in self.events.iter() {
            if let Some(c) = self.clients.get_mut(ev.token().0) {
                c.read(&mut self.buf, &mut self.sh);
            }
        }
        Ok(())
    }

    /// Second half of a turn: timeouts, sending (publishers and participants start
    /// once connected) and the RSS sample every 250 ms.
    pub(super) fn tick(&mut self) {
        let now = Instant::now();
        for c in &mut self.clients {
            if c.alive() && c.timeout <= now {
                c.handle_timeout(now, &mut self.sh);
            }
            if c.role != Role::Subscriber
                && c.connected.is_some()
                && c.send.audio_pt.is_none()
                && c.alive()
            {
                if let Err(e) = c.start_sending(now) {
                    c.fail(e);
                }
            }
            c.send_due(now, &mut self.sh);
        }
        if now.duration_since(self.last_rss_sample) >= Duration::from_millis(250) {
            self.last_rss_sample = now;
            self.rss();
        }
    }

    /// Frame latency over the run so far, ms.
    pub(super) fn frame_latency(&self) -> FrameLatency {
        let l = &self.sh.latency;
        let ms = |ns: u64| ns as f64 / 1e6;
        FrameLatency {
            p50: ms(l.quantile(0.5)),
            p99: ms(l.quantile(0.99)),
            max: ms(l.max()),
        }
    }

    /// The clients' failures, in order.
    pub(super) fn client_errors(&self) -> impl Iterator<Item = String> + '_ {
        self.clients.iter().filter_map(|c| c.error.clone())
    }
}

/// A run's event loop: [`Core`] plus what its own turns add (signaling).
pub(super) trait Driver {
    fn core(&mut self) -> &mut Core;

    /// One round of the event loop, waiting at most `max_wait`.
    fn turn(&mut self, max_wait: Duration) -> Result<(), BenchError>;

    fn pump_for(&mut self, d: Duration) -> Result<(), BenchError> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.turn(until.saturating_duration_since(Instant::now()))?;
        }
        Ok(())
    }

    /// Runs the loop until every client of `role` is connected; errors on a failure or
    /// after CONNECT_TIMEOUT.
    fn wait_connected(&mut self, role: Role) -> Result<(), BenchError> {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            if let Some(c) = self
                .core()
                .clients
                .iter()
                .find(|c| c.role == role && !c.alive())
            {
                return err(format!(
                    "{} failed while connecting: {}",
                    c.name(),
                    c.error.clone().unwrap_or_default()
                ));
            }
            let waiting: Vec<String> = self
                .core()
                .clients
                .iter()
                .filter(|c| c.role == role && c.connected.is_none())
                .map(Client::name)
                .collect();
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return err(format!(
                    "{} of the {}s did not connect (ICE + DTLS) within {} s: {}",
                    waiting.len(),
                    match role {
                        Role::Publisher => "publisher",
                        Role::Subscriber => "subscriber",
                        Role::Participant => "participant",
                    },
                    CONNECT_TIMEOUT.as_secs(),
                    waiting.join(", ")
                ));
            }
            self.turn(Duration::from_millis(50))?;
        }
    }

    /// The measurement window of `duration` seconds, then the publishers stop and the
    /// stragglers arrive.
    fn measure_window(&mut self, duration: f64) -> Result<Window, BenchError> {
        let core = self.core();
        let pid = core.server_pid;
        let me = std::process::id();
        let packets_out = |core: &Core| {
            if core.server_stats {
                server_packets_out(&core.base)
            } else {
                None
            }
        };
        let packets_out_start = packets_out(core);
        let gen_cpu_start = procfs::cpu_seconds(me);
        let cpu_start = pid.and_then(procfs::cpu_seconds);
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(duration);
        core.sh.window = Some((start, end));
        core.sh.window_us = Some((core.sh.us(start), core.sh.us(end)));
        while Instant::now() < end {
            self.turn(end.saturating_duration_since(Instant::now()))?;
        }
        let cpu_end = pid.and_then(procfs::cpu_seconds);
        let gen_cpu_end = procfs::cpu_seconds(me);
        let elapsed = start.elapsed().as_secs_f64();
        let core = self.core();
        let packets_out_end = packets_out(core);
        let rss_end = core.rss();
        core.sh.sending = false;
        self.pump_for(STRAGGLERS)?;
        Ok(Window {
            elapsed,
            server_cpu: cpu_start.zip(cpu_end).map(|(a, b)| b - a),
            generator_cpu: gen_cpu_start.zip(gen_cpu_end).map(|(a, b)| b - a),
            packets_out: packets_out_start
                .zip(packets_out_end)
                .map(|(a, b)| b.saturating_sub(a)),
            rss_end,
        })
    }
}

/// What [`Driver::measure_window`] measured.
pub(super) struct Window {
    pub(super) elapsed: f64,
    /// Server CPU seconds over the window.
    pub(super) server_cpu: Option<f64>,
    /// This tool's CPU seconds over the window.
    pub(super) generator_cpu: Option<f64>,
    /// Growth of the server's `sfu.packetsOut`.
    pub(super) packets_out: Option<u64>,
    pub(super) rss_end: Option<u64>,
}

/// The report fields derived from a [`Window`] alone (and the forwarded packets).
pub(super) struct WindowRates {
    pub(super) secs: f64,
    pub(super) server_cpu_s: Option<f64>,
    pub(super) server_cpu_util: Option<f64>,
    pub(super) server_cpu_us_per_forwarded_packet: Option<f64>,
    pub(super) server_packets_out_per_sec: Option<f64>,
    pub(super) generator_cpu_util: Option<f64>,
}

impl Window {
    pub(super) fn rates(&self, forwarded_packets: u64) -> WindowRates {
        let secs = self.elapsed.max(1e-9);
        WindowRates {
            secs,
            server_cpu_s: self.server_cpu,
            server_cpu_util: self.server_cpu.map(|cpu| cpu / secs),
            server_cpu_us_per_forwarded_packet: self
                .server_cpu
                .filter(|_| forwarded_packets > 0)
                .map(|cpu| cpu * 1e6 / forwarded_packets as f64),
            server_packets_out_per_sec: self.packets_out.map(|p| p as f64 / secs),
            generator_cpu_util: self.generator_cpu.map(|g| g / secs),
        }
    }
}

/// `part / whole`, 0 when `whole` is 0.
/// Memory growth from `before` to `after` (KiB) per one of `n`: `None` without both
/// samples or with nobody to share it.
pub(super) fn per_kib(before: Option<u64>, after: Option<u64>, n: usize) -> Option<f64> {
    match (before, after) {
        (Some(a), Some(b)) if n > 0 => Some((b as f64 - a as f64) / n as f64),
        _ => None,
    }
}

pub(super) fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Prints `report` as one JSON object when `json`; false when it still has to be
/// printed as text.
pub(super) fn printed_json(report: &impl Serialize, json: bool) -> bool {
    if json {
        match serde_json::to_string(report) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("tsunagi bench: cannot encode the report: {e}"),
        }
    }
    json
}

/// The part of the text report that both modes print alike, from the frame latency on.
pub(super) struct Tail<'a> {
    pub(super) frame_latency_ms: &'a FrameLatency,
    pub(super) keyframe_flag_mismatches: u64,
    pub(super) untagged_frames: u64,
    pub(super) server_cpu_s: Option<f64>,
    pub(super) server_cpu_util: Option<f64>,
    pub(super) server_cpu_us_per_forwarded_packet: Option<f64>,
    /// "subscriber" or "participant".
    pub(super) per: &'a str,
    pub(super) server_cpu_percent_per: Option<f64>,
    /// RSS samples by name, in order ("start", ..., "peak").
    pub(super) rss: &'a [(&'a str, Option<u64>)],
    pub(super) server_rss_per_kib: Option<f64>,
    /// The same growth of anonymous memory only (no code pages).
    pub(super) server_anon_per_kib: Option<f64>,
    pub(super) server_packets_out_per_sec: Option<f64>,
    pub(super) generator_cpu_util: Option<f64>,
    pub(super) errors: &'a [String],
    pub(super) loadavg: &'a str,
}

impl Tail<'_> {
    pub(super) fn print(&self) {
        let l = self.frame_latency_ms;
        println!(
            "  frame latency ms: p50 {:.2}  p99 {:.2}  max {:.2}",
            l.p50, l.p99, l.max
        );
        if self.keyframe_flag_mismatches > 0 || self.untagged_frames > 0 {
            println!(
                "  keyframe flag mismatches {}, untagged frames {}",
                self.keyframe_flag_mismatches, self.untagged_frames
            );
        }
        if let Some(c) = self.server_cpu_s {
            println!(
                "  server CPU {c:.2} s ({:.1} % of one core): {:.2} us per forwarded packet, {:.2} % of a core per {}",
                self.server_cpu_util.unwrap_or(0.0) * 100.0,
                self.server_cpu_us_per_forwarded_packet.unwrap_or(0.0),
                self.server_cpu_percent_per.unwrap_or(0.0),
                self.per
            );
            let samples: Vec<String> = self
                .rss
                .iter()
                .map(|(name, kib)| format!("{name} {}", kib.unwrap_or(0)))
                .collect();
            println!(
                "  server RSS KiB: {}; {:.0} KiB per {} ({:.0} KiB of it anonymous)",
                samples.join(" "),
                self.server_rss_per_kib.unwrap_or(0.0),
                self.per,
                self.server_anon_per_kib.unwrap_or(0.0)
            );
        }
        if let Some(p) = self.server_packets_out_per_sec {
            println!("  server's own count: {p:.0} packets out/s");
        }
        if let Some(g) = self.generator_cpu_util {
            println!("  generator CPU {:.1} % of one core", g * 100.0);
        }
        for e in self.errors {
            println!("  error: {e}");
        }
        println!("  load average: {}", self.loadavg);
    }
}

/// Prints the report of `run` (exit status 0), or its error (1).
pub(super) fn exit_with<R>(run: Result<R, BenchError>, print: impl FnOnce(&R)) -> ExitCode {
    match run {
        Ok(r) => {
            print(&r);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tsunagi bench sfu: {e}");
            ExitCode::FAILURE
        }
    }
}
