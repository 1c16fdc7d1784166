//! Certificates and TLS files: server-side TLS, paths relative to the base directory,
//! CA and CRL files, PEM checks.

use super::*;

impl Builder<'_> {
    /// A server line's `ssl` options, checked as HAProxy checks them: `verify`, `ca-file`
    /// and `sni` need `ssl`; `verify required` (the default) needs a `ca-file`, which must
    /// hold certificates.
    pub(super) fn server_tls(&mut self, line: &d::ServerLine, ipath: &str) -> Option<ServerTls> {
        let Some(ssl) = &line.ssl else {
            for (what, tok) in [
                ("verify", line.verify.as_ref().map(|(_, t)| t)),
                ("ca-file", line.ca_file.as_ref()),
                ("sni", line.sni.as_ref().map(|(_, t)| t)),
            ] {
                if let Some(t) = tok {
                    self.err(
                        t.pos,
                        ipath,
                        format!("`{what}` needs `ssl` on the server line"),
                    );
                }
            }
            return None;
        };
        let verify = line.verify.as_ref().is_none_or(|(v, _)| *v);
        let ca_file = line
            .ca_file
            .as_ref()
            .map(|t| (self.resolve_path(&t.text), t));
        if let Some((path, t)) = &ca_file
            && let Err(e) = crate::tls_client::load_roots(path)
        {
            self.err(t.pos, ipath, e.to_string());
            return None;
        }
        if verify && ca_file.is_none() {
            self.err(
                ssl.pos,
                ipath,
                format!(
                    "server `{}`: `ssl` verifies the server's certificate by default, but no \
                     `ca-file` is given: add `ca-file PATH`, or `verify none` where the network \
                     is trusted (HAProxy refuses this line too)",
                    line.name.text
                ),
            );
            return None;
        }
        Some(ServerTls {
            verify,
            ca_file: ca_file.map(|(p, _)| p),
            sni: line.sni.as_ref().map(|(n, _)| n.clone()),
        })
    }

    pub(super) fn resolve_path(&self, p: &str) -> PathBuf {
        let path = PathBuf::from(p);
        match &self.opts.base_dir {
            Some(base) if path.is_relative() => base.join(path),
            _ => path,
        }
    }

    /// A bind's `ca-file`, `ca-verify-file` or `crl-file`, resolved and read now so a bad
    /// one is reported at its place (the L7 tier reads it again when it starts or reloads).
    pub(super) fn tls_file(&mut self, p: &Path, t: &Tok, path: &str, opt: &str) -> PathBuf {
        let resolved = self.resolve_path(&p.to_string_lossy());
        let checked = if opt == "crl-file" {
            crate::tls_client::load_crls(&resolved).map(drop)
        } else {
            crate::tls_client::load_roots(&resolved).map(drop)
        };
        if let Err(e) = checked {
            self.err(t.pos, path, format!("{opt} `{}`: {e}", t.text));
        }
        resolved
    }

    /// A bind's `crt-list FILE`: its entries, each certificate and option file checked
    /// now; a problem names the file's line.
    pub(super) fn crt_list(
        &mut self,
        p: &Path,
        t: &Tok,
        path: &str,
        base: &BindTls,
    ) -> Vec<CrtEntry> {
        let file = self.resolve_path(&p.to_string_lossy());
        let text = match std::fs::read_to_string(&file) {
            Ok(s) => s,
            Err(e) => {
                self.err(
                    t.pos,
                    path,
                    format!("crt-list `{}`: cannot read: {e}", t.text),
                );
                return Vec::new();
            }
        };
        let resolve = |w: &str| self.resolve_path(w);
        let check = |opt: &str, f: &Path| {
            if opt == "crl-file" {
                crate::tls_client::load_crls(f).map(drop)
            } else {
                crate::tls_client::load_roots(f).map(drop)
            }
            .map_err(|e| e.to_string())
        };
        match crate::config::crt_list::parse(&text, base, &resolve, &check) {
            Ok(entries) => {
                for e in &entries {
                    if let Err(m) = check_pem(&e.cert) {
                        self.err(
                            t.pos,
                            path,
                            format!(
                                "crt-list `{}`: certificate `{}`: {m}",
                                t.text,
                                e.cert.display()
                            ),
                        );
                    }
                }
                entries
            }
            Err(e) => {
                let at = if e.line == 0 {
                    String::new()
                } else {
                    format!(" line {}", e.line)
                };
                self.err(
                    t.pos,
                    path,
                    format!("crt-list `{}`{at}: {}", t.text, e.message),
                );
                Vec::new()
            }
        }
    }
}

/// A PEM file must hold a certificate chain and a private key that match.
pub(crate) fn check_pem(path: &Path) -> Result<(), String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let data = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut rd = &data[..];
    let mut certs: Vec<CertificateDer<'static>> = Vec::new();
    let mut key: Option<PrivateKeyDer<'static>> = None;
    for item in rustls_pemfile::read_all(&mut rd) {
        match item.map_err(|e| format!("invalid PEM: {e}"))? {
            rustls_pemfile::Item::X509Certificate(c) => certs.push(c),
            rustls_pemfile::Item::Pkcs1Key(k) => key = Some(k.into()),
            rustls_pemfile::Item::Pkcs8Key(k) => key = Some(k.into()),
            rustls_pemfile::Item::Sec1Key(k) => key = Some(k.into()),
            _ => {}
        }
    }
    if certs.is_empty() {
        return Err(
            "no certificate in the file (expected a PEM certificate chain and its private key)"
                .into(),
        );
    }
    let Some(key) = key else {
        return Err(
            "no private key in the file (expected a PEM certificate chain and its private key)"
                .into(),
        );
    };
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
        .map_err(|e| format!("unusable private key: {e}"))?;
    let ck = rustls::sign::CertifiedKey::new(certs, signer);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err("the private key does not match the certificate".into())
        }
        Err(e) => Err(format!("invalid certificate: {e}")),
    }
}
