//! The periodic tick: speaker changes, ICE consent, retired connections, connect
//! timeouts, slow answers and stats.

use super::*;

/// The bandwidth estimate (bit/s) of a peer whose ICE consent stopped: str0m's padding
/// toward it stays under this.
const QUIET_BITRATE: u64 = 1_000;

impl Sfu {
    pub(super) fn tick(&mut self, now: Instant) {
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            let speaker = self
                .rooms
                .get_mut(&room)
                .and_then(|r| r.speaker.evaluate(now));
            if let Some(peer) = speaker {
                self.push_event(SfuEvent::Speaker { room, peer });
            }
        }
        let keys: Vec<u64> = self.peers.keys().copied().collect();
        for key in keys {
            let Some(p) = self.peers.get_mut(&key) else {
                continue;
            };
            let quiet = p.consent_lost(now);
            if quiet != p.quiet {
                p.quiet = quiet;
                // str0m pads every outgoing connection up to 50 kbit/s when media is
                // short; a peer that stopped answering gets neither (its BWE shrinks to
                // nothing), and starts again from the initial estimate when it answers.
                let rate = if quiet {
                    Bitrate::bps(QUIET_BITRATE)
                } else {
                    Bitrate::bps(self.config.initial_bitrate)
                };
                debug!(peer = %p.id, quiet, "SFU: ICE consent {}", if quiet { "lost: media held back" } else { "back" });
                self.guard(key, "resetting the bandwidth estimate", |p| {
                    p.rtc.bwe().reset(rate)
                });
                self.drain(key);
            }
            let Some(p) = self.peers.get_mut(&key) else {
                continue;
            };
            if p.retired_of.is_some() {
                if p.retire_at.is_some_and(|t| now >= t) {
                    self.remove_peer(key);
                    continue;
                }
                self.update_layers(key, now);
                continue;
            }
            if !p.connected && now.saturating_duration_since(p.joined) >= CONNECT_TIMEOUT {
                self.close(
                    key,
                    format!(
                        "ICE/DTLS did not connect within {} s",
                        CONNECT_TIMEOUT.as_secs()
                    ),
                );
                continue;
            }
            if let Some((_, since)) = &p.pending {
                let waited = now.saturating_duration_since(*since);
                if waited >= SLOW_ANSWER && !p.slow_noted {
                    p.slow_noted = true;
                    p.negotiation.slow += 1;
                    info!(
                        peer = %p.id,
                        room = %p.room,
                        waited_ms = waited.as_millis() as u64,
                        "SFU offer not answered yet; still waiting for the answer (a slow \
                         client), no new offer until then"
                    );
                }
            }
            let stats_due = p.connected && now >= p.next_stats;
            if stats_due {
                p.next_stats = now + self.config.stats_interval;
                let layers = p
                    .outs
                    .iter()
                    .filter(|o| o.kind == MediaKind::Video && !o.gone)
                    .filter(|o| matches!(o.state, OutState::Open(_)))
                    .filter_map(|o| {
                        let t = self.tracks.get(&o.track)?;
                        let layer = match o.sel.target {
                            None => Layer::Paused,
                            Some(_) if !t.simulcast() => Layer::Single,
                            Some(target) => t.layers.get(o.sel.current.unwrap_or(target))?.label,
                        };
                        Some((o.publisher.clone(), layer))
                    })
                    .collect();
                let ev = SfuEvent::Stats {
                    peer: p.id.clone(),
                    bitrate: p.bwe,
                    layers,
                    rtt_ms: p.rtt_ms,
                };
                self.push_event(ev);
            }
            self.update_layers(key, now);
            if stats_due {
                // The RTT moves with str0m's stats, which come at this interval too.
                self.retune_rtx(key);
            }
            self.watch_subscriptions(key, now);
            self.maybe_negotiate(key, now);
        }
    }
}
