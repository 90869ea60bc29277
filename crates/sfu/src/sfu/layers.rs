//! Which simulcast layer each subscriber gets (tiles, bandwidth, policy), keyframe
//! requests to publishers, and the watch that notices a starved subscription.

use super::*;

impl Sfu {
    /// The tiles this subscriber shows. Publishers not listed (or with a zero size) are
    /// paused for it. Before the first call every video track is sent at `m`.
    pub fn set_view(&mut self, peer: &str, tiles: &[Tile], now: Instant) {
        self.advance(now);
        let Ok(key) = self.key(peer) else {
            return;
        };
        let limit = self.config.max_peers_per_room.max(1) * MAX_TRACKS_PER_PEER;
        if let Some(p) = self.peers.get_mut(&key) {
            p.view = Some(tiles.iter().take(limit).cloned().collect());
        }
        self.update_layers(key, now);
        self.run_work(now);
    }

    /// Recomputes the layer targets of every video track a subscriber receives, and asks
    /// for keyframes where a switch is due.
    pub(super) fn update_layers(&mut self, sub: u64, now: Instant) {
        let Some(p) = self.peers.get(&sub) else {
            return;
        };
        if p.role == Role::WhipPublisher || p.outs.is_empty() {
            return;
        }
        let estimate = p.bwe.unwrap_or(self.config.initial_bitrate);
        let mut fixed = 0u64;
        let mut demands: Vec<(usize, Demand)> = Vec::new();
        let mut singles: Vec<(usize, bool)> = Vec::new();
        for (i, o) in p.outs.iter().enumerate() {
            if o.gone || matches!(o.state, OutState::ToStop(_) | OutState::NegotiatingStop(_)) {
                continue;
            }
            let Some(t) = self.tracks.get(&o.track) else {
                continue;
            };
            if t.kind == MediaKind::Audio {
                fixed += match t.rate(now) {
                    0 => policy::NOMINAL_AUDIO_BITRATE,
                    r => r,
                };
                continue;
            }
            let (wanted, area) = match &p.view {
                None => (Layer::Medium, 640 * 360),
                Some(tiles) => match tiles.iter().find(|tile| tile.peer == t.owner_id) {
                    Some(tile) => (
                        policy::layer_for_tile(tile.width, tile.height),
                        u64::from(tile.width) * u64::from(tile.height),
                    ),
                    None => (Layer::Paused, 0),
                },
            };
            if !t.simulcast() {
                let visible = wanted != Layer::Paused;
                if visible {
                    fixed += match t.rate(now) {
                        0 => policy::NOMINAL_BITRATE[1],
                        r => r,
                    };
                }
                singles.push((i, visible));
                continue;
            }
            let any_active = t.layers.iter().any(|l| l.active(now));
            let mut available = [None; 3];
            for l in &t.layers {
                let Some(idx) = policy::layer_index(l.label) else {
                    continue;
                };
                if !any_active || l.active(now) {
                    available[idx] = Some(l.meter.rate().unwrap_or(policy::NOMINAL_BITRATE[idx]));
                }
            }
            demands.push((
                i,
                Demand {
                    area,
                    wanted,
                    available,
                },
            ));
        }
        let list: Vec<Demand> = demands.iter().map(|(_, d)| d.clone()).collect();
        let choices = policy::allocate(estimate, fixed, &list);
        // What this subscriber would receive at its preferred quality: str0m probes
        // toward it. Without a desired rate the estimate (and the pacer, which sends at
        // 1.1 x the estimate) climbs only as fast as the media already sent proves the
        // path, so a subscriber of many streams queued them for seconds after joining.
        // Never below the initial estimate: with a lower desired rate, a subscriber of
        // small tiles whose tile grew waited for the estimate to climb again (no upgrade
        // within 2 s in tests/media.rs, simulcast).
        let desired = (fixed + list.iter().map(policy::preferred_rate).sum::<u64>())
            .max(self.config.initial_bitrate);
        let Some(p) = self.peers.get_mut(&sub) else {
            return;
        };
        if p.desired_bitrate != desired {
            p.desired_bitrate = desired;
            let _ = catch_unwind(AssertUnwindSafe(|| {
                p.rtc
                    .bwe()
                    .set_bitrate(Bitrate::ZERO, Bitrate::bps(desired));
            }));
        }
        for ((i, _), choice) in demands.iter().zip(choices) {
            let o = &mut p.outs[*i];
            let Some(t) = self.tracks.get(&o.track) else {
                continue;
            };
            let layer = policy::next_target(o.sel.target_layer, choice, &mut o.sel.limited_at, now);
            o.sel.target_layer = layer;
            o.sel.target = t.index_of(layer);
            if o.sel.target.is_none() {
                o.sel.current = None;
            }
        }
        for (i, visible) in singles {
            let o = &mut p.outs[i];
            o.sel.target = visible.then_some(0);
            o.sel.target_layer = if visible {
                Layer::Single
            } else {
                Layer::Paused
            };
            if !visible {
                o.sel.current = None;
            }
        }
        // Every video subscription that waits for a keyframe (nothing forwarded yet, a
        // layer switch pending, a gap, a PLI) asks the publisher's target layer again, at
        // most every `keyframe_request_interval` for KEYFRAME_RETRY_FAST, then every
        // KEYFRAME_RETRY_SLOW: a lost PLI or a request dropped by the throttle is retried.
        let ready = p.connected && !p.consent_lost(now);
        let mut requests: Vec<(usize, u64, usize, Duration)> = Vec::new();
        for (i, o) in p.outs.iter_mut().enumerate() {
            if o.kind != MediaKind::Video || o.gone || !matches!(o.state, OutState::Open(_)) {
                continue;
            }
            let Some(target) = o.sel.target else {
                o.sel.kf_wait = None;
                continue;
            };
            if !ready {
                continue;
            }
            if o.sel.current != Some(target) {
                o.sel.kf_wait.get_or_insert(now);
            }
            let Some(since) = o.sel.kf_wait else {
                continue;
            };
            // The fast window counts from the start of the wait or from the last packet
            // forwarded, whichever is later: a wait that begins (a gap, a layer switch)
            // while frames were flowing is a new wait, not the tail of an old one.
            let since = o.watch.last_media.map_or(since, |t| t.max(since));
            let every = if now.saturating_duration_since(since) < KEYFRAME_RETRY_FAST {
                self.config.keyframe_request_interval
            } else {
                KEYFRAME_RETRY_SLOW
            };
            requests.push((i, o.track, target, every));
        }
        for (i, tid, li, every) in requests {
            if self.request_keyframe_every(tid, li, now, every) {
                if let Some(o) = self.peers.get_mut(&sub).and_then(|p| p.outs.get_mut(i)) {
                    o.watch.keyframe_requests += 1;
                }
            }
        }
    }

