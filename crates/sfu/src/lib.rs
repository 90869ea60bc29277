//! Sans-IO selective forwarding unit (SFU) over [`str0m`].
//!
//! The [`Sfu`] holds one ICE-lite str0m `Rtc` per peer, groups peers into rooms, and
//! forwards every publisher's tracks to the other peers of its room: audio as is, video
//! at the simulcast layer that fits each subscriber's tile and bandwidth (see
//! `docs/sfu.md`). It never touches a socket or the clock. The runtime drives it:
//!
//! * datagrams (UDP) and RFC 4571 frames (ICE-TCP) go in through [`Sfu::handle_receive`],
//! * time through [`Sfu::handle_timeout`] when [`Sfu::poll_timeout`] is reached,
//! * signaling through [`Sfu::join`], [`Sfu::accept_offer`], [`Sfu::accept_answer`],
//!   [`Sfu::add_remote_candidate`], [`Sfu::set_view`] and [`Sfu::leave`];
//!
//! and after each of those calls it drains [`Sfu::poll_transmit`] (packets to send from
//! `source` to `destination`) and [`Sfu::poll_event`] (offers to deliver, speaker changes,
//! stats, closed peers) until both return `None`, then sleeps until
//! [`Sfu::poll_timeout`]. When `accept_offer` returns an answer, deliver it **before** the
//! events that follow: one of them may be the SFU's next offer to the same peer.
//!
//! Several datagrams may be handed in before polling: what they forward to each
//! subscriber is paced (and, with `rtp_mode` off, packetized) in one pass per subscriber when output is polled
//! (or time handled), not once per frame, so a batch of received datagrams costs less
//! per forwarded packet than the same datagrams polled one by one.
//!
//! ```no_run
//! use std::time::Instant;
//! use tsunagi_sfu::{Protocol, Role, Sfu, SfuConfig, SfuEvent};
//! # fn recv() -> Option<(std::net::SocketAddr, Vec<u8>)> { None }
//! # fn send(_: &tsunagi_sfu::Transmit) {}
//! # fn signal(_: &SfuEvent) {}
//! # fn sleep_until(_: Option<Instant>) {}
//! let local = "192.0.2.10:3478".parse().unwrap();
//! let config = SfuConfig { udp_candidates: vec![local], ..SfuConfig::default() };
//! let mut sfu = Sfu::new(config, Instant::now());
//! sfu.join("room1", "alice", Role::Participant { can_publish: true }, Instant::now())
//!     .expect("room has space");
//! # let offer = String::new();
//! let answer = sfu.accept_offer("alice", &offer, Instant::now());
//! // ... send the answer over signaling, then:
//! loop {
//!     match recv() {
//!         Some((from, datagram)) => {
//!             sfu.handle_receive(Instant::now(), Protocol::Udp, from, local, &datagram);
//!         }
//!         None => sfu.handle_timeout(Instant::now()),
//!     }
//!     while let Some(t) = sfu.poll_transmit() {
//!         send(&t);
//!     }
//!     while let Some(ev) = sfu.poll_event() {
//!         signal(&ev);
//!     }
//!     sleep_until(sfu.poll_timeout());
//! }
//! ```
//!
//! # Demultiplexing
//! One socket serves every peer. A STUN Binding request names its peer by the local ufrag
//! in `USERNAME` and must pass MESSAGE-INTEGRITY with that peer's password; the 5-tuple it
//! came from is then remembered for that peer, and DTLS/SRTP from a remembered 5-tuple goes
//! straight to it ([`demux`]). Anything else is a demux miss.
//!
//! # Faults
//! Every call into a peer's `Rtc` runs inside `catch_unwind`. A panic or a str0m error
//! drops only that peer: [`SfuEvent::Closed`] with the reason, [`SfuStats::faults`] + 1,
//! a `warn!` log. The rest of the room keeps forwarding.
//!
//! # Panic policy
//! No input (datagram, SDP, candidate, id) panics: bad input returns an [`SfuError`] or is
//! counted and dropped. Every table and queue is bounded ([`SfuConfig`] and [`limits`]).
#![forbid(unsafe_code)]

