//! The byte stream to a server: plain TCP, or TLS over it for servers with `ssl`
//! ([`UpstreamTls`]: the rustls client of one server, with its session cache, so that new
//! connections resume earlier sessions).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::model::ServerTls;
use crate::tls_client::{self, TlsClientError, Verify};

/// TLS toward one server.
pub struct UpstreamTls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// From a server's `ssl` options; `alpn`: the protocols to offer (`h2` for `proto h2`).
    pub fn new(
        spec: &ServerTls,
        addr: std::net::IpAddr,
        alpn: &[&[u8]],
    ) -> Result<Self, TlsClientError> {
        let verify = match (&spec.ca_file, spec.verify) {
            (Some(path), true) => Verify::Roots {
                roots: Arc::new(tls_client::load_roots(path)?),
                check_name: spec.sni.is_some(),
            },
            _ => Verify::None,
        };
        let config = tls_client::client_config(&verify, alpn)?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            name: tls_client::server_name(spec.sni.as_deref(), addr),
        })
    }

    /// The TLS handshake over a new TCP connection.
    pub async fn handshake(&self, tcp: TcpStream) -> io::Result<UpStream> {
        let tls = self.connector.connect(self.name.clone(), tcp).await?;
        Ok(UpStream::Tls(Box::new(tls)))
    }
}

/// A connection's stream.
#[derive(Debug)]
pub enum UpStream {
    Tcp(TcpStream),
    /// Boxed: TLS state is large, and most servers are plain.
    Tls(Box<TlsStream<TcpStream>>),
}

impl UpStream {
    /// One read into `buf`, waiting for data. Plain TCP waits for readiness and reads
    /// straight into the buffer.
    pub(crate) fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        match self {
            UpStream::Tcp(s) => loop {
                ready!(s.poll_read_ready(cx))?;
                match s.try_read_buf(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return Poll::Ready(r),
                }
            },
            UpStream::Tls(s) => tokio_util::io::poll_read_buf(Pin::new(&mut **s), cx, buf),
        }
    }

    /// Whether an idle connection is still open with nothing unread, checked without
    /// waiting: any byte or EOF means it is unusable. Plain TCP asks the poller first and
    /// reads only when it saw activity; TLS reads through rustls, which takes session
    /// tickets and other handshake messages without handing out data.
    pub(crate) fn is_idle_and_open(&mut self, scratch: &mut BytesMut) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        scratch.reserve(64);
        match self {
            UpStream::Tcp(s) => match s.poll_read_ready(&mut cx) {
                Poll::Pending => true,
                Poll::Ready(Err(_)) => false,
                Poll::Ready(Ok(())) => matches!(
                    s.try_read_buf(scratch),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock
                ),
            },
            UpStream::Tls(s) => matches!(
                tokio_util::io::poll_read_buf(Pin::new(&mut **s), &mut cx, scratch),
                Poll::Pending
            ),
        }
    }
}

impl AsyncRead for UpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            UpStream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            UpStream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpStream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpStream::Tcp(s) => s.is_write_vectored(),
            UpStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            UpStream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            UpStream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}
