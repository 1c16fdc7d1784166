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
            if let Some(prev) = seen.insert(line.name.text.clone(), line.name.pos) {
                let (l, _) = self.src.line_col(prev);
                self.err(
                    line.name.pos,
                    &ipath,
                    format!(
                        "duplicate server name `{}` (already defined at line {l})",
                        line.name.text
                    ),
                );
                continue;
            }
            let resolved = (self.opts.resolver)(&line.host, line.port)
                .map_err(|e| format!("cannot resolve `{}`: {e}", line.host))
                .and_then(|addrs| {
                    addrs
                        .first()
                        .copied()
                        .ok_or_else(|| format!("host `{}` has no address", line.host))
                });
            let addr = match resolved {
                Ok(a) => a,
                Err(why) => {
                    self.err(
                        line.addr_tok.pos,
                        &ipath,
                        format!("server `{}`: {why}", line.name.text),
                    );
                    continue;
                }
            };
            let tls = self.server_tls(&line, &ipath);
            if let (Some((_, t)), Some((ServerProto::Http2, _))) = (&line.send_proxy, &line.proto) {
                self.err(
                    t.pos,
                    &ipath,
                    "`send-proxy` with `proto h2` is not supported: an HTTP/2 connection carries \
                     many clients' requests, a PROXY header names one",
                );
            }
            if let Some((ServerProto::Http2, tok)) = &line.proto
                && st.mode != Mode::Http
            {
                self.err(
                    tok.pos,
                    &ipath,
                    format!(
                        "server `{}`: `proto h2` needs `mode http` (a tcp backend relays bytes)",
                        line.name.text
                    ),
                );
            }
            if line.cookie.is_some() && st.cookie.is_none() {
                self.warn(
                    line.addr_tok.pos,
                    &ipath,
                    format!(
                        "server `{}` has a cookie but the backend has no `cookie` setting",
                        line.name.text
                    ),
                );
            }
            if st.mode == Mode::Http
                && let Some(t) = line
                    .shutdown_on_down
                    .as_ref()
                    .or(line.shutdown_backups_on_up.as_ref())
            {
                self.warn(
                    t.pos,
                    &ipath,
                    format!(
                        "server `{}`: `{}` acts on the XDP tier's flows only; the L7 tier \
                         lets sessions end by themselves",
                        line.name.text, t.text
                    ),
                );
            }
            servers.push(Server {
                name: line.name.text.clone(),
                host: line.addr_tok.text.clone(),
                addr,
                check: line.check,
                weight: line.weight,
                backup: line.backup,
                cookie: line
                    .cookie
                    .or_else(|| Some(line.name.text.clone()))
                    .filter(|_| st.cookie.is_some()),
                maxconn: line.maxconn,
                disabled: line.disabled,
                proto: line.proto.map_or(ServerProto::Http1, |(p, _)| p),
                tls,
                send_proxy: line.send_proxy.as_ref().map(|(v, _)| *v),
                shutdown_on_down: line.shutdown_on_down.is_some(),
                shutdown_backups_on_up: line.shutdown_backups_on_up.is_some(),
            });
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
            },
            name_pos: name.span().start,
            path: path.to_string(),
            declared_servers: self.items(&rp.server, path, "server").len(),
        }
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