pub mod demux;
pub mod gaps;
pub mod keyframe;
pub mod policy;
pub mod rewrite;
pub mod speaker;

mod sdp;
mod sfu;
mod types;

pub use sfu::Sfu;
pub use types::{Layer, Protocol, Role, SfuConfig, SfuError, SfuEvent, SfuStats, Tile, Transmit};

/// Fixed bounds and timings that are not worth a configuration option.
pub mod limits {
    use std::time::Duration;

    /// Transmits queued between two drains at most; more are dropped and counted.
    pub const MAX_TRANSMITS: usize = 16_384;
    /// Events queued between two drains at most; more are dropped and counted.
    pub const MAX_EVENTS: usize = 4_096;
    /// Internal str0m events waiting to be handled at most (media and data-channel
    /// messages beyond it are dropped and counted).
    pub const MAX_WORK: usize = 8_192;
    /// Tracks one peer may publish.
    pub const MAX_TRACKS_PER_PEER: usize = 8;
    /// Data channels remembered per peer.
    pub const MAX_CHANNELS_PER_PEER: usize = 16;
    /// Largest data-channel text message relayed (bytes).
    pub const MAX_RELAY_MESSAGE: usize = 16 * 1024;
    /// Largest SDP accepted (bytes).
    pub const MAX_SDP_LEN: usize = 128 * 1024;
    /// Largest trickled candidate accepted (bytes).
    pub const MAX_CANDIDATE_LEN: usize = 1024;
    /// Longest peer or room id (bytes).
    pub const MAX_ID_LEN: usize = 128;
    /// Packets kept per outgoing video stream for NACK/RTX resends. 400 packets are
    /// 1.6 s of a 2.5 Mbit/s layer (about 250 packets/s) and far more of the lower ones:
    /// NACKs come within an RTT or two, so older packets are never asked for. str0m's
    /// default (1000) costs up to ~1.2 MB per subscription, which a 50-person room has
    /// 2,450 of.
    pub const SEND_BUFFER_VIDEO: usize = 400;
    /// Packets kept per outgoing audio stream.
    pub const SEND_BUFFER_AUDIO: usize = 50;
    /// The longest a sent packet stays in its subscription's NACK/RTX cache (for RTTs of
    /// over 330 ms). A browser NACKs a missing packet about an RTT after the next one
    /// arrives and asks again every RTT, while its jitter buffer still waits for the
    /// frame. str0m's default (3 s) kept 180 packets (about 200 KiB) of a 500 kbit/s
    /// stream per subscriber, most of the SFU's memory per subscriber (docs/benchmarks.md,
    /// SFU).
    pub const RTX_MAX_AGE: Duration = Duration::from_secs(1);
    /// The shortest: a packet is kept at least this long however short the RTT (as
    /// Janus's `min_nack_queue` default).
    pub const RTX_MIN_AGE: Duration = Duration::from_millis(200);
    /// Between the two, a packet is kept for this many of the subscriber's RTTs: the first
    /// NACK and two more tries.
    pub const RTX_AGE_RTTS: u32 = 3;
    /// Until the subscriber's RTT is known (str0m's stats, every `stats_interval`: the
    /// first seconds of a connection) a packet is kept for the floor, as Janus starts
    /// (its RTT is 0 until measured): the first NACK is answered up to an RTT of about
    /// 180 ms, and the cache grows when a longer RTT is measured. The caches of those
    /// seconds set the process's memory (the allocator keeps what they held): a room of
    /// 16 on loopback, RSS per participant 2,750 KiB starting at 1 s, 2,069 at 500 ms,
    /// 1,733 at 200 ms (at 89f41c1); 1,515 at 500 ms and 1,370 at 200 ms (RTP mode).
    pub const RTX_UNKNOWN_RTT_AGE: Duration = RTX_MIN_AGE;
    /// How long a gap in a publisher's video may stay open, waiting for its resends,
    /// before the SFU asks for a keyframe, while the publisher's RTT is not known (once
    /// known: the publisher's [`RTX_AGE_RTTS`] RTTs within [`RTX_MIN_AGE`]..=[`RTX_MAX_AGE`]).
    /// Longer than the floor, so a publisher on a long path is not asked for keyframes it
    /// would have repaired.
    pub const GAP_UNKNOWN_RTT_WAIT: Duration = Duration::from_millis(500);
    /// str0m's default share of resends above which queued resends are dropped.
    pub const RTX_RATIO_CAP: f32 = 0.15;
    /// Packets written to one peer's streams before it is drained at once rather than
    /// after the batch of received datagrams: str0m's send queue of each stream keeps the
    /// capacity of the longest run written between two drains (a 16-person room: 240
    /// video queues, ~400 bytes per queued packet).
    pub const WRITES_PER_DRAIN: u32 = 8;
    /// Timeouts already due that one drain of a peer handles at once (str0m's pacer asks
    /// for one per paced packet); the rest wait for the runtime's next turn.
    pub const DUE_TIMEOUTS_PER_DRAIN: u32 = 64;
    /// Period of the SFU's own work: speaker detection, layer choice, stats, timeouts.
    pub const TICK: Duration = Duration::from_millis(100);
    /// A peer whose ICE and DTLS are not up this long after `join` is closed.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
    /// An SFU offer unanswered this long is reported (logged at info, counted in the
    /// subscription state) but stays outstanding: the peer may have applied it already
    /// (a loaded browser takes seconds), so another offer made now would split the two
    /// sides' views of the session for good. It ends with the peer's answer, the peer's
    /// own offer (glare: the SFU is polite), or the runtime reporting it undelivered
    /// ([`Sfu::offer_undelivered`](crate::Sfu::offer_undelivered)).
    pub const SLOW_ANSWER: Duration = Duration::from_secs(10);
    /// Wait after a refused answer before offering again.
    pub const OFFER_RETRY_BACKOFF: Duration = Duration::from_secs(2);
    /// A subscription waiting for a keyframe has one asked for every
    /// `keyframe_request_interval` for this long, then every [`KEYFRAME_RETRY_SLOW`].
    pub const KEYFRAME_RETRY_FAST: Duration = Duration::from_secs(10);
    /// A negotiated subscription whose publisher sends the wanted layer and that has
    /// forwarded nothing for this long is *starved*: logged at info, counted, and put back
    /// on the keyframe path (a fresh wait with fast keyframe requests).
    pub const STARVED_AFTER: Duration = Duration::from_secs(3);
    /// Keyframe re-requests of a long wait (a publisher that does not answer).
    pub const KEYFRAME_RETRY_SLOW: Duration = Duration::from_secs(3);
    /// A simulcast layer that missed this many frames of its sibling layers...
    pub const LAYER_GONE_FRAMES: u32 = 10;
    /// ...and has not been seen for this long is taken as no longer sent (else after
    /// `policy::LAYER_STALE`).
    pub const LAYER_GONE_AFTER: Duration = Duration::from_millis(700);
    /// A peer that sent no STUN request (ICE consent, RFC 7675; browsers check every
    /// 2.5 to 5 s) for this long gets no more media until it does again. Removal is left
    /// to str0m's ICE timeout (15 s) and to signaling. Holding media back costs the
    /// subscriber a keyframe wait on every video track, so this is well above the
    /// intervals of a loaded browser (6 s gaps were seen with six Chromiums on two cores).
    pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(10);
    /// A peer's previous PeerConnection (replaced by an offer from a new one) is dropped
    /// this long after the replacement at the latest.
    pub const RETIRE_AFTER: Duration = Duration::from_secs(15);
}
