//! `lb convert`: HAProxy configuration to lb TOML.
//!
//! Reads `global`, `defaults`, `frontend`, `backend` and `listen` sections, comments and
//! quoted arguments. Every supported directive is written in lb's schema (HAProxy line
//! syntax is kept where lb keeps it); everything else is named in a warning with its line
//! and written as a comment, never dropped. Unknown keywords are errors with a suggestion.

use std::io::Write;
use std::path::Path;

use super::diag::{Diagnostic, Severity};
use super::directives::{self as d, Args, RuleSide, TIMEOUT_NAMES, parse_duration};
use super::keys::{self, HAPROXY_PROXY_UNSUPPORTED, Section};
use super::source::Tok;
use super::suggest::{closest, hint};

/// The result of converting one file.
#[derive(Debug, Clone)]
pub struct Conversion {
    /// The TOML text (complete even when there are errors; unsupported parts as comments).
    pub toml: String,
    /// Warnings and errors, in line order.
    pub diagnostics: Vec<Diagnostic>,
    /// Rules that restrict access (deny, reject, auth, tarpit, redirect, …) which could not
    /// be carried over: each is an error here and an `unconverted` entry in `toml`, which
    /// `lb check` refuses, so the output cannot run until a person decides. With
    /// [`ConvertOptions::drop_unsupported`] they are comments instead, and counted here.
    pub unconverted: usize,
}

impl Conversion {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Errors other than the `unconverted` access rules: the input is wrong (as HAProxy
    /// would say too) or lb cannot represent it at all.
    pub fn hard_errors(&self) -> usize {
        let errors = self.diagnostics.iter().filter(|d| d.is_error()).count();
        errors.saturating_sub(self.unconverted)
    }
}

/// How `lb convert` treats what it cannot carry over.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConvertOptions {
    /// Write a runnable file even when a rule that restricts access cannot be converted:
    /// the rule becomes a comment (and a loud warning) instead of a load-time error. lb then
    /// lets through what HAProxy refuses.
    pub drop_unsupported: bool,
}

/// `lb convert HAPROXY.cfg [-o OUT.toml]` with the default options.
pub fn run_convert(input: &Path, output: Option<&Path>, out: &mut dyn Write) -> i32 {
    run_convert_with(input, output, ConvertOptions::default(), out)
}

/// `lb convert HAPROXY.cfg [-o OUT.toml] [--drop-unsupported]`: writes the TOML to `output`
/// (or to `out`), the warnings to `out`. Exit 1 without writing when the input has errors;
/// exit 2, with the file written, when rules that restrict access could not be converted
/// (they are load-time errors in it); 0 otherwise.
pub fn run_convert_with(
    input: &Path,
    output: Option<&Path>,
    opts: ConvertOptions,
    out: &mut dyn Write,
) -> i32 {
    let text = match std::fs::read_to_string(input) {
        Ok(t) => t,
        Err(e) => {
            let d = Diagnostic::file_level(input, format!("cannot read: {e}"));
            let _ = writeln!(out, "{d}");
            return 1;
        }
    };
    let conv = convert_str_with(input, &text, opts);
    let mut report = String::new();
    for d in &conv.diagnostics {
        report.push_str(&format!("{d}\n"));
    }
    if conv.hard_errors() > 0 {
        let _ = out.write_all(report.as_bytes());
        return 1;
    }
    let blocked = conv.has_errors();
    let rules = |n: usize| {
        if n == 1 {
            "1 rule that restricts access".to_string()
        } else {
            format!("{n} rules that restrict access")
        }
    };
    let verdict = if blocked {
        format!(
            "NOT RUNNABLE: {} could not be converted; each is an `unconverted` entry that `lb check` and `lb run` refuse, naming its haproxy.cfg line. Convert or delete each by hand (or rerun with --drop-unsupported to drop them, which lets through what HAProxy refuses)\n",
            rules(conv.unconverted)
        )
    } else if conv.unconverted > 0 {
        format!(
            "WARNING: --drop-unsupported dropped {}: lb will let through requests that HAProxy refuses\n",
            rules(conv.unconverted)
        )
    } else {
        String::new()
    };
    let code = if blocked { 2 } else { 0 };
    match output {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &conv.toml) {
                report.push_str(&format!("{}: cannot write: {e}\n", path.display()));
                let _ = out.write_all(report.as_bytes());
                return 1;
            }
            report.push_str(&format!(
                "wrote {} ({} warning{})\n",
                path.display(),
                conv.diagnostics.len(),
                if conv.diagnostics.len() == 1 { "" } else { "s" }
            ));
            report.push_str(&verdict);
            let _ = out.write_all(report.as_bytes());
            code
        }
        None => {
            // The warnings are in the TOML header as comments.
            if out.write_all(conv.toml.as_bytes()).is_err() {
                return 1;
            }
            if !verdict.is_empty() {
                let _ = out.write_all(format!("# {verdict}").as_bytes());
            }
            code
        }
    }
}

/// One word of a haproxy.cfg line, with its 1-based column.
#[derive(Debug, Clone)]
struct W {
    text: String,
    col: usize,
    quoted: bool,
}

/// Splits a line into words and its trailing comment with HAProxy's splitter
/// ([`crate::acl::split_words`]); columns are counted in characters, in one pass (linear in
/// the length of the line).
fn split_line(line: &str) -> Result<(Vec<W>, Option<String>), (usize, String)> {
    let mut counted = (0, 0); // (byte offset, characters before it)
    let mut col_of = |i: usize| {
        let (at, n) = counted;
        let n = n + line.get(at..i).map_or(0, |s| s.chars().count());
        counted = (i, n);
        n + 1
    };
    let words = crate::acl::split_words(line, true).map_err(|e| {
        let col = line.get(..e.offset).map_or(1, |s| s.chars().count() + 1);
        (col, e.message)
    })?;
    let comment = words.comment.map(|i| {
        let c = line.get(i + 1..).unwrap_or("").trim_end();
        c.strip_prefix(' ').unwrap_or(c).to_string()
    });
    let words = words
        .words
        .into_iter()
        .map(|w| W {
            col: col_of(w.start),
            text: w.text,
            quoted: w.quoted,
        })
        .collect();
    Ok((words, comment))
}

/// Joins words back into lb line syntax, quoting where needed.
fn join(words: &[W]) -> String {
    words
        .iter()
        .map(|w| quote_word(&w.text))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote_word(s: &str) -> String {
    if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '#')
    {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s.to_string()
    }
}

/// A TOML basic string.
/// A server's `inter`, `rise` or `fall` as the key and TOML value of lb's `check` table.
fn check_setting<'w>(word: &'w str, value: &str) -> (&'w str, String) {
    match word {
        "inter" => ("interval", toml_str(value)),
        _ => (word, value.to_owned()),
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Global,
    Defaults,
    Frontend,
    Backend,
    Listen,
    /// `cache NAME` → `[cache.NAME]`.
    Cache,
}

#[derive(Debug, Clone)]
struct Entry {
    value: String,
    comment: Option<String>,
}

/// One output section.
#[derive(Debug)]
struct Sect {
    kind: Kind,
    name: String,
    header_comment: Option<String>,
    /// (key, entries, is_list); in first-seen order.
    keys: Vec<(String, Vec<Entry>, bool)>,
    timeout: Vec<(String, String)>,
    check: Vec<(String, String)>,
    /// Comments in file order (original comments and unsupported lines).
    notes: Vec<String>,
    /// ACLs left out as unsupported: rules that use them are left out too.
    dropped_acls: Vec<String>,
    /// The ACLs converted so far (HAProxy resolves a condition's ACLs when it reads it).
    acls: crate::acl::AclSet,
    /// `default-server check` in this section.
    default_server_check: bool,
    /// The `http-request` rule an `option forwardfor except|header …` of this section
    /// stands for (added when the section is known to be `mode http`).
    forwardfor: Option<(String, Option<String>)>,
    /// The haproxy.cfg line of the section header.
    line: usize,
    /// A frontend with no address lb can listen on: written as comments (HAProxy accepts
    /// it, and it receives nothing).
    commented: bool,
}

impl Sect {
    fn new(kind: Kind, name: &str, comment: Option<String>) -> Self {
        Self {
            kind,
            name: name.to_string(),
            header_comment: comment,
            keys: Vec::new(),
            timeout: Vec::new(),
            check: Vec::new(),
            notes: Vec::new(),
            dropped_acls: Vec::new(),
            acls: crate::acl::AclSet::default(),
            default_server_check: false,
            forwardfor: None,
            commented: false,
            line: 0,
        }
    }

    fn path(&self) -> String {
        match self.kind {
            Kind::Global => "global".into(),
            Kind::Defaults => "defaults".into(),
            Kind::Frontend => format!("frontend.{}", self.name),
            Kind::Backend => format!("backend.{}", self.name),
            Kind::Listen => format!("listen.{}", self.name),
            Kind::Cache => format!("cache.{}", self.name),
        }
    }

    fn push(&mut self, key: &str, value: String, comment: Option<String>, list: bool) {
        let e = Entry { value, comment };
        match self.keys.iter_mut().find(|(k, _, _)| k == key) {
            Some((_, v, l)) if *l => v.push(e),
            Some((_, v, _)) => *v = vec![e],
            None => self.keys.push((key.to_string(), vec![e], list)),
        }
    }

    fn set_check(&mut self, key: &str, value: String) {
        match self.check.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.check.push((key.to_string(), value)),
        }
    }

    fn has_backend_half(&self) -> bool {
        matches!(self.kind, Kind::Backend | Kind::Listen | Kind::Defaults)
    }
}

/// Actions that restrict access: a rule with one that is not carried over would let
/// through what HAProxy refuses (issue #15: never fail open).
const ACCESS_ACTIONS: &[&str] = &[
    "deny",
    "reject",
    "auth",
    "tarpit",
    "silent-drop",
    "redirect",
    "return",
];

/// HAProxy words lb does not support after an action it does support (the line is valid
/// HAProxy, so it is named as unsupported, not as an error).
const LB_LACKS_AFTER: &[(&str, &[&str])] = &[
    ("del-header", &["-m"]),
    (
        "redirect",
        &[
            "set-cookie",
            "clear-cookie",
            "append-slash",
            "ignore-empty",
            "keep-query",
        ],
    ),
    (
        "deny",
        &[
            "status",
            "content-type",
            "default-errorfiles",
            "errorfile",
            "errorfiles",
            "file",
            "lf-file",
            "string",
            "lf-string",
            "hdr",
        ],
    ),
    (
        "return",
        &[
            "default-errorfiles",
            "errorfile",
            "errorfiles",
            "file",
            "lf-file",
        ],
    ),
];

/// HAProxy bind options about TLS policy lb does not carry: `lb convert` refuses them
/// rather than drop them.
const TLS_POLICY_BIND_OPTS: &[&str] = &[
    "ca-ignore-err",
    "crt-ignore-err",
    "ecdhe",
    "no-tlsv12",
    "no-tlsv13",
    "force-sslv3",
    "force-tlsv10",
    "force-tlsv11",
    "force-tlsv12",
    "force-tlsv13",
    "allow-0rtt",
    "ca-sign-file",
    "ca-sign-pass",
    "generate-certificates",
    "no-ca-names",
];

