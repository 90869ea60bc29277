//! CreatePermission and ChannelBind (RFC 8656 §9, §11), and the peer policy's verdict
//! on each peer.

use super::*;

/// What [`Server::check_peer`] judges: the XOR-PEER-ADDRESS of a CreatePermission
/// (a permission for its IP) or of a ChannelBind (a channel to the address).
#[derive(Debug, Clone, Copy)]
pub(super) enum PeerTarget {
    Permission(SocketAddr),
    Channel(SocketAddr),
}

impl Server {
    /// The policy's verdict on a peer of allocation `id`, with this server's live
    /// relayed addresses as the one exception the policy cannot know. A permission
    /// (CreatePermission) passes if its IP does, if the IP has allowed endpoints
    /// (the port is not judged: RFC 8656 permissions are per IP), or if the address
    /// named is a live relay of this server; a channel (ChannelBind, and each relayed
    /// packet) if its IP does or the address is an allowed endpoint or a live relay.
    /// Another port of a relay IP is refused with [`Denied::NOT_A_RELAY`].
    pub(super) fn judge_peer(&self, id: AllocId, peer: PeerTarget) -> Result<PeerScope, Denied> {
        let policy = &self.config.peer_policy;
        let (checked, addr) = match peer {
            PeerTarget::Permission(a) => (policy.check_permission(a.ip()), a),
            PeerTarget::Channel(a) => (policy.check_address(a), a),
        };
        checked.or_else(|d| {
            if self.live_relays.contains(addr) {
                return Ok(PeerScope::EndpointsOnly);
            }
            let ip = addr.ip();
            let relay_ip = self.live_relays.is_relay_ip(ip)
                || self
                    .allocations
                    .get(&id)
                    .is_some_and(|a| a.relays.iter().any(|r| r.local.ip() == ip));
            if relay_ip && !d.is_outside_endpoints() {
                Err(d.not_a_relay())
            } else {
                Err(d)
            }
        })
    }

    /// Check a peer for an allocation: family, then [`Server::judge_peer`]; a refusal
    /// is reported and answered with 403.
    pub(super) fn check_peer(
        &mut self,
        ft: FiveTuple,
        id: AllocId,
        auth: &Authed,
        peer: PeerTarget,
    ) -> Result<PeerScope, Reject> {
        let ip = match peer {
            PeerTarget::Permission(a) | PeerTarget::Channel(a) => a.ip(),
        };
        let a = &self.allocations[&id];
        if a.relay_for(Family::of(ip)).is_none() {
            return Err(Reject::new(443, "Peer Address Family Mismatch: the peer's IP family differs from the relay's; allocate that family"));
        }
        self.judge_peer(id, peer).map_err(|d| {
            self.stats.peers_denied += 1;
            self.event(Event::PeerDenied {
                five_tuple: ft,
                username: auth.username.clone(),
                peer: ip,
                category: d.category,
                config_key: d.config_key,
            });
            Reject::new(403, d.reason_phrase())
        })
    }

    pub(super) fn create_permission(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        auth: &Authed,
    ) -> Result<Vec<u8>, Reject> {
        let id = self.own_allocation(&ft, auth)?;
        let mut peers: Vec<SocketAddr> = Vec::new();
        for p in msg.xor_addresses(attr::XOR_PEER_ADDRESS) {
            let p = p.map_err(|_| Reject::new(400, "Bad Request: malformed XOR-PEER-ADDRESS"))?;
            if peers.len() >= self.config.max_permissions as usize {
                return Err(Reject::new(
                    508,
                    "Insufficient Capacity: too many XOR-PEER-ADDRESS in one request",
                ));
            }
            peers.push(p);
        }
        if peers.is_empty() {
            return Err(Reject::new(
                400,
                "Bad Request: CreatePermission needs at least one XOR-PEER-ADDRESS",
            ));
        }
        // All or nothing (RFC 8656 §10.2). One permission per IP: an IP named twice
        // (e.g. two live relays on it) is installed once, with the widest scope.
        let mut granted: Vec<(IpAddr, PeerScope)> = Vec::with_capacity(peers.len());
        for p in &peers {
            let scope = self.check_peer(ft, id, auth, PeerTarget::Permission(*p))?;
            match granted.iter_mut().find(|(ip, _)| *ip == p.ip()) {
                Some((_, s)) if scope == PeerScope::AnyPort => *s = scope,
                Some(_) => {}
                None => granted.push((p.ip(), scope)),
            }
        }
        let max = self.config.max_permissions as usize;
        let a = self
            .allocations
            .get_mut(&id)
            .expect("own_allocation returned a live id");
        let new = granted
            .iter()
            .filter(|(ip, _)| !a.permissions.contains_key(ip))
            .count();
        if a.permissions.len() + new > max {
            return Err(Reject::new(
                508,
                "Insufficient Capacity: this allocation has the maximum number of permissions",
            ));
        }
        let expires = now + self.config.permission_lifetime;
        for (p, scope) in granted {
            let old = a.permissions.get(&p).copied();
            a.permissions
                .insert(p, Permission::refreshed(old, expires, scope));
        }
        self.stats.permissions += new as u64;
        self.schedule(id);
        self.success(msg, auth, |_| Ok(()))
    }