    /// Notices subscriptions that should carry media and do not ([`STARVED_AFTER`]):
    /// logs each episode once at info with what the SFU knows of the cause, and puts a
    /// starved video subscription back on the keyframe path. Logs the recovery too.
    pub(super) fn watch_subscriptions(&mut self, sub: u64, now: Instant) {
        let Some(p) = self.peers.get_mut(&sub) else {
            return;
        };
        if !p.connected || p.lingering {
            return;
        }
        let consent_lost = p.consent_lost(now);
        for o in &mut p.outs {
            let OutState::Open(mid) = o.state else {
                continue;
            };
            if o.gone {
                continue;
            }
            let sending = target_sending(self.tracks.get(&o.track), &o.sel, now);
            let since = match (o.watch.last_media, o.watch.opened) {
                (Some(a), Some(b)) => a.max(b),
                (a, b) => a.or(b).unwrap_or(now),
            };
            let starved =
                sending && !consent_lost && now.saturating_duration_since(since) >= STARVED_AFTER;
            match (starved, o.watch.starved_since) {
                (true, None) => {
                    o.watch.starved_since = Some(now);
                    o.watch.starved += 1;
                    let cause = if o.watch.refused > 0 {
                        "packets were due but the subscriber's m-line could not take them (no writer or no matching payload type)"
                    } else if o.sel.kf_wait.is_some() {
                        "waiting for a keyframe from the publisher"
                    } else {
                        "nothing forwarded"
                    };
                    info!(
                        subscriber = %p.id,
                        publisher = %o.publisher,
                        room = %p.room,
                        kind = ?o.kind,
                        %mid,
                        idle_ms = now.saturating_duration_since(since).as_millis() as u64,
                        keyframe_requests = o.watch.keyframe_requests,
                        refused = o.watch.refused,
                        cause,
                        "SFU subscription starved; asking for a keyframe"
                    );
                    if o.kind == MediaKind::Video {
                        o.sel.current = None;
                        o.sel.kf_wait = Some(now);
                    }
                }
                (false, Some(at)) if !sending || o.watch.last_media.is_some_and(|t| t > at) => {
                    o.watch.starved_since = None;
                    if o.watch.last_media.is_some_and(|t| t > at) {
                        info!(
                            subscriber = %p.id,
                            publisher = %o.publisher,
                            kind = ?o.kind,
                            after_ms = now.saturating_duration_since(at).as_millis() as u64,
                            "SFU subscription carries media again"
                        );
                    }
                }
                _ => {}
            }
        }
    }

