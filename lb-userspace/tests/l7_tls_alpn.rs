//! `strict-alpn` (lb's extension): a client whose ALPN list has nothing in common with the
//! bind's is refused with `no_application_protocol` instead of served without ALPN (the
//! default, as HAProxy); clients without ALPN or with a common protocol are served. The
//! bind option as the config loader reads it, in the line and in the table form.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod config_support;
mod l7_support;

use std::net::SocketAddr;

use l7_support::*;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// The ALPN negotiated offering `alpn`, or the handshake error.
async fn negotiate(addr: SocketAddr, alpn: &[&str]) -> Result<Option<Vec<u8>>, String> {
    tokio::time::timeout(T, async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = connector(alpn)
            .connect(ServerName::try_from("alpn.test").unwrap(), tcp)
            .await
            .map_err(|e| e.to_string())?;
        Ok(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
    })
    .await
    .expect("handshake in time")
}

#[tokio::test]
async fn strict_alpn_refuses_a_mismatch() {
    let dir = TempDir::new("alpn");
    let s = echo("s").await;
    let (pem, _) = make_cert(&dir.0, "alpn.test");
    for strict in [false, true] {
        let mut b = tls_bind("127.0.0.1:0", vec![pem.clone()], &["h2", "http/1.1"]);
        b.tls.as_mut().unwrap().strict_alpn = strict;
        let (h, _reg) = start(web_bind_to(b, s.addr));
        let fe = addr_of(&h, "web");
        assert_eq!(
            negotiate(fe, &["spdy/3", "http/1.1"])
                .await
                .unwrap()
                .as_deref(),
            Some(&b"http/1.1"[..])
        );
        assert_eq!(negotiate(fe, &[]).await.unwrap(), None);
        let mismatch = negotiate(fe, &["spdy/3", "http/1.0"]).await;
        if strict {
            let e = mismatch.unwrap_err();
            assert!(e.contains("NoApplicationProtocol"), "{e}");
        } else {
            assert_eq!(mismatch.unwrap(), None, "served without ALPN");
        }
    }
}

#[test]
fn strict_alpn_is_a_bind_option() {
    use config_support::*;
    let base = base();
    let load = |bind: &str| {
        let text = format!(
            "[defaults]\nmode = \"http\"\ntimeout = {{ client = \"5s\", connect = \"5s\", server = \"5s\" }}\n[frontend.web]\nbind = [{bind}]\ndefault_backend = \"all\"\n[backend.all]\nserver = [\"s1 127.0.0.1:80\"]\n"
        );
        let file = base.write("lb.toml", &text);
        let (c, _) = lb::config::load_with(&file, &opts(base.path())).unwrap();
        c.frontends[0].binds[0].tls.clone().unwrap()
    };
    assert!(load("\"*:443 ssl crt config/certs/site.pem strict-alpn\"").strict_alpn);
    assert!(!load("\"*:443 ssl crt config/certs/site.pem\"").strict_alpn);
    assert!(
        load(
            "{ addr = \"*:443\", ssl = true, crt = \"config/certs/site.pem\", strict_alpn = true }"
        )
        .strict_alpn
    );
}