    pub(super) fn channel_bind(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        auth: &Authed,
    ) -> Result<Vec<u8>, Reject> {
        let id = self.own_allocation(&ft, auth)?;
        let ch = msg
            .get(attr::CHANNEL_NUMBER)
            .ok_or_else(|| Reject::new(400, "Bad Request: ChannelBind needs CHANNEL-NUMBER"))
            .and_then(|v| {
                attr::decode_channel_number(v)
                    .map_err(|_| Reject::new(400, "Bad Request: malformed CHANNEL-NUMBER"))
            })?;
        // RFC 8656 narrows channels to 0x4000..=0x4FFF; RFC 5766 clients use up to 0x7FFE.
        if !(ChannelData::MIN_CHANNEL..=ChannelData::MAX_CHANNEL_RFC5766).contains(&ch) {
            return Err(Reject::new(
                400,
                "Bad Request: CHANNEL-NUMBER must be in 0x4000..0x7FFE",
            ));
        }
        let peer = match msg.get_xor_address(attr::XOR_PEER_ADDRESS) {
            Ok(Some(p)) => p,
            Ok(None) => {
                return Err(Reject::new(
                    400,
                    "Bad Request: ChannelBind needs XOR-PEER-ADDRESS",
                ))
            }
            Err(_) => return Err(Reject::new(400, "Bad Request: malformed XOR-PEER-ADDRESS")),
        };
        let scope = self.check_peer(ft, id, auth, PeerTarget::Channel(peer))?;
        let max_ch = self.config.max_channels as usize;
        let max_perm = self.config.max_permissions as usize;
        let a = self
            .allocations
            .get_mut(&id)
            .expect("own_allocation returned a live id");
        // §11.2: the channel must be unbound or bound to this peer, and the peer
        // unbound or bound to this channel (cooling-down bindings included).
        if let Some(c) = a.channels.get(&ch) {
            if c.peer != peer {
                return Err(Reject::new(400, "Bad Request: this channel is bound to another peer; pick another channel number"));
            }
        }
        if let Some(other) = a.peer_channels.get(&peer) {
            if *other != ch {
                return Err(Reject::new(
                    400,
                    "Bad Request: this peer is bound to another channel; reuse that channel number",
                ));
            }
        }
        if !a.channels.contains_key(&ch) && a.channels.len() >= max_ch {
            return Err(Reject::new(
                508,
                "Insufficient Capacity: this allocation has the maximum number of channels",
            ));
        }
        let new_perm = !a.permissions.contains_key(&peer.ip());
        if new_perm && a.permissions.len() >= max_perm {
            return Err(Reject::new(
                508,
                "Insufficient Capacity: this allocation has the maximum number of permissions",
            ));
        }
        let new_channel = a
            .channels
            .insert(
                ch,
                Channel {
                    peer,
                    expires: now + self.config.channel_lifetime,
                },
            )
            .is_none();
        a.peer_channels.insert(peer, ch);
        let old = a.permissions.get(&peer.ip()).copied();
        a.permissions.insert(
            peer.ip(),
            Permission::refreshed(old, now + self.config.permission_lifetime, scope),
        );
        self.stats.permissions += new_perm as u64;
        self.stats.channels += new_channel as u64;
        self.schedule(id);
        self.success(msg, auth, |_| Ok(()))
    }
}
