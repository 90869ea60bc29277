//! SDP negotiation with each peer: the peer's offers and answers, the SFU's own offers
//! (one at a time, never withdrawn), the m-lines a subscriber gets for each track and
//! their reuse, ICE restarts and the move of a peer to a new `Rtc`.

use super::*;

impl Sfu {
    /// The last [`SfuEvent::Offer`] for `peer` never left this process (the runtime's
    /// queue to signaling was full): it is forgotten and made again after a short wait.
    /// Only for an offer nobody can have seen; an offer that was sent stays outstanding
    /// until it is answered (see [`SLOW_ANSWER`]).
    pub fn offer_undelivered(&mut self, peer: &str, now: Instant) {
        self.advance(now);
        let Ok(key) = self.key(peer) else {
            return;
        };
        if let Some(p) = self.peers.get_mut(&key) {
            if p.pending.take().is_some() {
                revert_outs(p);
                p.negotiation.undelivered += 1;
                p.offer_not_before = Some(now + OFFER_RETRY_BACKOFF);
                info!(%peer, room = %p.room, "SFU offer could not be sent; offering again shortly");
            }
        }
    }

    /// The peer's SDP offer; returns the SDP answer. On glare (the SFU has an offer
    /// outstanding to this peer) the SFU is polite: it drops its offer, answers, and offers
    /// again ([`SfuEvent::Offer`], to be delivered after the answer).
    pub fn accept_offer(
        &mut self,
        peer: &str,
        sdp: &str,
        now: Instant,
    ) -> Result<String, SfuError> {
        self.advance(now);
        let key = self.key(peer)?;
        if sdp.len() > MAX_SDP_LEN {
            return Err(SfuError::BadSdp(format!(
                "offer larger than {MAX_SDP_LEN} bytes"
            )));
        }
        let role = self
            .peers
            .get(&key)
            .map(|p| p.role)
            .ok_or(SfuError::UnknownPeer)?;
        let text = if role.can_publish() {
            sdp.to_string()
        } else {
            sdp::receive_only(sdp)
        };
        let offer =
            SdpOffer::from_sdp_string(&text).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let fingerprint = sdp_fingerprint(sdp);
        let known = self.peers.get(&key).and_then(|p| p.fingerprint.clone());
        if let (Some(old), Some(new)) = (&known, &fingerprint) {
            if old != new {
                // Another DTLS certificate: a new PeerConnection from the same peer (e.g.
                // the browser switched to relay-only), not a renegotiation.
                self.replace_rtc(key, now)?;
            }
        }
        if let Some(p) = self.peers.get_mut(&key) {
            p.negotiation.peer_offers += 1;
            if p.pending.take().is_some() {
                debug!(%peer, "SFU glare: dropping our offer to answer the peer's");
                revert_outs(p);
            }
        }
        let res = self.guard(key, "accepting an offer", |p| {
            p.rtc.sdp_api().accept_offer(offer)
        });
        let answer = match res {
            None => return Err(self.fault_error(peer)),
            Some(Err(e)) => {
                self.drain(key);
                let alive = self.peers.get(&key).is_some_and(|p| p.rtc.is_alive());
                if !alive {
                    self.close(key, format!("offer refused: {e}"));
                }
                self.run_work(now);
                return Err(SfuError::BadSdp(e.to_string()));
            }
            Some(Ok(a)) => a,
        };
        if let Some(p) = self.peers.get_mut(&key) {
            p.negotiated = true;
            if fingerprint.is_some() {
                p.fingerprint = fingerprint;
            }
        }
        let msids = self
            .peers
            .get(&key)
            .map(|p| p.msids.clone())
            .unwrap_or_default();
        let answer = sdp::rewrite_msids(&answer.to_sdp_string(), &msids);
        self.update_credentials(key, &answer);
        self.drain(key);
        self.register_negotiated(key, &answer, now);
        self.run_work(now);
        self.maybe_negotiate(key, now);
        self.run_work(now);
        Ok(answer)
    }