/// Whether an ACL or condition error means lb lacks something HAProxy has (the line is
/// valid HAProxy) rather than that the line is wrong (HAProxy refuses it too).
fn lb_lacks(msg: &str) -> bool {
    [
        "unknown fetch method",
        "not supported",
        "after fetch",
        "failed to open pattern file",
        "needs a string fetch",
        // lb's regexes lack PCRE's look-around and back-references
        "regex `",
    ]
    .iter()
    .any(|m| msg.contains(m))
}

/// Words as the directive parsers' tokens (a token's position is its column).
fn toks(words: &[W]) -> (Vec<Tok>, usize) {
    let toks: Vec<Tok> = words
        .iter()
        .map(|w| Tok {
            text: w.text.clone(),
            pos: w.col,
            off: 0,
        })
        .collect();
    let end = words.last().map_or(1, |w| w.col + w.text.chars().count());
    (toks, end)
}

/// The index of the `if`/`unless` that starts a condition.
fn cond_start(words: &[W]) -> Option<usize> {
    words
        .iter()
        .position(|w| !w.quoted && (w.text == "if" || w.text == "unless"))
}

struct Converter<'a> {
    file: &'a Path,
    opts: ConvertOptions,
    /// Access rules that could not be converted (see [`Conversion::unconverted`]).
    unconverted: usize,
    /// `default-server check` in `defaults`: every later server is checked.
    defaults_server_check: bool,
    /// `option forwardfor except NET` / `header NAME` in `defaults`: the rule every later
    /// frontend gets.
    defaults_forwardfor: Option<String>,
    diags: Vec<Diagnostic>,
    sections: Vec<Sect>,
    /// Lines before the first section.
    preamble: Vec<String>,
    defaults_seen: usize,
    /// (line, option) of a bind option left without its value at the end of a line.
    dangling: Option<(usize, String)>,
    /// CPUs of threads 1, 2, … from per-thread `cpu-map` lines so far.
    cpu_per_thread: Vec<usize>,
    /// `global` settings that are defaults of bind and server lines and of frontends.
    tls: TlsDefaults,
}

/// `ssl-default-bind-*` / `ssl-default-server-*` (options added to each `ssl` bind or
/// server line that does not set them), `crt-base` / `ca-base` (prefixes of relative
/// paths), and `tune.bufsize` / `tune.maxrewrite` / `tune.http.maxhdr` (each frontend's
/// `max_header_bytes` / `max_headers` unless it sets them).
#[derive(Debug, Default)]
struct TlsDefaults {
    bind: Vec<Vec<String>>,
    server: Vec<Vec<String>>,
    crt_base: Option<String>,
    ca_base: Option<String>,
    bufsize: Option<u32>,
    maxrewrite: Option<u32>,
    maxhdr: Option<u32>,
}

impl TlsDefaults {
    /// `args` (a bind's or a server's, after the name/address) with the defaults it lacks
    /// when it has `ssl`, and relative certificate and CA paths under their bases.
    fn apply(&self, args: &[W], server: bool) -> Vec<W> {
        let mut out: Vec<W> = args.to_vec();
        let ssl = args.iter().any(|w| w.text == "ssl" && !w.quoted);
        let col = args.first().map_or(1, |w| w.col);
        if ssl {
            for opt in if server { &self.server } else { &self.bind } {
                if !args.iter().any(|w| w.text == opt[0]) {
                    out.extend(opt.iter().map(|t| W {
                        text: t.clone(),
                        col,
                        quoted: false,
                    }));
                }
            }
        }
        for i in 1..out.len() {
            let base = match out[i - 1].text.as_str() {
                "crt" | "crt-list" => &self.crt_base,
                "ca-file" | "ca-verify-file" | "crl-file" => &self.ca_base,
                _ => continue,
            };
            if let Some(b) = base
                && !out[i].text.starts_with('/')
            {
                out[i].text = format!("{}/{}", b.trim_end_matches('/'), out[i].text);
            }
        }
        out
    }

    /// A `global` line this handles: `Ok(true)` when taken.
    fn global(&mut self, words: &[W]) -> Result<bool, String> {
        let kw = words[0].text.as_str();
        let rest: Vec<String> = words[1..].iter().map(|w| w.text.clone()).collect();
        let number = || {
            rest.first()
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|v| *v > 0)
                .ok_or_else(|| format!("`{kw}` needs a positive number"))
        };
        match kw {
            "ssl-default-bind-ciphers"
            | "ssl-default-bind-ciphersuites"
            | "ssl-default-bind-curves"
            | "ssl-default-server-ciphers"
            | "ssl-default-server-ciphersuites" => {
                let opt = kw.rsplit('-').next().unwrap_or_default().to_string();
                let v = rest
                    .first()
                    .ok_or_else(|| format!("`{kw}` needs a value"))?;
                let list = if kw.contains("-bind-") {
                    &mut self.bind
                } else {
                    &mut self.server
                };
                list.push(vec![opt, v.clone()]);
            }
            "ssl-default-bind-options" | "ssl-default-server-options" => {
                let list = if kw.contains("-bind-") {
                    &mut self.bind
                } else {
                    &mut self.server
                };
                let mut i = 0;
                while i < rest.len() {
                    let takes_value = matches!(rest[i].as_str(), "ssl-min-ver" | "ssl-max-ver");
                    let end = if takes_value { i + 2 } else { i + 1 };
                    list.push(rest[i..end.min(rest.len())].to_vec());
                    i = end;
                }
            }
            "crt-base" | "ca-base" => {
                let v = rest
                    .first()
                    .cloned()
                    .ok_or_else(|| format!("`{kw}` needs a directory"))?;
                if kw == "crt-base" {
                    self.crt_base = Some(v);
                } else {
                    self.ca_base = Some(v);
                }
            }
            "tune.bufsize" => self.bufsize = Some(number()?),
            "tune.maxrewrite" => self.maxrewrite = Some(number()?),
            "tune.http.maxhdr" => self.maxhdr = Some(number()?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// HAProxy's largest request head: `tune.bufsize` minus `tune.maxrewrite` (16384 and
    /// 1024 by default, the rewrite reserve at most half the buffer).
    fn max_header_bytes(&self) -> Option<u32> {
        if self.bufsize.is_none() && self.maxrewrite.is_none() {
            return None;
        }
        let buf = self.bufsize.unwrap_or(16_384);
        let rewrite = self.maxrewrite.unwrap_or(1024).min(buf / 2);
        Some(buf - rewrite)
    }
}

/// A `cpu-map` CPU set (`0-3`, `0 2`, `4,6`) in order, or None if it is not one.
fn cpu_set(words: &[W]) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in words.iter().flat_map(|w| w.text.split(',')) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?);
                if a > b || b >= crate::cpus::MAX_CPUS {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok().filter(|c| *c < crate::cpus::MAX_CPUS)?),
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Converts haproxy.cfg text with the default options.
pub fn convert_str(file: &Path, text: &str) -> Conversion {
    convert_str_with(file, text, ConvertOptions::default())
}

/// Converts haproxy.cfg text.
pub fn convert_str_with(file: &Path, text: &str, opts: ConvertOptions) -> Conversion {
    let mut c = Converter {
        file,
        opts,
        unconverted: 0,
        defaults_server_check: false,
        defaults_forwardfor: None,
        diags: Vec::new(),
        sections: Vec::new(),
        preamble: Vec::new(),
        defaults_seen: 0,
        dangling: None,
        cpu_per_thread: Vec::new(),
        tls: TlsDefaults::default(),
    };
    // Environment variables and `.if` blocks first, as HAProxy does.
    let (lines, pre) = super::preprocess::preprocess(text, &|name| std::env::var(name).ok());
    for d in pre {
        c.diag(d.severity, d.line, d.col, "", d.message);
    }
    for (i, raw) in lines.iter().enumerate() {
        c.line(i + 1, raw);
    }
    c.lift_checks();
    c.forwardfor_rules();
    c.comment_out_bindless_frontends();
    c.header_limits();
    let toml = c.emit();
    let mut diags = c.diags;
    diags.sort_by_key(|d| (d.line, d.col));
    Conversion {
        toml,
        diagnostics: diags,
        unconverted: c.unconverted,
    }
}

impl Converter<'_> {
    fn diag(&mut self, sev: Severity, line: usize, col: usize, path: &str, msg: String) {
        self.diags.push(Diagnostic {
            severity: sev,
            file: self.file.to_path_buf(),
            line,
            col,
            path: path.to_string(),
            message: msg,
        });
    }

    fn cur(&mut self) -> Option<&mut Sect> {
        self.sections.last_mut()
    }

    fn cur_path(&self) -> String {
        self.sections.last().map_or_else(String::new, Sect::path)
    }

    fn note(&mut self, text: String) {
        match self.sections.last_mut() {
            Some(s) => s.notes.push(text),
            None => self.preamble.push(text),
        }
    }

    /// Names an unsupported directive (or part of one) and keeps it as a comment.
    fn unsupported(&mut self, line: usize, col: usize, raw: &str, why: &str) {
        let path = self.cur_path();
        self.diag(
            Severity::Warning,
            line,
            col,
            &path,
            format!("{why}; kept as a comment"),
        );
        self.note(format!(
            "UNSUPPORTED (line {line}): {} -- {why}",
            raw.trim()
        ));
    }

    /// A line that cannot be carried over. When it `restricts` access, dropping it would
    /// fail open: it becomes an error and an `unconverted` entry that `lb check` refuses
    /// (or, with `--drop-unsupported`, a loud warning and a comment); otherwise it is named
    /// and kept as a comment.
    fn unconvertible(&mut self, line: usize, col: usize, raw: &str, why: &str, restricts: bool) {
        if !restricts {
            return self.unsupported(line, col, raw, why);
        }
        self.unconverted += 1;
        let path = self.cur_path();
        if self.opts.drop_unsupported {
            self.diag(
                Severity::Warning,
                line,
                col,
                &path,
                format!("{why}; this rule restricts access and is DROPPED (--drop-unsupported): lb lets through what HAProxy refuses"),
            );
            self.note(format!(
                "DROPPED ACCESS RULE (line {line}): {} -- {why}",
                raw.trim()
            ));
            return;
        }
        self.diag(
            Severity::Error,
            line,
            col,
            &path,
            format!("{why}; this rule restricts access, so it is written as an `unconverted` entry that lb refuses to run with until it is converted or deleted by hand"),
        );
        let file = self.file.file_name().map_or_else(
            || self.file.display().to_string(),
            |f| f.to_string_lossy().into_owned(),
        );
        let v = toml_str(&format!("{file} line {line}: {} -- {why}", raw.trim()));
        if let Some(s) = self.cur() {
            s.push("unconverted", v, None, true);
        }
    }

