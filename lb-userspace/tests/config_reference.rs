//! docs/config.md against the loader: every table marked `<!-- ref:… -->` is compared, in
//! both directions, with what the code accepts. The accepted sets come from the code
//! itself: the loader's own "expected one of" / "supported:" messages where it lists them,
//! else the constant the parser matches against (read from the source file), and every
//! documented word is then fed to the loader. Every ```toml example of the document and
//! every config/*.toml must load.
//!
//! Run: `cargo test -p lb-userspace --test config_reference`.

mod config_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use config_support::*;
use lb::acl::AclSet;
use lb::config::model::Config;
use lb::config::{ConfigErrors, Diagnostic};

// ---- the document ----

fn doc() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn source(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The lines after `<!-- ref:MARKER -->`, from the first non-blank one to the next blank.
fn block<'a>(doc: &'a str, marker: &str) -> Vec<&'a str> {
    let tag = format!("<!-- ref:{marker} -->");
    let at = doc
        .find(&tag)
        .unwrap_or_else(|| panic!("docs/config.md has no `{tag}`"));
    doc[at + tag.len()..]
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| !l.trim().is_empty())
        .collect()
}

/// Cells of a markdown table row; `\|` stays inside a cell.
fn cells(row: &str) -> Vec<String> {
    let row = row.trim().trim_start_matches('|').trim_end_matches('|');
    let mut out = vec![String::new()];
    let mut chars = row.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                out.last_mut().expect("cell").push('|');
            }
            '|' => out.push(String::new()),
            c => out.last_mut().expect("cell").push(c),
        }
    }
    out.into_iter().map(|c| c.trim().to_string()).collect()
}

/// The body rows of the table after the marker.
fn table(doc: &str, marker: &str) -> Vec<Vec<String>> {
    let lines = block(doc, marker);
    assert!(
        lines.len() > 2 && lines.iter().all(|l| l.trim_start().starts_with('|')),
        "`ref:{marker}` must be followed by a table"
    );
    lines[2..].iter().map(|l| cells(l)).collect()
}