    /// The peer's offer comes from a new PeerConnection: the peer gets a new `Rtc` under
    /// its key (same id, room, role, view). The old one stays as a *retired leg* under a
    /// new key: it keeps forwarding both ways, so nothing stops while the new connection
    /// comes up, and goes when its ICE consent ends, it closes, or after [`RETIRE_AFTER`].
    /// Its published tracks are taken over by the new connection's m-lines of the same
    /// kind at their first media ([`Sfu::take_over`]): subscribers keep their m-lines and
    /// switch at the new connection's keyframe. The new connection is offered every
    /// track of the room as after a join.
    pub(super) fn replace_rtc(&mut self, key: u64, now: Instant) -> Result<(), SfuError> {
        let Some(id) = self.peers.get(&key).map(|p| p.id.clone()) else {
            return Err(SfuError::UnknownPeer);
        };
        if let Some(prev) = self.peers.get(&key).and_then(|p| p.retired) {
            // A second replacement before the first retired leg went.
            self.remove_peer(prev);
        }
        let (rtc, creds) = self.build_rtc(&id, now)?;
        let Some(mut old) = self.peers.remove(&key) else {
            return Err(SfuError::UnknownPeer);
        };
        let leg = self.next_key;
        self.next_key += 1;
        debug!(peer = %id, "SFU: offer from a new PeerConnection; the old one retires");
        // The old connection keeps its ICE credentials, 5-tuples, timer and queued work.
        self.demux.rekey(&old.ufrag, key, leg);
        self.demux.insert_ufrag(&creds.ufrag, key);
        if let Some(t) = old.timer {
            self.timers.remove(&(t, key));
            self.timers.insert((t, leg));
        }
        for (k, _) in self.work.iter_mut() {
            if *k == key {
                *k = leg;
            }
        }
        for tid in &old.published {
            if let Some(t) = self.tracks.get_mut(tid) {
                t.owner = leg;
            }
        }
        let mut outs = Vec::new();
        if matches!(old.role, Role::Participant { .. }) {
            if let Some(r) = self.rooms.get(&old.room) {
                for tid in &r.tracks {
                    if let Some(t) = self.tracks.get(tid).filter(|t| t.owner != leg) {
                        outs.push(new_out(*tid, t));
                    }
                }
            }
        }
        let mut p = new_peer(
            &id,
            &old.room,
            old.role,
            rtc,
            creds,
            outs,
            now,
            &self.config,
        );
        p.view = old.view.clone();
        p.bwe = old.bwe;
        p.retired = Some(leg);
        p.inherit = old.published.clone();
        if let Some(pending) = old.pending.take() {
            drop(pending);
            revert_outs(&mut old);
        }
        old.retired_of = Some(key);
        old.retire_at = Some(now + RETIRE_AFTER);
        old.retired = None;
        old.claims.clear();
        old.inherit.clear();
        if let Some(r) = self.rooms.get_mut(&old.room) {
            r.peers.push(leg);
        }
        self.peers.insert(leg, old);
        self.peers.insert(key, Box::new(p));
        self.drain(key);
        Ok(())
    }

    /// The first media on a new PeerConnection's m-line that claimed an inherited track:
    /// the track now comes from here. Subscribers wait for a keyframe of it and re-base
    /// the RTP time (the new connection's time base differs).
    pub(super) fn take_over(&mut self, owner: u64, claim: usize, now: Instant) -> Option<u64> {
        let p = self.peers.get_mut(&owner)?;
        let (mid, tid, rids) = p.claims.remove(claim);
        p.inherit.retain(|t| *t != tid);
        let leg = p.retired;
        if !self.tracks.contains_key(&tid) {
            // The old track went meanwhile: this m-line publishes a track of its own.
            let kind = p.rtc.media(mid).map(|m| m.kind())?;
            self.add_track(owner, mid, kind, &rids, now);
            let p = self.peers.get(&owner)?;
            return p
                .published
                .iter()
                .copied()
                .find(|t| self.tracks.get(t).is_some_and(|t| t.mid == mid));
        }
        let track = self.tracks.get_mut(&tid)?;
        let from = track.owner;
        track.owner = owner;
        track.mid = mid;
        track.layers = build_layers(track.kind, &rids);
        let kind = track.kind;
        let room = track_room(&self.peers, owner)?;
        if let Some(p) = self.peers.get_mut(&from) {
            p.published.retain(|t| *t != tid);
        }
        if let Some(p) = self.peers.get_mut(&owner) {
            p.published.push(tid);
        }
        debug!(%mid, ?kind, ?leg, "SFU: a new PeerConnection took a track over");
        let subs: Vec<u64> = self
            .rooms
            .get(&room)
            .map(|r| r.peers.clone())
            .unwrap_or_default();
        for sub in subs {
            let Some(sp) = self.peers.get_mut(&sub) else {
                continue;
            };
            for o in sp.outs.iter_mut().filter(|o| o.track == tid) {
                o.sel.rebase_pending = true;
                if kind == MediaKind::Video {
                    o.sel.current = None;
                    o.sel.kf_wait = None;
                }
            }
            self.update_layers(sub, now);
        }
        Some(tid)
    }