    fn line(&mut self, n: usize, raw: &str) {
        let (words, comment) = match split_line(raw) {
            Ok(x) => x,
            Err((col, msg)) => {
                let path = self.cur_path();
                self.diag(Severity::Error, n, col, &path, msg);
                return;
            }
        };
        let Some(first) = words.first() else {
            if let Some(c) = comment.filter(|c| !c.trim().is_empty()) {
                self.note(c);
            }
            return;
        };
        let kw = first.text.as_str();
        match kw {
            "global" | "defaults" | "frontend" | "backend" | "listen" => {
                self.section(n, &words, comment);
                return;
            }
            "cache" => {
                let Some(name) = words.get(1) else {
                    self.diag(
                        Severity::Error,
                        n,
                        first.col + kw.len(),
                        kw,
                        "`cache` needs a name".to_string(),
                    );
                    self.sections
                        .push(Sect::new(Kind::Global, "#cache", comment));
                    return;
                };
                self.sections
                    .push(Sect::new(Kind::Cache, &name.text.clone(), comment));
                return;
            }
            "userlist" | "peers" | "resolvers" | "mailers" | "program" | "http-errors" | "ring"
            | "fcgi-app" | "crt-store" | "traces" | "log-forward" => {
                let name = words.get(1).map_or("", |w| w.text.as_str()).to_string();
                self.sections
                    .push(Sect::new(Kind::Global, &format!("#{kw} {name}"), None));
                let why = format!("`{kw}` sections are not supported");
                self.unsupported(n, first.col, raw, &why);
                return;
            }
            _ => {}
        }
        let Some(sect) = self.sections.last() else {
            self.diag(
                Severity::Error,
                n,
                first.col,
                "",
                format!("`{kw}` outside of any section"),
            );
            return;
        };
        if sect.name.starts_with('#') {
            // inside an unsupported section: keep as comment
            self.note(format!("UNSUPPORTED (line {n}): {}", raw.trim()));
            return;
        }
        match sect.kind {
            Kind::Global => self.global(n, raw, &words, comment),
            Kind::Cache => self.cache_line(n, raw, &words, comment),
            _ => self.proxy(n, raw, &words, comment),
        }
    }

    fn section(&mut self, n: usize, words: &[W], comment: Option<String>) {
        let kw = words[0].text.as_str();
        let name = words.get(1).map(|w| w.text.clone());
        let kind = match kw {
            "global" => Kind::Global,
            "defaults" => Kind::Defaults,
            "frontend" => Kind::Frontend,
            "backend" => Kind::Backend,
            _ => Kind::Listen,
        };
        match (kind, &name) {
            (Kind::Frontend | Kind::Backend | Kind::Listen, None) => {
                self.diag(
                    Severity::Error,
                    n,
                    words[0].col + kw.len(),
                    kw,
                    format!("`{kw}` needs a name"),
                );
                self.sections.push(Sect::new(kind, "?", comment));
                return;
            }
            (Kind::Frontend | Kind::Backend | Kind::Listen, Some(nm)) => {
                if let Some(extra) = words.get(2) {
                    self.diag(Severity::Warning, n, extra.col, &format!("{kw}.{nm}"), format!("`{}` after the {kw} name is not supported (HAProxy's old `listen NAME ADDR` form); use `bind`", extra.text));
                }
            }
            (Kind::Defaults, _) => {
                self.defaults_seen += 1;
                if let Some(nm) = &name {
                    self.diag(Severity::Warning, n, words[1].col, "defaults", format!("named defaults (`{nm}`) are not supported: lb has one [defaults] section; merged into it"));
                }
                if self.defaults_seen > 1 {
                    self.diag(Severity::Warning, n, words[0].col, "defaults", "several defaults sections: lb has one [defaults]; later settings override earlier ones for every proxy".to_string());
                    // merge into the first
                    if let Some(pos) = self.sections.iter().position(|s| s.kind == Kind::Defaults) {
                        let s = self.sections.remove(pos);
                        self.sections.push(s);
                        return;
                    }
                }
            }
            (Kind::Cache, _) => {}
            (Kind::Global, _) => {
                if let Some(pos) = self
                    .sections
                    .iter()
                    .position(|s| s.kind == Kind::Global && !s.name.starts_with('#'))
                {
                    let s = self.sections.remove(pos);
                    self.sections.push(s);
                    return;
                }
            }
        }
        let nm = name.unwrap_or_default();
        if matches!(kind, Kind::Frontend | Kind::Backend | Kind::Listen) {
            let dup = self.sections.iter().any(|s| {
                s.name == nm
                    && (s.kind == kind
                        || (kind == Kind::Listen
                            && matches!(s.kind, Kind::Frontend | Kind::Backend))
                        || (s.kind == Kind::Listen
                            && matches!(kind, Kind::Frontend | Kind::Backend)))
            });
            if dup {
                self.diag(
                    Severity::Error,
                    n,
                    words[1].col,
                    &format!("{kw}.{nm}"),
                    format!("duplicate {kw} name `{nm}`"),
                );
            }
        }
        let mut sect = Sect::new(kind, &nm, comment);
        sect.line = n;
        self.sections.push(sect);
    }

    /// A line of a `cache NAME` section: each keyword of the key table to its key.
    fn cache_line(&mut self, n: usize, raw: &str, words: &[W], comment: Option<String>) {
        let kw = words[0].text.as_str();
        let col = words[0].col;
        let path = self.cur_path();
        let Some(key) = keys::haproxy_cache_key(kw) else {
            let names = keys::CACHE_KEYS
                .iter()
                .flat_map(|k| k.haproxy.iter().copied());
            let h = hint(kw, names);
            self.diag(
                Severity::Error,
                n,
                col,
                &path,
                format!("unknown cache keyword `{kw}`{h}"),
            );
            self.note(format!("ERROR (line {n}): {}", raw.trim()));
            return;
        };
        let [_, v] = words else {
            self.diag(
                Severity::Error,
                n,
                col,
                &path,
                format!("`{kw}` takes one value"),
            );
            return;
        };
        let value = if key.key == "process_vary" {
            match v.text.as_str() {
                "on" => "true".to_string(),
                "off" => "false".to_string(),
                other => {
                    self.diag(
                        Severity::Error,
                        n,
                        v.col,
                        &path,
                        format!("process-vary is `on` or `off`, not `{other}`"),
                    );
                    return;
                }
            }
        } else {
            match v.text.parse::<u64>() {
                Ok(x) => x.to_string(),
                Err(_) => {
                    self.diag(
                        Severity::Error,
                        n,
                        v.col,
                        &path,
                        format!("{kw} must be a number, not `{}`", v.text),
                    );
                    return;
                }
            }
        };
        if let Some(s) = self.cur() {
            s.push(key.key, value, comment, false);
        }
    }

