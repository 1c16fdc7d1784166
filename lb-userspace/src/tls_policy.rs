//! The TLS policy words of HAProxy's `bind` lines, mapped onto what rustls offers:
//! `ssl-min-ver` / `ssl-max-ver` (TLS 1.2 and 1.3 only), `ciphersuites` (TLS 1.3, IANA
//! names) and `ciphers` (TLS 1.2, OpenSSL names, an explicit list). What rustls cannot do is
//! an error naming what it can. Used by `config` (validation) and the L7 tier.

use rustls::{CipherSuite, NamedGroup};

/// A TLS protocol version lb can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("`{0}` is not offered (rustls speaks TLS 1.2 and 1.3 only): use TLSv1.2 or TLSv1.3")]
    OldVersion(String),
    #[error("unknown TLS version `{0}` (expected TLSv1.2 or TLSv1.3)")]
    Version(String),
    #[error("cipher suite `{name}` is not available; available: {available}")]
    Suite { name: String, available: String },
    #[error("an empty cipher suite list")]
    Empty,
    #[error("curve `{0}` is not available; available: X25519, P-256, P-384, X25519MLKEM768")]
    Curve(String),
    #[error("an empty curve list")]
    NoCurves,
}

/// HAProxy's `ssl-min-ver` / `ssl-max-ver` value.
pub fn version(word: &str) -> Result<TlsVersion, PolicyError> {
    match word {
        "TLSv1.2" => Ok(TlsVersion::Tls12),
        "TLSv1.3" => Ok(TlsVersion::Tls13),
        "SSLv3" | "TLSv1.0" | "TLSv1.1" => Err(PolicyError::OldVersion(word.to_owned())),
        other => Err(PolicyError::Version(other.to_owned())),
    }
}

/// TLS 1.3 suites by their IANA / OpenSSL `ciphersuites` names.
const TLS13: &[(&str, CipherSuite)] = &[
    (
        "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_AES_128_GCM_SHA256,
    ),
    (
        "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_AES_256_GCM_SHA384,
    ),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    ),
];

/// TLS 1.2 suites by their OpenSSL `ciphers` names.
const TLS12: &[(&str, CipherSuite)] = &[
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

fn suites(list: &str, table: &[(&str, CipherSuite)]) -> Result<Vec<CipherSuite>, PolicyError> {
    let mut out = Vec::new();
    for name in list.split(':').map(str::trim).filter(|n| !n.is_empty()) {
        let Some((_, s)) = table.iter().find(|(n, _)| *n == name) else {
            let available = table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(":");
            return Err(PolicyError::Suite {
                name: name.to_owned(),
                available,
            });
        };
        if !out.contains(s) {
            out.push(*s);
        }
    }
    if out.is_empty() {
        return Err(PolicyError::Empty);
    }
    Ok(out)
}

/// A `ciphersuites` list (TLS 1.3), colon-separated, in preference order.
pub fn tls13_suites(list: &str) -> Result<Vec<CipherSuite>, PolicyError> {
    suites(list, TLS13)
}

/// A `ciphers` list (TLS 1.2), colon-separated OpenSSL names, in preference order. Cipher
/// expressions (`HIGH:!aNULL`) are not taken: the list must name suites.
pub fn tls12_suites(list: &str) -> Result<Vec<CipherSuite>, PolicyError> {
    suites(list, TLS12)
}

/// A `curves` list, colon-separated (HAProxy's syntax, OpenSSL's names and aliases), in
/// preference order: the key exchange groups rustls offers with aws-lc-rs.
pub fn curves(list: &str) -> Result<Vec<NamedGroup>, PolicyError> {
    let out = list
        .split(':')
        .filter(|w| !w.is_empty())
        .map(|w| match w.to_ascii_lowercase().as_str() {
            "x25519" => Ok(NamedGroup::X25519),
            "p-256" | "prime256v1" | "secp256r1" => Ok(NamedGroup::secp256r1),
            "p-384" | "secp384r1" => Ok(NamedGroup::secp384r1),
            "x25519mlkem768" => Ok(NamedGroup::X25519MLKEM768),
            _ => Err(PolicyError::Curve(w.to_owned())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if out.is_empty() {
        return Err(PolicyError::NoCurves);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(version("TLSv1.3"), Ok(TlsVersion::Tls13));
        assert!(matches!(
            version("TLSv1.0"),
            Err(PolicyError::OldVersion(_))
        ));
        assert!(matches!(version("tls1.2"), Err(PolicyError::Version(_))));
        assert_eq!(
            tls13_suites("TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"),
            Ok(vec![
                CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
                CipherSuite::TLS13_AES_128_GCM_SHA256
            ])
        );
        assert_eq!(
            tls12_suites("ECDHE-RSA-AES128-GCM-SHA256"),
            Ok(vec![CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256])
        );
        let e =
            tls12_suites("ECDHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES128-GCM-SHA256").expect_err("DHE");
        assert!(
            e.to_string()
                .contains("`DHE-RSA-AES128-GCM-SHA256` is not available")
        );
        assert_eq!(tls13_suites(""), Err(PolicyError::Empty));
        assert!(tls12_suites("HIGH:!aNULL").is_err());
    }
}
