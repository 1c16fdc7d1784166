//! The checkers: TCP connect, HTTP/1.1 request over plain TCP, TLS handshake. Each one is
//! bounded by the check timeout and reports HAProxy's check status codes (`L4OK`, `L4CON`,
//! `L7STS`, …) with the same wording, so logs and stats read like HAProxy's.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use crate::proxy_protocol::ProxyVersion;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::config::model::{CheckKind, CheckSpec};

use super::HealthError;

/// HAProxy's check status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckStatus {
    /// No check has run yet.
    Init,
    SockErr,
    L4Ok,
    L4Tout,
    L4Con,
    L6Ok,
    L6Tout,
    L6Rsp,
    L7Ok,
    L7Tout,
    L7Rsp,
    L7Sts,
}

impl CheckStatus {
    /// The short code shown on the stats page (`L4CON`).
    pub const fn code(self) -> &'static str {
        match self {
            CheckStatus::Init => "INI",
            CheckStatus::SockErr => "SOCKERR",
            CheckStatus::L4Ok => "L4OK",
            CheckStatus::L4Tout => "L4TOUT",
            CheckStatus::L4Con => "L4CON",
            CheckStatus::L6Ok => "L6OK",
            CheckStatus::L6Tout => "L6TOUT",
            CheckStatus::L6Rsp => "L6RSP",
            CheckStatus::L7Ok => "L7OK",
            CheckStatus::L7Tout => "L7TOUT",
            CheckStatus::L7Rsp => "L7RSP",
            CheckStatus::L7Sts => "L7STS",
        }
    }

    /// The "reason" HAProxy logs on a transition.
    pub const fn reason(self) -> &'static str {
        match self {
            CheckStatus::Init => "Initializing",
            CheckStatus::SockErr => "Socket error",
            CheckStatus::L4Ok => "Layer4 check passed",
            CheckStatus::L4Tout => "Layer4 timeout",
            CheckStatus::L4Con => "Layer4 connection problem",
            CheckStatus::L6Ok => "Layer6 check passed",
            CheckStatus::L6Tout => "Layer6 timeout",
            CheckStatus::L6Rsp => "Layer6 invalid response",
            CheckStatus::L7Ok => "Layer7 check passed",
            CheckStatus::L7Tout => "Layer7 timeout",
            CheckStatus::L7Rsp => "Layer7 invalid response",
            CheckStatus::L7Sts => "Layer7 wrong status",
        }
    }

    pub const fn passed(self) -> bool {
        matches!(
            self,
            CheckStatus::L4Ok | CheckStatus::L6Ok | CheckStatus::L7Ok
        )
    }

    pub const fn is_timeout(self) -> bool {
        matches!(
            self,
            CheckStatus::L4Tout | CheckStatus::L6Tout | CheckStatus::L7Tout
        )
    }
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    pub status: CheckStatus,
    /// HTTP status code for HTTP checks that got one.
    pub code: Option<u16>,
    /// Free text: the OS error, the HTTP reason phrase, the TLS alert.
    pub info: Option<String>,
    pub duration: Duration,
}

impl CheckOutcome {
    pub fn passed(&self) -> bool {
        self.status.passed()
    }

    /// HAProxy's log tail: `reason: Layer7 wrong status, code: 500, info: "Internal Server
    /// Error", check duration: 1ms`.
    pub fn describe(&self) -> String {
        let mut s = format!("reason: {}", self.status.reason());
        if let Some(code) = self.code {
            s.push_str(&format!(", code: {code}"));
        }
        if let Some(info) = &self.info {
            s.push_str(&format!(", info: \"{info}\""));
        }
        s.push_str(&format!(
            ", check duration: {}ms",
            self.duration.as_millis()
        ));
        s
    }
}

/// A prepared checker for one server.
#[derive(Clone)]
pub struct Checker {
    addr: SocketAddr,
    timeout: Duration,
    kind: Kind,
    /// A PROXY protocol header opens each check (`send-proxy` servers).
    send_proxy: Option<ProxyVersion>,
}

#[derive(Clone)]
enum Kind {
    Tcp,
    Http {
        request: Arc<[u8]>,
        expect: (u16, u16),
    },
    Tls {
        connector: tokio_rustls::TlsConnector,
        name: ServerName<'static>,
    },
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Tcp => "tcp",
            Kind::Http { .. } => "http",
            Kind::Tls { .. } => "tls",
        };
        f.debug_struct("Checker")
            .field("addr", &self.addr)
            .field("timeout", &self.timeout)
            .field("kind", &kind)
            .finish()
    }
}

