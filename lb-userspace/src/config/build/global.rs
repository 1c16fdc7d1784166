//! `[global]` and `[dataplane]`: admin listener, threads, CPU map, hash seed; the XDP
//! tier's interfaces, sizes, pin path and source filters.

use super::*;

impl Builder<'_> {
    // ---- [global] and [dataplane] ----

    pub(super) fn global(&mut self, g: Option<&Spanned<RawGlobal>>) -> Global {
        let mut out = Global {
            admin: SocketAddr::from(([127, 0, 0, 1], 9100)),
            admin_token: None,
            admin_hosts: Vec::new(),
            stats_sockets: Vec::new(),
            log: Vec::new(),
            log_format: LogFormat::Haproxy,
            threads: None,
            cpu_map: None,
            hash_seed: DEFAULT_HASH_SEED,
            ssl_cache_size: DEFAULT_SSL_CACHE_SIZE,
            maxconn: None,
            process: Process::default(),
        };
        let Some(g) = g else { return out };
        let g = g.get_ref();
        if let Some(a) = &g.admin {
            let s = self.src.str(a);
            match a.get_ref().parse::<SocketAddr>() {
                Ok(addr) => out.admin = addr,
                Err(_) => self.err(
                    s.pos(0),
                    "global.admin",
                    format!(
                        "`{}` is not an address (expected IP:PORT, e.g. 127.0.0.1:9100)",
                        a.get_ref()
                    ),
                ),
            }
        }
        out.admin_token = g.admin_token.as_ref().map(|t| t.get_ref().clone());
        if let Some(t) = &g.admin_token
            && t.get_ref().trim().is_empty()
        {
            // `lb run` would take an empty token for none: refuse it here, as run does.
            self.err(
                t.span().start,
                "global.admin_token",
                "`admin_token` is empty: set a secret, or remove the key on a loopback `admin`",
            );
        }
        if !out.admin.ip().to_canonical().is_loopback()
            && out.admin_token.is_none()
            && let Some(a) = &g.admin
        {
            self.err(
                a.span().start,
                "global.admin",
                "a non-loopback admin address needs `admin_token`",
            );
        }
        if let Some(list) = &g.admin_hosts {
            for (i, span, item) in list.get_ref().items(&list.span()) {
                let path = item_path("global.admin_hosts", list.get_ref(), i);
                match item {
                    Item::Line(name) if valid_host_name(name) => {
                        out.admin_hosts.push(name.to_ascii_lowercase());
                    }
                    _ => self.err(
                        span.start,
                        &path,
                        "expected a host name without port, e.g. \"lb1.example.net\"",
                    ),
                }
            }
        }
        if let Some(list) = &g.stats_socket {
            for (i, span, item) in list.get_ref().items(&list.span()) {
                let path = item_path("global.stats_socket", list.get_ref(), i);
                let Item::Line(line) = item else {
                    self.err(span.start, &path, "expected \"PATH [mode M] [level L]\"");
                    continue;
                };
                let s = self.src.str_at(line, span);
                let Some(toks) = self.words(&s, &path) else {
                    continue;
                };
                let texts: Vec<&str> = toks.iter().map(|t| t.text.as_str()).collect();
                match parse_stats_socket(&texts) {
                    Ok(sock) if out.stats_sockets.iter().any(|o| o.path == sock.path) => self.err(
                        s.pos(0),
                        &path,
                        format!("stats socket `{}` is listed twice", sock.path.display()),
                    ),
                    Ok(sock) => out.stats_sockets.push(sock),
                    Err((w, msg)) => {
                        let at = toks.get(w).map_or(s.pos(0), |t| t.pos);
                        self.err(at, &path, msg);
                    }
                }
            }
        }
        if let Some(l) = &g.log {
            for item in self.log_items(l, "global.log", false) {
                if let log::LogItem::Target(t) = item {
                    out.log.push(t);
                }
            }
            self.global_log = out.log.clone();
        }
        if let Some(f) = &g.log_format {
            match f.get_ref().as_str() {
                "haproxy" => out.log_format = LogFormat::Haproxy,
                "json" => out.log_format = LogFormat::Json,
                other => {
                    let h = hint(other, ["haproxy", "json"]);
                    self.err(
                        f.span().start,
                        "global.log_format",
                        format!(
                            "unknown log format `{other}` (expected \"haproxy\" or \"json\"){h}"
                        ),
                    );
                }
            }
        }
        if let Some(n) = self.int_in(&g.threads, "global.threads", 1..=1024usize) {
            out.threads = Some(n);
        }
        if let Some(n) = self.int_in(&g.hash_seed, "global.hash_seed", 0..=u32::MAX) {
            out.hash_seed = n;
        }
        if let Some(m) = &g.cpu_map {
            out.cpu_map = self.cpu_map(m);
        }
        if let Some(n) = self.int_in(
            &g.ssl_cache_size,
            "global.ssl_cache_size",
            0..=100_000_000usize,
        ) {
            out.ssl_cache_size = n;
        }
        if let Some(n) = self.int_in(&g.maxconn, "global.maxconn", 1..=u32::MAX) {
            out.maxconn = Some(n);
        }
        out.process = self.process(g);
        out
    }

    /// `user`/`uid`, `group`/`gid`, `chroot`, `pidfile`, `ulimit_n`, `hard_stop_after`.
    fn process(&mut self, g: &RawGlobal) -> Process {
        let mut out = Process::default();
        for (name, id, what) in [(&g.user, &g.uid, "user"), (&g.group, &g.gid, "group")] {
            let idkey = if what == "user" { "uid" } else { "gid" };
            let ident = match (name, id) {
                (Some(n), Some(i)) => {
                    self.err(
                        i.span().start,
                        &format!("global.{idkey}"),
                        format!("set `{what}` or `{idkey}`, not both"),
                    );
                    let _ = n;
                    None
                }
                (Some(n), None) if n.get_ref().trim().is_empty() => {
                    self.err(
                        n.span().start,
                        &format!("global.{what}"),
                        format!("`{what}` is empty"),
                    );
                    None
                }
                (Some(n), None) => Some(Ident::Name(n.get_ref().trim().to_owned())),
                (None, Some(_)) => self
                    .int_in(id, &format!("global.{idkey}"), 0..=u32::MAX - 1)
                    .map(Ident::Id),
                (None, None) => None,
            };
            if let Some(Ident::Name(n)) = &ident {
                let known = if what == "user" {
                    nix::unistd::User::from_name(n).ok().flatten().is_some()
                } else {
                    nix::unistd::Group::from_name(n).ok().flatten().is_some()
                };
                if !known && let Some(v) = name {
                    self.warn(
                        v.span().start,
                        &format!("global.{what}"),
                        format!("{what} `{n}` does not exist on this host: `lb run` will refuse to start"),
                    );
                }
            }
            if what == "user" {
                out.user = ident;
            } else {
                out.group = ident;
            }
        }
        for (v, key, slot) in [
            (&g.chroot, "chroot", &mut out.chroot),
            (&g.pidfile, "pidfile", &mut out.pidfile),
        ] {
            if let Some(p) = v {
                let path = PathBuf::from(p.get_ref());
                if p.get_ref().is_empty() || !path.is_absolute() {
                    self.err(
                        p.span().start,
                        &format!("global.{key}"),
                        format!("`{key}` must be an absolute path"),
                    );
                } else {
                    *slot = Some(path);
                }
            }
        }
        out.ulimit_n = self.int_in(&g.ulimit_n, "global.ulimit_n", 1..=u64::from(u32::MAX));
        if let Some(h) = &g.hard_stop_after {
            match d::parse_duration(h.get_ref()) {
                Ok(t) => out.hard_stop_after = t,
                Err(m) => self.err(h.span().start, "global.hard_stop_after", m),
            }
        }
        out
    }

    /// `cpu_map = "auto"` or a list of CPU numbers, each one lb may run on here.
    pub(super) fn cpu_map(&mut self, m: &V) -> Option<CpuMap> {
        const PATH: &str = "global.cpu_map";
        const EXPECTED: &str = "expected \"auto\" or a list of CPU numbers, e.g. [0, 1]";
        let at = m.span().start;
        match m.get_ref() {
            toml::Value::String(s) if s == "auto" => Some(CpuMap::Auto),
            toml::Value::Array(items) if !items.is_empty() => {
                let allowed = crate::cpus::allowed();
                let mut cpus = Vec::with_capacity(items.len());
                for item in items {
                    let cpu = item
                        .as_integer()
                        .and_then(|n| usize::try_from(n).ok())
                        .filter(|n| *n < crate::cpus::MAX_CPUS);
                    let Some(cpu) = cpu else {
                        self.err(
                            at,
                            PATH,
                            format!("`{item}` is not a CPU number ({EXPECTED})"),
                        );
                        return None;
                    };
                    if !allowed.contains(&cpu) {
                        self.err(
                            at,
                            PATH,
                            format!(
                                "CPU {cpu} is not available to lb on this host (it may run on {})",
                                crate::cpus::describe(&allowed)
                            ),
                        );
                        return None;
                    }
                    cpus.push(cpu);
                }
                Some(CpuMap::List(cpus))
            }
            other => {
                self.err(at, PATH, format!("`{other}`: {EXPECTED}"));
                None
            }
        }
    }

    pub(super) fn dataplane(&mut self, d: &Spanned<RawDataplane>) -> Dataplane {
        let dp = d.get_ref();
        let stem = self
            .src
            .path
            .file_stem()
            .map(|s| {
                s.to_string_lossy()
                    .chars()
                    .map(|c| {
                        if lb_common::maps::pin_name_char_ok(c) {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect::<String>()
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "lb".to_string());
        let mut out = Dataplane {
            interfaces: Vec::new(),
            xdp_mode: XdpMode::Auto,
            conntrack_size: lb_common::maps::DEFAULT_CONNTRACK_SIZE,
            conntrack_warn: 90,
            flood_rate: crate::config::model::DEFAULT_FLOOD_RATE,
            maglev_table_size: lb_common::maps::DEFAULT_MAGLEV_SIZE,
            deny_src: Vec::new(),
            pin_path: Path::new(lb_common::maps::DEFAULT_PIN_ROOT).join(stem),
        };
        match &dp.interfaces {
            None => self.err(
                d.span().start,
                "dataplane.interfaces",
                "missing `interfaces`: the XDP tier needs at least one network interface",
            ),
            Some(list) => {
                for (i, span, item) in list.get_ref().items(&list.span()) {
                    let path = item_path("dataplane.interfaces", list.get_ref(), i);
                    let Item::Line(name) = item else {
                        self.err(span.start, &path, "expected an interface name");
                        continue;
                    };
                    let s = self.src.str_at(name, span);
                    if out.interfaces.contains(name) {
                        self.err(
                            s.pos(0),
                            &path,
                            format!("interface `{name}` is listed twice"),
                        );
                        continue;
                    }
                    if !self.opts.interfaces.exists(name) {
                        let known = self.opts.interfaces.names();
                        let h = hint(name, known.iter().map(String::as_str));
                        self.err(
                            s.pos(0),
                            &path,
                            format!("network interface `{name}` does not exist{h}"),
                        );
                    }
                    out.interfaces.push(name.clone());
                }
                if out.interfaces.is_empty() && !list.get_ref().is_many() {
                    // a single string was handled above
                } else if out.interfaces.is_empty() {
                    self.err(
                        list.span().start,
                        "dataplane.interfaces",
                        "`interfaces` is empty: the XDP tier needs at least one network interface",
                    );
                }
            }
        }
        if let Some(m) = &dp.xdp_mode {
            out.xdp_mode = match m.get_ref().as_str() {
                "native" => XdpMode::Native,
                "generic" => XdpMode::Generic,
                "auto" => XdpMode::Auto,
                other => {
                    let h = hint(other, ["native", "generic", "auto"]);
                    self.err(
                        m.span().start,
                        "dataplane.xdp_mode",
                        format!("unknown xdp_mode `{other}` (expected native, generic or auto){h}"),
                    );
                    XdpMode::Auto
                }
            };
        }
        if let Some(n) = self.int_in(
            &dp.conntrack_size,
            "dataplane.conntrack_size",
            1024..=u32::MAX,
        ) {
            out.conntrack_size = n;
        }
        if let Some(n) = self.int_in(&dp.conntrack_warn, "dataplane.conntrack_warn", 1..=100u8) {
            out.conntrack_warn = n;
        }
        if let Some(n) = self.int_in(&dp.flood_rate, "dataplane.flood_rate", 0..=u32::MAX) {
            out.flood_rate = n;
        }
        if let Some(m) = &dp.maglev_table_size {
            match u32::try_from(*m.get_ref()) {
                Ok(n) if is_prime(n) && n >= 251 => out.maglev_table_size = n,
                _ => self.err(
                    m.span().start,
                    "dataplane.maglev_table_size",
                    format!(
                        "maglev_table_size must be a prime of at least 251 (e.g. 65537), not {}",
                        m.get_ref()
                    ),
                ),
            }
        }
        if let Some(list) = &dp.deny_src {
            out.deny_src = self.cidrs(list, "dataplane.deny_src");
        }
        if let Some(p) = &dp.pin_path {
            let path = PathBuf::from(p.get_ref());
            if !path.is_absolute() {
                self.err(
                    p.span().start,
                    "dataplane.pin_path",
                    "pin_path must be an absolute path on a bpffs mount",
                );
            } else if let Some(problem) = pin_path_problem(&path) {
                self.err(p.span().start, "dataplane.pin_path", problem);
            }
            out.pin_path = path;
        }
        out
    }

    pub(super) fn cidrs(&mut self, list: &Spanned<List>, key: &str) -> Vec<IpNet> {
        let mut out = Vec::new();
        for (i, span, item) in list.get_ref().items(&list.span()) {
            let path = item_path(key, list.get_ref(), i);
            let Item::Line(text) = item else {
                self.err(
                    span.start,
                    &path,
                    "expected a network like \"192.0.2.0/24\"",
                );
                continue;
            };
            let s = self.src.str_at(text, span);
            let Some(toks) = self.words(&s, &path) else {
                continue;
            };
            if toks.is_empty() {
                self.err(s.pos(0), &path, "empty network");
            }
            for t in &toks {
                match d::cidr(t) {
                    Ok(n) => out.push(n),
                    Err(p) => self.problem(p, &path),
                }
            }
        }
        out
    }
}

/// A DNS name as a `Host` header carries it: letters, digits, `-` and `.`, no port.
pub(super) fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

pub(super) fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut i = 2u64;
    while i * i <= u64::from(n) {
        if u64::from(n) % i == 0 {
            return false;
        }
        i += 1;
    }
    true
}

/// Why bpffs would refuse the pin directory `path` (absolute), if it would: a `.` or `..`
/// component, or a dot in a name that lies on bpffs (the kernel reserves dotted names
/// there). Names above the bpffs mount point (e.g. a mount at `/run/lb.d/bpf`) may have
/// dots; a name is on bpffs when it is below a mounted bpffs, or below `/sys/fs/bpf`, where
/// lb mounts bpffs when it is missing.
pub(super) fn pin_path_problem(path: &Path) -> Option<String> {
    use std::path::Component;
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let bpf_mounts: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, kind) = (f.next()?, f.next()?, f.next()?);
            (kind == "bpf").then(|| PathBuf::from(point.replace("\\040", " ")))
        })
        .chain([PathBuf::from("/sys/fs/bpf")])
        .collect();
    let mut prefix = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir | Component::ParentDir => {
                return Some(format!(
                    "pin_path `{}` must not contain `.` or `..` components",
                    path.display()
                ));
            }
            Component::Normal(name) => {
                let on_bpffs = bpf_mounts.iter().any(|m| prefix.starts_with(m));
                prefix.push(name);
                let name = name.to_string_lossy();
                if on_bpffs && !lb_common::maps::bpffs_name_ok(&name) {
                    return Some(format!(
                        "pin_path `{}`: bpffs refuses the name `{name}` (names on bpffs \
                         cannot contain a dot); use e.g. `{}`",
                        path.display(),
                        name.replace('.', "_")
                    ));
                }
            }
            Component::RootDir | Component::Prefix(_) => prefix.push(c),
        }
    }
    None
}
