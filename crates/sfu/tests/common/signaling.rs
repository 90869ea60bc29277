//! The signaling model: offers and answers between the clients and the SFU with seeded
//! delays, crossing offers and the refusals either side reports.

use super::*;

/// An SDP travelling through [`Signaling`].
#[derive(Debug, Clone)]
pub enum Sdp {
    Offer(String),
    Answer(String),
}

/// Signaling as a loaded browser sees it: every message to or from a client takes a
/// seeded random time (its WebSocket and the page's processing), within the range of
/// that client (`slow`) or the default one, and messages of one client stay in order.
#[derive(Debug, Default)]
pub struct Signaling {
    /// Delay range of most clients.
    pub delay: (Duration, Duration),
    /// Delay ranges of particular clients (a slow browser).
    pub slow: HashMap<String, (Duration, Duration)>,
    pub(super) to_client: Vec<(Instant, String, Sdp)>,
    pub(super) to_sfu: Vec<(Instant, String, Sdp)>,
    last_to_client: HashMap<String, Instant>,
    last_to_sfu: HashMap<String, Instant>,
    /// Every refusal on either side: a correct exchange has none.
    pub errors: Vec<String>,
    /// SFU offers a client ignored because its own offer was out.
    pub ignored_offers: u32,
}

impl Signaling {
    pub fn new(delay: (Duration, Duration)) -> Signaling {
        Signaling {
            delay,
            ..Signaling::default()
        }
    }

    pub(super) fn after(
        &mut self,
        rng: &mut StdRng,
        now: Instant,
        peer: &str,
        to_client: bool,
    ) -> Instant {
        let (lo, hi) = self.slow.get(peer).copied().unwrap_or(self.delay);
        let span = hi.saturating_sub(lo).as_millis() as u64;
        let d = lo
            + Duration::from_millis(if span == 0 {
                0
            } else {
                rng.random_range(0..=span)
            });
        let last = if to_client {
            &mut self.last_to_client
        } else {
            &mut self.last_to_sfu
        };
        let at = last.get(peer).map_or(now + d, |t| (*t).max(now + d));
        last.insert(peer.to_string(), at);
        at
    }

    /// Whether nothing is in flight.
    pub fn idle(&self) -> bool {
        self.to_client.is_empty() && self.to_sfu.is_empty()
    }
}

impl World {
    /// Delivers the signaling messages that are due, in order: to clients (an SFU offer
    /// the client applies and answers unless it has its own offer out, as the web
    /// client is impolite toward the SFU; the SFU's answer to the client's offer) and
    /// to the SFU (the client's offer, answered; the client's answer).
    pub(super) fn signal(&mut self) {
        let now = self.now;
        let due = |q: &mut Vec<(Instant, String, Sdp)>| -> Vec<(Instant, String, Sdp)> {
            let mut d: Vec<_> = Vec::new();
            let mut i = 0;
            while i < q.len() {
                if q[i].0 <= now {
                    d.push(q.remove(i));
                } else {
                    i += 1;
                }
            }
            d.sort_by_key(|(t, _, _)| *t);
            d
        };
        let Some(sig) = self.signaling.as_mut() else {
            return;
        };
        let to_sfu = due(&mut sig.to_sfu);
        let to_client = due(&mut sig.to_client);
        for (_, peer, m) in to_sfu {
            if !self.sfu.contains(&peer) {
                continue;
            }
            match m {
                Sdp::Offer(sdp) => match self.sfu.accept_offer(&peer, &sdp, now) {
                    Ok(answer) => {
                        let sig = self.signaling.as_mut().unwrap();
                        let at = sig.after(&mut self.rng, now, &peer, true);
                        sig.to_client.push((at, peer, Sdp::Answer(answer)));
                    }
                    Err(e) => self
                        .signaling
                        .as_mut()
                        .unwrap()
                        .errors
                        .push(format!("{peer}: offer refused: {e}")),
                },
                Sdp::Answer(sdp) => {
                    if let Err(e) = self.sfu.accept_answer(&peer, &sdp, now) {
                        self.signaling
                            .as_mut()
                            .unwrap()
                            .errors
                            .push(format!("{peer}: answer refused: {e}"));
                    }
                }
            }
            self.drain_sfu();
        }
        for (_, peer, m) in to_client {
            let Some(i) = self.clients.iter().position(|c| c.id == peer && !c.dead) else {
                continue;
            };
            match m {
                Sdp::Offer(sdp) => {
                    if self.clients[i].pending.is_some() {
                        // Impolite toward the SFU: its offer crossed ours and is ignored.
                        self.signaling.as_mut().unwrap().ignored_offers += 1;
                        continue;
                    }
                    let c = &mut self.clients[i];
                    c.offers.push(sdp.clone());
                    c.remote_sdps.push(sdp.clone());
                    let offer = SdpOffer::from_sdp_string(&sdp).unwrap();
                    match c.rtc.sdp_api().accept_offer(offer) {
                        Ok(answer) => {
                            let answer = answer.to_sdp_string();
                            self.drain_client(i);
                            let sig = self.signaling.as_mut().unwrap();
                            let at = sig.after(&mut self.rng, now, &peer, false);
                            sig.to_sfu.push((at, peer, Sdp::Answer(answer)));
                        }
                        Err(e) => self
                            .signaling
                            .as_mut()
                            .unwrap()
                            .errors
                            .push(format!("{peer}: client could not apply the SFU offer: {e}")),
                    }
                }
                Sdp::Answer(sdp) => {
                    let c = &mut self.clients[i];
                    let Some(pending) = c.pending.take() else {
                        continue;
                    };
                    c.answers.push(sdp.clone());
                    c.remote_sdps.push(sdp.clone());
                    let answer = SdpAnswer::from_sdp_string(&sdp).unwrap();
                    if let Err(e) = c.rtc.sdp_api().accept_answer(pending, answer) {
                        self.signaling.as_mut().unwrap().errors.push(format!(
                            "{peer}: client could not apply the SFU answer: {e}"
                        ));
                    }
                    self.drain_client(i);
                }
            }
        }
    }

    /// The client `id` sends an offer of its own (an ICE restart) through the signaling
    /// model, as a browser renegotiating would; it may cross an SFU offer.
    pub fn client_offer(&mut self, id: &str) {
        let now = self.now;
        let Some(i) = self.clients.iter().position(|c| c.id == id && !c.dead) else {
            return;
        };
        if self.clients[i].pending.is_some() {
            return;
        }
        let mut api = self.clients[i].rtc.sdp_api();
        api.ice_restart(true);
        let Some((offer, pending)) = api.apply() else {
            return;
        };
        self.clients[i].pending = Some(pending);
        self.drain_client(i);
        let sig = self.signaling.as_mut().expect("signaling model");
        let at = sig.after(&mut self.rng, now, id, false);
        sig.to_sfu
            .push((at, id.to_string(), Sdp::Offer(offer.to_sdp_string())));
    }
    pub(super) fn answer(&mut self, peer: String, sdp: String) {
        let now = self.now;
        let Some(i) = self.clients.iter().position(|c| c.id == peer) else {
            return;
        };
        let c = &mut self.clients[i];
        c.offers.push(sdp.clone());
        c.remote_sdps.push(sdp.clone());
        let offer = SdpOffer::from_sdp_string(&sdp).unwrap();
        let answer = c.rtc.sdp_api().accept_offer(offer).unwrap();
        let mut answer = answer.to_sdp_string();
        if c.strip_rtx {
            answer = strip_rtx(&answer);
        }
        self.drain_client(i);
        self.sfu.accept_answer(&peer, &answer, now).unwrap();
    }
}
