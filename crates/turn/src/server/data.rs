//! The relay data path: ChannelData and Send/Data indications between clients and peers.

use super::*;

impl Server {
    /// [`Server::handle_peer`] that writes the message for the client (ChannelData,
    /// or a Data indication) into `out` instead of queuing a transmit, and returns its
    /// destination and length: no allocation per packet. Same checks, counters and
    /// bytes as `handle_peer`. When `out` is too small, the message is queued as
    /// `handle_peer` queues it and `None` is returned, as it is when nothing is sent.
    pub fn handle_peer_into(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
        out: &mut [u8],
    ) -> Option<(Destination, usize)> {
        self.tick(now);
        let id = self.live_relays.get(&relay)?;
        let a = self.allocations.get_mut(&id)?;
        let covered = a
            .permissions
            .get(&peer.ip())
            .filter(|p| p.expires > now)
            .is_some_and(|p| {
                !p.endpoints_only
                    || endpoint_covered(&self.config.peer_policy, &self.live_relays, peer)
            });
        if !covered {
            self.stats.dropped_no_permission += 1;
            return None;
        }
        if data.len() > MAX_DATA {
            self.stats.dropped_invalid += 1;
            return None;
        }
        if !a.to_client.take_n(now, data.len() as u64) {
            self.stats.dropped_rate_limited += 1;
            return None;
        }
        let ft = a.five_tuple;
        let channel = a
            .peer_channels
            .get(&peer)
            .copied()
            .filter(|ch| a.active_channel(*ch, now).is_some());
        let stream = ft.transport.is_stream();
        // A Data indication adds a header, XOR-PEER-ADDRESS and DATA's own header and
        // padding: less than 64 bytes.
        let needed = match channel {
            Some(_) => ChannelData::encoded_len(data.len(), stream),
            None => data.len() + 64,
        };
        let mut owned = Vec::new();
        let in_place = out.len() >= needed;
        let buf: &mut [u8] = match out.get_mut(..needed) {
            Some(b) => b,
            None => {
                owned.resize(needed, 0);
                &mut owned
            }
        };
        let n = match channel {
            // `buf` is sized for exactly this frame.
            Some(ch) => ChannelData { channel: ch, data }
                .encode(buf, stream)
                .unwrap_or(0),
            None => {
                let tid = TransactionId::new(self.next_indication_tid());
                (|| {
                    let mut enc = MessageEncoder::new(buf, Class::Indication, Method::DATA, tid)?;
                    enc.xor_address(attr::XOR_PEER_ADDRESS, &peer)?;
                    enc.attr(attr::DATA, data)?;
                    Ok::<_, tsunagi_stun::EncodeError>(enc.finish())
                })()
                .unwrap_or(0)
            }
        };
        if n == 0 {
            return None;
        }
        self.stats.packets_from_peers += 1;
        self.stats.bytes_from_peers += data.len() as u64;
        let destination = Destination::Client(ft);
        if in_place {
            return Some((destination, n));
        }
        owned.truncate(n);
        self.transmits.push_back(Transmit {
            destination,
            payload: owned,
        });
        None
    }

    // ------------------------------------------------------------ ChannelData

    pub(super) fn client_channel_data(&mut self, now: Instant, ft: FiveTuple, data: &[u8]) {
        if let Some((destination, range)) = self.channel_data_route(now, ft, data) {
            self.transmits.push_back(Transmit {
                destination,
                payload: data.get(range).unwrap_or_default().to_vec(),
            });
        }
    }

    /// Checks and counts ChannelData from a client; returns where its data goes and
    /// where the data is in `data`.
    pub(super) fn channel_data_route(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        data: &[u8],
    ) -> Option<(Destination, std::ops::Range<usize>)> {
        let Ok(cd) = ChannelData::parse(data) else {
            self.stats.dropped_invalid += 1;
            return None;
        };
        let Some(id) = self.by_five_tuple.get(&ft).copied() else {
            self.stats.dropped_invalid += 1;
            return None;
        };
        let a = self.allocations.get_mut(&id)?;
        let Some(peer) = a.active_channel(cd.channel, now).map(|c| c.peer) else {
            self.stats.dropped_invalid += 1;
            return None;
        };
        // The data follows the 4-byte ChannelData header.
        let range = 4..4 + cd.data.len();
        self.route_to_peer(now, id, peer, cd.data.len(), false)
            .map(|d| (d, range))
    }

