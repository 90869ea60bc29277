//! What the SFU shows about itself: a room's state (peers, tracks, subscriptions) and the
//! counters.

use super::*;

impl Sfu {
    pub(super) fn room_publisher_key(&self, room: &str) -> Option<u64> {
        let r = self.rooms.get(room)?;
        let publishes = |k: &u64| {
            self.peers
                .get(k)
                .is_some_and(|p| !p.published.is_empty() && p.retired_of.is_none())
        };
        let role = |k: &u64| self.peers.get(k).map(|p| p.role);
        r.peers
            .iter()
            .find(|k| role(k) == Some(Role::WhipPublisher) && publishes(k))
            .or_else(|| r.peers.iter().find(|k| publishes(k)))
            .copied()
    }

    /// WHEP: which publisher a WhepViewer plays: the room's WHIP publisher, else its first
    /// publisher with media tracks; `None` when nobody publishes.
    pub fn room_publisher(&self, room: &str) -> Option<String> {
        let k = self.room_publisher_key(room)?;
        self.peers.get(&k).map(|p| p.id.clone())
    }

    /// Whether anybody in the room publishes a track.
    pub fn room_has_publisher(&self, room: &str) -> bool {
        self.room_publisher_key(room).is_some()
    }

    /// The state of every subscription in `room` (publisher → subscriber, per kind) and
    /// of every peer's negotiation, as JSON (the format is in docs/sfu.md, "Subscription
    /// state"). `None` when the SFU has no such room.
    pub fn room_state(&self, room: &str, now: Instant) -> Option<serde_json::Value> {
        use serde_json::json;
        let r = self.rooms.get(room)?;
        let ms =
            |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t).as_millis() as u64);
        let mut peers = Vec::new();
        for key in &r.peers {
            let Some(p) = self.peers.get(key) else {
                continue;
            };
            let consent_lost = p.consent_lost(now);
            let mut subs = Vec::new();
            for o in &p.outs {
                let t = self.tracks.get(&o.track);
                let (state, mid) = match o.state {
                    OutState::ToOpen => ("waiting-for-offer", None),
                    OutState::Negotiating(m) => ("offered", Some(m)),
                    OutState::Open(m) => ("negotiated", Some(m)),
                    OutState::ToStop(m) | OutState::NegotiatingStop(m) => ("stopping", Some(m)),
                };
                let label = |i: Option<usize>| match (t, i) {
                    (_, None) => Layer::Paused,
                    (Some(t), Some(_)) if !t.simulcast() => Layer::Single,
                    (Some(t), Some(i)) => t.layers.get(i).map_or(Layer::Paused, |l| l.label),
                    (None, Some(_)) => Layer::Paused,
                };
                let in_view = match &p.view {
                    None => true,
                    Some(tiles) => tiles
                        .iter()
                        .any(|tile| tile.peer == o.publisher && tile.width > 0 && tile.height > 0),
                };
                let paused = if o.gone {
                    Some("publisher-left")
                } else if !p.connected {
                    Some("not-connected")
                } else if consent_lost {
                    Some("consent-lost")
                } else if o.sel.target.is_none() && o.kind == MediaKind::Video {
                    Some(if in_view { "bandwidth" } else { "not-in-view" })
                } else if o.kind == MediaKind::Video
                    && o.sel.current != o.sel.target
                    && o.sel.current.is_none()
                {
                    Some("waiting-for-keyframe")
                } else {
                    None
                };
                let sending = target_sending(t, &o.sel, now);
                subs.push(json!({
                    "publisher": o.publisher,
                    "kind": if o.kind == MediaKind::Audio { "audio" } else { "video" },
                    "state": state,
                    "negotiated": matches!(o.state, OutState::Open(_)),
                    "mid": mid.map(|m| m.to_string()),
                    "layer": label(o.sel.current).as_str(),
                    "target": if o.kind == MediaKind::Audio { "single" } else { o.sel.target_layer.as_str() },
                    "paused": paused,
                    "publisherSending": sending,
                    "packets": o.watch.packets,
                    "keyframes": o.watch.keyframes,
                    "lastMediaMsAgo": ms(o.watch.last_media),
                    "negotiatedMsAgo": ms(o.watch.opened),
                    "keyframeRequests": o.watch.keyframe_requests,
                    "refused": o.watch.refused,
                    "rtxCacheMs": o.rtx_age.map(|a| a.as_millis() as u64),
                    "starved": o.watch.starved_since.is_some(),
                    "starvedMs": ms(o.watch.starved_since),
                    "starvedEpisodes": o.watch.starved,
                }));
            }
            let n = p.negotiation;
            peers.push(json!({
                "peer": p.id,
                "role": match p.role {
                    Role::Participant { .. } => "participant",
                    Role::WhipPublisher => "whip",
                    Role::WhepViewer => "whep",
                },
                "connection": if p.retired_of.is_some() { "retiring" } else { "live" },
                "connected": p.connected,
                "consentLost": consent_lost,
                "lingering": p.lingering,
                "freeMlines": p.free.len(),
                "bitrate": p.bwe,
                "rttMs": p.rtt_ms,
                "negotiation": {
                    "offers": n.offers,
                    "answers": n.answers,
                    "refusedAnswers": n.refused,
                    "slowAnswers": n.slow,
                    "undeliveredOffers": n.undelivered,
                    "peerOffers": n.peer_offers,
                    "pendingOfferMs": ms(p.pending.as_ref().map(|(_, t)| *t)),
                },
                "publishes": p.published.iter().filter_map(|t| self.tracks.get(t)).map(|t| json!({
                    "kind": if t.kind == MediaKind::Audio { "audio" } else { "video" },
                    "mid": t.mid.to_string(),
                    "layers": t.layers.iter().map(|l| json!({
                        "layer": l.label.as_str(),
                        "active": l.active(now),
                        "bitrate": l.meter.rate(),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "subscriptions": subs,
            }));
        }
        Some(json!({ "room": room, "peers": peers }))
    }

    /// Counters since start and current gauges.
    pub fn stats(&self) -> SfuStats {
        let mut s = self.counters.clone();
        s.rooms = self.rooms.len() as u64;
        s.peers = self.peers.len() as u64;
        s.publishers = self
            .peers
            .values()
            .filter(|p| !p.published.is_empty())
            .count() as u64;
        s.subscriptions = self
            .peers
            .values()
            .flat_map(|p| &p.outs)
            .filter(|o| matches!(o.state, OutState::Open(_)) && !o.gone)
            .count() as u64;
        s
    }
}
