//! The XDP tier decision and its limits: which frontends XDP can serve, and what it
//! cannot enforce there.

use super::*;

impl Builder<'_> {
    /// Which tier serves frontend `f`: XDP when it is `mode tcp`, a `[dataplane]` exists
    /// and nothing it needs is beyond XDP's NAT (else userspace); a forced `tier` that
    /// cannot be honoured is an error.
    pub(super) fn decide_tier(
        &mut self,
        f: &FeDraft,
        bes: &[BeDraft],
        dp: Option<&Dataplane>,
    ) -> Tier {
        let mut reasons = inspection_reasons(&f.fe);
        // What the default backend's servers need that XDP's NAT cannot do.
        let be =
            f.fe.default_backend
                .as_ref()
                .and_then(|n| bes.iter().find(|b| &b.be.name == n));
        if be.is_some_and(|b| !b.be.tcp_request.is_empty() || b.be.inspect_delay.is_some()) {
            reasons.push("the backend's tcp_request content inspection");
        }
        let servers = be.map_or(&[][..], |b| &b.be.servers[..]);
        if servers.iter().any(|s| s.send_proxy.is_some()) {
            reasons.push("the PROXY protocol toward servers (send-proxy)");
        }
        if servers.iter().any(|s| s.tls.is_some()) {
            reasons.push("TLS toward servers (ssl)");
        }
        match (f.fe.mode, dp, f.tier_forced) {
            (_, _, Some((Tier::Userspace, _))) => Tier::Userspace,
            (Mode::Http, _, Some((Tier::Xdp, pos))) => {
                self.err(
                    pos,
                    &format!("{}.tier", f.path),
                    "tier \"xdp\" needs mode tcp: XDP does not look at HTTP",
                );
                Tier::Userspace
            }
            (Mode::Tcp, None, Some((Tier::Xdp, pos))) => {
                self.err(
                    pos,
                    &format!("{}.tier", f.path),
                    "tier \"xdp\" needs a [dataplane] section",
                );
                Tier::Userspace
            }
            (Mode::Tcp, Some(_), forced) => {
                if reasons.is_empty() {
                    Tier::Xdp
                } else if let Some((_, pos)) = forced {
                    self.err(pos, &format!("{}.tier", f.path), format!("this frontend cannot be served by XDP: it needs {} (served in userspace when `tier` is \"auto\")", reasons.join(", ")));
                    Tier::Userspace
                } else {
                    Tier::Userspace
                }
            }
            _ => Tier::Userspace,
        }
    }

    /// What the XDP maps can hold, and Maglev's balance guarantee.
    pub(super) fn xdp_limits(&mut self, fes: &[FeDraft], bes: &[BeDraft], dp: Option<&Dataplane>) {
        use lb_common::maps::{MAX_BACKENDS, MAX_FILTER_RULES, MAX_VIPS};
        let Some(dp) = dp else { return };
        let xdp: Vec<&FeDraft> = fes.iter().filter(|f| f.fe.tier == Tier::Xdp).collect();
        let mut vips = 0usize;
        let mut endpoints: Vec<SocketAddr> = Vec::new();
        let mut rules = dp.deny_src.len();
        for f in &xdp {
            rules += f.fe.deny_src.len() + f.fe.allow_src.len();
            let be =
                f.fe.default_backend
                    .as_ref()
                    .and_then(|n| bes.iter().find(|b| &b.be.name == n));
            for (b, (pos, path)) in f.fe.binds.iter().zip(&f.bind_locs) {
                vips += 1;
                if vips == MAX_VIPS as usize + 1 {
                    self.err(
                        *pos,
                        path,
                        format!("too many XDP VIPs: the data path holds at most {MAX_VIPS}"),
                    );
                }
                if let Some(be) = be
                    && !be.be.servers.is_empty()
                    && be
                        .be
                        .servers
                        .iter()
                        .all(|s| s.addr.is_ipv4() != b.addr.is_ipv4())
                {
                    self.err(
                            *pos,
                            path,
                            format!(
                                "VIP {} and every server of backend `{}` are of different address families: XDP NAT cannot cross them",
                                b.addr, be.be.name
                            ),
                        );
                }
            }
            if let Some(be) = be {
                for s in &be.be.servers {
                    if !endpoints.contains(&s.addr) {
                        endpoints.push(s.addr);
                    }
                }
                let n = be.be.servers.len() as u64;
                if n > 0 && u64::from(dp.maglev_table_size) < 100 * n {
                    self.warn(
                        f.name_pos,
                        &f.path,
                        format!(
                            "maglev_table_size {} is less than 100 x the {n} servers of backend `{}`: balance may be off by more than 1%",
                            dp.maglev_table_size, be.be.name
                        ),
                    );
                }
            }
        }
        if endpoints.len() > MAX_BACKENDS as usize
            && let Some(f) = xdp.first()
        {
            self.err(
                f.name_pos,
                &f.path,
                format!(
                    "too many XDP backend servers ({}): the data path holds at most {MAX_BACKENDS}",
                    endpoints.len()
                ),
            );
        }
        if rules > MAX_FILTER_RULES as usize {
            self.err(
                0,
                "dataplane.deny_src",
                format!("too many source filter rules ({rules}): the data path holds at most {MAX_FILTER_RULES}"),
            );
        }
    }
}

pub(super) fn inspection_reasons(fe: &Frontend) -> Vec<&'static str> {
    let mut r = Vec::new();
    if !fe.tcp_request.is_empty() || fe.inspect_delay.is_some() {
        r.push("tcp_request content inspection");
    }
    if !fe.use_backend.is_empty() {
        r.push("use_backend rules");
    }
    if fe.binds.iter().any(|b| b.tls.is_some()) {
        r.push("TLS termination (ssl)");
    }
    if fe.binds.iter().any(|b| b.accept_proxy) {
        r.push("the PROXY protocol from clients (accept-proxy)");
    }
    if fe.binds.iter().any(|b| b.addr.ip().is_unspecified()) {
        r.push("a specific VIP address (not `*`)");
    }
    r
}
