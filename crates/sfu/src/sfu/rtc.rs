//! Each peer's str0m `Rtc`: building it, polling it inside the fault guard (transmits,
//! timers, faults) and handling the events it reports.

use super::*;

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

impl Sfu {
    fn rtc_config(&self) -> RtcConfig {
        Rtc::builder()
            .set_ice_lite(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_vp9(true)
            .enable_h264(true)
            .enable_bwe(Some(Bitrate::bps(self.config.initial_bitrate)))
            .set_stats_interval(Some(self.config.stats_interval))
            .set_send_buffer_video(SEND_BUFFER_VIDEO)
            .set_send_buffer_audio(SEND_BUFFER_AUDIO)
            .set_rtp_mode(self.config.rtp_mode)
    }

    pub(super) fn build_rtc(
        &mut self,
        peer: &str,
        now: Instant,
    ) -> Result<(Rtc, IceCreds), SfuError> {
        let creds = IceCreds::new();
        let config = self.rtc_config().set_local_ice_credentials(creds.clone());
        let candidates = self.candidates.clone();
        let built = catch_unwind(AssertUnwindSafe(move || {
            let mut rtc = config.build(now);
            for c in candidates {
                rtc.add_local_candidate(c);
            }
            rtc
        }));
        match built {
            Ok(rtc) => Ok((rtc, creds)),
            Err(p) => {
                self.counters.faults += 1;
                let reason = format!("str0m panicked creating the peer: {}", panic_message(&*p));
                warn!(%peer, %reason, "SFU fault");
                Err(SfuError::Fault(reason))
            }
        }
    }

    pub(super) fn fault_error(&self, peer: &str) -> SfuError {
        SfuError::Fault(format!("peer {peer} was dropped; see the Closed event"))
    }

    /// Runs `f` on the peer inside `catch_unwind`. A panic drops the peer (fault) and
    /// returns `None`; errors inside `R` are the caller's to judge.
    pub(super) fn guard<R>(
        &mut self,
        key: u64,
        what: &str,
        f: impl FnOnce(&mut Peer) -> R,
    ) -> Option<R> {
        let peer = self.peers.get_mut(&key)?;
        match catch_unwind(AssertUnwindSafe(|| f(peer))) {
            Ok(r) => Some(r),
            Err(p) => {
                let reason = format!("str0m panicked while {what}: {}", panic_message(&*p));
                self.fault(key, reason);
                None
            }
        }
    }

    pub(super) fn fault(&mut self, key: u64, reason: String) {
        if let Some(p) = self.peers.get(&key) {
            self.counters.faults += 1;
            warn!(peer = %p.id, room = %p.room, %reason, "SFU peer dropped after a fault");
        }
        self.close(key, reason);
    }

    pub(super) fn close(&mut self, key: u64, reason: String) {
        if let Some(peer) = self.remove_peer(key) {
            self.push_event(SfuEvent::Closed { peer, reason });
        }
    }

    pub(super) fn push_event(&mut self, e: SfuEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.counters.queue_drops += 1;
            return;
        }
        self.events.push_back(e);
    }