    /// An ICE restart in the peer's offer gives us new local credentials: keep the demux
    /// table on the ufrag the answer advertises.
    pub(super) fn update_credentials(&mut self, key: u64, answer: &str) {
        let attr = |name: &str| {
            answer
                .lines()
                .find_map(|l| l.trim_end().strip_prefix(name))
                .map(str::to_string)
        };
        let (Some(ufrag), Some(pass)) = (attr("a=ice-ufrag:"), attr("a=ice-pwd:")) else {
            return;
        };
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if p.ufrag != ufrag {
            debug!(peer = %p.id, "SFU: new local ICE credentials (ICE restart)");
            let old = std::mem::replace(&mut p.ufrag, ufrag.clone());
            p.pass = pass;
            self.demux.replace_ufrag(&old, &ufrag, key);
        }
    }

    /// str0m announces negotiated media (`MediaAdded`) only once the peer is connected;
    /// the SFU registers it as soon as the answer exists, so that a WHIP publisher counts
    /// as publishing and a WHEP viewer is bound when their HTTP requests return. The later
    /// `MediaAdded` events find the tracks already there.
    pub(super) fn register_negotiated(&mut self, key: u64, answer: &str, now: Instant) {
        let mids: Vec<Mid> = answer
            .lines()
            .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
            .map(Mid::from)
            .take(MAX_TRACKS_PER_PEER * 4)
            .collect();
        for mid in mids {
            let info = self.peers.get(&key).and_then(|p| {
                let m = p.rtc.media(mid)?;
                let rids = match m.rids_rx() {
                    str0m::media::Rids::Specific(v) => v.clone(),
                    _ => Vec::new(),
                };
                Some((m.kind(), m.direction(), rids))
            });
            if let Some((kind, direction, rids)) = info {
                self.on_media_added(key, mid, kind, direction, &rids, now);
            }
        }
    }

