//! What HAProxy does to a haproxy.cfg before parsing its directives, for `lb convert`:
//! environment variables (`$NAME`, `${NAME}`, `${NAME-default}`, outside single quotes)
//! and conditional blocks (`.if` / `.elif` / `.else` / `.endif`, with HAProxy 2.6's
//! predicates), plus `.notice` / `.warning` / `.alert` / `.diag` messages. lb's TOML has
//! neither: the values are taken from `lb convert`'s environment and the blocks are decided
//! when converting, each named in a warning or a comment.

use super::diag::Severity;

/// The HAProxy version whose semantics lb follows (`version_atleast`, `version_before`).
pub(crate) const HAPROXY_VERSION: &str = "2.6";

/// The OpenSSL version lb stands in for (`openssl_version_*`): rustls speaks TLS 1.2 and 1.3
/// as OpenSSL 3.0 does.
const OPENSSL_VERSION: &str = "3.0.0";

/// `feature(NAME)` holds for the HAProxy build features lb has.
const FEATURES: &[&str] = &["OPENSSL", "THREAD", "EPOLL", "GETADDRINFO", "LINUX_TPROXY"];

/// One message about a line of the input.
#[derive(Debug)]
pub(crate) struct PreDiag {
    pub severity: Severity,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// The input with variables expanded and conditional blocks resolved: one output line per
/// input line (directives and skipped lines become comments), and what to say about it.
pub(crate) fn preprocess(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Vec<String>, Vec<PreDiag>) {
    let mut out = Vec::new();
    let mut diags = Vec::new();
    // Per open `.if`: (line, a branch was taken, this branch is taken, `.else` seen).
    let mut stack: Vec<(usize, bool, bool, bool)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let live = stack.iter().all(|l| l.2);
        let trimmed = raw.trim_start();
        if let Some(dir) = trimmed
            .strip_prefix('.')
            .map(|r| r.split_whitespace().next().unwrap_or(""))
        {
            let col = raw.len() - trimmed.len() + 1;
            let line = if live || matches!(dir, "if" | "elif" | "else" | "endif") {
                expand(raw, n, env, &mut diags)
            } else {
                raw.to_string()
            };
            let words = match crate::acl::split_words(&line, true) {
                Ok(w) => w.words.into_iter().map(|w| w.text).collect::<Vec<_>>(),
                Err(e) => {
                    diags.push(PreDiag {
                        severity: Severity::Error,
                        line: n,
                        col,
                        message: e.message,
                    });
                    out.push(String::new());
                    continue;
                }
            };
            let rest = words.get(1..).unwrap_or_default().join(" ");
            let mut err = |m: String| {
                diags.push(PreDiag {
                    severity: Severity::Error,
                    line: n,
                    col,
                    message: m,
                })
            };
            let note = match dir {
                "if" => {
                    let v = if live { eval(&rest, env) } else { Ok(false) };
                    let v = v.unwrap_or_else(|m| {
                        err(format!("`.if {rest}`: {m}"));
                        false
                    });
                    stack.push((n, v, v, false));
                    format!("`.if {rest}` is {v} for lb")
                }
                "elif" => match stack.last_mut() {
                    Some(l) if !l.3 => {
                        let parent =
                            stack.len() < 2 || stack[..stack.len() - 1].iter().all(|l| l.2);
                        let l = stack.last_mut().expect("checked above");
                        let v = if parent && !l.1 {
                            eval(&rest, env).unwrap_or_else(|m| {
                                err(format!("`.elif {rest}`: {m}"));
                                false
                            })
                        } else {
                            false
                        };
                        l.1 |= v;
                        l.2 = v;
                        format!("`.elif {rest}` is {v} for lb")
                    }
                    Some(_) => {
                        err("`.elif` after `.else`".into());
                        String::new()
                    }
                    None => {
                        err("`.elif` without `.if`".into());
                        String::new()
                    }
                },
                "else" => match stack.last_mut() {
                    Some(l) if !l.3 => {
                        l.3 = true;
                        l.2 = !l.1;
                        l.1 = true;
                        format!("`.else` is taken: {}", l.2)
                    }
                    Some(_) => {
                        err("a second `.else`".into());
                        String::new()
                    }
                    None => {
                        err("`.else` without `.if`".into());
                        String::new()
                    }
                },
                "endif" => {
                    if stack.pop().is_none() {
                        err("`.endif` without `.if`".into());
                    }
                    String::new()
                }
                "notice" | "warning" | "alert" | "diag" if live => {
                    let msg = words.get(1).cloned().unwrap_or_default();
                    let severity = if dir == "alert" {
                        Severity::Error
                    } else {
                        Severity::Warning
                    };
                    if dir != "diag" {
                        diags.push(PreDiag {
                            severity,
                            line: n,
                            col,
                            message: format!(".{dir}: {msg}"),
                        });
                    }
                    String::new()
                }
                "notice" | "warning" | "alert" | "diag" => String::new(),
                other => {
                    err(format!("unknown directive `.{other}`"));
                    String::new()
                }
            };
            let note = if note.is_empty() {
                String::new()
            } else {
                format!(" ({note})")
            };
            out.push(format!("# haproxy.cfg line {n}: {}{note}", raw.trim()));
            continue;
        }
        if live {
            out.push(expand(raw, n, env, &mut diags));
        } else if raw.trim().is_empty() {
            out.push(String::new());
        } else {
            let at = stack.iter().rev().find(|l| !l.2).map_or(0, |l| l.0);
            out.push(format!(
                "# skipped (conditional block of line {at}): {}",
                raw.trim()
            ));
        }
    }
    if let Some((l, ..)) = stack.first() {
        diags.push(PreDiag {
            severity: Severity::Error,
            line: *l,
            col: 1,
            message: "`.if` without its `.endif`".into(),
        });
    }
    (out, diags)
}