    /// A subscriber's PLI/FIR: asked of the publisher on the layer being forwarded, or on
    /// the target layer while a switch is pending (the current one may be gone), and asked
    /// again until a keyframe reaches the subscriber.
    pub(super) fn on_keyframe_request(&mut self, sub: u64, r: KeyframeRequest, now: Instant) {
        let Some(p) = self.peers.get_mut(&sub) else {
            return;
        };
        let Some(o) = p
            .outs
            .iter_mut()
            .find(|o| o.state == OutState::Open(r.mid) && !o.gone)
        else {
            return;
        };
        if o.kind != MediaKind::Video {
            return;
        }
        let Some(li) = o.sel.target else {
            return;
        };
        o.sel.kf_wait.get_or_insert(now);
        let tid = o.track;
        if self.request_keyframe(tid, li, now) {
            if let Some(o) = self
                .peers
                .get_mut(&sub)
                .and_then(|p| p.outs.iter_mut().find(|o| o.track == tid))
            {
                o.watch.keyframe_requests += 1;
            }
        }
    }

    /// Asks the publisher for a keyframe on one layer, at most once per
    /// `keyframe_request_interval`.
    pub(super) fn request_keyframe(&mut self, tid: u64, li: usize, now: Instant) -> bool {
        let interval = self.config.keyframe_request_interval;
        self.request_keyframe_every(tid, li, now, interval)
    }

    /// Asks the publisher for a keyframe on one layer unless one was asked for within
    /// `interval`.
    /// Returns whether a request was made now.
    pub(super) fn request_keyframe_every(
        &mut self,
        tid: u64,
        li: usize,
        now: Instant,
        interval: Duration,
    ) -> bool {
        let Some(track) = self.tracks.get_mut(&tid) else {
            return false;
        };
        if track.kind != MediaKind::Video {
            return false;
        }
        let Some(layer) = track.layers.get_mut(li) else {
            return false;
        };
        if layer
            .last_keyframe_request
            .is_some_and(|t| now.saturating_duration_since(t) < interval)
        {
            return false;
        }
        layer.last_keyframe_request = Some(now);
        let (owner, mid, rid) = (track.owner, track.mid, layer.rid);
        let rtp_mode = self.config.rtp_mode;
        let sent = self.guard(owner, "requesting a keyframe", |p| {
            if rtp_mode {
                // No frame-level writer in RTP mode: the receive stream asks (PLI).
                let mut api = p.rtc.direct_api();
                let Some(rx) = api.stream_rx_by_mid(mid, rid) else {
                    return false;
                };
                rx.request_keyframe(KeyframeRequestKind::Pli);
                return true;
            }
            let Some(mut w) = p.rtc.writer(mid) else {
                return false;
            };
            let kind = if w.is_request_keyframe_possible(KeyframeRequestKind::Pli) {
                KeyframeRequestKind::Pli
            } else if w.is_request_keyframe_possible(KeyframeRequestKind::Fir) {
                KeyframeRequestKind::Fir
            } else {
                return false;
            };
            w.request_keyframe(rid, kind).is_ok()
        });
        if sent == Some(true) {
            self.counters.keyframe_requests += 1;
        }
        self.drain(owner);
        true
    }
}

/// Whether the publisher sends the layer this subscription should get now.
pub(super) fn target_sending(track: Option<&TrackIn>, sel: &Selection, now: Instant) -> bool {
    match (track, sel.target) {
        (Some(t), Some(li)) => t.layers.get(li).is_some_and(|l| l.active(now)),
        _ => false,
    }
}