    /// `cpu-map [auto:]1/THREADS CPUS…` → `cpu_map`: the `auto:` form over threads `1-N`
    /// or `all` (thread i on the i-th CPU listed), or one line per thread naming one CPU,
    /// threads in order (`cpu-map 1/1 0`, `cpu-map 1/2 1`).
    fn cpu_map(&mut self, n: usize, raw: &str, words: &[W], comment: Option<String>) {
        const HINT: &str = "only `cpu-map auto:1/1-N CPUS` and one `cpu-map 1/T CPU` line per thread (in order) convert; set `[global] cpu_map` by hand";
        let col = words[0].col;
        let spec = words.get(1).map_or("", |w| w.text.as_str());
        let (auto, spec) = match spec.strip_prefix("auto:") {
            Some(rest) => (true, rest),
            None => (false, spec),
        };
        let (procs, threads) = spec.split_once('/').unwrap_or((spec, "all"));
        let cpus = words.get(2..).and_then(cpu_set);
        let Some(cpus) = cpus.filter(|_| matches!(procs, "1" | "all" | "1-1")) else {
            return self.unsupported(n, col, raw, HINT);
        };
        let list = if auto {
            let count = match threads {
                "all" => Some(cpus.len()),
                t => t
                    .strip_prefix("1-")
                    .and_then(|b| b.parse::<usize>().ok())
                    .filter(|&b| b >= 1 && b <= cpus.len()),
            };
            let Some(count) = count else {
                return self.unsupported(n, col, raw, HINT);
            };
            cpus[..count].to_vec()
        } else {
            let next = self.cpu_per_thread.len() + 1;
            if threads.parse::<usize>().ok() != Some(next) || cpus.len() != 1 {
                return self.unsupported(n, col, raw, HINT);
            }
            self.cpu_per_thread.push(cpus[0]);
            self.cpu_per_thread.clone()
        };
        let value = format!(
            "[{}]",
            list.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let Some(s) = self.cur() {
            s.push("cpu_map", value, comment, false);
        }
    }

    /// `log ADDR … FACILITY [LEVEL [MINLEVEL]]` and, in proxies, `log global`: an item of
    /// the section's `log` list, checked with the loader's parser.
    fn log_line(&mut self, n: usize, raw: &str, words: &[W], comment: Option<String>, proxy: bool) {
        let texts: Vec<&str> = words
            .get(1..)
            .unwrap_or_default()
            .iter()
            .map(|w| w.text.as_str())
            .collect();
        let checked = if proxy && texts == ["global"] {
            Ok(())
        } else {
            crate::syslog::parse_target(&texts).map(|_| ())
        };
        match checked {
            Ok(()) => {
                let v = toml_str(&texts.join(" "));
                if let Some(s) = self.cur() {
                    s.push("log", v, comment, true);
                }
            }
            Err((w, msg)) => {
                let col = words.get(w + 1).map_or(words[0].col, |t| t.col);
                self.unsupported(n, col, raw, &msg);
            }
        }
    }

    /// `stats socket PATH [mode M] [level L] …` → `stats_socket`; `expose-fd listeners`
    /// (for HAProxy's seamless reloads) is dropped with a warning, lb reloads in-process.
    fn stats_socket(&mut self, n: usize, raw: &str, words: &[W], comment: Option<String>) {
        let mut kept: Vec<&W> = Vec::new();
        let mut rest = words.get(2..).unwrap_or_default().iter();
        while let Some(w) = rest.next() {
            if w.text == "expose-fd" {
                let path = self.cur_path();
                self.diag(
                    Severity::Warning,
                    n,
                    w.col,
                    &path,
                    "`expose-fd listeners` dropped: lb reloads in its own process".to_owned(),
                );
                rest.next();
                continue;
            }
            kept.push(w);
        }
        let texts: Vec<&str> = kept.iter().map(|w| w.text.as_str()).collect();
        match super::model::parse_stats_socket(&texts) {
            Ok(_) => {
                let line = kept
                    .iter()
                    .map(|w| quote_word(&w.text))
                    .collect::<Vec<_>>()
                    .join(" ");
                if let Some(s) = self.cur() {
                    s.push("stats_socket", toml_str(&line), comment, true);
                }
            }
            Err((i, why)) => {
                let col = kept.get(i).map_or(words[0].col, |w| w.col);
                self.unsupported(n, col, raw, &why);
            }
        }
    }

    fn global(&mut self, n: usize, raw: &str, words: &[W], comment: Option<String>) {
        let kw = words[0].text.as_str();
        match self.tls.global(words) {
            Ok(true) => {
                self.note(format!("haproxy.cfg line {n}: `{}` is applied to each bind, server or frontend it concerns", raw.trim()));
                return;
            }
            Ok(false) => {}
            Err(m) => return self.error(n, words[0].col, raw, m),
        }
        match kw {
            "nbthread" => match words.get(1).and_then(|w| w.text.parse::<u32>().ok()) {
                Some(t) => {
                    if let Some(s) = self.cur() {
                        s.push("threads", t.to_string(), comment, false);
                    }
                }
                None => self.unsupported(n, words[0].col, raw, "`nbthread` needs a number"),
            },
            "tune.ssl.cachesize" => match words.get(1).and_then(|w| w.text.parse::<u32>().ok()) {
                Some(t) => {
                    if let Some(s) = self.cur() {
                        s.push("ssl_cache_size", t.to_string(), comment, false);
                    }
                }
                None => self.unsupported(n, words[0].col, raw, "`tune.ssl.cachesize` needs a number"),
            },
            "maxconn" => match words.get(1).and_then(|w| w.text.parse::<u32>().ok()).filter(|&m| m > 0) {
                Some(m) => {
                    if let Some(s) = self.cur() {
                        s.push("maxconn", m.to_string(), comment, false);
                    }
                }
                None => self.unsupported(n, words[0].col, raw, "`maxconn` needs a number from 1 to 4294967295"),
            },
            "stats" if words.get(1).is_some_and(|w| w.text == "socket") => {
                self.stats_socket(n, raw, words, comment);
            }
            "stats" => self.unsupported(n, words[0].col, raw, "only `stats socket` converts (`stats_socket`); lb's HTTP admin API is `[global] admin`"),
            "cpu-map" => self.cpu_map(n, raw, words, comment),
            "log" => self.log_line(n, raw, words, comment, false),
            "daemon" => self.note(format!(
                "haproxy.cfg line {n}: `daemon` needs no key: lb runs in the foreground and systemd (packaging/lb.service) runs it in the background"
            )),
            "master-worker" | "nbproc" => {
                self.unsupported(n, words[0].col, raw, &format!("`{kw}`: lb runs in the foreground under a service manager"))
            }
            "user" | "group" | "chroot" | "pidfile" | "hard-stop-after" | "uid" | "gid" | "ulimit-n" => {
                let key = kw.replace('-', "_");
                let arg = words.get(1).map(|w| w.text.as_str()).filter(|_| words.len() == 2);
                let value = match (kw, arg) {
                    (_, None) => None,
                    ("uid" | "gid", Some(a)) => a.parse::<u32>().ok().map(|v| v.to_string()),
                    ("ulimit-n", Some(a)) => a.parse::<u32>().ok().filter(|&v| v > 0).map(|v| v.to_string()),
                    ("hard-stop-after", Some(a)) => d::parse_duration(a).ok().map(|_| toml_str(a)),
                    ("chroot" | "pidfile", Some(a)) => a.starts_with('/').then(|| toml_str(a)),
                    (_, Some(a)) => Some(toml_str(a)),
                };
                match value {
                    Some(v) => {
                        if let Some(s) = self.cur() {
                            s.push(&key, v, comment, false);
                        }
                    }
                    None => self.unsupported(n, words[0].col, raw, &format!("`{kw}` needs one valid argument")),
                }
            }
            _ if keys::known_global_keywords().any(|k| k == kw) || kw.starts_with("tune.") || kw.starts_with("ssl-") => {
                self.unsupported(n, words[0].col, raw, &format!("global `{kw}` is not supported"))
            }
            _ => {
                let h = hint(kw, keys::known_global_keywords());
                self.unsupported(n, words[0].col, raw, &format!("unknown global keyword `{kw}`{h}"))
            }
        }
    }

    fn proxy(&mut self, n: usize, raw: &str, words: &[W], comment: Option<String>) {
        let kw = words[0].text.clone();
        let col = words[0].col;
        let args = &words[1..];
        let kind = self.sections.last().map_or(Kind::Defaults, |s| s.kind);
        let path = self.cur_path();
        let section = match kind {
            Kind::Frontend => Section::Frontend,
            Kind::Backend => Section::Backend,
            Kind::Listen => Section::Listen,
            Kind::Global | Kind::Defaults | Kind::Cache => Section::Defaults,
        };
        // Where a keyword may be comes from the key table (the key it converts into).
        if let Some(k) = keys::haproxy_proxy_key(&kw)
            && !k.allowed_in(section)
        {
            let where_ = match kind {
                Kind::Frontend => "a frontend",
                Kind::Backend => "a backend",
                Kind::Defaults => "defaults",
                _ => "this section",
            };
            let restricts = self.restricts(&kw, args);
            self.unconvertible(
                n,
                col,
                raw,
                &format!("`{kw}` is not allowed in {where_}"),
                restricts,
            );
            return;
        }
        let need_arg = |c: &mut Self| {
            if args.is_empty() {
                c.diag(
                    Severity::Error,
                    n,
                    col + kw.len(),
                    &path,
                    format!("`{kw}` needs an argument"),
                );
                true
            } else {
                false
            }
        };
        match kw.as_str() {
            "mode" => {
                if need_arg(self) {
                    return;
                }
                match args[0].text.as_str() {
                    "tcp" | "http" => {
                        let v = toml_str(&args[0].text);
                        if let Some(s) = self.cur() {
                            s.push("mode", v, comment, false);
                        }
                    }
                    other => {
                        let h = hint(other, ["tcp", "http"]);
                        self.diag(
                            Severity::Error,
                            n,
                            args[0].col,
                            &path,
                            format!("unknown mode `{other}`{h}"),
                        );
                    }
                }
            }
            "bind" => self.bind(n, raw, args, comment, col),
            "server" => self.server(n, raw, args, comment, col, false),
            "server-template" => self.server(n, raw, args, comment, col, true),
            "acl" => {
                if need_arg(self) {
                    return;
                }
                // lb's ACL engine must take the line. A fetch lb lacks, such as
                // `sc_http_req_rate`, is named here (and the rules using the ACL after it);
                // a line HAProxy refuses too (`-qi`, a bad match method) is an error.
                let text = join(args);
                let res = match self.sections.last_mut() {
                    Some(s) => s.acls.define(&text),
                    None => Ok(()),
                };
                if let Err(e) = res {
                    let name = args[0].text.clone();
                    let at = col_at(args, e.offset);
                    let why = format!("acl `{name}`: {}", e.message);
                    if lb_lacks(&e.message) {
                        self.unsupported(n, at, raw, &why);
                        if let Some(s) = self.cur() {
                            s.dropped_acls.push(name);
                        }
                    } else {
                        self.error(n, at, raw, why);
                    }
                    return;
                }
                let v = toml_str(&join(args));
                if let Some(s) = self.cur() {
                    s.push("acl", v, comment, true);
                }
            }
            "http-request" => self.http_rule(RuleSide::Request, n, raw, args, comment, col),
            "http-response" => self.http_rule(RuleSide::Response, n, raw, args, comment, col),
            "http-after-response" => {
                self.http_rule(RuleSide::AfterResponse, n, raw, args, comment, col)
            }
            "redirect" => {
                // old-style `redirect …` is `http-request redirect …`, except that its target
                // is a plain string, not a log-format one: its `%` are escaped.
                let mut w = vec![W {
                    text: "redirect".into(),
                    col,
                    quoted: false,
                }];
                w.extend(args.iter().cloned());
                if let Some(target) = w.get_mut(2) {
                    target.text = target.text.replace('%', "%%");
                }
                self.http_rule(RuleSide::Request, n, raw, &w, comment, col)
            }
            "tcp-request" => self.tcp_request(n, raw, args, comment, col),
            "stick-table" => {
                let (t, end) = toks(args);
                if let Err(p) = d::stick_table(&mut Args::new(&t, end)) {
                    // `peers`, `srvkey`, `gpc(N)` arrays and the like: named, not carried.
                    self.unsupported(n, p.pos, raw, &format!("stick-table: {}", p.msg));
                    return;
                }
                let v = toml_str(&join(args));
                if let Some(s) = self.cur() {
                    s.push("stick_table", v, comment, false);
                }
            }
            "use_backend" => {
                if need_arg(self) {
                    return;
                }
                let fixed = self.braces(n, args);
                let cond = cond_start(&fixed);
                if let Some(extra) = fixed.get(1).filter(|_| cond != Some(1)) {
                    let why = format!("use_backend: unexpected `{}`", extra.text);
                    self.error(n, extra.col, raw, why);
                    return;
                }
                if !self.condition_ok(n, raw, &fixed, false) {
                    return;
                }
                // HAProxy's unconditional `use_backend X` always matches: lb writes it
                // with the condition spelled out.
                let line = match cond {
                    Some(_) => join_cond(&fixed),
                    None => format!("{} if TRUE", join(&fixed)),
                };
                let v = toml_str(&line);
                if let Some(s) = self.cur() {
                    s.push("use_backend", v, comment, true);
                }
            }
            "default_backend" => {
                if need_arg(self) {
                    return;
                }
                let v = toml_str(&args[0].text);
                if let Some(s) = self.cur() {
                    s.push("default_backend", v, comment, false);
                }
            }
            "timeout" | "contimeout" | "clitimeout" | "srvtimeout" => {
                let (name, val) = match kw.as_str() {
                    "timeout" => (args.first(), args.get(1)),
                    _ => (None, args.first()),
                };
                let name = match kw.as_str() {
                    "contimeout" => "connect".to_string(),
                    "clitimeout" => "client".to_string(),
                    "srvtimeout" => "server".to_string(),
                    _ => name.map(|w| w.text.clone()).unwrap_or_default(),
                };
                let Some(val) = val else {
                    self.diag(
                        Severity::Error,
                        n,
                        col + kw.len(),
                        &path,
                        format!("`{kw}` needs a name and a duration"),
                    );
                    return;
                };
                if !TIMEOUT_NAMES.contains(&name.as_str()) {
                    self.unsupported(n, col, raw, &format!("`timeout {name}` is not supported"));
                    return;
                }
                if let Err(m) = parse_duration(&val.text) {
                    self.diag(Severity::Error, n, val.col, &path, m);
                    return;
                }
                if let Some(s) = self.cur() {
                    match s.timeout.iter_mut().find(|(k, _)| *k == name) {
                        Some((_, v)) => v.clone_from(&val.text),
                        None => s.timeout.push((name, val.text.clone())),
                    }
                }
            }
            "balance" => {
                if need_arg(self) {
                    return;
                }
                let a = args[0].text.as_str();
                let uri = a == "uri" && args[1..].iter().all(|w| w.text == "whole");
                if uri || ["roundrobin", "leastconn", "source", "random"].contains(&a) {
                    let v = toml_str(&join(args));
                    if let Some(s) = self.cur() {
                        s.push("balance", v, comment, false);
                    }
                } else {
                    self.unsupported(
                        n,
                        args[0].col,
                        raw,
                        &format!(
                            "balance `{}` is not supported (roundrobin, leastconn, source, random, uri [whole])",
                            join(args)
                        ),
                    );
                }
            }
            // lb's hashing (`source`, `uri`) is always consistent (rendezvous hashing).
            "hash-type" => {
                if args.first().is_some_and(|w| w.text == "consistent") {
                    self.note(format!(
                        "haproxy.cfg line {n}: `hash-type consistent` is lb's only hashing"
                    ));
                } else {
                    self.unsupported(
                        n,
                        col,
                        raw,
                        "lb's hashing is always consistent; `hash-type` other than `consistent`",
                    );
                }
            }
            "cookie" => {
                if need_arg(self) {
                    return;
                }
                let bad = args
                    .iter()
                    .skip(1)
                    .find(|w| !["insert", "indirect", "nocache"].contains(&w.text.as_str()));
                let insert = args.iter().any(|w| w.text == "insert");
                match bad {
                    Some(b) => {
                        let why = format!(
                            "cookie option `{}` is not supported (only `insert [indirect] [nocache]`)",
                            b.text
                        );
                        self.unsupported(n, b.col, raw, &why)
                    }
                    None if !insert => {
                        self.unsupported(n, col, raw, "only `cookie NAME insert …` is supported")
                    }
                    None => {
                        let v = toml_str(&join(args));
                        if let Some(s) = self.cur() {
                            s.push("cookie", v, comment, false);
                        }
                    }
                }
            }
            "no" if words.get(1).is_some_and(|w| w.text == "log") && words.len() == 2 => {
                if let Some(s) = self.cur() {
                    s.push("log", "false".into(), comment, false);
                }
            }
            "option" | "no" => self.option(n, raw, words, comment),
            "retries" | "maxconn" => {
                if need_arg(self) {
                    return;
                }
                match args[0].text.parse::<u32>() {
                    Ok(v) => {
                        if let Some(s) = self.cur() {
                            s.push(&kw, v.to_string(), comment, false);
                        }
                    }
                    Err(_) => self.diag(
                        Severity::Error,
                        n,
                        args[0].col,
                        &path,
                        format!("{kw} must be a number, not `{}`", args[0].text),
                    ),
                }
            }
            "stats" => {
                let words: Vec<&str> = args.iter().map(|w| w.text.as_str()).collect();
                let mut page = super::model::StatsPage::default();
                match super::model::stats_line(&mut page, &words) {
                    Ok(()) => {
                        let v = toml_str(&join(args));
                        if let Some(s) = self.cur() {
                            s.push("stats", v, comment, true);
                        }
                    }
                    Err((i, why)) => {
                        let at = args.get(i).map_or(col, |w| w.col);
                        // `stats http-request deny|auth …` guards the page: never dropped.
                        let restricts = args.first().is_some_and(|w| w.text == "http-request")
                            && self.restricts("http-request", &args[1..]);
                        self.unconvertible(n, at, raw, &why, restricts);
                    }
                }
            }
            "errorfile" => {
                if args.len() != 2 {
                    self.diag(
                        Severity::Error,
                        n,
                        col,
                        &path,
                        "`errorfile` takes a status code and a file path".to_string(),
                    );
                    return;
                }
                let v = toml_str(&join(args));
                if let Some(s) = self.cur() {
                    s.push("errorfile", v, comment, true);
                }
            }
            "log" => self.log_line(n, raw, words, comment, true),
            "default-server" => {
                let mut i = 0;
                while i < args.len() {
                    let a = &args[i];
                    match (a.text.as_str(), args.get(i + 1)) {
                        // Every later server of the section (or, from defaults, of every
                        // section) is checked.
                        ("check" | "no-check", _) => {
                            let on = a.text == "check";
                            if kind == Kind::Defaults {
                                self.defaults_server_check = on;
                            } else if let Some(s) = self.cur() {
                                s.default_server_check = on;
                            }
                            i += 1;
                        }
                        ("inter" | "rise" | "fall", Some(v)) => {
                            let (key, val) = check_setting(&a.text, &v.text);
                            if let Some(s) = self.cur() {
                                s.set_check(key, val);
                            }
                            i += 2;
                        }
                        _ => {
                            let why =
                                format!("default-server option `{}` is not supported", a.text);
                            self.unsupported(n, a.col, raw, &why);
                            return;
                        }
                    }
                }
            }
            "http-check" => self.http_check(n, raw, args, col),
            "compression" => {
                let (t, end) = toks(args);
                let mut c = super::model::Compression::default();
                match d::compression(&mut Args::new(&t, end), &mut c) {
                    Ok(()) => {
                        let v = toml_str(&join(args));
                        if let Some(s) = self.cur() {
                            s.push("compression", v, comment, true);
                        }
                    }
                    Err(p) => {
                        let why = format!("compression: {}", p.msg);
                        self.unsupported(n, p.pos, raw, &why);
                    }
                }
            }
            _ => {
                if HAPROXY_PROXY_UNSUPPORTED.contains(&kw.as_str()) {
                    self.unsupported(n, col, raw, &format!("`{kw}` is not supported"));
                } else {
                    let h = hint(&kw, known_proxy_keywords());
                    let msg = match &self.dangling {
                        Some((l, opt)) if *l + 1 == n => format!(
                            "unknown keyword `{kw}`; is this the value of `{opt}` from line {l}, split over two lines?"
                        ),
                        _ => format!("unknown keyword `{kw}`{h}"),
                    };
                    self.diag(Severity::Error, n, col, &path, msg);
                    self.note(format!("ERROR (line {n}): {}", raw.trim()));
                }
            }
        }
    }

    /// Whether a proxy line is a rule that restricts access (its action, or that of the
    /// HAProxy keyword itself: `redirect`).
    fn restricts(&self, kw: &str, args: &[W]) -> bool {
        let action = match kw {
            "redirect" => return true,
            "http-request" | "http-response" | "http-after-response" => args.first(),
            // tcp-request connection|content|session ACTION
            "tcp-request" => args.get(1),
            _ => return false,
        };
        let Some(a) = action else {
            return false;
        };
        if a.text == "return" {
            // A `return` restricts when it answers an error status (HAProxy's default is 200).
            let status = args
                .windows(2)
                .find(|w| w[0].text == "status")
                .and_then(|w| w[1].text.parse::<u16>().ok())
                .unwrap_or(200);
            return status >= 400;
        }
        ACCESS_ACTIONS.contains(&a.text.as_str())
    }

    fn bind(&mut self, n: usize, raw: &str, args: &[W], comment: Option<String>, col: usize) {
        let with_defaults = self.tls.apply(args, false);
        let args = &with_defaults[..];
        let path = self.cur_path();
        let Some(addr) = args.first() else {
            self.diag(
                Severity::Error,
                n,
                col + 4,
                &path,
                "`bind` needs an address".into(),
            );
            return;
        };
        let mut out: Vec<String> = Vec::new();
        for part in addr.text.split(',') {
            // HAProxy resolves a bind's host name at startup; `localhost` is the loopback.
            let local = part
                .strip_prefix("localhost:")
                .map(|p| format!("127.0.0.1:{p}"));
            let part = local.as_deref().unwrap_or(part);
            let a = match norm_addr(part, true) {
                Ok(a) => a,
                Err(m) => {
                    self.unsupported(n, addr.col, raw, &m);
                    return;
                }
            };
            // The loader's own address parser: what it refuses is not written. A host name
            // is valid HAProxy that lb lacks (named); a bad port or address is an error.
            let tok = Tok {
                text: a.clone(),
                pos: addr.col,
                off: 0,
            };
            if let Err(p) = d::bind_addr(&tok) {
                if p.msg.contains("is not an IP address") {
                    self.unsupported(n, addr.col, raw, &p.msg);
                } else {
                    self.error(n, p.pos, raw, format!("bind: {}", p.msg));
                }
                return;
            }
            out.push(a);
        }
        let mut opts = Vec::new();
        let mut i = 1;
        while i < args.len() {
            let w = &args[i];
            match w.text.as_str() {
                "ssl"
                | "accept-proxy"
                | "v4v6"
                | "v6only"
                | "no-sslv3"
                | "no-tlsv10"
                | "no-tlsv11"
                | "no-tls-tickets"
                | "strict-sni"
                | "prefer-client-ciphers" => opts.push(w.text.clone()),
                "crt" | "alpn" | "tls-ticket-keys" | "verify" | "ca-file" | "ca-verify-file"
                | "crl-file" | "ssl-min-ver" | "ssl-max-ver" | "ciphers" | "ciphersuites"
                | "curves" | "crt-list" => match args.get(i + 1) {
                    Some(v) => {
                        let mut value = v.text.replace(", ", ",");
                        if w.text == "ciphers" {
                            value = self.offered_ciphers(n, v.col, &value);
                        }
                        opts.push(w.text.clone());
                        opts.push(quote_word(&value));
                        i += 1;
                    }
                    None => {
                        self.diag(
                            Severity::Error,
                            n,
                            w.col,
                            &path,
                            format!("`{}` needs a value", w.text),
                        );
                        self.dangling = Some((n, w.text.clone()));
                        return;
                    }
                },
                "npn" => {
                    let v = args.get(i + 1).map_or("", |v| v.text.as_str());
                    self.diag(Severity::Warning, n, w.col, &path, format!("`npn {v}` is not supported (NPN is obsolete); dropped, ALPN (`alpn h2,http/1.1`) is used instead"));
                    self.note(format!(
                        "haproxy.cfg line {n}: dropped `npn {v}` (obsolete; use alpn)"
                    ));
                    i += 1;
                }
                other => {
                    let takes_value = [
                        "crt-list",
                        "ca-file",
                        "verify",
                        "ciphers",
                        "ciphersuites",
                        "ssl-min-ver",
                        "ssl-max-ver",
                        "name",
                        "process",
                        "interface",
                        "maxconn",
                        "backlog",
                        "mss",
                        "curves",
                        "ecdhe",
                        "crl-file",
                        "id",
                        "level",
                        "mode",
                        "user",
                        "group",
                        "tfo",
                        "thread",
                        "nice",
                        "proto",
                        "namespace",
                        "ca-ignore-err",
                        "crt-ignore-err",
                    ]
                    .contains(&other);
                    let v = if takes_value {
                        args.get(i + 1).map_or("", |v| v.text.as_str())
                    } else {
                        ""
                    };
                    if TLS_POLICY_BIND_OPTS.contains(&other) {
                        // Dropping one would silently change who is accepted or how TLS
                        // is negotiated (e.g. a CA check lost): refused, never dropped.
                        self.diag(
                            Severity::Error,
                            n,
                            w.col,
                            &path,
                            format!(
                                "bind option `{}` is not supported, and dropping it would change which clients are accepted or how TLS is negotiated; remove it from the HAProxy config to convert without it",
                                format!("{other} {v}").trim()
                            ),
                        );
                        if takes_value {
                            i += 1;
                        }
                        i += 1;
                        continue;
                    }
                    self.diag(
                        Severity::Warning,
                        n,
                        w.col,
                        &path,
                        format!(
                            "bind option `{}` is not supported; dropped",
                            format!("{other} {v}").trim()
                        ),
                    );
                    self.note(format!(
                        "haproxy.cfg line {n}: dropped bind option `{}`",
                        format!("{other} {v}").trim()
                    ));
                    if takes_value {
                        i += 1;
                    }
                }
            }
            i += 1;
        }
        // HAProxy ignores `alpn` on a bind without `ssl` (with a warning): so does lb.
        if !opts.iter().any(|o| o == "ssl")
            && let Some(at) = opts.iter().position(|o| o == "alpn")
        {
            opts.drain(at..(at + 2).min(opts.len()));
            let col = args
                .iter()
                .find(|w| w.text == "alpn")
                .map_or(col, |w| w.col);
            self.diag(
                Severity::Warning,
                n,
                col,
                &path,
                "`alpn` on a bind without `ssl` is ignored, as HAProxy does".into(),
            );
        }
        for a in out {
            let mut line = a;
            for o in &opts {
                line.push(' ');
                line.push_str(o);
            }
            let v = toml_str(&line);
            if let Some(s) = self.cur() {
                s.push("bind", v, comment.clone(), true);
            }
        }
    }

    /// A `server` line, or (`template`) a `server-template PREFIX NUM FQDN:PORT …` line.
    fn server(
        &mut self,
        n: usize,
        raw: &str,
        args: &[W],
        comment: Option<String>,
        col: usize,
        template: bool,
    ) {
        let with_defaults = self.tls.apply(args, true);
        let args = &with_defaults[..];
        let path = self.cur_path();
        let lead = usize::from(template);
        let (Some(name), Some(addr)) = (args.first(), args.get(1 + lead)) else {
            let what = if template {
                "`server-template` needs a prefix, a number and an address"
            } else {
                "`server` needs a name and an address"
            };
            self.diag(Severity::Error, n, col + 6, &path, what.into());
            return;
        };
        let a = match norm_addr(&addr.text, false) {
            Ok(a) => a,
            Err(m) => {
                self.unsupported(n, addr.col, raw, &m);
                return;
            }
        };
        let mut line = vec![quote_word(&name.text)];
        if template {
            line.push(quote_word(&args[1].text));
        }
        line.push(a);
        // `port N` / `addr A` send HAProxy's checks elsewhere; lb's would probe the traffic
        // port, so such a server's `check` is not carried over.
        let mut check_elsewhere: Option<(usize, String)> = None;
        let default_check = self.defaults_server_check
            || self.sections.last().is_some_and(|s| s.default_server_check);
        // where `check` goes in the line (written where it was; a default one last)
        let mut check: Option<usize> = default_check.then_some(usize::MAX);
        let mut i = 2 + lead;
        while i < args.len() {
            let w = &args[i];
            match (w.text.as_str(), args.get(i + 1)) {
                ("check", _) => check = Some(line.len()),
                ("no-check", _) => check = None,
                ("backup" | "disabled" | "ssl" | "send-proxy" | "send-proxy-v2", _) => {
                    line.push(w.text.clone())
                }
                ("verify" | "ca-file", Some(v)) => {
                    line.push(w.text.clone());
                    line.push(quote_word(&v.text));
                    i += 1;
                }
                ("sni", Some(v)) if v.text.starts_with("str(") => {
                    line.push(w.text.clone());
                    line.push(quote_word(&v.text));
                    i += 1;
                }
                // ALPN h2 alone: the server speaks HTTP/2 (lb's `proto h2` offers `h2`).
                ("alpn", Some(v)) if v.text == "h2" => {
                    line.push("proto".into());
                    line.push("h2".into());
                    i += 1;
                }
                ("on-marked-down", Some(v)) if v.text == "shutdown-sessions" => {
                    line.push(w.text.clone());
                    line.push(v.text.clone());
                    i += 1;
                }
                ("on-marked-up", Some(v)) if v.text == "shutdown-backup-sessions" => {
                    line.push(w.text.clone());
                    line.push(v.text.clone());
                    i += 1;
                }
                // rustls never speaks SSLv3, TLS 1.0 or 1.1 (as on bind lines).
                ("enabled" | "no-sslv3" | "no-tlsv10" | "no-tlsv11", _) => {}
                ("proto", Some(v)) if matches!(v.text.as_str(), "h1" | "h2") => {
                    line.push(w.text.clone());
                    line.push(v.text.clone());
                    i += 1;
                }
                ("weight" | "cookie" | "maxconn", Some(v)) => {
                    line.push(w.text.clone());
                    line.push(quote_word(&v.text));
                    i += 1;
                }
                ("inter" | "rise" | "fall", Some(v)) => {
                    let (key, val) = check_setting(&w.text, &v.text);
                    let existing = self.sections.last().and_then(|s| {
                        s.check
                            .iter()
                            .find(|(k, _)| k == key)
                            .map(|(_, x)| x.clone())
                    });
                    match existing {
                        Some(x) if x != val => {
                            self.diag(Severity::Warning, n, w.col, &path, format!("per-server `{} {}` differs from another server's; lb has one check setting per backend, the first is kept", w.text, v.text));
                        }
                        Some(_) => {}
                        None => {
                            if let Some(s) = self.cur() {
                                s.set_check(key, val);
                            }
                        }
                    }
                    i += 1;
                }
                (other, next) => {
                    let takes_value = [
                        "port",
                        "addr",
                        "ssl",
                        "verify",
                        "sni",
                        "ca-file",
                        "resolvers",
                        "init-addr",
                        "observe",
                        "on-error",
                        "slowstart",
                        "track",
                        "agent-check",
                        "agent-port",
                        "agent-inter",
                        "fastinter",
                        "downinter",
                        "maxqueue",
                        "minconn",
                        "id",
                        "error-limit",
                        "source",
                        "proto",
                        "alpn",
                        "check-sni",
                        "pool-max-conn",
                        "resolve-prefer",
                        "crt",
                        "namespace",
                        "crl-file",
                        "ca-verify-file",
                        "ciphers",
                        "ciphersuites",
                        "curves",
                        "sigalgs",
                        "client-sigalgs",
                        "ssl-min-ver",
                        "ssl-max-ver",
                        "verifyhost",
                        "socks4",
                        "agent-send",
                        "agent-addr",
                        "check-alpn",
                        "check-proto",
                        "redir",
                        "max-reuse",
                        "pool-low-conn",
                        "pool-purge-delay",
                        "proxy-v2-options",
                        "tcp-ut",
                        "ws",
                        "log-proto",
                        "hash-key",
                        "init-state",
                        "usesrc",
                    ]
                    .contains(&other)
                        && !matches!(other, "ssl")
                        && next.is_some();
                    let v = if takes_value {
                        next.map_or("", |v| v.text.as_str())
                    } else {
                        ""
                    };
                    let shown = format!("{other} {v}").trim().to_string();
                    if matches!(other, "port" | "addr") && takes_value {
                        check_elsewhere = Some((w.col, shown.clone()));
                    }
                    self.diag(
                        Severity::Warning,
                        n,
                        w.col,
                        &path,
                        format!("server option `{shown}` is not supported; dropped"),
                    );
                    self.note(format!(
                        "haproxy.cfg line {n}: dropped server option `{shown}` of `{}`",
                        name.text
                    ));
                    if takes_value {
                        i += 1;
                    }
                }
            }
            i += 1;
        }
        match (check, check_elsewhere) {
            (Some(_), Some((at, shown))) => {
                self.diag(Severity::Warning, n, at, &path, format!("`{shown}`: HAProxy checks server `{}` there, lb would check its traffic port instead; `check` is dropped for this server (it is never marked down), set it by hand", name.text));
                self.note(format!(
                    "haproxy.cfg line {n}: `check` of `{}` dropped with `{shown}`",
                    name.text
                ));
            }
            (Some(at), None) => line.insert(at.min(line.len()), "check".into()),
            (None, _) => {}
        }
        let _ = raw;
        let v = toml_str(&line.join(" "));
        let key = if template {
            "server_template"
        } else {
            "server"
        };
        if let Some(s) = self.cur() {
            s.push(key, v, comment, true);
        }
    }

    /// A line HAProxy refuses too (a typo, extra words): an error, and the output is not
    /// written.
    fn error(&mut self, line: usize, col: usize, raw: &str, msg: String) {
        let path = self.cur_path();
        self.diag(Severity::Error, line, col, &path, msg);
        self.note(format!("ERROR (line {line}): {}", raw.trim()));
    }

    /// An `http-request`, `http-response` or `http-after-response` line: the action is parsed
    /// by the loader's own parser, so what lb would refuse is caught here.
    fn http_rule(
        &mut self,
        side: RuleSide,
        n: usize,
        raw: &str,
        args: &[W],
        comment: Option<String>,
        col: usize,
    ) {
        let path = self.cur_path();
        let Some(action) = args.first() else {
            self.diag(
                Severity::Error,
                n,
                col,
                &path,
                format!("`{}` needs an action", side.keyword()),
            );
            return;
        };
        let restricts = self.restricts(side.keyword(), args);
        // `set-var(txn.x)` / `unset-var(txn.x)`: the variable is part of the word.
        let var_action = side == RuleSide::Request
            && (action.text.starts_with("set-var(") || action.text.starts_with("unset-var("));
        if !var_action && !side.actions().contains(&action.text.as_str()) {
            let why = format!(
                "{} action `{}` is not supported",
                side.keyword(),
                action.text
            );
            self.unconvertible(n, action.col, raw, &why, restricts);
            return;
        }
        let fixed = self.braces(n, args);
        let act = &fixed[..cond_start(&fixed).unwrap_or(fixed.len())];
        let (t, end) = toks(act);
        if let Err(p) = d::http_action(&mut Args::new(&t, end), side) {
            // A word HAProxy has after this action but lb lacks, or a part lb lacks (a
            // fetch in a format, a regex feature): unsupported. Anything else is an error
            // HAProxy makes too.
            let at_lacking = LB_LACKS_AFTER.iter().any(|(a, words)| {
                *a == action.text
                    && act
                        .iter()
                        .any(|w| w.col == p.pos && words.contains(&w.text.as_str()))
            });
            if at_lacking || lb_lacks(&p.msg) {
                self.unconvertible(n, p.pos, raw, &p.msg, restricts);
            } else {
                let msg = format!("{} {}: {}", side.keyword(), action.text, p.msg);
                self.error(n, p.pos, raw, msg);
            }
            return;
        }
        if !self.condition_ok(n, raw, &fixed, restricts) {
            return;
        }
        let v = toml_str(&join_cond(&fixed));
        if let Some(s) = self.cur() {
            s.push(side.key(), v, comment, true);
        }
    }

    /// `{path` → `{ path`, `/admin}` → `/admin }` (HAProxy needs blanks around braces).
    fn braces(&mut self, n: usize, args: &[W]) -> Vec<W> {
        let path = self.cur_path();
        let mut out = Vec::new();
        for w in args {
            if w.quoted
                || w.text == "{"
                || w.text == "}"
                || !(w.text.starts_with('{') || w.text.ends_with('}'))
            {
                out.push(w.clone());
                continue;
            }
            // `hdr(x)` patterns may legitimately contain braces only in regexes; split simple cases
            let mut t = w.text.as_str();
            let mut pre = false;
            let mut post = false;
            if let Some(r) = t.strip_prefix('{') {
                pre = true;
                t = r;
            }
            if let Some(r) = t.strip_suffix('}') {
                post = true;
                t = r;
            }
            self.diag(Severity::Warning, n, w.col, &path, format!("`{}`: braces of an anonymous ACL must be separated by blanks; written as `{}{}{}`", w.text, if pre { "{ " } else { "" }, t, if post { " }" } else { "" }));
            if pre {
                out.push(W {
                    text: "{".into(),
                    col: w.col,
                    quoted: false,
                });
            }
            if !t.is_empty() {
                out.push(W {
                    text: t.into(),
                    col: w.col,
                    quoted: false,
                });
            }
            if post {
                out.push(W {
                    text: "}".into(),
                    col: w.col,
                    quoted: false,
                });
            }
        }
        out
    }

    fn tcp_request(
        &mut self,
        n: usize,
        raw: &str,
        args: &[W],
        comment: Option<String>,
        col: usize,
    ) {
        let path = self.cur_path();
        let supported = match (
            args.first().map(|w| w.text.as_str()),
            args.get(1).map(|w| w.text.as_str()),
        ) {
            (Some("inspect-delay"), Some(_)) => true,
            (Some("content" | "connection"), Some("accept" | "reject")) => true,
            (None, _) => {
                self.diag(
                    Severity::Error,
                    n,
                    col,
                    &path,
                    "`tcp-request` needs a rule".into(),
                );
                return;
            }
            _ => false,
        };
        let restricts = self.restricts("tcp-request", args);
        if !supported {
            self.unconvertible(n, col, raw, "this tcp-request rule is not supported (inspect-delay, content|connection accept|reject)", restricts);
            return;
        }
        let fixed = self.braces(n, args);
        let act = &fixed[..cond_start(&fixed).unwrap_or(fixed.len())];
        let (t, end) = toks(act);
        if let Err(p) = d::tcp_request(&mut Args::new(&t, end)) {
            self.error(n, p.pos, raw, format!("tcp-request: {}", p.msg));
            return;
        }
        if !self.condition_ok(n, raw, &fixed, restricts) {
            return;
        }
        // The loader refuses stick-table fetches in tcp_request rules (nothing tracks
        // there yet).
        if let Some(start) = cond_start(&fixed)
            && let Some(s) = self.sections.last()
            && crate::acl::Condition::compile(&join_cond(&fixed[start..]), &s.acls)
                .is_ok_and(|c| c.reads_stick())
        {
            let why = "stick-table fetches in tcp-request rules are not supported";
            self.unconvertible(n, fixed[start].col, raw, why, restricts);
            return;
        }
        let v = toml_str(&join_cond(&fixed));
        if let Some(s) = self.cur() {
            s.push("tcp_request", v, comment, true);
        }
    }

    /// Whether the `if`/`unless` condition in `words` (if any) can be converted: each
    /// anonymous ACL must be one lb's engine takes, no named ACL may be one left out as
    /// unsupported, and the whole condition must compile against the ACLs converted so far
    /// (HAProxy resolves a condition's ACLs when it reads the line). Otherwise the line is
    /// named: kept as a comment, or (`restricts`) an error that keeps the output from
    /// running; an error HAProxy makes too (a typo, an undefined ACL) is an error.
    fn condition_ok(&mut self, n: usize, raw: &str, words: &[W], restricts: bool) -> bool {
        let Some(start) = cond_start(words) else {
            return true;
        };
        let dropped = self
            .cur()
            .map(|s| s.dropped_acls.clone())
            .unwrap_or_default();
        let mut anon: Option<Vec<W>> = None;
        for w in &words[start + 1..] {
            if let Some(parts) = &mut anon {
                if !w.quoted && w.text == "}" {
                    let inner = join(parts);
                    if let Err(e) = crate::acl::AclSet::default().define(&format!("x {inner}")) {
                        let why = format!("condition `{{ {inner} }}`: {}", e.message);
                        let col = col_at(parts, e.offset.saturating_sub(2));
                        if lb_lacks(&e.message) {
                            self.unconvertible(n, col, raw, &why, restricts);
                        } else {
                            self.error(n, col, raw, why);
                        }
                        return false;
                    }
                    anon = None;
                } else {
                    parts.push(w.clone());
                }
                continue;
            }
            if !w.quoted && w.text == "{" {
                anon = Some(Vec::new());
                continue;
            }
            let name = w.text.trim_start_matches('!');
            if dropped.iter().any(|d| d == name) {
                let why = format!("uses ACL `{name}`, which is not converted (see above)");
                self.unconvertible(n, w.col, raw, &why, restricts);
                return false;
            }
        }
        let cond = &words[start..];
        let text = join_cond(cond);
        let res = match self.sections.last() {
            Some(s) => crate::acl::Condition::compile(&text, &s.acls).map(|_| ()),
            None => Ok(()),
        };
        if let Err(e) = res {
            let at = col_at(cond, e.offset);
            let why = format!("condition `{}`: {}", join(&cond[1..]), e.message);
            if lb_lacks(&e.message) {
                self.unconvertible(n, at, raw, &why, restricts);
            } else {
                self.error(n, at, raw, why);
            }
            return false;
        }
        true
    }

    fn option(&mut self, n: usize, raw: &str, words: &[W], comment: Option<String>) {
        let path = self.cur_path();
        let neg = words[0].text == "no";
        let rest = if neg { &words[1..] } else { words };
        if rest.first().map(|w| w.text.as_str()) != Some("option") {
            let col = words[0].col;
            self.diag(
                Severity::Error,
                n,
                col,
                &path,
                "`no` must be followed by `option`".into(),
            );
            return;
        }
        let Some(name) = rest.get(1) else {
            self.diag(
                Severity::Error,
                n,
                rest[0].col,
                &path,
                "`option` needs a name".into(),
            );
            return;
        };
        let extra = &rest[2..];
        match name.text.as_str() {
            "forwardfor" | "redispatch" | "httplog" | "tcplog" | "dontlognull"
            | "log-health-checks" | "http-keep-alive" | "http-server-close"
                if extra.is_empty()
                    || (name.text == "httplog" && extra.iter().all(|w| w.text == "clf")) =>
            {
                let v = toml_str(&format!("{}{}", if neg { "no " } else { "" }, name.text));
                if let Some(s) = self.cur() {
                    s.push("option", v, comment, true);
                }
            }
            // `option forwardfor except NET header NAME if-none`: lb's forwardfor has none of
            // these, so it becomes the rule HAProxy applies: add NAME (X-Forwarded-For)
            // with the client's address, unless the client is in NET (or NAME is there).
            "forwardfor" if !neg => {
                let mut header = "X-Forwarded-For".to_string();
                let mut unless = Vec::new();
                let mut i = 0;
                while i < extra.len() {
                    match (extra[i].text.as_str(), extra.get(i + 1)) {
                        ("except", Some(v)) => {
                            unless.push(format!("{{ src {} }}", quote_word(&v.text)));
                            i += 2;
                        }
                        ("header", Some(v)) => {
                            header.clone_from(&v.text);
                            i += 2;
                        }
                        ("if-none", _) => {
                            unless.push(String::new());
                            i += 1;
                        }
                        (other, _) => {
                            let msg = format!(
                                "option forwardfor: unexpected `{other}` (expected except NET, header NAME or if-none)"
                            );
                            self.error(n, extra[i].col, raw, msg);
                            return;
                        }
                    }
                }
                let unless: Vec<String> = unless
                    .into_iter()
                    .map(|u| {
                        if u.is_empty() {
                            format!("{{ hdr({header}) -m found }}")
                        } else {
                            u
                        }
                    })
                    .collect();
                let mut rule = format!("add-header {} %[src]", quote_word(&header));
                if !unless.is_empty() {
                    rule.push_str(&format!(" unless {}", unless.join(" || ")));
                }
                let section_kind = self.sections.last().map(|s| s.kind);
                if section_kind == Some(Kind::Defaults) {
                    self.defaults_forwardfor = Some(rule);
                } else if let Some(s) = self.cur() {
                    s.forwardfor = Some((rule, comment));
                }
            }
            "httpchk" if !neg => {
                let (m, u) = match extra {
                    [] => ("OPTIONS".to_string(), "/".to_string()),
                    [u] => ("OPTIONS".to_string(), u.text.clone()),
                    [m, u, ..] => (m.text.clone(), u.text.clone()),
                };
                if extra.len() > 2 {
                    self.diag(Severity::Warning, n, extra[2].col, &path, "the HTTP version and headers of `option httpchk` are not supported; dropped".into());
                }
                if let Some(s) = self.cur() {
                    s.set_check("http", toml_str(&format!("{m} {u}")));
                }
            }
            // lb already behaves so: a request whose client has gone is aborted (its task
            // ends), and no rule lb has reads the request body, so waiting for it first
            // changes nothing a rule sees.
            "abortonclose" | "http-buffer-request" if !neg && extra.is_empty() => {
                let why = if name.text == "abortonclose" {
                    "lb always aborts a request whose client has closed"
                } else {
                    "lb forwards the request body as it arrives; no rule lb has reads it"
                };
                self.note(format!(
                    "haproxy.cfg line {n}: `option {}`: {why}",
                    name.text
                ));
            }
            other => {
                // Name the option alone: its arguments are not options.
                let why = format!("`option {other}` is not supported");
                self.unsupported(n, name.col, raw, &why);
            }
        }
    }

    fn http_check(&mut self, n: usize, raw: &str, args: &[W], col: usize) {
        match args
            .iter()
            .map(|w| w.text.as_str())
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["expect", "status", code] if code.parse::<u16>().is_ok() => {
                let v = toml_str(code);
                if let Some(s) = self.cur() {
                    s.set_check("expect", v);
                }
            }
            ["send", rest @ ..] => {
                let mut meth = None;
                let mut uri = None;
                let mut host = None;
                let mut i = 0;
                while i + 1 < rest.len() {
                    match rest[i] {
                        "meth" => meth = Some(rest[i + 1]),
                        "uri" => uri = Some(rest[i + 1]),
                        "hdr" if rest[i + 1].eq_ignore_ascii_case("host") && i + 2 < rest.len() => {
                            host = Some(rest[i + 2]);
                            i += 1;
                        }
                        _ => {
                            self.unsupported(
                                n,
                                col,
                                raw,
                                "only `http-check send meth M uri U [hdr Host H]` is supported",
                            );
                            return;
                        }
                    }
                    i += 2;
                }
                let (m, u) = (meth.unwrap_or("GET"), uri.unwrap_or("/"));
                if let Some(s) = self.cur() {
                    s.set_check("http", toml_str(&format!("{m} {u}")));
                    if let Some(h) = host {
                        s.set_check("host", toml_str(h));
                    }
                }
            }
            _ => self.unsupported(
                n,
                col,
                raw,
                "only `http-check expect status N` and `http-check send …` are supported",
            ),
        }
    }