/// Expands `$NAME`, `${NAME}` and `${NAME-default}` outside single quotes and comments, as
/// HAProxy's line parser does; an unset variable expands to nothing (HAProxy's behaviour).
fn expand(
    raw: &str,
    n: usize,
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Vec<PreDiag>,
) -> String {
    if !raw.contains('$') {
        return raw.to_string();
    }
    let chars: Vec<char> = raw.chars().collect();
    let mut out = String::with_capacity(raw.len());
    let (mut single, mut double) = (false, false);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' if !single => {
                out.push(c);
                if let Some(nx) = chars.get(i + 1) {
                    out.push(*nx);
                }
                i += 2;
                continue;
            }
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double => {
                out.extend(&chars[i..]);
                break;
            }
            '$' if !single => {
                if let Some((name, default, len)) = var_at(&chars[i + 1..]) {
                    let value = match (env(&name), default) {
                        (Some(v), _) => {
                            diags.push(PreDiag {
                                severity: Severity::Warning,
                                line: n,
                                col: i + 1,
                                message: format!("`${name}` expanded from lb convert's environment to `{v}`; the TOML keeps the value"),
                            });
                            v
                        }
                        (None, Some(d)) => d,
                        (None, None) => {
                            diags.push(PreDiag {
                                severity: Severity::Warning,
                                line: n,
                                col: i + 1,
                                message: format!("environment variable `{name}` is not set: expanded to nothing, as HAProxy does"),
                            });
                            String::new()
                        }
                    };
                    out.push_str(&insert(&value, double));
                    i += 1 + len;
                    continue;
                }
            }
            _ => {}
        }
        out.push(c);
        i += 1;
    }
    out
}

/// A variable reference after `$`: (name, default, characters used).
fn var_at(s: &[char]) -> Option<(String, Option<String>, usize)> {
    let is_name = |c: &char| c.is_ascii_alphanumeric() || *c == '_';
    if s.first() == Some(&'{') {
        let end = s.iter().position(|c| *c == '}')?;
        let inner: String = s[1..end].iter().collect();
        let (name, default) = match inner.split_once('-') {
            Some((n, d)) => (n.to_string(), Some(d.to_string())),
            None => (inner, None),
        };
        if name.is_empty() || !name.chars().all(|c| is_name(&c)) {
            return None;
        }
        return Some((name, default, end + 1));
    }
    if !s
        .first()
        .is_some_and(|c| c.is_ascii_alphabetic() || *c == '_')
    {
        return None;
    }
    let len = s.iter().take_while(|c| is_name(c)).count();
    Some((s[..len].iter().collect(), None, len))
}