    /// The peer's answer to the last [`SfuEvent::Offer`]. An answer with nothing pending is
    /// [`SfuError::NoPendingOffer`] (the caller may ignore it).
    pub fn accept_answer(&mut self, peer: &str, sdp: &str, now: Instant) -> Result<(), SfuError> {
        self.advance(now);
        let key = self.key(peer)?;
        if sdp.len() > MAX_SDP_LEN {
            return Err(SfuError::BadSdp(format!(
                "answer larger than {MAX_SDP_LEN} bytes"
            )));
        }
        let answer =
            SdpAnswer::from_sdp_string(sdp).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let (pending, offered) = match self.peers.get_mut(&key).and_then(|p| p.pending.take()) {
            Some(pending) => pending,
            None => return Err(SfuError::NoPendingOffer),
        };
        let res = self.guard(key, "accepting an answer", |p| {
            p.rtc.sdp_api().accept_answer(pending, answer)
        });
        match res {
            None => return Err(self.fault_error(peer)),
            Some(Err(e)) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    revert_outs(p);
                    p.offer_not_before = Some(now + OFFER_RETRY_BACKOFF);
                    p.negotiation.refused += 1;
                    info!(peer = %p.id, room = %p.room, error = %e, "SFU refused the answer to its offer");
                }
                self.drain(key);
                self.run_work(now);
                return Err(SfuError::BadSdp(e.to_string()));
            }
            Some(Ok(())) => {}
        }
        if let Some(p) = self.peers.get_mut(&key) {
            if let Some(f) = sdp_fingerprint(sdp) {
                p.fingerprint = Some(f);
            }
            p.negotiation.answers += 1;
            let waited = now.saturating_duration_since(offered);
            if p.slow_noted {
                info!(peer = %p.id, room = %p.room, waited_ms = waited.as_millis() as u64, "SFU offer answered late");
            }
            settle_outs(p, now);
        }
        self.drain(key);
        self.update_layers(key, now);
        self.run_work(now);
        self.maybe_negotiate(key, now);
        self.run_work(now);
        Ok(())
    }

    /// A trickled remote candidate: the `candidate` string of an RTCIceCandidate
    /// (`candidate:...`, with or without `a=`). Empty = end of candidates.
    pub fn add_remote_candidate(&mut self, peer: &str, candidate: &str) -> Result<(), SfuError> {
        let key = self.key(peer)?;
        if candidate.len() > MAX_CANDIDATE_LEN {
            return Err(SfuError::BadCandidate(format!(
                "longer than {MAX_CANDIDATE_LEN} bytes"
            )));
        }
        let Some(c) = sdp::normalize_candidate(candidate) else {
            return Ok(());
        };
        let c = Candidate::from_sdp_string(c).map_err(|e| SfuError::BadCandidate(e.to_string()))?;
        if self
            .guard(key, "adding a remote candidate", |p| {
                p.rtc.add_remote_candidate(c)
            })
            .is_none()
        {
            return Err(self.fault_error(peer));
        }
        self.drain(key);
        let now = self.last_now;
        self.run_work(now);
        Ok(())
    }

    pub(super) fn on_media_added(
        &mut self,
        key: u64,
        mid: Mid,
        kind: MediaKind,
        direction: Direction,
        rids: &[Rid],
        now: Instant,
    ) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        match p.role {
            Role::WhepViewer => {
                let known = p.unbound.iter().any(|(m, _)| *m == mid)
                    || p.outs.iter().any(|o| o.state == OutState::Open(mid));
                if direction.is_sending() && !known && p.unbound.len() < MAX_TRACKS_PER_PEER {
                    p.unbound.push((mid, kind));
                    self.bind_whep(key, now);
                }
            }
            role => {
                let receiving = matches!(direction, Direction::RecvOnly | Direction::SendRecv);
                if receiving && role.can_publish() {
                    self.add_track(key, mid, kind, rids, now);
                }
            }
        }
    }

    pub(super) fn on_media_changed(
        &mut self,
        key: u64,
        mid: Mid,
        direction: Direction,
        now: Instant,
    ) {
        let Some(p) = self.peers.get(&key) else {
            return;
        };
        let existing = p
            .published
            .iter()
            .copied()
            .find(|t| self.tracks.get(t).is_some_and(|t| t.mid == mid));
        let receiving = matches!(direction, Direction::RecvOnly | Direction::SendRecv);
        match existing {
            Some(t) if !receiving => self.remove_track(t, now),
            None if receiving && p.role.can_publish() => {
                let info = p.rtc.media(mid).map(|m| m.kind());
                if let Some(kind) = info {
                    self.add_track(key, mid, kind, &[], now);
                }
            }
            _ => {}
        }
    }

    pub(super) fn add_track(
        &mut self,
        owner: u64,
        mid: Mid,
        kind: MediaKind,
        rids: &[Rid],
        now: Instant,
    ) {
        let Some(p) = self.peers.get(&owner) else {
            return;
        };
        if p.published.len() >= MAX_TRACKS_PER_PEER
            || p.published
                .iter()
                .any(|t| self.tracks.get(t).is_some_and(|t| t.mid == mid))
            || p.claims.iter().any(|(m, _, _)| *m == mid)
        {
            return;
        }
        // A new PeerConnection's m-line continues a track of the old one of the same kind.
        let inherited = p.inherit.iter().copied().find(|t| {
            self.tracks.get(t).is_some_and(|t| t.kind == kind)
                && !p.claims.iter().any(|(_, c, _)| c == t)
        });
        if let Some(tid) = inherited {
            if let Some(p) = self.peers.get_mut(&owner) {
                p.claims.push((mid, tid, rids.to_vec()));
            }
            return;
        }
        let layers = build_layers(kind, rids);
        let tid = self.next_key;
        self.next_key += 1;
        let track = TrackIn {
            owner,
            owner_id: p.id.clone(),
            mid,
            kind,
            layers,
        };
        debug!(peer = %p.id, %mid, ?kind, simulcast = track.simulcast(), "SFU track added");
        let room = p.room.clone();
        let out = new_out(tid, &track);
        self.tracks.insert(tid, track);
        if let Some(p) = self.peers.get_mut(&owner) {
            p.published.push(tid);
        }
        let subscribers: Vec<u64> = match self.rooms.get_mut(&room) {
            Some(r) => {
                r.tracks.push(tid);
                r.peers.iter().copied().filter(|k| *k != owner).collect()
            }
            None => Vec::new(),
        };
        for sub in subscribers {
            // A retired PeerConnection is not renegotiated: it gets no new tracks.
            let role = self
                .peers
                .get(&sub)
                .filter(|p| p.retired_of.is_none())
                .map(|p| p.role);
            match role {
                Some(Role::Participant { .. }) => {
                    if let Some(p) = self.peers.get_mut(&sub) {
                        p.outs.push(TrackOut {
                            sel: out.sel.clone(),
                            publisher: out.publisher.clone(),
                            watch: OutWatch::default(),
                            slot: None,
                            rtx_age: None,
                            ..out
                        });
                    }
                    self.update_layers(sub, now);
                    self.maybe_negotiate(sub, now);
                }
                Some(Role::WhepViewer) => self.bind_whep(sub, now),
                _ => {}
            }
        }
    }

    pub(super) fn remove_track(&mut self, tid: u64, now: Instant) {
        let Some(owner) = self.tracks.get(&tid).map(|t| t.owner) else {
            return;
        };
        let Some(p) = self.peers.get_mut(&owner) else {
            return;
        };
        p.published.retain(|t| *t != tid);
        let room = p.room.clone();
        let subscribers: Vec<u64> = match self.rooms.get_mut(&room) {
            Some(r) => {
                r.tracks.retain(|t| *t != tid);
                r.peers.iter().copied().filter(|k| *k != owner).collect()
            }
            None => Vec::new(),
        };
        self.detach_tracks(&[tid], &subscribers, now);
    }

    /// Binds a WHEP viewer's unbound m-lines to the room publisher's tracks of the same kind.
    pub(super) fn bind_whep(&mut self, viewer: u64, now: Instant) {
        let Some(room) = self.peers.get(&viewer).map(|p| p.room.clone()) else {
            return;
        };
        let Some(publisher) = self.room_publisher_key(&room) else {
            return;
        };
        let Some(tracks) = self.peers.get(&publisher).map(|p| p.published.clone()) else {
            return;
        };
        let Some(p) = self.peers.get_mut(&viewer) else {
            return;
        };
        let mut bound = false;
        for tid in tracks {
            let Some(t) = self.tracks.get(&tid) else {
                continue;
            };
            if p.outs.iter().any(|o| o.track == tid) {
                continue;
            }
            if let Some(i) = p.unbound.iter().position(|(_, k)| *k == t.kind) {
                let (mid, _) = p.unbound.remove(i);
                let mut out = new_out(tid, t);
                out.state = OutState::Open(mid);
                p.outs.push(out);
                bound = true;
            }
        }
        if bound {
            self.update_layers(viewer, now);
        }
    }

    /// Creates the next SFU offer for a participant when its forwarded tracks changed and
    /// no offer is outstanding.
    pub(super) fn maybe_negotiate(&mut self, key: u64, now: Instant) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if !matches!(p.role, Role::Participant { .. })
            || !p.negotiated
            || p.pending.is_some()
            || p.retired_of.is_some()
            || p.lingering
        {
            return;
        }
        if p.offer_not_before.is_some_and(|t| now < t) {
            return;
        }
        p.outs.retain(|o| !(o.gone && o.state == OutState::ToOpen));
        let needed = p.outs.iter().any(|o| {
            matches!(o.state, OutState::ToOpen | OutState::ToStop(_))
                || (o.gone && matches!(o.state, OutState::Open(_)))
        });
        if !needed {
            return;
        }
        let res = self.guard(key, "creating an offer", |p| {
            let mut api = p.rtc.sdp_api();
            for o in &mut p.outs {
                match o.state {
                    OutState::ToOpen => {
                        let label = format!("{}-{}", o.kind, o.track);
                        let mid = match p.free.iter().position(|s| s.kind == o.kind) {
                            Some(i) => {
                                // A free m-line of this kind: back to sendonly, with this
                                // publisher's msid; its RTP time continues.
                                let slot = p.free.remove(i);
                                api.set_direction(slot.mid, Direction::SendOnly);
                                o.sel.last_out = slot.last_out;
                                o.sel.rewriter = slot.rewriter.clone();
                                o.sel.rewriter.restart_source();
                                o.sel.rebase_pending = true;
                                let mid = slot.mid;
                                p.msids.retain(|(m, _, _)| *m != mid);
                                p.msids.push((mid, o.publisher.clone(), label));
                                o.slot = Some(slot);
                                mid
                            }
                            None => api.add_media(
                                o.kind,
                                Direction::SendOnly,
                                Some(o.publisher.clone()),
                                Some(label),
                                None,
                            ),
                        };
                        o.state = OutState::Negotiating(mid);
                    }
                    OutState::Open(m) | OutState::ToStop(m) if o.gone => {
                        api.set_direction(m, Direction::Inactive);
                        o.state = OutState::NegotiatingStop(m);
                    }
                    _ => {}
                }
            }
            let applied = api.apply();
            match applied {
                Some((offer, pending)) => {
                    p.pending = Some((pending, now));
                    p.slow_noted = false;
                    p.negotiation.offers += 1;
                    let sdp = sdp::rewrite_msids(&offer.to_sdp_string(), &p.msids);
                    Some((p.id.clone(), sdp))
                }
                None => {
                    // Nothing needed a negotiation after all.
                    settle_outs(p, now);
                    None
                }
            }
        });
        if let Some(Some((peer, sdp))) = res {
            debug!(%peer, "SFU renegotiates");
            self.push_event(SfuEvent::Offer { peer, sdp });
        }
        self.drain(key);
    }
}