    /// `option forwardfor except|header …` as an `http-request add-header` rule in each
    /// section it applies to (its own, or from defaults every frontend and listen), in
    /// `mode http` only: HAProxy ignores it in `mode tcp`.
    fn forwardfor_rules(&mut self) {
        let mode_of = |s: &Sect| {
            s.keys
                .iter()
                .find(|(k, _, _)| k == "mode")
                .and_then(|(_, e, _)| e.last())
                .map(|e| e.value.clone())
        };
        let default_mode = self
            .sections
            .iter()
            .find(|s| s.kind == Kind::Defaults)
            .and_then(mode_of);
        let from_defaults = self.defaults_forwardfor.clone();
        for s in &mut self.sections {
            if s.name.starts_with('#') || matches!(s.kind, Kind::Global | Kind::Defaults) {
                continue;
            }
            let rule = match (s.forwardfor.take(), &from_defaults) {
                (Some(r), _) => Some(r),
                (None, Some(r)) if matches!(s.kind, Kind::Frontend | Kind::Listen) => {
                    Some((r.clone(), None))
                }
                _ => None,
            };
            let Some((rule, comment)) = rule else {
                continue;
            };
            let http = mode_of(s).or_else(|| default_mode.clone()).as_deref() == Some("\"http\"");
            if http {
                s.push("http_request", toml_str(&rule), comment, true);
            } else {
                s.notes.push(format!(
                    "option forwardfor (as `{rule}`) applies to mode http only, as in HAProxy"
                ));
            }
        }
    }