/// Longest status line accepted from an HTTP check response.
const MAX_STATUS_LINE: usize = 4096;

impl Checker {
    /// Prepares the checker for `addr` (builds the request bytes or the TLS client config).
    pub fn new(addr: SocketAddr, spec: &CheckSpec) -> Result<Self, HealthError> {
        let kind = match &spec.kind {
            CheckKind::Tcp => Kind::Tcp,
            CheckKind::Http {
                method,
                path,
                host,
                expect,
            } => {
                let host = host.clone().unwrap_or_else(|| addr.to_string());
                if [method.as_str(), path.as_str(), host.as_str()]
                    .iter()
                    .any(|s| s.is_empty() || s.bytes().any(|b| b.is_ascii_control() || b == b' '))
                {
                    return Err(HealthError::BadHttpCheck(format!(
                        "{method} {path} (Host: {host})"
                    )));
                }
                let req = format!(
                    "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lb-health-check\r\n\
                     Accept: */*\r\nConnection: close\r\n\r\n"
                );
                Kind::Http {
                    request: Arc::from(req.into_bytes().into_boxed_slice()),
                    expect: *expect,
                }
            }
            CheckKind::Tls { sni } => {
                let name = match sni {
                    Some(sni) => ServerName::try_from(sni.clone())
                        .map_err(|_| HealthError::BadSni(sni.clone()))?,
                    // An IP server name makes rustls send no SNI.
                    None => ServerName::IpAddress(addr.ip().into()),
                };
                Kind::Tls {
                    connector: tls_connector()?,
                    name,
                }
            }
        };
        Ok(Self {
            addr,
            timeout: spec.timeout,
            kind,
            send_proxy: None,
        })
    }

    /// Opens each check with a PROXY protocol header of version `v` (for servers with
    /// `send-proxy`, which would refuse a connection without it).
    pub fn send_proxy(mut self, v: Option<ProxyVersion>) -> Self {
        self.send_proxy = v;
        self
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs one check; never fails, every problem is an outcome.
    pub async fn run(&self) -> CheckOutcome {
        let start = Instant::now();
        let deadline = tokio::time::Instant::from_std(start) + self.timeout;
        let (status, code, info) = self.run_inner(deadline).await;
        CheckOutcome {
            status,
            code,
            info,
            duration: start.elapsed(),
        }
    }

    async fn run_inner(
        &self,
        deadline: tokio::time::Instant,
    ) -> (CheckStatus, Option<u16>, Option<String>) {
        let conn = tokio::time::timeout_at(deadline, TcpStream::connect(self.addr)).await;
        let stream = match conn {
            Err(_) => return (CheckStatus::L4Tout, None, None),
            Ok(Err(e)) => return (connect_error_status(&e), None, Some(io_info(&e))),
            Ok(Ok(s)) => s,
        };
        let mut stream = stream;
        let _ = stream.set_nodelay(true);
        if let Some(v) = self.send_proxy {
            let local = stream.local_addr().unwrap_or(self.addr);
            let header = crate::proxy_protocol::encode_check(v, local, self.addr);
            if let Err(e) = stream.write_all(&header).await {
                return (connect_error_status(&e), None, Some(io_info(&e)));
            }
        }
        match &self.kind {
            Kind::Tcp => (CheckStatus::L4Ok, None, None),
            Kind::Http { request, expect } => {
                let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                match timeout(remaining, http_exchange(stream, request)).await {
                    Err(_) => (CheckStatus::L7Tout, None, None),
                    Ok(Err(info)) => (CheckStatus::L7Rsp, None, Some(info)),
                    Ok(Ok((code, reason))) => {
                        let info = (!reason.is_empty()).then_some(reason);
                        if (expect.0..=expect.1).contains(&code) {
                            (CheckStatus::L7Ok, Some(code), info)
                        } else {
                            (CheckStatus::L7Sts, Some(code), info)
                        }
                    }
                }
            }
            Kind::Tls { connector, name } => {
                let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                match timeout(remaining, connector.connect(name.clone(), stream)).await {
                    Err(_) => (CheckStatus::L6Tout, None, None),
                    Ok(Err(e)) => (CheckStatus::L6Rsp, None, Some(io_info(&e))),
                    Ok(Ok(mut tls)) => {
                        // Be polite: send close_notify, but don't wait for it.
                        let _ =
                            tokio::time::timeout(Duration::from_millis(50), tls.shutdown()).await;
                        (CheckStatus::L6Ok, None, None)
                    }
                }
            }
        }
    }
}

/// Sends the request, reads up to the end of the status line, parses it.
async fn http_exchange(mut stream: TcpStream, request: &[u8]) -> Result<(u16, String), String> {
    stream.write_all(request).await.map_err(|e| io_info(&e))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            return parse_status_line(&buf[..pos]);
        }
        if buf.len() > MAX_STATUS_LINE {
            return Err("status line too long".to_owned());
        }
        let n = stream.read(&mut chunk).await.map_err(|e| io_info(&e))?;
        if n == 0 {
            return if buf.is_empty() {
                Err("Connection closed without a response".to_owned())
            } else {
                parse_status_line(&buf)
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Parses `HTTP/1.x NNN Reason` (a trailing `\r` allowed).
pub fn parse_status_line(line: &[u8]) -> Result<(u16, String), String> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|_| "non-UTF-8 status line".to_owned())?;
    let mut parts = text.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Err(format!("not an HTTP/1.x response: {}", truncate(text, 64)));
    }
    let code = parts.next().unwrap_or_default();
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad status code: {}", truncate(text, 64)));
    }
    let code: u16 = code
        .parse()
        .map_err(|_| format!("bad status code: {}", truncate(text, 64)))?;
    if !(100..=599).contains(&code) {
        return Err(format!("bad status code: {code}"));
    }
    let reason = parts.next().unwrap_or_default().trim().to_owned();
    Ok((code, reason))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn connect_error_status(e: &io::Error) -> CheckStatus {
    match e.kind() {
        io::ErrorKind::TimedOut => CheckStatus::L4Tout,
        io::ErrorKind::AddrNotAvailable | io::ErrorKind::AddrInUse | io::ErrorKind::OutOfMemory => {
            CheckStatus::SockErr
        }
        _ => CheckStatus::L4Con,
    }
}