    pub(super) fn set_timer(&mut self, key: u64, at: Instant) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if let Some(old) = p.timer.replace(at) {
            self.timers.remove(&(old, key));
        }
        self.timers.insert((at, key));
    }

    /// Polls the peer's `Rtc` until it returns a timeout (str0m's single-mutation
    /// invariant): transmits go to the output queue, events to the work queue.
    ///
    /// str0m's pacer releases one paced packet per timeout and then asks for a timeout
    /// that is already due: such a timeout is handled here at once, up to
    /// [`DUE_TIMEOUTS_PER_DRAIN`] times, rather than on the next turn of the runtime's
    /// loop (one packet per subscriber per turn capped a subscriber near 1,000 packets/s
    /// and built a backlog in 16-person rooms: docs/benchmarks.md, churn).
    pub(super) fn drain(&mut self, key: u64) {
        let now = self.last_now;
        let Sfu {
            peers,
            transmits,
            work,
            counters,
            ..
        } = self;
        let Some(peer) = peers.get_mut(&key) else {
            return;
        };
        peer.writes = 0;
        let res = catch_unwind(AssertUnwindSafe(|| -> Result<Instant, str0m::RtcError> {
            if peer.inject_fault {
                peer.inject_fault = false;
                panic!("fault injected by Sfu::inject_fault");
            }
            let mut due = 0;
            loop {
                match peer.rtc.poll_output()? {
                    Output::Timeout(t) if t <= now && due < DUE_TIMEOUTS_PER_DRAIN => {
                        due += 1;
                        peer.rtc.handle_input(Input::Timeout(now))?;
                    }
                    Output::Timeout(t) => return Ok(t),
                    Output::Transmit(t) => {
                        if transmits.len() >= MAX_TRANSMITS {
                            counters.queue_drops += 1;
                            continue;
                        }
                        let proto = match t.proto {
                            str0m::net::Protocol::Udp => Protocol::Udp,
                            _ => Protocol::Tcp,
                        };
                        counters.packets_out += 1;
                        counters.bytes_out += t.contents.len() as u64;
                        transmits.push_back(Transmit {
                            proto,
                            source: t.source,
                            destination: t.destination,
                            contents: t.contents.into(),
                        });
                    }
                    Output::Event(e) => {
                        let droppable = matches!(
                            e,
                            Event::MediaData(_) | Event::RtpPacket(_) | Event::ChannelData(_)
                        );
                        if droppable && work.len() >= MAX_WORK {
                            counters.queue_drops += 1;
                            continue;
                        }
                        work.push_back((key, e));
                    }
                }
            }
        }));
        match res {
            Ok(Ok(t)) => self.set_timer(key, t),
            Ok(Err(e)) => self.fault(key, format!("str0m error: {e}")),
            Err(p) => self.fault(key, format!("str0m panicked: {}", panic_message(&*p))),
        }
    }

    /// Polls the peer's `Rtc` later, once for everything written to it until then
    /// ([`flush_drains`](Self::flush_drains)): a subscriber that gets frames of several
    /// publishers (or several packets of one) in one batch of datagrams is packetized
    /// and paced in one pass.
    ///
    /// Every [`WRITES_PER_DRAIN`]th write drains the peer at once: str0m holds what was
    /// written until it is polled, in a queue per stream that keeps the room of its
    /// longest burst (a keyframe arrives as dozens of packets in one batch).
    pub(super) fn drain_later(&mut self, key: u64) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        p.writes += 1;
        if p.writes >= WRITES_PER_DRAIN {
            self.drain(key);
            return;
        }
        if !p.undrained {
            p.undrained = true;
            self.undrained.push(key);
        }
    }

    /// Polls every peer written to since the last flush, and handles what that polling
    /// reports (which may write to more peers).
    pub(super) fn flush_drains(&mut self) {
        while !self.undrained.is_empty() {
            for key in std::mem::take(&mut self.undrained) {
                let Some(p) = self.peers.get_mut(&key) else {
                    continue;
                };
                p.undrained = false;
                self.drain(key);
            }
            let now = self.last_now;
            self.run_work(now);
        }
    }

    pub(super) fn run_work(&mut self, now: Instant) {
        while let Some((key, e)) = self.work.pop_front() {
            if !self.peers.contains_key(&key) {
                continue;
            }
            self.handle_event(key, e, now);
        }
    }

    fn handle_event(&mut self, key: u64, e: Event, now: Instant) {
        match e {
            Event::Connected => {
                if let Some(p) = self.peers.get_mut(&key) {
                    if !p.connected {
                        p.connected = true;
                        let peer = p.id.clone();
                        if p.retired_of.is_none() {
                            self.push_event(SfuEvent::Connected { peer });
                        }
                        // Subscriptions start now: ask for keyframes.
                        self.update_layers(key, now);
                    }
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.close(
                    key,
                    "ICE disconnected: no consent checks from the peer".into(),
                );
            }
            Event::Closed => self.close(key, "the peer closed the connection".into()),
            Event::MediaAdded(m) => {
                let rids: Vec<Rid> = m
                    .simulcast
                    .map(|s| s.recv.iter().map(|l| l.rid).collect())
                    .unwrap_or_default();
                self.on_media_added(key, m.mid, m.kind, m.direction, &rids, now);
            }
            Event::MediaChanged(m) => self.on_media_changed(key, m.mid, m.direction, now),
            Event::MediaData(d) => self.on_media(key, d, now),
            Event::RtpPacket(pkt) => self.on_rtp(key, pkt, now),
            Event::KeyframeRequest(r) => self.on_keyframe_request(key, r, now),
            Event::ChannelOpen(id, label) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    if p.channels.len() < MAX_CHANNELS_PER_PEER {
                        p.channels.push((id, label));
                    }
                }
            }
            Event::ChannelClose(id) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.channels.retain(|(c, _)| *c != id);
                }
            }
            Event::ChannelData(d) => self.on_channel_data(key, d),
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. })
            | Event::EgressBitrateEstimate(BweKind::Remb { estimate, .. }) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.bwe = Some(estimate.as_u64());
                }
            }
            Event::PeerStats(s) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    if let Some(rtt) = s.rtt {
                        p.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
                    }
                }
            }
            Event::MediaEgressStats(s) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    if let Some(rtt) = s.rtt {
                        p.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
                    }
                    let entry = p
                        .nacks
                        .iter_mut()
                        .find(|(m, r, _)| *m == s.mid && *r == s.rid);
                    let before = match entry {
                        Some(e) => std::mem::replace(&mut e.2, s.nacks),
                        None => {
                            if p.nacks.len() < MAX_TRACKS_PER_PEER * 64 {
                                p.nacks.push((s.mid, s.rid, s.nacks));
                            }
                            0
                        }
                    };
                    self.counters.nacks_received += s.nacks.saturating_sub(before);
                }
            }
            _ => {}
        }
    }
}
