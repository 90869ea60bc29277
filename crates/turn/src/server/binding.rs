//! STUN Binding (RFC 8489) and its RFC 5780 variants: which address and port answer.

use super::*;

/// How a Binding request is answered (RFC 5780 §6.1).
#[derive(Debug, Clone, Copy)]
pub(super) struct BindingPlan {
    /// The listener the response leaves from (RESPONSE-ORIGIN).
    pub(super) from: SocketAddr,
    /// Where it goes: the client, or another port of the client's IP (RESPONSE-PORT).
    pub(super) to: SocketAddr,
    /// OTHER-ADDRESS, when discovery is on for the listener the request reached.
    pub(super) other: Option<SocketAddr>,
    /// Length of the PADDING value to include; 0 for none.
    pub(super) padding: usize,
}

impl Server {
    /// STUN Binding (RFC 8489 §6.3) with NAT behaviour discovery (RFC 5780 §6.1).
    pub(super) fn binding(&mut self, ft: FiveTuple, msg: &Message<'_>) {
        self.stats.binding_requests += 1;
        let plan = match self.binding_plan(ft, msg) {
            Ok(p) => p,
            Err(rej) => {
                self.respond_error(ft, msg, rej, None);
                return;
            }
        };
        let mut buf = vec![0u8; RESPONSE_BUF + plan.padding];
        let fp = msg.has_fingerprint();
        let software = self.config.software.as_deref();
        let n = (|| {
            let mut enc = MessageEncoder::new(
                &mut buf,
                Class::Success,
                Method::BINDING,
                msg.transaction_id(),
            )?;
            enc.xor_address(attr::XOR_MAPPED_ADDRESS, &ft.client)?;
            // A wildcard listener does not know which of the host's addresses the
            // request reached: saying 0.0.0.0 would help no one.
            if !plan.from.ip().is_unspecified() {
                enc.address(attr::RESPONSE_ORIGIN, &plan.from)?;
            }
            if let Some(other) = plan.other {
                enc.address(attr::OTHER_ADDRESS, &other)?;
            }
            if plan.padding > 0 {
                enc.attr_with(attr::PADDING, plan.padding, |v| v.fill(0))?;
            }
            if let Some(s) = software {
                enc.software(s)?;
            }
            if fp {
                enc.fingerprint()?;
            }
            Ok::<_, tsunagi_stun::EncodeError>(enc.finish())
        })();
        let Ok(n) = n else { return };
        buf.truncate(n);
        let destination = if plan.from == ft.server && plan.to == ft.client {
            Destination::Client(ft)
        } else {
            Destination::ClientFrom {
                local: plan.from,
                client: plan.to,
            }
        };
        self.transmits.push_back(Transmit {
            destination,
            payload: buf,
        });
    }

    /// Where a Binding response comes from and goes to, following CHANGE-REQUEST,
    /// RESPONSE-PORT and PADDING. The error cases follow coturn's where RFC 5780
    /// leaves the choice open: the RFC 5780 attributes are UDP-only (400 over a
    /// stream), and PADDING cannot be combined with RESPONSE-PORT (400).
    pub(super) fn binding_plan(
        &self,
        ft: FiveTuple,
        msg: &Message<'_>,
    ) -> Result<BindingPlan, Reject> {
        let group = self
            .config
            .discovery
            .iter()
            .find(|g| g.contains(ft.server))
            .copied();
        let udp = ft.transport == Transport::Udp;
        // RFC 5780 §6.1: a server that cannot honour the attribute treats it as unknown.
        let unsupported = |typ: u16, why: &str| {
            let mut r = Reject::new(420, format!("Unknown Attribute: {why}"));
            r.unknown = vec![typ];
            r
        };
        let mut from = ft.server;
        if let Some(v) = msg.get(attr::CHANGE_REQUEST) {
            let (change_ip, change_port) = attr::decode_change_request(v)
                .map_err(|_| Reject::new(400, "Bad Request: malformed CHANGE-REQUEST"))?;
            // Both flags clear asks for nothing (some clients always send it).
            if change_ip || change_port {
                let Some(g) = group else {
                    return Err(unsupported(
                        attr::CHANGE_REQUEST,
                        "CHANGE-REQUEST needs a second server address (RFC 5780: set alt-listening-ip)",
                    ));
                };
                if !udp {
                    return Err(Reject::new(
                        400,
                        "Bad Request: CHANGE-REQUEST works over UDP only (RFC 5780)",
                    ));
                }
                from = g.changed(ft.server, change_ip, change_port).ok_or_else(|| {
                    unsupported(
                        attr::CHANGE_REQUEST,
                        "CHANGE-REQUEST: one server IP (no alt-listening-ip), so the port can change but not the IP",
                    )
                })?;
            }
        }
        let mut to = ft.client;
        let response_port = msg.get(attr::RESPONSE_PORT);
        if let Some(v) = response_port {
            if group.is_none() {
                return Err(unsupported(
                    attr::RESPONSE_PORT,
                    "RESPONSE-PORT needs NAT discovery on (RFC 5780: set alt-listening-ip or -port)",
                ));
            }
            if !udp {
                return Err(Reject::new(
                    400,
                    "Bad Request: RESPONSE-PORT works over UDP only (RFC 5780)",
                ));
            }
            let port = attr::decode_response_port(v)
                .map_err(|_| Reject::new(400, "Bad Request: malformed RESPONSE-PORT"))?;
            if port == 0 {
                return Err(Reject::new(400, "Bad Request: RESPONSE-PORT is 0"));
            }
            to = SocketAddr::new(ft.client.ip(), port);
        }
        let mut padding = 0;
        if let Some(v) = msg.get(attr::PADDING) {
            if !udp {
                return Err(Reject::new(
                    400,
                    "Bad Request: PADDING works over UDP only (RFC 5780)",
                ));
            }
            if response_port.is_some() {
                return Err(Reject::new(
                    400,
                    "Bad Request: PADDING and RESPONSE-PORT cannot be used together",
                ));
            }
            // As long as the request's: the response is never larger than what the
            // client sent plus the fixed attributes, so PADDING cannot amplify.
            padding = v.len();
        }
        Ok(BindingPlan {
            from,
            to,
            other: group.and_then(|g| g.other(ft.server)),
            padding,
        })
    }
}
