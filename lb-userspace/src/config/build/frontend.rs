//! `[frontend.X]` (and the frontend half of `[listen.X]`): binds, TLS, tcp-request
//! rules, routing.

use super::*;

impl Builder<'_> {
    pub(super) fn frontend(
        &mut self,
        name: &S,
        rp: &RawProxy,
        path: &str,
        st: &Inherit,
        kind: Kind,
        has_dp: bool,
    ) -> FeDraft {
        let mut refs = Vec::new();
        let mut nbsrv = Vec::new();
        // binds
        let mut binds = Vec::new();
        let mut bind_locs = Vec::new();
        let mut udp_binds = Vec::new();
        if rp.bind.is_none() {
            self.err(
                name.span().start,
                path,
                "no `bind`: a frontend needs at least one address to listen on",
            );
        }
        for (ipath, dir) in self.dirs(&rp.bind, path, "bind", BIND, false) {
            let line = match d::bind(&mut dir.args()) {
                Ok(l) => l,
                Err(p) => {
                    self.problem(p, &ipath);
                    continue;
                }
            };
            let tls = if line.ssl.is_some() {
                let mut certs = Vec::new();
                for (p, t) in &line.certs {
                    let resolved = self.resolve_path(&p.to_string_lossy());
                    // `crt DIRECTORY`: every certificate file in it, as HAProxy loads them.
                    let files = if resolved.is_dir() {
                        match cert_dir(&resolved) {
                            Ok(f) if !f.is_empty() => f,
                            Ok(_) => {
                                self.err(
                                    t.pos,
                                    &ipath,
                                    format!("crt directory `{}` holds no certificate", t.text),
                                );
                                continue;
                            }
                            Err(e) => {
                                self.err(
                                    t.pos,
                                    &ipath,
                                    format!("crt directory `{}`: cannot read: {e}", t.text),
                                );
                                continue;
                            }
                        }
                    } else {
                        vec![resolved]
                    };
                    for f in files {
                        if let Err(m) = check_pem(&f) {
                            let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
                            let what = match name
                                .filter(|_| f != self.resolve_path(&p.to_string_lossy()))
                            {
                                Some(n) => format!("{}/{n}", t.text.trim_end_matches('/')),
                                None => t.text.clone(),
                            };
                            self.err(t.pos, &ipath, format!("certificate `{what}`: {m}"));
                        }
                        certs.push(f);
                    }
                }
                if st.mode == Mode::Tcp && !has_dp {
                    // TLS termination in userspace mode tcp is fine.
                }
                let ticket_keys = line.ticket_keys.as_ref().map(|(p, t)| {
                    let resolved = self.resolve_path(&p.to_string_lossy());
                    if let Err(e) = crate::tls_keys::load(&resolved) {
                        self.err(t.pos, &ipath, format!("tls-ticket-keys `{}`: {e}", t.text));
                    }
                    resolved
                });
                let mut tls = Some(BindTls {
                    certs,
                    alpn: line
                        .alpn
                        .clone()
                        .unwrap_or_else(|| vec!["h2".into(), "http/1.1".into()]),
                    ticket_keys,
                    no_tickets: line.no_tls_tickets,
                    strict_sni: line.strict_sni,
                    strict_alpn: line.strict_alpn,
                    verify: line.verify.as_ref().map_or(ClientVerify::None, |(v, _)| *v),
                    ca_file: line
                        .ca_file
                        .as_ref()
                        .map(|(p, t)| self.tls_file(p, t, &ipath, "ca-file")),
                    ca_verify_file: line
                        .ca_verify_file
                        .as_ref()
                        .map(|(p, t)| self.tls_file(p, t, &ipath, "ca-verify-file")),
                    crl_file: line
                        .crl_file
                        .as_ref()
                        .map(|(p, t)| self.tls_file(p, t, &ipath, "crl-file")),
                    min_version: line.min_version,
                    max_version: line.max_version,
                    ciphersuites: line.ciphersuites.clone(),
                    ciphers: line.ciphers.clone(),
                    curves: line.curves.clone(),
                    prefer_client_ciphers: line.prefer_client_ciphers,
                    crt_list: Vec::new(),
                });
                if let Some(base) = tls.as_mut() {
                    for (p, t) in &line.crt_lists {
                        let entries = self.crt_list(p, t, &ipath, base);
                        base.crt_list.extend(entries);
                    }
                }
                tls
            } else {
                if let Some(a) = &line.alpn {
                    let _ = a;
                    if let Some(t) = dir.toks.iter().find(|t| t.text == "alpn") {
                        self.err(
                            t.pos,
                            &ipath,
                            "`alpn` needs `ssl crt PEM` on the same bind line",
                        );
                    }
                }
                None
            };
            bind_locs.push((dir.toks.first().map_or(dir.end, |t| t.pos), ipath.clone()));
            udp_binds.push(line.udp);
            binds.push(Bind {
                addr: line.addr,
                tls,
                accept_proxy: line.accept_proxy,
                text: dir.text.text.clone(),
            });
        }
        // ACLs and rules
        let mut acls = AclSet::default();
        let mut names = Vec::new();
        self.acls(rp, path, &mut acls, &mut names, &mut nbsrv);
        let [http_request, http_response, http_after_response] =
            self.http_rule_lists(rp, path, &acls, &names, st.mode, &mut nbsrv);
        let (tcp_request, inspect_delay) =
            self.tcp_rules(rp, path, &acls, &names, &mut nbsrv, false);
        let mut use_backend = Vec::new();
        for (ipath, dir) in self.dirs(&rp.use_backend, path, "use_backend", USE_BACKEND, true) {
            let mut args = dir.args();
            let b = match args
                .want("backend name")
                .and_then(|b| args.done().map(|_| b))
            {
                Ok(b) => b,
                Err(p) => {
                    self.problem(p, &ipath);
                    continue;
                }
            };
            // A name with `%[...]` is a log-format string resolved per request (HAProxy's
            // dynamic use_backend): compiled here (once, kept in the model); a name it yields
            // that is no backend sends the request to default_backend.
            let name = match d::compile_format(b, "backend name") {
                Ok(f) => f,
                Err(p) => {
                    self.problem(p, &ipath);
                    continue;
                }
            };
            if !b.text.contains('%') || name.as_literal().is_some() {
                refs.push((b.text.clone(), b.pos, ipath.clone()));
            }
            let Some(c) = &dir.cond else {
                self.err(dir.end, &ipath, format!("use_backend `{}` has no `if`/`unless` condition; use `default_backend = \"{}\"` for the fallback", b.text, b.text));
                continue;
            };
            if let Some(cond) = self.condition(c, &acls, &names, &ipath, &mut nbsrv, false) {
                use_backend.push(UseBackend {
                    backend: Fmt::compiled_from(b.text.clone(), name),
                    cond,
                });
            }
        }
        let own = rp.default_backend.is_some();
        let default_backend = match (&st.default_backend, kind) {
            // a listen section serves itself unless it names another default backend
            (_, Kind::Listen) if !own => Some(name.get_ref().clone()),
            (Some((n, pos)), _) => {
                let p = if own {
                    format!("{path}.default_backend")
                } else {
                    "defaults.default_backend".to_string()
                };
                refs.push((n.clone(), *pos, p));
                Some(n.clone())
            }
            (None, Kind::Listen) => Some(name.get_ref().clone()),
            (None, _) => None,
        };
        let deny_src = match &rp.deny_src {
            Some(l) => self.cidrs(l, &format!("{path}.deny_src")),
            None => Vec::new(),
        };
        let allow_src = match &rp.allow_src {
            Some(l) => self.cidrs(l, &format!("{path}.allow_src")),
            None => Vec::new(),
        };
        let tier_forced = match &rp.tier {
            None => None,
            Some(t) => match t.get_ref().as_str() {
                "auto" => None,
                "xdp" => Some((Tier::Xdp, t.span().start)),
                "userspace" => Some((Tier::Userspace, t.span().start)),
                other => {
                    let h = hint(other, ["auto", "xdp", "userspace"]);
                    self.err(t.span().start, &format!("{path}.tier"), format!("unknown tier `{other}` (expected \"auto\", \"xdp\" or \"userspace\"){h}"));
                    None
                }
            },
        };
        let stats = self.stats_page(rp, path);
        let stick_table = self.stick_table(rp, path);
        FeDraft {
            fe: Frontend {
                name: name.get_ref().clone(),
                mode: st.mode,
                tier: Tier::Userspace,
                binds,
                acls,
                http_request,
                http_response,
                http_after_response,
                tcp_request,
                inspect_delay,
                use_backend,
                default_backend,
                timeouts: st.timeouts,
                forwardfor: st.forwardfor,
                maxconn: st.maxconn,
                deny_src,
                allow_src,
                errorfiles: st.errorfiles.clone(),
                stats,
                max_header_bytes: st.max_header_bytes,
                max_headers: st.max_headers,
                log: st.log,
                log_targets: st.log_targets.clone(),
                dontlognull: st.dontlognull,
                stick_table,
                compression: self.http_only_compression(rp, path, st),
            },
            name_pos: name.span().start,
            path: path.to_string(),
            tier_forced,
            maxconn_own: rp.maxconn.is_some(),
            bind_locs,
            udp_binds,
            refs,
            nbsrv,
        }
    }

    /// `stats = ["enable", "uri /stats", "auth admin:secret", …]`.
    fn stats_page(&mut self, rp: &RawProxy, path: &str) -> Option<StatsPage> {
        let list = rp.stats.as_ref()?;
        let mut page = StatsPage::default();
        for (i, span, item) in list.get_ref().items(&list.span()) {
            let ipath = item_path(&format!("{path}.stats"), list.get_ref(), i);
            let Item::Line(line) = item else {
                self.err(
                    span.start,
                    &ipath,
                    "expected a stats line, e.g. \"uri /stats\"",
                );
                continue;
            };
            let s = self.src.str_at(line, span);
            let Some(toks) = self.words(&s, &ipath) else {
                continue;
            };
            let words: Vec<&str> = toks.iter().map(|t| t.text.as_str()).collect();
            if let Err((w, msg)) = stats_line(&mut page, &words) {
                let at = toks.get(w).map_or(s.pos(0), |t| t.pos);
                self.err(at, &ipath, msg);
            }
        }
        Some(page)
    }
}

/// The certificate files of a `crt DIRECTORY`, in name order: every file but HAProxy's
/// companions (`.key`, `.ocsp`, `.issuer`, `.sctl`) and hidden ones.
fn cert_dir(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let companion = [".key", ".ocsp", ".issuer", ".sctl"]
            .iter()
            .any(|x| name.ends_with(x));
        if p.is_file() && !companion && !name.starts_with('.') {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}
