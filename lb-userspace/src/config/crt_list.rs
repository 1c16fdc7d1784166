//! HAProxy's `crt-list` file, one certificate per line:
//! `PEM [\[OPTION …\]] [[!]SNI-FILTER …]`. Blank lines and `#` comments are skipped. SNI
//! filters replace the certificate's own names for the choice by SNI (wildcards allowed);
//! `!name` removes one of its names. The bracketed options override the bind's for the
//! connections that pick this certificate: `alpn`, `verify`, `ca-file`, `ca-verify-file`,
//! `crl-file`, `ssl-min-ver`, `ssl-max-ver`, `ciphers`, `ciphersuites`; any other is an
//! error (HAProxy's others — `curves`, `ecdhe`, `no-ca-names`, `npn`, `ocsp-update` … — are
//! not carried, and dropping one silently could change who is accepted).

use std::path::{Path, PathBuf};

use super::directives;
use super::model::{BindTls, ClientVerify, CrtEntry};
use crate::acl::split_words;
use crate::tls_policy;

/// One problem, with its line in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CrtListError {
    pub line: usize,
    pub message: String,
}

/// Parses a crt-list's text. `base` is the bind's TLS settings (each entry with options
/// starts from them); `resolve` turns a path as written into the one to read; `check`
/// validates a file an option names (`ca-file`, `crl-file`), returning why it is unusable.
pub(crate) fn parse(
    text: &str,
    base: &BindTls,
    resolve: &dyn Fn(&str) -> PathBuf,
    check: &dyn Fn(&str, &Path) -> Result<(), String>,
) -> Result<Vec<CrtEntry>, CrtListError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let fail = |message: String| CrtListError { line, message };
        let words = split_words(raw, true).map_err(|e| fail(e.message.clone()))?;
        let mut words = words.words.into_iter().map(|w| w.text);
        let Some(cert) = words.next() else { continue };
        let rest: Vec<String> = words.collect();
        let (options, filters): (Vec<String>, Vec<String>) = match rest.first() {
            Some(first) if first.starts_with('[') => {
                let joined = rest.join(" ");
                let close = joined
                    .find(']')
                    .ok_or_else(|| fail("`[` without its `]`".into()))?;
                let opts = joined[1..close]
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect();
                let filters = joined[close + 1..]
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect();
                (opts, filters)
            }
            _ => (Vec::new(), rest),
        };
        let tls = if options.is_empty() {
            None
        } else {
            Some(Box::new(
                apply(base, &options, resolve, check).map_err(fail)?,
            ))
        };
        out.push(CrtEntry {
            cert: resolve(&cert),
            filters: filters.iter().map(|f| f.to_ascii_lowercase()).collect(),
            tls,
        });
    }
    if out.is_empty() {
        return Err(CrtListError {
            line: 0,
            message: "no certificate in it".into(),
        });
    }
    Ok(out)
}

/// The bind's settings with an entry's options applied.
fn apply(
    base: &BindTls,
    options: &[String],
    resolve: &dyn Fn(&str) -> PathBuf,
    check: &dyn Fn(&str, &Path) -> Result<(), String>,
) -> Result<BindTls, String> {
    let mut t = base.clone();
    let mut it = options.iter();
    while let Some(opt) = it.next() {
        let mut value = || {
            it.next()
                .map(String::as_str)
                .ok_or_else(|| format!("`{opt}` needs a value"))
        };
        let policy = |e: tls_policy::PolicyError| format!("`{opt}`: {e}");
        match opt.as_str() {
            "alpn" => t.alpn = value()?.split(',').map(str::to_owned).collect(),
            "verify" => {
                t.verify = directives::keyword("verify", value()?, &directives::CLIENT_VERIFY)?
            }
            "ca-file" | "ca-verify-file" | "crl-file" => {
                let path = resolve(value()?);
                check(opt, &path).map_err(|e| format!("{opt} `{}`: {e}", path.display()))?;
                match opt.as_str() {
                    "ca-file" => t.ca_file = Some(path),
                    "ca-verify-file" => t.ca_verify_file = Some(path),
                    _ => t.crl_file = Some(path),
                }
            }
            "ssl-min-ver" => t.min_version = Some(tls_policy::version(value()?).map_err(policy)?),
            "ssl-max-ver" => t.max_version = Some(tls_policy::version(value()?).map_err(policy)?),
            "ciphersuites" => {
                t.ciphersuites = tls_policy::tls13_suites(value()?).map_err(policy)?
            }
            "ciphers" => t.ciphers = tls_policy::tls12_suites(value()?).map_err(policy)?,
            other => {
                return Err(format!(
                    "option `{other}` is not supported in a crt-list (supported: alpn, verify, ca-file, ca-verify-file, crl-file, ssl-min-ver, ssl-max-ver, ciphers, ciphersuites)"
                ));
            }
        }
    }
    if t.verify != ClientVerify::None && t.ca_file.is_none() {
        return Err("`verify` other than `none` needs `ca-file`".into());
    }
    if let (Some(min), Some(max)) = (t.min_version, t.max_version)
        && min > max
    {
        return Err("`ssl-min-ver` is above `ssl-max-ver`".into());
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Result<Vec<CrtEntry>, CrtListError> {
        let base = BindTls {
            alpn: vec!["h2".into(), "http/1.1".into()],
            ..Default::default()
        };
        parse(
            text,
            &base,
            &|p| PathBuf::from("/base").join(p),
            &|opt, _| {
                if opt == "crl-file" {
                    Err("no CRL".into())
                } else {
                    Ok(())
                }
            },
        )
    }

    #[test]
    fn lines() {
        let e = run("# comment\n\na.pem\nb.pem [alpn http/1.1 verify required ca-file ca.pem] B.test !x.b.test  # c\n")
            .expect("parses");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].cert, PathBuf::from("/base/a.pem"));
        assert!(e[0].filters.is_empty() && e[0].tls.is_none());
        assert_eq!(e[1].filters, ["b.test", "!x.b.test"]);
        let t = e[1].tls.as_ref().expect("options");
        assert_eq!(t.alpn, ["http/1.1"]);
        assert_eq!(t.verify, ClientVerify::Required);
        assert_eq!(t.ca_file, Some(PathBuf::from("/base/ca.pem")));
    }

    #[test]
    fn errors() {
        let err = |t: &str| run(t).expect_err(t);
        assert_eq!(err("").line, 0);
        assert_eq!(err("a.pem\nb.pem [alpn h2").line, 2);
        assert!(
            err("a.pem [curves X25519]")
                .message
                .contains("`curves` is not supported")
        );
        assert!(
            err("a.pem [verify required]")
                .message
                .contains("needs `ca-file`")
        );
        assert!(err("a.pem [crl-file x.crl]").message.contains("no CRL"));
        assert!(
            err("a.pem [ssl-min-ver TLSv1.1]")
                .message
                .contains("TLSv1.1")
        );
        assert!(err("a.pem [alpn]").message.contains("needs a value"));
    }
}