    /// A check table needs `http` for `expect`/`host`; a lone `expect` implies `GET /`.
    fn lift_checks(&mut self) {
        for s in &mut self.sections {
            let has = |k: &str| s.check.iter().any(|(x, _)| x == k);
            if (has("expect") || has("host")) && !has("http") {
                s.check.push(("http".into(), toml_str("OPTIONS /")));
            }
        }
    }

    fn emit(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "# Converted from {} by `lb convert`.\n",
            self.file.file_name().map_or_else(
                || self.file.display().to_string(),
                |f| f.to_string_lossy().into_owned()
            )
        ));
        let warnings: Vec<&Diagnostic> = self.diags.iter().collect();
        if !warnings.is_empty() {
            out.push_str("# Review these before use:\n");
            let mut w = warnings;
            w.sort_by_key(|d| (d.line, d.col));
            for d in w {
                out.push_str(&format!("#   line {}: {}\n", d.line, d.message));
            }
        }
        for p in &self.preamble {
            out.push_str(&format!("# {p}\n"));
        }
        for s in &self.sections {
            out.push('\n');
            let start = out.len();
            self.emit_section(s, &mut out);
            if s.commented {
                let body: String = out[start..].lines().map(|l| format!("# {l}\n")).collect();
                out.truncate(start);
                out.push_str(&body);
            }
        }
        out
    }

    /// One section of the output.
    fn emit_section(&self, s: &Sect, out: &mut String) {
        {
            if s.name.starts_with('#') {
                for n in &s.notes {
                    out.push_str(&format!("# {n}\n"));
                }
                return;
            }
            let header = match s.kind {
                Kind::Global => "[global]".to_string(),
                Kind::Defaults => "[defaults]".to_string(),
                Kind::Frontend => format!("[frontend.{}]", toml_key(&s.name)),
                Kind::Backend => format!("[backend.{}]", toml_key(&s.name)),
                Kind::Listen => format!("[listen.{}]", toml_key(&s.name)),
                Kind::Cache => format!("[cache.{}]", toml_key(&s.name)),
            };
            out.push_str(&header);
            if let Some(c) = &s.header_comment {
                out.push_str(&format!("  # {c}"));
            }
            out.push('\n');
            for n in &s.notes {
                out.push_str(&format!("# {n}\n"));
            }
            let order = [
                "threads",
                "unconverted",
                "mode",
                "bind",
                "acl",
                "http_request",
                "http_response",
                "http_after_response",
                "tcp_request",
                "use_backend",
                "default_backend",
                "balance",
                "cookie",
                "server",
                "server_template",
                "errorfile",
                "option",
                "retries",
                "maxconn",
                "log",
                "cpu_map",
            ];
            let mut keys: Vec<&(String, Vec<Entry>, bool)> = s.keys.iter().collect();
            keys.sort_by_key(|(k, _, _)| order.iter().position(|o| o == k).unwrap_or(order.len()));
            let mut wrote_timeout = false;
            let mut wrote_check = false;
            for (k, entries, list) in keys {
                let pos = order.iter().position(|o| o == k).unwrap_or(order.len());
                // The timeouts go after `default_backend`.
                let after = order
                    .iter()
                    .position(|o| *o == "default_backend")
                    .unwrap_or(0);
                if !wrote_timeout && pos > after && !s.timeout.is_empty() {
                    out.push_str(&timeout_line(&s.timeout));
                    wrote_timeout = true;
                }
                if !wrote_check && (k == "server" || k == "server_template") && !s.check.is_empty()
                {
                    out.push_str(&check_line(&s.check));
                    wrote_check = true;
                }
                if *list {
                    out.push_str(&format!("{k} = [\n"));
                    for e in entries {
                        out.push_str(&format!("    {},", e.value));
                        if let Some(c) = &e.comment {
                            out.push_str(&format!("  # {c}"));
                        }
                        out.push('\n');
                    }
                    out.push_str("]\n");
                } else if let Some(e) = entries.last() {
                    out.push_str(&format!("{k} = {}", e.value));
                    if let Some(c) = &e.comment {
                        out.push_str(&format!("  # {c}"));
                    }
                    out.push('\n');
                }
            }
            if !wrote_timeout && !s.timeout.is_empty() {
                out.push_str(&timeout_line(&s.timeout));
            }
            if !wrote_check && !s.check.is_empty() && s.has_backend_half() {
                out.push_str(&check_line(&s.check));
            }
        }
    }

    /// An explicit OpenSSL cipher list with the suites rustls offers: OpenSSL (so HAProxy)
    /// skips the names it cannot offer when others remain, which only narrows what is
    /// accepted, so lb does too, naming them. A list with keywords (`HIGH`, `!aNULL`, …) or
    /// without one suite rustls offers is left for the loader to refuse.
    fn offered_ciphers(&mut self, n: usize, col: usize, list: &str) -> String {
        let explicit = list.split(':').all(|c| {
            !c.is_empty()
                && c.contains('-')
                && c.chars().all(|x| x.is_ascii_alphanumeric() || x == '-')
        });
        if !explicit {
            return list.to_string();
        }
        let (ok, skipped): (Vec<&str>, Vec<&str>) = list
            .split(':')
            .partition(|c| crate::tls_policy::tls12_suites(c).is_ok());
        if ok.is_empty() || skipped.is_empty() {
            return list.to_string();
        }
        let path = self.cur_path();
        self.diag(
            Severity::Warning,
            n,
            col,
            &path,
            format!("ciphers: {} not offered by rustls, left out as OpenSSL leaves out what it cannot offer", skipped.join(", ")),
        );
        ok.join(":")
    }

    /// `tune.bufsize` / `tune.maxrewrite` / `tune.http.maxhdr` as each frontend's and
    /// listen's `max_header_bytes` / `max_headers`, unless it sets them.
    fn header_limits(&mut self) {
        let bytes = self.tls.max_header_bytes();
        let headers = self.tls.maxhdr;
        for s in self.sections.iter_mut() {
            if !matches!(s.kind, Kind::Frontend | Kind::Listen) || s.name.starts_with('#') {
                continue;
            }
            for (key, v) in [("max_header_bytes", bytes), ("max_headers", headers)] {
                if let Some(v) = v
                    && !s.keys.iter().any(|(k, _, _)| k == key)
                {
                    s.push(key, v.to_string(), None, false);
                }
            }
        }
    }

    /// HAProxy accepts a frontend without `bind` (it receives nothing; e.g. one whose
    /// listeners a controller adds at run time): lb needs one, so such a frontend (or one
    /// whose every bind lb cannot use) is written as comments, with a warning. One holding
    /// an `unconverted` access rule stays, so the file still cannot run unreviewed.
    fn comment_out_bindless_frontends(&mut self) {
        let mut found = Vec::new();
        for s in self.sections.iter_mut() {
            let has = |k: &str| s.keys.iter().any(|(key, _, _)| key == k);
            if s.kind == Kind::Frontend && !has("bind") && !has("unconverted") {
                s.commented = true;
                found.push((s.line, s.path()));
            }
        }
        for (line, path) in found {
            self.diag(Severity::Warning, line, 1, &path, "no `bind` lb can listen on: HAProxy accepts such a frontend and it receives nothing; written as comments".to_string());
        }
    }
}