/// An I/O error as HAProxy shows it: "Connection refused" without Rust's "(os error 111)".
fn io_info(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Health checks verify that a TLS server answers, not who it is: any certificate.
fn tls_connector() -> Result<tokio_rustls::TlsConnector, HealthError> {
    let config = crate::tls_client::client_config(&crate::tls_client::Verify::None, &[])
        .map_err(|e| HealthError::Tls(e.to_string()))?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(
            parse_status_line(b"HTTP/1.1 200 OK\r"),
            Ok((200, "OK".into()))
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.0 503 Service Unavailable"),
            Ok((503, "Service Unavailable".into()))
        );
        assert_eq!(parse_status_line(b"HTTP/1.1 204"), Ok((204, String::new())));
        assert!(parse_status_line(b"SSH-2.0-OpenSSH").is_err());
        assert!(parse_status_line(b"HTTP/1.1 2000 OK").is_err());
        assert!(parse_status_line(b"HTTP/1.1 abc OK").is_err());
        assert!(parse_status_line(b"HTTP/1.1 999 X").is_err());
        assert!(parse_status_line(b"HTTP/2 200").is_err());
    }

    #[test]
    fn describe_like_haproxy() {
        let o = CheckOutcome {
            status: CheckStatus::L4Con,
            code: None,
            info: Some("Connection refused".into()),
            duration: Duration::from_millis(1),
        };
        assert_eq!(
            o.describe(),
            "reason: Layer4 connection problem, info: \"Connection refused\", check duration: 1ms"
        );
        let o = CheckOutcome {
            status: CheckStatus::L7Sts,
            code: Some(500),
            info: Some("Internal Server Error".into()),
            duration: Duration::from_millis(3),
        };
        assert_eq!(
            o.describe(),
            "reason: Layer7 wrong status, code: 500, info: \"Internal Server Error\", \
             check duration: 3ms"
        );
    }

    #[test]
    fn io_info_strips_os_error() {
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(io_info(&e), "Connection refused");
    }

    #[test]
    fn bad_http_spec_is_rejected() {
        let spec = CheckSpec {
            kind: CheckKind::Http {
                method: "GET".into(),
                path: "/a b".into(),
                host: None,
                expect: (200, 399),
            },
            ..CheckSpec::default()
        };
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        assert!(Checker::new(addr, &spec).is_err());
    }
}
