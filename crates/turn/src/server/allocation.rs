//! Allocate and Refresh (RFC 8656 §7): relays, reservations, lifetimes, quotas.

use super::*;

impl Server {
    // ------------------------------------------------------------------ methods

    pub(super) fn allocate(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        auth: &Authed,
        binder: &mut dyn RelayBinder,
    ) -> Result<Vec<u8>, Reject> {
        // §7.2 step 2: one allocation per 5-tuple; a retransmission gets the same answer.
        if let Some(id) = self.by_five_tuple.get(&ft) {
            let a = &self.allocations[id];
            if a.allocate_tid == msg.transaction_id() {
                return Ok(a.allocate_response.clone());
            }
            return Err(Reject::new(437, "Allocation Mismatch: this 5-tuple already has an allocation; Refresh it or use a new source port"));
        }
        // Step 3.
        let transport = msg.get(attr::REQUESTED_TRANSPORT).ok_or_else(|| {
            Reject::new(
                400,
                "Bad Request: Allocate needs REQUESTED-TRANSPORT (17 for UDP)",
            )
        })?;
        let proto = attr::decode_requested_transport(transport)
            .map_err(|_| Reject::new(400, "Bad Request: malformed REQUESTED-TRANSPORT"))?;
        if proto != attr::PROTO_UDP {
            return Err(Reject::new(442, "Unsupported Transport Protocol: only UDP relaying (REQUESTED-TRANSPORT 17) is offered"));
        }
        // Step 4: DONT-FRAGMENT is supported.
        let dont_fragment = msg.contains(attr::DONT_FRAGMENT);
        let token = msg.get(attr::RESERVATION_TOKEN);
        let even = msg.get(attr::EVEN_PORT);
        let requested_family = msg.get(attr::REQUESTED_ADDRESS_FAMILY);
        let additional_family = msg.get(attr::ADDITIONAL_ADDRESS_FAMILY);
        // Step 5.
        if token.is_some()
            && (even.is_some() || requested_family.is_some() || additional_family.is_some())
        {
            return Err(Reject::new(400, "Bad Request: RESERVATION-TOKEN cannot be combined with EVEN-PORT or an address family"));
        }
        // Step 6.
        if requested_family.is_some() && additional_family.is_some() {
            return Err(Reject::new(
                400,
                "Bad Request: send REQUESTED-ADDRESS-FAMILY or ADDITIONAL-ADDRESS-FAMILY, not both",
            ));
        }
        let family = match requested_family {
            None => Family::V4,
            Some(v) => match attr::decode_address_family(v) {
                Ok(attr::FAMILY_IPV4) => Family::V4,
                Ok(attr::FAMILY_IPV6) => Family::V6,
                Ok(_) => {
                    return Err(Reject::new(
                        440,
                        "Address Family not Supported: use 0x01 (IPv4) or 0x02 (IPv6)",
                    ))
                }
                Err(_) => {
                    return Err(Reject::new(
                        400,
                        "Bad Request: malformed REQUESTED-ADDRESS-FAMILY",
                    ))
                }
            },
        };
        let dual = match additional_family {
            None => false,
            Some(v) => match attr::decode_address_family(v) {
                Ok(attr::FAMILY_IPV6) => true,
                _ => {
                    return Err(Reject::new(
                        400,
                        "Bad Request: ADDITIONAL-ADDRESS-FAMILY must be 0x02 (IPv6)",
                    ))
                }
            },
        };
        let port = match even.map(attr::decode_even_port) {
            None => PortRequest::Any,
            Some(Ok(false)) => PortRequest::Even,
            Some(Ok(true)) => PortRequest::EvenReserveNext,
            Some(Err(_)) => return Err(Reject::new(400, "Bad Request: malformed EVEN-PORT")),
        };
        // Quotas, counting the allocations of other workers and nodes.
        self.check_quotas(ft, &auth.username)?;
        // Relays.
        let mut relays: Vec<SocketAddr> = Vec::with_capacity(2);
        let mut address_error: Option<(u8, u16, &'static str)> = None;
        let mut reservation: Option<[u8; 8]> = None;
        if let Some(t) = token {
            let t = attr::decode_reservation_token(t)
                .map_err(|_| Reject::new(400, "Bad Request: malformed RESERVATION-TOKEN"))?;
            let taken = self.reservations.remove(&t);
            if let Some(r) = &taken {
                self.timers.remove(&(r.expires, TimerKey::Reservation(t)));
            }
            match taken {
                Some(r) if r.expires > now => relays.push(r.relay),
                Some(r) => {
                    binder.release(r.relay);
                    return Err(Reject::new(508, "Insufficient Capacity: the RESERVATION-TOKEN has expired; allocate without it"));
                }
                None => {
                    return Err(Reject::new(
                        508,
                        "Insufficient Capacity: unknown RESERVATION-TOKEN; allocate without it",
                    ))
                }
            }
        } else {
            match binder.bind(BindRequest { family, port, dont_fragment }) {
                Ok(a) => relays.push(a),
                Err(BindError::FamilyUnsupported) => {
                    return Err(Reject::new(440, match family {
                        Family::V4 => "Address Family not Supported: this server has no IPv4 relay address; request IPv6",
                        Family::V6 => "Address Family not Supported: this server has no IPv6 relay address; request IPv4",
                    }))
                }
                Err(BindError::Exhausted) => {
                    self.event(Event::QuotaReached { five_tuple: ft, username: auth.username.clone(), which: "relay ports" });
                    return Err(Reject::new(508, "Insufficient Capacity: no relay port is free in min-port..max-port; try later"));
                }
            }
            if port == PortRequest::EvenReserveNext {
                let even_addr = relays[0];
                let odd = SocketAddr::new(even_addr.ip(), even_addr.port().wrapping_add(1));
                let t = self.new_token();
                self.reservations.insert(
                    t,
                    Reservation {
                        relay: odd,
                        expires: now + self.config.reservation_lifetime,
                    },
                );
                self.timers.insert((
                    now + self.config.reservation_lifetime,
                    TimerKey::Reservation(t),
                ));
                reservation = Some(t);
            }
            if dual {
                match binder.bind(BindRequest {
                    family: Family::V6,
                    port: PortRequest::Any,
                    dont_fragment,
                }) {
                    Ok(a) => relays.push(a),
                    Err(BindError::FamilyUnsupported) => {
                        address_error = Some((
                            attr::FAMILY_IPV6,
                            440,
                            "Address Family not Supported: no IPv6 relay address",
                        ))
                    }
                    Err(BindError::Exhausted) => {
                        address_error = Some((
                            attr::FAMILY_IPV6,
                            508,
                            "Insufficient Capacity: no IPv6 relay port free",
                        ))
                    }
                }
            }
        }
        let lifetime = match self.desired_lifetime(msg) {
            l if l.is_zero() => self.config.default_lifetime.min(self.config.max_lifetime),
            l => l,
        };
        let relays: Vec<Relay> = relays
            .into_iter()
            .map(|local| Relay {
                local,
                advertised: self.advertised(local),
            })
            .collect();

        // Encode the success response before storing, so a retransmission gets it.
        let mut buf = [0u8; RESPONSE_BUF];
        let software = self.config.software.clone();
        let n = (|| {
            let mut enc = MessageEncoder::new(
                &mut buf,
                Class::Success,
                Method::ALLOCATE,
                msg.transaction_id(),
            )?;
            for r in &relays {
                enc.xor_address(attr::XOR_RELAYED_ADDRESS, &r.advertised)?;
            }
            if let Some((fam, code, reason)) = address_error {
                enc.attr_with(attr::ADDRESS_ERROR_CODE, 4 + reason.len(), |o| {
                    o[0] = fam;
                    o[1] = 0;
                    o[2] = (code / 100) as u8;
                    o[3] = (code % 100) as u8;
                    o[4..].copy_from_slice(reason.as_bytes());
                })?;
            }
            enc.u32(
                attr::LIFETIME,
                lifetime.as_secs().min(u32::MAX as u64) as u32,
            )?;
            if let Some(t) = reservation {
                enc.attr(attr::RESERVATION_TOKEN, &t)?;
            }
            enc.xor_address(attr::XOR_MAPPED_ADDRESS, &ft.client)?;
            if let Some(s) = &software {
                enc.software(s)?;
            }
            finish_auth(&mut enc, auth, msg.has_fingerprint())?;
            Ok::<_, tsunagi_stun::EncodeError>(enc.finish())
        })();
        let Ok(n) = n else {
            for r in &relays {
                binder.release(r.local);
            }
            return Err(Reject::new(500, "Server Error: response did not fit"));
        };
        let response = buf[..n].to_vec();

        let id = AllocId(self.next_id);
        self.next_id += 1;
        for r in &relays {
            self.live_relays.insert(r.local, id);
        }
        self.by_five_tuple.insert(ft, id);
        *self.per_user.entry(auth.username.clone()).or_insert(0) += 1;
        self.allocations.insert(
            id,
            Box::new(Allocation {
                five_tuple: ft,
                username: auth.username.clone(),
                relays: relays.clone(),
                expires: now + lifetime,
                permissions: Map::with_hasher(self.hasher.clone()),
                channels: Map::with_hasher(self.hasher.clone()),
                peer_channels: Map::with_hasher(self.hasher.clone()),
                dont_fragment,
                to_peer: byte_bucket(self.config.max_bps, now),
                to_client: byte_bucket(self.config.max_bps, now),
                scheduled: None,
                allocate_tid: msg.transaction_id(),
                allocate_response: response.clone(),
            }),
        );
        self.schedule(id);
        self.stats.allocations = self.allocations.len() as u64;
        self.stats.allocations_created += 1;
        self.event(Event::AllocationCreated {
            five_tuple: ft,
            username: auth.username.clone(),
            relays: relays.iter().map(|r| r.local).collect(),
            lifetime,
        });
        Ok(response)
    }

    /// RFC 8656 §7.2 / §7.3 "desired lifetime": min(requested, max) but at least the
    /// default; zero only when the client asks for zero.
    pub(super) fn desired_lifetime(&self, msg: &Message<'_>) -> Duration {
        match msg.get_u32(attr::LIFETIME) {
            Ok(Some(0)) => Duration::ZERO,
            Ok(Some(s)) => Duration::from_secs(s as u64)
                .min(self.config.max_lifetime)
                .max(self.config.default_lifetime.min(self.config.max_lifetime)),
            _ => self.config.default_lifetime.min(self.config.max_lifetime),
        }
    }

    pub(super) fn advertised(&self, local: SocketAddr) -> SocketAddr {
        for (public, private) in &self.config.external_ips {
            let matches = match private {
                Some(p) => *p == local.ip(),
                None => Family::of(*public) == Family::of(local.ip()),
            };
            if matches {
                return SocketAddr::new(*public, local.port());
            }
        }
        local
    }

    pub(super) fn new_token(&mut self) -> [u8; 8] {
        let mut t = [0u8; 8];
        let tid = rand_tid(&mut self.token_counter, &self.config.nonce_key);
        t.copy_from_slice(&tid[..8]);
        t
    }

    /// The allocation of this 5-tuple, checked against the authenticated user.
    pub(super) fn own_allocation(&self, ft: &FiveTuple, auth: &Authed) -> Result<AllocId, Reject> {
        let id = *self.by_five_tuple.get(ft).ok_or_else(|| {
            Reject::new(
                437,
                "Allocation Mismatch: no allocation on this 5-tuple; send Allocate first",
            )
        })?;
        if self.allocations[&id].username != auth.username {
            return Err(Reject::new(
                441,
                "Wrong Credentials: use the username that created this allocation",
            ));
        }
        Ok(id)
    }

    pub(super) fn refresh(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        auth: &Authed,
        binder: &mut dyn RelayBinder,
    ) -> Result<Vec<u8>, Reject> {
        let id = self.own_allocation(&ft, auth)?;
        if let Some(v) = msg.get(attr::REQUESTED_ADDRESS_FAMILY) {
            let fam = match attr::decode_address_family(v) {
                Ok(attr::FAMILY_IPV4) => Family::V4,
                Ok(attr::FAMILY_IPV6) => Family::V6,
                _ => {
                    return Err(Reject::new(
                        400,
                        "Bad Request: malformed REQUESTED-ADDRESS-FAMILY",
                    ))
                }
            };
            if self.allocations[&id].relay_for(fam).is_none() {
                return Err(Reject::new(
                    443,
                    "Peer Address Family Mismatch: this allocation has no relay of that family",
                ));
            }
        }
        let lifetime = self.desired_lifetime(msg);
        if lifetime.is_zero() {
            self.delete_allocation(id, DeleteReason::Refreshed, binder);
        } else if let Some(a) = self.allocations.get_mut(&id) {
            a.expires = now + lifetime;
            // A later expiry: the existing heap entry fires first and reschedules.
            self.schedule(id);
        }
        self.success(msg, auth, |enc| {
            enc.u32(
                attr::LIFETIME,
                lifetime.as_secs().min(u32::MAX as u64) as u32,
            )
            .map(|_| ())
        })
    }
}