fn timeout_line(t: &[(String, String)]) -> String {
    let parts: Vec<String> = t
        .iter()
        .map(|(k, v)| format!("{} = {}", toml_key(k), toml_str(v)))
        .collect();
    format!("timeout = {{ {} }}\n", parts.join(", "))
}

fn check_line(c: &[(String, String)]) -> String {
    let parts: Vec<String> = c.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    format!("check = {{ {} }}\n", parts.join(", "))
}

fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        toml_str(k)
    }
}

/// The column of the word at byte `offset` of [`join`]`(words)`.
fn col_at(words: &[W], offset: usize) -> usize {
    let mut at = 0;
    let mut col = words.first().map_or(1, |w| w.col);
    for w in words {
        if at > offset {
            break;
        }
        col = w.col;
        at += quote_word(&w.text).len() + 1;
    }
    col
}

/// Words joined, with a condition's braces kept as separate words.
fn join_cond(words: &[W]) -> String {
    join(words)
}

/// HAProxy address forms to lb's: `:::443` → `[::]:443`, `ipv6@:80` → `[::]:80`,
/// `ipv4@*:80` → `*:80`, bare IPv6 `2001:db8::1:80` → `[2001:db8::1]:80`.
fn norm_addr(s: &str, bind: bool) -> Result<String, String> {
    let (family, rest) = match s.split_once('@') {
        Some((f @ ("ipv4" | "ipv6" | "tcp" | "tcp4" | "tcp6"), r)) => (Some(f), r),
        Some((f, _)) => return Err(format!("address family `{f}@` is not supported")),
        None => (None, s),
    };
    let v6 = matches!(family, Some("ipv6" | "tcp6"));
    if rest.starts_with('[') {
        return Ok(rest.to_string());
    }
    let colons = rest.matches(':').count();
    if colons == 0 {
        return Err(format!("`{s}` has no port; lb needs HOST:PORT"));
    }
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(format!("`{s}` has no port"));
    };
    if port.is_empty() {
        return Err(format!("`{s}` has no port; lb needs HOST:PORT"));
    }
    if colons > 1 || (v6 && (host.is_empty() || host == "*")) {
        let h = if host.is_empty() || host == "*" || host == "::" {
            "::"
        } else {
            host
        };
        return Ok(format!("[{h}]:{port}"));
    }
    if !bind && host.is_empty() {
        return Err(format!("`{s}` has no host"));
    }
    Ok(format!(
        "{}:{port}",
        if host.is_empty() { "*" } else { host }
    ))
}

