//! `[resolvers.NAME]` (HAProxy's `resolvers` section): name servers, `hold`,
//! `resolve_retries`, `timeout resolve|retry`, `accepted_payload_size`.

use super::*;
use crate::config::keys::RawResolvers;

const NAMESERVER: Spec = &[("name", K::Pos), ("addr", K::Pos)];
const HOLD_NAMES: &[&str] = &["valid", "nx", "other", "refused", "timeout", "obsolete"];
const TIMEOUT_NAMES: &[&str] = &["resolve", "retry"];

impl Builder<'_> {
    /// Every `[resolvers.X]` section, names checked unique.
    pub(super) fn resolvers_sections(&mut self, raw: &RawFile) -> Vec<Resolvers> {
        let mut out: Vec<Resolvers> = Vec::new();
        for (name, sect) in &raw.resolvers.0 {
            let path = format!("resolvers.{}", name.get_ref());
            if out.iter().any(|r| &r.name == name.get_ref()) {
                self.err(
                    name.span().start,
                    &path,
                    format!("duplicate resolvers section `{}`", name.get_ref()),
                );
                continue;
            }
            let r = self.resolvers(name, sect, &path);
            out.push(r);
        }
        out
    }

    fn resolvers(&mut self, name: &S, sect: &Spanned<RawResolvers>, path: &str) -> Resolvers {
        let raw = sect.get_ref();
        let mut r = Resolvers::new(name.get_ref());
        for (ipath, dir) in self.dirs(&raw.nameserver, path, "nameserver", NAMESERVER, false) {
            let mut args = dir.args();
            let parsed = args.want("name server name").and_then(|n| {
                let a = args.want("name server address (IP[:PORT])")?;
                args.done()?;
                Ok((n.text.clone(), nameserver_addr(a)?))
            });
            match parsed {
                Ok((n, _)) if r.nameservers.iter().any(|(m, _)| *m == n) => {
                    self.err(dir.end, &ipath, format!("duplicate name server `{n}`"))
                }
                Ok(ns) => r.nameservers.push(ns),
                Err(p) => self.problem(p, &ipath),
            }
        }
        if r.nameservers.is_empty() {
            self.err(
                sect.span().start,
                path,
                "a resolvers section needs at least one `nameserver NAME IP[:PORT]`",
            );
        }
        for (_, ipath, span, item) in self.items(&raw.hold, path, "hold") {
            for (n, pos, value, p) in self.named_durations(item, span, &ipath, "hold") {
                let slot = match n.as_str() {
                    "valid" => &mut r.hold.valid,
                    "nx" => &mut r.hold.nx,
                    "other" => &mut r.hold.other,
                    "refused" => &mut r.hold.refused,
                    "timeout" => &mut r.hold.timeout,
                    "obsolete" => &mut r.hold.obsolete,
                    other => {
                        let h = hint(other, HOLD_NAMES.iter().copied());
                        self.err(pos, &p, format!("unknown hold status `{other}`{h}"));
                        continue;
                    }
                };
                match value {
                    Ok(v) => *slot = v,
                    Err(pr) => self.problem(pr, &p),
                }
            }
        }
        for (_, ipath, span, item) in self.items(&raw.timeout, path, "timeout") {
            for (n, pos, value, p) in self.named_durations(item, span, &ipath, "timeout") {
                let slot = match n.as_str() {
                    "resolve" => &mut r.timeout_resolve,
                    "retry" => &mut r.timeout_retry,
                    other => {
                        let h = hint(other, TIMEOUT_NAMES.iter().copied());
                        self.err(
                            pos,
                            &p,
                            format!("unknown resolvers timeout `{other}` (resolve, retry){h}"),
                        );
                        continue;
                    }
                };
                match value {
                    Ok(v) if v.is_zero() => {
                        self.err(pos, &p, format!("timeout {n} must be more than 0"))
                    }
                    Ok(v) => *slot = v,
                    Err(pr) => self.problem(pr, &p),
                }
            }
        }
        let retries = format!("{path}.resolve_retries");
        if let Some(n) = self.int_in(&raw.resolve_retries, &retries, 1u32..=100) {
            r.resolve_retries = n;
        }
        let payload = format!("{path}.accepted_payload_size");
        if let Some(n) = self.int_in(&raw.accepted_payload_size, &payload, 512u16..=65535) {
            r.accepted_payload_size = n;
        }
        r
    }
}

/// `IP`, `IP:PORT`, `[V6]:PORT`, optionally `udp@…` (port 53 when absent), as HAProxy.
fn nameserver_addr(t: &Tok) -> Result<SocketAddr, Problem> {
    let mut a = t.clone();
    if let Some(rest) = a.text.strip_prefix("udp@") {
        a.text = rest.to_owned();
        a.pos += 4;
        a.off += 4;
    }
    if let Ok(ip) = a.text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    if let Ok(sa) = a.text.parse::<SocketAddr>() {
        return Ok(sa);
    }
    Err(Problem::new(
        a.pos,
        format!(
            "name server address `{}` is not IP[:PORT] (IPv6 in brackets with a port)",
            t.text
        ),
    ))
}
