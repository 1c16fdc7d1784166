//! Checks across sections: backend references, modes, duplicate VIPs, and each
//! frontend's tier (decided in [`super::tier`]).

use super::*;

impl Builder<'_> {
    pub(super) fn cross_checks(
        &mut self,
        fes: &mut [FeDraft],
        bes: &[BeDraft],
        dp: Option<&Dataplane>,
    ) {
        let be_names: Vec<&str> = bes.iter().map(|b| b.be.name.as_str()).collect();
        let mut bound: HashMap<(SocketAddr, bool), String> = HashMap::new();
        let mut used_by_userspace: Vec<String> = Vec::new();
        let mut referenced: Vec<String> = Vec::new();
        for f in fes.iter_mut() {
            self.upgrade_to_http(f, bes);
            // references
            for (b, pos, path) in f.refs.clone() {
                referenced.push(b.clone());
                match bes.iter().find(|x| x.be.name == b) {
                    None => {
                        let h = hint(&b, be_names.iter().copied());
                        self.err(pos, &path, format!("backend `{b}` is not defined{h}"));
                    }
                    Some(be) if be.be.mode != f.fe.mode => {
                        self.err(
                            pos,
                            &path,
                            format!(
                                "frontend `{}` is mode {} but backend `{b}` is mode {}",
                                f.fe.name,
                                mode_name(f.fe.mode),
                                mode_name(be.be.mode)
                            ),
                        );
                    }
                    Some(_) => {}
                }
            }
            for (b, pos, path) in f.nbsrv.clone() {
                if !be_names.contains(&b.as_str()) {
                    let h = hint(&b, be_names.iter().copied());
                    self.err(
                        pos,
                        &path,
                        format!("backend `{b}` in nbsrv() is not defined{h}"),
                    );
                }
            }
            f.fe.tier = self.decide_tier(f, bes, dp);
            if f.fe.tier == Tier::Xdp {
                if f.udp_binds.iter().any(|u| *u)
                    && let Some(be) =
                        f.fe.default_backend
                            .as_ref()
                            .and_then(|n| bes.iter().find(|b| &b.be.name == n))
                {
                    for s in be.be.servers.iter().filter(|s| s.check) {
                        self.warn(
                            f.name_pos,
                            &f.path,
                            format!(
                                "server `{}/{}` serves a UDP VIP but is health-checked over TCP; it will be marked DOWN unless it also accepts TCP on {}",
                                be.be.name, s.name, s.addr
                            ),
                        );
                    }
                }
                if f.fe.default_backend.is_none() {
                    self.err(
                        f.name_pos,
                        &f.path,
                        "an XDP frontend needs `default_backend`",
                    );
                }
                if let Some(be) =
                    f.fe.default_backend
                        .as_ref()
                        .and_then(|n| bes.iter().find(|b| &b.be.name == n))
                    && be.be.balance == Balance::LeastConn
                {
                    self.warn(f.name_pos, &f.path, format!("backend `{}` uses leastconn, which XDP cannot do: flows are spread by Maglev hashing instead", be.be.name));
                }
                if f.maxconn_own {
                    self.warn(
                        f.name_pos,
                        &f.path,
                        "maxconn is not enforced by the XDP tier",
                    );
                }
            } else {
                used_by_userspace.extend(f.refs.iter().map(|r| r.0.clone()));
                if f.fe.timeouts.client.is_none() {
                    self.warn(f.name_pos, &f.path, "missing `timeout client` (clients may hold connections forever); set it here or in [defaults]");
                }
            }
            // duplicate binds
            for ((b, (pos, path)), udp) in f.fe.binds.iter().zip(&f.bind_locs).zip(&f.udp_binds) {
                if *udp && f.fe.tier != Tier::Xdp {
                    self.err(
                        *pos,
                        path,
                        "a `udp@` bind is a UDP VIP, served only by the XDP tier (mode tcp, a [dataplane] section, nothing to inspect)",
                    );
                }
                if let Some(other) = bound.insert((b.addr, *udp), f.fe.name.clone()) {
                    self.err(
                        *pos,
                        path,
                        format!("{} is already bound by frontend `{other}`", b.addr),
                    );
                }
            }
        }
        self.xdp_limits(fes, bes, dp);
        for be in bes {
            let only_xdp =
                referenced.contains(&be.be.name) && !used_by_userspace.contains(&be.be.name);
            if !only_xdp {
                let mut missing = Vec::new();
                if be.be.timeouts.connect.is_none() {
                    missing.push("`timeout connect`");
                }
                if be.be.timeouts.server.is_none() {
                    missing.push("`timeout server`");
                }
                if !missing.is_empty() {
                    self.warn(
                        be.name_pos,
                        &be.path,
                        format!(
                            "missing {}; set it here or in [defaults]",
                            missing.join(" and ")
                        ),
                    );
                }
            }
            // A backend that only holds a stick table (HAProxy's usual pattern) serves
            // nothing.
            if be.declared_servers == 0 && be.be.stick_table.is_none() {
                self.warn(
                    be.name_pos,
                    &be.path,
                    "backend has no server: requests to it get 503",
                );
            }
        }
    }

    /// A `mode tcp` frontend whose backends are all `mode http` is served as HTTP, as
    /// HAProxy upgrades such a stream to HTTP when it reaches the backend; one with
    /// `tcp_request` rules keeps the mode error (lb's HTTP path does not run them).
    fn upgrade_to_http(&mut self, f: &mut FeDraft, bes: &[BeDraft]) {
        if f.fe.mode != Mode::Tcp
            || f.refs.is_empty()
            || !f.fe.tcp_request.is_empty()
            || f.udp_binds.iter().any(|u| *u)
        {
            return;
        }
        let http = |b: &String| {
            bes.iter()
                .any(|x| &x.be.name == b && x.be.mode == Mode::Http)
        };
        if f.refs.iter().all(|(b, _, _)| http(b)) {
            f.fe.mode = Mode::Http;
            self.warn(
                f.name_pos,
                &f.path,
                "a mode tcp frontend whose backends are mode http: served as mode http, as HAProxy upgrades the stream to HTTP",
            );
        }
    }
}
