//! `[backend.X]` (and the backend half of `[listen.X]`): servers, balancing, cookies,
//! checks and the HTTP rule lists.

use super::*;

impl Builder<'_> {
    // ---- sections ----

    pub(super) fn backend(
        &mut self,
        name: &S,
        rp: &RawProxy,
        path: &str,
        st: &Inherit,
        kind: Kind,
    ) -> BeDraft {
        let mut servers: Vec<Server> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (ipath, dir) in self.dirs(&rp.server, path, "server", SERVER, false) {
            let line = match d::server(&mut dir.args()) {
                Ok(l) => l,
                Err(p) => {
                    self.problem(p, &ipath);
                    continue;
                }
            };
            if !self.new_server_name(&mut seen, &line.name.text, line.name.pos, &ipath) {
                continue;
            }
            let Some(addrs) = self.init_addrs(&line, &ipath) else {
                continue;
            };
            let addr = addrs.first().copied();
            if let Some(s) = self.server(&line, &line.name.text, addr, &ipath, st) {
                servers.push(s);
            }
        }
        let tpl_key = "server_template";
        for (ipath, dir) in self.dirs(&rp.server_template, path, tpl_key, SERVER_TEMPLATE, false) {
            let tpl = match d::server_template(&mut dir.args()) {
                Ok(l) => l,
                Err(p) => {
                    self.problem(p, &ipath);
                    continue;
                }
            };
            let Some(addrs) = self.init_addrs(&tpl.server, &ipath) else {
                continue;
            };
            // With DNS discovery each server takes a distinct address of the answer (as
            // discovery assigns them at run time) and servers beyond it start without one;
            // without it every server has the first address, as HAProxy.
            let discovered =
                tpl.server.resolvers.is_some() && tpl.server.host.parse::<IpAddr>().is_err();
            for (k, id) in tpl.ids.clone().enumerate() {
                let name = format!("{}{id}", tpl.prefix.text);
                if !self.new_server_name(&mut seen, &name, tpl.prefix.pos, &ipath) {
                    continue;
                }
                let addr = if discovered {
                    addrs.get(k).copied()
                } else {
                    addrs.first().copied()
                };
                if let Some(s) = self.server(&tpl.server, &name, addr, &ipath, st) {
                    servers.push(s);
                }
            }
        }
        let mut check = st.check.clone();
        if !st.check_timeout_set {
            check.timeout = st.timeouts.check.unwrap_or(check.interval);
        }
        if matches!(st.balance, Balance::Uri { .. }) && st.mode == Mode::Tcp {
            let at = rp
                .balance
                .as_ref()
                .map_or(name.span().start, |b| b.span().start);
            self.err(
                at,
                &format!("{path}.balance"),
                "balance uri needs mode http (a tcp backend has no URI)",
            );
        }
        if st.cookie.is_some()
            && st.mode == Mode::Tcp
            && let Some(c) = &rp.cookie
        {
            self.err(
                c.span().start,
                &format!("{path}.cookie"),
                "cookie persistence needs mode http",
            );
        }
        // A backend's own http-request rules and ACLs (a listen's go to its frontend).
        let mut acls = AclSet::default();
        let mut http_request = Vec::new();
        let mut http_response = Vec::new();
        let mut http_after_response = Vec::new();
        let (mut tcp_request, mut inspect_delay) = (Vec::new(), None);
        if kind == Kind::Backend {
            let mut names = Vec::new();
            let mut nbsrv = Vec::new();
            self.acls(rp, path, &mut acls, &mut names, &mut nbsrv);
            [http_request, http_response, http_after_response] =
                self.http_rule_lists(rp, path, &acls, &names, st.mode, &mut nbsrv);
            (tcp_request, inspect_delay) =
                self.tcp_rules(rp, path, &acls, &names, &mut nbsrv, true);
            if st.mode == Mode::Http
                && let Some(t) = &rp.tcp_request
                && !tcp_request.is_empty()
            {
                self.err(
                    t.span().start,
                    &format!("{path}.tcp_request"),
                    "tcp_request rules in a mode http backend are not supported (only in mode tcp backends)",
                );
            }
        }
        BeDraft {
            be: Backend {
                name: name.get_ref().clone(),
                mode: st.mode,
                balance: st.balance,
                cookie: st.cookie.clone(),
                check,
                servers,
                timeouts: st.timeouts,
                retries: st.retries,
                redispatch: st.redispatch,
                forwardfor: st.forwardfor,
                http_request,
                http_response,
                http_after_response,
                tcp_request,
                inspect_delay,
                acls,
                errorfiles: st.errorfiles.clone(),
                stick_table: if kind == Kind::Backend {
                    self.stick_table(rp, path)
                } else {
                    None
                },
                log_targets: st.log_targets.clone(),
                log_health_checks: st.log_health_checks,
                compression: self.http_only_compression(rp, path, st),
            },
            name_pos: name.span().start,
            path: path.to_string(),
            declared_servers: self.items(&rp.server, path, "server").len()
                + self
                    .items(&rp.server_template, path, "server_template")
                    .len(),
        }
    }

    /// Records server name `name`; `false` (and an error) when the backend has it already.
    fn new_server_name(
        &mut self,
        seen: &mut HashMap<String, usize>,
        name: &str,
        pos: usize,
        ipath: &str,
    ) -> bool {
        match seen.insert(name.to_owned(), pos) {
            None => true,
            Some(prev) => {
                let (l, _) = self.src.line_col(prev);
                self.err(
                    pos,
                    ipath,
                    format!("duplicate server name `{name}` (already defined at line {l})"),
                );
                false
            }
        }
    }

    /// The addresses a server starts with, by its `init-addr` methods (default `last,libc`):
    /// empty for `none` (the server waits for DNS in MAINT); `None` (reported) when no
    /// method gives one.
    fn init_addrs(&mut self, line: &d::ServerLine, ipath: &str) -> Option<Vec<SocketAddr>> {
        use d::InitAddr;
        let methods = line
            .init_addr
            .as_ref()
            .map_or(&[InitAddr::Last, InitAddr::Libc][..], |(m, _)| m.as_slice());
        let mut why = None;
        for m in methods {
            match m {
                // The running lb's address, applied by discovery on reload; nothing at load.
                InitAddr::Last => {}
                InitAddr::None => return Some(Vec::new()),
                InitAddr::Ip(ip) => return Some(vec![SocketAddr::new(*ip, line.port)]),
                InitAddr::Libc => match (self.opts.resolver)(&line.host, line.port) {
                    Ok(addrs) if !addrs.is_empty() => {
                        let mut addrs = addrs;
                        if let Some(p) = line.resolve_prefer.filter(|_| line.resolvers.is_some()) {
                            // The preferred family first, keeping the resolver's order.
                            addrs.sort_by_key(|a| a.is_ipv4() != (p == AddrFamily::V4));
                        }
                        let mut uniq: Vec<SocketAddr> = Vec::with_capacity(addrs.len());
                        for a in addrs {
                            if !uniq.contains(&a) {
                                uniq.push(a);
                            }
                        }
                        return Some(uniq);
                    }
                    Ok(_) => why = Some(format!("host `{}` has no address", line.host)),
                    Err(e) => why = Some(format!("cannot resolve `{}`: {e}", line.host)),
                },
            }
        }
        let why = why.unwrap_or_else(|| {
            format!(
                "no address for `{}`: init-addr `last` has none at start (add `libc` or `none`)",
                line.host
            )
        });
        self.err(
            line.addr_tok.pos,
            ipath,
            format!("server `{}`: {why}", line.name.text),
        );
        None
    }

    /// The server `name` of `line`, at `addr` (`None`: no address yet, in MAINT until DNS
    /// gives one).
    fn server(
        &mut self,
        line: &d::ServerLine,
        name: &str,
        addr: Option<SocketAddr>,
        ipath: &str,
        st: &Inherit,
    ) -> Option<Server> {
        let resolve = self.server_resolve(line, ipath);
        if addr.is_none() && resolve.is_none() {
            self.err(
                line.addr_tok.pos,
                ipath,
                format!(
                    "server `{name}`: `init-addr none` needs `resolvers NAME` (nothing would \
                     ever give it an address)"
                ),
            );
            return None;
        }
        let tls = self.server_tls(line, ipath);
        if let (Some((_, t)), Some((ServerProto::Http2, _))) = (&line.send_proxy, &line.proto) {
            self.err(
                t.pos,
                ipath,
                "`send-proxy` with `proto h2` is not supported: an HTTP/2 connection carries \
                 many clients' requests, a PROXY header names one",
            );
        }
        if let Some((ServerProto::Http2, tok)) = &line.proto
            && st.mode != Mode::Http
        {
            self.err(
                tok.pos,
                ipath,
                format!(
                    "server `{name}`: `proto h2` needs `mode http` (a tcp backend relays bytes)"
                ),
            );
        }
        if line.cookie.is_some() && st.cookie.is_none() {
            self.warn(
                line.addr_tok.pos,
                ipath,
                format!("server `{name}` has a cookie but the backend has no `cookie` setting"),
            );
        }
        if st.mode == Mode::Http
            && let Some(t) = line.shutdown_backups_on_up.as_ref()
        {
            self.warn(
                t.pos,
                ipath,
                format!(
                    "server `{name}`: `{}` acts on the XDP tier's flows only; the L7 tier \
                     lets sessions end by themselves",
                    t.text
                ),
            );
        }
        let unspecified = match resolve.as_ref().map(|r| r.prefer) {
            Some(AddrFamily::V6) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        };
        Some(Server {
            name: name.to_owned(),
            host: line.addr_tok.text.clone(),
            addr: addr.unwrap_or(SocketAddr::new(unspecified, line.port)),
            check: line.check,
            weight: line.weight,
            backup: line.backup,
            cookie: line
                .cookie
                .clone()
                .or_else(|| Some(name.to_owned()))
                .filter(|_| st.cookie.is_some()),
            maxconn: line.maxconn,
            disabled: line.disabled,
            proto: line.proto.as_ref().map_or(ServerProto::Http1, |(p, _)| *p),
            tls,
            send_proxy: line.send_proxy.as_ref().map(|(v, _)| *v),
            shutdown_on_down: line.shutdown_on_down.is_some(),
            shutdown_backups_on_up: line.shutdown_backups_on_up.is_some(),
            unresolved: addr.is_none(),
            resolve,
        })
    }

    /// `resolvers NAME [resolve-prefer …]` on a server line: the section must exist.
    fn server_resolve(&mut self, line: &d::ServerLine, ipath: &str) -> Option<ServerResolve> {
        let r = line.resolvers.as_ref()?;
        if !self.resolver_names.contains(&r.text) {
            let h = hint(&r.text, self.resolver_names.iter().map(String::as_str));
            self.err(
                r.pos,
                ipath,
                format!("no [resolvers.{}] section{h}", r.text),
            );
            return None;
        }
        // An IP address has nothing to resolve (HAProxy ignores `resolvers` there too).
        if line.host.parse::<IpAddr>().is_ok() {
            return None;
        }
        Some(ServerResolve {
            resolvers: r.text.clone(),
            fqdn: line.host.clone(),
            port: line.port,
            prefer: line.resolve_prefer.unwrap_or(AddrFamily::V6),
        })
    }

    /// A section's `tcp_request` rules and `inspect-delay`. A backend takes only
    /// `tcp-request content` rules, as HAProxy.
    pub(super) fn tcp_rules(
        &mut self,
        rp: &RawProxy,
        path: &str,
        acls: &AclSet,
        names: &[String],
        nbsrv: &mut Vec<(String, usize, String)>,
        backend: bool,
    ) -> (Vec<TcpRequestRule>, Option<Duration>) {
        let mut tcp_request = Vec::new();
        let mut inspect_delay = None;
        for (ipath, dir) in self.dirs(&rp.tcp_request, path, "tcp_request", TCP_REQ, true) {
            match d::tcp_request(&mut dir.args()) {
                Ok(TcpLine::InspectDelay(dl)) => {
                    if let Some(c) = &dir.cond {
                        self.err(c.pos(0), &ipath, "`inspect-delay` takes no condition");
                    }
                    inspect_delay = Some(dl);
                }
                Ok(TcpLine::Rule(_, false)) if backend => {
                    self.err(
                        dir.toks.first().map_or(0, |t| t.pos),
                        &ipath,
                        "a backend takes only `tcp-request content` rules (connections are accepted by frontends)",
                    );
                }
                Ok(TcpLine::Rule(action, _content)) => {
                    let cond = match &dir.cond {
                        Some(c) => match self.condition(c, acls, names, &ipath, nbsrv, false) {
                            Some(c) => Some(c),
                            None => continue,
                        },
                        None => None,
                    };
                    // Nothing tracks at the TCP level yet: such a rule would never match.
                    if let (Some(c), Some(m)) = (&cond, &dir.cond)
                        && c.reads_stick()
                    {
                        self.err(
                            m.pos(0),
                            &ipath,
                            "stick-table fetches (sc_*, src_*, table_*) are not supported in tcp_request rules; use http_request rules",
                        );
                        continue;
                    }
                    tcp_request.push(TcpRequestRule { action, cond });
                }
                Err(p) => self.problem(p, &ipath),
            }
        }
        (tcp_request, inspect_delay)
    }

    /// A section's `http_request`, `http_response` and `http_after_response` lists, in that
    /// order, each compiled by [`Self::http_rules`].
    pub(super) fn http_rule_lists(
        &mut self,
        rp: &RawProxy,
        path: &str,
        acls: &AclSet,
        names: &[String],
        mode: Mode,
        nbsrv: &mut Vec<(String, usize, String)>,
    ) -> [Vec<HttpRule>; 3] {
        [
            RuleSide::Request,
            RuleSide::Response,
            RuleSide::AfterResponse,
        ]
        .map(|side| self.http_rules(rp, side, path, acls, names, mode, nbsrv))
    }

    /// The `http_request`, `http_response` or `http_after_response` rules of a section.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn http_rules(
        &mut self,
        rp: &RawProxy,
        side: RuleSide,
        path: &str,
        acls: &AclSet,
        names: &[String],
        mode: Mode,
        nbsrv: &mut Vec<(String, usize, String)>,
    ) -> Vec<HttpRule> {
        let (list, key, spec) = match side {
            RuleSide::Request => (&rp.http_request, "http_request", HTTP_REQ),
            RuleSide::Response => (&rp.http_response, "http_response", HTTP_RES),
            RuleSide::AfterResponse => (&rp.http_after_response, "http_after_response", HTTP_RES),
        };
        let response = side != RuleSide::Request;
        let mut out = Vec::new();
        for (_, ipath, span, item) in self.items(list, path, key) {
            if mode == Mode::Tcp {
                self.err(span.start, &ipath, format!("{key} rules need mode http"));
                continue;
            }
            let at = span.start;
            let Some(dir) = self.dir(item, span, spec, true, &ipath) else {
                continue;
            };
            let action = match d::http_action(&mut dir.args(), side) {
                Ok(a) => a,
                Err(p) => {
                    self.problem(p, &ipath);
                    continue;
                }
            };
            if !response
                && let Some(kw) = action
                    .formats()
                    .into_iter()
                    .filter_map(|f| f.compiled().ok())
                    .find_map(|f| f.response_fetch())
            {
                self.err(
                    at,
                    &ipath,
                    format!("`%[{kw}…]` is a response fetch: only http_response rules can use it"),
                );
                continue;
            }
            let cond = match &dir.cond {
                Some(c) => match self.condition(c, acls, names, &ipath, nbsrv, response) {
                    Some(c) => Some(c),
                    None => continue,
                },
                None => None,
            };
            self.stick_refs(&action, cond.as_ref(), at, path);
            out.push(HttpRule { action, cond });
        }
        out
    }
}
