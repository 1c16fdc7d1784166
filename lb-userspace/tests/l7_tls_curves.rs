//! `curves` per bind (HAProxy's colon-separated list) as rustls key exchange groups: a
//! client offering only a group outside the list is refused, one offering a listed group
//! negotiates it; the config loader reads the names and refuses unknown ones; `lb convert`
//! carries the option.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod config_support;
mod l7_support;

use std::net::SocketAddr;
use std::sync::Arc;

use l7_support::*;
use rustls::NamedGroup;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The group negotiated by a client offering only `offer`, or the handshake error.
async fn kx(addr: SocketAddr, offer: NamedGroup) -> Result<NamedGroup, String> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups.retain(|g| g.name() == offer);
    assert_eq!(provider.kx_groups.len(), 1);
    let provider = Arc::new(provider);
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    tokio::time::timeout(T, async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("kx.test").unwrap(), tcp)
            .await
            .map_err(|e| e.to_string())?;
        Ok(tls
            .get_ref()
            .1
            .negotiated_key_exchange_group()
            .unwrap()
            .name())
    })
    .await
    .expect("handshake in time")
}

#[tokio::test]
async fn only_the_listed_curves_are_offered() {
    let dir = TempDir::new("curves");
    let s = echo("s").await;
    let (pem, _) = make_cert(&dir.0, "kx.test");
    let mut b = tls_bind("127.0.0.1:0", vec![pem], &["http/1.1"]);
    b.tls.as_mut().unwrap().curves = vec![NamedGroup::secp384r1, NamedGroup::secp256r1];
    let (h, _reg) = start(web_bind_to(b, s.addr));
    let fe = addr_of(&h, "web");
    assert_eq!(
        kx(fe, NamedGroup::secp384r1).await.unwrap(),
        NamedGroup::secp384r1
    );
    assert_eq!(
        kx(fe, NamedGroup::secp256r1).await.unwrap(),
        NamedGroup::secp256r1
    );
    assert!(kx(fe, NamedGroup::X25519).await.is_err());
}

#[test]
fn curves_are_read_and_converted() {
    use config_support::*;
    let base = base();
    let load = |bind: &str| {
        let text = format!(
            "[defaults]\nmode = \"http\"\ntimeout = {{ client = \"5s\", connect = \"5s\", server = \"5s\" }}\n[frontend.web]\nbind = [\"{bind}\"]\ndefault_backend = \"all\"\n[backend.all]\nserver = [\"s1 127.0.0.1:80\"]\n"
        );
        let file = base.write("lb.toml", &text);
        lb::config::load_with(&file, &opts(base.path()))
            .map(|(c, _)| c.frontends[0].binds[0].tls.clone().unwrap().curves)
            .map_err(|e| e.errors().map(|d| d.to_string()).collect::<Vec<_>>())
    };
    assert_eq!(
        load("*:443 ssl crt config/certs/site.pem curves X25519:prime256v1:P-384").unwrap(),
        vec![
            NamedGroup::X25519,
            NamedGroup::secp256r1,
            NamedGroup::secp384r1
        ]
    );
    let e = load("*:443 ssl crt config/certs/site.pem curves X25519:brainpoolP256r1").unwrap_err();
    assert!(
        e[0].contains("curve `brainpoolP256r1` is not available"),
        "{e:?}"
    );
    let cfg = "global\ndefaults\n    mode http\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\nfrontend web\n    bind *:443 ssl crt config/certs/site.pem curves X25519:P-256\n    default_backend all\nbackend all\n    server s1 127.0.0.1:80\n";
    let conv = lb::config::convert::convert_str(std::path::Path::new("m.cfg"), cfg);
    assert!(
        !conv.diagnostics.iter().any(|d| d.is_error()),
        "{:#?}",
        conv.diagnostics
    );
    assert!(conv.toml.contains("curves X25519:P-256"), "{}", conv.toml);
}