/// The `a=fingerprint` of an SDP (the first one; browsers use one certificate per
/// PeerConnection), normalized.
pub(super) fn sdp_fingerprint(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=fingerprint:"))
        .map(|f| f.trim().to_ascii_lowercase())
}

/// Puts the tracks of a dropped (rolled back or refused) offer back to their previous
/// state. str0m applies a direction change to the session at once (an added m-line only
/// with the answer), so a reused m-line is set inactive again and a freed one sendonly
/// again: the session then says what was last negotiated, also in an answer to the
/// peer's own offer.
pub(super) fn revert_outs(p: &mut Peer) {
    let mut directions: Vec<(Mid, Direction)> = Vec::new();
    for o in &mut p.outs {
        match o.state {
            OutState::Negotiating(m) => {
                o.state = OutState::ToOpen;
                if let Some(slot) = o.slot.take() {
                    directions.push((m, Direction::Inactive));
                    p.free.push(slot);
                }
            }
            OutState::NegotiatingStop(m) => {
                o.state = OutState::ToStop(m);
                directions.push((m, Direction::SendOnly));
            }
            _ => {}
        }
    }
    if !directions.is_empty() {
        let mut api = p.rtc.sdp_api();
        for (m, d) in directions {
            api.set_direction(m, d);
        }
        // Dropped without apply(): only the session's directions change.
    }
}

/// The outstanding offer was answered (or needed no negotiation): its new m-lines carry
/// media from now on, and the m-lines it set inactive are free for the next publisher.
pub(super) fn settle_outs(p: &mut Peer, now: Instant) {
    for o in &mut p.outs {
        match o.state {
            OutState::Negotiating(m) => {
                o.state = OutState::Open(m);
                o.slot = None;
                o.watch.opened = Some(now);
            }
            OutState::NegotiatingStop(mid) => p.free.push(Slot {
                mid,
                kind: o.kind,
                last_out: o.sel.last_out,
                rewriter: o.sel.rewriter.clone(),
            }),
            _ => {}
        }
    }
    p.outs
        .retain(|o| !matches!(o.state, OutState::NegotiatingStop(_)));
}
