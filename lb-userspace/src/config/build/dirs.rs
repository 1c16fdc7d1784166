//! Directive items: HAProxy line syntax or a table turned into located words, and the
//! list and integer helpers every section uses.

use super::*;

impl Builder<'_> {
    // ---- directives ----

    /// Turns a list item into a directive (line syntax or table per `spec`).
    pub(super) fn dir(
        &mut self,
        item: &Item,
        span: Range<usize>,
        spec: Spec,
        cond: bool,
        path: &str,
    ) -> Option<Dir> {
        match item {
            Item::Line(line) => {
                let s = self.src.str_at(line, span);
                let mut toks = self.words(&s, path)?;
                let text = Mapped::from_str(&s, 0);
                let mut end = s.pos(s.value.trim_end().len());
                let mut c = None;
                if cond
                    && let Some(i) = toks
                        .iter()
                        .position(|t| t.text == "if" || t.text == "unless")
                {
                    c = Some(Mapped::from_str(&s, toks[i].off));
                    end = toks[i].pos;
                    toks.truncate(i);
                }
                Some(Dir {
                    toks,
                    cond: c,
                    end,
                    text,
                })
            }
            Item::Table(fields) => self.table_dir(fields, span, spec, cond, path),
            Item::Other => {
                self.err(
                    span.start,
                    path,
                    "expected a string (HAProxy line syntax) or a table",
                );
                None
            }
        }
    }

    pub(super) fn table_dir(
        &mut self,
        fields: &[(S, V)],
        span: Range<usize>,
        spec: Spec,
        cond: bool,
        path: &str,
    ) -> Option<Dir> {
        let mut ok = true;
        let mut allowed: Vec<&str> = spec.iter().map(|(k, _)| *k).collect();
        if cond {
            allowed.extend(["if", "unless"]);
        }
        for (k, _) in fields {
            if !allowed.contains(&k.get_ref().as_str()) {
                let h = hint(k.get_ref(), allowed.iter().copied());
                let msg = if h.is_empty() {
                    format!(
                        "unknown key `{}` (expected one of: {})",
                        k.get_ref(),
                        allowed.join(", ")
                    )
                } else {
                    format!("unknown key `{}`{h}", k.get_ref())
                };
                self.err(k.span().start, &format!("{path}.{}", k.get_ref()), msg);
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        let mut toks = Vec::new();
        let kw = |text: &str, pos: usize| Tok {
            text: text.to_string(),
            pos,
            off: 0,
        };
        for (key, kind) in spec {
            let Some((k, v)) = fields.iter().find(|(k, _)| k.get_ref() == key) else {
                continue;
            };
            let kpath = format!("{path}.{key}");
            let kpos = k.span().start;
            let vpos = v.span().start;
            let words =
                |b: &mut Self, val: &toml::Value, pos: usize, split: bool| -> Option<Vec<Tok>> {
                    match val {
                        toml::Value::String(s) => {
                            let st = b.src.str_at(s, pos..pos + s.len() + 2);
                            if split {
                                match tokenize(&st) {
                                    Ok(t) => Some(t),
                                    Err(p) => {
                                        b.problem(p, &kpath);
                                        None
                                    }
                                }
                            } else {
                                Some(vec![Tok {
                                    text: s.clone(),
                                    pos: st.pos(0),
                                    off: 0,
                                }])
                            }
                        }
                        toml::Value::Integer(n) => Some(vec![Tok {
                            text: n.to_string(),
                            pos,
                            off: 0,
                        }]),
                        toml::Value::Array(a) => {
                            let mut out = Vec::new();
                            for e in a {
                                match e {
                                    toml::Value::String(s) => out.push(Tok {
                                        text: s.clone(),
                                        pos,
                                        off: 0,
                                    }),
                                    toml::Value::Integer(n) => out.push(Tok {
                                        text: n.to_string(),
                                        pos,
                                        off: 0,
                                    }),
                                    _ => {
                                        b.err(pos, &kpath, "expected strings");
                                        return None;
                                    }
                                }
                            }
                            Some(out)
                        }
                        _ => {
                            b.err(pos, &kpath, "expected a string or a number");
                            None
                        }
                    }
                };
            match kind {
                K::Pos | K::Words => {
                    toks.extend(words(self, v.get_ref(), vpos, matches!(kind, K::Words))?);
                }
                K::Val(w) => {
                    toks.push(kw(w, kpos));
                    toks.extend(words(self, v.get_ref(), vpos, false)?);
                }
                K::Flag(w) => match v.get_ref() {
                    toml::Value::Boolean(true) => toks.push(kw(w, kpos)),
                    toml::Value::Boolean(false) => {}
                    _ => {
                        self.err(vpos, &kpath, format!("`{key}` must be true or false"));
                        return None;
                    }
                },
                K::Multi(w) => {
                    for t in words(self, v.get_ref(), vpos, false)? {
                        toks.push(kw(w, t.pos));
                        toks.push(t);
                    }
                }
                K::Joined(w) => {
                    let ws = words(self, v.get_ref(), vpos, false)?;
                    toks.push(kw(w, kpos));
                    if *w == "http" {
                        // "GET /healthz" → two words
                        for t in ws {
                            let st = self
                                .src
                                .str_at(&t.text, t.pos.saturating_sub(1)..t.pos + t.text.len() + 1);
                            match tokenize(&st) {
                                Ok(mut more) => toks.append(&mut more),
                                Err(p) => {
                                    self.problem(p, &kpath);
                                    return None;
                                }
                            }
                        }
                    } else {
                        let joined: Vec<String> = ws.iter().map(|t| t.text.clone()).collect();
                        toks.push(Tok {
                            text: joined.join(","),
                            pos: vpos,
                            off: 0,
                        });
                    }
                }
            }
        }
        let mut c = None;
        if cond {
            let ifs: Vec<&(S, V)> = fields
                .iter()
                .filter(|(k, _)| k.get_ref() == "if" || k.get_ref() == "unless")
                .collect();
            if ifs.len() > 1 {
                self.err(
                    ifs[1].0.span().start,
                    &format!("{path}.{}", ifs[1].0.get_ref()),
                    "use either `if` or `unless`, not both",
                );
                return None;
            }
            if let Some((k, v)) = ifs.first() {
                let toml::Value::String(s) = v.get_ref() else {
                    self.err(
                        v.span().start,
                        &format!("{path}.{}", k.get_ref()),
                        "a condition must be a string",
                    );
                    return None;
                };
                let st = self.src.str_at(s, v.span());
                let mut m = Mapped::default();
                m.push(k.get_ref(), k.span().start, false);
                m.segs.push((m.text.len() + 1, st.pos(0), st.linear()));
                m.text.push(' ');
                m.text.push_str(s);
                c = Some(m);
            }
        }
        let text = Mapped::from_toks(&toks);
        Some(Dir {
            toks,
            cond: c,
            end: span.start,
            text,
        })
    }

    /// An integer setting at `path` (its last component names it in the error) that must lie
    /// in `range`; `None` when absent or reported as out of range.
    pub(super) fn int_in<T>(
        &mut self,
        v: &Option<Spanned<i64>>,
        path: &str,
        range: std::ops::RangeInclusive<T>,
    ) -> Option<T>
    where
        T: TryFrom<i64> + PartialOrd + std::fmt::Display,
    {
        let v = v.as_ref()?;
        match T::try_from(*v.get_ref()) {
            Ok(n) if range.contains(&n) => Some(n),
            _ => {
                let key = path.rsplit('.').next().unwrap_or(path);
                self.err(
                    v.span().start,
                    path,
                    format!("{key} must be from {} to {}", range.start(), range.end()),
                );
                None
            }
        }
    }

    /// The items of list key `key` under `path` (one line, or a list of lines): index, the
    /// item's path (`path.key`, or `path.key[i]` in a list), span and item.
    pub(super) fn items<'r>(
        &self,
        l: &'r Option<Spanned<List>>,
        path: &str,
        key: &str,
    ) -> Vec<(usize, String, Range<usize>, &'r Item)> {
        let Some(l) = l else {
            return Vec::new();
        };
        let many = l.get_ref().is_many();
        l.get_ref()
            .items(&l.span())
            .into_iter()
            .map(|(i, span, item)| {
                let ipath = if many {
                    format!("{path}.{key}[{i}]")
                } else {
                    format!("{path}.{key}")
                };
                (i, ipath, span, item)
            })
            .collect()
    }

    /// The items of `key` under `path` tokenized as directives of `spec` (`cond`: they may
    /// end in `if`/`unless`), with their paths; items that fail to tokenize are reported
    /// and skipped.
    pub(super) fn dirs(
        &mut self,
        l: &Option<Spanned<List>>,
        path: &str,
        key: &str,
        spec: Spec,
        cond: bool,
    ) -> Vec<(String, Dir)> {
        let mut out = Vec::new();
        for (_, ipath, span, item) in self.items(l, path, key) {
            if let Some(dir) = self.dir(item, span, spec, cond, &ipath) {
                out.push((ipath, dir));
            }
        }
        out
    }
}