/// A value as it must be written so that the word splitter reads it back as one word's text.
fn insert(value: &str, in_double: bool) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    if in_double {
        return escaped;
    }
    if value.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"' || c == '#' || c == '\\')
    {
        format!("\"{escaped}\"")
    } else {
        value.to_string()
    }
}

/// Evaluates a conditional expression: `0`, integers, predicates, `!`, `( )`, `&&`, `||`.
fn eval(expr: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<bool, String> {
    let mut p = Cond {
        s: expr.as_bytes(),
        i: 0,
        text: expr,
        env,
    };
    if expr.trim().is_empty() {
        return Ok(false);
    }
    let v = p.or()?;
    p.blank();
    if p.i < p.s.len() {
        return Err(format!("unexpected `{}`", &expr[p.i..]));
    }
    Ok(v)
}

struct Cond<'a> {
    s: &'a [u8],
    i: usize,
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Cond<'_> {
    fn blank(&mut self) {
        while self.s.get(self.i).is_some_and(|c| *c == b' ') {
            self.i += 1;
        }
    }

    fn eat(&mut self, tok: &str) -> bool {
        self.blank();
        if self.text[self.i..].starts_with(tok) {
            self.i += tok.len();
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<bool, String> {
        let mut v = self.and()?;
        while self.eat("||") {
            let r = self.and()?;
            v = v || r;
        }
        Ok(v)
    }

    fn and(&mut self) -> Result<bool, String> {
        let mut v = self.unary()?;
        while self.eat("&&") {
            let r = self.unary()?;
            v = v && r;
        }
        Ok(v)
    }

    fn unary(&mut self) -> Result<bool, String> {
        if self.eat("!") {
            return Ok(!self.unary()?);
        }
        if self.eat("(") {
            let v = self.or()?;
            if !self.eat(")") {
                return Err("missing `)`".into());
            }
            return Ok(v);
        }
        self.term()
    }

    fn term(&mut self) -> Result<bool, String> {
        self.blank();
        let start = self.i;
        while self
            .s
            .get(self.i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
        {
            self.i += 1;
        }
        let word = &self.text[start..self.i];
        if word.is_empty() {
            return Err(format!("unparsable conditional expression `{}`", self.text));
        }
        if let Ok(n) = word.parse::<i64>() {
            return Ok(n != 0);
        }
        let args: Vec<String> = if self.s.get(self.i) == Some(&b'(') {
            let close = self.text[self.i..]
                .find(')')
                .ok_or_else(|| format!("missing `)` after `{word}(`"))?;
            let inner = &self.text[self.i + 1..self.i + close];
            self.i += close + 1;
            if inner.is_empty() {
                Vec::new()
            } else {
                inner.split(',').map(str::to_string).collect()
            }
        } else {
            Vec::new()
        };
        let want = match word {
            "defined"
            | "feature"
            | "version_atleast"
            | "version_before"
            | "openssl_version_atleast"
            | "openssl_version_before"
            | "ssllib_name_startswith"
            | "enabled"
            | "awslc_api_atleast"
            | "awslc_api_before" => 1,
            "streq" | "strneq" | "strstr" => 2,
            "fips_mode" => 0,
            _ => return Err(format!("unknown conditional predicate `{word}`")),
        };
        if args.len() != want {
            return Err(format!(
                "`{word}` takes {want} argument(s), not {}",
                args.len()
            ));
        }
        let a = |k: usize| args[k].as_str();
        Ok(match word {
            "defined" => (self.env)(a(0)).is_some(),
            "feature" => FEATURES.contains(&a(0)),
            "streq" => a(0) == a(1),
            "strneq" => a(0) != a(1),
            "strstr" => a(0).contains(a(1)),
            "version_atleast" => version_cmp(HAPROXY_VERSION, a(0)).is_ge(),
            "version_before" => version_cmp(HAPROXY_VERSION, a(0)).is_lt(),
            "openssl_version_atleast" => version_cmp(OPENSSL_VERSION, a(0)).is_ge(),
            "openssl_version_before" => version_cmp(OPENSSL_VERSION, a(0)).is_lt(),
            "ssllib_name_startswith" => "OpenSSL".starts_with(a(0)),
            _ => false,
        })
    }
}

/// Compares dotted versions numerically; missing parts count as 0, a non-numeric suffix
/// of a part (`2.6-dev1`) is ignored.
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |v: &str| -> Vec<u64> {
        v.split('.')
            .map(|p| {
                let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().unwrap_or(0)
            })
            .collect()
    };
    let (pa, pb) = (parts(a), parts(b));
    for k in 0..pa.len().max(pb.len()) {
        let o = pa.get(k).unwrap_or(&0).cmp(pb.get(k).unwrap_or(&0));
        if o.is_ne() {
            return o;
        }
    }
    std::cmp::Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SSL" => Some("1".into()),
            "BIND" => Some(":2375".into()),
            "SPACED" => Some("a b".into()),
            _ => None,
        }
    }

    fn run(text: &str) -> (Vec<String>, Vec<String>) {
        let (lines, diags) = preprocess(text, &env);
        (
            lines,
            diags
                .into_iter()
                .map(|d| format!("{}:{} {}", d.line, d.col, d.message))
                .collect(),
        )
    }

    #[test]
    fn expressions() {
        for (e, v) in [
            ("1", true),
            ("0", false),
            ("", false),
            ("defined(SSL)", true),
            ("!defined(NOPE)", true),
            ("feature(QUIC)", false),
            ("feature(OPENSSL)", true),
            ("streq(1,1)", true),
            ("streq(1, 1)", false),
            ("version_atleast(2.4)", true),
            ("version_atleast(2.6)", true),
            ("version_atleast(2.8)", false),
            ("version_before(2.7)", true),
            ("defined(NOPE) || 1 && !0", true),
            ("(defined(NOPE) || 1) && 0", false),
        ] {
            assert_eq!(eval(e, &env), Ok(v), "{e}");
        }
        assert!(eval("frobnicate(1)", &env).is_err());
        assert!(eval("streq(1)", &env).is_err());
    }

    #[test]
    fn blocks_and_messages() {
        let (lines, diags) = run(
            ".if feature(QUIC)\n  bind quic4@:443\n.elif defined(SSL)\n  bind :443\n.else\n  bind :80\n.endif\n.notice 'hello'\n.if 0\n.alert 'not reached'\n.endif\n",
        );
        assert_eq!(
            lines[1],
            "# skipped (conditional block of line 1): bind quic4@:443"
        );
        assert_eq!(lines[3], "  bind :443");
        assert_eq!(
            lines[5],
            "# skipped (conditional block of line 1): bind :80"
        );
        assert!(
            lines[0].starts_with(
                "# haproxy.cfg line 1: .if feature(QUIC) (`.if feature(QUIC)` is false"
            )
        );
        assert_eq!(diags, ["8:1 .notice: hello"]);
        let (_, diags) = run(".if 1\n.alert \"stop\"\n.endif\n.endif\n.if 1\n");
        assert_eq!(
            diags,
            [
                "2:1 .alert: stop",
                "4:1 `.endif` without `.if`",
                "5:1 `.if` without its `.endif`"
            ]
        );
    }

    #[test]
    fn environment_variables() {
        let (lines, diags) = run(
            "bind ${BIND}\nlog \"${SPACED}\" x\nv $SPACED '$SSL' \\$SSL ${NOPE-dflt} $NOPE # $SSL\n",
        );
        assert_eq!(lines[0], "bind :2375");
        assert_eq!(lines[1], "log \"a b\" x");
        assert_eq!(lines[2], "v \"a b\" '$SSL' \\$SSL dflt  # $SSL");
        assert_eq!(diags.len(), 4, "{diags:?}");
        assert!(diags[3].contains("`NOPE` is not set"), "{diags:?}");
    }
}