    pub(super) fn relay_to_peer(
        &mut self,
        now: Instant,
        id: AllocId,
        peer: SocketAddr,
        data: &[u8],
        df: bool,
    ) {
        if let Some(destination) = self.route_to_peer(now, id, peer, data.len(), df) {
            self.transmits.push_back(Transmit {
                destination,
                payload: data.to_vec(),
            });
        }
    }

    /// Checks (permission, allowed endpoints, relay family, bandwidth) and counts
    /// `len` bytes from the client of allocation `id` to `peer`; returns where they go.
    /// Every relay path to a peer goes through here.
    pub(super) fn route_to_peer(
        &mut self,
        now: Instant,
        id: AllocId,
        peer: SocketAddr,
        len: usize,
        df: bool,
    ) -> Option<Destination> {
        let a = self.allocations.get_mut(&id)?;
        let Some(perm) = a
            .permissions
            .get_mut(&peer.ip())
            .filter(|p| p.expires > now)
        else {
            self.stats.dropped_no_permission += 1;
            return None;
        };
        // Only for an IP that allowed endpoints or this server's relays alone make
        // reachable.
        if perm.endpoints_only
            && !endpoint_covered(&self.config.peer_policy, &self.live_relays, peer)
        {
            self.stats.dropped_peer_denied += 1;
            if !perm.denial_reported {
                perm.denial_reported = true;
                let (five_tuple, username) = (a.five_tuple, a.username.clone());
                self.report_outside_endpoints(id, five_tuple, username, peer);
            }
            return None;
        }
        let Some(relay) = a.relay_for(Family::of(peer.ip())).map(|r| r.local) else {
            self.stats.dropped_invalid += 1;
            return None;
        };
        if !a.to_peer.take_n(now, len as u64) {
            self.stats.dropped_rate_limited += 1;
            return None;
        }
        let dont_fragment = df || a.dont_fragment;
        self.stats.packets_to_peers += 1;
        self.stats.bytes_to_peers += len as u64;
        Some(Destination::Peer {
            relay,
            peer,
            dont_fragment,
        })
    }

    /// Client data went to a port outside the allowed endpoints and live relays: one
    /// event per permission, not per packet.
    #[cold]
    pub(super) fn report_outside_endpoints(
        &mut self,
        id: AllocId,
        five_tuple: FiveTuple,
        username: String,
        peer: SocketAddr,
    ) {
        let Err(d) = self.judge_peer(id, PeerTarget::Channel(peer)) else {
            return;
        };
        self.stats.peers_denied += 1;
        self.event(Event::PeerDenied {
            five_tuple,
            username,
            peer: peer.ip(),
            category: d.category,
            config_key: d.config_key,
        });
    }

    pub(super) fn send_indication(&mut self, now: Instant, ft: FiveTuple, msg: &Message<'_>) {
        let Some(id) = self.by_five_tuple.get(&ft).copied() else {
            return;
        };
        let (Ok(Some(peer)), Some(data)) = (
            msg.get_xor_address(attr::XOR_PEER_ADDRESS),
            msg.get(attr::DATA),
        ) else {
            self.stats.dropped_invalid += 1;
            return;
        };
        let df = msg.contains(attr::DONT_FRAGMENT);
        self.relay_to_peer(now, id, peer, data, df);
    }

    // --------------------------------------------------------------- responses

    pub(super) fn queue_to_client(&mut self, ft: FiveTuple, payload: Vec<u8>) {
        self.transmits.push_back(Transmit {
            destination: Destination::Client(ft),
            payload,
        });
    }

    /// splitmix64: Data indication transaction IDs need to be unique, not secret.
    pub(super) fn next_indication_tid(&mut self) -> [u8; 12] {
        let mut out = [0u8; 12];
        for chunk in out.chunks_mut(6) {
            self.tid_state = self.tid_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.tid_state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..6]);
        }
        out
    }
}