/// The keyword closest to `word` among everything `lb convert` knows (for tests and docs).
pub fn suggest_keyword(word: &str) -> Option<&'static str> {
    closest(word, known_proxy_keywords())
}

/// Every HAProxy proxy keyword `lb convert` knows: converted (from the key table) or named
/// as unsupported.
fn known_proxy_keywords() -> impl Iterator<Item = &'static str> + Clone {
    keys::PROXY_KEYS
        .iter()
        .flat_map(|k| k.haproxy.iter().copied())
        .chain(HAPROXY_PROXY_UNSUPPORTED.iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(norm_addr(":::443", true).as_deref(), Ok("[::]:443"));
        assert_eq!(norm_addr("ipv6@:80", true).as_deref(), Ok("[::]:80"));
        assert_eq!(norm_addr("ipv4@*:80", true).as_deref(), Ok("*:80"));
        assert_eq!(norm_addr("*:80", true).as_deref(), Ok("*:80"));
        assert_eq!(norm_addr(":80", true).as_deref(), Ok("*:80"));
        assert_eq!(
            norm_addr("[2001:db8::1]:80", false).as_deref(),
            Ok("[2001:db8::1]:80")
        );
        assert_eq!(
            norm_addr("2001:db8::1:80", false).as_deref(),
            Ok("[2001:db8::1]:80")
        );
        assert_eq!(
            norm_addr("server1:7210", false).as_deref(),
            Ok("server1:7210")
        );
        assert!(norm_addr("unix@/x", true).is_err());
        assert!(norm_addr("10.0.0.1", false).is_err());
    }

    #[test]
    fn words_and_comments() {
        let (w, c) = split_line(r#"  http-request set-header X-A "a b" # note"#).expect("ok");
        let t: Vec<_> = w.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(t, ["http-request", "set-header", "X-A", "a b"]);
        assert_eq!(w[0].col, 3);
        assert_eq!(c.as_deref(), Some("note"));
        assert!(split_line("acl x \"open").is_err());
    }

    #[test]
    fn typo_suggestion() {
        assert_eq!(suggest_keyword("use_backed"), Some("use_backend"));
    }
}
