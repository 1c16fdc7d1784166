//! `log` targets: `[global] log` and the proxies' `log` key (HAProxy's `log` lines).

use super::*;
use crate::syslog::{LogTarget, parse_target};

/// One item of a `log` key.
pub(super) enum LogItem {
    /// `"global"`: the `[global]` targets.
    Global,
    Target(LogTarget),
}

impl Builder<'_> {
    /// The items of a `log` value (a string or an array of strings), each checked; `None`
    /// for a boolean (the caller handles those) or after an error.
    pub(super) fn log_items(&mut self, v: &V, path: &str, allow_global: bool) -> Vec<LogItem> {
        let span = v.span();
        let mut lines: Vec<(String, Range<usize>, String)> = Vec::new();
        match v.get_ref() {
            toml::Value::String(s) => lines.push((s.clone(), span.clone(), path.to_string())),
            toml::Value::Array(a) => {
                // Items keep no spans inside a toml::Value: find each one in the source, in order.
                let mut from = span.start;
                for (i, x) in a.iter().enumerate() {
                    let ipath = format!("{path}[{i}]");
                    let toml::Value::String(s) = x else {
                        self.err(from, &ipath, "a log target must be a string");
                        continue;
                    };
                    let hay = self.src.text.get(from..span.end).unwrap_or("");
                    let at = hay.find(s.as_str()).map_or(from, |o| from + o);
                    let quoted = at.saturating_sub(1)..at + s.len() + 1;
                    from = at + s.len();
                    lines.push((s.clone(), quoted, ipath));
                }
            }
            _ => self.err(
                span.start,
                path,
                "expected a log target string or a list of them",
            ),
        }
        let mut out = Vec::new();
        for (line, span, ipath) in lines {
            let s = self.src.str_at(&line, span);
            let Some(toks) = self.words(&s, &ipath) else {
                continue;
            };
            let words: Vec<&str> = toks.iter().map(|t| t.text.as_str()).collect();
            if words == ["global"] {
                if allow_global {
                    out.push(LogItem::Global);
                } else {
                    self.err(s.pos(0), &ipath, "`log global` belongs in a proxy section");
                }
                continue;
            }
            match parse_target(&words) {
                Ok(t) => out.push(LogItem::Target(t)),
                Err((w, msg)) => {
                    let at = toks.get(w).map_or(s.pos(0), |t| t.pos);
                    self.err(at, &ipath, msg);
                }
            }
        }
        out
    }
}
