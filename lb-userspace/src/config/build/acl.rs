//! `acl` lines and `if`/`unless` conditions, compiled once with the ACL engine.

use super::*;

impl Builder<'_> {
    // ---- ACLs and conditions ----

    pub(super) fn acls(
        &mut self,
        rp: &RawProxy,
        path: &str,
        acls: &mut AclSet,
        names: &mut Vec<String>,
        nbsrv: &mut Vec<(String, usize, String)>,
    ) {
        for (ipath, dir) in self.dirs(&rp.acl, path, "acl", ACL, false) {
            let Some(name) = dir.toks.first() else {
                self.err(dir.end, &ipath, "missing ACL name");
                continue;
            };
            if dir.toks.len() < 2 {
                self.err(
                    dir.end,
                    &ipath,
                    format!("missing fetch after ACL name `{}`", name.text),
                );
                continue;
            }
            if !name
                .text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
            {
                self.err(
                    name.pos,
                    &ipath,
                    format!(
                        "invalid ACL name `{}`: use letters, digits, `-`, `_`, `.` and `:`",
                        name.text
                    ),
                );
                continue;
            }
            collect_nbsrv(&dir.toks[1..], &ipath, nbsrv);
            if !names.contains(&name.text) {
                names.push(name.text.clone());
            }
            if let Err(e) = acls.define(&dir.text.text) {
                self.err(dir.text.pos(e.offset), &ipath, e.message);
            }
        }
    }

    /// Checks ACL names in a condition, then compiles it.
    /// Compiles an `if`/`unless` condition; `response`: of an `http-response` rule, the
    /// only place response fetches (`status`, `res.hdr`) are available.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn condition(
        &mut self,
        cond: &Mapped,
        acls: &AclSet,
        names: &[String],
        path: &str,
        nbsrv: &mut Vec<(String, usize, String)>,
        response: bool,
    ) -> Option<Condition> {
        let mut ok = true;
        let mut depth = 0usize;
        let mut first = true;
        let split = match crate::acl::split_words(&cond.text, true) {
            Ok(s) => s,
            Err(e) => {
                self.err(cond.pos(e.offset), path, e.message);
                return None;
            }
        };
        let words: Vec<(usize, &str)> = split
            .words
            .iter()
            .map(|w| (w.start, w.text.as_str()))
            .collect();
        if words.len() < 2 {
            self.err(
                cond.pos(cond.text.len()),
                path,
                format!("missing condition after `{}`", cond.text.trim()),
            );
            return None;
        }
        let mut anon = Vec::new();
        for (off, w) in words {
            if first {
                first = false;
                continue;
            }
            let mut w = w;
            let mut off = off;
            if depth == 0 {
                let t = w.trim_start_matches('!');
                off += w.len() - t.len();
                w = t;
                if w.is_empty() {
                    continue;
                }
            }
            if let Some(rest) = w.strip_prefix('{') {
                depth += 1;
                w = rest;
                off += 1;
                if w.is_empty() {
                    continue;
                }
            }
            if depth > 0 {
                if let Some(rest) = w.strip_suffix('}') {
                    depth -= 1;
                    w = rest;
                }
                anon.push(Tok {
                    text: w.to_string(),
                    pos: cond.pos(off),
                    off: 0,
                });
                continue;
            }
            if matches!(w, "or" | "||" | "!" | "}") {
                continue;
            }
            let name = w.trim_start_matches('!');
            let noff = off + (w.len() - name.len());
            if names.iter().any(|n| n == name) || PREDEFINED_ACLS.contains(&name) {
                continue;
            }
            let h = hint(name, names.iter().map(String::as_str));
            self.err(cond.pos(noff), path, format!("undefined ACL `{name}`{h}"));
            ok = false;
        }
        collect_nbsrv(&anon, path, nbsrv);
        if !ok {
            return None;
        }
        match Condition::compile(&cond.text, acls) {
            Ok(c) => match c.response_fetch() {
                Some(kw) if !response => {
                    self.err(
                        cond.pos(0),
                        path,
                        format!(
                            "the condition uses `{kw}`, a response fetch: only http_response rules can"
                        ),
                    );
                    None
                }
                _ => Some(c),
            },
            Err(e) => {
                self.err(cond.pos(e.offset), path, e.message);
                None
            }
        }
    }
}

/// HAProxy's predefined ACLs.
const PREDEFINED_ACLS: &[&str] = &[
    "FALSE",
    "HTTP",
    "HTTP_1.0",
    "HTTP_1.1",
    "HTTP_2.0",
    "HTTP_3.0",
    "HTTP_CONTENT",
    "HTTP_URL_ABS",
    "HTTP_URL_SLASH",
    "HTTP_URL_STAR",
    "LOCALHOST",
    "METH_CONNECT",
    "METH_DELETE",
    "METH_GET",
    "METH_HEAD",
    "METH_OPTIONS",
    "METH_POST",
    "METH_PUT",
    "METH_TRACE",
    "RDP_COOKIE",
    "REQ_CONTENT",
    "TRUE",
    "WAIT_END",
];

pub(super) fn collect_nbsrv(toks: &[Tok], path: &str, out: &mut Vec<(String, usize, String)>) {
    for t in toks {
        if let Some(rest) = t.text.strip_prefix("nbsrv(")
            && let Some(name) = rest.strip_suffix(')')
        {
            out.push((name.to_string(), t.pos + 6, path.to_string()));
        }
    }
}
