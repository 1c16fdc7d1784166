//! `[announce]`: the interface lb owns for VIP announcement, and which frontends it announces.

use super::*;
use crate::config::raw::RawAnnounce;

impl Builder<'_> {
    /// `[announce]`: the interface name (one lb creates, so it need not exist; it must not be
    /// an XDP interface) and the frontends, each defined and with a specific bind address.
    pub(super) fn announce(
        &mut self,
        a: &Spanned<RawAnnounce>,
        fes: &[FeDraft],
        dataplane: Option<&Dataplane>,
    ) -> Announce {
        let raw = a.get_ref();
        let mut out = Announce {
            interface: DEFAULT_ANNOUNCE_INTERFACE.to_owned(),
            kind: AnnounceKind::Dummy,
            frontends: None,
        };
        if let Some(k) = &raw.kind {
            match k.get_ref().as_str() {
                "dummy" => out.kind = AnnounceKind::Dummy,
                "ifb" => out.kind = AnnounceKind::Ifb,
                other => {
                    let h = hint(other, ["dummy", "ifb"]);
                    self.err(
                        k.span().start,
                        "announce.kind",
                        format!(
                            "unknown interface kind `{other}` (expected \"dummy\" or \"ifb\"){h}"
                        ),
                    );
                }
            }
        }
        if let Some(i) = &raw.interface {
            let name = i.get_ref();
            let bad = name.is_empty()
                || name.len() > 15
                || name == "."
                || name == ".."
                || name
                    .chars()
                    .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
            if bad {
                self.err(
                    i.span().start,
                    "announce.interface",
                    format!(
                        "`{name}` is not a valid interface name (1 to 15 characters, no `/`, `:` or blanks)"
                    ),
                );
            } else if name == "lo" || dataplane.is_some_and(|d| d.interfaces.contains(name)) {
                self.err(
                    i.span().start,
                    "announce.interface",
                    format!(
                        "`{name}` cannot be the announce interface: lb creates and deletes it (use a name of its own, e.g. \"{DEFAULT_ANNOUNCE_INTERFACE}\")"
                    ),
                );
            }
            out.interface = name.clone();
        }
        let announced = |f: &Frontend| f.binds.iter().any(|b| announceable(b.addr.ip()));
        if let Some(list) = &raw.frontends {
            let mut names = Vec::new();
            for (i, span, item) in list.get_ref().items(&list.span()) {
                let path = item_path("announce.frontends", list.get_ref(), i);
                let Item::Line(name) = item else {
                    self.err(span.start, &path, "expected a frontend name");
                    continue;
                };
                match fes.iter().find(|f| &f.fe.name == name) {
                    None => {
                        let h = hint(name, fes.iter().map(|f| f.fe.name.as_str()));
                        self.err(span.start, &path, format!("no frontend or listen named `{name}`{h}"));
                    }
                    Some(f) if !announced(&f.fe) => self.err(
                        span.start,
                        &path,
                        format!(
                            "frontend `{name}` binds no specific address (a wildcard or loopback bind is not a VIP to announce)"
                        ),
                    ),
                    Some(_) => names.push(name.clone()),
                }
            }
            out.frontends = Some(names);
        } else if !fes.iter().any(|f| announced(&f.fe)) {
            self.warn(
                a.span().start,
                "announce",
                "no frontend binds a specific address: there is no VIP to announce",
            );
        }
        out
    }
}