/// The contents of the backtick spans of a text.
fn ticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// First words of the first column's code spans.
fn first_column_words(doc: &str, marker: &str) -> Vec<String> {
    table(doc, marker)
        .iter()
        .flat_map(|r| ticked(&r[0]))
        .map(|t| t.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

/// Identifier-like code spans of the paragraph after the marker (the table-form keys).
fn paragraph_keys(doc: &str, marker: &str) -> BTreeSet<String> {
    ticked(&block(doc, marker).join(" "))
        .into_iter()
        .filter(|t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .collect()
}

fn set<I: IntoIterator<Item = S>, S: Into<String>>(i: I) -> BTreeSet<String> {
    i.into_iter().map(Into::into).collect()
}

#[track_caller]
fn same(what: &str, documented: &BTreeSet<String>, code: &BTreeSet<String>) {
    let missing: Vec<_> = code.difference(documented).collect();
    let extra: Vec<_> = documented.difference(code).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: docs/config.md and the code disagree\n  accepted but not documented: {missing:?}\n  documented but not accepted: {extra:?}"
    );
}

// ---- the code ----

/// Loads `text` against a scratch base (certificates, error page, interfaces eth0/eth1,
/// a fake resolver).
struct Loader {
    base: Tmp,
}

type Loaded = Result<(Config, Vec<Diagnostic>), ConfigErrors>;

impl Loader {
    fn new() -> Self {
        let base = base();
        base.write("config/certs/demo.pem", &cert_pem());
        Self { base }
    }

    fn load(&self, text: &str) -> Loaded {
        let path = self.base.path().join("reference.toml");
        lb::config::load_str(&path, text, &opts(self.base.path()))
    }

    fn load_file(&self, path: &Path) -> Loaded {
        lb::config::load_with(path, &opts(self.base.path()))
    }

    /// Error messages (with their key paths) of loading `text`.
    fn errors(&self, text: &str) -> Vec<String> {
        match self.load(text) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .errors()
                .map(|d| format!("{}: {}", d.path, d.message))
                .collect(),
        }
    }

    #[track_caller]
    fn assert_loads(&self, what: &str, text: &str) {
        let errs = self.errors(text);
        assert!(errs.is_empty(), "{what} does not load:\n{text}\n{errs:#?}");
    }

    /// The list in the first error saying `(MARKER a, b, c)`.
    #[track_caller]
    fn listed(&self, text: &str, marker: &str) -> BTreeSet<String> {
        let errs = self.errors(text);
        let Some(list) = errs.iter().find_map(|m| {
            let rest = &m[m.find(marker)? + marker.len()..];
            // The `)` closing the list (names such as `sc-inc-gpc0(0)` hold parentheses).
            let mut depth = 0usize;
            let end = rest.char_indices().find_map(|(i, c)| match c {
                '(' => {
                    depth += 1;
                    None
                }
                ')' if depth == 0 => Some(i),
                ')' => {
                    depth -= 1;
                    None
                }
                _ => None,
            })?;
            Some(rest[..end].to_string())
        }) else {
            panic!("no `{marker}` message when loading\n{text}\n{errs:#?}");
        };
        list.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// The keys a schema level accepts, from the "unknown key … (expected one of: …)" error
    /// for a key no real key resembles.
    fn accepted_keys(&self, text: &str) -> BTreeSet<String> {
        self.listed(text, "(expected one of:")
    }
}

/// The quoted strings of `const NAME … = &[ … ];` in a source file.
fn const_strings(src: &str, name: &str) -> BTreeSet<String> {
    let start = src
        .find(&format!("const {name}:"))
        .unwrap_or_else(|| panic!("no `const {name}` in the source"));
    let body = &src[start..];
    let open = body.find("= &[").expect("array") + 4;
    let close = body[open..].find("];").expect("end of array") + open;
    quoted(&body[open..close])
}

/// The quoted strings between the first `from` and the next `to` after it.
fn strings_between(src: &str, from: &str, to: &str) -> BTreeSet<String> {
    let start = src
        .find(from)
        .unwrap_or_else(|| panic!("no `{from}` in the source"));
    let len = src[start..].find(to).expect("end anchor");
    quoted(&src[start + from.len()..start + len])
}

fn quoted(text: &str) -> BTreeSet<String> {
    text.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Replaces the placeholders of a documented form with sample values.
fn instantiate(form: &str) -> String {
    let form = form.replace("[if|unless COND]", "");
    form.split_whitespace()
        .map(|w| {
            let w = w.trim_matches(['[', ']']);
            match w {
                "N" => "200",
                "D" => "1s",
                "VALUE" | "H" | "S" => "v",
                "METHOD" => "GET",
                "PATH" => "/",
                "LO-HI" => "200-299",
                "PEM" => "config/certs/site.pem",
                "LIST" => "h2",
                "ID" => "1",
                w => w,
            }
            .to_string()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

// ---- keys of each section ----

#[test]
fn top_level_sections() {
    let l = Loader::new();
    let doc = doc();
    same(
        "top-level sections",
        &set(first_column_words(&doc, "keys:top")),
        &l.accepted_keys("zzzzq = 1"),
    );
}

#[test]
fn global_and_dataplane_keys() {
    let l = Loader::new();
    let doc = doc();
    for (section, marker) in [
        ("global", "keys:global"),
        ("dataplane", "keys:dataplane"),
        ("announce", "keys:announce"),
        ("resolvers.x", "keys:resolvers"),
        ("cache.x", "keys:cache"),
    ] {
        same(
            &format!("[{section}] keys"),
            &set(first_column_words(&doc, marker)),
            &l.accepted_keys(&format!("[{section}]\nzzzzq = 1")),
        );
    }
}

#[test]
fn proxy_keys_and_where_each_is_allowed() {
    let l = Loader::new();
    let doc = doc();
    let rows = table(&doc, "keys:proxy");
    let documented = set(rows.iter().map(|r| ticked(&r[0]).join("")));
    for section in ["defaults", "frontend.x", "backend.x", "listen.x"] {
        same(
            &format!("[{section}] keys"),
            &documented,
            &l.accepted_keys(&format!("[{section}]\nzzzzq = 1")),
        );
    }
    for row in &rows {
        let key = ticked(&row[0]).join("");
        for (col, section) in ["defaults", "frontend.x", "backend.x", "listen.x"]
            .iter()
            .enumerate()
        {
            let doc_allowed = match row[col + 1].as_str() {
                "✓" => true,
                "—" => false,
                other => panic!("`{key}` in {section}: write ✓ or —, not `{other}`"),
            };
            // a value of the right TOML type, so that only placement is judged
            let errs = ["\"x\"", "1"]
                .iter()
                .map(|v| l.errors(&format!("[{section}]\n{key} = {v}")))
                .find(|errs| !errs.iter().any(|m| m.contains(": expected ")))
                .unwrap_or_else(|| panic!("no value of `{key}` parses"));
            let code_allowed = !errs.iter().any(|m| m.contains("is not allowed in"));
            let code_says = if code_allowed {
                "accepts it".to_string()
            } else {
                format!("rejects it: {errs:?}")
            };
            assert_eq!(
                doc_allowed,
                code_allowed,
                "`{key}` in [{section}]: docs/config.md says {}, the loader {code_says}",
                if doc_allowed {
                    "allowed"
                } else {
                    "not allowed"
                },
            );
        }
    }
}

/// The key table itself (`lb::config::keys`) against the document: where each key may be,
/// and every HAProxy keyword `lb convert` turns into it named in its HAProxy column.
#[test]
fn key_table_matches_the_document() {
    use lb::config::keys::{PROXY_KEYS, Section};
    let doc = doc();
    let rows = table(&doc, "keys:proxy");
    assert_eq!(rows.len(), PROXY_KEYS.len(), "one row per key of the table");
    for key in PROXY_KEYS {
        let row = rows
            .iter()
            .find(|r| ticked(&r[0]).join("") == key.key)
            .unwrap_or_else(|| panic!("`{}` has no row in docs/config.md", key.key));
        for (col, section) in Section::ALL.iter().enumerate() {
            assert_eq!(
                row[col + 1] == "✓",
                key.allowed_in(*section),
                "`{}` in [{}]: the key table and docs/config.md disagree",
                key.key,
                section.name()
            );
        }
        haproxy_column_names(&row[7], key.key, key.haproxy);
    }
}

/// Every HAProxy keyword `lb convert` turns into `key` is the first word of a code span of
/// its row's HAProxy column.
#[track_caller]
fn haproxy_column_names(column: &str, key: &str, keywords: &[&str]) {
    let named: BTreeSet<String> = ticked(column)
        .iter()
        .map(|t| t.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    for kw in keywords {
        assert!(
            named.contains(*kw),
            "`{key}`: its HAProxy column does not name `{kw}`, which lb convert turns into it"
        );
    }
}

/// `[global]` and `[dataplane]` in the key table against the document: one row per key,
/// and every HAProxy keyword `lb convert` turns into a key named in its HAProxy column.
#[test]
fn global_and_dataplane_key_tables_match_the_document() {
    use lb::config::keys::{CACHE_KEYS, DATAPLANE_KEYS, GLOBAL_KEYS};
    let doc = doc();
    for (marker, keys) in [
        ("keys:global", GLOBAL_KEYS),
        ("keys:dataplane", DATAPLANE_KEYS),
        ("keys:cache", CACHE_KEYS),
    ] {
        let rows = table(&doc, marker);
        let documented = set(rows.iter().map(|r| ticked(&r[0]).join("")));
        same(marker, &documented, &set(keys.iter().map(|k| k.key)));
        for key in keys {
            let row = rows
                .iter()
                .find(|r| ticked(&r[0]).join("") == key.key)
                .expect("a row");
            haproxy_column_names(&row[3], key.key, key.haproxy);
        }
    }
}

#[test]
fn table_form_keys_of_each_directive() {
    let l = Loader::new();
    let doc = doc();
    for key in [
        "bind",
        "server",
        "acl",
        "http_request",
        "http_response",
        "http_after_response",
        "tcp_request",
        "use_backend",
        "errorfile",
        "cookie",
        "check",
    ] {
        same(
            &format!("table form of `{key}`"),
            &paragraph_keys(&doc, &format!("table-keys:{key}")),
            &l.accepted_keys(&format!(
                "[listen.x]\nmode = \"http\"\n{key} = [{{ zzzzq = 1 }}]"
            )),
        );
    }
    // `option` has no table form
    assert!(
        l.accepted_keys("[listen.x]\noption = [{ zzzzq = 1 }]")
            .is_empty()
    );
    assert!(!doc.contains("ref:table-keys:option"));
}

/// What the Default column says is what an absent key gives: setting the key to its
/// documented default (a single TOML literal in backticks) changes nothing.
#[test]
fn documented_defaults_are_the_defaults() {
    let l = Loader::new();
    let doc = doc();
    let bases = [
        ("keys:global", "[global]\n", 2),
        (
            "keys:dataplane",
            "[dataplane]\ninterfaces = [\"eth0\"]\n",
            2,
        ),
        (
            "keys:proxy",
            "[listen.l]\nbind = \"127.0.0.1:8080\"\nserver = \"s 127.0.0.1:80\"\n",
            6,
        ),
    ];
    let mut checked = 0;
    for (marker, base, col) in bases {
        let plain = l.load(base).expect("base config loads");
        for row in table(&doc, marker) {
            let key = ticked(&row[0]).join("");
            let cell = &row[col];
            let t = ticked(cell);
            if t.len() != 1 || cell != &format!("`{}`", t[0]) {
                continue; // prose, not a literal
            }
            let literal = &t[0];
            assert!(
                toml::from_str::<toml::Table>(&format!("v = {literal}")).is_ok(),
                "default of `{key}` is not a TOML value: {literal}"
            );
            let with = l
                .load(&format!("{base}{key} = {literal}\n"))
                .unwrap_or_else(|e| panic!("`{key} = {literal}` does not load:\n{e}"));
            assert_eq!(
                format!("{:?}", with.0),
                format!("{:?}", plain.0),
                "`{key} = {literal}` is not the default"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} defaults checked");
}

// ---- directive words ----

#[test]
fn balance_algorithms() {
    let l = Loader::new();
    let doc = doc();
    let documented = set(first_column_words(&doc, "balance"));
    let code = l.listed("[backend.b]\nbalance = \"zzzzq\"", "(supported:");
    same("balance algorithms", &documented, &code);
    for b in &documented {
        l.assert_loads(
            b,
            &format!(
                "[backend.b]\nmode = \"http\"\nbalance = \"{b}\"\nserver = \"s 127.0.0.1:80\""
            ),
        );
    }
}

#[test]
fn bind_server_and_check_options() {
    let l = Loader::new();
    let doc = doc();
    let directives = source("src/config/directives.rs");
    for (marker, konst) in [
        ("bind-options", "BIND_OPTS"),
        ("server-options", "SERVER_OPTS"),
        ("check-options", "CHECK_OPTS"),
    ] {
        same(
            marker,
            &set(first_column_words(&doc, marker)),
            &const_strings(&directives, konst),
        );
    }
    for row in table(&doc, "bind-options") {
        for form in ticked(&row[0]) {
            let line = format!("127.0.0.1:8080 {}", instantiate(&form));
            let errs = l.errors(&format!("[frontend.f]\nbind = {}", toml_str(&line)));
            assert!(
                !errs.iter().any(|m| m.contains("unknown bind option")),
                "bind `{line}`: {errs:?}"
            );
        }
    }
    for row in table(&doc, "server-options") {
        for form in ticked(&row[0]) {
            let mut line = format!("s 127.0.0.1:80 {}", instantiate(&form));
            // The TLS options are loaded with `ssl`, which needs `verify none` or a CA.
            if ["verify", "ca-file", "sni"]
                .iter()
                .any(|o| form.starts_with(o))
            {
                line.push_str(" ssl");
                if !form.starts_with("verify") && !form.starts_with("ca-file") {
                    line.push_str(" verify none");
                }
            }
            if form == "verify required" {
                line.push_str(" ca-file config/certs/site.pem");
            }
            if form == "ssl" {
                line.push_str(" verify none");
            }
            // An HTTP backend: every server option applies there (`proto h2` only there);
            // `resolvers NAME` names a section.
            let text = format!(
                "[resolvers.NAME]\nnameserver = \"ns 127.0.0.1\"\n\
                 [backend.b]\nmode = \"http\"\nserver = {}",
                toml_str(&line)
            );
            l.assert_loads(&format!("server `{line}`"), &text);
        }
    }
    for row in table(&doc, "check-options") {
        for form in ticked(&row[0]) {
            let line = instantiate(&form);
            let text = format!(
                "[backend.b]\ncheck = {}\nserver = \"s 127.0.0.1:80 check\"",
                toml_str(&line)
            );
            l.assert_loads(&format!("check `{line}`"), &text);
        }
    }
}

#[test]
fn cookie_words() {
    let l = Loader::new();
    let doc = doc();
    let words = set(first_column_words(&doc, "cookie-options"));
    same(
        "cookie words",
        &words,
        &set(["insert", "indirect", "nocache"]),
    );
    // the table form has a key for each word, plus the name
    let mut with_name = words.clone();
    with_name.insert("name".into());
    same(
        "cookie table keys",
        &with_name,
        &l.accepted_keys("[backend.b]\ncookie = { zzzzq = 1 }"),
    );
    for w in &words {
        l.assert_loads(
            &format!("cookie {w}"),
            &format!(
                "[backend.b]\nmode = \"http\"\ncookie = \"SRV insert {w}\"\nserver = \"s 127.0.0.1:80\""
            ),
        );
    }
}

#[test]
fn timeout_names() {
    let l = Loader::new();
    let doc = doc();
    let documented = set(first_column_words(&doc, "timeouts"));
    same(
        "timeout names",
        &documented,
        &const_strings(&source("src/config/directives.rs"), "TIMEOUT_NAMES"),
    );
    for t in &documented {
        let under = t.replace('-', "_");
        for text in [
            format!("[defaults]\ntimeout = [\"{t} 5s\", \"{under} 250ms\"]"),
            format!("[defaults]\ntimeout = {{ {t} = \"1m\" }}"),
            format!("[defaults]\ntimeout = {{ {under} = 1500 }}"),
        ] {
            l.assert_loads(&format!("timeout {t}"), &text);
        }
    }
    assert!(
        l.errors("[defaults]\ntimeout = \"zzzzq 1s\"")
            .iter()
            .any(|m| m.contains("unknown timeout"))
    );
}

#[test]
fn errorfile_codes() {
    let l = Loader::new();
    let doc = doc();
    let documented = set(first_column_words(&doc, "errorfile-codes"));
    // "errorfile status must be one of 200, 400, …, not `999`"
    let errs = l.errors("[defaults]\nerrorfile = \"999 config/errors/gslb_health.http\"");
    let list = errs
        .iter()
        .find_map(|m| m.split("must be one of ").nth(1)?.split(", not").next())
        .unwrap_or_else(|| panic!("no list of codes in {errs:?}"));
    let code = set(list.split(", "));
    same("errorfile codes", &documented, &code);
    for c in &documented {
        l.assert_loads(
            &format!("errorfile {c}"),
            &format!("[defaults]\nerrorfile = \"{c} config/errors/gslb_health.http\""),
        );
    }
}

#[test]
fn options() {
    let l = Loader::new();
    let doc = doc();
    let documented = set(first_column_words(&doc, "options"));
    for o in &documented {
        l.assert_loads(
            &format!("option {o}"),
            &format!("[defaults]\noption = [\"{o}\", \"no {o}\"]"),
        );
    }
    // the options the loader names in its suggestions, except the one it redirects
    let mut known = strings_between(&source("src/config/build/proxy.rs"), "let known = [", "];");
    assert!(
        known.remove("httpchk"),
        "httpchk is no longer special-cased"
    );
    let missing: Vec<_> = known.difference(&documented).collect();
    assert!(missing.is_empty(), "options not documented: {missing:?}");
    assert!(
        l.errors("[defaults]\noption = \"httpchk GET /\"")
            .iter()
            .any(|m| m.contains("check = {"))
    );
    assert!(!l.errors("[defaults]\noption = \"zzzzq\"").is_empty());
}

// ---- rules ----

#[test]
fn http_request_actions() {
    http_actions("http-actions", "http_request");
}

#[test]
fn http_response_actions() {
    http_actions("http-response-actions", "http_response");
}

#[test]
fn http_after_response_actions() {
    http_actions("http-after-response-actions", "http_after_response");
}

/// The documented actions of `key` (table `marker`) are the ones the loader lists, and
/// each example loads.
fn http_actions(marker: &str, key: &str) {
    let l = Loader::new();
    let doc = doc();
    let rows = table(&doc, marker);
    let documented = set(rows.iter().map(|r| ticked(&r[0]).join("")));
    let code = l.listed(
        &format!("[frontend.f]\nmode = \"http\"\nbind = \"127.0.0.1:8080\"\n{key} = \"zzzzq\""),
        "(supported:",
    );
    same(&format!("{key} actions"), &documented, &code);
    for row in &rows {
        let action = ticked(&row[0]).join("");
        let examples = ticked(&row[2]);
        assert!(!examples.is_empty(), "`{action}` has no example");
        for ex in examples {
            assert_eq!(
                ex.split_whitespace().next(),
                Some(action.as_str()),
                "example of `{action}`"
            );
            // (`track-sc*` needs a stick table: the section's own.)
            let mut text = format!(
                "[frontend.f]\nmode = \"http\"\nbind = \"127.0.0.1:8080\"\n\
                 stick_table = \"type ip size 1k store gpc0\"\n{key} = {}",
                toml_str(&ex)
            );
            // `cache-use` / `cache-store` name the cache their examples use.
            if ex.starts_with("cache-") {
                text.push_str("\n[cache.static]\ntotal_max_size = 1\n");
            }
            l.assert_loads(&format!("{key} `{ex}`"), &text);
        }
    }
}

#[test]
fn tcp_request_forms() {
    let l = Loader::new();
    let doc = doc();
    let forms: Vec<String> = table(&doc, "tcp-request")
        .iter()
        .flat_map(|r| ticked(&r[0]))
        .collect();
    let fe = "[frontend.f]\nmode = \"tcp\"\nbind = \"127.0.0.1:8080\"\n";
    let rules = l.listed(&format!("{fe}tcp_request = \"zzzzq\""), "(supported:");
    let actions = l.listed(
        &format!("{fe}tcp_request = \"content zzzzq\""),
        "(supported:",
    );
    let mut code = BTreeSet::new();
    for r in &rules {
        if r == "inspect-delay" {
            code.insert(r.clone());
        } else {
            for a in &actions {
                code.insert(format!("{r} {a}"));
            }
        }
    }
    let documented = set(forms.iter().map(|f| {
        let words: Vec<&str> = f.split_whitespace().collect();
        if words[0] == "inspect-delay" {
            words[0].to_string()
        } else {
            words[..2].join(" ")
        }
    }));
    same("tcp_request forms", &documented, &code);
    for f in &forms {
        let line = instantiate(f);
        l.assert_loads(
            &format!("tcp_request `{line}`"),
            &format!("{fe}tcp_request = {}", toml_str(&line)),
        );
        if f.contains("COND") {
            let cond = format!("{line} if {{ src 10.0.0.0/8 }}");
            l.assert_loads(
                &format!("tcp_request `{cond}`"),
                &format!("{fe}tcp_request = {}", toml_str(&cond)),
            );
        }
    }
}

// ---- ACLs ----

#[test]
fn acl_fetches() {
    let l = Loader::new();
    let doc = doc();
    let rows = table(&doc, "acl-fetches");
    let mut documented = BTreeSet::new();
    for row in &rows {
        let names = ticked(&row[0]);
        let example = ticked(&row[2]).join("");
        let first = example.split_whitespace().next().unwrap_or("");
        let (fetch, args) = match first.find('(') {
            Some(i) => (&first[..i], first[i..].split(',').next().unwrap_or("")),
            None => (first, ""),
        };
        assert!(
            names.iter().any(|n| n == fetch),
            "example `{example}` does not use a fetch of its row {names:?}"
        );
        // the example, through the whole loader (response fetches in a response rule)
        let rules = if fetch == "status" || fetch.starts_with("res.") || fetch.starts_with("shdr") {
            "http_response"
        } else {
            "http_request"
        };
        let text = format!(
            "[frontend.f]\nmode = \"http\"\nbind = \"127.0.0.1:8080\"\nacl = [{}]\n{rules} = \"deny if x\"\n\
             [backend.pool]\nmode = \"http\"\nserver = \"s 127.0.0.1:80\"",
            toml_str(&format!("x {example}"))
        );
        l.assert_loads(&format!("acl `{example}`"), &text);
        // every name of the row, with the row's arguments
        for n in &names {
            let line = format!("x {n}{args} -m found");
            let mut acls = AclSet::default();
            if let Err(e) = acls.define(&line) {
                panic!("acl `{line}` does not parse: {e}");
            }
            documented.insert(n.clone());
        }
    }
    let src = source("src/acl/expr.rs");
    let start = src.find("const KEYWORDS").expect("KEYWORDS");
    let end = src[start..].find("];").expect("end of KEYWORDS") + start;
    let mut code = set(src[start..end]
        .lines()
        .filter_map(|l| l.trim().strip_prefix("(\""))
        .filter_map(|l| l.split('"').next())
        .map(str::to_string));
    assert!(code.len() > 30, "KEYWORDS not found in expr.rs");
    // Fetches parsed before the table (`var(…)`, the constants `str(…)`, `int(…)`).
    for piece in src.split("name == \"").skip(1) {
        if let Some(n) = piece.split('"').next() {
            code.insert(n.to_string());
        }
    }
    same("ACL fetches", &documented, &code);
    let mut acls = AclSet::default();
    assert!(acls.define("x zzzzq -m found").is_err());
}

#[test]
fn acl_flags_methods_and_operators() {
    let doc = doc();
    let tmp = Tmp::new("reference-acl");
    let pats = tmp.write("patterns.txt", "# comment\n/a\n\n/b\n");
    for row in table(&doc, "acl-flags") {
        for form in ticked(&row[0]) {
            let flag = instantiate(
                &form
                    .replace("METHOD", "beg")
                    .replace("FILE", &pats.to_string_lossy()),
            );
            let line = format!("x path {flag} /c");
            let mut acls = AclSet::default();
            if let Err(e) = acls.define(&line) {
                panic!("acl `{line}`: {e}");
            }
        }
    }
    let mut acls = AclSet::default();
    assert!(acls.define("x path -zzzzq /c").is_err());

    let expr = source("src/acl/expr.rs");
    let methods = set(first_column_words(&doc, "acl-methods"));
    same(
        "ACL match methods",
        &methods,
        &strings_between(&expr, "fn from_name", "_ => return None"),
    );
    for m in &methods {
        let ok = ["hdr(host)", "hdr_cnt(host)"].iter().any(|f| {
            ["1", "127.0.0.1"].iter().any(|p| {
                AclSet::default()
                    .define(&format!("x {f} -m {m} {p}"))
                    .is_ok()
            })
        });
        assert!(ok, "-m {m} does not parse");
    }
    assert!(AclSet::default().define("x hdr(host) -m zzzzq 1").is_err());

    let ops = set(first_column_words(&doc, "acl-operators"));
    same(
        "ACL integer operators",
        &ops,
        &strings_between(&expr, "let op = match tok.text.as_str() {", "_ => None"),
    );
    for op in &ops {
        let line = format!("x src_port {op} 1024 2000:3000");
        if let Err(e) = AclSet::default().define(&line) {
            panic!("acl `{line}`: {e}");
        }
    }
}

#[test]
fn predefined_acls() {
    let l = Loader::new();
    let doc = doc();
    let documented = set(first_column_words(&doc, "predefined-acls"));
    let uses = |name: &str| {
        l.errors(&format!(
            "[frontend.f]\nmode = \"http\"\nbind = \"127.0.0.1:8080\"\nhttp_request = \"deny if {name}\""
        ))
        .is_empty()
    };
    // every name either part of the code knows, kept if the loader takes it
    let mut candidates = const_strings(&source("src/config/build/acl.rs"), "PREDEFINED_ACLS");
    let acl_mod = source("src/acl/mod.rs");
    candidates.extend(
        strings_between(&acl_mod, "const PREDEFINED: &[(&str, &str)] = &[", "];")
            .into_iter()
            .filter(|s| {
                s.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || "_.".contains(c))
            }),
    );
    let code = set(candidates.iter().filter(|n| uses(n)).cloned());
    same("predefined ACLs", &documented, &code);
}

// ---- whole files ----

#[test]
fn every_example_in_the_document_loads() {
    let l = Loader::new();
    let doc = doc();
    let mut n = 0;
    let mut rest = doc.as_str();
    while let Some(i) = rest.find("```toml\n") {
        let body = &rest[i + 8..];
        let end = body.find("```").expect("closing fence");
        let line = doc[..doc.len() - rest.len() + i].lines().count() + 1;
        l.assert_loads(
            &format!("docs/config.md example at line {line}"),
            &body[..end],
        );
        n += 1;
        rest = &body[end + 3..];
    }
    assert!(n >= 10, "only {n} examples");
}

#[test]
fn every_config_example_loads() {
    let l = Loader::new();
    let dir = repo_config("");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("config/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    for f in files {
        if let Err(e) = l.load_file(&f) {
            panic!("{} does not load:\n{e}", f.display());
        }
    }
}
