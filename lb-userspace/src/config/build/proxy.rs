//! Settings every kind of proxy section shares (`mode`, `option`, `timeout`,
//! `errorfile`, placement), inherited from `[defaults]`.

use super::*;

impl Builder<'_> {
    /// Settings shared by every kind of section, on top of `base`.
    pub(super) fn proxy_settings(
        &mut self,
        rp: &RawProxy,
        path: &str,
        kind: Kind,
        base: &Inherit,
    ) -> Inherit {
        let mut out = base.clone();
        // keys that do not belong in this kind of section
        for (key, pos) in rp.present() {
            if let Some(k) = proxy_key(key).filter(|k| !k.allowed_in(kind)) {
                let where_ = kind.described();
                self.err(
                    pos,
                    &format!("{path}.{key}"),
                    format!(
                        "`{key}` is not allowed in {where_}; it belongs in {}",
                        k.belongs()
                    ),
                );
            }
        }
        // Written by `lb convert` for a rule that restricts access and that it could not
        // carry over: never run without it, never run with it.
        for (_, ipath, span, item) in self.items(&rp.unconverted, path, "unconverted") {
            let what = match item {
                Item::Line(t) => format!(" ({t})"),
                _ => String::new(),
            };
            self.err(
                span.start,
                &ipath,
                format!(
                    "a rule that restricts access was not converted from HAProxy{what}: lb would let through what HAProxy refuses, so it does not run with this entry; write the rule in lb's terms (or decide to drop it) and delete the entry"
                ),
            );
        }
        if let Some(m) = &rp.mode {
            match m.get_ref().as_str() {
                "tcp" => out.mode = Mode::Tcp,
                "http" => out.mode = Mode::Http,
                other => {
                    let h = hint(other, ["tcp", "http"]);
                    self.err(
                        m.span().start,
                        &format!("{path}.mode"),
                        format!("unknown mode `{other}` (expected \"tcp\" or \"http\"){h}"),
                    );
                }
            }
        }
        for (_, ipath, span, item) in self.items(&rp.timeout, path, "timeout") {
            self.timeouts(item, span, &ipath, &mut out.timeouts);
        }
        if let Some(b) = &rp.balance
            && kind != Kind::Frontend
        {
            match d::balance(&self.src.str(b)) {
                Ok(x) => out.balance = x,
                Err(p) => self.problem(p, &format!("{path}.balance")),
            }
        }
        if let Some(n) = self.int_in(&rp.retries, &format!("{path}.retries"), 0..=100u32) {
            out.retries = n;
        }
        if let Some(n) = self.int_in(&rp.maxconn, &format!("{path}.maxconn"), 1..=u32::MAX) {
            out.maxconn = Some(n);
        }
        for (key, v, slot) in [
            (
                "max_header_bytes",
                &rp.max_header_bytes,
                &mut out.max_header_bytes,
            ),
            ("max_headers", &rp.max_headers, &mut out.max_headers),
        ] {
            if let Some(n) = self.int_in(v, &format!("{path}.{key}"), 1..=1usize << 20) {
                *slot = n;
            }
        }
        if rp.compression.is_some() {
            // A section's lines replace what defaults gave (HAProxy: one `comp` per proxy).
            let mut c = Compression {
                min_size: DEFAULT_COMPRESSION_MIN_SIZE,
                ..Compression::default()
            };
            for (ipath, dir) in self.dirs(&rp.compression, path, "compression", LINE_ONLY, false) {
                if let Err(p) = d::compression(&mut dir.args(), &mut c) {
                    self.problem(p, &ipath);
                }
            }
            out.compression = Some(c);
        }
        for (ipath, dir) in self.dirs(&rp.option, path, "option", LINE_ONLY, false) {
            self.option(&dir, &ipath, &mut out);
        }
        if let Some(l) = &rp.log {
            match l.get_ref() {
                toml::Value::Boolean(b) => {
                    out.log = *b;
                    if !b {
                        // HAProxy's `no log`: nothing inherited either.
                        out.log_targets.clear();
                    }
                }
                toml::Value::String(_) | toml::Value::Array(_) => {
                    out.log = true;
                    // HAProxy appends a proxy's log lines to those inherited from defaults.
                    for item in self.log_items(l, &format!("{path}.log"), true) {
                        match item {
                            log::LogItem::Global => {
                                out.log_targets.extend(self.global_log.iter().cloned())
                            }
                            log::LogItem::Target(t) => out.log_targets.push(t),
                        }
                    }
                }
                _ => self.err(
                    l.span().start,
                    &format!("{path}.log"),
                    "log must be true, false, \"global\" or a list of log targets",
                ),
            }
        }
        for (ipath, dir) in self.dirs(&rp.errorfile, path, "errorfile", ERRORFILE, false) {
            if let Some((code, body)) = self.errorfile(&dir, &ipath) {
                out.errorfiles.insert(code, body);
            }
        }
        if let Some(db) = &rp.default_backend
            && matches!(kind, Kind::Defaults | Kind::Frontend | Kind::Listen)
        {
            out.default_backend = Some((db.get_ref().clone(), self.src.str(db).pos(0)));
        }
        if kind != Kind::Frontend {
            for (i, ipath, span, item) in self.items(&rp.cookie, path, "cookie") {
                if i > 0 {
                    self.err(span.start, &ipath, "only one cookie per backend");
                    continue;
                }
                let Some(dir) = self.dir(item, span, COOKIE, false, &ipath) else {
                    continue;
                };
                match d::cookie(&mut dir.args()) {
                    Ok(c) => out.cookie = Some(c),
                    Err(p) => self.problem(p, &ipath),
                }
            }
            let mut spec = out.check.clone();
            let mut set = out.check_timeout_set;
            for (ipath, dir) in self.dirs(&rp.check, path, "check", CHECK, false) {
                match d::check(&mut dir.args(), spec.clone()) {
                    Ok((s, t)) => {
                        spec = s;
                        set |= t;
                    }
                    Err(p) => self.problem(p, &ipath),
                }
            }
            out.check = spec;
            out.check_timeout_set = set;
        }
        out
    }

    pub(super) fn option(&mut self, dir: &Dir, path: &str, out: &mut Inherit) {
        let mut args = dir.args();
        let Some(t) = args.next() else {
            self.err(dir.end, path, "empty option");
            return;
        };
        let (neg, name) = match t.text.as_str() {
            "no" => match args.next() {
                Some(n) => (true, n),
                None => {
                    self.err(t.pos, path, "`no` needs an option name");
                    return;
                }
            },
            _ => (false, t),
        };
        match name.text.as_str() {
            "forwardfor" => out.forwardfor = !neg,
            "redispatch" => out.redispatch = !neg,
            "httplog" | "tcplog" => out.log = !neg,
            "dontlognull" => out.dontlognull = !neg,
            "log-health-checks" => out.log_health_checks = !neg,
            "http-keep-alive" | "http-server-close" | "splice-auto" => {}
            "httpchk" => {
                self.err(
                    name.pos,
                    path,
                    "`option httpchk` is written `check = { http = \"GET /path\" }` in the backend",
                );
                return;
            }
            other => {
                let known = [
                    "forwardfor",
                    "redispatch",
                    "httplog",
                    "tcplog",
                    "dontlognull",
                    "log-health-checks",
                    "http-keep-alive",
                    "http-server-close",
                    "httpchk",
                ];
                let h = hint(other, known);
                self.err(name.pos, path, format!("unsupported option `{other}`{h}"));
                return;
            }
        }
        if let Err(p) = args.done() {
            self.problem(p, path);
        }
    }

    pub(super) fn timeouts(
        &mut self,
        item: &Item,
        span: Range<usize>,
        path: &str,
        t: &mut Timeouts,
    ) {
        for (name, pos, value, p) in self.named_durations(item, span, path, "timeout") {
            let slot = match name.replace('_', "-").as_str() {
                "client" => &mut t.client,
                "connect" => &mut t.connect,
                "server" => &mut t.server,
                "http-request" => &mut t.http_request,
                "http-keep-alive" => &mut t.http_keep_alive,
                "queue" => &mut t.queue,
                "tunnel" => &mut t.tunnel,
                "check" => &mut t.check,
                other => {
                    let h = hint(other, d::TIMEOUT_NAMES.iter().copied());
                    self.err(pos, &p, format!("unknown timeout `{other}`{h}"));
                    continue;
                }
            };
            match value {
                Ok(v) => *slot = Some(v),
                Err(pr) => self.problem(pr, &p),
            }
        }
    }

    /// A `{ NAME = DURATION, … }` table or a `"NAME DURATION"` line (`what` names the
    /// setting in messages): each name with its position, value and key path.
    pub(super) fn named_durations(
        &mut self,
        item: &Item,
        span: Range<usize>,
        path: &str,
        what: &str,
    ) -> Vec<(String, usize, Result<Duration, Problem>, String)> {
        let mut out = Vec::new();
        match item {
            Item::Table(fields) => {
                for (k, v) in fields {
                    let kp = format!("{path}.{}", k.get_ref());
                    let val = match v.get_ref() {
                        toml::Value::String(s) => {
                            let st = self.src.str_at(s, v.span());
                            d::parse_duration(s).map_err(|m| Problem::new(st.pos(0), m))
                        }
                        toml::Value::Integer(n) if *n >= 0 => {
                            Ok(Duration::from_millis(n.unsigned_abs()))
                        }
                        _ => Err(Problem::new(
                            v.span().start,
                            format!(
                                "a {what} is a duration like \"5s\" or a number of milliseconds"
                            ),
                        )),
                    };
                    out.push((k.get_ref().clone(), k.span().start, val, kp));
                }
            }
            _ => {
                let Some(dir) = self.dir(item, span, LINE_ONLY, false, path) else {
                    return out;
                };
                let mut args = dir.args();
                let Ok(name) = args.want(&format!("{what} name")) else {
                    self.err(dir.end, path, format!("missing {what} name"));
                    return out;
                };
                let val = args.want("duration").and_then(d::duration_tok);
                let val = val.and_then(|v| args.done().map(|_| v));
                out.push((name.text.clone(), name.pos, val, path.to_owned()));
            }
        }
        out
    }

    pub(super) fn errorfile(&mut self, dir: &Dir, path: &str) -> Option<(u16, Vec<u8>)> {
        let mut args = dir.args();
        let code_t = match args.want("status code") {
            Ok(t) => t,
            Err(p) => {
                self.problem(p, path);
                return None;
            }
        };
        let code: Option<u16> = code_t
            .text
            .parse()
            .ok()
            .filter(|c| d::ERRORFILE_CODES.contains(c));
        let Some(code) = code else {
            let list: Vec<String> = d::ERRORFILE_CODES.iter().map(u16::to_string).collect();
            self.err(
                code_t.pos,
                path,
                format!(
                    "errorfile status must be one of {}, not `{}`",
                    list.join(", "),
                    code_t.text
                ),
            );
            return None;
        };
        let p = match args.want("file path").and_then(|p| args.done().map(|_| p)) {
            Ok(p) => p,
            Err(pr) => {
                self.problem(pr, path);
                return None;
            }
        };
        let file = self.resolve_path(&p.text);
        match std::fs::read(&file) {
            Ok(body) => Some((code, body)),
            Err(e) => {
                self.err(
                    p.pos,
                    path,
                    format!("cannot read errorfile `{}`: {e}", p.text),
                );
                None
            }
        }
    }
}
